/* The Medusa drafter (medusa.h): from the target's final hidden state at the position
 * that chose the last token, each head's top candidates fill the static tree, which the
 * engine verifies in one forward. Deterministic proposals (q one-hot, distinct
 * siblings), so sampling stays exact under the tree rule of verify.h. No per-slot
 * state: the hidden state arrives with every propose. Every sequence of a batch and
 * every head that shares one LM head go through it in one product, so its weights (a
 * vocabulary x hidden matrix, the costly part) are read once a step, not once a head. */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "drafter_int.h"
#include "medusa_int.h"
#include "model/llama.h"
#include "model/safetensors.h"

/* Device copies a backend may need: per head its blocks' weights and biases and its
 * LM head. */
#define MEDUSA_MAX_COPIES (MEDUSA_MAX_HEADS * (2 * MEDUSA_MAX_LAYERS + 1))

struct medusa {
	struct medusa_heads *heads;
	struct kern_ctx *kern;  /* borrowed, or own_kern */
	struct kern_ctx *own_kern;
	/* The heads as the backend reads them: heads->head itself on a host backend; on a
	 * device, pointing at copies made once at create (copies[0 .. n_copies)). */
	struct medusa_head run[MEDUSA_MAX_HEADS];
	void *copies[MEDUSA_MAX_COPIES];
	uint32_t n_copies;
	uint32_t k_max;
	/* The static tree for k_max nodes; a smaller k takes its first k nodes. */
	int32_t parent[DRAFT_MAX_TOKENS];
	uint32_t depth[DRAFT_MAX_TOKENS], rank[DRAFT_MAX_TOKENS];
	/* want[k][h]: candidates the first k nodes take from head h (the tree is fixed, so
	 * this is too: worked out once at create, not per sequence and head each step) */
	uint8_t want[DRAFT_MAX_TOKENS + 1][MEDUSA_MAX_HEADS];
	/* One row per (sequence, head) of a step, ordered by head: */
	uint32_t max_rows;      /* n_slots x n_heads */
	float *xs;              /* (max_rows, dim) backend: each row's residual stream */
	float *y;               /* (max_rows, dim) backend */
	float *ones;            /* (max_rows, dim) backend: 1.0f, SiLU(y) = silu_mul(y, ones) */
	float *dlogits;         /* (max_rows, n_vocab) backend: never downloaded */
	/* (max_rows, top_k) host: each row's candidates, best first, picked where the
	 * logits are (kern_topk); top_k is the step's largest want, at most
	 * MEDUSA_MAX_RANK */
	int32_t *top;
	uint32_t top_k;
	/* (n_slots, n_heads) the row of sequence i's head h in this step */
	uint32_t *row_of;
};

_Static_assert(MEDUSA_MAX_RANK <= KERN_TOPK_MAX, "a head's candidates are one topk");

/* ---- the static tree ---- */

enum specd_status draft_medusa_tree(uint32_t k, uint32_t n_heads, int32_t *parent,
				    uint32_t *depth, uint32_t *rank)
{
	double score[DRAFT_MAX_TOKENS];

	if (k == 0 || k > DRAFT_MAX_TOKENS || n_heads == 0 || n_heads > MEDUSA_MAX_HEADS)
		return SPECD_INVAL;
	/* Best-first: the candidates are the first child of every chosen node and the next
	 * sibling of every chosen node; a node scores its parent's score / (rank + 2).
	 * Ties go to the candidate found first (shallower, then lower ranks). */
	for (uint32_t n = 0; n < k; n++) {
		double best = -1;
		int32_t bp = -1;
		uint32_t bd = 0, br = 0;
		for (int32_t c = -1; c < (int32_t)n; c++) {
			/* The first child of c (c = -1: of the root), if c has none chosen yet. */
			uint32_t d = c < 0 ? 0 : depth[c] + 1;
			bool has_child = false;
			for (uint32_t i = 0; i < n; i++)
				has_child |= parent[i] == c;
			double base = c < 0 ? 1.0 : score[c];
			if (!has_child && d < n_heads && base / 2.0 > best) {
				best = base / 2.0;
				bp = c;
				bd = d;
				br = 0;
			}
			/* The next sibling of c, if c is the last chosen of its siblings. */
			if (c < 0 || rank[c] + 1 >= MEDUSA_MAX_RANK)
				continue;
			bool last = true;
			for (uint32_t i = 0; i < n; i++)
				last &= !(parent[i] == parent[c] && rank[i] == rank[c] + 1);
			double up = parent[c] < 0 ? 1.0 : score[parent[c]];
			double s = up / (rank[c] + 3.0);
			if (last && s > best) {
				best = s;
				bp = parent[c];
				bd = depth[c];
				br = rank[c] + 1;
			}
		}
		if (best < 0)
			return SPECD_INVAL; /* cannot happen: a root child always remains */
		parent[n] = bp;
		depth[n] = bd;
		rank[n] = br;
		score[n] = best;
	}
	return SPECD_OK;
}

