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
 * Token trees (prop->tree; drafters/drafter.h): logits row 0 is the last history token,
 * row 1 + i node i, all from one forward under the tree mask. Greedy: from the root,
 * move to the first child whose token is the target's argmax at the current node, as
 * long as there is one; the accepted path is the longest root path the target agrees
 * with, and `next` the argmax at its end. Sampling (multi-candidate speculative
 * sampling, SpecInfer, Miao et al. 2305.09781): at the current node with target
 * distribution p, the children are tried in index order; child c is accepted when
 * u * q_c(c) < p'(c), where p' is p for the first child and after each rejection
 * becomes norm(max(0, p' - q_c)); once a child is accepted the walk moves on to it
 * with its own p; when every child is rejected (or there is none) `next` is drawn from
 * p'. Exact in distribution when siblings are distinct tokens with one-hot q (each
 * token then comes out with probability p) or independent draws from one q. On a chain
 * the rule and its draws are those of the chain verifier above.
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
	/* The accepted proposal indices, root side first: for a tree each is a child of the
	 * one before; for a chain path[i] = i (a chain verifier need not fill it). */
	uint32_t path[DRAFT_MAX_TOKENS];
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

/* The rows a greedy verifier reads: row i's choice is the argmax of logits row i
 * (n_vocab floats a row; the lowest id on ties, never a NaN) or, when ids is set,
 * ids[i]: the same argmax taken where the logits are (model_batch.ids), so the rows
 * need not leave a GPU. */
struct draft_rows {
	const float *logits;
	const uint32_t *ids;
	uint32_t n_vocab;
};

/* Row i's choice into *best. SPECD_INVAL for a logits row with nothing above -inf or
 * an id out of range. */
enum specd_status draft_rows_choice(const struct draft_rows *r, uint32_t i, int32_t *best);

/* Greedy verification of a chain or tree proposal against rows: the verdict
 * draft_verify gives a greedy sampler on those logits. The proposal is checked as
 * draft_verify checks it. Errors: SPECD_INVAL (NULL arguments, a bad proposal, a row
 * draft_rows_choice refuses). */
enum specd_status draft_verify_greedy_rows(const struct draft_rows *r,
					   const struct draft_proposal *prop,
					   struct draft_verdict *out);

/* Speculative sampling with its draws taken where the logits are (model/llama.h
 * struct model_draw, the sample op), so a sampled step's logits rows need not leave a
 * GPU: for a chain proposal whose q is one-hot (every drafter's but a sampling draft
 * model's) or an empty one (plain decoding), under a sampler that is not greedy.
 * The chain rule's uniforms are known in advance: the n tests take u_0 .. u_{n-1},
 * and the draw that follows a rejection at i takes u_{i+1}, the bonus draw u_n. So
 * one draw over rows 0..n gives every token the walk may need, row i from its
 * residual with uniform u_{i+1} (row n from p_n with u_n), with p_i(d_i) beside it.
 *
 * draft_draw_prepare fills that draw's u and probe (n + 1 each) before the forward,
 * drawing nothing; draft_verify_drawn then walks the drawn tokens and probabilities
 * and draws from s as many uniforms as draft_verify would have: the verdict and the
 * sampler's state after it are exactly draft_verify's on the same logits when the
 * sample op is the CPU's (kernels/cpu), and a device's differ only where kern.h
 * allows its draws to. Errors: SPECD_INVAL (a proposal draft_verify_can_draw
 * refuses, a drawn token out of range). Threads: as draft_verify. */
bool draft_verify_can_draw(const struct sampler *s, const struct draft_proposal *prop);
void draft_draw_prepare(const struct sampler *s, const struct draft_proposal *prop, float *u,
			uint32_t *probe);
enum specd_status draft_verify_drawn(struct sampler *s, const struct draft_proposal *prop,
				     const uint32_t *drawn, const float *probe_p,
				     struct draft_verdict *out);

/* The tree rules (drafters/tree_verify.c), for a proposal with prop->tree set and its
 * tokens and parents already checked (draft_verify checks them): greedy needs no
 * sampler or work; sampling draws from s and needs work (2 * n_vocab). Errors as
 * draft_verify. */
enum specd_status draft_verify_tree_greedy(const float *logits, uint32_t n_vocab,
					   const struct draft_proposal *prop,
					   struct draft_verdict *out);
/* The greedy tree walk over rows (draft_verify_greedy_rows, for a tree). */
enum specd_status draft_verify_tree_greedy_rows(const struct draft_rows *r,
						const struct draft_proposal *prop,
						struct draft_verdict *out);
enum specd_status draft_verify_tree_sample(struct sampler *s, const float *logits,
					   uint32_t n_vocab, const struct draft_proposal *prop,
					   float *work, struct draft_verdict *out);

#endif
