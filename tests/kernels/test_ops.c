/* kernels/cpu ops: each against a naive double-precision reference, every weight
 * type of matmul on odd shapes and strides, the argument checks, and batch invariance
 * (row i of an n-row call is bitwise the row computed alone) of matmul and attention. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kern.h"
#include "kern_test.h"

static const enum kern_dtype all_types[] = {KERN_F32, KERN_F16, KERN_BF16,
					    KERN_Q8_0, KERN_Q4_0, KERN_Q4_1};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

static int setup_ctx(void **state)
{
	struct kern_ctx *ctx = NULL;
	if (kern_cpu_create(NULL, &ctx) != SPECD_OK)
		return -1;
	ktest_seed(0x9e3779b97f4a7c15ull);
	*state = ctx;
	return 0;
}

static int teardown_ctx(void **state)
{
	kern_destroy(*state);
	return 0;
}

/* A random n_out x n_in matrix of type t, each row padded to row_bytes >= packed size,
 * and the same weights dequantised to float (what the op must multiply by). */
static void test_matmul__matches_reference_for_every_type(void **state)
{
	struct kern_ctx *ctx = *state;
	for (size_t ti = 0; ti < N_TYPES; ti++) {
		enum kern_dtype t = all_types[ti];
		bool quant = kern_dtype_block(t) > 1;
		/* Odd shapes: an n_in that is no multiple of the float chunk where the type
		 * allows it, an odd n_out, padded rows and strided activations. */
		size_t n_in = quant ? 96 : 37, n_out = 13, rows = 5, ldx = n_in + 3, ldy = n_out + 2;
		struct ktest_mat tm;
		ktest_mat_make(&tm, t, n_in, n_out, quant ? kern_dtype_block_bytes(t) : 6);
		float *x = ktest_rnd_array(rows * ldx);
		float *bias = ktest_rnd_array(n_out);
		float *y = malloc(rows * ldy * sizeof(float));
		assert_int_equal(kern_matmul(ctx, y, ldy, x, ldx, rows, &tm.m, bias), SPECD_OK);
		for (size_t r = 0; r < rows; r++) {
			for (size_t o = 0; o < n_out; o++) {
				double ref = bias[o], mag = fabs(bias[o]);
				for (size_t i = 0; i < n_in; i++) {
					double p = (double)x[r * ldx + i] * tm.deq[o * n_in + i];
					ref += p;
					mag += fabs(p);
				}
				assert_true(fabs(y[r * ldy + o] - ref) <= 1e-6 * mag + 1e-7);
			}
		}
		/* Without a bias, the same products. */
		assert_int_equal(kern_matmul(ctx, y, ldy, x, ldx, rows, &tm.m, NULL), SPECD_OK);
		double ref = 0;
		for (size_t i = 0; i < n_in; i++)
			ref += (double)x[ldx + i] * tm.deq[2 * n_in + i];
		assert_true(fabs(y[ldy + 2] - ref) <= 1e-5);
		free(x);
		free(bias);
		free(y);
		ktest_mat_free(&tm);
	}
}

static void test_matmul__row_is_bitwise_independent_of_row_count(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n_in = 64, n_out = 7;
	/* 1..16 as the issue asks, and 70 to cross CPU_MATMUL_ROW_CHUNK. */
	const size_t counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 70};
	for (size_t ti = 0; ti < N_TYPES; ti++) {
		struct ktest_mat tm;
		ktest_mat_make(&tm, all_types[ti], n_in, n_out, 0);
		float *x = ktest_rnd_array(70 * n_in);
		float *alone = malloc(70 * n_out * sizeof(float));
		float *y = malloc(70 * n_out * sizeof(float));
		for (size_t r = 0; r < 70; r++)
			assert_int_equal(kern_matmul(ctx, alone + r * n_out, n_out, x + r * n_in,
						     n_in, 1, &tm.m, NULL),
					 SPECD_OK);
		for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
			size_t n = counts[c];
			assert_int_equal(kern_matmul(ctx, y, n_out, x, n_in, n, &tm.m, NULL), SPECD_OK);
			assert_memory_equal(y, alone, n * n_out * sizeof(float));
		}
		free(x);
		free(alone);
		free(y);
		ktest_mat_free(&tm);
	}
}

