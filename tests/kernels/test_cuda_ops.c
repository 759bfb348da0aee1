/* The CUDA backend against the CPU reference (STYLE.md: each CUDA op against the CPU
 * op) and its batch invariance, bitwise, then a whole model: greedy tokens on CUDA
 * equal the CPU's and a batch gives the logits of token-by-token decoding. Labelled
 * gpu: every case skips, saying why, where kern_cuda_create finds no device (CI).
 * bench/gpu-check.sh (tools/gpu_check.c) runs the wider version on the GPU machine. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "kernels/kern.h"
#include "model/llama.h"
#include "model/shard.h"
#include "test_support.h"

struct pair {
	struct kern_ctx *cpu, *gpu;
};

static int setup_pair(void **state)
{
	static struct pair p;
	struct specd_error err;
	specd_error_clear(&err);
	memset(&p, 0, sizeof(p));
	if (kern_cuda_create(NULL, &p.gpu, &err) != SPECD_OK)
		fprintf(stderr, "test_cuda_ops: skipped: %s\n", err.msg);
	if (kern_cpu_create(NULL, &p.cpu) != SPECD_OK)
		return -1;
	*state = &p;
	return 0;
}

static int teardown_pair(void **state)
{
	struct pair *p = *state;
	kern_destroy(p->gpu);
	kern_destroy(p->cpu);
	return 0;
}

static float *floats(size_t n, uint32_t seed)
{
	float *p = specd_malloc_array(n, sizeof(float));
	assert_non_null(p);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		p[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
	}
	return p;
}

static void *on_gpu(struct kern_ctx *g, const void *host, size_t bytes)
{
	void *d = NULL;
	assert_int_equal(kern_alloc(g, bytes, &d), SPECD_OK);
	if (host)
		assert_int_equal(kern_upload(g, d, host, bytes), SPECD_OK);
	return d;
}

static void assert_close(const float *a, const float *b, size_t n, float tol)
{
	for (size_t i = 0; i < n; i++)
		assert_true(fabsf(a[i] - b[i]) <= tol * (1.0f + fabsf(a[i])));
}

/* bf16 and Q4_K (its blocks read as stored) weights, 9 rows; then each row alone. */
static void test_cuda_matmul__matches_cpu_and_is_batch_invariant(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	enum kern_dtype types[2] = {KERN_BF16, KERN_Q4_K};
	size_t n_in = 512, n_out = 80, rows = 9;
	for (int ti = 0; ti < 2; ti++) {
		size_t rb = kern_dtype_row_bytes(types[ti], n_in);
		float *wf = floats(n_in * n_out, 1), *x = floats(rows * n_in, 2);
		unsigned char *wq = specd_malloc_array(n_out, rb);
		float *yc = specd_calloc(rows * n_out, sizeof(float));
		float *yg = specd_calloc(rows * n_out, sizeof(float));
		float *y1 = specd_calloc(n_out, sizeof(float));
		for (size_t o = 0; o < n_out; o++)
			kern_quant_row(types[ti], wf + o * n_in, wq + o * rb, n_in);
		struct kern_mat w = kern_mat_packed(types[ti], n_in, n_out, wq), dw;
		assert_int_equal(kern_upload_mat(p->gpu, &w, &dw), SPECD_OK);
		float *dx = on_gpu(p->gpu, x, rows * n_in * sizeof(float));
		float *dy = on_gpu(p->gpu, NULL, rows * n_out * sizeof(float));
		assert_int_equal(kern_matmul(p->cpu, yc, n_out, x, n_in, rows, &w, NULL), SPECD_OK);
		assert_int_equal(kern_matmul(p->gpu, dy, n_out, dx, n_in, rows, &dw, NULL), SPECD_OK);
		assert_int_equal(kern_download(p->gpu, yg, dy, rows * n_out * sizeof(float)),
				 SPECD_OK);
		assert_close(yc, yg, rows * n_out, 1e-5f);
		for (size_t r = 0; r < rows; r++) {
			assert_int_equal(kern_matmul(p->gpu, dy, n_out, dx + r * n_in, n_in, 1, &dw,
						     NULL), SPECD_OK);
			assert_int_equal(kern_download(p->gpu, y1, dy, n_out * sizeof(float)), SPECD_OK);
			assert_memory_equal(y1, yg + r * n_out, n_out * sizeof(float));
		}
		kern_free(p->gpu, (void *)(uintptr_t)dw.data);
		kern_free(p->gpu, dx);
		kern_free(p->gpu, dy);
		specd_free(wf), specd_free(x), specd_free(wq);
		specd_free(yc), specd_free(yg), specd_free(y1);
	}
}

