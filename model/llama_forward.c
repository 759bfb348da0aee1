/* The forward pass: one batch of tokens from any number of sequences through every
 * layer (RMSNorm, Q/K/V, RoPE, KV write, attention, O, residual, RMSNorm, SwiGLU MLP,
 * residual), then the final norm and the LM head for the rows the caller asked for.
 * A tensor-parallel shard runs the same steps on its part of each matrix, with the
 * hook's all-reduce after the embedding, the O projection and the down projection.
 * The batch is planned (cache rows, visible prefixes, tree masks) and checked in full
 * before anything is written, and nothing is allocated: the decode step's cost is the
 * kernels' alone. */
#include <math.h>
#include <string.h>

#include "kernels/sample.h"
#include "llama_int.h"

/* Draw i of the batch as the sample op takes it, reading logits rows at x. */
static struct kern_sample_rows draw_rows(const struct model *m, const struct model_draw *d,
					 const float *x)
{
	struct kern_sample_rows r = {
		.rows = d->rows, .n = m->n_vocab, .ldx = m->n_vocab,
		.x = x + (size_t)d->row * m->n_vocab, .params = d->params, .u = d->u,
		.work = m->a.sample_work, .out = d->out,
	};
	return r;
}

/* Everything about the draws that can be known before the forward, so a refused one
 * writes nothing (the logits themselves are checked by the op). */
static enum specd_status check_draws(const struct model *m, const struct model_batch *b,
				     struct specd_error *err)
{
	uint32_t rows = b->n_out - b->n_hidden_only;
	if (!b->n_draws)
		return SPECD_OK;
	if (!b->draws)
		return specd_errorf(err, SPECD_INVAL, "forward: %u draws but no list", b->n_draws);
	if (!m->a.sample_work)
		return specd_errorf(err, SPECD_INVAL, "forward: draws are for device backends, "
				    "after model_reserve_draws (a host caller samples its logits "
				    "rows itself)");
	for (uint32_t i = 0; i < b->n_draws; i++) {
		const struct model_draw *d = &b->draws[i];
		struct kern_sample_rows r = draw_rows(m, d, m->a.logits);
		if (d->rows == 0 || d->rows > MODEL_MAX_DRAW_ROWS || d->row > rows ||
		    d->rows > rows - d->row)
			return specd_errorf(err, SPECD_INVAL, "forward: draw %u asks for logits rows "
					    "%u..%u of %u (at most %u a draw)", i, d->row,
					    d->row + d->rows, rows, MODEL_MAX_DRAW_ROWS);
		if (!kern_sample_rows_ok(&r))
			return specd_errorf(err, SPECD_INVAL, "forward: draw %u: bad sampling "
					    "parameters, a uniform outside [0, 1) or a missing "
					    "array", i);
	}
	return SPECD_OK;
}

static enum specd_status check_outputs(const struct model *m, const struct model_batch *b,
				       struct specd_error *err)
{
	enum specd_status st;

