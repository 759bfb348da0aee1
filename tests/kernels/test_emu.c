/* kernels/emu, the emulated device backend: every op through it gives bitwise the CPU
 * backend's result; a host pointer, a freed block or bytes past a block given to an op
 * are refused (SPECD_INVAL, logged, nothing written) and the host faults on a device
 * pointer; the window's allocator never overlaps blocks, reuses and zeroes what was
 * freed and says NOMEM past its end; and generated models load onto it and give
 * bitwise the CPU backend's logits for causal, multi-slot and tree batches. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels/kern.h"
#include "kernels/sample.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/shard.h"
#include "test_support.h"

#define MIB ((size_t)1 << 20)

static uint64_t g_rng;

static uint64_t rnd64(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static float rnd(void) /* uniform in [-1, 1) */
{
	return (float)((double)(rnd64() >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static float *rnd_floats(size_t n)
{
	float *a = malloc(n * sizeof(float));
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = rnd();
	return a;
}

/* A CPU backend and an emulated one over the same (default) CPU configuration. */
struct pair {
	struct kern_ctx *cpu, *emu;
};

static int setup_pair(void **state)
{
	static struct pair p;
	struct kern_emu_config ec = {.window_bytes = 256 * MIB};
	memset(&p, 0, sizeof(p));
	if (kern_cpu_create(NULL, &p.cpu) != SPECD_OK || kern_emu_create(&ec, &p.emu) != SPECD_OK)
		return -1;
	g_rng = 0x9e3779b97f4a7c15ull;
	*state = &p;
	return 0;
}

static int teardown_pair(void **state)
{
	struct pair *p = *state;
	kern_destroy(p->emu);
	kern_destroy(p->cpu);
	return 0;
}

/* bytes of the emulated device, holding `host` when not NULL. */
static void *dev(struct kern_ctx *e, const void *host, size_t bytes)
{
	void *d = NULL;
	assert_int_equal(kern_alloc(e, bytes, &d), SPECD_OK);
	if (host)
		assert_int_equal(kern_upload(e, d, host, bytes), SPECD_OK);
	return d;
}

/* The device's bytes at d equal `want`. */
static void expect_dev(struct kern_ctx *e, const void *d, const void *want, size_t bytes)
{
	void *h = malloc(bytes);
	assert_non_null(h);
	assert_int_equal(kern_download(e, h, d, bytes), SPECD_OK);
	assert_memory_equal(h, want, bytes);
	free(h);
}

static void dev_free(struct kern_ctx *e, const void *d)
{
	kern_free(e, (void *)(uintptr_t)d);
}

/* A random n_out x n_in matrix of type t whose rows are `pad` bytes longer than packed
 * (upload_mat packs them). */
static struct kern_mat rnd_mat(enum kern_dtype t, size_t n_in, size_t n_out, size_t pad)
{
	size_t rb = kern_dtype_row_bytes(t, n_in) + pad;
	unsigned char *bytes = calloc(n_out, rb);
	assert_non_null(bytes);
	float *row = rnd_floats(n_in);
	for (size_t o = 0; o < n_out; o++) {
		for (size_t i = 0; i < n_in; i++)
			row[i] = rnd();
		kern_quant_row(t, row, bytes + o * rb, n_in);
	}
	free(row);
	return (struct kern_mat){.type = t, .n_in = n_in, .n_out = n_out, .row_bytes = rb,
				 .data = bytes};
}

static void test_emu__is_a_device_backend(void **state)
{
	struct pair *p = *state;
	assert_string_equal(kern_name(p->emu), "emu");
	assert_false(kern_host_memory(p->emu));
	assert_null(kern_cpu_isa_of(p->emu));
	struct kern_emu_config bad = {.cpu = {.isa = "sse9"}};
	struct kern_ctx *e = NULL;
	assert_int_equal(kern_emu_create(&bad, &e), SPECD_INVAL);
	assert_null(e); /* not written on failure */
}

/* f32, f16, bf16, q8_0 and q4_k weights (padded rows, packed by upload_mat), 1 and 5
 * rows, strided x and y, with and without a bias; y's padding columns untouched. */
static void test_emu_matmul__bitwise_cpu_every_type_and_row_count(void **state)
{
	struct pair *p = *state;
	const enum kern_dtype types[] = {KERN_F32, KERN_F16, KERN_BF16, KERN_Q8_0, KERN_Q4_K};
	const size_t n_in = 512, n_out = 37, ldx = n_in + 3, ldy = n_out + 2;
	const size_t row_counts[] = {1, 5};
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		struct kern_mat w = rnd_mat(types[ti], n_in, n_out, 32), dw;
		assert_int_equal(kern_upload_mat(p->emu, &w, &dw), SPECD_OK);
		assert_int_equal(dw.type, types[ti]);
		assert_int_equal(dw.row_bytes, kern_dtype_row_bytes(types[ti], n_in));
		float *bias = rnd_floats(n_out);
		float *db = dev(p->emu, bias, n_out * sizeof(float));
		for (size_t ri = 0; ri < 2; ri++) {
			size_t rows = row_counts[ri], ybytes = rows * ldy * sizeof(float);
			float *x = rnd_floats(rows * ldx);
			float *dx = dev(p->emu, x, rows * ldx * sizeof(float));
			for (int with_bias = 0; with_bias < 2; with_bias++) {
				float *y = malloc(ybytes);
				assert_non_null(y);
				for (size_t i = 0; i < rows * ldy; i++)
					y[i] = 7.0f;
				float *dy = dev(p->emu, y, ybytes);
				assert_int_equal(kern_matmul(p->cpu, y, ldy, x, ldx, rows, &w,
							     with_bias ? bias : NULL), SPECD_OK);
				assert_int_equal(kern_matmul(p->emu, dy, ldy, dx, ldx, rows, &dw,
							     with_bias ? db : NULL), SPECD_OK);
				expect_dev(p->emu, dy, y, ybytes);
				dev_free(p->emu, dy);
				free(y);
			}
			dev_free(p->emu, dx);
			free(x);
		}
		dev_free(p->emu, db);
		dev_free(p->emu, dw.data);
		free(bias);
		free((void *)(uintptr_t)w.data);
	}
}

static void test_emu_get_rows__bitwise_cpu(void **state)
{
	struct pair *p = *state;
	const enum kern_dtype types[] = {KERN_F16, KERN_Q4_K};
	const size_t n_in = 256, n_out = 50, rows = 4, ldy = n_in + 1;
	const uint32_t ids[4] = {49, 0, 17, 17};
	for (size_t ti = 0; ti < 2; ti++) {
		struct kern_mat w = rnd_mat(types[ti], n_in, n_out, 0), dw;
		assert_int_equal(kern_upload_mat(p->emu, &w, &dw), SPECD_OK);
		float *y = calloc(rows * ldy, sizeof(float));
		assert_non_null(y);
		float *dy = dev(p->emu, NULL, rows * ldy * sizeof(float));
		assert_int_equal(kern_get_rows(p->cpu, y, ldy, &w, ids, rows), SPECD_OK);
		assert_int_equal(kern_get_rows(p->emu, dy, ldy, &dw, ids, rows), SPECD_OK);
		expect_dev(p->emu, dy, y, rows * ldy * sizeof(float));
		dev_free(p->emu, dy);
		dev_free(p->emu, dw.data);
		free(y);
		free((void *)(uintptr_t)w.data);
	}
}

/* Into another buffer and in place. */
static void test_emu_rmsnorm__bitwise_cpu(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 3, N = 67, LD = 70 };
	size_t bytes = ROWS * LD * sizeof(float);
	float *x = rnd_floats(ROWS * LD), *w = rnd_floats(N), *y = calloc(ROWS * LD, 4);
	assert_non_null(y);
	float *dx = dev(p->emu, x, bytes), *dw = dev(p->emu, w, N * sizeof(float));
	float *dy = dev(p->emu, NULL, bytes);
	assert_int_equal(kern_rmsnorm(p->cpu, y, LD, x, LD, ROWS, N, w, 1e-5f), SPECD_OK);
	assert_int_equal(kern_rmsnorm(p->emu, dy, LD, dx, LD, ROWS, N, dw, 1e-5f), SPECD_OK);
	expect_dev(p->emu, dy, y, bytes);
	assert_int_equal(kern_rmsnorm(p->cpu, x, LD, x, LD, ROWS, N, w, 1e-6f), SPECD_OK);
	assert_int_equal(kern_rmsnorm(p->emu, dx, LD, dx, LD, ROWS, N, dw, 1e-6f), SPECD_OK);
	expect_dev(p->emu, dx, x, bytes);
	dev_free(p->emu, dx), dev_free(p->emu, dw), dev_free(p->emu, dy);
	free(x), free(w), free(y);
}

static void test_emu_add_rmsnorm__bitwise_cpu(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 3, N = 67, LD = 70 };
	size_t bytes = ROWS * LD * sizeof(float);
	float *x = rnd_floats(ROWS * LD), *d = rnd_floats(ROWS * LD), *w = rnd_floats(N);
	float *dx = dev(p->emu, x, bytes), *dd = dev(p->emu, d, bytes);
	float *dw = dev(p->emu, w, N * sizeof(float));
	/* y over d, as the forward calls it */
	assert_int_equal(kern_add_rmsnorm(p->cpu, d, LD, x, LD, d, LD, ROWS, N, w, 1e-5f),
			 SPECD_OK);
	assert_int_equal(kern_add_rmsnorm(p->emu, dd, LD, dx, LD, dd, LD, ROWS, N, dw, 1e-5f),
			 SPECD_OK);
	expect_dev(p->emu, dx, x, bytes);
	expect_dev(p->emu, dd, d, bytes);
	dev_free(p->emu, dx), dev_free(p->emu, dd), dev_free(p->emu, dw);
	free(x), free(d), free(w);
}

