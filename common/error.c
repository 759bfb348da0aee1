/* struct specd_error helpers. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

void specd_error_clear(struct specd_error *err)
{
	if (!err)
		return;
	err->code = SPECD_OK;
	err->msg[0] = '\0';
}

enum specd_status specd_errorf(struct specd_error *err, enum specd_status code,
			       const char *fmt, ...)
{
	if (!err)
		return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}