	if (b->n_out > b->n_tokens)
		return specd_errorf(err, SPECD_INVAL, "forward: %u outputs for %u tokens",
				    b->n_out, b->n_tokens);
	if (b->n_out && !b->out_idx)
		return specd_errorf(err, SPECD_INVAL, "forward: %u outputs but no indices",
				    b->n_out);
	for (uint32_t i = 0; i < b->n_out; i++) {
		if (b->out_idx[i] >= b->n_tokens)
			return specd_errorf(err, SPECD_INVAL,
					    "forward: output %u asks for token %u of %u", i,
					    b->out_idx[i], b->n_tokens);
	}
	if (b->n_layers_out && b->n_out && (!b->layers || !b->layer_hidden))
		return specd_errorf(err, SPECD_INVAL,
				    "forward: %u layer outputs but no layer list or buffer",
				    b->n_layers_out);
	if (b->n_hidden_only > b->n_out)
		return specd_errorf(err, SPECD_INVAL, "forward: %u hidden-only outputs of %u",
				    b->n_hidden_only, b->n_out);
	/* Greedy ids, top ids and draws are taken where the logits are, from whole rows:
	 * a host backend computes them in the caller's logits. */
	if ((b->ids || b->top_k || b->n_draws) && m->comm && m->comm->size > 1)
		return specd_errorf(err, SPECD_INVAL, "forward: a shard has part of each logits "
				    "row: no ids or draws from it (model_shard_argmax takes greedy "
				    "ids across shards)");
	if ((b->ids || b->top_k) && !b->logits && !m->a.logits)
		return specd_errorf(err, SPECD_INVAL, "forward: ids on a host backend need the "
				    "logits rows to compute into");
	if (b->top_k && (b->top_k > KERN_TOPK_MAX || !b->top_ids))
		return specd_errorf(err, SPECD_INVAL, "forward: top %u ids (at most %d, and "
				    "somewhere to put them)", b->top_k, KERN_TOPK_MAX);
	if ((st = check_draws(m, b, err)) != SPECD_OK)
		return st;
	if (!b->features != !m->fc.data)
		return specd_errorf(err, SPECD_INVAL, m->fc.data ? "forward: an EAGLE layer needs "
				    "the target's features" : "forward: features are for EAGLE "
				    "layers only");
	for (uint32_t j = 0; b->n_out && j < b->n_layers_out; j++) {
		if (b->layers[j] >= m->hp.n_layers)
			return specd_errorf(err, SPECD_INVAL,
					    "forward: layer output %u asks for layer %u of %u", j,
					    b->layers[j], m->hp.n_layers);
	}
	return SPECD_OK;
}

/* Decides each token's cache row and what it sees (kern.h struct kern_attn_mask), into
 * m->a, checking the batch against the cache. Writes nothing outside m->a. */
static enum specd_status plan_batch(struct model *m, const struct model_batch *b,
				    struct specd_error *err)
{
	struct llama_acts *a = &m->a;
	uint32_t n_slots = kv_n_slots(m->kv), n_ctx = kv_n_ctx(m->kv);
	if (b->n_tokens == 0 || b->n_tokens > m->max_batch)
		return specd_errorf(err, SPECD_INVAL, "forward: %u tokens, expected 1..%u",
				    b->n_tokens, m->max_batch);
	if (!b->tokens || !b->slots || !b->pos)
		return specd_errorf(err, SPECD_INVAL, "forward: tokens, slots and positions are required");
	enum specd_status st = check_outputs(m, b, err);
	if (st != SPECD_OK)
		return st;

	for (uint32_t s = 0; s < n_slots; s++)
		a->len[s] = a->base[s] = kv_len(m->kv, s);
	for (uint32_t i = 0; i < b->n_tokens; i++) {
		uint32_t s = b->slots[i];
		if (b->tokens[i] >= m->hp.n_vocab)
			return specd_errorf(err, SPECD_INVAL, "forward: token %u: id %u, vocabulary %u",
					    i, b->tokens[i], m->hp.n_vocab);
		if (s >= n_slots)
			return specd_errorf(err, SPECD_INVAL, "forward: token %u: slot %u of %u", i,
					    s, n_slots);
		if (a->len[s] >= n_ctx)
			return specd_errorf(err, SPECD_INVAL,
					    "forward: token %u: slot %u is full (%u rows)", i, s, n_ctx);
		uint32_t want;
		if (!b->parent) {
			want = a->len[s];
			a->n_prefix[i] = a->len[s] + 1;
		} else {
			int32_t p = b->parent[i];
			if (p >= (int32_t)i || p < -1 || (p >= 0 && b->slots[p] != s))
				return specd_errorf(err, SPECD_INVAL,
						    "forward: token %u: parent %d is no earlier token "
						    "of slot %u", i, p, s);
			want = p < 0 ? a->base[s] : b->pos[p] + 1;
			a->n_prefix[i] = a->base[s];
			uint64_t *bits = a->tree + (size_t)i * a->tree_words;
			if (p < 0)
				memset(bits, 0, a->tree_words * sizeof(uint64_t));
			else
				memcpy(bits, a->tree + (size_t)p * a->tree_words,
				       a->tree_words * sizeof(uint64_t));
			bits[i / 64] |= (uint64_t)1 << (i % 64);
		}
		if (b->pos[i] != want)
			return specd_errorf(err, SPECD_INVAL,
					    "forward: token %u: position %u, expected %u (slot %u "
					    "holds %u rows)", i, b->pos[i], want, s, a->base[s]);
		a->row[i] = a->len[s]++;
		a->kv_row[i] = s * n_ctx + a->row[i];
	}
	return SPECD_OK;
}