/* Every quantised type the kernels read as stored: 5 rows against a second backend that
 * dequantises the same matrix to f32 at load, bitwise (the same weights, the same sums
 * in the same order), and against the CPU within rounding. */
static void test_cuda_matmul__blocks_as_stored_bitwise_dequantised_at_load(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	static const enum kern_dtype types[] = {KERN_Q8_0, KERN_Q4_0, KERN_Q4_1, KERN_Q5_0,
						KERN_Q5_1, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
	enum { N_IN = 768, N_OUT = 96, ROWS = 5 };
	struct kern_cuda_config fc = {.dequant_at_load = true};
	struct kern_ctx *f32 = NULL;
	assert_int_equal(kern_cuda_create(&fc, &f32, NULL), SPECD_OK);
	float *wf = floats((size_t)N_IN * N_OUT, 11), *x = floats((size_t)ROWS * N_IN, 12);
	float *yc = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	float *yq = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	float *yf = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	float *dx = on_gpu(p->gpu, x, (size_t)ROWS * N_IN * sizeof(float));
	float *dy = on_gpu(p->gpu, NULL, (size_t)ROWS * N_OUT * sizeof(float));
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		size_t rb = kern_dtype_row_bytes(types[ti], N_IN);
		unsigned char *wq = specd_malloc_array(N_OUT, rb);
		for (size_t o = 0; o < N_OUT; o++)
			kern_quant_row(types[ti], wf + o * N_IN, wq + o * rb, N_IN);
		struct kern_mat w = kern_mat_packed(types[ti], N_IN, N_OUT, wq), dq, df;
		assert_int_equal(kern_upload_mat(p->gpu, &w, &dq), SPECD_OK);
		assert_int_equal(kern_upload_mat(f32, &w, &df), SPECD_OK);
		assert_int_equal(dq.type, types[ti]);
		assert_int_equal(df.type, KERN_F32);
		assert_int_equal(kern_matmul(p->cpu, yc, N_OUT, x, N_IN, ROWS, &w, NULL), SPECD_OK);
		assert_int_equal(kern_matmul(p->gpu, dy, N_OUT, dx, N_IN, ROWS, &dq, NULL), SPECD_OK);
		assert_int_equal(kern_download(p->gpu, yq, dy, sizeof(float) * ROWS * N_OUT),
				 SPECD_OK);
		assert_int_equal(kern_matmul(f32, dy, N_OUT, dx, N_IN, ROWS, &df, NULL), SPECD_OK);
		assert_int_equal(kern_download(f32, yf, dy, sizeof(float) * ROWS * N_OUT), SPECD_OK);
		assert_memory_equal(yq, yf, sizeof(float) * ROWS * N_OUT);
		assert_close(yc, yq, (size_t)ROWS * N_OUT, 1e-5f);
		kern_free(p->gpu, (void *)(uintptr_t)dq.data);
		kern_free(f32, (void *)(uintptr_t)df.data);
		specd_free(wq);
	}
	kern_free(p->gpu, dx), kern_free(p->gpu, dy);
	specd_free(wf), specd_free(x), specd_free(yc), specd_free(yq), specd_free(yf);
	kern_destroy(f32);
}

/* The batched kernel over every rows-per-pass size (1..16, then two passes) with 4
 * features per warp (n_out >= 4096, the last warp ragged) and a tail past the last
 * 8-element chunk, with a bias: the first n rows as a batch give the bits of the full
 * batch for every n, and the reference kernel (a second backend) gives them too. */