static void test_matmul__rejects_bad_shapes(void **state)
{
	struct kern_ctx *ctx = *state;
	float x[64] = {0}, y[4] = {0}, keep[4];
	unsigned char w[4 * 68] = {0};
	struct kern_mat m = kern_mat_packed(KERN_Q8_0, 33, 2, w); /* not whole blocks */
	memcpy(keep, y, sizeof(y));
	assert_int_equal(kern_matmul(ctx, y, 2, x, 64, 1, &m, NULL), SPECD_INVAL);
	m = kern_mat_packed(KERN_Q8_0, 64, 2, w);
	m.row_bytes = 10; /* shorter than a packed row */
	assert_int_equal(kern_matmul(ctx, y, 2, x, 64, 1, &m, NULL), SPECD_INVAL);
	m = kern_mat_packed(KERN_Q8_0, 64, 4, w);
	assert_int_equal(kern_matmul(ctx, y, 2, x, 64, 2, &m, NULL), SPECD_INVAL); /* ldy < n_out */
	assert_int_equal(kern_matmul(ctx, y, 4, x, 32, 1, &m, NULL), SPECD_INVAL); /* ldx < n_in */
	assert_memory_equal(y, keep, sizeof(y));
	assert_int_equal(kern_matmul(ctx, y, 4, x, 64, 1, &m, NULL), SPECD_OK);
}

static void test_get_rows__dequantises_chosen_rows(void **state)
{
	struct kern_ctx *ctx = *state;
	for (size_t ti = 0; ti < N_TYPES; ti++) {
		struct ktest_mat tm;
		ktest_mat_make(&tm, all_types[ti], 64, 9, 4);
		uint32_t ids[] = {8, 0, 3, 3};
		float y[4 * 70];
		assert_int_equal(kern_get_rows(ctx, y, 70, &tm.m, ids, 4), SPECD_OK);
		for (size_t r = 0; r < 4; r++)
			assert_memory_equal(y + r * 70, tm.deq + ids[r] * 64, 64 * sizeof(float));
		uint32_t bad[] = {1, 9};
		assert_int_equal(kern_get_rows(ctx, y, 70, &tm.m, bad, 2), SPECD_INVAL);
		ktest_mat_free(&tm);
	}
}

static void test_rmsnorm__matches_reference(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n = 45, rows = 3, ld = 50;
	float *x = ktest_rnd_array(rows * ld), *w = ktest_rnd_array(n);
	float y[3 * 50];
	assert_int_equal(kern_rmsnorm(ctx, y, ld, x, ld, rows, n, w, 1e-5f), SPECD_OK);
	for (size_t r = 0; r < rows; r++) {
		double ss = 0;
		for (size_t i = 0; i < n; i++)
			ss += (double)x[r * ld + i] * x[r * ld + i];
		double scale = 1.0 / sqrt(ss / n + 1e-5);
		for (size_t i = 0; i < n; i++)
			assert_float_equal(y[r * ld + i], x[r * ld + i] * scale * w[i], 1e-5);
	}
	/* In place gives the same. */
	float z[3 * 50];
	memcpy(z, x, sizeof(z));
	assert_int_equal(kern_rmsnorm(ctx, z, ld, z, ld, rows, n, w, 1e-5f), SPECD_OK);
	for (size_t r = 0; r < rows; r++)
		assert_memory_equal(z + r * ld, y + r * ld, n * sizeof(float));
	free(x);
	free(w);
}

/* add_rmsnorm is bitwise add then rmsnorm, into a separate y or over d itself; it
 * refuses a short stride, and y over d with another stride. */
