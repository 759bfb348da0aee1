/* Strict decimal integers from text a person typed: command-line values of specctl and
 * specd-run. Only ASCII digits (and a leading '-' for the signed form): no spaces, no
 * '+', no fraction or exponent, nothing after the digits, no wrap-around, which strtol
 * and strtoull would all let through. */
#ifndef SPECD_COMMON_PARSE_INT_H
#define SPECD_COMMON_PARSE_INT_H

#include <stdint.h>

#include "status.h"

/* Digits only, the value at most max. SPECD_INVAL otherwise (text NULL or empty,
 * another character, a value past max or past 2^64 - 1); *out is written only on
 * SPECD_OK. Any thread. */
enum specd_status specd_parse_u64(const char *text, uint64_t max, uint64_t *out);

/* Digits, after a '-' when min < 0 (no sign at all otherwise), the value in min..max.
 * SPECD_INVAL otherwise; *out is written only on SPECD_OK. Any thread. */
enum specd_status specd_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out);

#endif
