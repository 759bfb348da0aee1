/* The origin document's method-selection rule table (shared/origin/
 * speculative-method-selection.txt), kept verbatim in behaviour: it is the decision
 * before anything is measured, and the baseline the measured selector must beat. */
#ifndef SPECD_SELECTOR_RULE_TABLE_H
#define SPECD_SELECTOR_RULE_TABLE_H

#include <stdbool.h>

#include "drafters/method.h"

struct sel_rule_input {
	bool eagle_supported;   /* EAGLE heads configured and compatible */
	bool draft_available;   /* a compatible draft model configured */
	bool low_memory;        /* constraints.low_memory */
	double target_speedup;  /* constraints.target_speedup; 0 when unset */
};

struct sel_rule_choice {
	enum draft_method method;
	int spec_tokens;        /* num_speculative_tokens */
	int prompt_lookup_min;  /* for ngram; 0 when the table leaves it to the default */
	int prompt_lookup_max;
	const char *reason;     /* static text: which rule fired */
};

/* The table: EAGLE when supported and target_speedup > 2.5; ngram (2..5) when memory
 * is low; a draft model when target_speedup > 2 and one is available; else ngram
 * (max 4). The table gives ngram no K; we use 5, its K elsewhere. Pure; any thread. */
struct sel_rule_choice sel_rule_table(const struct sel_rule_input *in);

#endif
