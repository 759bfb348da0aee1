/* Strict decimal integers; see parse_int.h. */
#include "parse_int.h"

#include <stdbool.h>
#include <stddef.h>

/* The digits of text as a magnitude; false for anything but 1+ digits, or past max. */
static bool digits(const char *text, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;
	if (!text || !text[0])
		return false;
	for (; text[i]; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		uint64_t d = (uint64_t)(text[i] - '0');
		if (d > max || v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

enum specd_status specd_parse_u64(const char *text, uint64_t max, uint64_t *out)
{
	uint64_t v;
	if (!digits(text, max, &v))
		return SPECD_INVAL;
	*out = v;
	return SPECD_OK;
}

enum specd_status specd_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out)
{
	if (!text || min > max)
		return SPECD_INVAL;
	/* A sign only where negative values are allowed: "-0" for a count is a typo. */
	bool neg = text[0] == '-' && min < 0;
	/* The magnitude's bound on this side of zero (|INT64_MIN| fits a uint64_t). */
	uint64_t bound = neg ? (uint64_t)(-(min + 1)) + 1 : (max < 0 ? 0 : (uint64_t)max);
	uint64_t m;
	if (!digits(text + (neg ? 1 : 0), bound, &m))
		return SPECD_INVAL;
	int64_t v = neg ? (m ? -(int64_t)(m - 1) - 1 : 0) : (int64_t)m;
	if (v < min || v > max)
		return SPECD_INVAL;
	*out = v;
	return SPECD_OK;
}