static void test_cuda_matmul__any_row_count_bitwise_equal_and_as_reference(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	enum { N_IN = 1004, N_OUT = 4101, ROWS = 18 };
	struct kern_cuda_config rc = {.matmul_reference = true};
	struct kern_ctx *ref = NULL;
	assert_int_equal(kern_cuda_create(&rc, &ref, NULL), SPECD_OK);
	size_t rb = kern_dtype_row_bytes(KERN_BF16, N_IN);
	float *wf = floats((size_t)N_IN * N_OUT, 7), *x = floats((size_t)ROWS * N_IN, 8);
	float *bias = floats(N_OUT, 9);
	unsigned char *wq = specd_malloc_array(N_OUT, rb);
	float *yc = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	float *yg = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	float *yn = specd_calloc((size_t)ROWS * N_OUT, sizeof(float));
	for (size_t o = 0; o < N_OUT; o++)
		kern_quant_row(KERN_BF16, wf + o * N_IN, wq + o * rb, N_IN);
	struct kern_mat w = kern_mat_packed(KERN_BF16, N_IN, N_OUT, wq), dw;
	assert_int_equal(kern_upload_mat(p->gpu, &w, &dw), SPECD_OK);
	float *dx = on_gpu(p->gpu, x, (size_t)ROWS * N_IN * sizeof(float));
	float *db = on_gpu(p->gpu, bias, N_OUT * sizeof(float));
	float *dy = on_gpu(p->gpu, NULL, (size_t)ROWS * N_OUT * sizeof(float));
	float *dyr = on_gpu(ref, NULL, (size_t)ROWS * N_OUT * sizeof(float));
	size_t all = (size_t)ROWS * N_OUT * sizeof(float);
	assert_int_equal(kern_matmul(p->cpu, yc, N_OUT, x, N_IN, ROWS, &w, bias), SPECD_OK);
	assert_int_equal(kern_matmul(p->gpu, dy, N_OUT, dx, N_IN, ROWS, &dw, db), SPECD_OK);
	assert_int_equal(kern_download(p->gpu, yg, dy, all), SPECD_OK);
	assert_close(yc, yg, (size_t)ROWS * N_OUT, 1e-5f);
	for (size_t n = 1; n < ROWS; n++) {
		assert_int_equal(kern_matmul(p->gpu, dy, N_OUT, dx, N_IN, n, &dw, db), SPECD_OK);
		assert_int_equal(kern_download(p->gpu, yn, dy, n * N_OUT * sizeof(float)), SPECD_OK);
		assert_memory_equal(yn, yg, n * N_OUT * sizeof(float));
	}
	assert_int_equal(kern_matmul(ref, dyr, N_OUT, dx, N_IN, ROWS, &dw, db), SPECD_OK);
	assert_int_equal(kern_download(ref, yn, dyr, all), SPECD_OK);
	assert_memory_equal(yn, yg, all);
	kern_free(ref, dyr);
	kern_destroy(ref);
	kern_free(p->gpu, (void *)(uintptr_t)dw.data);
	kern_free(p->gpu, dx), kern_free(p->gpu, db), kern_free(p->gpu, dy);
	specd_free(wf), specd_free(x), specd_free(bias), specd_free(wq);
	specd_free(yc), specd_free(yg), specd_free(yn);
}

/* A tree over 10 committed rows of slot 1 (0 root; 1, 2 its children; 3 child of 1). */
static void test_cuda_attention__tree_matches_cpu(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	enum { CTX = 32, HD = 64, HEADS = 4, KVH = 2, NT = 4 };
	size_t row = KVH * HD, cache = 2 * CTX * row, qd = HEADS * HD;
	float *k = floats(cache, 3), *v = floats(cache, 4), *q = floats(NT * qd, 5);
	float *oc = specd_calloc(NT * qd, sizeof(float)), *og = specd_calloc(NT * qd, sizeof(float));
	uint32_t slot[NT] = {1, 1, 1, 1}, pre[NT] = {10, 10, 10, 10}, rows[NT] = {10, 11, 12, 13};
	uint64_t bits[NT] = {0x1, 0x3, 0x5, 0xb};
	struct kern_attn a = {
		.n_tokens = NT, .n_heads = HEADS, .n_kv_heads = KVH, .head_dim = HD,
		.scale = 0.125f, .q = q, .ldq = qd, .out = oc, .ldo = qd,
		.kv = {.k = k, .v = v, .slot_stride = CTX * row, .row_stride = row, .n_rows = CTX},
		.mask = {.slot = slot, .n_prefix = pre, .row = rows, .tree = bits, .tree_words = 1},
	};
	struct kern_attn g = a;
	g.q = on_gpu(p->gpu, q, NT * qd * sizeof(float));
	g.out = on_gpu(p->gpu, NULL, NT * qd * sizeof(float));
	g.kv.k = on_gpu(p->gpu, k, cache * sizeof(float));
	g.kv.v = on_gpu(p->gpu, v, cache * sizeof(float));
	assert_int_equal(kern_attention(p->cpu, &a), SPECD_OK);
	assert_int_equal(kern_attention(p->gpu, &g), SPECD_OK);
	assert_int_equal(kern_download(p->gpu, og, g.out, NT * qd * sizeof(float)), SPECD_OK);
	assert_close(oc, og, NT * qd, 1e-5f);
	kern_free(p->gpu, (void *)(uintptr_t)g.q);
	kern_free(p->gpu, g.out);
	kern_free(p->gpu, (void *)(uintptr_t)g.kv.k);
	kern_free(p->gpu, (void *)(uintptr_t)g.kv.v);
	specd_free(k), specd_free(v), specd_free(q), specd_free(oc), specd_free(og);
}