static void test_emu_rope__bitwise_cpu_both_layouts(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 3, HEADS = 4, HD = 16, LD = HEADS * HD + 6 };
	const uint32_t pos[ROWS] = {0, 5, 1000};
	const enum kern_rope_layout layouts[] = {KERN_ROPE_ADJACENT, KERN_ROPE_HALVES};
	for (int li = 0; li < 2; li++) {
		float *x = rnd_floats(ROWS * LD);
		float *dx = dev(p->emu, x, ROWS * LD * sizeof(float));
		assert_int_equal(kern_rope(p->cpu, x, LD, ROWS, HEADS, HD, pos, 10000.0f,
					   layouts[li]), SPECD_OK);
		assert_int_equal(kern_rope(p->emu, dx, LD, ROWS, HEADS, HD, pos, 10000.0f,
					   layouts[li]), SPECD_OK);
		expect_dev(p->emu, dx, x, ROWS * LD * sizeof(float));
		dev_free(p->emu, dx);
		free(x);
	}
}

/* Causal tokens of two slots, then a tree over 10 committed rows of slot 1 (0 the
 * root; 1, 2 its children; 3 a child of 1); q and out strided. */
static void test_emu_attention__bitwise_cpu_causal_and_tree(void **state)
{
	struct pair *p = *state;
	enum { CTX = 32, HD = 32, HEADS = 4, KVH = 2, NT = 4, LDQ = HEADS * HD + 4 };
	size_t row = KVH * HD, cache = 2 * CTX * row, qbytes = NT * LDQ * sizeof(float);
	float *k = rnd_floats(cache), *v = rnd_floats(cache), *q = rnd_floats(NT * LDQ);
	float *dk = dev(p->emu, k, cache * sizeof(float)), *dv = dev(p->emu, v, cache * 4);
	float *dq = dev(p->emu, q, qbytes);
	uint32_t c_slot[NT] = {0, 1, 0, 1}, c_pre[NT] = {5, 9, 6, 10};
	uint32_t t_slot[NT] = {1, 1, 1, 1}, t_pre[NT] = {10, 10, 10, 10};
	uint32_t t_row[NT] = {10, 11, 12, 13};
	uint64_t bits[NT] = {0x1, 0x3, 0x5, 0xb};
	const struct kern_attn_mask masks[2] = {
		{.slot = c_slot, .n_prefix = c_pre},
		{.slot = t_slot, .n_prefix = t_pre, .row = t_row, .tree = bits, .tree_words = 1},
	};
	for (int mi = 0; mi < 2; mi++) {
		float *out = calloc(NT * LDQ, sizeof(float));
		assert_non_null(out);
		float *dout = dev(p->emu, NULL, qbytes);
		struct kern_attn a = {
			.n_tokens = NT, .n_heads = HEADS, .n_kv_heads = KVH, .head_dim = HD,
			.scale = 0.17f, .q = q, .ldq = LDQ, .out = out, .ldo = LDQ,
			.kv = {.k = k, .v = v, .slot_stride = CTX * row, .row_stride = row,
			       .n_rows = CTX},
			.mask = masks[mi],
		};
		struct kern_attn d = a;
		d.q = dq, d.out = dout, d.kv.k = dk, d.kv.v = dv;
		assert_int_equal(kern_attention(p->cpu, &a), SPECD_OK);
		assert_int_equal(kern_attention(p->emu, &d), SPECD_OK);
		expect_dev(p->emu, dout, out, qbytes);
		dev_free(p->emu, dout);
		free(out);
	}
	dev_free(p->emu, dk), dev_free(p->emu, dv), dev_free(p->emu, dq);
	free(k), free(v), free(q);
}

static void test_emu_elementwise__silu_mul_add_softmax_bitwise_cpu(void **state)
{
	struct pair *p = *state;
	enum { N = 1000, ROWS = 3, M = 301, LD = 305 };
	float *g = rnd_floats(N), *u = rnd_floats(N), *s = rnd_floats(ROWS * LD);
	float *dg = dev(p->emu, g, N * 4), *du = dev(p->emu, u, N * 4);
	float *ds = dev(p->emu, s, ROWS * LD * 4);
	assert_int_equal(kern_silu_mul(p->cpu, g, u, N), SPECD_OK);
	assert_int_equal(kern_silu_mul(p->emu, dg, du, N), SPECD_OK);
	expect_dev(p->emu, dg, g, N * 4);
	assert_int_equal(kern_add(p->cpu, u, g, N), SPECD_OK);
	assert_int_equal(kern_add(p->emu, du, dg, N), SPECD_OK);
	expect_dev(p->emu, du, u, N * 4);
	assert_int_equal(kern_softmax(p->cpu, s, LD, ROWS, M), SPECD_OK);
	assert_int_equal(kern_softmax(p->emu, ds, LD, ROWS, M), SPECD_OK);
	expect_dev(p->emu, ds, s, ROWS * LD * 4);
	dev_free(p->emu, dg), dev_free(p->emu, du), dev_free(p->emu, ds);
	free(g), free(u), free(s);
}

static void test_emu_argmax__bitwise_cpu_ties_and_nan(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 4, N = 300, LD = 303 };
	float *x = rnd_floats(ROWS * LD);
	x[0 * LD + 10] = 5.0f, x[0 * LD + 20] = 5.0f;  /* a tie: the lower id */
	x[1 * LD + 0] = NAN, x[1 * LD + 299] = 9.0f;   /* a NaN never wins */
	for (size_t i = 0; i < N; i++)
		x[2 * LD + i] = NAN;
	uint32_t c[ROWS], e[ROWS];
	memset(e, 0xff, sizeof(e));
	float *dx = dev(p->emu, x, ROWS * LD * sizeof(float));
	assert_int_equal(kern_argmax(p->cpu, c, x, LD, ROWS, N), SPECD_OK);
	assert_int_equal(kern_argmax(p->emu, e, dx, LD, ROWS, N), SPECD_OK);
	assert_memory_equal(c, e, sizeof(c));
	assert_int_equal(e[0], 10);
	assert_int_equal(e[1], 299);
	dev_free(p->emu, dx);
	free(x);
}

/* topk on device rows: ids, vals and lse bitwise the CPU's (ties, a NaN, a row of
 * NaNs); a host pointer is refused. */
static void test_emu_topk__bitwise_cpu(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 3, N = 300, LD = 301, K = 7 };
	float *x = rnd_floats(ROWS * LD);
	x[0 * LD + 10] = 5.0f, x[0 * LD + 20] = 5.0f;
	x[1 * LD + 0] = NAN;
	for (size_t i = 0; i < N; i++)
		x[2 * LD + i] = NAN;
	int32_t ic[ROWS * K], ie[ROWS * K];
	float vc[ROWS * K], ve[ROWS * K], lc[ROWS], le[ROWS];
	float *dx = dev(p->emu, x, ROWS * LD * sizeof(float));
	struct kern_topk_rows t = {.rows = ROWS, .n = N, .x = x, .ldx = LD, .k = K, .ids = ic,
				   .vals = vc, .lse = lc};
	assert_int_equal(kern_topk(p->cpu, &t), SPECD_OK);
	t = (struct kern_topk_rows){.rows = ROWS, .n = N, .x = dx, .ldx = LD, .k = K, .ids = ie,
				    .vals = ve, .lse = le};
	assert_int_equal(kern_topk(p->emu, &t), SPECD_OK);
	assert_memory_equal(ic, ie, sizeof(ic));
	assert_memory_equal(vc, ve, sizeof(vc));
	assert_memory_equal(lc, le, sizeof(lc));
	assert_int_equal(ie[0], 10);
	assert_int_equal(ie[1], 20);
	assert_int_equal(ie[2 * K], -1);
	t.x = x;
	ts_log_capture_begin();
	assert_int_equal(kern_topk(p->emu, &t), SPECD_INVAL);
	ts_log_capture_end();
	dev_free(p->emu, dx);
	free(x);
}

