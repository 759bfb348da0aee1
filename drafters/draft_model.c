/* The draft_model drafter: a smaller model with the target's vocabulary, its own KV
 * slot per sequence, decoding K tokens one by one per step. Its KV holds a prefix of
 * the sequence; each propose first feeds what it lacks (the target's last correction
 * or bonus, and the last accepted draft token, which was sampled but never fed), and
 * each commit truncates it to what survived verification. */
#include <string.h>

#include "common/alloc.h"
#include "drafter_int.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/sampler.h"

#define VOCAB_KEY "tokenizer.ggml.tokens"

struct draft_model {
	struct model *model;
	uint32_t n_vocab;
	uint32_t n_ctx;      /* rows per slot */
	uint32_t max_batch;  /* tokens per catch-up forward */
	uint32_t *b_tok, *b_slot, *b_pos; /* (max_batch) host */
	float *logits;       /* (n_vocab) host */
};

static void dm_destroy(void *state)
{
	struct draft_model *d = state;

	if (!d)
		return;
	model_destroy(d->model);
	specd_free(d->b_tok);
	specd_free(d->b_slot);
	specd_free(d->b_pos);
	specd_free(d->logits);
	specd_free(d);
}

static enum specd_status dm_create(const struct draft_config *cfg, void **state,
				   struct specd_error *err)
{
	struct draft_model *d;
	struct specd_error e;
	enum specd_status st;

	if (!cfg->draft_path || !*cfg->draft_path)
		return specd_errorf(err, SPECD_INVAL, "draft_model: no draft model file given");
	if (!(d = specd_calloc(1, sizeof(*d))))
		return specd_errorf(err, SPECD_NOMEM, "draft_model: out of memory");
	/* The draft needs K - 1 rows past a sequence's committed length. Rows past the
	 * context the draft was trained for only make its proposals worse, never the
	 * output wrong. */
	uint32_t want = cfg->n_ctx ? cfg->n_ctx + cfg->k_max : 0;
	struct model_config mc = {
		.n_slots = cfg->n_slots,
		.n_ctx = want,
		.kern = cfg->kern,
	};
	st = model_load(cfg->draft_path, &mc, &d->model, &e);
	if (st != SPECD_OK) {
		specd_errorf(err, st, "draft model %s: %s", cfg->draft_path, e.msg);
		goto fail;
	}
	d->n_vocab = model_hparams(d->model)->n_vocab;
	d->n_ctx = kv_n_ctx(model_kv(d->model));
	d->max_batch = model_max_batch(d->model);
	d->b_tok = specd_malloc_array(d->max_batch, sizeof(uint32_t));
	d->b_slot = specd_calloc(d->max_batch, sizeof(uint32_t));
	d->b_pos = specd_malloc_array(d->max_batch, sizeof(uint32_t));
	d->logits = specd_malloc_array(d->n_vocab, sizeof(float));
	if (!d->b_tok || !d->b_slot || !d->b_pos || !d->logits) {
		st = specd_errorf(err, SPECD_NOMEM, "draft_model: out of memory");
		goto fail;
	}
	*state = d;
	return SPECD_OK;
fail:
	dm_destroy(d);
	return st;
}

/* Identical vocabularies: the same number of embedding rows and, when the files carry
 * a tokenizer, the same piece for every id (scores and types do not change what an id
 * means). */
static enum specd_status dm_supports(const void *state, const struct model *target,
				     struct specd_error *err)
{
	const struct draft_model *d = state;
	const struct gguf_file *df = model_gguf(d->model), *tf = model_gguf(target);
	uint32_t tv = model_hparams(target)->n_vocab;
	enum gguf_value_type de, te;
	uint64_t dn = 0, tn = 0;
	bool dh, th;

	if (d->n_vocab != tv)
		return specd_errorf(err, SPECD_INVAL, "the draft model's vocabulary is not the "
				    "target's: %u tokens in the draft, %u in the target",
				    d->n_vocab, tv);
	dh = gguf_get_arr(df, VOCAB_KEY, &de, &dn, NULL) && de == GGUF_TYPE_STRING;
	th = gguf_get_arr(tf, VOCAB_KEY, &te, &tn, NULL) && te == GGUF_TYPE_STRING;
	if (dh != th)
		return specd_errorf(err, SPECD_INVAL, "the draft model's vocabulary is not the "
				    "target's: only the %s carries a tokenizer",
				    dh ? "draft" : "target");
	if (!dh)
		return SPECD_OK;
	if (dn != tn)
		return specd_errorf(err, SPECD_INVAL, "the draft model's vocabulary is not the "
				    "target's: %llu tokenizer pieces in the draft, %llu in the "
				    "target", (unsigned long long)dn, (unsigned long long)tn);
	for (uint64_t i = 0; i < dn; i++) {
		struct gguf_str a, b;

		if (!gguf_get_arr_str(df, VOCAB_KEY, i, &a) ||
		    !gguf_get_arr_str(tf, VOCAB_KEY, i, &b))
			return specd_errorf(err, SPECD_INVAL, "cannot read tokenizer piece %llu",
					    (unsigned long long)i);
		if (a.len != b.len || memcmp(a.ptr, b.ptr, a.len) != 0)
			return specd_errorf(err, SPECD_INVAL, "the draft model's vocabulary is "
					    "not the target's: token %llu is '%.*s' in the draft, "
					    "'%.*s' in the target", (unsigned long long)i,
					    (int)(a.len > 40 ? 40 : a.len), a.ptr,
					    (int)(b.len > 40 ? 40 : b.len), b.ptr);
	}
	return SPECD_OK;
}