static void test_add_rmsnorm__is_add_then_rmsnorm(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n = 45, rows = 3, ld = 50;
	float *x = ktest_rnd_array(rows * ld), *d = ktest_rnd_array(rows * ld), *w = ktest_rnd_array(n);
	float xa[3 * 50], ya[3 * 50], xb[3 * 50], yb[3 * 50], db[3 * 50];
	memcpy(xa, x, sizeof(xa));
	for (size_t r = 0; r < rows; r++)
		assert_int_equal(kern_add(ctx, xa + r * ld, d + r * ld, n), SPECD_OK);
	assert_int_equal(kern_rmsnorm(ctx, ya, ld, xa, ld, rows, n, w, 1e-5f), SPECD_OK);
	memcpy(xb, x, sizeof(xb));
	assert_int_equal(kern_add_rmsnorm(ctx, yb, ld, xb, ld, d, ld, rows, n, w, 1e-5f),
			 SPECD_OK);
	memcpy(db, d, sizeof(db));
	memcpy(xb, x, sizeof(xb));
	assert_int_equal(kern_add_rmsnorm(ctx, db, ld, xb, ld, db, ld, rows, n, w, 1e-5f),
			 SPECD_OK);
	for (size_t r = 0; r < rows; r++) {
		assert_memory_equal(xb + r * ld, xa + r * ld, n * sizeof(float));
		assert_memory_equal(yb + r * ld, ya + r * ld, n * sizeof(float));
		assert_memory_equal(db + r * ld, ya + r * ld, n * sizeof(float));
	}
	assert_int_equal(kern_add_rmsnorm(ctx, yb, ld, xb, ld, d, n - 1, rows, n, w, 1e-5f),
			 SPECD_INVAL);
	/* Over d with another stride, a row would overwrite what a later row reads. */
	assert_int_equal(kern_add_rmsnorm(ctx, db, n, xb, ld, db, ld, rows, n, w, 1e-5f),
			 SPECD_INVAL);
	free(x);
	free(d);
	free(w);
}

static void rope_reference(double *x, size_t n_heads, size_t hd, uint32_t pos, double base,
			   enum kern_rope_layout layout)
{
	for (size_t h = 0; h < n_heads; h++) {
		double *xh = x + h * hd;
		for (size_t j = 0; j < hd / 2; j++) {
			double th = pos * pow(base, -2.0 * j / hd);
			size_t a = layout == KERN_ROPE_ADJACENT ? 2 * j : j;
			size_t b = layout == KERN_ROPE_ADJACENT ? 2 * j + 1 : j + hd / 2;
			double u = xh[a], v = xh[b];
			xh[a] = u * cos(th) - v * sin(th);
			xh[b] = u * sin(th) + v * cos(th);
		}
	}
}

static void test_rope__both_layouts_match_reference(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n_heads = 3, hd = 10, rows = 4, ld = 32;
	const uint32_t pos[] = {0, 1, 17, 500};
	enum kern_rope_layout layouts[] = {KERN_ROPE_ADJACENT, KERN_ROPE_HALVES};
	for (int li = 0; li < 2; li++) {
		float *x = ktest_rnd_array(rows * ld);
		float orig[4 * 32];
		memcpy(orig, x, sizeof(orig));
		assert_int_equal(kern_rope(ctx, x, ld, rows, n_heads, hd, pos, 10000.0f,
					   layouts[li]),
				 SPECD_OK);
		for (size_t r = 0; r < rows; r++) {
			double ref[30];
			for (size_t i = 0; i < 30; i++)
				ref[i] = orig[r * ld + i];
			rope_reference(ref, n_heads, hd, pos[r], 10000.0, layouts[li]);
			for (size_t i = 0; i < 30; i++)
				assert_float_equal(x[r * ld + i], ref[i], 1e-5);
			/* Beyond the heads, the row is untouched. */
			assert_memory_equal(x + r * ld + 30, orig + r * ld + 30, 2 * sizeof(float));
		}
		assert_memory_equal(x, orig, 30 * sizeof(float)); /* position 0: identity */
		free(x);
	}
	/* The two layouts differ (on position > 0). */
	float a[10], b[10];
	for (int i = 0; i < 10; i++)
		a[i] = b[i] = (float)i + 1;
	uint32_t p = 3;
	kern_rope(ctx, a, 10, 1, 1, 10, &p, 10000.0f, KERN_ROPE_ADJACENT);
	kern_rope(ctx, b, 10, 1, 1, 10, &p, 10000.0f, KERN_ROPE_HALVES);
	assert_true(memcmp(a, b, sizeof(a)) != 0);
	assert_int_equal(kern_rope(ctx, a, 10, 1, 1, 9, &p, 10000.0f, KERN_ROPE_HALVES),
			 SPECD_INVAL); /* odd head size */
}

