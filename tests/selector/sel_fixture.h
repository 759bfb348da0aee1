/* Calibrated selector inputs for tests (test_decide, test_online, test_adapt): a
 * target timed at a fixed cost plus a cost per row, and drafters timed as configured. */
#ifndef SPECD_TESTS_SEL_FIXTURE_H
#define SPECD_TESTS_SEL_FIXTURE_H

#include <stdint.h>

#include "selector/selector.h"

/* Zeroed inputs, calibrated: K up to k_max, the target's forward over n tokens taking
 * t1 + per_row * (n - 1) seconds, a 32000-token vocabulary of width `dim`. */
struct sel_inputs sel_fx_inputs(uint32_t k_max, double t1, double per_row, uint32_t dim);

/* Method m configured, built and timed: `fixed` per propose call, `per_token` per
 * drafted token. */
void sel_fx_method(struct sel_inputs *in, enum draft_method m, double fixed, double per_token);

#endif
