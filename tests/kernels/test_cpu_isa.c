/* kernels/cpu across instruction sets and thread counts: for every ISA this CPU runs
 * (scalar, AVX2, AVX-512) and 1 or 2 threads, a matmul row of every weight type (the
 * K-quants and Q5_x included) and an attention token are bitwise the same whatever the
 * number of rows and threads they are computed with (odd shapes, 1..16 rows and more);
 * each SIMD path dequantises to exactly the reference's weights and agrees with the
 * scalar reference within the rounding bound of a reordered sum; the thread pool runs
 * every share exactly once; the ops allocate nothing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/pool.h"
#include "kernels/kern.h"
#include "kern_test.h"

static const enum kern_dtype all_types[] = {KERN_F32,  KERN_F16,  KERN_BF16, KERN_Q8_0,
					    KERN_Q4_0, KERN_Q4_1, KERN_Q5_0, KERN_Q5_1,
					    KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))
static const char *const isa_names[] = {"scalar", "avx2", "avx512"};
#define N_ISAS 3

/* A backend for ISA index i and n threads, or NULL when this CPU lacks that ISA. */
static struct kern_ctx *make_ctx(int isa, unsigned threads)
{
	return ktest_cpu(isa_names[isa], threads, KERN_ACT_F32);
}

struct shape {
	size_t n_in, n_out;
};

/* Odd shapes: whole blocks for the quantised types (super-blocks of 256 for the
 * K-quants); for float types also lengths that end in a partial vector. 512 x 100 is
 * large enough for the pool to split one row. */
static const struct shape quant_shapes[] = {{32, 1}, {96, 13}, {160, 37}, {512, 100}};
static const struct shape kquant_shapes[] = {{256, 1}, {768, 13}, {1280, 37}, {512, 100}};
static const struct shape float_shapes[] = {{1, 3},   {7, 9},    {37, 13},
					    {45, 67}, {200, 33}, {512, 100}};
#define N_SHAPES(a) (sizeof(a) / sizeof((a)[0]))

static const struct shape *shapes_of(enum kern_dtype t, size_t *n)
{
	size_t block = kern_dtype_block(t);
	if (block == KERN_QK_K) {
		*n = N_SHAPES(kquant_shapes);
		return kquant_shapes;
	}
	if (block > 1) {
		*n = N_SHAPES(quant_shapes);
		return quant_shapes;
	}
	*n = N_SHAPES(float_shapes);
	return float_shapes;
}

#define MAX_ROWS 70

/* Row i of every n-row call (n = 1..16 and 70), with 1 and 2 threads, equals row i
 * computed alone on one thread. */
static void check_matmul_invariance(int isa, enum kern_dtype t, struct shape s)
{
	struct kern_ctx *one = make_ctx(isa, 1), *two = make_ctx(isa, 2);
	if (!one) {
		kern_destroy(two);
		return;
	}
	struct ktest_mat tm;
	size_t ldx = s.n_in + 5, ldy = s.n_out + 3;
	ktest_mat_make(&tm, t, s.n_in, s.n_out, kern_dtype_block(t) > 1 ? 0 : 2);
	float *x = ktest_rnd_array(MAX_ROWS * ldx), *bias = ktest_rnd_array(s.n_out);
	float *alone = malloc(MAX_ROWS * ldy * sizeof(float));
	float *y = malloc(MAX_ROWS * ldy * sizeof(float));
	assert_non_null(alone);
	assert_non_null(y);
	for (size_t r = 0; r < MAX_ROWS; r++)
		assert_int_equal(kern_matmul(one, alone + r * ldy, ldy, x + r * ldx, ldx, 1, &tm.m,
					     bias),
				 SPECD_OK);
	struct kern_ctx *ctxs[2] = {one, two};
	for (int c = 0; c < 2; c++) {
		for (size_t n = 1; n <= 17; n++) {
			size_t rows = n == 17 ? MAX_ROWS : n;
			memset(y, 0xff, MAX_ROWS * ldy * sizeof(float));
			assert_int_equal(kern_matmul(ctxs[c], y, ldy, x, ldx, rows, &tm.m, bias),
					 SPECD_OK);
			for (size_t r = 0; r < rows; r++) {
				if (memcmp(y + r * ldy, alone + r * ldy, s.n_out * sizeof(float)) != 0)
					fail_msg("%s %s %zux%zu: row %zu of %zu differs with %d threads",
						 isa_names[isa], kern_dtype_name(t), s.n_out, s.n_in,
						 r, rows, c + 1);
			}
		}
	}
	free(x);
	free(bias);
	free(alone);
	free(y);
	ktest_mat_free(&tm);
	kern_destroy(one);
	kern_destroy(two);
}

