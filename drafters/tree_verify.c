/* Verification of a token tree (verify.h: the walk, and the multi-candidate residual
 * rule for drafts with a full q), after the one target forward that scored every node
 * under the tree mask. Leader only; the engine keeps the accepted path in the KV
 * caches afterwards. */
#include "verify.h"

#include <math.h>

#include "model/sampler.h"

/* The first child of `node` (-1: the root) at or after index `from`, or -1. Trees are
 * at most DRAFT_MAX_TOKENS nodes, so a scan beats building child lists. */
static int32_t next_child(const struct draft_proposal *prop, int32_t node, uint32_t from)
{
	for (uint32_t i = from; i < prop->n; i++)
		if (prop->parent[i] == node)
			return (int32_t)i;
	return -1;
}

enum specd_status draft_verify_tree_rows(const struct draft_rows *r,
					 const struct draft_proposal *prop,
					 struct draft_verdict *out)
{
	int32_t node = -1, best;
	uint32_t a = 0;
	enum specd_status st;

	if (!r || !prop || !out || !prop->tree || (prop->n && (!prop->tokens || !prop->parent)) ||
	    prop->n > DRAFT_MAX_TOKENS)
		return SPECD_INVAL;
	for (;;) {
		int32_t c;

		if ((st = draft_rows_choice(r, (uint32_t)(node + 1), &best)) != SPECD_OK)
			return st;
		for (c = next_child(prop, node, 0); c >= 0; c = next_child(prop, node, (uint32_t)c + 1))
			if (prop->tokens[c] == best)
				break;
		if (c < 0)
			break;
		out->path[a++] = (uint32_t)c;
		node = c;
	}
	out->n_accepted = a;
	out->next = best;
	return SPECD_OK;
}

/* p <- max(0, p - z * q) for a rejected candidate; returns the new total. p holds
 * weights whose total is z, so this is norm(max(0, p/z - q)) up to the factor. */
static double residual_update(float *p, double z, const float *q, uint32_t n_vocab)
{
	double total = 0;

	for (uint32_t j = 0; j < n_vocab; j++) {
		float d = p[j] - (float)(z * q[j]);

		p[j] = d > 0 ? d : 0.0f;
		total += p[j];
	}
	return total;
}

enum specd_status draft_verify_tree_sample(struct sampler *s, const float *logits,
					   uint32_t n_vocab, const struct draft_proposal *prop,
					   float *work, struct draft_verdict *out)
{
	float *p = work, *keep = work + n_vocab;
	int32_t node = -1, next;
	uint32_t a = 0;
	enum specd_status st;

	if (!s || !logits || !prop || !out || !work || !prop->tree ||
	    (prop->n && (!prop->tokens || !prop->parent || !prop->q)) ||
	    prop->n > DRAFT_MAX_TOKENS)
		return SPECD_INVAL;
walk:
	if ((st = sampler_probs(s, logits + (size_t)(node + 1) * n_vocab, p)) != SPECD_OK)
		return st;
	/* p's total: 1 as sampler_probs promises, so a chain tests u * q < p exactly as the
	 * chain verifier does; after a rejection, the residual's own sum. */
	double z = 1.0;
	for (int32_t c = next_child(prop, node, 0); c >= 0;
	     c = next_child(prop, node, (uint32_t)c + 1)) {
		int32_t tok = prop->tokens[c];
		const float *q = prop->q + (size_t)c * n_vocab;
		float uq = sampler_uniform(s) * q[tok];

		if ((double)uq * z < (double)p[tok]) {
			out->path[a++] = (uint32_t)c;
			node = c;
			goto walk;
		}
		/* Rounding can empty the residual when p' and q differ by an ulp: p' is then
		 * what it approximates, so keep it. */
		for (uint32_t j = 0; j < n_vocab; j++)
			keep[j] = p[j];
		double left = residual_update(p, z, q, n_vocab);
		if (left > 0) {
			z = left;
		} else {
			for (uint32_t j = 0; j < n_vocab; j++)
				p[j] = keep[j];
		}
	}
	if ((st = sampler_sample_probs(s, p, &next)) != SPECD_OK)
		return st;
	out->n_accepted = a;
	out->next = next;
	return SPECD_OK;
}
