/* Per-job speculation statistics: what the drafter proposed, what the verifier kept,
 * and where the time went. The engine (drafters/engine.h) fills one per job; specd-run
 * prints it, the daemon will report it per job and feed it to the selector.
 *
 * Definitions (the ones vLLM's speculative-decoding metrics use):
 * - a step is one target verify forward; each step emits its accepted tokens plus one
 *   token of the target's own (the correction or bonus): emitted = accepted + steps.
 * - acceptance rate = accepted / drafted.
 * - mean acceptance length = emitted / steps: tokens per target forward (1 for plain
 *   decoding, at most K + 1).
 * - acceptance at position i (1-based) = proposals whose i-th token was accepted /
 *   proposals that had an i-th token.
 * - system efficiency = emitted / (steps * (K + 1)): the share of the ideal, where every
 *   step drafts K tokens and all are accepted. Steps that drafted fewer (no n-gram
 *   match, the end of the context) count against it.
 * Counts are before the cut at end-of-sequence or max tokens; `generated` is after it.
 *
 * Threads: one job's metrics belong to whoever runs the job. */
#ifndef SPECD_DRAFTERS_METRICS_H
#define SPECD_DRAFTERS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "drafters/drafter.h"

struct draft_metrics {
	uint32_t k;              /* K configured */
	uint64_t n_prompt;       /* prompt tokens */
	uint64_t steps;          /* target verify forwards */
	uint64_t drafted;        /* tokens proposed */
	uint64_t accepted;       /* proposed tokens accepted */
	uint64_t emitted;        /* accepted + one target token per step */
	uint64_t generated;      /* tokens output, after the cut at EOS / max tokens */
	uint64_t proposed_at[DRAFT_MAX_TOKENS]; /* proposals with a token at position i+1 */
	uint64_t accepted_at[DRAFT_MAX_TOKENS]; /* ... and that token accepted */
	double t_prefill;        /* s: target and draft prefill of the prompt */
	double t_draft;          /* s: in propose and commit */
	double t_verify;         /* s: in the target's verify forward and the verifier */
	double t_decode;         /* s: every step, end to end */
};

/* Zeroes m for a job with speculation length k. */
void draft_metrics_init(struct draft_metrics *m, uint32_t k);
/* Adds one step: n_drafted proposed, n_accepted of them kept. */
void draft_metrics_add_step(struct draft_metrics *m, uint32_t n_drafted, uint32_t n_accepted);
/* Adds one step that verified a token tree of n_nodes nodes and `depth` levels, of which
 * a root path of n_accepted was kept: drafted counts the nodes, and position i counts
 * the trees that reach depth i. */
void draft_metrics_add_tree(struct draft_metrics *m, uint32_t n_nodes, uint32_t depth,
			    uint32_t n_accepted);

/* The derived rates of the definitions above; 0 when their denominator is 0. */
double draft_metrics_acceptance_rate(const struct draft_metrics *m);
double draft_metrics_mean_accept_len(const struct draft_metrics *m);
double draft_metrics_position_rate(const struct draft_metrics *m, uint32_t i); /* i from 1 */
double draft_metrics_efficiency(const struct draft_metrics *m);
/* generated / t_decode. */
double draft_metrics_tokens_per_s(const struct draft_metrics *m);

/* A few human-readable lines (each ending in '\n') into buf, truncated to cap; returns
 * the length the full text needs, as snprintf. */
size_t draft_metrics_format(const struct draft_metrics *m, const char *prefix, char *buf,
			    size_t cap);

#endif
