/* The decision (selector.h): rule out what is not allowed or does not fit, predict
 * tokens/s for every method, transport and K left, honour the floor, and say why.
 * Before anything is measured the origin rule table decides (rule_table.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rule_table.h"
#include "selector.h"

#define MIB (1024.0 * 1024.0)
#define RULE_K 5 /* the rule table's num_speculative_tokens */

static void add_reason(struct sel_decision *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void add_reason(struct sel_decision *d, const char *fmt, ...)
{
	if (d->n_reasons >= SEL_MAX_REASONS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->reasons[d->n_reasons++], SEL_TEXT_MAX, fmt, ap);
	va_end(ap);
}

static const char *weights_key(enum draft_method m)
{
	switch (m) {
	case DRAFT_METHOD_DRAFT_MODEL:
		return "speculation.draft_model.model";
	case DRAFT_METHOD_EAGLE:
		return "speculation.eagle.heads";
	case DRAFT_METHOD_MEDUSA:
		return "speculation.medusa.heads";
	default:
		return "its weights";
	}
}

/* Why method m cannot run here, or false when it can. The forced method is judged
 * like any other: the caller decides what a forced method's exclusion means. */
static bool ruled_out(const struct sel_inputs *in, enum draft_method m, char *why)
{
	const struct sel_method_in *mi = &in->methods[m];
	if (m == DRAFT_METHOD_NONE)
		return false;
	if (!mi->built)
		snprintf(why, SEL_TEXT_MAX, "no %s drafter in this build", draft_method_name(m));
	else if (!mi->configured)
		snprintf(why, SEL_TEXT_MAX, "not configured (%s is unset)", weights_key(m));
	else if (mi->incompatible[0])
		snprintf(why, SEL_TEXT_MAX, "incompatible with the target: %.160s", mi->incompatible);
	else if (in->low_memory && draft_method_needs_weights(m))
		snprintf(why, SEL_TEXT_MAX, "constraints.low_memory rules out extra weights");
	else if (in->max_draft_memory && mi->memory_bytes > in->max_draft_memory)
		snprintf(why, SEL_TEXT_MAX, "needs %.0f MiB; constraints.max_draft_memory is %.0f MiB",
			 (double)mi->memory_bytes / MIB, (double)in->max_draft_memory / MIB);
	else if (in->draft_memory_free && mi->memory_bytes > in->draft_memory_free)
		snprintf(why, SEL_TEXT_MAX, "needs %.0f MiB; the %s has %.0f MiB free",
			 (double)mi->memory_bytes / MIB,
			 in->dedicated_draft ? "draft rank" : "leader",
			 (double)in->draft_memory_free / MIB);
	else
		return false;
	return true;
}

static double acceptance(const struct sel_inputs *in, enum draft_method m,
			 enum sel_transport t)
{
	double a = in->methods[m].acceptance > 0 ? in->methods[m].acceptance
						  : sel_acceptance_prior(m);
	/* Sampling jobs: a truncated q loses a little; greedy drafts (q one-hot) lose the
	 * mass the draft's own q spread over other tokens. */
	if (in->sampling && sel_method_samples_q(m) && in->dedicated_draft) {
		if (t == SEL_TRANSPORT_TOPK)
			a *= 0.97;
		else if (t == SEL_TRANSPORT_GREEDY)
			a *= 0.85;
	}
	return a;
}

struct sel_candidate sel_predict(const struct sel_inputs *in, enum draft_method m, uint32_t k,
				 enum sel_transport t)
{
	struct sel_candidate c = {.method = m, .k = k, .transport = t};
	c.acceptance = k ? acceptance(in, m, t) : 0;
	c.step_s = sel_step_time(in, m, k, t, c.acceptance);
	double plain = sel_verify_time(in, 1);
	c.tokens_per_s = sel_expected_tokens(c.acceptance, k) / c.step_s;
	c.speedup = c.tokens_per_s * plain;
	return c;
}

/* The best K for (m, t): the forced K, or the best of 1..k_max (ties: the smaller). */
static struct sel_candidate best_k(const struct sel_inputs *in, enum draft_method m,
				   enum sel_transport t)
{
	if (m == DRAFT_METHOD_NONE)
		return sel_predict(in, m, 0, t);
	if (in->k_forced)
		return sel_predict(in, m, in->k_forced, t);
	struct sel_candidate best = sel_predict(in, m, 1, t);
	for (uint32_t k = 2; k <= in->k_max; k++) {
		struct sel_candidate c = sel_predict(in, m, k, t);
		if (c.tokens_per_s > best.tokens_per_s)
			best = c;
	}
	return best;
}

static struct sel_candidate *add_row(struct sel_decision *d)
{
	if (d->n_candidates >= SEL_MAX_CANDIDATES)
		return NULL;
	struct sel_candidate *c = &d->candidates[d->n_candidates++];
	memset(c, 0, sizeof(*c));
	return c;
}

/* Which transports a method's rows cover: only sampling jobs ship q. */
static int n_transports(const struct sel_inputs *in, enum draft_method m)
{
	return in->sampling && sel_method_samples_q(m) && in->dedicated_draft ? SEL_TRANSPORT_COUNT : 1;
}

enum sel_transport sel_method_transport(const struct sel_inputs *in, enum draft_method m)
{
	if (in->sampling && sel_method_samples_q(m) &&
	    (!in->dedicated_draft || in->transport_built[SEL_TRANSPORT_FULL]))
		return SEL_TRANSPORT_FULL;
	return SEL_TRANSPORT_GREEDY;
}

static struct sel_rule_choice rule_choice(const struct sel_inputs *in)
{
	char why[SEL_TEXT_MAX];
	struct sel_rule_input ri = {
		.eagle_supported = !ruled_out(in, DRAFT_METHOD_EAGLE, why),
		.draft_available = !ruled_out(in, DRAFT_METHOD_DRAFT_MODEL, why),
		.low_memory = in->low_memory,
		.target_speedup = in->target_speedup,
	};
	return sel_rule_table(&ri);
}

static uint32_t rule_k(const struct sel_inputs *in, enum draft_method m)
{
	if (m == DRAFT_METHOD_NONE)
		return 0;
	if (in->k_forced)
		return in->k_forced;
	return RULE_K < in->k_max ? RULE_K : in->k_max;
}

/* Nothing measured: the origin rule table, or the forced method, and the table of
 * what is ruled out. */
static void decide_by_rule(const struct sel_inputs *in, struct sel_decision *d)
{
	struct sel_rule_choice rule = rule_choice(in);
	d->method = in->method_forced ? in->method : rule.method;
	d->k = rule_k(in, d->method);
	if (d->method == rule.method) {
		d->lookup_min = (uint32_t)rule.prompt_lookup_min;
		d->lookup_max = (uint32_t)rule.prompt_lookup_max;
	}
	d->transport = sel_method_transport(in, d->method);
	if (in->method_forced)
		add_reason(d, "speculation.method forces %s", draft_method_name(d->method));
	else
		add_reason(d, "nothing measured yet: the origin rule table decides (%s)",
			   rule.reason);
	if (in->k_forced && d->k)
		add_reason(d, "speculation.num_speculative_tokens forces K %u", d->k);
	if (d->lookup_max)
		add_reason(d, "prompt lookup matches n-grams of %u to %u tokens, as the rule says "
			   "(unless speculation.ngram sets them)",
			   d->lookup_min ? d->lookup_min : 2, d->lookup_max);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		struct sel_candidate *c = add_row(d);
		c->method = (enum draft_method)m;
		c->k = rule_k(in, c->method);
		c->transport = sel_method_transport(in, c->method);
		ruled_out(in, c->method, c->excluded);
	}
}