/* A cache of `slots` slots x `n_rows` rows of n_kv * hd floats, random. */
struct test_cache {
	float *k, *v;
	size_t n_kv, hd, n_rows, slots;
};

static void cache_make(struct test_cache *c, size_t slots, size_t n_rows, size_t n_kv,
		       size_t hd)
{
	*c = (struct test_cache){.n_kv = n_kv, .hd = hd, .n_rows = n_rows, .slots = slots};
	c->k = ktest_rnd_array(slots * n_rows * n_kv * hd);
	c->v = ktest_rnd_array(slots * n_rows * n_kv * hd);
}

static struct kern_kv_view cache_view(const struct test_cache *c)
{
	return (struct kern_kv_view){.k = c->k,
				     .v = c->v,
				     .slot_stride = c->n_rows * c->n_kv * c->hd,
				     .row_stride = c->n_kv * c->hd,
				     .n_rows = c->n_rows};
}

/* Attention of one query token over rows[0..n) of slot `slot`, in double. */
static void attn_reference(const struct test_cache *c, size_t slot, const float *q,
			   size_t n_heads, const size_t *rows, size_t n, double scale,
			   double *out)
{
	size_t hd = c->hd, group = n_heads / c->n_kv, rs = c->n_kv * hd;
	const float *k = c->k + slot * c->n_rows * rs, *v = c->v + slot * c->n_rows * rs;
	for (size_t h = 0; h < n_heads; h++) {
		double s[64], max = -INFINITY, sum = 0;
		for (size_t i = 0; i < n; i++) {
			s[i] = 0;
			for (size_t d = 0; d < hd; d++)
				s[i] += (double)q[h * hd + d] * k[rows[i] * rs + (h / group) * hd + d];
			s[i] *= scale;
			max = fmax(max, s[i]);
		}
		for (size_t i = 0; i < n; i++) {
			s[i] = exp(s[i] - max);
			sum += s[i];
		}
		for (size_t d = 0; d < hd; d++) {
			double o = 0;
			for (size_t i = 0; i < n; i++)
				o += s[i] / sum * v[rows[i] * rs + (h / group) * hd + d];
			out[h * hd + d] = o;
		}
	}
}

static void test_attention__causal_gqa_matches_reference(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n_heads = 4, n_kv = 2, hd = 8, n_tok = 6, ld = n_heads * hd;
	struct test_cache c;
	cache_make(&c, 2, 20, n_kv, hd);
	float *q = ktest_rnd_array(n_tok * ld);
	float out[6 * 32];
	uint32_t slot[] = {0, 0, 0, 1, 1, 0};
	uint32_t n_prefix[] = {1, 2, 3, 7, 8, 19}; /* causal: pos + 1 */
	struct kern_attn a = {
		.n_tokens = n_tok, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd), .q = q, .ldq = ld, .out = out, .ldo = ld,
		.kv = cache_view(&c), .mask = {.slot = slot, .n_prefix = n_prefix}};
	assert_int_equal(kern_attention(ctx, &a), SPECD_OK);
	for (size_t t = 0; t < n_tok; t++) {
		size_t rows[20];
		for (size_t i = 0; i < n_prefix[t]; i++)
			rows[i] = i;
		double ref[32];
		attn_reference(&c, slot[t], q + t * ld, n_heads, rows, n_prefix[t],
			       1.0 / sqrt((double)hd), ref);
		for (size_t i = 0; i < ld; i++)
			assert_float_equal(out[t * ld + i], ref[i], 1e-5);
	}
	free(q);
	free(c.k);
	free(c.v);
}

