/* The speculation methods specd knows, by name. Drafters register under these; the
 * cluster file, specd-run --method and the selector all speak this vocabulary. */
#ifndef SPECD_DRAFTERS_METHOD_H
#define SPECD_DRAFTERS_METHOD_H

#include <stdbool.h>

enum draft_method {
	DRAFT_METHOD_NONE = 0,    /* plain decoding: the baseline */
	DRAFT_METHOD_NGRAM,       /* prompt lookup */
	DRAFT_METHOD_DRAFT_MODEL, /* a smaller model with the same vocabulary */
	DRAFT_METHOD_EAGLE,       /* one decoder layer on the target's hidden states */
	DRAFT_METHOD_MEDUSA,      /* heads on the target's last hidden state */
	DRAFT_METHOD_COUNT
};

/* "none", "ngram", "draft_model", "eagle", "medusa"; "?" outside the enum. */
const char *draft_method_name(enum draft_method m);
/* Parses a method name (exact, lower case). False when it is none of them. */
bool draft_method_parse(const char *text, enum draft_method *out);
/* True for methods that need extra weights on the draft rank (draft_model, eagle,
 * medusa): what `low_memory` rules out. */
bool draft_method_needs_weights(enum draft_method m);

#endif