static void forced_exclusions(const struct sel_inputs *in, struct sel_decision *d)
{
	if (in->method_forced)
		add_reason(d, "speculation.method forces %s", draft_method_name(in->method));
	if (in->k_forced && !(in->method_forced && in->method == DRAFT_METHOD_NONE))
		add_reason(d, "speculation.num_speculative_tokens forces K %u", in->k_forced);
}

/* Measured: every allowed (method, transport) row with its best K; the choice.
 * SPECD_INVAL when no row is left (a forced method with no transport it can run). */
static enum specd_status decide_measured(const struct sel_inputs *in, struct sel_decision *d,
					 struct specd_error *err)
{
	d->measured = true;
	d->plain_tokens_per_s = 1.0 / sel_verify_time(in, 1);
	forced_exclusions(in, d);
	for (int mi = 0; mi < DRAFT_METHOD_COUNT; mi++) {
		enum draft_method m = (enum draft_method)mi;
		char why[SEL_TEXT_MAX] = "";
		bool out = ruled_out(in, m, why);
		if (!out && in->method_forced && m != in->method) {
			snprintf(why, SEL_TEXT_MAX, "speculation.method forces %s",
				 draft_method_name(in->method));
			out = true;
		}
		if (out && in->method_forced && m == in->method) {
			/* Forced all the same: the runtime reports the failure, if any. */
			add_reason(d, "warning: the forced %s is %s", draft_method_name(m), why);
			out = false;
		}
		for (int t = 0; t < n_transports(in, m); t++) {
			enum sel_transport tr = n_transports(in, m) == 1 ? sel_method_transport(in, m)
									 : (enum sel_transport)t;
			struct sel_candidate *c = add_row(d);
			if (!c)
				break;
			if (out) {
				c->method = m;
				c->transport = tr;
				snprintf(c->excluded, SEL_TEXT_MAX, "%s", why);
				break; /* one row says it for every transport */
			}
			*c = best_k(in, m, tr);
			if (!in->transport_built[tr] && n_transports(in, m) > 1)
				snprintf(c->excluded, SEL_TEXT_MAX, "the runtime cannot ship %s q yet",
					 sel_transport_name(tr));
		}
	}