static void test_attention__row_is_bitwise_independent_of_row_count(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n_heads = 4, n_kv = 1, hd = 16, ld = n_heads * hd;
	struct test_cache c;
	cache_make(&c, 3, 40, n_kv, hd);
	float *q = ktest_rnd_array(16 * ld);
	float alone[16 * 64], all[16 * 64];
	uint32_t slot[16], n_prefix[16];
	for (size_t t = 0; t < 16; t++) {
		slot[t] = (uint32_t)(t % 3);
		n_prefix[t] = (uint32_t)(1 + (t * 7) % 40);
	}
	struct kern_attn a = {.n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd,
			      .scale = 0.25f, .ldq = ld, .ldo = ld, .kv = cache_view(&c)};
	for (size_t t = 0; t < 16; t++) {
		a.n_tokens = 1;
		a.q = q + t * ld;
		a.out = alone + t * ld;
		a.mask = (struct kern_attn_mask){.slot = slot + t, .n_prefix = n_prefix + t};
		assert_int_equal(kern_attention(ctx, &a), SPECD_OK);
	}
	for (size_t n = 1; n <= 16; n++) {
		a.n_tokens = n;
		a.q = q;
		a.out = all;
		a.mask = (struct kern_attn_mask){.slot = slot, .n_prefix = n_prefix};
		assert_int_equal(kern_attention(ctx, &a), SPECD_OK);
		assert_memory_equal(all, alone, n * ld * sizeof(float));
	}
	free(q);
	free(c.k);
	free(c.v);
}

/* A tree over a 3-row prefix: batch tokens 0 (root), 1 and 2 (children of 0), 3 (child
 * of 2), written to rows 3..6 of slot 0. Token 3 must equal the causal token that sees
 * the prefix, then rows of tokens 0, 2, 3 laid out contiguously (slot 1 holds that). */
static void test_attention__tree_mask_equals_causal_path(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n_heads = 2, n_kv = 2, hd = 8, ld = n_heads * hd, rs = n_kv * hd;
	struct test_cache c;
	cache_make(&c, 2, 8, n_kv, hd);
	float *k1 = c.k + 8 * rs, *v1 = c.v + 8 * rs;
	memcpy(k1, c.k, 3 * rs * sizeof(float)); /* same prefix */
	memcpy(v1, c.v, 3 * rs * sizeof(float));
	const size_t path[] = {3, 5, 6}; /* rows of tokens 0, 2, 3 in slot 0 */
	for (size_t i = 0; i < 3; i++) {
		memcpy(k1 + (3 + i) * rs, c.k + path[i] * rs, rs * sizeof(float));
		memcpy(v1 + (3 + i) * rs, c.v + path[i] * rs, rs * sizeof(float));
	}
	float *q = ktest_rnd_array(4 * ld);
	uint32_t slot[] = {0, 0, 0, 0}, n_prefix[] = {3, 3, 3, 3}, row[] = {3, 4, 5, 6};
	uint64_t tree[] = {0x1, 0x3, 0x5, 0xd}; /* ancestors and self */
	float out[4 * 16];
	struct kern_attn a = {.n_tokens = 4, .n_heads = n_heads, .n_kv_heads = n_kv,
			      .head_dim = hd, .scale = 0.3f, .q = q, .ldq = ld, .out = out,
			      .ldo = ld, .kv = cache_view(&c),
			      .mask = {.slot = slot, .n_prefix = n_prefix, .row = row,
				       .tree = tree, .tree_words = 1}};
	assert_int_equal(kern_attention(ctx, &a), SPECD_OK);

	/* Causal in slot 1 for the path's queries (tokens 0, 2, 3 at rows 3, 4, 5). */
	float qc[3 * 16], outc[3 * 16];
	memcpy(qc, q, ld * sizeof(float));
	memcpy(qc + ld, q + 2 * ld, 2 * ld * sizeof(float));
	uint32_t slot1[] = {1, 1, 1}, causal[] = {4, 5, 6};
	struct kern_attn b = a;
	b.n_tokens = 3;
	b.q = qc;
	b.out = outc;
	b.mask = (struct kern_attn_mask){.slot = slot1, .n_prefix = causal};
	assert_int_equal(kern_attention(ctx, &b), SPECD_OK);
	assert_memory_equal(out, outc, ld * sizeof(float));
	assert_memory_equal(out + 2 * ld, outc + ld, 2 * ld * sizeof(float));

	/* Token 1 (a sibling branch) sees prefix + rows 3, 4: check against the reference. */
	size_t rows1[] = {0, 1, 2, 3, 4};
	double ref[16];
	attn_reference(&c, 0, q + ld, n_heads, rows1, 5, 0.3, ref);
	for (size_t i = 0; i < ld; i++)
		assert_float_equal(out[ld + i], ref[i], 1e-5);

	/* A tree bit on a token of another slot is refused. */
	slot[1] = 1;
	assert_int_equal(kern_attention(ctx, &a), SPECD_INVAL);
	free(q);
	free(c.k);
	free(c.v);
}

