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
	/* On a device a greedy draft needs only each row's argmax, taken where the logits
	 * are (model_batch.ids): the rows are not downloaded. */
	bool device;
	uint32_t id;
	/* Batched proposals (dm_propose_batch): at most group_max sequences per pass, each
	 * with one logits row (or argmax) per forward. */
	uint32_t group_max;  /* min(n_slots, max_batch) */
	float *group_logits; /* (group_max, n_vocab) host */
	uint32_t *group_ids; /* (group_max) host */
	uint32_t *g_seq, *g_k, *g_row, *g_out; /* (group_max) host */
	uint32_t n_slots;
	uint32_t *alone;     /* (n_slots) host: the sequences that did not fit the group */
	/* (n_slots, n_ctx) host: the token each slot's KV row was computed from. A row
	 * survives a commit only where it matches the sequence: rows drafted ahead of a
	 * commit (the draft rank's pipelining), then abandoned for another method's
	 * proposal, would otherwise stay behind as a wrong context. */
	uint32_t *row_tok;
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
	specd_free(d->group_logits);
	specd_free(d->group_ids);
	specd_free(d->g_seq);
	specd_free(d->g_k);
	specd_free(d->g_row);
	specd_free(d->g_out);
	specd_free(d->alone);
	specd_free(d->row_tok);
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
		.huge_pages_max = cfg->huge_pages_max,
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
	d->group_max = cfg->n_slots < d->max_batch ? cfg->n_slots : d->max_batch;
	d->group_logits = specd_malloc_array((size_t)d->group_max * d->n_vocab, sizeof(float));
	d->group_ids = specd_malloc_array(d->group_max, sizeof(uint32_t));
	d->device = !kern_host_memory(model_kern(d->model));
	d->g_seq = specd_malloc_array(d->group_max, sizeof(uint32_t));
	d->g_k = specd_malloc_array(d->group_max, sizeof(uint32_t));
	d->g_row = specd_malloc_array(d->group_max, sizeof(uint32_t));
	d->g_out = specd_malloc_array(d->group_max, sizeof(uint32_t));
	d->n_slots = cfg->n_slots;
	d->alone = specd_malloc_array(cfg->n_slots, sizeof(uint32_t));
	d->row_tok = specd_malloc_array((size_t)cfg->n_slots * d->n_ctx, sizeof(uint32_t));
	if (!d->b_tok || !d->b_slot || !d->b_pos || !d->logits || !d->group_logits ||
	    !d->group_ids || !d->g_seq || !d->alone || !d->row_tok ||
	    !d->g_k || !d->g_row || !d->g_out) {
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
	const struct gguf_file *f = model_gguf(d->model);
	size_t weights = 0;

	/* The tensors, not the mapping: a Hugging Face view maps only its metadata. */
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++)
		weights += (size_t)gguf_tensor_at(f, i)->nbytes;
	return weights + kv_bytes(model_kv(d->model)) +
	       (size_t)d->n_slots * d->n_ctx * sizeof(uint32_t);
}

/* The draft forward over b, noting the token behind each KV row it writes. */
static enum specd_status dm_forward(struct draft_model *d, const struct model_batch *b,
				    struct specd_error *err)
{
	for (uint32_t i = 0; i < b->n_tokens; i++)
		if (b->pos[i] < d->n_ctx)
			d->row_tok[(size_t)b->slots[i] * d->n_ctx + b->pos[i]] = b->tokens[i];
	return model_forward(d->model, b, err);
}

/* Keeps of seq's slot only the rows that hold seq's tokens, and at most all but its
 * last (the state a commit leaves); *have (may be NULL) gets what is kept. */
static enum specd_status dm_keep_matching(struct draft_model *d, const struct draft_seq *seq,
					  uint32_t *have, struct specd_error *err)
{
	struct kv_cache *kv = model_kv(d->model);
	uint32_t len = kv_len(kv, seq->slot), keep = 0;
	uint32_t limit = len < seq->n_tokens - 1 ? len : seq->n_tokens - 1;
	const uint32_t *rows = d->row_tok + (size_t)seq->slot * d->n_ctx;
	enum specd_status st;

	while (keep < limit && rows[keep] == (uint32_t)seq->tokens[keep])
		keep++;
	if (keep < len && (st = kv_truncate(kv, seq->slot, keep)) != SPECD_OK)
		return specd_errorf(err, st, "draft_model: slot %u", seq->slot);
	if (have)
		*have = keep;
	return SPECD_OK;
}

/* What a feed brings back for its last token. */
enum dm_want { DM_NOTHING, DM_LOGITS, DM_ID };

/* Feeds tokens[0..n) of the slot from position pos0 in batches; for the last token,
 * what `want` says: its logits into d->logits or its argmax into d->id. */
