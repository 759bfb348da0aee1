/* The ngram drafter (prompt lookup): the sequence's last n tokens are looked up in its
 * own prompt and output, n from prompt_lookup_max down to prompt_lookup_min, and what
 * followed the match is proposed. Needs no weights and no state: q is the one-hot on
 * each proposed token, so the verifier accepts a token with probability p(token). */
#include <string.h>

#include "common/alloc.h"
#include "drafter_int.h"

struct ngram {
	uint32_t n_min, n_max;
};

static enum specd_status ngram_create(const struct draft_config *cfg, void **state,
				      struct specd_error *err)
{
	uint32_t lo = cfg->prompt_lookup_min ? cfg->prompt_lookup_min : DRAFT_NGRAM_MIN;
	uint32_t hi = cfg->prompt_lookup_max ? cfg->prompt_lookup_max : DRAFT_NGRAM_MAX;
	struct ngram *g;

	if (!cfg->prompt_lookup_max && lo > hi)
		hi = lo; /* only the minimum given: it wins over the default maximum */
	if (lo > hi)
		return specd_errorf(err, SPECD_INVAL, "ngram: prompt_lookup_min %u is greater "
				    "than prompt_lookup_max %u", lo, hi);
	if (!(g = specd_calloc(1, sizeof(*g))))
		return specd_errorf(err, SPECD_NOMEM, "ngram: out of memory");
	g->n_min = lo;
	g->n_max = hi;
	*state = g;
	return SPECD_OK;
}

static void ngram_destroy(void *state)
{
	specd_free(state);
}

static enum specd_status ngram_supports(const void *state, const struct model *target,
					struct specd_error *err)
{
	(void)state;
	(void)target;
	(void)err;
	return SPECD_OK; /* tokens only: any target */
}

static size_t ngram_memory_bytes(const void *state)
{
	(void)state;
	return 0;
}

/* The longest n-gram first, and for one length the most recent earlier occurrence:
 * recent text is the likeliest to repeat (a loop, an identifier being re-typed). An
 * occurrence must be followed by at least one token, so the suffix itself never
 * matches. O(n_tokens * n_max) per call. */
static enum specd_status ngram_propose(void *state, const struct draft_seq *seq, uint32_t k,
				       struct draft_proposal *out, struct specd_error *err)
{
	const struct ngram *g = state;
	const int32_t *h = seq->tokens;
	uint32_t n = seq->n_tokens;

	(void)err;
	out->n = 0;
	out->q_onehot = true;
	for (uint32_t len = g->n_max; len >= g->n_min; len--) {
		if (len >= n)
			continue; /* a match needs len tokens plus one to follow */
		const int32_t *suffix = h + n - len;
		/* j: the start of a candidate; it must end before the suffix's last token. */
		for (uint32_t j = n - len; j-- > 0;) {
			if (memcmp(h + j, suffix, len * sizeof(*h)) != 0)
				continue;
			uint32_t from = j + len, avail = n - from;
			uint32_t m = avail < k ? avail : k;
			memcpy(out->tokens, h + from, m * sizeof(*h));
			out->n = m;
			return SPECD_OK;
		}
		if (len == 1)
			break;
	}
	return SPECD_OK;
}

const struct draft_ops draft_ngram_ops = {
	.method = DRAFT_METHOD_NGRAM,
	.create = ngram_create,
	.destroy = ngram_destroy,
	.supports = ngram_supports,
	.memory_bytes = ngram_memory_bytes,
	.propose = ngram_propose,
};