static void test_cuda_argmax__ties_and_nan_as_cpu(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	float x[3][5] = {{1, 7, 7, 2, 0}, {NAN, 3, NAN, 3, -1}, {NAN, NAN, NAN, NAN, NAN}};
	uint32_t c[3], g[3];
	float *dx = on_gpu(p->gpu, x, sizeof(x));
	assert_int_equal(kern_argmax(p->cpu, c, &x[0][0], 5, 3, 5), SPECD_OK);
	assert_int_equal(kern_argmax(p->gpu, g, dx, 5, 3, 5), SPECD_OK);
	assert_memory_equal(c, g, sizeof(c));
	assert_int_equal(g[0], 1);
	assert_int_equal(g[1], 1);
	kern_free(p->gpu, dx);
}

/* The residual add and the norm in one op: y written over d, as the forward calls it;
 * x exactly the CPU's sum, y within rounding of the CPU's norm. */
static void test_cuda_add_rmsnorm__as_cpu(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	enum { ROWS = 3, N = 300 };
	static float x[ROWS * N], d[ROWS * N], w[N], xg[ROWS * N], yg[ROWS * N];
	for (int i = 0; i < ROWS * N; i++) {
		x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
		d[i] = (float)((i * 53) % 97) / 40.0f - 1.2f;
	}
	for (int i = 0; i < N; i++)
		w[i] = 0.5f + (float)(i % 7) / 7.0f;
	float *dx = on_gpu(p->gpu, x, sizeof(x)), *dd = on_gpu(p->gpu, d, sizeof(d));
	float *dw = on_gpu(p->gpu, w, sizeof(w));
	assert_int_equal(kern_add_rmsnorm(p->cpu, d, N, x, N, d, N, ROWS, N, w, 1e-5f), SPECD_OK);
	assert_int_equal(kern_add_rmsnorm(p->gpu, dd, N, dx, N, dd, N, ROWS, N, dw, 1e-5f),
			 SPECD_OK);
	assert_int_equal(kern_download(p->gpu, xg, dx, sizeof(xg)), SPECD_OK);
	assert_int_equal(kern_download(p->gpu, yg, dd, sizeof(yg)), SPECD_OK);
	assert_memory_equal(xg, x, sizeof(x));
	for (int i = 0; i < ROWS * N; i++)
		assert_float_equal(yg[i], d[i], 1e-6 * (1.0 + fabs(d[i])));
	kern_free(p->gpu, dx), kern_free(p->gpu, dd), kern_free(p->gpu, dw);
}

