/* The verifier: given the target's logits at the K+1 positions of one verify forward
 * ([last committed token, d1 .. dK]) and the drafter's proposal, how many proposed
 * tokens are kept and which token follows them. Runs on the leader, after the target
 * forward and before the commit (drafters/engine.h).
 *
 * Every rule but one is a walk (draft_verify_rows): from the root (row 0, the last
 * history token), take the row's choice; move to the first child (chain: the next
 * token) whose token is that choice, as long as there is one; `next` is the choice at
 * the node where the walk stops. Token trees (prop->tree; drafters/drafter.h): row
 * 1 + i is node i, all from one forward under the tree mask.
 *
 * Greedy (the sampler is greedy): the choice is the row's argmax. No draw.
 *
 * Sampling with drafts that are not samples (one-hot q: ngram, Medusa, EAGLE) or no
 * draft: the choice is a token drawn from the row's transformed distribution p
 * (sampler_sample), one uniform per row the walk reaches. This is
 * speculative sampling (Leviathan et al. 2211.17192, Chen et al. 2302.01318) and its
 * multi-candidate form (SpecInfer, Miao et al. 2305.09781) for one-hot q: there a
 * drafted d is accepted with probability min(1, p(d)/1) = p(d) and a rejection draws
 * from norm(max(0, p - onehot(d))), p without d; here d is accepted when the draw is
 * d, with probability p(d), and otherwise the draw is a token of p other than d with
 * the same law; siblings tried in turn each take their own p(d) in both. Each emitted
 * token is one draw from the target's own distribution at its position, with the
 * next uniform of the request's stream: the tokens are exactly plain sampled
 * decoding's for the same seed (the logits being batch-invariant).
 *
 * Sampling with drafted samples (a full q: the draft model, which samples when the
 * request does), the residual rule: p_i = sampler_probs(target logits at i); d_i is
 * accepted when u * q_i(d_i) < p_i(d_i)
 * for a fresh uniform u (probability min(1, p/q)); at the first rejection the
 * next token is drawn from norm(max(0, p_i - q_i)); when all are accepted, from
 * p_{K+1} (the bonus). Exact in distribution whatever q is, provided d_i was drawn from q_i.
 * Trees: the children are tried in index order, child c accepted when u * q_c(c) <
 * p'(c), where p' is p for the first child and norm(max(0, p' - q_c)) after each
 * rejection; `next` is drawn from p' when every child is rejected (exact when siblings
 * are independent draws from one q). On a chain the tree rule is the chain rule.
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

/* The rows a walk reads (n_vocab floats of logits a row). Row i's choice is ids[i]
 * when ids is set (taken where the logits are: model_batch.ids or model_batch.draws,
 * so the rows need not leave a GPU); else, with draw (a sampler that is not greedy),
 * a token drawn from logits row i (sampler_sample), drawn when the walk reaches the
 * row; else the row's argmax (the lowest id on ties, never a NaN). */
struct draft_rows {
	const float *logits;
	const uint32_t *ids;
	struct sampler *draw;
	uint32_t n_vocab;
};

/* Row i's choice into *best. SPECD_INVAL for a logits row with nothing above -inf or
 * an id out of range. */
enum specd_status draft_rows_choice(const struct draft_rows *r, uint32_t i, int32_t *best);

/* The walk over a chain or tree proposal (the top of this file). The proposal is
 * checked as draft_verify checks it. Errors: SPECD_INVAL (NULL arguments, a bad
 * proposal, a row draft_rows_choice refuses). */
enum specd_status draft_verify_rows(const struct draft_rows *r, const struct draft_proposal *prop,
				    struct draft_verdict *out);

/* Sampling walks with their draws taken where the logits are (model/llama.h struct
 * model_draw, the sample op), so a sampled step's logits rows need not leave a GPU:
 * for proposals draft_verify walks with draws (one-hot q or none, a sampler that is
 * not greedy). The walk takes one uniform a level, so the uniforms are known in
 * advance: the row of a node at depth d (the root's row at 0) draws with the d-th
 * uniform from now. One draw over the proposal's n + 1 rows gives every choice the
 * walk may need.
 *
 * draft_draw_prepare fills that draw's u (n + 1) before the forward, drawing nothing;
 * draft_verify_drawn then walks the drawn tokens and draws from s as many uniforms as
 * draft_verify would have (one a level reached): the verdict and the sampler's state
 * after it are exactly draft_verify's on the same logits when the sample op is the
 * CPU's (kernels/cpu), and a device's differ only where kern.h allows its draws to.
 * Errors: SPECD_INVAL (a proposal draft_verify_can_draw refuses, a drawn token out of
 * range). Threads: as draft_verify. */
bool draft_verify_can_draw(const struct sampler *s, const struct draft_proposal *prop);
void draft_draw_prepare(const struct sampler *s, const struct draft_proposal *prop, float *u);
enum specd_status draft_verify_drawn(struct sampler *s, const struct draft_proposal *prop,
				     const uint32_t *drawn, struct draft_verdict *out);

/* The tree rules (drafters/tree_verify.c), for a proposal with prop->tree set and its
 * tokens and parents already checked (draft_verify checks them): the walk over rows
 * (draft_verify_rows, for a tree), and the residual rule (a full q), which draws from
 * s and needs work (2 * n_vocab). Errors as draft_verify. */
enum specd_status draft_verify_tree_rows(const struct draft_rows *r,
					 const struct draft_proposal *prop,
					 struct draft_verdict *out);
enum specd_status draft_verify_tree_sample(struct sampler *s, const float *logits,
					   uint32_t n_vocab, const struct draft_proposal *prop,
					   float *work, struct draft_verdict *out);

#endif
