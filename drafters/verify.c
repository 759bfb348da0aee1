/* Greedy verification and speculative sampling (see verify.h for the rules and the
 * paper references). Leader only; after the target's verify forward. */
#include "verify.h"

#include <math.h>
#include <string.h>

#include "model/sampler.h"

enum specd_status draft_rows_choice(const struct draft_rows *r, uint32_t i, int32_t *best)
{
	if (r->ids) {
		if (r->ids[i] >= r->n_vocab)
			return SPECD_INVAL;
		*best = (int32_t)r->ids[i];
		return SPECD_OK;
	}
	const float *row = r->logits + (size_t)i * r->n_vocab;
	if (r->draw)
		return sampler_sample(r->draw, row, best);
	*best = sampler_argmax(row, (int32_t)r->n_vocab);
	return *best < 0 || row[*best] == -INFINITY ? SPECD_INVAL : SPECD_OK;
}

static bool rows_ok(const struct draft_rows *r)
{
	return r && (r->logits || r->ids) && r->n_vocab >= 1 && r->n_vocab <= INT32_MAX;
}

/* The chain walk: accept while the draft token is the row's choice. */
static enum specd_status chain_walk(const struct draft_rows *r, const int32_t *tokens,
				      uint32_t n, struct draft_verdict *out)
{
	uint32_t a = 0;
	int32_t best;
	enum specd_status st;

	for (;;) {
		if ((st = draft_rows_choice(r, a, &best)) != SPECD_OK)
			return st;
		if (a == n || tokens[a] != best)
			break;
		out->path[a] = a;
		a++;
	}
	out->n_accepted = a;
	out->next = best;
	return SPECD_OK;
}

/* A proposal's tokens are ids of the vocabulary and a tree's parents come earlier. */
static bool prop_ok(const struct draft_proposal *prop, uint32_t n_vocab)
{
	if (!prop || (prop->n && !prop->tokens) || prop->n > DRAFT_MAX_TOKENS)
		return false;
	for (uint32_t i = 0; i < prop->n; i++)
		if (prop->tokens[i] < 0 || (uint32_t)prop->tokens[i] >= n_vocab ||
		    (prop->tree && (!prop->parent || prop->parent[i] < -1 ||
				    prop->parent[i] >= (int32_t)i)))
			return false;
	return true;
}

enum specd_status draft_verify_rows(const struct draft_rows *r, const struct draft_proposal *prop,
				    struct draft_verdict *out)
{
	if (!rows_ok(r) || !out || !prop_ok(prop, r->n_vocab))
		return SPECD_INVAL;
	if (prop->tree)
		return draft_verify_tree_rows(r, prop, out);
	return chain_walk(r, prop->tokens, prop->n, out);
}

/* norm(max(0, p - q)) as weights (sampler_sample_probs normalises). Rounding can leave
 * it all zero when p and q differ by an ulp only; p itself is then the distribution
 * the residual approximates. */
static enum specd_status residual_sample(struct sampler *s, const float *p, const float *q,
					 uint32_t n_vocab, float *r, int32_t *out)
{
	double total = 0;

	for (uint32_t j = 0; j < n_vocab; j++) {
		float d = p[j] - q[j];

		r[j] = d > 0 ? d : 0.0f;
		total += r[j];
	}
	return sampler_sample_probs(s, total > 0 ? r : p, out);
}

/* The residual rule on a chain drafted with a full q. */
static enum specd_status verify_sample(struct sampler *s, const float *logits, uint32_t n_vocab,
				       const struct draft_proposal *prop, float *work,
				       struct draft_verdict *out)
{
	float *p = work, *r = work + n_vocab;
	enum specd_status st;
	int32_t next;

	for (uint32_t i = 0; i < prop->n; i++) {
		int32_t tok = prop->tokens[i];
		const float *q = prop->q + (size_t)i * n_vocab;

		if ((st = sampler_probs(s, logits + (size_t)i * n_vocab, p)) != SPECD_OK)
			return st;
		float u = sampler_uniform(s);
		/* u * q < p, not u < p / q: no division, and p >= q always accepts. */
		if (u * q[tok] < p[tok]) {
			out->path[i] = i;
			continue;
		}
		if ((st = residual_sample(s, p, q, n_vocab, r, &next)) != SPECD_OK)
			return st;
		out->n_accepted = i;
		out->next = next;
		return SPECD_OK;
	}
	if ((st = sampler_probs(s, logits + (size_t)prop->n * n_vocab, p)) != SPECD_OK ||
	    (st = sampler_sample_probs(s, p, &next)) != SPECD_OK)
		return st;
	out->n_accepted = prop->n;
	out->next = next;
	return SPECD_OK;
}

/* Whether the proposal's drafts are samples (a full q): the residual rule's case. */
static bool drafted_samples(const struct draft_proposal *prop)
{
	return prop->n > 0 && !prop->q_onehot;
}

enum specd_status draft_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
			       const struct draft_proposal *prop, float *work,
			       struct draft_verdict *out)
{
	if (!s || !logits || !out || (uint32_t)sampler_vocab_size(s) != n_vocab ||
	    !prop_ok(prop, n_vocab))
		return SPECD_INVAL;
	/* Greedy, or drafts that are not samples: the walk (verify.h). */
	if (sampler_is_greedy(s) || !drafted_samples(prop)) {
		struct draft_rows r = {.logits = logits, .n_vocab = n_vocab,
				       .draw = sampler_is_greedy(s) ? NULL : s};
		return draft_verify_rows(&r, prop, out);
	}
	if (!work || !prop->q)
		return SPECD_INVAL;
	if (prop->tree)
		return draft_verify_tree_sample(s, logits, n_vocab, prop, work, out);
	return verify_sample(s, logits, n_vocab, prop, work, out);
}

bool draft_verify_can_draw(const struct sampler *s, const struct draft_proposal *prop)
{
	return s && prop && !sampler_is_greedy(s) && !drafted_samples(prop);
}

void draft_draw_prepare(const struct sampler *s, const struct draft_proposal *prop, float *u)
{
	float t[DRAFT_MAX_TOKENS + 1];
	uint32_t depth[DRAFT_MAX_TOKENS + 1], n = prop->n, deepest = 0;

	/* Row 0 is the root; row 1 + i is node i, one level below its parent (a chain's
	 * parent is the node before it). */
	depth[0] = 0;
	for (uint32_t i = 0; i < n; i++) {
		int32_t up = prop->tree ? prop->parent[i] : (int32_t)i - 1;
		depth[i + 1] = depth[up + 1] + 1;
		deepest = depth[i + 1] > deepest ? depth[i + 1] : deepest;
	}
	sampler_peek_uniforms(s, deepest + 1, t);
	for (uint32_t r = 0; r <= n; r++)
		u[r] = t[depth[r]];
}

enum specd_status draft_verify_drawn(struct sampler *s, const struct draft_proposal *prop,
				     const uint32_t *drawn, struct draft_verdict *out)
{
	if (!draft_verify_can_draw(s, prop) || !drawn || !out)
		return SPECD_INVAL;
	struct draft_rows r = {.ids = drawn, .n_vocab = (uint32_t)sampler_vocab_size(s)};
	enum specd_status st = draft_verify_rows(&r, prop, out);
	if (st != SPECD_OK)
		return st;
	/* One draw a level the walk reached: the accepted nodes' and the last one's. */
	sampler_skip(s, out->n_accepted + 1);
	return SPECD_OK;
}