static enum specd_status op_failed(struct specd_error *err, enum specd_status st, int layer,
				   const char *what)
{
	if (layer < 0)
		return specd_errorf(err, st, "forward: %s failed: %s", what, specd_status_str(st));
	return specd_errorf(err, st, "forward: layer %d: %s failed: %s", layer, what,
			    specd_status_str(st));
}

/* Sums a row-parallel projection's partial results across shards, when sharded. A
 * hook on host memory takes a device backend's rows through the host stage; one on
 * device memory (NCCL) takes them in place once the backend's ops have finished. */
static enum specd_status allreduce(const struct model *m, float *buf, size_t n)
{
	if (!m->comm)
		return SPECD_OK;
	if (kern_host_memory(m->kern) || m->comm->size == 1)
		return m->comm->allreduce_sum(buf, n, m->comm->user);
	enum specd_status st;
	if (m->comm->device_memory)
		return (st = kern_sync(m->kern)) ? st
						 : m->comm->allreduce_sum(buf, n, m->comm->user);
	float *h = m->a.stage;
	if ((st = kern_download(m->kern, h, buf, n * sizeof(float))) ||
	    (st = m->comm->allreduce_sum(h, n, m->comm->user)))
		return st;
	return kern_upload(m->kern, buf, h, n * sizeof(float));
}

/* Activation rows into a caller's (host) buffer. */
static enum specd_status to_host(const struct model *m, void *dst, const void *src,
				 size_t bytes)
{
	if (kern_host_memory(m->kern))
		return kern_copy(m->kern, dst, src, bytes);
	return kern_download(m->kern, dst, src, bytes);
}

/* A sublayer's output (in a->xb, summed across shards) into the residual stream, and
 * the norm that follows it, w (NULL: none), into a->xb: one op where there is a norm
 * (one launch on a GPU). */
static enum specd_status residual_then_norm(struct model *m, size_t n, const float *w,
					    uint32_t l, struct specd_error *err)
{
	struct llama_acts *a = &m->a;
	size_t dim = m->hp.dim;
	enum specd_status st = w ? kern_add_rmsnorm(m->kern, a->xb, dim, a->x, dim, a->xb, dim, n,
						     dim, w, m->hp.rms_eps)
				 : kern_add(m->kern, a->x, a->xb, n * dim);
	return st ? op_failed(err, st, (int)l, w ? "residual and norm" : "residual") : SPECD_OK;
}

/* The norm layer l + 1 starts with, when it has one: the MLP's end runs it with its
 * residual add. */
static const float *next_attn_norm(const struct model *m, uint32_t l)
{
	return l + 1 < m->hp.n_layers ? m->layers[l + 1].attn_norm : NULL;
}

/* Layer l's attention: its input norm (unless layer l - 1 ran it), the attention, and
 * the residual add with the MLP's norm after it. */