static enum specd_status dm_feed(struct draft_model *d, uint32_t slot, const int32_t *tokens,
				 uint32_t n, uint32_t pos0, enum dm_want want,
				 struct specd_error *err)
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
			.n_out = s + c == n && want != DM_NOTHING ? 1 : 0, .out_idx = &last,
			.logits = want == DM_LOGITS ? d->logits : NULL,
			.ids = want == DM_ID ? &d->id : NULL,
		};
		enum specd_status st = dm_forward(d, &b, err);
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
	return dm_feed(d, seq->slot, seq->tokens, n, 0, DM_NOTHING, err);
}

/* Greedy argmax (of the logits row, or the id taken on the device when logits is
 * NULL), or a draw from the transformed row that is then shipped as q: the exactness
 * promise is that the token comes from exactly that q. */
static enum specd_status dm_draw(struct draft_model *d, const struct draft_seq *seq,
				 const float *logits, uint32_t id, struct draft_proposal *out,
				 uint32_t i, struct specd_error *err)
{
	enum specd_status st;
	int32_t tok;

	if (out->q_onehot) {
		tok = logits ? sampler_argmax(logits, (int32_t)d->n_vocab)
			     : id < d->n_vocab ? (int32_t)id : -1;
		st = tok >= 0 ? SPECD_OK : SPECD_INVAL;
	} else {
		float *q = out->q + (size_t)i * d->n_vocab;
		st = sampler_probs(seq->sampler, logits, q);
		if (st == SPECD_OK)
			st = sampler_sample_probs(seq->sampler, q, &tok);
	}
	if (st != SPECD_OK)
		return specd_errorf(err, st, "draft_model: the draft's logits at position %u "
				    "cannot be sampled", seq->n_tokens + i);
	out->tokens[i] = tok;
	out->n = i + 1;
	return SPECD_OK;
}

/* Prepares seq's slot for proposing: how many tokens it may draft (0: none) and from
 * where its catch-up starts (the slot then lacks tokens[*have .. n)). */
static enum specd_status dm_prepare(struct draft_model *d, const struct draft_seq *seq,
				    uint32_t k, struct draft_proposal *out, uint32_t *k_out,
				    uint32_t *have_out, struct specd_error *err)
{
	uint32_t n = seq->n_tokens, have = 0;
	enum specd_status st;

	out->n = 0;
	out->q_onehot = !seq->sampler || sampler_is_greedy(seq->sampler);
	*k_out = 0;
	if (!out->q_onehot && !out->q)
		return specd_errorf(err, SPECD_INVAL, "draft_model: sampling needs a q buffer");
	/* After catching up the slot holds n rows and each token but the last adds one. */
	if (n > d->n_ctx)
		return SPECD_OK;
	if ((st = dm_keep_matching(d, seq, &have, err)) != SPECD_OK)
		return st;
	*k_out = k < d->n_ctx - n + 1 ? k : d->n_ctx - n + 1;
	*have_out = have;
	return SPECD_OK;
}

static enum specd_status dm_propose(void *state, const struct draft_seq *seq, uint32_t k,
				    struct draft_proposal *out, struct specd_error *err)
{
	struct draft_model *d = state;
	uint32_t n = seq->n_tokens, have = 0;
	enum specd_status st = dm_prepare(d, seq, k, out, &k, &have, err);