/* Greedy without work, then temperature + top-k + top-p + min-p with a probe, its
 * probability and the residual draw: tokens and probe_p bitwise the CPU's. */
static void test_emu_sample__bitwise_cpu_greedy_and_top_p_with_probe(void **state)
{
	struct pair *p = *state;
	enum { ROWS = 5, N = 301, LD = 304 };
	float *x = rnd_floats(ROWS * LD);
	for (size_t i = 0; i < ROWS * LD; i++)
		x[i] *= 6.0f;
	float *dx = dev(p->emu, x, ROWS * LD * sizeof(float));
	size_t wb = kern_sample_work_bytes(ROWS, N);
	void *work = malloc(wb), *dwork = dev(p->emu, NULL, wb);
	assert_non_null(work);
	float u[ROWS];
	uint32_t probe[ROWS];
	for (size_t r = 0; r < ROWS; r++) {
		u[r] = (float)(rnd64() >> 40) * 0x1p-24f;
		probe[r] = r == 3 ? UINT32_MAX : (uint32_t)(rnd64() % N);
	}
	const struct kern_sample_params params[3] = {
		{.temperature = 0.0f, .top_p = 1.0f},
		{.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.01f},
		{.temperature = 1.3f, .top_p = 0.7f},
	};
	for (int pi = 0; pi < 3; pi++) {
		for (int excl = 0; excl < 2; excl++) {
			bool greedy = pi == 0;
			uint32_t oc[ROWS], oe[ROWS];
			float pc[ROWS], pe[ROWS];
			memset(oe, 0xff, sizeof(oe));
			memset(pe, 0xff, sizeof(pe));
			struct kern_sample_rows c = {
				.rows = ROWS, .n = N, .x = x, .ldx = LD, .params = params[pi],
				.u = greedy ? NULL : u, .probe = probe, .exclude_probe = excl,
				.work = greedy ? NULL : work, .out = oc, .probe_p = pc,
			};
			struct kern_sample_rows e = c;
			e.x = dx, e.work = greedy ? NULL : dwork, e.out = oe, e.probe_p = pe;
			assert_int_equal(kern_sample(p->cpu, &c), SPECD_OK);
			assert_int_equal(kern_sample(p->emu, &e), SPECD_OK);
			assert_memory_equal(oc, oe, sizeof(oc));
			assert_memory_equal(pc, pe, sizeof(pc));
		}
	}
	dev_free(p->emu, dx), dev_free(p->emu, dwork);
	free(x), free(work);
}

/* Disjoint copies inside device memory, as the CPU's; overlapping ones refused. */
static void test_emu_copy__bitwise_cpu(void **state)
{
	struct pair *p = *state;
	enum { N = 4096 };
	float *a = rnd_floats(N), *b = rnd_floats(N);
	float *da = dev(p->emu, a, N * 4), *db = dev(p->emu, b, N * 4);
	assert_int_equal(kern_copy(p->cpu, b + 100, a + 7, 1000 * 4), SPECD_OK);
	assert_int_equal(kern_copy(p->emu, db + 100, da + 7, 1000 * 4), SPECD_OK);
	assert_int_equal(kern_copy(p->cpu, a + 3000, a, 1000 * 4), SPECD_OK);
	assert_int_equal(kern_copy(p->emu, da + 3000, da, 1000 * 4), SPECD_OK);
	/* Overlapping ranges are refused, as the CUDA backend's copy needs them apart. */
	ts_log_capture_begin();
	assert_int_equal(kern_copy(p->emu, da + 3, da, 2000 * 4), SPECD_INVAL);
	assert_int_equal(kern_copy(p->emu, da, da + 5, 2000 * 4), SPECD_INVAL);
	assert_non_null(strstr(ts_log_captured(), "emu: copy: dst and src overlap"));
	ts_log_capture_end();
	expect_dev(p->emu, da, a, N * 4);
	expect_dev(p->emu, db, b, N * 4);
	dev_free(p->emu, da), dev_free(p->emu, db);
	free(a), free(b);
}

/* The cache scatter as the CPU's; a row written twice, src over dst and a host dst are
 * refused with nothing written. */
static void test_emu_set_rows__bitwise_cpu_and_refusals(void **state)
{
	struct pair *p = *state;
	enum { DROWS = 40, LD = 24, N = 20, ROWS = 6 };
	float *d = rnd_floats(DROWS * LD), *s = rnd_floats(ROWS * LD);
	float *dd = dev(p->emu, d, DROWS * LD * 4), *ds = dev(p->emu, s, ROWS * LD * 4);
	const uint32_t idx[ROWS] = {39, 2, 17, 0, 25, 3}, dup[ROWS] = {1, 2, 3, 4, 2, 5};
	assert_int_equal(kern_set_rows(p->cpu, d, LD, idx, s, LD, ROWS, N), SPECD_OK);
	assert_int_equal(kern_set_rows(p->emu, dd, LD, idx, ds, LD, ROWS, N), SPECD_OK);
	expect_dev(p->emu, dd, d, DROWS * LD * 4);
	ts_log_capture_begin();
	assert_int_equal(kern_set_rows(p->emu, dd, LD, dup, ds, LD, ROWS, N), SPECD_INVAL);
	assert_non_null(strstr(ts_log_captured(), "emu: set_rows: row 2 is written twice"));
	assert_int_equal(kern_set_rows(p->emu, dd, LD, idx, dd + 5 * LD, LD, ROWS, N),
			 SPECD_INVAL);
	assert_non_null(strstr(ts_log_captured(), "emu: set_rows: src overlaps dst"));
	assert_int_equal(kern_set_rows(p->emu, d, LD, idx, ds, LD, ROWS, N), SPECD_INVAL);
	assert_non_null(strstr(ts_log_captured(), "emu: set_rows: dst is not device memory"));
	const uint32_t past[1] = {DROWS};
	assert_int_equal(kern_set_rows(p->emu, dd, LD, past, ds, LD, 1, N), SPECD_INVAL);
	assert_non_null(strstr(ts_log_captured(), "runs past its block"));
	ts_log_capture_end();
	expect_dev(p->emu, dd, d, DROWS * LD * 4);
	dev_free(p->emu, dd), dev_free(p->emu, ds);
	free(d), free(s);
}

/* The op returns SPECD_INVAL and logs `msg`. */
static void expect_refused(enum specd_status st, const char *msg)
{
	assert_int_equal(st, SPECD_INVAL);
	if (!strstr(ts_log_captured(), msg))
		fail_msg("expected \"%s\" in the log, got: %s", msg, ts_log_captured());
	ts_log_capture_begin(); /* a fresh capture for the next one */
}

/* Host memory where device memory belongs, and bytes past a block: refused, logged,
 * and the output (device or host) unchanged. */