static void test_attention__rejects_bad_arguments(void **state)
{
	struct kern_ctx *ctx = *state;
	struct test_cache c;
	cache_make(&c, 1, 4, 1, 8);
	float q[8] = {0}, out[8];
	uint32_t slot = 0, past = 5, none = 0;
	struct kern_attn a = {.n_tokens = 1, .n_heads = 1, .n_kv_heads = 1, .head_dim = 8,
			      .scale = 1, .q = q, .ldq = 8, .out = out, .ldo = 8,
			      .kv = cache_view(&c), .mask = {.slot = &slot, .n_prefix = &past}};
	assert_int_equal(kern_attention(ctx, &a), SPECD_INVAL); /* past the cache */
	a.mask.n_prefix = &none;
	assert_int_equal(kern_attention(ctx, &a), SPECD_INVAL); /* sees nothing */
	a.mask.n_prefix = &slot;
	slot = 0;
	uint32_t one = 1;
	a.mask.n_prefix = &one;
	a.head_dim = KERN_MAX_HEAD_DIM + 2;
	assert_int_equal(kern_attention(ctx, &a), SPECD_INVAL);
	a.head_dim = 8;
	a.n_heads = 3;
	a.n_kv_heads = 2; /* does not divide */
	assert_int_equal(kern_attention(ctx, &a), SPECD_INVAL);
	a.n_heads = a.n_kv_heads = 1;
	assert_int_equal(kern_attention(ctx, &a), SPECD_OK);
	free(c.k);
	free(c.v);
}

static void test_elementwise__silu_mul_add_copy(void **state)
{
	struct kern_ctx *ctx = *state;
	float g[7], u[7], y[7], x[7];
	for (int i = 0; i < 7; i++) {
		g[i] = (float)i - 3.5f;
		u[i] = 0.5f * (float)i;
		y[i] = (float)i;
		x[i] = 1.0f - (float)i;
	}
	float g0[7];
	memcpy(g0, g, sizeof(g));
	assert_int_equal(kern_silu_mul(ctx, g, u, 7), SPECD_OK);
	for (int i = 0; i < 7; i++)
		assert_float_equal(g[i], g0[i] / (1.0 + exp(-(double)g0[i])) * u[i], 1e-6);
	assert_int_equal(kern_add(ctx, y, x, 7), SPECD_OK);
	for (int i = 0; i < 7; i++)
		assert_float_equal(y[i], 1.0, 0);
	float dst[7] = {0};
	assert_int_equal(kern_copy(ctx, dst, g, sizeof(g)), SPECD_OK);
	assert_memory_equal(dst, g, sizeof(g));
	assert_int_equal(kern_sync(ctx), SPECD_OK);
	assert_string_equal(kern_name(ctx), "cpu");
}

/* set_rows scatters each source row (its first n floats) to its own destination row and
 * touches nothing else; bad arguments are refused with nothing written. */