	const struct sel_candidate *best = NULL, *reach = NULL, *second = NULL;
	for (uint32_t i = 0; i < d->n_candidates; i++) {
		const struct sel_candidate *c = &d->candidates[i];
		if (c->excluded[0])
			continue;
		if (!best || c->tokens_per_s > best->tokens_per_s)
			best = c;
		if (c->speedup >= in->target_speedup - 1e-9 &&
		    (!reach || c->tokens_per_s > reach->tokens_per_s))
			reach = c;
	}
	const struct sel_candidate *pick = reach ? reach : best;
	if (!pick)
		return specd_errorf(err, SPECD_INVAL, "selector: the forced %s has no row left "
				    "(%s)", draft_method_name(in->method),
				    d->n_candidates ? d->candidates[0].excluded : "no candidates");
	for (uint32_t i = 0; i < d->n_candidates; i++) {
		const struct sel_candidate *c = &d->candidates[i];
		if (!c->excluded[0] && c != pick && (!second || c->tokens_per_s > second->tokens_per_s))
			second = c;
	}
	d->method = pick->method;
	d->k = pick->k;
	d->transport = pick->transport;
	d->tokens_per_s = pick->tokens_per_s;
	d->speedup = pick->speedup;

	if (pick->method == DRAFT_METHOD_NONE)
		add_reason(d, "chosen: plain decoding, %.1f tokens/s predicted: no method is "
			   "predicted to beat it", pick->tokens_per_s);
	else
		add_reason(d, "chosen: %s K %u, transport %s: %.1f tokens/s predicted, %.2fx "
			   "plain decoding (%.1f tokens/s)", draft_method_name(pick->method),
			   pick->k, sel_transport_name(pick->transport), pick->tokens_per_s,
			   pick->speedup, d->plain_tokens_per_s);
	if (in->target_speedup > 0) {
		if (reach)
			add_reason(d, "constraints.target_speedup %.2f is predicted to be reached",
				   in->target_speedup);
		else
			add_reason(d, "no option is predicted to reach constraints.target_speedup "
				   "%.2f: taking the best (%.2fx)", in->target_speedup, best->speedup);
	}
	if (second)
		add_reason(d, "next best: %s K %u, transport %s: %.1f tokens/s",
			   draft_method_name(second->method), second->k,
			   sel_transport_name(second->transport), second->tokens_per_s);