static enum specd_status attention_block(struct model *m, const struct model_batch *b,
					 uint32_t l, struct specd_error *err)
{
	const struct llama_layer *ly = &m->layers[l];
	struct llama_acts *a = &m->a;
	struct kern_ctx *k = m->kern;
	size_t n = b->n_tokens, dim = m->hp.dim, hd = m->hp.head_dim;
	size_t ld = m->q_dim + 2 * (size_t)m->kv_dim; /* a->qkv's row */
	enum specd_status st;

	if (!ly->attn_norm)
		st = kern_copy(k, a->xb, a->x, n * dim * sizeof(float));
	else if (l == 0)
		st = kern_rmsnorm(k, a->xb, dim, a->x, dim, n, dim, ly->attn_norm, m->hp.rms_eps);
	else
		st = SPECD_OK; /* the previous layer's MLP ended with it (next_attn_norm) */
	if (st)
		return op_failed(err, st, (int)l, "attn_norm");
	/* Q, K and V side by side in a->qkv: one matmul where the weights are one matrix
	 * (a device), three into the column blocks otherwise. Each output feature is the
	 * same dot product either way. */
	if (ly->wqkv.data)
		st = kern_matmul(k, a->q, ld, a->xb, dim, n, &ly->wqkv, ly->bqkv);
	else if (!(st = kern_matmul(k, a->q, ld, a->xb, dim, n, &ly->wq, ly->bq)) &&
		 !(st = kern_matmul(k, a->k, ld, a->xb, dim, n, &ly->wk, ly->bk)))
		st = kern_matmul(k, a->v, ld, a->xb, dim, n, &ly->wv, ly->bv);
	if (st)
		return op_failed(err, st, (int)l, "q/k/v projection");
	/* The key heads follow the query heads in each row: one rotation for both. */
	if ((st = kern_rope(k, a->q, ld, n, m->n_heads + m->n_kv_heads, hd, b->pos,
			    m->hp.rope_base, m->rope_layout)))
		return op_failed(err, st, (int)l, "rope");
	/* The batch's keys and values into the cache in one scatter (one launch on a GPU,
	 * whatever the batch): the layer's cache is one matrix of rows, each a key then a
	 * value (kv.h), as a->qkv holds them after the query. */
	if ((st = kern_set_rows(k, kv_k_row(m->kv, l, 0, 0), 2 * (size_t)m->kv_dim, a->kv_row,
				a->k, ld, n, 2 * (size_t)m->kv_dim)))
		return op_failed(err, st, (int)l, "kv write");
	struct kern_attn at = {
		.n_tokens = n,
		.n_heads = m->n_heads,
		.n_kv_heads = m->n_kv_heads,
		.head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd),
		.q = a->q,
		.ldq = ld,
		.out = a->att + m->att_pad,
		.ldo = m->att_ld,
		.kv = kv_layer_view(m->kv, l),
		.mask = {
			.slot = b->slots,
			.n_prefix = a->n_prefix,
			.row = a->row,
			.tree = b->parent ? a->tree : NULL,
			.tree_words = a->tree_words,
		},
	};
	if (m->uniform_groups) {
		if ((st = kern_attention(k, &at)))
			return op_failed(err, st, (int)l, "attention");
	} else {
		/* A shard whose query heads cover KV heads unevenly: one call per KV head,
		 * each head computed exactly as in the single call. */
		struct kern_kv_view kv = at.kv;
		for (uint32_t j = 0; j < m->n_kv_heads; j++) {
			const struct llama_kv_group *g = &m->groups[j];
			at.n_heads = g->n_q;
			at.n_kv_heads = 1;
			at.q = a->q + g->q0 * hd;
			at.out = a->att + m->att_pad + g->q0 * hd;
			at.kv.k = kv.k + j * hd;
			at.kv.v = kv.v + j * hd;
			if ((st = kern_attention(k, &at)))
				return op_failed(err, st, (int)l, "attention");
		}
	}
	if ((st = kern_matmul(k, a->xb, dim, a->att, m->att_ld, n, &ly->wo, NULL)))
		return op_failed(err, st, (int)l, "attn_output");
	if ((st = allreduce(m, a->xb, n * dim)))
		return specd_errorf(err, st, "forward: layer %u: all-reduce after attention: %s",
				    l, specd_status_str(st));
	return residual_then_norm(m, n, ly->ffn_norm, l, err);
}

/* Layer l's MLP on its normed input (attention_block's end), then the residual add
 * with the next layer's input norm after it. */
static enum specd_status mlp_block(struct model *m, size_t n, uint32_t l,
				   struct specd_error *err)
{
	const struct llama_layer *ly = &m->layers[l];
	struct llama_acts *a = &m->a;
	struct kern_ctx *k = m->kern;
	size_t dim = m->hp.dim, ffn = m->n_ffn;
	enum specd_status st;