static void test_set_rows__scatters_rows_and_nothing_else(void **state)
{
	struct kern_ctx *ctx = *state;
	enum { DROWS = 9, LD_DST = 6, LD_SRC = 7, N = 5, ROWS = 4 };
	float dst[DROWS * LD_DST], want[DROWS * LD_DST], src[ROWS * LD_SRC];
	for (int i = 0; i < DROWS * LD_DST; i++)
		dst[i] = want[i] = -1.0f - (float)i;
	for (int i = 0; i < ROWS * LD_SRC; i++)
		src[i] = (float)i * 0.5f;
	const uint32_t idx[ROWS] = {7, 0, 3, 8};
	for (int r = 0; r < ROWS; r++)
		memcpy(want + idx[r] * LD_DST, src + r * LD_SRC, N * sizeof(float));
	assert_int_equal(kern_set_rows(ctx, dst, LD_DST, idx, src, LD_SRC, ROWS, N), SPECD_OK);
	assert_memory_equal(dst, want, sizeof(dst));
	assert_int_equal(kern_set_rows(ctx, dst, 4, idx, src, LD_SRC, ROWS, N), SPECD_INVAL);
	assert_int_equal(kern_set_rows(ctx, dst, LD_DST, idx, src, 4, ROWS, N), SPECD_INVAL);
	assert_int_equal(kern_set_rows(ctx, dst, LD_DST, NULL, src, LD_SRC, ROWS, N), SPECD_INVAL);
	assert_int_equal(kern_set_rows(ctx, dst, LD_DST, idx, src, LD_SRC, 0, N), SPECD_OK);
	assert_memory_equal(dst, want, sizeof(dst));
}

static void test_softmax__rows_sum_to_one_and_match_reference(void **state)
{
	struct kern_ctx *ctx = *state;
	const size_t n = 11, ld = 13;
	float x[2 * 13];
	for (size_t i = 0; i < 2 * ld; i++)
		x[i] = 20.0f * ktest_rnd();
	float orig[2 * 13];
	memcpy(orig, x, sizeof(x));
	assert_int_equal(kern_softmax(ctx, x, ld, 2, n), SPECD_OK);
	for (size_t r = 0; r < 2; r++) {
		double sum = 0, max = -INFINITY;
		for (size_t i = 0; i < n; i++)
			max = fmax(max, orig[r * ld + i]);
		for (size_t i = 0; i < n; i++)
			sum += exp(orig[r * ld + i] - max);
		for (size_t i = 0; i < n; i++)
			assert_float_equal(x[r * ld + i], exp(orig[r * ld + i] - max) / sum, 1e-6);
		assert_float_equal(x[r * ld + 11], orig[r * ld + 11], 0); /* untouched */
	}
}

static void test_argmax__first_maximum_and_never_nan(void **state)
{
	struct kern_ctx *ctx = *state;
	float x[] = {1, 5, 2, 5, /* tie: first wins */
		     NAN, -3, -1, -2, /* NaN never wins */
		     -1, NAN, 0, NAN};
	uint32_t out[3];
	assert_int_equal(kern_argmax(ctx, out, x, 4, 3, 4), SPECD_OK);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 2);
	assert_int_equal(out[2], 2);
	assert_int_equal(kern_argmax(ctx, out, x, 4, 1, 0), SPECD_INVAL);
}

/* The rank of (x[a], a) against (x[b], b) in the top-k order: larger first, the
 * lower id among equals; a NaN after everything. */
static bool ranks_first(const float *x, uint32_t a, uint32_t b)
{
	if (isnan(x[a]) || isnan(x[b]))
		return !isnan(x[a]) && isnan(x[b]);
	return x[a] > x[b] || (x[a] == x[b] && a < b);
}

/* topk: the k best ids of each row against a full sort, with ties, NaNs, -inf and rows
 * with fewer values than k; vals are the logits, lse is log(sum(exp)) in double within
 * float rounding; a row alone gives what it gives in a batch. */
