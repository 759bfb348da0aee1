/* Tensor-parallel sharding of a loaded model (model/shard.h): the split of heads, FFN
 * columns and vocabulary across T shards, applied to the whole-model matrices the
 * loader found (row slices in place, column slices copied once), and the two
 * vocab-parallel operations on the logits. The forward (llama_forward.c) only sees
 * smaller matrices and the hook. */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "llama_int.h"
#include "model/gguf.h"

/* The r-th of `size` near-equal parts of n units: [*first, *first + *count). */
static void split(uint32_t n, uint32_t r, uint32_t size, uint32_t *first, uint32_t *count)
{
	uint64_t a = (uint64_t)n * r / size, b = (uint64_t)n * (r + 1) / size;
	*first = (uint32_t)a;
	*count = (uint32_t)(b - a);
}

/* A column split of ffn_down or attn_output must cut whole quantisation blocks in
 * every layer: block sizes are 1, 32 or 256, so the largest is a multiple of the rest. */
static uint32_t col_unit(const struct model *m, bool down)
{
	size_t unit = 1;
	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		const struct llama_layer *ly = &m->layers[l];
		size_t b = kern_dtype_block(down ? ly->w_down.type : ly->wo.type);
		if (b > unit)
			unit = b;
	}
	return (uint32_t)unit;
}

static void plan(struct model *m, uint32_t rank, uint32_t size)
{
	const struct model_hparams *hp = &m->hp;
	struct model_shard *s = &m->shard;
	uint32_t group = hp->n_heads / hp->n_kv_heads;
	s->rank = rank;
	s->size = size;
	if (hp->n_kv_heads >= size) {
		split(hp->n_kv_heads, rank, size, &s->kv_head0, &s->n_kv_heads);
		s->head0 = s->kv_head0 * group;
		s->n_heads = s->n_kv_heads * group;
	} else {
		split(hp->n_heads, rank, size, &s->head0, &s->n_heads);
		s->kv_head0 = s->head0 / group;
		s->n_kv_heads = (s->head0 + s->n_heads - 1) / group - s->kv_head0 + 1;
	}
	uint32_t unit = col_unit(m, true), n_units;
	split(hp->ffn_dim / unit, rank, size, &s->ffn0, &n_units);
	s->ffn0 *= unit;
	s->n_ffn = n_units * unit;
	split(hp->n_vocab, rank, size, &s->vocab0, &s->n_vocab);
}

/* Rows [r0, r0 + n) of w, in place. */
static struct kern_mat rows_of(const struct kern_mat *w, size_t r0, size_t n)
{
	struct kern_mat s = *w;
	s.n_out = n;
	s.data = (const unsigned char *)w->data + r0 * w->row_bytes;
	return s;
}

/* Columns [c0, c0 + n) widened to whole blocks of `block`: [*b0, *b0 + *width). */
static void cols_span(size_t block, size_t c0, size_t n, size_t *b0, size_t *width)
{
	*b0 = c0 / block * block;
	*width = (c0 + n + block - 1) / block * block - *b0;
}

static size_t cols_bytes(const struct kern_mat *w, size_t block, size_t c0, size_t n)
{
	size_t b0, width;
	cols_span(block, c0, n, &b0, &width);
	return (kern_dtype_row_bytes(w->type, width) * w->n_out + 63) & ~(size_t)63;
}

/* The whole blocks holding columns [c0, c0 + n) of every row of w, copied into dst
 * (cols_bytes of room), in the file's type. When a head boundary falls inside a block
 * the shard's input gets zero columns for the rest of the block (llama_acts.att), so
 * the products are exactly those of its own columns. */
static struct kern_mat cols_copy(const struct kern_mat *w, size_t block, size_t c0, size_t n,
				 unsigned char *dst)
{
	size_t b0, width;
	cols_span(block, c0, n, &b0, &width);
	const unsigned char *src = w->data;
	size_t off = kern_dtype_row_bytes(w->type, b0);
	size_t rb = kern_dtype_row_bytes(w->type, width);
	for (size_t o = 0; o < w->n_out; o++)
		memcpy(dst + o * rb, src + o * w->row_bytes + off, rb);
	return kern_mat_packed(w->type, width, w->n_out, dst);
}

static size_t mat_bytes(const struct kern_mat *w)
{
	return w->n_out * kern_dtype_row_bytes(w->type, w->n_in);
}

static size_t whole_weight_bytes(const struct model *m)
{
	const struct gguf_file *f = m->file;
	size_t total = 0;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++)
		total += gguf_tensor_at(f, i)->nbytes;
	return total;
}

