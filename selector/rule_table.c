/* The origin rule table; see rule_table.h. */
#include "rule_table.h"

struct sel_rule_choice sel_rule_table(const struct sel_rule_input *in)
{
	if (in->eagle_supported && in->target_speedup > 2.5)
		return (struct sel_rule_choice){DRAFT_METHOD_EAGLE, 5, 0, 0,
						"eagle supported and target_speedup > 2.5"};
	if (in->low_memory)
		return (struct sel_rule_choice){DRAFT_METHOD_NGRAM, 5, 2, 5, "low_memory"};
	if (in->target_speedup > 2.0 && in->draft_available)
		return (struct sel_rule_choice){DRAFT_METHOD_DRAFT_MODEL, 5, 0, 0,
						"target_speedup > 2 and a draft model is available"};
	return (struct sel_rule_choice){DRAFT_METHOD_NGRAM, 5, 0, 4, "default"};
}
