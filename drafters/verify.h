/* The verifier: given the target's logits at the K+1 positions of one verify forward
 * ([last committed token, d1 .. dK]) and the drafter's proposal, how many proposed
 * tokens are kept and which token follows them. Runs on the leader, after the target
 * forward and before the commit (drafters/engine.h).
 *
 * Greedy (the sampler is greedy): the longest prefix equal to the target's argmax, then
 * the target's argmax at the first mismatch (or after the last token). No draw.
 *
 * Sampling (speculative sampling, Leviathan et al. 2211.17192, Chen et al. 2302.01318):
 * p_i = sampler_probs(target logits at i) and q_i the drafter's (one-hot for q_onehot);
 * token d_i is accepted when u * q_i(d_i) < p_i(d_i) for a fresh uniform u (that is,
 * with probability min(1, p/q)); at the first rejection the next token is drawn from
 * norm(max(0, p_i - q_i)); when all are accepted, from p_{K+1} (the bonus). The output
 * then follows the target's transformed distribution exactly, whatever q is, provided
 * the drafter drew d_i from q_i. Draws: one uniform per tested token plus one draw for
 * the next token, all from the target sampler.
 *
 * Threads: whoever owns the sampler (the compute thread). */
#ifndef SPECD_DRAFTERS_VERIFY_H
#define SPECD_DRAFTERS_VERIFY_H

#include <stdint.h>

#include "common/status.h"
#include "drafters/drafter.h"

struct sampler;

struct draft_verdict {
	uint32_t n_accepted; /* 0 .. proposal n */
	int32_t next;        /* the correction at the first rejection, or the bonus */
};

/* The verifier's signature, so an engine can be handed another (a test's deliberately
 * wrong one). logits: (prop->n + 1, n_vocab) host, row i scored after the batch's token
 * i; work: (2 * n_vocab) host scratch. Errors: SPECD_INVAL (NULL arguments, n_vocab not
 * the sampler's, a proposed token out of range, logits with nothing above -inf). */
typedef enum specd_status draft_verify_fn(struct sampler *s, const float *logits,
					  uint32_t n_vocab, const struct draft_proposal *prop,
					  float *work, struct draft_verdict *out);

/* Greedy when sampler_is_greedy(s), speculative sampling otherwise. */
draft_verify_fn draft_verify;

/* The greedy rule alone (draws nothing, needs no sampler or work). */
enum specd_status draft_verify_greedy(const float *logits, uint32_t n_vocab,
				      const int32_t *tokens, uint32_t n, struct draft_verdict *out);

#endif