/* Bytes of the vectors every shard keeps whole or in slices. */
static size_t vector_bytes(const struct model *m)
{
	const struct model_hparams *hp = &m->hp;
	size_t per_layer = 2 * hp->dim;
	const struct llama_layer *ly = &m->layers[0];
	if (ly->bq)
		per_layer += m->q_dim;
	if (ly->bk)
		per_layer += 2 * (size_t)m->kv_dim;
	return (per_layer * hp->n_layers + hp->dim) * sizeof(float);
}

static enum specd_status kv_groups(struct model *m, struct specd_error *err)
{
	const struct model_shard *s = &m->shard;
	uint32_t group = m->hp.n_heads / m->hp.n_kv_heads;
	m->groups = specd_calloc(s->n_kv_heads, sizeof(*m->groups));
	if (!m->groups)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	for (uint32_t h = 0; h < s->n_heads; h++) {
		struct llama_kv_group *g = &m->groups[(s->head0 + h) / group - s->kv_head0];
		if (g->n_q == 0)
			g->q0 = h;
		g->n_q++;
	}
	m->uniform_groups = true;
	for (uint32_t j = 0; j < s->n_kv_heads; j++)
		m->uniform_groups &= m->groups[j].n_q == m->groups[0].n_q;
	return SPECD_OK;
}

enum specd_status llama_shard_apply(struct model *m, uint32_t rank, uint32_t size,
				    struct specd_error *err)
{
	const struct model_hparams *hp = &m->hp;
	struct model_shard *s = &m->shard;
	size_t hd = hp->head_dim;
	plan(m, rank, size);
	if (s->n_heads == 0 || s->n_ffn == 0 || s->n_vocab == 0)
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "tensor parallelism: %u shards leave shard %u with %u query "
				    "heads, %u FFN columns and %u vocabulary rows (%u heads, FFN %u "
				    "in blocks of %u, vocabulary %u): use fewer shards",
				    size, rank, s->n_heads, s->n_ffn, s->n_vocab, hp->n_heads,
				    hp->ffn_dim, col_unit(m, true), hp->n_vocab);
	m->n_heads = s->n_heads;
	m->n_kv_heads = s->n_kv_heads;
	m->q_dim = s->n_heads * hp->head_dim;
	m->kv_dim = s->n_kv_heads * hp->head_dim;
	m->n_ffn = s->n_ffn;
	m->n_vocab = s->n_vocab;
	enum specd_status st = kv_groups(m, err);
	if (st != SPECD_OK)
		return st;

	bool whole_q = s->n_heads == hp->n_heads, whole_ffn = s->n_ffn == hp->ffn_dim;
	size_t copy_total = 0, ob = col_unit(m, false), db = col_unit(m, true);
	m->att_pad = 0;
	m->att_ld = m->q_dim;
	if (!whole_q) {
		size_t b0, width;
		cols_span(ob, s->head0 * hd, m->q_dim, &b0, &width);
		m->att_pad = (uint32_t)(s->head0 * hd - b0);
		m->att_ld = (uint32_t)width;
	}
	for (uint32_t l = 0; l < hp->n_layers; l++) {
		const struct llama_layer *ly = &m->layers[l];
		if (!whole_q)
			copy_total += cols_bytes(&ly->wo, ob, s->head0 * hd, m->q_dim);
		if (!whole_ffn)
			copy_total += cols_bytes(&ly->w_down, db, s->ffn0, s->n_ffn);
	}
	if (copy_total) {
		m->copies = specd_aligned_alloc(64, copy_total);
		if (!m->copies)
			return specd_errorf(err, SPECD_NOMEM,
					    "model: out of memory for the shard's %zu bytes of "
					    "O and down projections", copy_total);
	}
	unsigned char *dst = m->copies;
	size_t resident = vector_bytes(m);
	for (uint32_t l = 0; l < hp->n_layers; l++) {
		struct llama_layer *ly = &m->layers[l];
		ly->wq = rows_of(&ly->wq, (size_t)s->head0 * hd, m->q_dim);
		ly->wk = rows_of(&ly->wk, (size_t)s->kv_head0 * hd, m->kv_dim);
		ly->wv = rows_of(&ly->wv, (size_t)s->kv_head0 * hd, m->kv_dim);
		if (ly->bq)
			ly->bq += (size_t)s->head0 * hd;
		if (ly->bk)
			ly->bk += (size_t)s->kv_head0 * hd;
		if (ly->bv)
			ly->bv += (size_t)s->kv_head0 * hd;
		ly->w_gate = rows_of(&ly->w_gate, s->ffn0, s->n_ffn);
		ly->w_up = rows_of(&ly->w_up, s->ffn0, s->n_ffn);
		if (!whole_q) {
			size_t nb = cols_bytes(&ly->wo, ob, s->head0 * hd, m->q_dim);
			ly->wo = cols_copy(&ly->wo, ob, s->head0 * hd, m->q_dim, dst);
			dst += nb;
		}
		if (!whole_ffn) {
			/* FFN columns are split on whole blocks (plan): no padding here */
			size_t nb = cols_bytes(&ly->w_down, db, s->ffn0, s->n_ffn);
			ly->w_down = cols_copy(&ly->w_down, db, s->ffn0, s->n_ffn, dst);
			assert(ly->w_down.n_in == s->n_ffn);
			dst += nb;
		}
		resident += mat_bytes(&ly->wq) + mat_bytes(&ly->wk) + mat_bytes(&ly->wv) +
			    mat_bytes(&ly->wo) + mat_bytes(&ly->w_gate) + mat_bytes(&ly->w_up) +
			    mat_bytes(&ly->w_down);
	}
	m->tok_embd = rows_of(&m->tok_embd, s->vocab0, s->n_vocab);
	m->output = hp->tied_output ? m->tok_embd : rows_of(&m->output, s->vocab0, s->n_vocab);
	resident += mat_bytes(&m->tok_embd) + (hp->tied_output ? 0 : mat_bytes(&m->output));
	s->weight_bytes = whole_weight_bytes(m);
	s->resident_bytes = resident;
	s->copied_bytes = copy_total;
	return SPECD_OK;
}