	if ((st = kern_matmul(k, a->hb, ffn, a->xb, dim, n, &ly->w_gate, NULL)) ||
	    (st = kern_matmul(k, a->hb2, ffn, a->xb, dim, n, &ly->w_up, NULL)))
		return op_failed(err, st, (int)l, "ffn_gate/up");
	if ((st = kern_silu_mul(k, a->hb, a->hb2, n * ffn)))
		return op_failed(err, st, (int)l, "silu");
	if ((st = kern_matmul(k, a->xb, dim, a->hb, ffn, n, &ly->w_down, NULL)))
		return op_failed(err, st, (int)l, "ffn_down");
	if ((st = allreduce(m, a->xb, n * dim)))
		return specd_errorf(err, st, "forward: layer %u: all-reduce after the MLP: %s", l,
				    specd_status_str(st));
	return residual_then_norm(m, n, next_attn_norm(m, l), l, err);
}

/* Rows idx[0..n) of src (dim floats each, backend memory) into consecutive rows of
 * dst: host memory with to_host, else the backend's. One copy per run of consecutive
 * indices, so the usual outputs (a verify's rows, a prompt's tail) cost one copy, not
 * one a row (on a GPU, one launch each). */
static enum specd_status gather_rows(const struct model *m, float *dst, bool host,
				     const float *src, const uint32_t *idx, uint32_t n)
{
	size_t dim = m->hp.dim;
	enum specd_status st;
	for (uint32_t i = 0; i < n;) {
		uint32_t run = 1;
		while (i + run < n && idx[i + run] == idx[i] + run)
			run++;
		size_t bytes = run * dim * sizeof(float);
		const float *from = src + (size_t)idx[i] * dim;
		float *to = dst + (size_t)i * dim;
		if ((st = host ? to_host(m, to, from, bytes) : kern_copy(m->kern, to, from, bytes)))
			return st;
		i += run;
	}
	return SPECD_OK;
}

/* Copies the residual rows chosen for output after layer l, where asked for. */
static enum specd_status layer_outputs(struct model *m, const struct model_batch *b,
				       uint32_t l, struct specd_error *err)
{
	size_t dim = m->hp.dim;
	for (uint32_t j = 0; b->n_out && j < b->n_layers_out; j++) {
		if (b->layers[j] != l)
			continue;
		enum specd_status st = gather_rows(m, b->layer_hidden + (size_t)j * b->n_out * dim,
						   true, m->a.x, b->out_idx, b->n_out);
		if (st)
			return op_failed(err, st, (int)l, "layer output");
	}
	return SPECD_OK;
}

static enum specd_status head(struct model *m, const struct model_batch *b,
			      struct specd_error *err)
{
	struct llama_acts *a = &m->a;
	struct kern_ctx *k = m->kern;
	size_t dim = m->hp.dim;
	enum specd_status st;
	bool rows_wanted = b->logits || b->ids || b->top_k || b->n_draws;
	if (b->n_out == 0 || (!rows_wanted && !b->hidden))
		return SPECD_OK;
	/* Only the chosen rows go through the final norm and the LM head: the vocabulary
	 * projection is the largest matmul of a small model. */
	if ((st = gather_rows(m, a->out, false, a->x, b->out_idx, b->n_out)))
		return op_failed(err, st, -1, "output gather");
	if (m->output_norm && (st = kern_rmsnorm(k, a->out, dim, a->out, dim, b->n_out, dim,
						 m->output_norm, m->hp.rms_eps)))
		return op_failed(err, st, -1, "output_norm");
	if (b->hidden && (st = to_host(m, b->hidden, a->out, b->n_out * dim * sizeof(float))))
		return op_failed(err, st, -1, "hidden output");
	uint32_t rows = b->n_out - b->n_hidden_only;
	if (!rows_wanted || rows == 0)
		return SPECD_OK;
	/* A host backend writes the caller's rows directly; a device one its own. */
	float *logits = a->logits ? a->logits : b->logits;
	if ((st = kern_matmul(k, logits, m->n_vocab, a->out, dim, rows, &m->output, NULL)))
		return op_failed(err, st, -1, "output");
	if (b->ids && (st = kern_argmax(k, b->ids, logits, m->n_vocab, rows, m->n_vocab)))
		return op_failed(err, st, -1, "output argmax");
	struct kern_topk_rows t = {.rows = rows, .n = m->n_vocab, .x = logits, .ldx = m->n_vocab,
				   .k = b->top_k, .ids = b->top_ids, .vals = b->top_vals,
				   .lse = b->top_lse};
	if (b->top_k && (st = kern_topk(k, &t)))
		return op_failed(err, st, -1, "output top ids");
	for (uint32_t i = 0; i < b->n_draws; i++) {
		struct kern_sample_rows r = draw_rows(m, &b->draws[i], logits);
		if ((st = kern_sample(k, &r)))
			return op_failed(err, st, -1, "output draw");
	}
	if (b->logits && logits != b->logits &&
	    (st = kern_download(k, b->logits, logits, (size_t)rows * m->n_vocab * sizeof(float))))
		return op_failed(err, st, -1, "logits download");
	return SPECD_OK;
}

