/* Start-up calibration (calibrate.h): a few timed target forwards on an empty KV slot,
 * truncated away afterwards, and a drafter's propose timed on a synthetic sequence.
 * The figures feed struct sel_inputs; nothing here decides. */
#include "calibrate.h"

#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "model/kv.h"
#include "model/llama.h"

#define CAL_PROMPT 24 /* tokens of the synthetic sequence a drafter is timed on */

/* One forward of n tokens at the slot's end with logits for every row (as a verify
 * step asks), then the slot back to `base`; *secs is the forward's time. */
static enum specd_status time_forward(struct model *m, uint32_t slot, uint32_t base,
				      uint32_t n, float *logits, double *secs,
				      struct specd_error *err)
{
	uint32_t tokens[SEL_K_MAX + 1], slots[SEL_K_MAX + 1], pos[SEL_K_MAX + 1];
	uint32_t idx[SEL_K_MAX + 1];
	uint32_t n_vocab = model_hparams(m)->n_vocab;
	for (uint32_t i = 0; i < n; i++) {
		tokens[i] = (3 + 7 * i) % n_vocab;
		slots[i] = slot;
		pos[i] = base + i;
		idx[i] = i;
	}
	struct model_batch b = {
		.n_tokens = n, .tokens = tokens, .slots = slots, .pos = pos,
		.n_out = n, .out_idx = idx, .logits = logits,
	};
	double t0 = specd_now();
	enum specd_status st = model_forward(m, &b, err);
	*secs = specd_now() - t0;
	if (st != SPECD_OK)
		return st;
	if (kv_truncate(model_kv(m), slot, base) != SPECD_OK)
		return specd_errorf(err, SPECD_INTERNAL, "calibration: cannot truncate slot %u",
				    slot);
	return SPECD_OK;
}

enum specd_status sel_calibrate_target(struct model *m, uint32_t slot, uint32_t k_max,
				       double budget_s, double *t_verify,
				       struct specd_error *err)
{
	if (!m || !t_verify || k_max < 1 || k_max > SEL_K_MAX)
		return specd_errorf(err, SPECD_INVAL, "calibration: no model, or K %u", k_max);
	uint32_t top = k_max + 1;
	struct kv_cache *kv = model_kv(m);
	uint32_t base = kv_len(kv, slot);
	if (top > model_max_batch(m) || base + top > kv_n_ctx(kv))
		return specd_errorf(err, SPECD_INVAL, "calibration: %u tokens do not fit slot %u "
				    "(batch %u, %u of %u rows used)", top, slot, model_max_batch(m),
				    base, kv_n_ctx(kv));
	float *logits = specd_malloc_array((size_t)top * model_hparams(m)->n_vocab, sizeof(float));
	if (!logits)
		return specd_errorf(err, SPECD_NOMEM, "calibration: out of memory");
	double t[SEL_K_MAX + 2] = {0};
	enum specd_status st = SPECD_OK;
	double t0 = specd_now();
	/* The first forward pays for cold pages and caches: not counted. Then the two
	 * ends, then the sizes between while the budget lasts (the rest is interpolated). */
	double s;
	if ((st = time_forward(m, slot, base, top, logits, &s, err)) != SPECD_OK)
		goto done;
	uint32_t order[SEL_K_MAX + 1], n_order = 0;
	order[n_order++] = 1;
	if (top > 1)
		order[n_order++] = top;
	for (uint32_t n = 2; n < top; n++)
		order[n_order++] = n;
	for (int rep = 0; rep < 2; rep++) {
		for (uint32_t i = 0; i < n_order; i++) {
			if (i >= 2 && specd_now() - t0 > budget_s)
				break;
			if ((st = time_forward(m, slot, base, order[i], logits, &s, err)) != SPECD_OK)
				goto done;
			uint32_t n = order[i];
			if (t[n] == 0 || s < t[n])
				t[n] = s;
		}
		if (specd_now() - t0 > budget_s / 2)
			break;
	}
	memcpy(t_verify, t, sizeof(t));
done:
	specd_free(logits);
	return st;
}

/* One reset and one timed propose of k tokens. */
static enum specd_status time_propose(struct drafter *d, const struct draft_seq *seq, uint32_t k,
				      struct draft_proposal *p, double *secs,
				      struct specd_error *err)
{
	enum specd_status st = draft_reset(d, seq, err);
	if (st != SPECD_OK)
		return st;
	double t0 = specd_now();
	st = draft_propose(d, seq, k, p, err);
	*secs = specd_now() - t0;
	return st;
}

enum specd_status sel_calibrate_drafter(const struct draft_config *cfg, struct sel_method_in *out,
					struct specd_error *err)
{
	struct drafter *d = NULL;
	int32_t *tokens = NULL, *parent = NULL;
	float *q = NULL, *hidden = NULL;
	enum specd_status st = draft_create(cfg, &d, err);
	if (st != SPECD_OK)
		return st;
	uint32_t n_vocab = model_hparams(cfg->target)->n_vocab;
	uint32_t dim = model_hparams(cfg->target)->dim;
	tokens = specd_malloc_array(CAL_PROMPT + cfg->k_max, sizeof(*tokens));
	q = specd_malloc_array((size_t)cfg->k_max * n_vocab, sizeof(*q));
	parent = specd_malloc_array(cfg->k_max, sizeof(*parent));
	if (draft_wants_hidden(d))
		hidden = specd_calloc(dim, sizeof(*hidden));
	if (!tokens || !q || !parent || (draft_wants_hidden(d) && !hidden)) {
		st = specd_errorf(err, SPECD_NOMEM, "calibration: out of memory");
		goto done;
	}
	/* A short repeating pattern, so prompt lookup finds matches to propose. */
	for (uint32_t i = 0; i < CAL_PROMPT; i++)
		tokens[i] = (int32_t)((5 + 3 * (i % 6)) % n_vocab);
	/* A drafter on the hidden state (Medusa, EAGLE) drafts from any vector the same
	 * way. */
	for (uint32_t i = 0; hidden && i < dim; i++)
		hidden[i] = (float)((int)(i % 7) - 3) * 0.25f;
	struct draft_seq seq = {.slot = 0, .tokens = tokens, .n_tokens = CAL_PROMPT,
				.hidden = hidden, .n_hidden = hidden ? 1 : 0};
	struct draft_proposal p = {.tokens = tokens + CAL_PROMPT, .q = q, .parent = parent};
	double t1 = 0, tk = 0;
	for (int rep = 0; rep < 2; rep++) {
		double a, b = 0;
		if ((st = time_propose(d, &seq, 1, &p, &a, err)) != SPECD_OK)
			goto done;
		if (cfg->k_max > 1 && (st = time_propose(d, &seq, cfg->k_max, &p, &b, err)) != SPECD_OK)
			goto done;
		t1 = rep == 0 || a < t1 ? a : t1;
		tk = rep == 0 || b < tk ? b : tk;
	}
	double per = cfg->k_max > 1 ? (tk - t1) / (double)(cfg->k_max - 1) : t1;
	if (per < 0)
		per = 0;
	out->timed = true;
	out->t_draft_token_s = per;
	out->t_draft_fixed_s = t1 > per ? t1 - per : 0;
	out->memory_bytes = draft_memory_bytes(d);
done:
	specd_free(hidden);
	specd_free(parent);
	specd_free(q);
	specd_free(tokens);
	draft_destroy(d);
	return st;
}