static void test_matmul__bitwise_invariant_over_rows_threads_types_isas(void **state)
{
	(void)state;
	for (int isa = 0; isa < N_ISAS; isa++) {
		for (size_t ti = 0; ti < N_TYPES; ti++) {
			size_t n;
			const struct shape *sh = shapes_of(all_types[ti], &n);
			for (size_t i = 0; i < n; i++)
				check_matmul_invariance(isa, all_types[ti], sh[i]);
		}
	}
}

/* The SIMD sums reorder the scalar's: both are within n_in * eps * sum|x w| of the exact
 * value (weights dequantised identically), so they are within twice that of each other. */
static void test_matmul__simd_matches_scalar_within_rounding(void **state)
{
	(void)state;
	struct kern_ctx *ref = make_ctx(0, 1);
	int tested = 0;
	for (int isa = 1; isa < N_ISAS; isa++) {
		struct kern_ctx *ctx = make_ctx(isa, 2);
		if (!ctx)
			continue;
		tested++;
		for (size_t ti = 0; ti < N_TYPES; ti++) {
			enum kern_dtype t = all_types[ti];
			size_t block = kern_dtype_block(t);
			size_t n_in = block == KERN_QK_K ? 768 : block > 1 ? 160 : 45;
			size_t n_out = 37, rows = 11;
			struct ktest_mat tm;
			ktest_mat_make(&tm, t, n_in, n_out, 0);
			float *x = ktest_rnd_array(rows * n_in), *bias = ktest_rnd_array(n_out);
			float *y = malloc(rows * n_out * sizeof(float));
			float *yr = malloc(rows * n_out * sizeof(float));
			assert_int_equal(kern_matmul(ctx, y, n_out, x, n_in, rows, &tm.m, bias), SPECD_OK);
			assert_int_equal(kern_matmul(ref, yr, n_out, x, n_in, rows, &tm.m, bias), SPECD_OK);
			bool any_diff = false;
			for (size_t r = 0; r < rows; r++) {
				for (size_t o = 0; o < n_out; o++) {
					double mag = fabs(bias[o]);
					for (size_t i = 0; i < n_in; i++)
						mag += fabs((double)x[r * n_in + i] * tm.deq[o * n_in + i]);
					double tol = 2.0 * (double)(n_in + 2) * 0x1p-24 * mag;
					float a = y[r * n_out + o], b = yr[r * n_out + o];
					assert_true(fabs((double)a - (double)b) <= tol);
					any_diff |= a != b;
				}
			}
			(void)any_diff; /* orders differ; equality is allowed, not required */
			free(x);
			free(bias);
			free(y);
			free(yr);
			ktest_mat_free(&tm);
		}
		kern_destroy(ctx);
	}
	kern_destroy(ref);
	if (!tested)
		skip();
}

/* Every ISA turns the weights into exactly the reference's floats: with one-hot
 * activation rows, y[r, o] is the single product 1 * w[o, r], so y is the transposed
 * dequantised matrix, equal bit for bit whatever the summation order. */
static void test_matmul__dequantises_exactly_as_reference(void **state)
{
	(void)state;
	for (int isa = 0; isa < N_ISAS; isa++) {
		struct kern_ctx *ctx = make_ctx(isa, 2);
		if (!ctx)
			continue;
		for (size_t ti = 0; ti < N_TYPES; ti++) {
			enum kern_dtype t = all_types[ti];
			size_t block = kern_dtype_block(t);
			size_t n_in = block == KERN_QK_K ? 512 : 64, n_out = 19;
			struct ktest_mat tm;
			ktest_mat_make(&tm, t, n_in, n_out, 0);
			float *x = calloc(n_in * n_in, sizeof(float));
			float *y = malloc(n_in * n_out * sizeof(float));
			assert_non_null(x);
			assert_non_null(y);
			for (size_t r = 0; r < n_in; r++)
				x[r * n_in + r] = 1.0f;
			assert_int_equal(kern_matmul(ctx, y, n_out, x, n_in, n_in, &tm.m, NULL),
					 SPECD_OK);
			for (size_t r = 0; r < n_in; r++) {
				for (size_t o = 0; o < n_out; o++) {
					if (y[r * n_out + o] != tm.deq[o * n_in + r])
						fail_msg("%s %s: weight (%zu, %zu) is %.9g, reference %.9g",
							 isa_names[isa], kern_dtype_name(t), o, r,
							 (double)y[r * n_out + o],
							 (double)tm.deq[o * n_in + r]);
				}
			}
			free(x);
			free(y);
			ktest_mat_free(&tm);
		}
		kern_destroy(ctx);
	}
}

/* ---- attention ---- */

struct test_cache {
	float *k, *v;
	size_t n_slots, n_rows, row_floats;
};