/* ---- the drafter ---- */

static void medusa_destroy(void *state)
{
	struct medusa *m = state;

	if (!m)
		return;
	if (m->kern) {
		for (uint32_t i = 0; i < m->n_copies; i++)
			kern_free(m->kern, m->copies[i]);
		kern_free(m->kern, m->xs);
		kern_free(m->kern, m->y);
		kern_free(m->kern, m->ones);
		kern_free(m->kern, m->dlogits);
	}
	medusa_heads_destroy(m->heads);
	kern_destroy(m->own_kern);
	specd_free(m->top);
	specd_free(m->row_of);
	specd_free(m);
}

static enum specd_status backend_floats(struct medusa *m, size_t n, float **out)
{
	void *p = NULL;
	enum specd_status st = kern_alloc(m->kern, (n ? n : 1) * sizeof(float), &p);
	*out = p;
	return st;
}

static bool same_lm(const struct kern_mat *a, const struct kern_mat *b)
{
	return a->data == b->data && a->type == b->type;
}

/* Copies one matrix or vector to the backend, kept for destroy. */
static enum specd_status copy_mat(struct medusa *m, struct kern_mat *w)
{
	struct kern_mat d;
	enum specd_status st = kern_upload_mat(m->kern, w, &d);
	if (st == SPECD_OK) {
		m->copies[m->n_copies++] = (void *)(uintptr_t)d.data;
		*w = d;
	}
	return st;
}

static enum specd_status copy_vec(struct medusa *m, float **v, size_t n)
{
	void *d = NULL;
	enum specd_status st = kern_alloc(m->kern, n * sizeof(float), &d);
	if (st != SPECD_OK)
		return st;
	m->copies[m->n_copies++] = d;
	st = kern_upload(m->kern, d, *v, n * sizeof(float));
	*v = d;
	return st;
}

/* m->run: the heads as m->kern reads them. On a device backend every block and LM head
 * is copied there once; heads that share an LM head share its copy, and the target's
 * own LM head is used in place when the target is whole on this backend. */
static enum specd_status place_heads(struct medusa *m, const struct model *target,
				     struct specd_error *err)
{
	const struct medusa_heads *hs = m->heads;
	memcpy(m->run, hs->head, hs->n_heads * sizeof(m->run[0]));
	if (kern_host_memory(m->kern))
		return SPECD_OK;
	const struct kern_mat *target_lm = model_output_on(target, m->kern);
	enum specd_status st = SPECD_OK;
	for (uint32_t h = 0; h < hs->n_heads && st == SPECD_OK; h++) {
		struct medusa_head *hd = &m->run[h];
		for (uint32_t l = 0; l < hd->n_layers && st == SPECD_OK; l++)
			if ((st = copy_mat(m, &hd->block[l].w)) == SPECD_OK)
				st = copy_vec(m, &hd->block[l].bias, hs->dim);
		uint32_t same = 0;
		while (same < h && !same_lm(&hs->head[same].lm, &hs->head[h].lm))
			same++;
		if (st != SPECD_OK)
			break;
		if (hd->shared_lm && target_lm)
			hd->lm = *target_lm;
		else if (same < h)
			hd->lm = m->run[same].lm;
		else
			st = copy_mat(m, &hd->lm);
	}
	if (st == SPECD_OK)
		st = kern_sync(m->kern);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "medusa: cannot copy the heads to %s: %s",
				    kern_name(m->kern), specd_status_str(st));
	return SPECD_OK;
}

static enum specd_status medusa_create(const struct draft_config *cfg, void **state,
				       struct specd_error *err)
{
	struct medusa *m = specd_calloc(1, sizeof(*m));
	enum specd_status st;

