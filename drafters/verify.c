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
	*best = sampler_argmax(row, (int32_t)r->n_vocab);
	return *best < 0 || row[*best] == -INFINITY ? SPECD_INVAL : SPECD_OK;
}

static bool rows_ok(const struct draft_rows *r)
{
	return r && (r->logits || r->ids) && r->n_vocab >= 1 && r->n_vocab <= INT32_MAX;
}

/* The chain walk: accept while the draft token is the row's choice. */
static enum specd_status chain_greedy(const struct draft_rows *r, const int32_t *tokens,
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

enum specd_status draft_verify_greedy(const float *logits, uint32_t n_vocab,
				      const int32_t *tokens, uint32_t n, struct draft_verdict *out)
{
	struct draft_rows r = {.logits = logits, .n_vocab = n_vocab};

	if (!rows_ok(&r) || !logits || (n && !tokens) || !out || n > DRAFT_MAX_TOKENS)
		return SPECD_INVAL;
	return chain_greedy(&r, tokens, n, out);
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

enum specd_status draft_verify_greedy_rows(const struct draft_rows *r,
					   const struct draft_proposal *prop,
					   struct draft_verdict *out)
{
	if (!rows_ok(r) || !out || !prop_ok(prop, r->n_vocab))
		return SPECD_INVAL;
	if (prop->tree)
		return draft_verify_tree_greedy_rows(r, prop, out);
	return chain_greedy(r, prop->tokens, prop->n, out);
}

/* norm(max(0, p - q)) as weights (sampler_sample_probs normalises); q is the one-hot
 * on `tok` when q is NULL. Rounding can leave it all zero when p and q differ by an ulp
 * only; p itself is then the distribution the residual approximates. */
static enum specd_status residual_sample(struct sampler *s, const float *p, const float *q,
					 int32_t tok, uint32_t n_vocab, float *r, int32_t *out)
{
	double total = 0;

	for (uint32_t j = 0; j < n_vocab; j++) {
		float qj = q ? q[j] : (j == (uint32_t)tok ? 1.0f : 0.0f);
		float d = p[j] - qj;

		r[j] = d > 0 ? d : 0.0f;
		total += r[j];
	}
	return sampler_sample_probs(s, total > 0 ? r : p, out);
}

static enum specd_status verify_sample(struct sampler *s, const float *logits, uint32_t n_vocab,
				       const struct draft_proposal *prop, float *work,
				       struct draft_verdict *out)
{
	float *p = work, *r = work + n_vocab;
	enum specd_status st;
	int32_t next;

	for (uint32_t i = 0; i < prop->n; i++) {
		int32_t tok = prop->tokens[i];
		const float *q = prop->q_onehot ? NULL : prop->q + (size_t)i * n_vocab;

		if ((st = sampler_probs(s, logits + (size_t)i * n_vocab, p)) != SPECD_OK)
			return st;
		float qt = q ? q[tok] : 1.0f;
		float u = sampler_uniform(s);
		/* u * q < p, not u < p / q: no division, and p >= q always accepts. */
		if (u * qt < p[tok]) {
			out->path[i] = i;
			continue;
		}
		if ((st = residual_sample(s, p, q, tok, n_vocab, r, &next)) != SPECD_OK)
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

enum specd_status draft_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
			       const struct draft_proposal *prop, float *work,
			       struct draft_verdict *out)
{
	if (!s || !logits || !out || (uint32_t)sampler_vocab_size(s) != n_vocab ||
	    !prop_ok(prop, n_vocab))
		return SPECD_INVAL;
	if (sampler_is_greedy(s)) {
		struct draft_rows r = {.logits = logits, .n_vocab = n_vocab};
		return draft_verify_greedy_rows(&r, prop, out);
	}
	if (!work || (prop->n && !prop->q_onehot && !prop->q))
		return SPECD_INVAL;
	if (prop->tree)
		return draft_verify_tree_sample(s, logits, n_vocab, prop, work, out);
	return verify_sample(s, logits, n_vocab, prop, work, out);
}

bool draft_verify_can_draw(const struct sampler *s, const struct draft_proposal *prop)
{
	return s && !sampler_is_greedy(s) && prop && !prop->tree &&
	       (prop->n == 0 || prop->q_onehot) && prop_ok(prop, (uint32_t)sampler_vocab_size(s));
}

void draft_draw_prepare(const struct sampler *s, const struct draft_proposal *prop, float *u,
			uint32_t *probe)
{
	float t[DRAFT_MAX_TOKENS + 1];
	uint32_t n = prop->n;

	sampler_peek_uniforms(s, n + 1, t);
	for (uint32_t i = 0; i < n; i++) {
		u[i] = t[i + 1];
		probe[i] = (uint32_t)prop->tokens[i];
	}
	u[n] = t[n];
	probe[n] = UINT32_MAX; /* the bonus row draws from p itself */
}

enum specd_status draft_verify_drawn(struct sampler *s, const struct draft_proposal *prop,
				     const uint32_t *drawn, const float *probe_p,
				     struct draft_verdict *out)
{
	float t[DRAFT_MAX_TOKENS + 1];
	uint32_t n, i;

	if (!draft_verify_can_draw(s, prop) || !drawn || !probe_p || !out)
		return SPECD_INVAL;
	n = prop->n;
	sampler_peek_uniforms(s, n + 1, t);
	/* The chain rule with q = 1 at the drafted token: accept while u_i < p_i(d_i). */
	for (i = 0; i < n && t[i] < probe_p[i]; i++)
		out->path[i] = i;
	if (drawn[i] >= (uint32_t)sampler_vocab_size(s))
		return SPECD_INVAL;
	out->n_accepted = i;
	out->next = (int32_t)drawn[i];
	/* The tests up to the rejection, then its draw; or n tests and the bonus draw. */
	sampler_skip(s, i < n ? i + 2 : n + 1);
	return SPECD_OK;
}
