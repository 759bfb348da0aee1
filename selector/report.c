/* The decision as log lines (selector.h): what `specctl status` also shows, written
 * once at start-up so the log alone explains the choice. */
#include "common/log.h"
#include "selector.h"

void sel_decision_log(const struct sel_decision *d)
{
	LOG_INFO("selector: %s, K %u, transport %s (%s)", draft_method_name(d->method), d->k,
		 sel_transport_name(d->transport),
		 d->measured ? "measured" : "before measurement");
	for (uint32_t i = 0; i < d->n_reasons; i++)
		LOG_INFO("selector:   because %s", d->reasons[i]);
	for (uint32_t i = 0; i < d->n_candidates; i++) {
		const struct sel_candidate *c = &d->candidates[i];
		if (c->excluded[0])
			LOG_INFO("selector:   %-11s K %-2u %-6s excluded: %s", draft_method_name(c->method),
				 c->k, sel_transport_name(c->transport), c->excluded);
		else if (d->measured)
			LOG_INFO("selector:   %-11s K %-2u %-6s a %.2f  %8.1f tokens/s  %.2fx",
				 draft_method_name(c->method), c->k, sel_transport_name(c->transport),
				 c->acceptance, c->tokens_per_s, c->speedup);
		else
			LOG_INFO("selector:   %-11s K %-2u %-6s (not measured)",
				 draft_method_name(c->method), c->k, sel_transport_name(c->transport));
	}
}