static void test_emu_ops__host_pointer_or_overrun_refused_output_unchanged(void **state)
{
	struct pair *p = *state;
	enum { N_IN = 64, N_OUT = 8, ROWS = 2 };
	struct kern_mat w = rnd_mat(KERN_F32, N_IN, N_OUT, 0), dw;
	assert_int_equal(kern_upload_mat(p->emu, &w, &dw), SPECD_OK);
	float *x = rnd_floats(ROWS * N_IN), y0[ROWS * N_OUT], host[ROWS * N_OUT];
	for (size_t i = 0; i < ROWS * N_OUT; i++)
		y0[i] = (float)i;
	memcpy(host, y0, sizeof(host));
	float *dx = dev(p->emu, x, ROWS * N_IN * sizeof(float));
	float *dy = dev(p->emu, y0, sizeof(y0));
	ts_log_capture_begin();

	expect_refused(kern_matmul(p->emu, dy, N_OUT, x, N_IN, ROWS, &w, NULL),
		       "emu: matmul: x is not device memory");
	expect_dev(p->emu, dy, y0, sizeof(y0));
	expect_refused(kern_matmul(p->emu, dy, N_OUT, dx, N_IN, ROWS, &w, NULL),
		       "emu: matmul: w is not device memory");
	expect_refused(kern_matmul(p->emu, dy, N_OUT, dx, N_IN, ROWS, &dw, x),
		       "emu: matmul: bias is not device memory");
	expect_refused(kern_matmul(p->emu, host, N_OUT, dx, N_IN, ROWS, &dw, NULL),
		       "emu: matmul: y is not device memory");
	assert_memory_equal(host, y0, sizeof(y0));
	/* One row more than y holds (x has it). */
	float *dx3 = dev(p->emu, NULL, (ROWS + 1) * N_IN * sizeof(float));
	expect_refused(kern_matmul(p->emu, dy, N_OUT, dx3, N_IN, ROWS + 1, &dw, NULL),
		       "emu: matmul: y");
	expect_dev(p->emu, dy, y0, sizeof(y0));
	dev_free(p->emu, dx3);

	expect_refused(kern_copy(p->emu, host, dy, sizeof(host)),
		       "emu: copy: dst is not device memory");
	expect_refused(kern_copy(p->emu, dy, host, sizeof(host)),
		       "emu: copy: src is not device memory");
	expect_refused(kern_copy(p->emu, dy + 1, dx, sizeof(y0)), "emu: copy: dst");
	assert_memory_equal(host, y0, sizeof(y0));
	expect_dev(p->emu, dy, y0, sizeof(y0));

	float got[ROWS * N_OUT];
	memcpy(got, y0, sizeof(got));
	expect_refused(kern_download(p->emu, got, host, sizeof(got)),
		       "emu: download: src is not device memory");
	expect_refused(kern_download(p->emu, got, dy, sizeof(got) + 4), "emu: download: src");
	assert_memory_equal(got, y0, sizeof(y0));
	expect_refused(kern_upload(p->emu, host, x, sizeof(host)),
		       "emu: upload: dst is not device memory");
	expect_refused(kern_upload(p->emu, dy, x, sizeof(y0) + 1), "emu: upload: dst");
	expect_dev(p->emu, dy, y0, sizeof(y0));

	expect_refused(kern_add(p->emu, dy, x, 4), "emu: add: x is not device memory");
	expect_refused(kern_rmsnorm(p->emu, dy, N_OUT, dx, N_IN, 1, N_OUT, x, 1e-5f),
		       "emu: rmsnorm: w is not device memory");
	uint32_t id = 1, tok = 77;
	expect_refused(kern_get_rows(p->emu, dy, N_OUT, &w, &id, 1),
		       "emu: get_rows: table is not device memory");
	expect_refused(kern_argmax(p->emu, &tok, x, N_IN, 1, N_IN),
		       "emu: argmax: x is not device memory");
	assert_int_equal(tok, 77);
	expect_dev(p->emu, dy, y0, sizeof(y0));
	ts_log_capture_end();

	dev_free(p->emu, dx), dev_free(p->emu, dy), dev_free(p->emu, dw.data);
	free(x);
	free((void *)(uintptr_t)w.data);
}

/* A block used after kern_free: every op refuses it, and freeing it again is logged. */
static void test_emu_ops__use_after_free_refused(void **state)
{
	struct pair *p = *state;
	float x[16] = {1, 2, 3}, y[16];
	float *dx = dev(p->emu, x, sizeof(x)), *dy = dev(p->emu, x, sizeof(x));
	kern_free(p->emu, dx);
	ts_log_capture_begin();
	expect_refused(kern_add(p->emu, dy, dx, 16), "emu: add: x is not device memory");
	expect_refused(kern_download(p->emu, y, dx, sizeof(y)),
		       "emu: download: src is not device memory");
	expect_refused(kern_softmax(p->emu, dx, 16, 1, 16), "emu: softmax: x is not device memory");
	expect_refused(kern_upload(p->emu, dx, x, sizeof(x)), "emu: upload: dst is not device");
	kern_free(p->emu, dx);
	assert_non_null(strstr(ts_log_captured(), "emu: free:"));
	ts_log_capture_end();
	expect_dev(p->emu, dy, x, sizeof(x)); /* the other block is untouched */
	dev_free(p->emu, dy);
}

/* The host faults on a device pointer: a child process reads one and must die of
 * SIGSEGV (caught there, so sanitizers need not take the signal). */
static void on_segv(int sig)
{
	(void)sig;
	_exit(42);
}

static void test_emu_alloc__host_access_faults(void **state)
{
	struct pair *p = *state;
	float one = 1.0f;
	float *d = dev(p->emu, &one, sizeof(one));
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_segv;
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		volatile float v = *(volatile float *)d;
		(void)v;
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
	dev_free(p->emu, d);
}

struct blk {
	unsigned char *d;
	size_t bytes;
	unsigned char fill;
};

/* Every live block holds its own fill: no two blocks overlap. */
static void check_blocks(struct kern_ctx *e, const struct blk *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!b[i].d)
			continue;
		unsigned char *h = malloc(b[i].bytes + 1);
		assert_non_null(h);
		assert_int_equal(kern_download(e, h, b[i].d, b[i].bytes), SPECD_OK);
		for (size_t j = 0; j < b[i].bytes; j++)
			if (h[j] != b[i].fill)
				fail_msg("block %zu (%zu bytes) byte %zu: %#x, expected %#x", i,
					 b[i].bytes, j, h[j], b[i].fill);
		free(h);
		assert_int_equal((uintptr_t)b[i].d % 64, 0);
		for (size_t k = i + 1; k < n; k++) {
			if (!b[k].d)
				continue;
			uintptr_t a0 = (uintptr_t)b[i].d, a1 = a0 + (b[i].bytes ? b[i].bytes : 1);
			uintptr_t b0 = (uintptr_t)b[k].d, b1 = b0 + (b[k].bytes ? b[k].bytes : 1);
			assert_true(a1 <= b0 || b1 <= a0);
		}
	}
}

static void alloc_blk(struct kern_ctx *e, struct blk *b, size_t bytes, unsigned char fill)
{
	void *d = NULL;
	assert_int_equal(kern_alloc(e, bytes, &d), SPECD_OK);
	unsigned char *h = malloc(bytes + 1), *z = calloc(bytes + 1, 1);
	assert_non_null(h);
	assert_non_null(z);
	expect_dev(e, d, z, bytes); /* zeroed, whatever was there before */
	memset(h, fill, bytes);
	assert_int_equal(kern_upload(e, d, h, bytes), SPECD_OK);
	free(h), free(z);
	*b = (struct blk){.d = d, .bytes = bytes, .fill = fill};
}

/* 8 MiB window: many blocks of varied sizes (0 bytes to 40 KiB), freed in random
 * order and reallocated over several rounds, never overlap and always come zeroed. */
static void test_emu_alloc__varied_blocks_never_overlap_and_come_zeroed(void **state)
{
	(void)state;
	enum { N = 160, ROUNDS = 6 };
	struct kern_emu_config ec = {.window_bytes = 8 * MIB};
	struct kern_ctx *e = NULL;
	assert_int_equal(kern_emu_create(&ec, &e), SPECD_OK);
	static struct blk b[N];
	memset(b, 0, sizeof(b));
	unsigned char fill = 1;
	for (size_t i = 0; i < N; i++)
		alloc_blk(e, &b[i], (size_t)(rnd64() % (i % 7 ? 3000 : 40000)), fill++);
	check_blocks(e, b, N);
	size_t order[N];
	for (int round = 0; round < ROUNDS; round++) {
		for (size_t i = 0; i < N; i++)
			order[i] = i;
		for (size_t i = N - 1; i > 0; i--) {
			size_t j = (size_t)(rnd64() % (i + 1)), t = order[i];
			order[i] = order[j], order[j] = t;
		}
		for (size_t i = 0; i < N / 2; i++) {
			kern_free(e, b[order[i]].d);
			b[order[i]].d = NULL;
		}
		check_blocks(e, b, N);
		for (size_t i = 0; i < N / 2; i++) {
			fill = (unsigned char)(fill == 255 ? 1 : fill + 1);
			size_t bytes = (size_t)(rnd64() % (i % 5 ? 5000 : 60000));
			alloc_blk(e, &b[order[i]], bytes, fill);
		}
		check_blocks(e, b, N);
	}
	for (size_t i = 0; i < N; i++)
		kern_free(e, b[i].d);
	/* All freed and coalesced: the whole window is one block again. */
	void *all = NULL;
	assert_int_equal(kern_alloc(e, 8 * MIB, &all), SPECD_OK);
	kern_free(e, all);
	kern_destroy(e);
}

/* 8 MiB window: 100 rounds of a 1 MiB block fit (freed space is reused), eight fill
 * it and a ninth is SPECD_NOMEM, as is anything past the window; a reused block is
 * zero again; bad frees are logged and change nothing. */