static size_t dm_memory_bytes(const void *state)
{
	const struct draft_model *d = state;
	size_t mapped = 0;

	gguf_mapping(model_gguf(d->model), &mapped);
	return mapped + kv_bytes(model_kv(d->model));
}

/* Feeds tokens[0..n) of the slot from position pos0 in batches; the logits of the
 * last into d->logits. */
static enum specd_status dm_feed(struct draft_model *d, uint32_t slot, const int32_t *tokens,
				 uint32_t n, uint32_t pos0, struct specd_error *err)
{
	for (uint32_t s = 0; s < n; s += d->max_batch) {
		uint32_t c = n - s < d->max_batch ? n - s : d->max_batch;
		uint32_t last = c - 1;

		for (uint32_t i = 0; i < c; i++) {
			d->b_tok[i] = (uint32_t)tokens[s + i];
			d->b_slot[i] = slot;
			d->b_pos[i] = pos0 + s + i;
		}
		struct model_batch b = {
			.n_tokens = c, .tokens = d->b_tok, .slots = d->b_slot, .pos = d->b_pos,
			.n_out = s + c == n ? 1 : 0, .out_idx = &last, .logits = d->logits,
		};
		enum specd_status st = model_forward(d->model, &b, err);
		if (st != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* Takes the prompt in now (all but its last token, as the target does), so the first
 * propose costs one token, not a prefill; a prompt longer than the draft's context is
 * left out: that sequence gets no proposals. */
static enum specd_status dm_reset(void *state, const struct draft_seq *seq,
				  struct specd_error *err)
{
	struct draft_model *d = state;
	struct kv_cache *kv = model_kv(d->model);
	enum specd_status st = kv_truncate(kv, seq->slot, 0);
	uint32_t n = seq->n_tokens - 1;

	if (st != SPECD_OK)
		return specd_errorf(err, st, "draft_model: slot %u", seq->slot);
	if (n == 0 || n > d->n_ctx)
		return SPECD_OK;
	return dm_feed(d, seq->slot, seq->tokens, n, 0, err);
}

static enum specd_status dm_propose(void *state, const struct draft_seq *seq, uint32_t k,
				    struct draft_proposal *out, struct specd_error *err)
{
	struct draft_model *d = state;
	struct kv_cache *kv = model_kv(d->model);
	uint32_t n = seq->n_tokens, have = kv_len(kv, seq->slot);
	bool greedy = !seq->sampler || sampler_is_greedy(seq->sampler);
	enum specd_status st;

	out->n = 0;
	out->q_onehot = greedy;
	if (!greedy && !out->q)
		return specd_errorf(err, SPECD_INVAL, "draft_model: sampling needs a q buffer");
	/* After catching up the slot holds n rows and each token but the last adds one. */
	if (n > d->n_ctx)
		return SPECD_OK;
	if (k > d->n_ctx - n + 1)
		k = d->n_ctx - n + 1;
	if (have >= n) { /* never after commit; keep the invariant "the last is unfed" */
		if ((st = kv_truncate(kv, seq->slot, n - 1)) != SPECD_OK)
			return specd_errorf(err, st, "draft_model: slot %u", seq->slot);
		have = n - 1;
	}
	if ((st = dm_feed(d, seq->slot, seq->tokens + have, n - have, have, err)) != SPECD_OK)
		return st;
	for (uint32_t i = 0; i < k; i++) {
		int32_t tok;

		if (greedy) {
			tok = sampler_argmax(d->logits, (int32_t)d->n_vocab);
			st = tok >= 0 ? SPECD_OK : SPECD_INVAL;
		} else {
			/* The exactness promise: the token is drawn from exactly the q shipped. */
			float *q = out->q + (size_t)i * d->n_vocab;
			st = sampler_probs(seq->sampler, d->logits, q);
			if (st == SPECD_OK)
				st = sampler_sample_probs(seq->sampler, q, &tok);
		}
		if (st != SPECD_OK)
			return specd_errorf(err, st, "draft_model: the draft's logits at position "
					    "%u cannot be sampled", n + i);
		out->tokens[i] = tok;
		out->n = i + 1;
		if (i + 1 < k && (st = dm_feed(d, seq->slot, &tok, 1, n + i, err)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* What the slot holds is a prefix of (old sequence + proposal); of it, the old
 * sequence and the accepted tokens survive: all but the new sequence's last token. */
static enum specd_status dm_commit(void *state, const struct draft_seq *seq,
				   uint32_t n_accepted, int32_t next, struct specd_error *err)
{
	struct draft_model *d = state;
	struct kv_cache *kv = model_kv(d->model);
	uint32_t keep = seq->n_tokens - 1, have = kv_len(kv, seq->slot);
	enum specd_status st;

	(void)n_accepted;
	(void)next;
	if (have <= keep)
		return SPECD_OK;
	if ((st = kv_truncate(kv, seq->slot, keep)) != SPECD_OK)
		return specd_errorf(err, st, "draft_model: slot %u", seq->slot);
	return SPECD_OK;
}

const struct draft_ops draft_model_ops = {
	.method = DRAFT_METHOD_DRAFT_MODEL,
	.create = dm_create,
	.destroy = dm_destroy,
	.supports = dm_supports,
	.memory_bytes = dm_memory_bytes,
	.reset = dm_reset,
	.propose = dm_propose,
	.commit = dm_commit,
};