static void test_topk__best_ids_in_order_with_ties_and_nan(void **state)
{
	struct kern_ctx *ctx = *state;
	enum { N = 40, ROWS = 4, K = KERN_TOPK_MAX };
	float x[ROWS][N];
	for (uint32_t r = 0; r < ROWS; r++)
		for (uint32_t i = 0; i < N; i++)
			x[r][i] = (float)((i * 7 + r * 3) % 11) - 5.0f; /* many ties */
	x[1][3] = NAN, x[1][17] = NAN, x[1][0] = INFINITY;
	x[2][5] = -INFINITY;
	for (uint32_t i = 0; i < N; i++) /* row 3: NaN but for 5 values */
		x[3][i] = i % 8 == 1 ? (float)i : NAN;
	int32_t ids[ROWS][K], one[K];
	float vals[ROWS][K], lse[ROWS], lse1;
	struct kern_topk_rows t = {.rows = ROWS, .n = N, .x = &x[0][0], .ldx = N, .k = K,
				   .ids = &ids[0][0], .vals = &vals[0][0], .lse = lse};
	assert_int_equal(kern_topk(ctx, &t), SPECD_OK);
	for (uint32_t r = 0; r < ROWS; r++) {
		uint32_t order[N], non_nan = 0;
		for (uint32_t i = 0; i < N; i++) {
			order[i] = i;
			non_nan += !isnan(x[r][i]);
		}
		for (uint32_t a = 1; a < N; a++) { /* insertion sort by the order */
			for (uint32_t b = a; b > 0; b--) {
				if (!ranks_first(x[r], order[b], order[b - 1]))
					break;
				uint32_t tmp = order[b];
				order[b] = order[b - 1];
				order[b - 1] = tmp;
			}
		}
		for (uint32_t i = 0; i < K; i++) {
			int32_t want = i < non_nan ? (int32_t)order[i] : -1;
			assert_int_equal(ids[r][i], want);
			if (want >= 0)
				assert_memory_equal(&vals[r][i], &x[r][want], sizeof(float));
			else
				assert_true(vals[r][i] == -INFINITY);
		}
		double mx = -INFINITY, sum = 0;
		for (uint32_t i = 0; i < N; i++)
			mx = x[r][i] > mx ? x[r][i] : mx;
		for (uint32_t i = 0; i < N; i++)
			sum += exp((double)x[r][i] - mx);
		if (r == 1 || r == 3)
			assert_true(isnan(lse[r]));
		else
			assert_float_equal(lse[r], mx + log(sum), 1e-5);
		struct kern_topk_rows alone = {.rows = 1, .n = N, .x = x[r], .ldx = N, .k = K,
					       .ids = one, .lse = &lse1};
		assert_int_equal(kern_topk(ctx, &alone), SPECD_OK);
		assert_memory_equal(one, ids[r], sizeof(one));
		assert_memory_equal(&lse1, &lse[r], sizeof(float));
	}
	t.k = 0;
	assert_int_equal(kern_topk(ctx, &t), SPECD_INVAL);
	t.k = K + 1;
	assert_int_equal(kern_topk(ctx, &t), SPECD_INVAL);
	t.k = 2;
	t.ldx = N - 1;
	assert_int_equal(kern_topk(ctx, &t), SPECD_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_matmul__matches_reference_for_every_type,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(test_matmul__row_is_bitwise_independent_of_row_count,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(test_matmul__rejects_bad_shapes, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_get_rows__dequantises_chosen_rows, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_rmsnorm__matches_reference, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_add_rmsnorm__is_add_then_rmsnorm, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_rope__both_layouts_match_reference, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_attention__causal_gqa_matches_reference,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(
			test_attention__row_is_bitwise_independent_of_row_count, setup_ctx,
			teardown_ctx),
		cmocka_unit_test_setup_teardown(test_attention__tree_mask_equals_causal_path,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(test_attention__rejects_bad_arguments, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_elementwise__silu_mul_add_copy, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_set_rows__scatters_rows_and_nothing_else,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(test_softmax__rows_sum_to_one_and_match_reference,
						setup_ctx, teardown_ctx),
		cmocka_unit_test_setup_teardown(test_argmax__first_maximum_and_never_nan, setup_ctx,
						teardown_ctx),
		cmocka_unit_test_setup_teardown(test_topk__best_ids_in_order_with_ties_and_nan,
						setup_ctx, teardown_ctx),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