static void test_emu_alloc__reuses_freed_space_and_says_nomem_past_the_window(void **state)
{
	(void)state;
	struct kern_emu_config ec = {.window_bytes = 8 * MIB};
	struct kern_ctx *e = NULL;
	assert_int_equal(kern_emu_create(&ec, &e), SPECD_OK);
	unsigned char *ones = malloc(MIB), *zeros = calloc(8 * MIB, 1);
	assert_non_null(ones);
	assert_non_null(zeros);
	memset(ones, 0xab, MIB);
	for (int i = 0; i < 100; i++) {
		void *d = NULL;
		assert_int_equal(kern_alloc(e, MIB, &d), SPECD_OK);
		expect_dev(e, d, zeros, MIB);
		assert_int_equal(kern_upload(e, d, ones, MIB), SPECD_OK);
		kern_free(e, d);
	}
	void *d[9], *keep = (void *)&ec;
	for (int i = 0; i < 8; i++)
		assert_int_equal(kern_alloc(e, MIB, &d[i]), SPECD_OK);
	d[8] = keep;
	assert_int_equal(kern_alloc(e, MIB, &d[8]), SPECD_NOMEM);
	assert_int_equal(kern_alloc(e, 1, &d[8]), SPECD_NOMEM);
	assert_ptr_equal(d[8], keep); /* not written on failure */
	/* Free two neighbours, the later first: a 2 MiB block fits only once the hole
	 * of the earlier one is merged with the hole after it. */
	kern_free(e, d[4]);
	kern_free(e, d[3]);
	assert_int_equal(kern_alloc(e, 2 * MIB, &d[3]), SPECD_OK);
	assert_int_equal(kern_upload(e, d[3], ones, MIB), SPECD_OK);
	kern_free(e, d[3]);
	for (int i = 0; i < 8; i++)
		if (i != 3 && i != 4)
			kern_free(e, d[i]);
	void *big = NULL;
	assert_int_equal(kern_alloc(e, 9 * MIB, &big), SPECD_NOMEM);
	assert_int_equal(kern_alloc(e, SIZE_MAX - 8, &big), SPECD_NOMEM);
	assert_int_equal(kern_alloc(e, 8 * MIB, &big), SPECD_OK);
	expect_dev(e, big, zeros, 8 * MIB); /* whole MiBs of it were 0xab before */
	kern_free(e, big);

	/* Small blocks sharing a page: a freed one comes back zeroed too. */
	void *s[3];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kern_alloc(e, 100, &s[i]), SPECD_OK);
		assert_int_equal(kern_upload(e, s[i], ones, 100), SPECD_OK);
	}
	kern_free(e, s[1]);
	assert_int_equal(kern_alloc(e, 100, &s[1]), SPECD_OK);
	expect_dev(e, s[1], zeros, 100);
	expect_dev(e, s[0], ones, 100);
	expect_dev(e, s[2], ones, 100);

	/* free(NULL) is nothing; an inner pointer or a host one is logged and ignored. */
	ts_log_capture_begin();
	kern_free(e, NULL);
	assert_string_equal(ts_log_captured(), "");
	kern_free(e, (unsigned char *)s[0] + 64);
	kern_free(e, ones);
	assert_non_null(strstr(ts_log_captured(), "emu: free:"));
	ts_log_capture_end();
	expect_dev(e, s[0], ones, 100);
	for (int i = 0; i < 3; i++)
		kern_free(e, s[i]);
	free(ones), free(zeros);
	kern_destroy(e);
}

/* ---- Whole models. ---- */

#define N_MODELS 3
static const char *const model_names[N_MODELS] = {"llama-f16", "qwen2-q8_0", "tied-q4_k"};
static char g_dir[512];
static char g_paths[N_MODELS][600];

static int setup_models(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	/* GQA 2:1 in f16; qwen2's Q/K/V biases with one KV head in q8_0; a tied LM head
	 * in q4_k (dims of whole 256-weight super-blocks). */
	const char *llama[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			       "--ffn", "96", "--vocab", "300", "--ctx", "64", "--type", "f16",
			       "--seed", "21", NULL};
	const char *qwen[] = {"--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
			      "--kv-heads", "1", "--ffn", "128", "--vocab", "280", "--ctx", "64",
			      "--type", "q8_0", "--seed", "22", NULL};
	const char *tied[] = {"--dim", "256", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			      "--ffn", "256", "--vocab", "270", "--ctx", "64", "--type", "q4_k",
			      "--tied", "--seed", "23", NULL};
	const char *const *args[N_MODELS] = {llama, qwen, tied};
	for (int i = 0; i < N_MODELS; i++) {
		snprintf(g_paths[i], sizeof(g_paths[i]), "%s/%s.gguf", g_dir, model_names[i]);
		if (ts_gen_model(g_paths[i], args[i]) != 0)
			return -1;
	}
	return 0;
}