	/* Why shipping q lost, when it did. */
	if (in->sampling && in->dedicated_draft && sel_method_samples_q(pick->method) &&
	    pick->transport != SEL_TRANSPORT_FULL) {
		for (uint32_t i = 0; i < d->n_candidates; i++) {
			const struct sel_candidate *c = &d->candidates[i];
			if (c->method != pick->method || c->transport != SEL_TRANSPORT_FULL ||
			    c->excluded[0])
				continue;
			double bytes = sel_link_bytes(in, c->method, c->k, c->transport, c->acceptance);
			add_reason(d, "full q rows would move %.0f KiB a step (%.2f ms on this link): "
				   "%s wins, %.1f vs %.1f tokens/s", bytes / 1024.0,
				   1e3 * bytes / in->link.bandwidth, sel_transport_name(pick->transport),
				   pick->tokens_per_s, c->tokens_per_s);
		}
	}
	/* A drafter slower than the target cannot pay for itself. */
	double t1 = sel_verify_time(in, 1);
	for (int m = DRAFT_METHOD_NGRAM; m < DRAFT_METHOD_COUNT; m++) {
		const struct sel_method_in *mi = &in->methods[m];
		char why[SEL_TEXT_MAX];
		if (ruled_out(in, (enum draft_method)m, why) || mi->t_draft_token_s < t1)
			continue;
		add_reason(d, "%s drafts a token in %.2f ms, the target verifies one in %.2f ms: "
			   "the drafter is slower than the target", draft_method_name(m),
			   1e3 * mi->t_draft_token_s, 1e3 * t1);
	}
	/* The baseline to beat. */
	struct sel_rule_choice rule = rule_choice(in);
	struct sel_candidate r = sel_predict(in, rule.method, rule_k(in, rule.method),
					 sel_method_transport(in, rule.method));
	add_reason(d, "the origin rule table would run %s K %u: %.1f tokens/s predicted (%s)",
		   draft_method_name(rule.method), r.k, r.tokens_per_s, rule.reason);
	return SPECD_OK;
}

void sel_lookup_lengths(const struct sel_decision *d, uint32_t given_min, uint32_t given_max,
			uint32_t *min, uint32_t *max)
{
	*min = given_min ? given_min : d->lookup_min;
	*max = given_max ? given_max : d->lookup_max;
	if (!given_max && *max && *min > *max)
		*max = *min; /* a given minimum over the rule's maximum */
	if (!given_min && *min && *max && *min > *max)
		*min = *max; /* the rule's minimum over a given maximum */
}

enum specd_status sel_decide(const struct sel_inputs *in, struct sel_decision *out,
			     struct specd_error *err)
{
	if (!in || !out)
		return specd_errorf(err, SPECD_INVAL, "selector: no inputs or no output");
	if (in->k_max < 1 || in->k_max > SEL_K_MAX || in->k_forced > SEL_K_MAX)
		return specd_errorf(err, SPECD_INVAL, "selector: K up to %u (forced %u); the "
				    "range is 1 to %d", in->k_max, in->k_forced, SEL_K_MAX);
	if (in->method_forced && (unsigned)in->method >= DRAFT_METHOD_COUNT)
		return specd_errorf(err, SPECD_INVAL, "selector: forced method %d", (int)in->method);
	if (in->calibrated && in->t_verify_s[1] <= 0)
		return specd_errorf(err, SPECD_INVAL, "selector: calibrated without the time of "
				    "a 1-token forward");
	if (in->calibrated && in->dedicated_draft &&
	    (!in->link.measured || in->link.bandwidth <= 0 || in->link.latency_s < 0))
		return specd_errorf(err, SPECD_INVAL, "selector: calibrated but the leader <-> "
				    "draft link is not measured");
	static struct sel_decision empty;
	struct sel_decision d = empty;
	if (in->calibrated) {
		enum specd_status st = decide_measured(in, &d, err);
		if (st != SPECD_OK)
			return st;
	} else {
		decide_by_rule(in, &d);
	}
	*out = d;
	return SPECD_OK;
}