static void cache_make(struct test_cache *c, size_t n_slots, size_t n_rows, size_t n_kv,
		       size_t hd)
{
	c->n_slots = n_slots;
	c->n_rows = n_rows;
	c->row_floats = n_kv * hd;
	c->k = ktest_rnd_array(n_slots * n_rows * c->row_floats);
	c->v = ktest_rnd_array(n_slots * n_rows * c->row_floats);
}

static struct kern_kv_view cache_view(const struct test_cache *c)
{
	return (struct kern_kv_view){.k = c->k, .v = c->v, .slot_stride = c->n_rows * c->row_floats,
				     .row_stride = c->row_floats, .n_rows = c->n_rows};
}

/* Causal tokens of K+1 verification style (1..16 at once, several slots) and odd head
 * sizes: each token's output equals the token alone on one thread, bitwise, with 1 and
 * 2 threads; SIMD outputs are within rounding of the scalar's. */
static void test_attention__bitwise_invariant_and_close_to_scalar(void **state)
{
	(void)state;
	const size_t head_dims[] = {8, 20, 64, 72};
	struct kern_ctx *ref = make_ctx(0, 1);
	for (int isa = 0; isa < N_ISAS; isa++) {
		struct kern_ctx *one = make_ctx(isa, 1), *two = make_ctx(isa, 2);
		if (!one) {
			kern_destroy(two);
			continue;
		}
		for (size_t hi = 0; hi < sizeof(head_dims) / sizeof(head_dims[0]); hi++) {
			const size_t hd = head_dims[hi], n_heads = 6, n_kv = 2, ld = n_heads * hd;
			struct test_cache c;
			cache_make(&c, 3, 40, n_kv, hd);
			float *q = ktest_rnd_array(16 * ld), *alone = malloc(16 * ld * sizeof(float));
			float *all = malloc(16 * ld * sizeof(float)), *sc = malloc(16 * ld * sizeof(float));
			uint32_t slot[16], n_prefix[16];
			for (size_t t = 0; t < 16; t++) {
				slot[t] = (uint32_t)(t % 3);
				n_prefix[t] = (uint32_t)(1 + (t * 7) % 40);
			}
			struct kern_attn a = {.n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd,
					      .scale = 1.0f / sqrtf((float)hd), .ldq = ld, .ldo = ld,
					      .kv = cache_view(&c)};
			for (size_t t = 0; t < 16; t++) {
				a.n_tokens = 1;
				a.q = q + t * ld;
				a.out = alone + t * ld;
				a.mask = (struct kern_attn_mask){.slot = slot + t, .n_prefix = n_prefix + t};
				assert_int_equal(kern_attention(one, &a), SPECD_OK);
			}
			a.q = q;
			a.mask = (struct kern_attn_mask){.slot = slot, .n_prefix = n_prefix};
			for (size_t n = 1; n <= 16; n++) {
				a.n_tokens = n;
				a.out = all;
				assert_int_equal(kern_attention(one, &a), SPECD_OK);
				assert_memory_equal(all, alone, n * ld * sizeof(float));
				assert_int_equal(kern_attention(two, &a), SPECD_OK);
				assert_memory_equal(all, alone, n * ld * sizeof(float));
			}
			a.n_tokens = 16;
			a.out = sc;
			assert_int_equal(kern_attention(ref, &a), SPECD_OK);
			for (size_t i = 0; i < 16 * ld; i++) /* outputs are averages of |v| < 1 */
				assert_float_equal(sc[i], alone[i], 1e-5);
			free(q);
			free(alone);
			free(all);
			free(sc);
			free(c.k);
			free(c.v);
		}
		kern_destroy(one);
		kern_destroy(two);
	}
	kern_destroy(ref);
}

/* ---- the backend and its pool ---- */

static void test_create__isa_cap_and_names(void **state)
{
	(void)state;
	struct kern_cpu_config bad = {.n_threads = 2, .isa = "sse9"};
	struct kern_ctx *ctx = NULL;
	assert_int_equal(kern_cpu_create(&bad, &ctx), SPECD_INVAL);
	assert_null(ctx);
	struct kern_cpu_config scalar = {.n_threads = 3, .isa = "scalar"};
	assert_int_equal(kern_cpu_create(&scalar, &ctx), SPECD_OK);
	assert_string_equal(kern_cpu_isa_of(ctx), "scalar");
	kern_destroy(ctx);
	assert_int_equal(kern_cpu_create(NULL, &ctx), SPECD_OK);
	assert_string_equal(kern_cpu_isa_of(ctx), kern_isa_name(kern_cpu_isa()));
	kern_destroy(ctx);
	/* The AVX-512 path is chosen only where the CPU has it. */
	struct kern_cpu_config top = {.isa = "avx512"};
	assert_int_equal(kern_cpu_create(&top, &ctx), SPECD_OK);
	assert_string_equal(kern_cpu_isa_of(ctx), kern_isa_name(kern_cpu_isa()));
	assert_true(kern_cpu_isa() <= kern_cpu_isa_hw());
	kern_destroy(ctx);
}

