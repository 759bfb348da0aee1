/* A status plus a human-readable message, for errors whose detail matters to the
 * user (a config key, a tensor name, a frame field). Caller-owned storage: functions
 * that can explain their failure take a `struct specd_error *` (may be NULL) and fill
 * it only when they fail. */
#ifndef SPECD_COMMON_ERROR_H
#define SPECD_COMMON_ERROR_H

#include "status.h"

#define SPECD_ERROR_MSG_MAX 512

struct specd_error {
	enum specd_status code;
	char msg[SPECD_ERROR_MSG_MAX];
};

/* Clears *err to SPECD_OK and an empty message. err may be NULL. */
void specd_error_clear(struct specd_error *err);

/* Sets *err (when err is not NULL) to `code` and the formatted message, truncated to
 * fit, and returns `code`, so a failing path reads `return specd_errorf(err, ...)`. */
enum specd_status specd_errorf(struct specd_error *err, enum specd_status code,
			       const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
