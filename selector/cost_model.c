/* The selector's cost model (selector.h): expected tokens per step, bytes and seconds
 * on the leader <-> draft link, and step time as the runtime schedules a step
 * (drafters/engine.c, drafters/remote.c). Pure arithmetic on struct sel_inputs. */
#include <math.h>

#include "drafters/remote.h"
#include "selector.h"


const char *sel_transport_name(enum sel_transport t)
{
	static const char *const names[SEL_TRANSPORT_COUNT] = {"greedy", "topk", "full"};
	return (unsigned)t < SEL_TRANSPORT_COUNT ? names[t] : "?";
}

double sel_acceptance_prior(enum draft_method m)
{
	switch (m) {
	case DRAFT_METHOD_NGRAM:
		return 0.5;
	case DRAFT_METHOD_DRAFT_MODEL:
		return 0.7;
	case DRAFT_METHOD_EAGLE:
		return 0.8;
	case DRAFT_METHOD_MEDUSA:
		return 0.6;
	default:
		return 0.0;
	}
}

double sel_expected_tokens(double a, uint32_t k)
{
	if (a >= 1.0)
		return (double)k + 1.0;
	if (a <= 0.0)
		return 1.0;
	return (1.0 - pow(a, (double)k + 1.0)) / (1.0 - a);
}

bool sel_method_samples_q(enum draft_method m)
{
	/* Medusa and EAGLE propose the top candidates of their trees, deterministically
	 * (q one-hot). */
	return m == DRAFT_METHOD_DRAFT_MODEL;
}

bool sel_method_wants_hidden(enum draft_method m)
{
	return m == DRAFT_METHOD_EAGLE || m == DRAFT_METHOD_MEDUSA;
}

bool sel_crosses_link(const struct sel_inputs *in, enum draft_method m)
{
	return in->dedicated_draft && !(m == DRAFT_METHOD_NGRAM && in->ngram_in_leader);
}

double sel_link_bytes(const struct sel_inputs *in, enum draft_method m, uint32_t k,
		      enum sel_transport t, double a)
{
	if (!sel_crosses_link(in, m) || k == 0)
		return 0.0;
	double bytes = (double)draft_link_step_bytes();
	if (in->sampling && sel_method_samples_q(m)) {
		if (t == SEL_TRANSPORT_FULL)
			bytes += (double)k * in->n_vocab * sizeof(float);
		else if (t == SEL_TRANSPORT_TOPK)
			bytes += (double)k * SEL_TOPK_ENTRIES * (sizeof(int32_t) + sizeof(float));
	}
	/* Drafters on the target's hidden states: Medusa needs the row of the position
	 * that chose the last token; EAGLE those of every token the step keeps. */
	if (m == DRAFT_METHOD_MEDUSA)
		bytes += (double)in->dim * sizeof(float);
	else if (m == DRAFT_METHOD_EAGLE)
		bytes += sel_expected_tokens(a, k) * in->dim * sizeof(float);
	return bytes;
}

static double link_time(const struct sel_inputs *in, enum draft_method m, uint32_t k,
			enum sel_transport t, double a)
{
	if (!sel_crosses_link(in, m) || k == 0)
		return 0.0;
	double bw = in->link.bandwidth > 0 ? in->link.bandwidth : INFINITY;
	/* Propose out and reply back are two latencies; the commit travels ahead of the
	 * next propose, so only its bytes count. */
	return 2.0 * in->link.latency_s + sel_link_bytes(in, m, k, t, a) / bw;
}

static double draft_time(const struct sel_method_in *mi, uint32_t k)
{
	return k ? mi->t_draft_fixed_s + (double)k * mi->t_draft_token_s : 0.0;
}

double sel_verify_time(const struct sel_inputs *in, uint32_t n)
{
	uint32_t top = in->k_max + 1;
	if (n < 1)
		n = 1;
	if (n <= top && in->t_verify_s[n] > 0)
		return in->t_verify_s[n];
	/* Between measured sizes: linear; past the last: the last slope, never falling. */
	uint32_t lo = 0, hi = 0;
	for (uint32_t i = 1; i <= top && i <= SEL_K_MAX + 1; i++) {
		if (in->t_verify_s[i] <= 0)
			continue;
		if (i < n)
			lo = i;
		else if (!hi)
			hi = i;
	}
	if (lo && hi)
		return in->t_verify_s[lo] + (in->t_verify_s[hi] - in->t_verify_s[lo]) *
						    (double)(n - lo) / (double)(hi - lo);
	if (lo) {
		uint32_t prev = 0;
		for (uint32_t i = 1; i < lo; i++)
			if (in->t_verify_s[i] > 0)
				prev = i;
		double slope = prev ? (in->t_verify_s[lo] - in->t_verify_s[prev]) / (lo - prev) : 0;
		/* Noise can make the last measured size look faster than the one before; a
		 * falling slope carried forward would reach zero or below (a free forward). */
		if (slope < 0)
			slope = 0;
		return in->t_verify_s[lo] + slope * (double)(n - lo);
	}
	return hi ? in->t_verify_s[hi] : 0.0;
}

double sel_step_time(const struct sel_inputs *in, enum draft_method m, uint32_t k,
		     enum sel_transport t, double a)
{
	double verify = sel_verify_time(in, k + 1);
	if (k == 0 || m == DRAFT_METHOD_NONE)
		return sel_verify_time(in, 1);
	const struct sel_method_in *mi = &in->methods[m];
	double link = link_time(in, m, k, t, a);
	if (!(sel_crosses_link(in, m) && in->pipeline && !in->sampling &&
	      !sel_method_wants_hidden(m)))
		return draft_time(mi, k) + link + verify;
	/* Pipelined (drafters/remote.c): after answering, the draft rank drafts K + 1
	 * more assuming all K are kept and the bonus is its own guess, while the leader
	 * verifies. A hit (probability a^(K+1)) finds the next proposal ready or nearly;
	 * a miss waits for that work, then for a fresh draft of K. */
	double hit = pow(a, (double)k + 1.0);
	double ahead = draft_time(mi, k + 1) - verify;
	if (ahead < 0)
		ahead = 0;
	return link + verify + ahead + (1.0 - hit) * draft_time(mi, k);
}

void sel_scale_for_tp(struct sel_inputs *in, uint32_t tp, uint32_t n_layers,
		      const struct sel_link *allreduce)
{
	if (tp <= 1 || !allreduce || !allreduce->measured || allreduce->bandwidth <= 0)
		return;
	for (uint32_t n = 1; n <= in->k_max + 1 && n <= SEL_K_MAX + 1; n++) {
		if (in->t_verify_s[n] <= 0)
			continue;
		double bytes = (double)n * in->dim * sizeof(float);
		double reduce = allreduce->latency_s + bytes / allreduce->bandwidth;
		in->t_verify_s[n] = in->t_verify_s[n] / tp + 2.0 * n_layers * reduce;
	}
}