static void test_cuda_topk__ids_and_logits_as_cpu(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	float x[3][6] = {{1, 7, 7, 2, 0, -INFINITY},
			 {NAN, 3, NAN, 3, -1, 4},
			 {NAN, NAN, NAN, NAN, NAN, NAN}};
	int32_t c[3 * 4], g[3 * 4];
	float vc[3 * 4], vg[3 * 4];
	float *dx = on_gpu(p->gpu, x, sizeof(x));
	struct kern_topk_rows t = {.rows = 3, .n = 6, .x = &x[0][0], .ldx = 6, .k = 4, .ids = c,
				   .vals = vc};
	assert_int_equal(kern_topk(p->cpu, &t), SPECD_OK);
	t.x = dx, t.ids = g, t.vals = vg;
	assert_int_equal(kern_topk(p->gpu, &t), SPECD_OK);
	assert_memory_equal(c, g, sizeof(c));
	assert_memory_equal(vc, vg, sizeof(vc));
	assert_int_equal(g[0], 1);
	assert_int_equal(g[1], 2);
	assert_int_equal(g[8], -1);
	kern_free(p->gpu, dx);
}

/* A temperature so small that logit / T overflows: the sample op takes the limit
 * T -> 0+ per row as the CPU does (kernels/sample.h), token for token and with the
 * probe's probability, under each cut; and a normal temperature on the same rows. */
static void test_cuda_sample__tiny_temperature_as_cpu(void **state)
{
	enum { N = 4, ROWS = 5 };
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	const float x[ROWS][N] = {
		{20.0f, 15.0f, 0.0f, -1.0f},     {0.0f, -1.0f, -2.0f, -INFINITY},
		{-3e38f, NAN, -3.1e38f, -1e38f}, {15.0f, 20.0f, 20.0f, NAN},
		{20.0f, INFINITY, 15.0f, -1.0f},
	};
	const uint32_t probe[ROWS] = {0, 1, 3, 2, 0};
	const float temps[] = {1e-40f, 1e-38f, 1.0f};
	const struct kern_sample_params cuts[] = {
		{.top_p = 1.0f}, {.top_k = 2, .top_p = 1.0f}, {.top_p = 0.5f},
		{.top_k = 3, .top_p = 0.9f, .min_p = 0.1f},
	};
	float u[ROWS], wc[ROWS * N * 4], pc[ROWS], pg[ROWS];
	uint32_t c[ROWS], g[ROWS];
	float *dx = on_gpu(p->gpu, x, sizeof(x));
	void *work = on_gpu(p->gpu, NULL, kern_sample_work_bytes(ROWS, N));
	assert_true(kern_sample_work_bytes(ROWS, N) <= sizeof(wc));
	for (size_t t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
		for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
			struct kern_sample_rows s = {
				.rows = ROWS, .n = N, .x = &x[0][0], .ldx = N, .params = cuts[k],
				.u = u, .probe = probe, .work = wc, .out = c, .probe_p = pc,
			};
			s.params.temperature = temps[t];
			for (int d = 0; d < 16; d++) {
				for (int r = 0; r < ROWS; r++)
					u[r] = ((float)((d * 3 + r) % 16) + 0.5f) / 16.0f;
				s.x = &x[0][0], s.work = wc, s.out = c, s.probe_p = pc;
				assert_int_equal(kern_sample(p->cpu, &s), SPECD_OK);
				s.x = dx, s.work = work, s.out = g, s.probe_p = pg;
				assert_int_equal(kern_sample(p->gpu, &s), SPECD_OK);
				assert_memory_equal(c, g, sizeof(c));
				if (temps[t] < 1.0f) {
					assert_int_equal(g[0], 0);
					assert_int_equal(g[1], 0);
					assert_memory_equal(pc, pg, sizeof(pc));
				}
			}
		}
	}
	kern_free(p->gpu, dx);
	kern_free(p->gpu, work);
}

/* Greedy on stories260K: each step's token from CUDA equals the CPU's, and the 16
 * positions as one batch give, bitwise, the logits of the step-by-step run. */