enum specd_status model_batch_check(struct model *m, const struct model_batch *b,
				    struct specd_error *err)
{
	return plan_batch(m, b, err); /* writes only the activations' bookkeeping */
}

/* The embedding rows of the batch into the residual stream. A shard holds a slice of
 * the vocabulary: it writes the rows it has and zeros for the others, and the
 * all-reduce sums the one non-zero contribution into every shard (exactly). */
static enum specd_status embed(struct model *m, const struct model_batch *b,
			       struct specd_error *err)
{
	size_t dim = m->hp.dim;
	enum specd_status st;
	if (m->fc.data) {
		/* EAGLE: fc([embedding, feature]), joined in the backend's memory: the
		 * embeddings in one lookup into the rows' first halves; the features in one
		 * upload (into x, which fc writes only after) and one scatter into the
		 * second halves, not an upload (and a device's wait) per token. */
		if ((st = kern_get_rows(m->kern, m->a.cat, 2 * dim, &m->tok_embd, b->tokens,
					b->n_tokens)))
			return op_failed(err, st, -1, "token_embd");
		if ((st = kern_upload(m->kern, m->a.x, b->features,
				      (size_t)b->n_tokens * dim * sizeof(float))))
			return op_failed(err, st, -1, "feature upload");
		if ((st = kern_set_rows(m->kern, m->a.cat + dim, 2 * dim, m->a.iota, m->a.x, dim,
					b->n_tokens, dim)))
			return op_failed(err, st, -1, "features");
		if ((st = kern_matmul(m->kern, m->a.x, dim, m->a.cat, 2 * dim, b->n_tokens, &m->fc,
				      m->fc_bias)))
			return op_failed(err, st, -1, "fc");
		return SPECD_OK;
	}
	if (!m->comm || m->comm->size == 1) {
		if ((st = kern_get_rows(m->kern, m->a.x, dim, &m->tok_embd, b->tokens, b->n_tokens)))
			return op_failed(err, st, -1, "token_embd");
		return SPECD_OK;
	}
	uint32_t v0 = m->shard.vocab0;
	for (uint32_t t = 0; t < b->n_tokens; t++) {
		float *row = m->a.x + (size_t)t * dim;
		uint32_t id = b->tokens[t] - v0;
		if (b->tokens[t] >= v0 && id < m->n_vocab)
			st = kern_get_rows(m->kern, row, dim, &m->tok_embd, &id, 1);
		else
			st = kern_copy(m->kern, row, m->a.zeros, dim * sizeof(float));
		if (st)
			return op_failed(err, st, -1, "token_embd");
	}
	if ((st = allreduce(m, m->a.x, b->n_tokens * dim)))
		return specd_errorf(err, st, "forward: all-reduce of the embeddings: %s",
				    specd_status_str(st));
	return SPECD_OK;
}

enum specd_status model_forward(struct model *m, const struct model_batch *b,
				struct specd_error *err)
{
	enum specd_status st = plan_batch(m, b, err);
	if (st != SPECD_OK)
		return st;
	if ((st = embed(m, b, err)))
		return st;
	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		if ((st = attention_block(m, b, l, err)) || (st = mlp_block(m, b->n_tokens, l, err)) ||
		    (st = layer_outputs(m, b, l, err)))
			return st;
	}
	if ((st = head(m, b, err)))
		return st;
	if ((st = kern_sync(m->kern)))
		return op_failed(err, st, -1, "sync");
	for (uint32_t i = 0; i < b->n_tokens; i++)
		kv_set_len(m->kv, b->slots[i], m->a.len[b->slots[i]]);
	return SPECD_OK;
}
