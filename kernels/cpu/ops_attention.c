/* Attention: each query token against the K/V cache rows its mask lets it see (kern.h
 * struct kern_attn_mask), causal or tree. Two passes per head (the max score, then the
 * weights and the weighted sum), recomputing the dot products instead of keeping a
 * score buffer, so nothing is allocated and the cost of a token depends only on its
 * own visible rows. The pool's threads split the (token, head) pairs; the dot products
 * and weighted sums are the ISA's (struct cpu_isa_kernels). */
#include <math.h>
#include <stdbool.h>

#include "cpu_ops.h"

static bool tree_bit(const struct kern_attn_mask *m, size_t t, size_t u)
{
	return (m->tree[t * m->tree_words + u / 64] >> (u % 64)) & 1u;
}

static enum specd_status check_args(const struct kern_attn *a)
{
	const struct kern_attn_mask *m = &a->mask;
	if (!a->q || !a->out || !a->kv.k || !a->kv.v || !m->slot || !m->n_prefix)
		return SPECD_INVAL;
	if (a->head_dim == 0 || a->head_dim > KERN_MAX_HEAD_DIM || a->n_heads == 0 ||
	    a->n_kv_heads == 0 || a->n_heads % a->n_kv_heads != 0)
		return SPECD_INVAL;
	if (a->ldq < a->n_heads * a->head_dim || a->ldo < a->n_heads * a->head_dim ||
	    a->kv.row_stride < a->n_kv_heads * a->head_dim)
		return SPECD_INVAL;
	if (m->tree && (!m->row || m->tree_words * 64 < a->n_tokens))
		return SPECD_INVAL;
	for (size_t t = 0; t < a->n_tokens; t++) {
		if (m->n_prefix[t] > a->kv.n_rows)
			return SPECD_INVAL;
		size_t seen = m->n_prefix[t];
		for (size_t u = 0; m->tree && u < a->n_tokens; u++) {
			if (!tree_bit(m, t, u))
				continue;
			if (m->slot[u] != m->slot[t] || m->row[u] >= a->kv.n_rows)
				return SPECD_INVAL;
			seen++;
		}
		if (seen == 0) /* a softmax over nothing */
			return SPECD_INVAL;
	}
	return SPECD_OK;
}

/* How many rows token t sees; row_at() below is the one place that fixes their order. */
static size_t visible_count(const struct kern_attn *a, size_t t)
{
	const struct kern_attn_mask *m = &a->mask;
	size_t n = m->n_prefix[t];
	for (size_t u = 0; m->tree && u < a->n_tokens; u++)
		n += tree_bit(m, t, u);
	return n;
}

/* The cache row of token t's i-th visible row; *cursor walks the tree bits so a full
 * scan in increasing i costs O(prefix + n_tokens). Start with *cursor = 0. */
static size_t row_at(const struct kern_attn *a, size_t t, size_t i, size_t *cursor)
{
	const struct kern_attn_mask *m = &a->mask;
	if (i < m->n_prefix[t])
		return i;
	while (!tree_bit(m, t, *cursor))
		(*cursor)++;
	return m->row[(*cursor)++];
}

/* One (token, head) pair: the max score, then the weights and the weighted sum, over
 * the token's visible rows in their fixed order. Depends on nothing but the pair, so
 * any split of pairs over threads gives the same bits. */
static void attend_one(const struct cpu_isa_kernels *k, const struct kern_attn *a, size_t t,
		       size_t h, float *acc)
{
	size_t hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
	size_t n_vis = visible_count(a, t);
	const float *kslot = a->kv.k + a->mask.slot[t] * a->kv.slot_stride;
	const float *vslot = a->kv.v + a->mask.slot[t] * a->kv.slot_stride;
	const float *q = a->q + t * a->ldq + h * hd;
	size_t koff = (h / group) * hd;

	float max = -INFINITY;
	size_t cur = 0;
	for (size_t i = 0; i < n_vis; i++) {
		size_t row = row_at(a, t, i, &cur);
		float s = k->dot(q, kslot + row * a->kv.row_stride + koff, hd) * a->scale;
		max = s > max ? s : max;
	}

	for (size_t d = 0; d < hd; d++)
		acc[d] = 0.0f;
	float sum = 0.0f;
	cur = 0;
	for (size_t i = 0; i < n_vis; i++) {
		size_t row = row_at(a, t, i, &cur);
		float s = k->dot(q, kslot + row * a->kv.row_stride + koff, hd) * a->scale;
		float p = expf(s - max);
		sum += p;
		k->axpy(acc, p, vslot + row * a->kv.row_stride + koff, hd);
	}

	float *o = a->out + t * a->ldo + h * hd;
	float inv = 1.0f / sum;
	for (size_t d = 0; d < hd; d++)
		o[d] = acc[d] * inv;
}

struct attn_share {
	const struct cpu_isa_kernels *k;
	const struct kern_attn *a;
};

/* Share `index` of n: a contiguous run of the (token, head) pairs. */
static void attn_share_run(void *arg, unsigned index, unsigned n)
{
	const struct attn_share *s = arg;
	const struct kern_attn *a = s->a;
	float acc[KERN_MAX_HEAD_DIM];
	size_t pairs = a->n_tokens * a->n_heads;
	size_t p1 = pairs * (index + 1) / n;
	for (size_t p = pairs * index / n; p < p1; p++)
		attend_one(s->k, a, p / a->n_heads, p % a->n_heads, acc);
}

enum specd_status cpu_attention(struct kern_ctx *ctx, const struct kern_attn *a)
{
	struct cpu_backend *be = cpu_backend_of(ctx);
	if (!a)
		return SPECD_INVAL;
	if (a->n_tokens == 0)
		return SPECD_OK;
	enum specd_status st = check_args(a);
	if (st != SPECD_OK)
		return st;
	struct attn_share share = {.k = be->k, .a = a};
	if (a->n_tokens * a->n_heads < 2)
		attn_share_run(&share, 0, 1);
	else
		cpu_pool_run(be->pool, attn_share_run, &share);
	return SPECD_OK;
}