	if (st != SPECD_OK || k == 0)
		return st;
	enum dm_want want = out->q_onehot && d->device ? DM_ID : DM_LOGITS;
	const float *logits = want == DM_LOGITS ? d->logits : NULL;
	if ((st = dm_feed(d, seq->slot, seq->tokens + have, n - have, have, want, err)))
		return st;
	for (uint32_t i = 0; i < k; i++) {
		if ((st = dm_draw(d, seq, logits, d->id, out, i, err)) != SPECD_OK)
			return st;
		if (i + 1 < k &&
		    (st = dm_feed(d, seq->slot, &out->tokens[i], 1, n + i, want, err)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* One draft forward over the batch gathered in b_*, one logits row (by_id: argmax)
 * per g_out entry. */
static enum specd_status dm_group_forward(struct draft_model *d, uint32_t n_tokens,
					  uint32_t n_out, bool by_id, struct specd_error *err)
{
	struct model_batch b = {
		.n_tokens = n_tokens, .tokens = d->b_tok, .slots = d->b_slot, .pos = d->b_pos,
		.n_out = n_out, .out_idx = d->g_out,
		.logits = by_id ? NULL : d->group_logits, .ids = by_id ? d->group_ids : NULL,
	};
	return dm_forward(d, &b, err);
}

/* All sequences step through their drafts together: one forward feeds every catch-up,
 * then one forward per drafted position carries each still-drafting sequence's last
 * token. The forward is batch-invariant, so each sequence sees the logits it would see
 * alone and draws from its own sampler in the same order: the proposals are those of
 * dm_propose. A sequence that does not fit the group goes alone after it (its feed
 * uses the batch arrays the group is gathered in). */
static enum specd_status dm_propose_batch(void *state, const struct draft_seq *seqs,
					  const uint32_t *k, struct draft_proposal *const *outs,
					  uint32_t n, struct specd_error *err)
{
	struct draft_model *d = state;
	uint32_t used = 0, m = 0, k_max = 0, n_alone = 0;
	bool by_id = d->device; /* every sequence in the group drafts greedily */
	enum specd_status st;

	if (n > d->n_slots)
		return specd_errorf(err, SPECD_INVAL, "draft_model: %u sequences, %u slots", n,
				    d->n_slots);

	for (uint32_t i = 0; i < n; i++) {
		uint32_t ki, have = 0, ns = seqs[i].n_tokens;
		if ((st = dm_prepare(d, &seqs[i], k[i], outs[i], &ki, &have, err)) != SPECD_OK)
			return st;
		if (ki == 0)
			continue;
		if (m == d->group_max || used + (ns - have) > d->max_batch) {
			d->alone[n_alone++] = i;
			continue;
		}
		for (uint32_t t = have; t < ns; t++, used++) {
			d->b_tok[used] = (uint32_t)seqs[i].tokens[t];
			d->b_slot[used] = seqs[i].slot;
			d->b_pos[used] = t;
		}
		d->g_seq[m] = i;
		d->g_k[m] = ki;
		d->g_out[m] = used - 1;
		d->g_row[m] = m;
		by_id &= outs[i]->q_onehot;
		k_max = ki > k_max ? ki : k_max;
		m++;
	}
	if (m && (st = dm_group_forward(d, used, m, by_id, err)) != SPECD_OK)
		return st;
	for (uint32_t r = 0; r < k_max; r++) {
		uint32_t n_out = 0;
		for (uint32_t g = 0; g < m; g++) {
			const struct draft_seq *seq = &seqs[d->g_seq[g]];
			struct draft_proposal *out = outs[d->g_seq[g]];
			if (r >= d->g_k[g])
				continue;
			const float *row = d->group_logits + (size_t)d->g_row[g] * d->n_vocab;
			if ((st = dm_draw(d, seq, by_id ? NULL : row, d->group_ids[d->g_row[g]], out,
					  r, err)) != SPECD_OK)
				return st;
			if (r + 1 == d->g_k[g])
				continue;
			d->b_tok[n_out] = (uint32_t)out->tokens[r];
			d->b_slot[n_out] = seq->slot;
			d->b_pos[n_out] = seq->n_tokens + r;
			d->g_out[n_out] = n_out;
			d->g_row[g] = n_out++;
		}
		if (n_out && (st = dm_group_forward(d, n_out, n_out, by_id, err)) != SPECD_OK)
			return st;
	}
	for (uint32_t a = 0; a < n_alone; a++) {
		uint32_t i = d->alone[a];
		if ((st = dm_propose(state, &seqs[i], k[i], outs[i], err)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* What the slot holds is usually a prefix of (old sequence + its own proposal), of
 * which the old sequence and the accepted tokens survive; rows computed from tokens
 * the sequence does not hold (another method's step verified instead) go too. */
static enum specd_status dm_commit(void *state, const struct draft_seq *seq,
				   uint32_t n_accepted, int32_t next, struct specd_error *err)
{
	(void)n_accepted;
	(void)next;
	return dm_keep_matching(state, seq, NULL, err);
}

/* Feeds what the slot lacks but the last token (the state a commit leaves), so the
 * next propose costs its own tokens only. */
static enum specd_status dm_warm(void *state, const struct draft_seq *seq,
				 struct specd_error *err)
{
	struct draft_model *d = state;
	uint32_t n = seq->n_tokens, have = 0;
	enum specd_status st;

	if (n > d->n_ctx)
		return SPECD_OK;
	if ((st = dm_keep_matching(d, seq, &have, err)) != SPECD_OK || have + 1 >= n)
		return st;
	return dm_feed(d, seq->slot, seq->tokens + have, n - 1 - have, have, DM_NOTHING, err);
}

const struct draft_ops draft_model_ops = {
	.method = DRAFT_METHOD_DRAFT_MODEL,
	.create = dm_create,
	.destroy = dm_destroy,
	.supports = dm_supports,
	.memory_bytes = dm_memory_bytes,
	.reset = dm_reset,
	.propose = dm_propose,
	.propose_batch = dm_propose_batch,
	.commit = dm_commit,
	.warm = dm_warm,
};