static int teardown_models(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static struct model *load_shard(const char *path, struct kern_ctx *kern,
				const struct model_comm *comm)
{
	struct model_config cfg = {.n_slots = 2, .n_ctx = 48, .max_batch = 16, .kern = kern,
				   .comm = comm};
	struct model *m = NULL;
	struct specd_error err;
	enum specd_status st = model_load(path, &cfg, &m, &err);
	if (st != SPECD_OK)
		fail_msg("model_load on %s: %s", kern_name(kern), err.msg);
	return m;
}

static struct model *load_on(const char *path, struct kern_ctx *kern)
{
	return load_shard(path, kern, NULL);
}

/* Model mi of the suite on a fresh CPU backend and on a fresh emulated device. */
struct both {
	struct kern_ctx *cpu, *emu;
	struct model *c, *e;
};

static struct both both_load(int mi)
{
	struct both b = {0};
	assert_int_equal(kern_cpu_create(NULL, &b.cpu), SPECD_OK);
	assert_int_equal(kern_emu_create(NULL, &b.emu), SPECD_OK);
	b.c = load_on(g_paths[mi], b.cpu);
	b.e = load_on(g_paths[mi], b.emu);
	return b;
}

static void both_free(struct both *b)
{
	model_destroy(b->c);
	model_destroy(b->e);
	kern_destroy(b->cpu);
	kern_destroy(b->emu);
}

/* The same model on the CPU and on the emulated device. */
struct twin {
	struct model *c, *e;
	uint32_t V, dim, n_layers;
};

/* Runs one batch (all outputs: logits, final hidden states and the residual after
 * layers 0 and the last) on both and asserts every output bitwise equal; the
 * emulated model's logits land in `logits` when it is not NULL. */
static void twin_forward(struct twin *t, uint32_t n, const uint32_t *tok, const uint32_t *slot,
			 const uint32_t *pos, const int32_t *parent, float *logits)
{
	size_t nl = (size_t)n * t->V, nh = (size_t)n * t->dim;
	uint32_t idx[16], layers[2] = {0, t->n_layers - 1};
	float *buf[2][3];
	for (uint32_t i = 0; i < n; i++)
		idx[i] = i;
	for (int s = 0; s < 2; s++) {
		buf[s][0] = malloc(nl * sizeof(float));
		buf[s][1] = malloc(nh * sizeof(float));
		buf[s][2] = malloc(2 * nh * sizeof(float));
		assert_non_null(buf[s][0]);
		assert_non_null(buf[s][1]);
		assert_non_null(buf[s][2]);
		struct model_batch b = {
			.n_tokens = n, .tokens = tok, .slots = slot, .pos = pos, .parent = parent,
			.n_out = n, .out_idx = idx, .logits = buf[s][0], .hidden = buf[s][1],
			.n_layers_out = 2, .layers = layers, .layer_hidden = buf[s][2],
		};
		struct specd_error err;
		enum specd_status st = model_forward(s ? t->e : t->c, &b, &err);
		if (st != SPECD_OK)
			fail_msg("model_forward on %s: %s", s ? "emu" : "cpu", err.msg);
	}
	assert_memory_equal(buf[0][0], buf[1][0], nl * sizeof(float));
	assert_memory_equal(buf[0][1], buf[1][1], nh * sizeof(float));
	assert_memory_equal(buf[0][2], buf[1][2], 2 * nh * sizeof(float));
	for (uint32_t s = 0; s < 2; s++)
		assert_int_equal(kv_len(model_kv(t->c), s), kv_len(model_kv(t->e), s));
	if (logits)
		memcpy(logits, buf[1][0], nl * sizeof(float));
	for (int s = 0; s < 2; s++)
		for (int j = 0; j < 3; j++)
			free(buf[s][j]);
}

/* Each model: prompts in two slots, greedy steps of both slots in one batch (the
 * emulated model's argmax runs on its device), a tree batch, the kept branch compacted
 * in the cache, a step after it and a re-decode after truncation, everything bitwise
 * the CPU's. */
static void test_emu_model__bitwise_cpu_causal_greedy_and_tree(void **state)
{
	(void)state;
	for (int mi = 0; mi < N_MODELS; mi++) {
		struct kern_ctx *cpu = NULL, *emu = NULL;
		assert_int_equal(kern_cpu_create(NULL, &cpu), SPECD_OK);
		assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
		struct twin t = {.c = load_on(g_paths[mi], cpu), .e = load_on(g_paths[mi], emu)};
		t.V = model_hparams(t.e)->n_vocab;
		t.dim = model_hparams(t.e)->dim;
		t.n_layers = model_hparams(t.e)->n_layers;
		float *logits = malloc(16 * (size_t)t.V * sizeof(float));
		assert_non_null(logits);

		const uint32_t p0[7] = {1, 77, 200, 5, 130, 42, 9}, p1[5] = {1, 260, 3, 99, 12};
		uint32_t s0[7] = {0}, s1[5] = {1, 1, 1, 1, 1}, pos[7] = {0, 1, 2, 3, 4, 5, 6};
		twin_forward(&t, 7, p0, s0, pos, NULL, NULL);
		twin_forward(&t, 5, p1, s1, pos, NULL, logits);

		uint32_t next[2], tc[2], te[2];
		const float *last = logits + 4 * (size_t)t.V; /* slot 1's last prompt token */
		assert_int_equal(model_shard_argmax(t.e, last, 1, &next[1], NULL), SPECD_OK);
		next[0] = 11;
		for (int step = 0; step < 4; step++) {
			uint32_t slots[2] = {0, 1};
			uint32_t sp[2] = {kv_len(model_kv(t.e), 0), kv_len(model_kv(t.e), 1)};
			twin_forward(&t, 2, next, slots, sp, NULL, logits);
			/* The CPU's argmax on the same (bitwise equal) host logits. */
			assert_int_equal(model_shard_argmax(t.c, logits, 2, tc, NULL), SPECD_OK);
			assert_int_equal(model_shard_argmax(t.e, logits, 2, te, NULL), SPECD_OK);
			assert_memory_equal(tc, te, sizeof(tc));
			memcpy(next, te, sizeof(next));
		}

		/* A tree after slot 0's committed rows: A; B, C children of A; D child of C. */
		uint32_t base = kv_len(model_kv(t.e), 0);
		const uint32_t tt[4] = {40, 50, 60, 70}, ts[4] = {0, 0, 0, 0};
		const uint32_t tp[4] = {base, base + 1, base + 1, base + 2};
		const int32_t parent[4] = {-1, 0, 0, 2};
		twin_forward(&t, 4, tt, ts, tp, parent, NULL);
		/* Keep A C D, then one more step on the compacted cache. */
		const uint32_t keep[3] = {base, base + 2, base + 3};
		assert_int_equal(kv_compact(model_kv(t.c), 0, base, keep, 3), SPECD_OK);
		assert_int_equal(kv_compact(model_kv(t.e), 0, base, keep, 3), SPECD_OK);
		uint32_t e_tok = 80, e_pos = base + 3;
		twin_forward(&t, 1, &e_tok, s0, &e_pos, NULL, NULL);

		/* Slot 1 cut back to 2 rows and decoded again. */
		assert_int_equal(kv_truncate(model_kv(t.c), 1, 2), SPECD_OK);
		assert_int_equal(kv_truncate(model_kv(t.e), 1, 2), SPECD_OK);
		twin_forward(&t, 3, p1 + 2, s1, pos + 2, NULL, NULL);

		free(logits);
		model_destroy(t.c);
		model_destroy(t.e);
		kern_destroy(cpu);
		kern_destroy(emu);
	}
}

/* A hook on host memory for one shard of two whose partner holds the same values:
 * the sum doubles each element (reading and writing it: a device pointer handed here
 * would fault), the max is the shard's own, gather places its slice. */
static enum specd_status twin_allreduce(float *buf, size_t n, void *user)
{
	(void)user;
	for (size_t i = 0; i < n; i++)
		buf[i] *= 2.0f;
	return SPECD_OK;
}

static enum specd_status twin_maxloc(float *val, int32_t *idx, size_t n, void *user)
{
	(void)val, (void)idx, (void)n, (void)user;
	return SPECD_OK;
}

static enum specd_status twin_gather(const float *send, float *recv, const size_t *counts,
				     const size_t *displs, void *user)
{
	const struct model_comm *c = user;
	if (recv)
		memcpy(recv + displs[c->rank], send, counts[c->rank] * sizeof(float));
	return SPECD_OK;
}

/* The same sum on device memory (model_comm.device_memory, as NCCL takes it): the hook
 * brings the rows over itself, so a host pointer handed to it fails the download. */
struct dev_hook {
	struct model_comm comm; /* first: twin_gather reads the user as a model_comm */
	struct kern_ctx *k;
	float tmp[64 * 512];
};

static enum specd_status dev_allreduce(float *buf, size_t n, void *user)
{
	struct dev_hook *h = user;
	enum specd_status st;
	if (n > sizeof(h->tmp) / sizeof(h->tmp[0]))
		return SPECD_INVAL;
	if ((st = kern_download(h->k, h->tmp, buf, n * sizeof(float))))
		return st;
	twin_allreduce(h->tmp, n, NULL);
	return kern_upload(h->k, buf, h->tmp, n * sizeof(float));
}

/* Each shard of two of the GQA model, with the host-memory hook above (the emulated
 * shard's all-reduces through the host stage) and with the device-memory one (in
 * place, after a sync): the embedding of tokens inside and outside the shard's
 * vocabulary, the all-reduces, the logits of its slice and the sharded argmax, causal
 * and tree, bitwise the CPU shard's. */
static void test_emu_model__shards_with_host_and_device_hooks_bitwise_cpu(void **state)
{
	(void)state;
	static struct dev_hook dh;
	for (uint32_t v = 0; v < 4; v++) {
		uint32_t rank = v % 2;
		bool on_device = v >= 2;
		struct model_comm comm = {.allreduce_sum = twin_allreduce, .maxloc = twin_maxloc,
					  .gather = twin_gather, .rank = rank, .size = 2};
		comm.user = &comm;
		struct kern_ctx *cpu = NULL, *emu = NULL;
		assert_int_equal(kern_cpu_create(NULL, &cpu), SPECD_OK);
		assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
		dh.comm = comm;
		dh.comm.allreduce_sum = dev_allreduce;
		dh.comm.device_memory = true;
		dh.comm.user = &dh;
		dh.k = emu;
		struct twin t = {.c = load_shard(g_paths[0], cpu, &comm),
				 .e = load_shard(g_paths[0], emu, on_device ? &dh.comm : &comm)};
		t.V = model_shard(t.e)->n_vocab;
		t.dim = model_hparams(t.e)->dim;
		t.n_layers = model_hparams(t.e)->n_layers;
		assert_true(t.V < model_hparams(t.e)->n_vocab);
		float *logits = malloc(16 * (size_t)t.V * sizeof(float));
		assert_non_null(logits);
		const uint32_t p0[6] = {1, 290, 3, 160, 149, 151};
		uint32_t s0[6] = {0}, pos[6] = {0, 1, 2, 3, 4, 5}, tc[6], te[6];
		twin_forward(&t, 6, p0, s0, pos, NULL, logits);
		assert_int_equal(model_shard_argmax(t.c, logits, 6, tc, NULL), SPECD_OK);
		assert_int_equal(model_shard_argmax(t.e, logits, 6, te, NULL), SPECD_OK);
		assert_memory_equal(tc, te, sizeof(tc));
		const uint32_t tt[3] = {7, 200, 8}, tp[3] = {6, 7, 7};
		const int32_t parent[3] = {-1, 0, 0};
		twin_forward(&t, 3, tt, s0, tp, parent, NULL);
		free(logits);
		model_destroy(t.c);
		model_destroy(t.e);
		kern_destroy(cpu);
		kern_destroy(emu);
	}
}

/* Greedy ids taken on the device (model_batch.ids, no logits downloaded) are the CPU's
 * argmax of the same rows, causal and tree; a host backend needs its logits rows for
 * them and a shard gives none (model_shard_argmax does): both refused, saying so. */
static void test_emu_model__greedy_ids_on_the_device(void **state)
{
	(void)state;
	struct both b2 = both_load(0);
	struct kern_ctx *emu = b2.emu;
	struct model *c = b2.c, *e = b2.e;
	uint32_t V = model_hparams(c)->n_vocab;
	float *logits = malloc(4 * (size_t)V * sizeof(float));
	assert_non_null(logits);
	const uint32_t tok[4] = {1, 77, 200, 5}, slot[4] = {0}, pos[4] = {0, 1, 2, 3};
	const uint32_t idx[4] = {0, 1, 2, 3};
	const int32_t tree[3] = {-1, -1, 0};
	const uint32_t tpos[3] = {4, 4, 5};
	struct specd_error err;
	for (int round = 0; round < 2; round++) {
		/* round 0: the prompt, causal; round 1: a tree of three after it */
		uint32_t n = round ? 3 : 4, ic[4], ie[4];
		struct model_batch b = {
			.n_tokens = n, .tokens = tok, .slots = slot, .pos = round ? tpos : pos,
			.parent = round ? tree : NULL, .n_out = n, .out_idx = idx,
			.logits = logits, .ids = ic,
		};
		assert_int_equal(model_forward(c, &b, &err), SPECD_OK);
		b.logits = NULL;
		b.ids = ie;
		if (model_forward(e, &b, &err) != SPECD_OK)
			fail_msg("%s", err.msg);
		for (uint32_t r = 0; r < n; r++) {
			int32_t want = sampler_argmax(logits + (size_t)r * V, (int32_t)V);
			assert_int_equal(ic[r], (uint32_t)want);
		}
		assert_memory_equal(ic, ie, n * sizeof(uint32_t));
	}
	uint32_t ids[1];
	const uint32_t one_pos[1] = {6};
	struct model_batch b = {.n_tokens = 1, .tokens = tok, .slots = slot, .pos = one_pos,
				.n_out = 1, .out_idx = idx, .ids = ids};
	assert_int_equal(model_forward(c, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "ids on a host backend need the logits rows"));
	struct model_comm comm = {.allreduce_sum = twin_allreduce, .maxloc = twin_maxloc,
				  .gather = twin_gather, .rank = 0, .size = 2};
	comm.user = &comm;
	struct model *shard = load_shard(g_paths[0], emu, &comm);
	b.pos = pos;
	assert_int_equal(model_forward(shard, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "a shard has part of each logits row"));
	model_destroy(shard);
	free(logits);
	both_free(&b2);
}

/* Draws from the logits where they are (model_draw): refused until the model has
 * reserved their scratch; then two draws over a batch's rows, with different
 * parameters, give what the CPU's sample op gives on the CPU model's logits; a host
 * backend and a shard refuse draws, and a draw past the rows or with a uniform
 * outside [0, 1) is refused before the cache is touched. */
static void test_emu_model__draws_on_the_device(void **state)
{
	(void)state;
	struct both b2 = both_load(1);
	struct kern_ctx *cpu = b2.cpu, *emu = b2.emu;
	struct model *c = b2.c, *e = b2.e;
	uint32_t V = model_hparams(c)->n_vocab;
	float *logits = malloc(5 * (size_t)V * sizeof(float));
	void *work = malloc(kern_sample_work_bytes(5, V));
	assert_true(logits && work);
	const uint32_t tok[5] = {1, 77, 200, 5, 9}, slot[5] = {0}, pos[5] = {0, 1, 2, 3, 4};
	const uint32_t idx[5] = {0, 1, 2, 3, 4};
	const float u[5] = {0.1f, 0.5f, 0.99f, 0.0f, 0.7f};
	const struct kern_sample_params kp = {.temperature = 0.9f, .top_k = 40, .top_p = 0.9f};
	const struct kern_sample_params kp2 = {.temperature = 1.3f, .top_p = 1.0f, .min_p = 0.01f};
	uint32_t out_e[5], out_c[5];
	struct model_draw d[2] = {
		{.row = 0, .rows = 2, .params = kp, .u = u, .out = out_e},
		{.row = 2, .rows = 3, .params = kp2, .u = u + 2, .out = out_e + 2},
	};
	struct model_batch b = {.n_tokens = 5, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = 5, .out_idx = idx, .logits = logits};
	struct specd_error err;
	assert_int_equal(model_forward(c, &b, &err), SPECD_OK);
	b.logits = NULL;
	b.n_draws = 2;
	b.draws = d;
	/* No scratch reserved yet: refused, and nothing written. */
	assert_int_equal(model_forward(e, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "after model_reserve_draws"));
	assert_int_equal(kv_len(model_kv(e), 0), 0);
	assert_int_equal(model_reserve_draws(e, NULL), SPECD_OK);
	assert_int_equal(model_reserve_draws(e, NULL), SPECD_OK); /* once is enough */
	if (model_forward(e, &b, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	for (int i = 0; i < 2; i++) {
		struct kern_sample_rows r = {
			.rows = d[i].rows, .n = V, .x = logits + (size_t)d[i].row * V, .ldx = V,
			.params = d[i].params, .u = d[i].u, .work = work, .out = out_c + d[i].row,
		};
		assert_int_equal(kern_sample(cpu, &r), SPECD_OK);
	}
	assert_memory_equal(out_e, out_c, sizeof(out_e));

	/* Refusals, each before anything is written. */
	const uint32_t next_pos[1] = {5};
	struct model_batch one = {.n_tokens = 1, .tokens = tok, .slots = slot, .pos = next_pos,
				  .n_out = 1, .out_idx = idx, .n_draws = 1, .draws = d};
	static const struct { uint32_t row, rows; float u; const char *msg; } bad[] = {
		{0, 2, 0.5f, "asks for logits rows 0..2 of 1"},
		{1, 1, 0.5f, "asks for logits rows 1..2 of 1"},
		{0, 0, 0.5f, "asks for logits rows 0..0 of 1"},
		{0, 1, 1.0f, "a uniform outside [0, 1)"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct model_draw x = {.row = bad[i].row, .rows = bad[i].rows, .params = kp,
				       .u = &bad[i].u, .out = out_e};
		one.draws = &x;
		assert_int_equal(model_forward(e, &one, &err), SPECD_INVAL);
		assert_non_null(strstr(err.msg, bad[i].msg));
		assert_int_equal(kv_len(model_kv(e), 0), 5);
	}
	one.draws = d;
	assert_int_equal(model_forward(c, &one, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "draws are for device backends"));
	struct model_comm comm = {.allreduce_sum = twin_allreduce, .maxloc = twin_maxloc,
				  .gather = twin_gather, .rank = 0, .size = 2};
	comm.user = &comm;
	struct model *shard = load_shard(g_paths[1], emu, &comm);
	one.pos = pos;
	assert_int_equal(model_forward(shard, &one, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "a shard has part of each logits row"));
	model_destroy(shard);
	free(work);
	free(logits);
	both_free(&b2);
}

/* Each output's best ids taken where the logits are (model_batch.top_k): the emulated
 * model's, without its logits, equal the CPU model's with them; a host backend without
 * logits, a shard, too many ids and nowhere to put them are refused. */
static void test_emu_model__top_ids_on_the_device(void **state)
{
	(void)state;
	struct both b2 = both_load(0);
	struct kern_ctx *emu = b2.emu;
	struct model *c = b2.c, *e = b2.e;
	uint32_t V = model_hparams(c)->n_vocab;
	float *logits = malloc(3 * (size_t)V * sizeof(float));
	assert_non_null(logits);
	const uint32_t tok[3] = {1, 77, 200}, slot[3] = {0}, pos[3] = {0, 1, 2}, idx[2] = {2, 0};
	enum { K = 5 };
	int32_t ic[2 * K], ie[2 * K];
	float vc[2 * K], ve[2 * K], lc[2], le[2];
	struct model_batch b = {.n_tokens = 3, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = 2, .out_idx = idx, .logits = logits, .top_k = K,
				.top_ids = ic, .top_vals = vc, .top_lse = lc};
	struct specd_error err;
	assert_int_equal(model_forward(c, &b, &err), SPECD_OK);
	b.logits = NULL;
	b.top_ids = ie, b.top_vals = ve, b.top_lse = le;
	if (model_forward(e, &b, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	assert_memory_equal(ic, ie, sizeof(ic));
	assert_memory_equal(vc, ve, sizeof(vc));
	assert_memory_equal(lc, le, sizeof(lc));
	int32_t ref[K];
	kern_top_n(logits + V, V, K, ref); /* output 1 is token 0 */
	assert_memory_equal(ref, ie + K, sizeof(ref));

	const uint32_t next[1] = {3};
	struct model_batch one = {.n_tokens = 1, .tokens = tok, .slots = slot, .pos = next,
				  .n_out = 1, .out_idx = idx + 1, .top_k = K, .top_ids = ie};
	assert_int_equal(model_forward(c, &one, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "ids on a host backend need the logits rows"));
	one.top_k = KERN_TOPK_MAX + 1;
	assert_int_equal(model_forward(e, &one, &err), SPECD_INVAL);
	one.top_k = K;
	one.top_ids = NULL;
	assert_int_equal(model_forward(e, &one, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "somewhere to put them"));
	assert_int_equal(kv_len(model_kv(e), 0), 3);
	struct model_comm comm = {.allreduce_sum = twin_allreduce, .maxloc = twin_maxloc,
				  .gather = twin_gather, .rank = 0, .size = 2};
	comm.user = &comm;
	struct model *shard = load_shard(g_paths[0], emu, &comm);
	one.top_ids = ie;
	one.pos = pos;
	assert_int_equal(model_forward(shard, &one, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "a shard has part of each logits row"));
	model_destroy(shard);
	free(logits);
	both_free(&b2);
}

/* What a forward launches on a device: per layer one Q/K/V projection (the three
 * matrices are one on a device), one rotation for the query and key heads, one cache
 * scatter (keys and values side by side), attention, the output projection, the
 * residual add with the MLP's norm (one op), gate, up, SiLU-mul, down, and the
 * residual add with the next layer's norm (the last layer's add alone): 11; around
 * them the embedding lookup, the first layer's norm, one gather of the output rows (a
 * verify's rows are consecutive), the final norm and the LM head. With and without
 * Q/K/V biases, for one token and for a verify of five. */
static void test_emu_model__launches_per_forward(void **state)
{
	(void)state;
	for (int mi = 0; mi < 2; mi++) {
		struct kern_ctx *emu = NULL;
		assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
		struct model *e = load_on(g_paths[mi], emu);
		uint32_t L = model_hparams(e)->n_layers, V = model_hparams(e)->n_vocab;
		float *logits = malloc(5 * (size_t)V * sizeof(float));
		assert_non_null(logits);
		const uint32_t tok[5] = {1, 7, 9, 11, 13}, slot[5] = {0}, pos[5] = {0, 1, 2, 3, 4};
		const uint32_t idx[5] = {0, 1, 2, 3, 4};
		for (uint32_t n = 1; n <= 5; n += 4) {
			assert_int_equal(kv_truncate(model_kv(e), 0, 0), SPECD_OK);
			struct model_batch b = {.n_tokens = n, .tokens = tok, .slots = slot,
						.pos = pos, .n_out = n, .out_idx = idx,
						.logits = logits};
			uint64_t before = kern_emu_stats(emu).launches;
			assert_int_equal(model_forward(e, &b, NULL), SPECD_OK);
			assert_int_equal(kern_emu_stats(emu).launches - before, 11 * L + 5);
		}
		free(logits);
		model_destroy(e);
		kern_destroy(emu);
	}
}

/* The op profiler over the emulated device: a forward's profile counts exactly the
 * launches the device saw (every compute op and copy), one attention a layer, and the
 * logits' one download; the device timeline's span holds every op's busy time. */
static void test_emu_model__profile_counts_every_launch(void **state)
{
	(void)state;
	struct kern_ctx *emu = NULL, *prof = NULL;
	assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
	assert_int_equal(kern_prof_create(emu, &prof), SPECD_OK);
	struct model *e = load_on(g_paths[0], prof);
	uint32_t L = model_hparams(e)->n_layers, V = model_hparams(e)->n_vocab;
	float *logits = malloc(5 * (size_t)V * sizeof(float));
	assert_non_null(logits);
	const uint32_t tok[5] = {1, 7, 9, 11, 13}, slot[5] = {0}, pos[5] = {0, 1, 2, 3, 4};
	const uint32_t idx[5] = {0, 1, 2, 3, 4};
	struct model_batch b = {.n_tokens = 5, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = 5, .out_idx = idx, .logits = logits};
	uint64_t before = kern_emu_stats(emu).launches;
	assert_int_equal(kern_prof_start(prof), SPECD_OK);
	assert_int_equal(model_forward(e, &b, NULL), SPECD_OK);
	struct kern_profile p;
	assert_int_equal(kern_prof_read(prof, &p), SPECD_OK);
	uint64_t launches = 0;
	double busy = 0;
	for (int op = 0; op < KERN_OP_COUNT; op++) {
		bool compute = op != KERN_OP_UPLOAD && op != KERN_OP_DOWNLOAD &&
			       op != KERN_OP_UPLOAD_MAT && op != KERN_OP_SYNC;
		launches += compute ? p.calls[op] : 0;
		busy += p.busy[op];
	}
	assert_int_equal(launches, kern_emu_stats(emu).launches - before);
	assert_int_equal(launches, 11 * L + 5);
	assert_int_equal(p.calls[KERN_OP_ATTENTION], L);
	assert_int_equal(p.calls[KERN_OP_DOWNLOAD], 1);
	assert_true(p.busy[KERN_OP_MATMUL] > 0 && p.span >= busy);
	kern_prof_stop(prof);
	free(logits);
	model_destroy(e);
	kern_destroy(prof);
}

/* Loading and destroying a model on a small window, again and again: model_destroy
 * gives back every block (the whole window can be allocated afterwards), and a window
 * too small for the model fails the load with SPECD_NOMEM, leaving nothing behind. */
static void test_emu_model__load_destroy_returns_every_block(void **state)
{
	(void)state;
	struct kern_emu_config ec = {.window_bytes = 4 * MIB};
	struct kern_ctx *emu = NULL;
	assert_int_equal(kern_emu_create(&ec, &emu), SPECD_OK);
	for (int i = 0; i < 20; i++) {
		struct model *m = load_on(g_paths[i % 2], emu);
		uint32_t tok[2] = {1, 2}, slot[2] = {0, 0}, pos[2] = {0, 1}, out;
		float *logits = malloc(model_hparams(m)->n_vocab * sizeof(float));
		assert_non_null(logits);
		struct model_batch b = {.n_tokens = 2, .tokens = tok, .slots = slot, .pos = pos,
					.n_out = 1, .out_idx = &slot[0], .logits = logits};
		assert_int_equal(model_forward(m, &b, NULL), SPECD_OK);
		assert_int_equal(model_shard_argmax(m, logits, 1, &out, NULL), SPECD_OK);
		free(logits);
		model_destroy(m);
		void *all = NULL;
		assert_int_equal(kern_alloc(emu, 4 * MIB, &all), SPECD_OK);
		kern_free(emu, all);
	}
	kern_destroy(emu);

	ec.window_bytes = 64 * 1024;
	assert_int_equal(kern_emu_create(&ec, &emu), SPECD_OK);
	struct model_config cfg = {.n_slots = 2, .n_ctx = 48, .max_batch = 16, .kern = emu};
	struct model *m = NULL;
	struct specd_error err;
	assert_int_equal(model_load(g_paths[2], &cfg, &m, &err), SPECD_NOMEM);
	assert_null(m);
	void *all = NULL;
	assert_int_equal(kern_alloc(emu, 64 * 1024, &all), SPECD_OK);
	kern_free(emu, all);
	kern_destroy(emu);
}

int main(void)
{
#define PAIR_TEST(f) cmocka_unit_test_setup_teardown(f, setup_pair, teardown_pair)
	const struct CMUnitTest tests[] = {
		PAIR_TEST(test_emu__is_a_device_backend),
		PAIR_TEST(test_emu_matmul__bitwise_cpu_every_type_and_row_count),
		PAIR_TEST(test_emu_get_rows__bitwise_cpu),
		PAIR_TEST(test_emu_rmsnorm__bitwise_cpu),
		PAIR_TEST(test_emu_add_rmsnorm__bitwise_cpu),
		PAIR_TEST(test_emu_rope__bitwise_cpu_both_layouts),
		PAIR_TEST(test_emu_attention__bitwise_cpu_causal_and_tree),
		PAIR_TEST(test_emu_elementwise__silu_mul_add_softmax_bitwise_cpu),
		PAIR_TEST(test_emu_argmax__bitwise_cpu_ties_and_nan),
		PAIR_TEST(test_emu_sample__bitwise_cpu_greedy_and_top_p_with_probe),
		PAIR_TEST(test_emu_topk__bitwise_cpu),
		PAIR_TEST(test_emu_copy__bitwise_cpu),
		PAIR_TEST(test_emu_set_rows__bitwise_cpu_and_refusals),
		PAIR_TEST(test_emu_ops__host_pointer_or_overrun_refused_output_unchanged),
		PAIR_TEST(test_emu_ops__use_after_free_refused),
		PAIR_TEST(test_emu_alloc__host_access_faults),
		cmocka_unit_test(test_emu_alloc__varied_blocks_never_overlap_and_come_zeroed),
		cmocka_unit_test(test_emu_alloc__reuses_freed_space_and_says_nomem_past_the_window),
		cmocka_unit_test(test_emu_model__bitwise_cpu_causal_greedy_and_tree),
		cmocka_unit_test(test_emu_model__shards_with_host_and_device_hooks_bitwise_cpu),
		cmocka_unit_test(test_emu_model__greedy_ids_on_the_device),
		cmocka_unit_test(test_emu_model__draws_on_the_device),
		cmocka_unit_test(test_emu_model__top_ids_on_the_device),
		cmocka_unit_test(test_emu_model__launches_per_forward),
		cmocka_unit_test(test_emu_model__profile_counts_every_launch),
		cmocka_unit_test(test_emu_model__load_destroy_returns_every_block),
	};
#undef PAIR_TEST
	return cmocka_run_group_tests(tests, setup_models, teardown_models);
}