	if (!m)
		return specd_errorf(err, SPECD_NOMEM, "medusa: out of memory");
	if ((st = medusa_heads_load(cfg->heads_path, cfg->target, &m->heads, err)) != SPECD_OK)
		goto fail;
	m->k_max = cfg->k_max;
	if ((st = draft_medusa_tree(m->k_max, m->heads->n_heads, m->parent, m->depth,
				    m->rank)) != SPECD_OK) {
		specd_errorf(err, st, "medusa: no tree of %u nodes over %u heads", m->k_max,
			     m->heads->n_heads);
		goto fail;
	}
	/* Prefix-closed: the first k nodes of the k_max tree are the k-node tree. */
	for (uint32_t k = 1; k <= m->k_max; k++) {
		memcpy(m->want[k], m->want[k - 1], sizeof(m->want[k]));
		uint32_t d = m->depth[k - 1], r = m->rank[k - 1] + 1;
		if (r > m->want[k][d])
			m->want[k][d] = (uint8_t)r;
	}
	if (cfg->kern) {
		m->kern = cfg->kern;
	} else {
		struct kern_cpu_config kc = {.n_threads = 1};
		if ((st = kern_cpu_create(&kc, &m->own_kern)) != SPECD_OK) {
			specd_errorf(err, st, "medusa: cannot create a CPU backend");
			goto fail;
		}
		m->kern = m->own_kern;
	}
	if ((st = place_heads(m, cfg->target, err)) != SPECD_OK)
		goto fail;
	uint32_t dim = m->heads->dim;
	m->max_rows = cfg->n_slots * m->heads->n_heads;
	size_t n_logits = (size_t)m->max_rows * m->heads->n_vocab;
	m->top = specd_malloc_array((size_t)m->max_rows * MEDUSA_MAX_RANK, sizeof(*m->top));
	m->row_of = specd_malloc_array(m->max_rows, sizeof(*m->row_of));
	size_t n_rows = (size_t)m->max_rows * dim;
	if (!m->top || !m->row_of || backend_floats(m, n_rows, &m->xs) ||
	    backend_floats(m, n_rows, &m->y) || backend_floats(m, n_rows, &m->ones) ||
	    backend_floats(m, n_logits, &m->dlogits)) {
		st = specd_errorf(err, SPECD_NOMEM, "medusa: out of memory for %u rows on %s",
				  m->max_rows, kern_name(m->kern));
		goto fail;
	}
	float *one = specd_malloc_array(n_rows, sizeof(float));
	if (one)
		for (size_t i = 0; i < n_rows; i++)
			one[i] = 1.0f;
	st = one ? kern_upload(m->kern, m->ones, one, n_rows * sizeof(float)) : SPECD_NOMEM;
	specd_free(one);
	if (st != SPECD_OK) {
		specd_errorf(err, st, "medusa: cannot set up its buffers: %s",
			     specd_status_str(st));
		goto fail;
	}
	*state = m;
	return SPECD_OK;
fail:
	medusa_destroy(m);
	return st;
}

static enum specd_status medusa_supports(const void *state, const struct model *target,
					 struct specd_error *err)
{
	const struct medusa *m = state;
	const struct model_hparams *hp = model_hparams(target);

	if (hp->dim != m->heads->dim || hp->n_vocab != m->heads->n_vocab)
		return specd_errorf(err, SPECD_INVAL, "medusa: the heads are for hidden size %u and "
				    "%u tokens; the target has %u and %u", m->heads->dim,
				    m->heads->n_vocab, hp->dim, hp->n_vocab);
	return SPECD_OK;
}

static size_t medusa_memory_bytes(const void *state)
{
	const struct medusa *m = state;

	return m->heads->file->bytes;
}

/* Head h's residual blocks on rows [r0, r1) of m->xs, which hold the hidden states:
 * x <- x + SiLU(W x + b), SiLU being silu_mul by ones. One product a block for all
 * the head's rows, so its weights are read once a step (the matmul is batch-invariant:
 * each row comes out as it would alone). */
static enum specd_status run_blocks(struct medusa *m, uint32_t h, uint32_t r0, uint32_t r1,
				    struct specd_error *err)
{
	const struct medusa_head *hd = &m->run[h];
	uint32_t dim = m->heads->dim, n = r1 - r0;
	float *x = m->xs + (size_t)r0 * dim;
	enum specd_status st;

	for (uint32_t l = 0; n && l < hd->n_layers; l++) {
		if ((st = kern_matmul(m->kern, m->y, dim, x, dim, n, &hd->block[l].w,
				      hd->block[l].bias)) != SPECD_OK ||
		    (st = kern_silu_mul(m->kern, m->y, m->ones, (size_t)n * dim)) != SPECD_OK ||
		    (st = kern_add(m->kern, x, m->y, (size_t)n * dim)) != SPECD_OK)
			return specd_errorf(err, st, "medusa: head %u block %u", h, l);
	}
	return SPECD_OK;
}

/* The LM-head products of rows [0, n_rows), ordered by head: one product per run of
 * heads with the same LM head (all of them when they share the target's), then every
 * row's top_k candidates taken where the logits are. The matmul is batch-invariant,
 * so each row is what it would be alone; a row's first candidates do not depend on
 * how many are taken. */
