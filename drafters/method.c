/* Method names; see method.h. */
#include "method.h"

#include <string.h>

static const char *const method_names[DRAFT_METHOD_COUNT] = {
	[DRAFT_METHOD_NONE] = "none",
	[DRAFT_METHOD_NGRAM] = "ngram",
	[DRAFT_METHOD_DRAFT_MODEL] = "draft_model",
	[DRAFT_METHOD_EAGLE] = "eagle",
	[DRAFT_METHOD_MEDUSA] = "medusa",
};

const char *draft_method_name(enum draft_method m)
{
	if ((unsigned)m >= DRAFT_METHOD_COUNT)
		return "?";
	return method_names[m];
}

bool draft_method_parse(const char *text, enum draft_method *out)
{
	for (int i = 0; text && i < DRAFT_METHOD_COUNT; i++) {
		if (strcmp(text, method_names[i]) == 0) {
			*out = (enum draft_method)i;
			return true;
		}
	}
	return false;
}

bool draft_method_needs_weights(enum draft_method m)
{
	return m == DRAFT_METHOD_DRAFT_MODEL || m == DRAFT_METHOD_EAGLE ||
	       m == DRAFT_METHOD_MEDUSA;
}