struct pool_count {
	atomic_int hits[8];
	atomic_int bad;
};

static void count_share(void *arg, unsigned index, unsigned n)
{
	struct pool_count *c = arg;
	if (index >= n || n > 8)
		atomic_fetch_add(&c->bad, 1);
	else
		atomic_fetch_add(&c->hits[index], 1);
}

static void test_pool__runs_every_share_exactly_once(void **state)
{
	(void)state;
	const unsigned sizes[] = {0, 1, 2, 3, 5};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct cpu_pool *p = NULL;
		assert_int_equal(cpu_pool_create(sizes[s], &p), SPECD_OK);
		unsigned n = cpu_pool_size(p);
		assert_int_equal(n, sizes[s] ? sizes[s] : 1);
		struct pool_count c;
		memset(&c, 0, sizeof(c));
		for (int run = 0; run < 2000; run++)
			cpu_pool_run(p, count_share, &c);
		assert_int_equal(atomic_load(&c.bad), 0);
		for (unsigned i = 0; i < 8; i++)
			assert_int_equal(atomic_load(&c.hits[i]), i < n ? 2000 : 0);
		cpu_pool_destroy(p);
	}
	cpu_pool_destroy(NULL);
}

static void test_pool__create_failure_cleans_up(void **state)
{
	(void)state;
	for (long k = 1; k <= 3; k++) {
		struct cpu_pool *p = NULL;
		specd_alloc_fail_after(k);
		enum specd_status st = cpu_pool_create(4, &p);
		specd_alloc_fail_reset();
		if (st == SPECD_OK)
			cpu_pool_destroy(p);
		else
			assert_int_equal(st, SPECD_NOMEM);
	}
	struct kern_cpu_config cfg = {.n_threads = 2};
	for (long k = 1; k <= 3; k++) {
		struct kern_ctx *ctx = NULL;
		specd_alloc_fail_after(k);
		enum specd_status st = kern_cpu_create(&cfg, &ctx);
		specd_alloc_fail_reset();
		if (st == SPECD_OK)
			kern_destroy(ctx);
		else
			assert_null(ctx);
	}
}

static void test_ops__allocate_nothing_with_threads(void **state)
{
	(void)state;
	struct kern_ctx *ctx = NULL;
	struct kern_cpu_config cfg = {.n_threads = 2};
	assert_int_equal(kern_cpu_create(&cfg, &ctx), SPECD_OK);
	struct ktest_mat tm;
	ktest_mat_make(&tm, KERN_Q8_0, 512, 100, 0);
	float *x = ktest_rnd_array(9 * 512), *y = malloc(9 * 100 * sizeof(float));
	struct test_cache c;
	cache_make(&c, 1, 16, 2, 64);
	float *q = ktest_rnd_array(4 * 256), *out = malloc(4 * 256 * sizeof(float));
	uint32_t slot[4] = {0}, n_prefix[4] = {13, 14, 15, 16};
	struct kern_attn a = {.n_tokens = 4, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
			      .scale = 0.125f, .q = q, .ldq = 256, .out = out, .ldo = 256,
			      .kv = cache_view(&c), .mask = {.slot = slot, .n_prefix = n_prefix}};
	specd_alloc_fail_reset(); /* restarts the count */
	for (size_t n = 1; n <= 9; n++)
		assert_int_equal(kern_matmul(ctx, y, 100, x, 512, n, &tm.m, NULL), SPECD_OK);
	assert_int_equal(kern_attention(ctx, &a), SPECD_OK);
	assert_int_equal(specd_alloc_count(), 0);
	free(x);
	free(y);
	free(q);
	free(out);
	free(c.k);
	free(c.v);
	ktest_mat_free(&tm);
	kern_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul__bitwise_invariant_over_rows_threads_types_isas),
		cmocka_unit_test(test_matmul__simd_matches_scalar_within_rounding),
		cmocka_unit_test(test_matmul__dequantises_exactly_as_reference),
		cmocka_unit_test(test_attention__bitwise_invariant_and_close_to_scalar),
		cmocka_unit_test(test_create__isa_cap_and_names),
		cmocka_unit_test(test_pool__runs_every_share_exactly_once),
		cmocka_unit_test(test_pool__create_failure_cleans_up),
		cmocka_unit_test(test_ops__allocate_nothing_with_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