/* The cache scatter: bitwise the CPU's, other rows untouched. */
static void test_cuda_set_rows__as_cpu(void **state)
{
	struct pair *p = *state;
	if (!p->gpu)
		skip();
	enum { DROWS = 50, LD = 96, N = 80, ROWS = 5 };
	float *d = floats(DROWS * LD, 7), *s = floats(ROWS * LD, 8);
	float *got = specd_calloc(DROWS * LD, sizeof(float));
	float *dd = on_gpu(p->gpu, d, DROWS * LD * sizeof(float));
	float *ds = on_gpu(p->gpu, s, ROWS * LD * sizeof(float));
	const uint32_t idx[ROWS] = {49, 3, 0, 17, 4};
	assert_int_equal(kern_set_rows(p->cpu, d, LD, idx, s, LD, ROWS, N), SPECD_OK);
	assert_int_equal(kern_set_rows(p->gpu, dd, LD, idx, ds, LD, ROWS, N), SPECD_OK);
	assert_int_equal(kern_download(p->gpu, got, dd, DROWS * LD * sizeof(float)), SPECD_OK);
	assert_memory_equal(got, d, DROWS * LD * sizeof(float));
	kern_free(p->gpu, dd);
	kern_free(p->gpu, ds);
	specd_free(d), specd_free(s), specd_free(got);
}

static void test_cuda_model__greedy_matches_cpu(void **state)
{
	struct pair *p = *state;
	char path[4096];
	if (!p->gpu || !ts_model_path("stories260K.gguf", path, sizeof(path)))
		skip();
	enum { N = 16 };
	struct model *mc = NULL, *mg = NULL;
	struct model_config cc = {.n_ctx = 64, .max_batch = 32, .kern = p->cpu};
	struct model_config gc = {.n_ctx = 64, .max_batch = 32, .kern = p->gpu};
	assert_int_equal(model_load(path, &cc, &mc, NULL), SPECD_OK);
	assert_int_equal(model_load(path, &gc, &mg, NULL), SPECD_OK);
	uint32_t V = model_hparams(mg)->n_vocab, toks[N + 1] = {1}, slots[N] = {0}, pos[N], tc, tg;
	float *lc = specd_malloc_array(V, sizeof(float));
	float *steps = specd_malloc_array((size_t)N * V, sizeof(float));
	float *batch = specd_malloc_array((size_t)N * V, sizeof(float));
	uint32_t idx[N];
	for (uint32_t i = 0; i < N; i++) {
		uint32_t zero = 0, at = i;
		struct model_batch b = {.n_tokens = 1, .tokens = &toks[i], .slots = &zero, .pos = &at,
					.n_out = 1, .out_idx = &zero, .logits = lc};
		assert_int_equal(model_forward(mc, &b, NULL), SPECD_OK);
		assert_int_equal(model_shard_argmax(mc, lc, 1, &tc, NULL), SPECD_OK);
		b.logits = steps + (size_t)i * V;
		assert_int_equal(model_forward(mg, &b, NULL), SPECD_OK);
		assert_int_equal(model_shard_argmax(mg, b.logits, 1, &tg, NULL), SPECD_OK);
		assert_int_equal(tc, tg);
		assert_close(lc, b.logits, V, 1e-3f);
		toks[i + 1] = tg;
		pos[i] = i, idx[i] = i;
	}
	assert_int_equal(kv_truncate(model_kv(mg), 0, 0), SPECD_OK);
	struct model_batch all = {.n_tokens = N, .tokens = toks, .slots = slots, .pos = pos,
				  .n_out = N, .out_idx = idx, .logits = batch};
	assert_int_equal(model_forward(mg, &all, NULL), SPECD_OK);
	assert_memory_equal(batch, steps, (size_t)N * V * sizeof(float));
	specd_free(lc), specd_free(steps), specd_free(batch);
	model_destroy(mc);
	model_destroy(mg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cuda_matmul__matches_cpu_and_is_batch_invariant),
		cmocka_unit_test(test_cuda_matmul__any_row_count_bitwise_equal_and_as_reference),
		cmocka_unit_test(test_cuda_matmul__blocks_as_stored_bitwise_dequantised_at_load),
		cmocka_unit_test(test_cuda_attention__tree_matches_cpu),
		cmocka_unit_test(test_cuda_argmax__ties_and_nan_as_cpu),
		cmocka_unit_test(test_cuda_topk__ids_and_logits_as_cpu),
		cmocka_unit_test(test_cuda_sample__tiny_temperature_as_cpu),
		cmocka_unit_test(test_cuda_add_rmsnorm__as_cpu),
		cmocka_unit_test(test_cuda_set_rows__as_cpu),
		cmocka_unit_test(test_cuda_model__greedy_matches_cpu),
	};
	return cmocka_run_group_tests(tests, setup_pair, teardown_pair);
}