static enum specd_status run_lm(struct medusa *m, const uint32_t *head_end,
				struct specd_error *err)
{
	uint32_t n_vocab = m->heads->n_vocab, dim = m->heads->dim, start = 0;
	for (uint32_t h = 0; h < m->heads->n_heads; h++) {
		const struct kern_mat *lm = &m->run[h].lm;
		bool joins_next = h + 1 < m->heads->n_heads && same_lm(lm, &m->run[h + 1].lm);
		uint32_t end = head_end[h];
		if (joins_next || end == start)
			continue;
		enum specd_status st = kern_matmul(m->kern, m->dlogits + (size_t)start * n_vocab,
						   n_vocab, m->xs + (size_t)start * dim, dim,
						   end - start, lm, NULL);
		if (st != SPECD_OK)
			return specd_errorf(err, st, "medusa: head %u LM head", h);
		start = end;
	}
	struct kern_topk_rows t = {.rows = start, .n = n_vocab, .x = m->dlogits, .ldx = n_vocab,
				   .k = m->top_k, .ids = m->top};
	enum specd_status st = kern_topk(m->kern, &t);
	return st ? specd_errorf(err, st, "medusa: candidates of %u rows", start) : SPECD_OK;
}

static enum specd_status medusa_propose_batch(void *state, const struct draft_seq *seqs,
					      const uint32_t *k_in, struct draft_proposal *const *outs,
					      uint32_t n, struct specd_error *err)
{
	struct medusa *m = state;
	uint32_t n_heads = m->heads->n_heads, rows = 0, head_end[MEDUSA_MAX_HEADS];
	enum specd_status st;

	if (n * n_heads > m->max_rows)
		return specd_errorf(err, SPECD_INTERNAL, "medusa: a batch of %u sequences; room "
				    "for %u", n, m->max_rows / n_heads);
	for (uint32_t i = 0; i < n; i++) {
		outs[i]->n = 0;
		outs[i]->q_onehot = true;
		if (draft_seq_last_hidden(&seqs[i], m->heads->dim) && k_in[i] && !outs[i]->parent)
			return specd_errorf(err, SPECD_INTERNAL, "medusa: the caller takes no trees");
	}
	/* Rows by head, then by sequence: head h's rows are contiguous, so heads with one LM
	 * head form one run. A sequence without a hidden state yet drafts nothing. */
	m->top_k = 1;
	for (uint32_t h = 0; h < n_heads; h++) {
		uint32_t start = rows;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t k = k_in[i] < m->k_max ? k_in[i] : m->k_max;
			const float *hid = draft_seq_last_hidden(&seqs[i], m->heads->dim);
			if (!hid || k == 0 || !m->want[k][h])
				continue;
			if ((st = kern_upload(m->kern, m->xs + (size_t)rows * m->heads->dim, hid,
					      m->heads->dim * sizeof(float))) != SPECD_OK)
				return specd_errorf(err, st, "medusa: hidden state upload");
			m->row_of[i * n_heads + h] = rows++;
			m->top_k = m->want[k][h] > m->top_k ? m->want[k][h] : m->top_k;
		}
		if ((st = run_blocks(m, h, start, rows, err)) != SPECD_OK)
			return st;
		head_end[h] = rows;
	}
	if (rows == 0)
		return SPECD_OK;
	if ((st = run_lm(m, head_end, err)) != SPECD_OK)
		return st;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = k_in[i] < m->k_max ? k_in[i] : m->k_max;
		if (!draft_seq_last_hidden(&seqs[i], m->heads->dim) || k == 0)
			continue;
		struct draft_proposal *out = outs[i];
		for (uint32_t j = 0; j < k; j++) {
			uint32_t r = m->row_of[i * n_heads + m->depth[j]];
			int32_t t = m->top[(size_t)r * m->top_k + m->rank[j]];
			if (t < 0)
				return specd_errorf(err, SPECD_INVAL, "medusa: head %u gave no "
						    "candidate (its logits are NaN)", m->depth[j]);
			out->tokens[j] = t;
			out->parent[j] = m->parent[j];
		}
		out->n = k;
		out->tree = true;
	}
	return SPECD_OK;
}

static enum specd_status medusa_propose(void *state, const struct draft_seq *seq, uint32_t k,
					struct draft_proposal *out, struct specd_error *err)
{
	struct draft_proposal *outs[1] = {out};
	return medusa_propose_batch(state, seq, &k, outs, 1, err);
}

const struct draft_ops draft_medusa_ops = {
	.method = DRAFT_METHOD_MEDUSA,
	.wants_hidden = true,
	.create = medusa_create,
	.destroy = medusa_destroy,
	.supports = medusa_supports,
	.memory_bytes = medusa_memory_bytes,
	.propose = medusa_propose,
	.propose_batch = medusa_propose_batch,
};
