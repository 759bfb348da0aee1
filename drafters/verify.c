/* Greedy verification and speculative sampling (see verify.h for the rules and the
 * paper references). Leader only; after the target's verify forward. */
#include "verify.h"

#include <math.h>
#include <string.h>

#include "model/sampler.h"

enum specd_status draft_verify_greedy(const float *logits, uint32_t n_vocab,
				      const int32_t *tokens, uint32_t n, struct draft_verdict *out)
{
	uint32_t a = 0;
	int32_t best;

	if (!logits || (n && !tokens) || !out || n_vocab < 1 || n_vocab > INT32_MAX ||
	    n > DRAFT_MAX_TOKENS)
		return SPECD_INVAL;
	for (;;) {
		const float *row = logits + (size_t)a * n_vocab;

		best = sampler_argmax(row, (int32_t)n_vocab);
		if (best < 0 || row[best] == -INFINITY)
			return SPECD_INVAL;
		if (a == n || tokens[a] != best)
			break;
		out->path[a] = a;
		a++;
	}
	out->n_accepted = a;
	out->next = best;
	return SPECD_OK;
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
	if (!s || !logits || !prop || !out || (prop->n && !prop->tokens) ||
	    (uint32_t)sampler_vocab_size(s) != n_vocab || prop->n > DRAFT_MAX_TOKENS)
		return SPECD_INVAL;
	for (uint32_t i = 0; i < prop->n; i++)
		if (prop->tokens[i] < 0 || (uint32_t)prop->tokens[i] >= n_vocab ||
		    (prop->tree && (!prop->parent || prop->parent[i] < -1 ||
				    prop->parent[i] >= (int32_t)i)))
			return SPECD_INVAL;
	if (prop->tree && sampler_is_greedy(s))
		return draft_verify_tree_greedy(logits, n_vocab, prop, out);
	if (sampler_is_greedy(s))
		return draft_verify_greedy(logits, n_vocab, prop->tokens, prop->n, out);
	if (!work || (prop->n && !prop->q_onehot && !prop->q))
		return SPECD_INVAL;
	if (prop->tree)
		return draft_verify_tree_sample(s, logits, n_vocab, prop, work, out);
	return verify_sample(s, logits, n_vocab, prop, work, out);
}