const struct model_shard *model_shard(const struct model *m)
{
	return &m->shard;
}

size_t model_resident_bytes(const struct model *m)
{
	return m->shard.resident_bytes;
}

static bool sharded(const struct model *m)
{
	return m->comm && m->comm->size > 1;
}

enum specd_status model_shard_argmax(struct model *m, const float *logits, uint32_t rows,
				     uint32_t *out, struct specd_error *err)
{
	struct llama_acts *a = &m->a;
	if (rows == 0 || rows > m->max_batch || !logits || !out)
		return specd_errorf(err, SPECD_INVAL, "argmax: %u rows, expected 1..%u", rows,
				    m->max_batch);
	/* The logits are the caller's host rows; a device backend takes them back to run
	 * its own argmax (the same op the forward's backend would use). */
	const float *x = logits;
	enum specd_status st = SPECD_OK;
	if (a->logits) {
		st = kern_upload(m->kern, a->logits, logits, (size_t)rows * m->n_vocab * sizeof(float));
		x = a->logits;
	}
	if (st == SPECD_OK)
		st = kern_argmax(m->kern, a->amax_loc, x, m->n_vocab, rows, m->n_vocab);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "argmax: %s", specd_status_str(st));
	if (!sharded(m)) {
		memcpy(out, a->amax_loc, rows * sizeof(uint32_t));
		return SPECD_OK;
	}
	for (uint32_t r = 0; r < rows; r++) {
		float v = logits[(size_t)r * m->n_vocab + a->amax_loc[r]];
		/* A slice of NaNs must lose to any number of another shard. */
		a->amax_val[r] = isnan(v) ? -INFINITY : v;
		a->amax_idx[r] = (int32_t)(m->shard.vocab0 + a->amax_loc[r]);
	}
	st = m->comm->maxloc(a->amax_val, a->amax_idx, rows, m->comm->user);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "argmax across %u shards: %s", m->comm->size,
				    specd_status_str(st));
	for (uint32_t r = 0; r < rows; r++)
		out[r] = (uint32_t)a->amax_idx[r];
	return SPECD_OK;
}

enum specd_status model_shard_gather_logits(struct model *m, const float *logits,
					    uint32_t rows, float *full,
					    struct specd_error *err)
{
	size_t V = m->hp.n_vocab;
	if (rows == 0 || !logits || (m->shard.rank == 0 && !full))
		return specd_errorf(err, SPECD_INVAL, "gather logits: %u rows into %s", rows,
				    full ? "a buffer" : "no buffer");
	if (!sharded(m)) {
		memcpy(full, logits, rows * V * sizeof(float));
		return SPECD_OK;
	}
	/* One gather per row lands each shard's slice at its place in the row, so no
	 * scratch is needed to reorder. */
	for (uint32_t r = 0; r < rows; r++) {
		enum specd_status st =
			m->comm->gather(logits + (size_t)r * m->n_vocab,
					m->shard.rank == 0 ? full + r * V : NULL, m->a.counts,
					m->a.displs, m->comm->user);
		if (st != SPECD_OK)
			return specd_errorf(err, st, "gather of logits row %u from %u shards: %s",
					    r, m->comm->size, specd_status_str(st));
	}
	return SPECD_OK;
}
