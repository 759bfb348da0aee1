/* specd-gpu-check ops: every op of the backend under test against the CPU backend on
 * random inputs (within rounding, or bitwise where the op is exact), each op's batch
 * invariance bitwise (a row alone gives the bits it gets in a batch), and the edge
 * cases the kernels treat apart: ragged tails, strided rows, NaN and infinities, wide
 * trees, grouped-query heads, refusals past the launch limits and a staging ring that
 * wraps. One thread. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "gpu_check.h"
#include "kernels/kern.h"
#include "kernels/sample.h"

#define SENTINEL 7.25f /* what a check puts where an op must not write */

/* x at row pitches other than n_in, against yg (dw's results for the rows of x
 * packed): unaligned (n_in + 1 floats from an odd offset: the reference kernel's
 * path), and aligned but wider (the batched kernel's) into y rows wider than n_out,
 * as into the Q, K and V columns of a fused output; bitwise yg, y's columns past
 * n_out untouched. */
static enum specd_status check_matmul_pitches(struct kern_ctx *gpu, const char *name,
					      const struct kern_mat *dw, const float *x,
					      size_t rows, const float *b_dev, const float *yg)
{
	size_t n_in = dw->n_in, n_out = dw->n_out;
	size_t ldu = n_in + 1, lda = (n_in + 3) / 4 * 4 + 4, ldy = n_out + 3;
	float *xu = specd_calloc(rows * ldu, sizeof(float));
	float *xa = specd_calloc(rows * lda, sizeof(float));
	float *y = specd_malloc_array(rows * ldy, sizeof(float));
	for (size_t r = 0; r < rows; r++) {
		memcpy(xu + r * ldu + 1, x + r * n_in, n_in * sizeof(float));
		memcpy(xa + r * lda, x + r * n_in, n_in * sizeof(float));
	}
	for (size_t i = 0; i < rows * ldy; i++)
		y[i] = SENTINEL;
	float *dxu = gpu_check_dev_floats(gpu, xu, rows * ldu);
	float *dxa = gpu_check_dev_floats(gpu, xa, rows * lda);
	float *dy = gpu_check_dev_floats(gpu, y, rows * ldy);
	enum specd_status st = kern_matmul(gpu, dy, n_out, dxu + 1, ldu, rows, dw, b_dev);
	if (st == SPECD_OK) {
		gpu_check_to_host(gpu, y, dy, rows * n_out * sizeof(float));
		gpu_check_expect(gpu_check_bitwise(y, yg, rows * n_out), "inv", name,
				 "unaligned x == packed x (bitwise)");
		for (size_t i = 0; i < rows * ldy; i++)
			y[i] = SENTINEL;
		st = kern_upload(gpu, dy, y, rows * ldy * sizeof(float));
	}
	if (st == SPECD_OK)
		st = kern_matmul(gpu, dy, ldy, dxa, lda, rows, dw, b_dev);
	if (st == SPECD_OK) {
		bool same = true, kept = true;
		gpu_check_to_host(gpu, y, dy, rows * ldy * sizeof(float));
		for (size_t r = 0; r < rows; r++) {
			same &= gpu_check_bitwise(y + r * ldy, yg + r * n_out, n_out);
			for (size_t o = n_out; o < ldy; o++)
				kept &= y[r * ldy + o] == SENTINEL;
		}
		gpu_check_expect(same && kept, "inv", name,
				 "wider x and y rows == packed (bitwise; y's gaps untouched)");
	}
	kern_free(gpu, dxu), kern_free(gpu, dxa), kern_free(gpu, dy);
	specd_free(xu), specd_free(xa), specd_free(y);
	return st;
}

/* The matmul against the CPU, then its batch invariance, bitwise: every row alone,
 * the last n rows as a batch for every n (each rows-per-pass variant of the kernel),
 * x and y at other row pitches (check_matmul_pitches), and the reference kernel (ref,
 * a second backend; may be NULL) on the whole batch. */
static void check_matmul(struct kern_ctx *cpu, struct kern_ctx *gpu, struct kern_ctx *ref,
			 enum kern_dtype type, size_t n_in, size_t n_out, size_t rows,
			 bool with_bias)
{
	char name[96];
	snprintf(name, sizeof(name), "matmul %s %zux%zu rows %zu%s", kern_dtype_name(type), n_out,
		 n_in, rows, with_bias ? " +bias" : "");
	size_t rb = kern_dtype_row_bytes(type, n_in);
	float *wf = gpu_check_rnd_floats(n_in * n_out), *x = gpu_check_rnd_floats(rows * n_in);
	float *bias = gpu_check_rnd_floats(n_out);
	unsigned char *wq = specd_malloc_array(n_out, rb);
	float *yc = specd_calloc(rows * n_out, sizeof(float));
	float *yg = specd_calloc(rows * n_out, sizeof(float));
	float *y1 = specd_calloc(rows * n_out, sizeof(float));
	for (size_t o = 0; o < n_out; o++)
		kern_quant_row(type, wf + o * n_in, wq + o * rb, n_in);
	struct kern_mat w = kern_mat_packed(type, n_in, n_out, wq), dw = {0};
	enum specd_status st = kern_upload_mat(gpu, &w, &dw);
	float *dx = gpu_check_dev_floats(gpu, x, rows * n_in);
	float *dy = gpu_check_dev_floats(gpu, NULL, rows * n_out);
	float *db = gpu_check_dev_floats(gpu, bias, n_out);
	float *dyr = ref ? gpu_check_dev_floats(ref, NULL, rows * n_out) : NULL;
	const float *b_host = with_bias ? bias : NULL, *b_dev = with_bias ? db : NULL;
	bool alone = true, any_n = true;
	if (st == SPECD_OK && (st = kern_matmul(cpu, yc, n_out, x, n_in, rows, &w, b_host)) ==
				      SPECD_OK &&
	    (st = kern_matmul(gpu, dy, n_out, dx, n_in, rows, &dw, b_dev)) == SPECD_OK) {
		gpu_check_to_host(gpu, yg, dy, rows * n_out * sizeof(float));
		gpu_check_compare(name, yc, yg, rows * n_out, 1e-5);
		/* Each row alone must give the bits it got in the batch. */
		for (size_t r = 0; r < rows && st == SPECD_OK; r++) {
			st = kern_matmul(gpu, dy, n_out, dx + r * n_in, n_in, 1, &dw, b_dev);
			gpu_check_to_host(gpu, y1, dy, n_out * sizeof(float));
			alone = alone && gpu_check_bitwise(y1, yg + r * n_out, n_out);
		}
		gpu_check_expect(alone, "inv", name, "row alone == row in batch (bitwise)");
		/* The last n rows as one batch, for every n. */
		for (size_t n = 2; n <= rows && st == SPECD_OK; n++) {
			size_t r0 = rows - n;
			st = kern_matmul(gpu, dy, n_out, dx + r0 * n_in, n_in, n, &dw, b_dev);
			gpu_check_to_host(gpu, y1, dy, n * n_out * sizeof(float));
			any_n = any_n && gpu_check_bitwise(y1, yg + r0 * n_out, n * n_out);
		}
		if (rows > 1)
			gpu_check_expect(any_n, "inv", name,
					 "any row count == full batch (bitwise)");
	}
	if (st == SPECD_OK)
		st = check_matmul_pitches(gpu, name, &dw, x, rows, b_dev, yg);
	/* The reference backend keeps its own copy: quantised ones dequantised to f32 at
	 * upload (kern_cuda_config.dequant_at_load), against the blocks read as stored. */
	struct kern_mat dwr = {0};
	if (st == SPECD_OK && ref && (st = kern_upload_mat(ref, &w, &dwr)) == SPECD_OK &&
	    (st = kern_matmul(ref, dyr, n_out, dx, n_in, rows, &dwr, b_dev)) == SPECD_OK) {
		gpu_check_to_host(ref, y1, dyr, rows * n_out * sizeof(float));
		gpu_check_expect(gpu_check_bitwise(y1, yg, rows * n_out), "ref", name,
				 dwr.type == w.type ? "reference kernel == batched (bitwise)"
						    : "reference kernel on f32 dequantised at load "
						      "== batched on blocks (bitwise)");
	}
	if (ref)
		kern_free(ref, (void *)(uintptr_t)dwr.data);
	if (st != SPECD_OK) {
		printf("op %s: %s FAIL\n", name, specd_status_str(st));
		gpu_check_fail();
	}
	kern_free(gpu, (void *)(uintptr_t)dw.data);
	kern_free(gpu, dx), kern_free(gpu, dy), kern_free(gpu, db);
	if (ref)
		kern_free(ref, dyr);
	specd_free(wf), specd_free(x), specd_free(bias), specd_free(wq);
	specd_free(yc), specd_free(yg), specd_free(y1);
}

static void check_get_rows(struct kern_ctx *cpu, struct kern_ctx *gpu, enum kern_dtype type,
			   size_t n_in, size_t n_out)
{
	size_t rows = 5;
	size_t rb = kern_dtype_row_bytes(type, n_in);
	float *wf = gpu_check_rnd_floats(n_in * n_out);
	unsigned char *wq = specd_malloc_array(n_out, rb);
	for (size_t o = 0; o < n_out; o++)
		kern_quant_row(type, wf + o * n_in, wq + o * rb, n_in);
	uint32_t ids[5] = {3, 99, 0, 3, 42};
	for (size_t i = 0; i < rows; i++)
		ids[i] %= (uint32_t)n_out;
	float *yc = specd_calloc(rows * n_in, sizeof(float));
	float *yg = specd_calloc(rows * n_in, sizeof(float));
	struct kern_mat w = kern_mat_packed(type, n_in, n_out, wq), dw;
	float *dy = gpu_check_dev_from(gpu, NULL, rows * n_in * sizeof(float));
	char name[64];
	snprintf(name, sizeof(name), "get_rows %s n_in %zu", kern_dtype_name(type), n_in);
	if (kern_upload_mat(gpu, &w, &dw) == SPECD_OK) {
		if (kern_get_rows(cpu, yc, n_in, &w, ids, rows) == SPECD_OK &&
		    kern_get_rows(gpu, dy, n_in, &dw, ids, rows) == SPECD_OK) {
			gpu_check_to_host(gpu, yg, dy, rows * n_in * sizeof(float));
			gpu_check_expect(gpu_check_bitwise(yc, yg, rows * n_in), "op", name,
					 "equal to the CPU (bitwise)");
		} else {
			printf("op %s FAIL (call)\n", name);
			gpu_check_fail();
		}
		kern_free(gpu, (void *)(uintptr_t)dw.data);
	}
	kern_free(gpu, dy);
	specd_free(wf), specd_free(wq), specd_free(yc), specd_free(yg);
}

/* The row ops' inputs, on both sides: rows x n logits-like x, random u and w. Each
 * check below returns at its first failed call (GPU_CHECK_OK) and the next goes on. */
struct rows_fixture {
	struct kern_ctx *cpu, *gpu;
	size_t rows, n, bytes;
	float *x, *w, *u;           /* host */
	float *c, *g, *g1;          /* host scratch: the CPU's result, the device's */
	float *dx, *dw, *dy, *du;   /* device */
};

static void check_norms(struct rows_fixture *f)
{
	size_t rows = f->rows, n = f->n, bytes = f->bytes;
	float *c = f->c, *g = f->g;
	GPU_CHECK_OK(kern_rmsnorm(f->cpu, c, n, f->x, n, rows, n, f->w, 1e-5f));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dx, f->x, bytes));
	GPU_CHECK_OK(kern_rmsnorm(f->gpu, f->dy, n, f->dx, n, rows, n, f->dw, 1e-5f));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_compare("rmsnorm 7x1000", c, g, rows * n, 1e-6);
	GPU_CHECK_OK(kern_rmsnorm(f->gpu, f->dy, n, f->dx + 3 * n, n, 1, n, f->dw, 1e-5f));
	gpu_check_to_host(f->gpu, f->g1, f->dy, n * sizeof(float));
	gpu_check_expect(gpu_check_bitwise(f->g1, g + 3 * n, n), "inv", "rmsnorm",
			 "row alone == row in batch (bitwise)");

	/* The residual add and the norm in one op: x and y as the CPU's within rounding,
	 * and bitwise the device's own add then rmsnorm. */
	float *c2 = specd_malloc_array(rows * n, sizeof(float));
	float *g2 = specd_malloc_array(rows * n, sizeof(float));
	float *dz = gpu_check_dev_from(f->gpu, f->x, bytes);
	float *du2 = gpu_check_dev_from(f->gpu, f->u, bytes);
	memcpy(c, f->x, bytes);
	memcpy(c2, f->u, bytes);
	enum specd_status st = kern_add_rmsnorm(f->cpu, c2, n, c, n, c2, n, rows, n, f->w, 1e-5f);
	if (st == SPECD_OK)
		st = kern_upload(f->gpu, f->dx, f->x, bytes);
	if (st == SPECD_OK)
		st = kern_add_rmsnorm(f->gpu, du2, n, f->dx, n, du2, n, rows, n, f->dw, 1e-5f);
	if (st == SPECD_OK) {
		gpu_check_to_host(f->gpu, g, f->dx, bytes);
		gpu_check_to_host(f->gpu, g2, du2, bytes);
		gpu_check_compare("add_rmsnorm x", c, g, rows * n, 1e-6);
		gpu_check_compare("add_rmsnorm y", c2, g2, rows * n, 1e-6);
		st = kern_add(f->gpu, dz, f->du, rows * n);
	}
	if (st == SPECD_OK)
		st = kern_rmsnorm(f->gpu, f->dy, n, dz, n, rows, n, f->dw, 1e-5f);
	if (st == SPECD_OK) {
		gpu_check_to_host(f->gpu, g, f->dy, bytes);
		gpu_check_expect(gpu_check_bitwise(g, g2, rows * n), "op", "add_rmsnorm",
				 "equal to add then rmsnorm on the device (bitwise)");
	} else {
		printf("op call failed: add_rmsnorm: %s\n", specd_status_str(st));
		gpu_check_fail();
	}
	kern_free(f->gpu, dz), kern_free(f->gpu, du2);
	specd_free(c2), specd_free(g2);
}

static void check_elementwise(struct rows_fixture *f)
{
	size_t rows = f->rows, n = f->n, bytes = f->bytes;
	float *c = f->c, *g = f->g;
	memcpy(c, f->x, bytes);
	GPU_CHECK_OK(kern_silu_mul(f->cpu, c, f->u, rows * n));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dy, f->x, bytes));
	GPU_CHECK_OK(kern_silu_mul(f->gpu, f->dy, f->du, rows * n));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_compare("silu_mul", c, g, rows * n, 1e-6);

	memcpy(c, f->x, bytes);
	GPU_CHECK_OK(kern_add(f->cpu, c, f->u, rows * n));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dy, f->x, bytes));
	GPU_CHECK_OK(kern_add(f->gpu, f->dy, f->du, rows * n));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_expect(gpu_check_bitwise(c, g, rows * n), "op", "add",
			 "equal to the CPU (bitwise)");

	memcpy(c, f->x, bytes);
	GPU_CHECK_OK(kern_softmax(f->cpu, c, n, rows, n));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dy, f->x, bytes));
	GPU_CHECK_OK(kern_softmax(f->gpu, f->dy, n, rows, n));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_compare("softmax 7x1000", c, g, rows * n, 1e-5);

	GPU_CHECK_OK(kern_copy(f->gpu, f->dy, f->du, bytes));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_expect(gpu_check_bitwise(g, f->u, rows * n), "op", "copy", "equal to its source");
}

/* Row r of the topk of rows (k ids, vals, lse) on the device equals what a call of
 * its own gives, bitwise. */
static bool topk_row_alone(struct rows_fixture *f, const float *drows, size_t r, uint32_t k,
			   const int32_t *ids, const float *lse)
{
	int32_t t1[KERN_TOPK_MAX];
	float l1;
	struct kern_topk_rows tr = {.rows = 1, .n = f->n, .x = drows + r * f->n, .ldx = f->n,
				    .k = k, .ids = t1, .lse = &l1};
	if (kern_topk(f->gpu, &tr) != SPECD_OK)
		return false;
	return memcmp(t1, ids + r * k, k * sizeof(int32_t)) == 0 &&
	       memcmp(&l1, &lse[r], sizeof(l1)) == 0;
}

/* argmax and topk on rows with ties, NaNs, an all-NaN row, an all -inf row and a row
 * with fewer real values than k: exactly what the CPU picks. */
static void check_picks(struct rows_fixture *f)
{
	size_t rows = f->rows, n = f->n, bytes = f->bytes;
	float *c = f->c;
	memcpy(c, f->x, bytes);
	c[1 * n + 10] = c[1 * n + 20] = 100.0f;
	c[2 * n + 0] = NAN;
	c[2 * n + 5] = 50.0f;
	c[2 * n + 6] = NAN;
	for (size_t i = 0; i < n; i++) {
		c[3 * n + i] = NAN;
		c[4 * n + i] = -INFINITY;
		if (i % 199 != 3) /* 6 real values: at 3, 202, ..., 998 */
			c[6 * n + i] = NAN;
	}
	uint32_t ac[7], ag[7];
	GPU_CHECK_OK(kern_argmax(f->cpu, ac, c, n, rows, n));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dy, c, bytes));
	GPU_CHECK_OK(kern_argmax(f->gpu, ag, f->dy, n, rows, n));
	gpu_check_expect(memcmp(ac, ag, sizeof(ac)) == 0, "op", "argmax",
			 "equal to the CPU (ties, NaN)");

	/* The same rows' k best ids, for the largest k and a small one: ids and logits
	 * exact, log-normalisers within rounding (NaN where the row has a NaN), a row
	 * alone as in the batch. */
	static const uint32_t ks[2] = {KERN_TOPK_MAX, 3};
	for (int ki = 0; ki < 2; ki++) {
		uint32_t k = ks[ki];
		int32_t tc[7 * KERN_TOPK_MAX], tg[7 * KERN_TOPK_MAX];
		float vc[7 * KERN_TOPK_MAX], vg[7 * KERN_TOPK_MAX], lc[7], lg[7];
		struct kern_topk_rows tr = {.rows = rows, .n = n, .x = c, .ldx = n, .k = k,
					    .ids = tc, .vals = vc, .lse = lc};
		GPU_CHECK_OK(kern_topk(f->cpu, &tr));
		tr.x = f->dy, tr.ids = tg, tr.vals = vg, tr.lse = lg;
		GPU_CHECK_OK(kern_topk(f->gpu, &tr));
		bool lse_ok = true;
		for (size_t r = 0; r < rows; r++)
			lse_ok &= isnan(lc[r]) ? isnan(lg[r])
					       : fabsf(lg[r] - lc[r]) <=
							 1e-6f * fmaxf(1.0f, fabsf(lc[r]));
		char name[32];
		snprintf(name, sizeof(name), "topk k=%u", k);
		gpu_check_expect(memcmp(tc, tg, rows * k * sizeof(int32_t)) == 0 &&
					 gpu_check_bitwise(vc, vg, rows * k), "op", name,
				 "ids and logits equal to the CPU (ties, NaN, -inf, short rows)");
		gpu_check_expect(lse_ok, "op", name, "log-normaliser within 1e-6 of the CPU's");
		/* Row 5 is plain (its lse a number), row 6 has 6 values. */
		gpu_check_expect(topk_row_alone(f, f->dy, 5, k, tg, lg) &&
					 topk_row_alone(f, f->dy, 6, k, tg, lg), "inv", name,
				 "row alone == row in batch (bitwise)");
	}
}

/* The cache scatter as the forward makes it: 3 rows of 900 floats from a wider
 * buffer at an offset (the K|V columns of the fused projection) into rows 6, 0, 4 of
 * a cache of another pitch; and rope over a row stride, the columns past the heads
 * (V's) left as they were. */
static void check_scatter_rope(struct rows_fixture *f)
{
	size_t rows = f->rows, n = f->n, bytes = f->bytes;
	float *c = f->c, *g = f->g;
	const uint32_t idx[3] = {6, 0, 4};
	memcpy(c, f->x, bytes);
	GPU_CHECK_OK(kern_set_rows(f->cpu, c, 950, idx, f->u + 37, n, 3, 900));
	GPU_CHECK_OK(kern_upload(f->gpu, f->dy, f->x, bytes));
	GPU_CHECK_OK(kern_set_rows(f->gpu, f->dy, 950, idx, f->du + 37, n, 3, 900));
	gpu_check_to_host(f->gpu, g, f->dy, bytes);
	gpu_check_expect(gpu_check_bitwise(c, g, rows * n), "op", "set_rows",
			 "equal to the CPU (bitwise; source and cache pitches differ)");

	for (int layout = 0; layout < 2; layout++) {
		size_t heads = 4, hd = 128, ld = heads * hd + 64;
		uint32_t pos[7] = {0, 1, 2, 17, 300, 4095, 100000};
		enum kern_rope_layout lay = layout ? KERN_ROPE_HALVES : KERN_ROPE_ADJACENT;
		memcpy(c, f->x, rows * ld * sizeof(float));
		GPU_CHECK_OK(kern_rope(f->cpu, c, ld, rows, heads, hd, pos, 1e6f, lay));
		GPU_CHECK_OK(kern_upload(f->gpu, f->dy, f->x, rows * ld * sizeof(float)));
		GPU_CHECK_OK(kern_rope(f->gpu, f->dy, ld, rows, heads, hd, pos, 1e6f, lay));
		gpu_check_to_host(f->gpu, g, f->dy, rows * ld * sizeof(float));
		gpu_check_compare(layout ? "rope halves" : "rope adjacent", c, g, rows * ld, 1e-6);
		bool kept = true;
		for (size_t r = 0; r < rows; r++)
			kept &= gpu_check_bitwise(g + r * ld + heads * hd,
						  f->x + r * ld + heads * hd, 64);
		gpu_check_expect(kept, "op", layout ? "rope halves" : "rope adjacent",
				 "columns past the heads untouched (a row stride)");
	}
}

static void check_rows_ops(struct kern_ctx *cpu, struct kern_ctx *gpu)
{
	struct rows_fixture f = {.cpu = cpu, .gpu = gpu, .rows = 7, .n = 1000};
	size_t cells = f.rows * f.n;
	f.bytes = cells * sizeof(float);
	f.x = gpu_check_rnd_floats(cells), f.u = gpu_check_rnd_floats(cells);
	f.w = gpu_check_rnd_floats(f.n);
	f.c = specd_malloc_array(cells, sizeof(float));
	f.g = specd_malloc_array(cells, sizeof(float));
	f.g1 = specd_malloc_array(f.n, sizeof(float));
	f.dx = gpu_check_dev_from(gpu, f.x, f.bytes);
	f.dw = gpu_check_dev_floats(gpu, f.w, f.n);
	f.dy = gpu_check_dev_from(gpu, NULL, f.bytes), f.du = gpu_check_dev_from(gpu, f.u, f.bytes);
	for (size_t i = 0; i < cells; i++)
		f.x[i] *= 4.0f; /* logits-like spread for softmax */
	check_norms(&f);
	check_elementwise(&f);
	check_picks(&f);
	check_scatter_rope(&f);
	kern_free(gpu, f.dx), kern_free(gpu, f.dw), kern_free(gpu, f.dy), kern_free(gpu, f.du);
	specd_free(f.x), specd_free(f.w), specd_free(f.u);
	specd_free(f.c), specd_free(f.g), specd_free(f.g1);
}

/* Attention over a random cache of 2 slots, laid out as model/kv.c lays it out (a row
 * holds a token's keys, then its values): a causal batch from both slots, each token
 * alone, and a tree whose chain node must equal the same rows seen causally. */
static void check_attention(struct kern_ctx *cpu, struct kern_ctx *gpu, size_t hd)
{
	enum { N_CTX = 64, SLOTS = 2, HEADS = 4, KV_HEADS = 2, NT = 6 };
	size_t kv_dim = KV_HEADS * hd, row = 2 * kv_dim, slot_stride = N_CTX * row;
	size_t qd = HEADS * hd, cache = SLOTS * slot_stride;
	float *kv = gpu_check_rnd_floats(cache), *q = gpu_check_rnd_floats(NT * qd);
	float *k = kv, *v = kv + kv_dim;
	float *oc = specd_calloc(NT * qd, sizeof(float)), *og = specd_calloc(NT * qd, sizeof(float));
	float *o1 = specd_calloc(qd, sizeof(float));
	float *dk = gpu_check_dev_from(gpu, kv, cache * sizeof(float)), *dv = dk + kv_dim;
	float *dq = gpu_check_dev_from(gpu, q, NT * qd * sizeof(float));
	float *dout = gpu_check_dev_from(gpu, NULL, NT * qd * sizeof(float));
	uint32_t slot[NT] = {0, 0, 0, 1, 1, 1}, n_prefix[NT] = {20, 21, 22, 1, 2, 40};
	struct kern_attn a = {
		.n_tokens = NT, .n_heads = HEADS, .n_kv_heads = KV_HEADS, .head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd), .q = q, .ldq = qd, .out = oc, .ldo = qd,
		.kv = {.k = k, .v = v, .slot_stride = slot_stride, .row_stride = row, .n_rows = N_CTX},
		.mask = {.slot = slot, .n_prefix = n_prefix},
	};
	struct kern_attn ag = a;
	ag.q = dq, ag.out = dout, ag.kv.k = dk, ag.kv.v = dv;
	char name[64];
	snprintf(name, sizeof(name), "attention causal hd %zu", hd);
	GPU_CHECK_OK(kern_attention(cpu, &a));
	GPU_CHECK_OK(kern_attention(gpu, &ag));
	gpu_check_to_host(gpu, og, dout, NT * qd * sizeof(float));
	gpu_check_compare(name, oc, og, NT * qd, 1e-5);
	bool inv = true;
	for (size_t t = 0; t < NT; t++) {
		struct kern_attn one = ag;
		one.n_tokens = 1, one.q = dq + t * qd;
		one.mask.slot = &slot[t], one.mask.n_prefix = &n_prefix[t];
		GPU_CHECK_OK(kern_attention(gpu, &one));
		gpu_check_to_host(gpu, o1, dout, qd * sizeof(float));
		inv = inv && gpu_check_bitwise(o1, og + t * qd, qd);
	}
	gpu_check_expect(inv, "inv", name, "token alone == token in batch (bitwise)");

	/* Tree over slot 0 with 10 committed rows: 0 root; 1, 2 children of 0; 3 child of 1. */
	uint32_t tslot[4] = {0, 0, 0, 0}, tpre[4] = {10, 10, 10, 10}, trow[4] = {10, 11, 12, 13};
	uint64_t bits[4] = {0x1, 0x3, 0x5, 0xb};
	struct kern_attn t = a;
	t.n_tokens = 4;
	t.mask = (struct kern_attn_mask){.slot = tslot, .n_prefix = tpre, .row = trow, .tree = bits,
					 .tree_words = 1};
	struct kern_attn tg = t;
	tg.q = dq, tg.out = dout, tg.kv.k = dk, tg.kv.v = dv;
	snprintf(name, sizeof(name), "attention tree hd %zu", hd);
	GPU_CHECK_OK(kern_attention(cpu, &t));
	GPU_CHECK_OK(kern_attention(gpu, &tg));
	gpu_check_to_host(gpu, og, dout, 4 * qd * sizeof(float));
	gpu_check_compare(name, oc, og, 4 * qd, 1e-5);
	/* Node 1 sees rows 0..11, as a causal token at row 11 does. */
	struct kern_attn chain = ag;
	uint32_t pre12 = 12;
	chain.n_tokens = 1, chain.q = dq + qd;
	chain.mask.slot = tslot, chain.mask.n_prefix = &pre12;
	GPU_CHECK_OK(kern_attention(gpu, &chain));
	gpu_check_to_host(gpu, o1, dout, qd * sizeof(float));
	gpu_check_expect(gpu_check_bitwise(o1, og + qd, qd), "inv", name,
			 "tree chain == causal rows (bitwise)");

	kern_free(gpu, dk), kern_free(gpu, dq), kern_free(gpu, dout);
	specd_free(kv), specd_free(q), specd_free(oc), specd_free(og), specd_free(o1);
}

/* A tree wider than one mask word (70 nodes: a chain of 66, then branches off its
 * root, its middle, its tip and a branch) with 8 query heads reading 2 KV heads
 * (groups of 4): against the CPU, and the chain's tip (node 65, whose rows span both
 * words) bitwise a causal token's over the same rows. */
static void check_attention_wide_tree(struct kern_ctx *cpu, struct kern_ctx *gpu, size_t hd)
{
	enum { N_CTX = 128, HEADS = 8, KV_HEADS = 2, NT = 70, CHAIN = 66, WORDS = 2, PRE = 10 };
	static const uint32_t branch_parent[NT - CHAIN] = {0, 30, CHAIN - 1, CHAIN};
	size_t kv_dim = KV_HEADS * hd, row = 2 * kv_dim, qd = HEADS * hd, cache = N_CTX * row;
	float *kv = gpu_check_rnd_floats(cache), *q = gpu_check_rnd_floats(NT * qd);
	float *oc = specd_calloc(NT * qd, sizeof(float)), *og = specd_calloc(NT * qd, sizeof(float));
	float *o1 = specd_calloc(qd, sizeof(float));
	float *dk = gpu_check_dev_floats(gpu, kv, cache), *dq = gpu_check_dev_floats(gpu, q, NT * qd);
	float *dout = gpu_check_dev_floats(gpu, NULL, NT * qd);
	uint32_t slot[NT], pre[NT], rows[NT];
	uint64_t bits[NT * WORDS] = {0};
	for (uint32_t t = 0; t < NT; t++) {
		slot[t] = 0, pre[t] = PRE, rows[t] = PRE + t;
		uint32_t parent = t < CHAIN ? t - 1 : branch_parent[t - CHAIN];
		for (uint32_t w = 0; t > 0 && w < WORDS; w++) /* the parent's ancestors, */
			bits[t * WORDS + w] = bits[parent * WORDS + w];
		bits[t * WORDS + t / 64] |= 1ull << (t % 64); /* and itself */
	}
	struct kern_attn a = {
		.n_tokens = NT, .n_heads = HEADS, .n_kv_heads = KV_HEADS, .head_dim = hd,
		.scale = 1.0f / sqrtf((float)hd), .q = q, .ldq = qd, .out = oc, .ldo = qd,
		.kv = {.k = kv, .v = kv + kv_dim, .slot_stride = cache, .row_stride = row,
		       .n_rows = N_CTX},
		.mask = {.slot = slot, .n_prefix = pre, .row = rows, .tree = bits, .tree_words = WORDS},
	};
	struct kern_attn ag = a, tip = a;
	ag.q = dq, ag.out = dout, ag.kv.k = dk, ag.kv.v = dk + kv_dim;
	char name[64];
	snprintf(name, sizeof(name), "attention tree of %d, GQA 4, hd %zu", NT, hd);
	enum specd_status st = kern_attention(cpu, &a);
	if (st == SPECD_OK)
		st = kern_attention(gpu, &ag);
	if (st == SPECD_OK) {
		gpu_check_to_host(gpu, og, dout, NT * qd * sizeof(float));
		gpu_check_compare(name, oc, og, NT * qd, 1e-5);
		uint32_t causal = PRE + CHAIN;
		tip = ag;
		tip.n_tokens = 1, tip.q = dq + (CHAIN - 1) * qd;
		tip.mask = (struct kern_attn_mask){.slot = slot, .n_prefix = &causal};
		st = kern_attention(gpu, &tip);
	}
	if (st == SPECD_OK) {
		gpu_check_to_host(gpu, o1, dout, qd * sizeof(float));
		gpu_check_expect(gpu_check_bitwise(o1, og + (CHAIN - 1) * qd, qd), "inv", name,
				 "chain tip (both words) == causal rows (bitwise)");
	} else {
		printf("op %s: %s FAIL\n", name, specd_status_str(st));
		gpu_check_fail();
	}
	kern_free(gpu, dk), kern_free(gpu, dq), kern_free(gpu, dout);
	specd_free(kv), specd_free(q), specd_free(oc), specd_free(og), specd_free(o1);
}

/* One call of the sample op on cpu and on gpu (s's x and work are the CPU's; dx and
 * dwork the device's copies): the same tokens, and probe probabilities within 1e-5. */
static bool sample_same(struct kern_ctx *cpu, struct kern_ctx *gpu, struct kern_sample_rows s,
			const float *dx, void *dwork)
{
	enum { MAX_ROWS = 32 };
	uint32_t tc[MAX_ROWS], tg[MAX_ROWS];
	float pc[MAX_ROWS], pg[MAX_ROWS];
	bool with_p = s.probe_p != NULL;
	s.out = tc, s.probe_p = with_p ? pc : NULL;
	if (s.rows > MAX_ROWS || kern_sample(cpu, &s) != SPECD_OK)
		return false;
	s.x = dx, s.work = dwork, s.out = tg, s.probe_p = with_p ? pg : NULL;
	if (kern_sample(gpu, &s) != SPECD_OK)
		return false;
	bool same = memcmp(tc, tg, s.rows * sizeof(uint32_t)) == 0;
	for (size_t r = 0; with_p && r < s.rows; r++)
		same &= fabsf(pg[r] - pc[r]) <= 1e-5f * (pc[r] > 0 ? pc[r] : 1.0f);
	return same;
}

/* The sample op's rarer branches against the CPU, on 20 rows of 1000 logits: a +inf
 * logit (it takes all the mass) and two (they share it), a probe outside the kept set
 * (its probability 0; excluding it leaves p as it was), no probe (probe >= n), NaN
 * holes, without probe_p; then rows with nothing above -inf (all -inf, all NaN),
 * which both backends refuse, the device writing nothing. */
static void check_sample_edges(struct kern_ctx *cpu, struct kern_ctx *gpu)
{
	enum { ROWS = 20, N = 1000 };
	float *x = gpu_check_rnd_floats(ROWS * N), *u = gpu_check_rnd_floats(ROWS);
	uint32_t probe[ROWS];
	for (size_t i = 0; i < ROWS * N; i++)
		x[i] = i / N == 4 && i % 17 == 0 ? NAN : 4.0f * x[i];
	x[0 * N + 7] = INFINITY;
	x[1 * N + 3] = x[1 * N + 9] = INFINITY;
	for (size_t r = 0; r < ROWS; r++) {
		size_t best = 0, worst = 0;
		for (size_t i = 0; i < N; i++) {
			best = x[r * N + i] > x[r * N + best] ? i : best;
			worst = x[r * N + i] < x[r * N + worst] ? i : worst;
		}
		u[r] = (u[r] + 1.0f) * 0.5f;
		probe[r] = r == 2 ? (uint32_t)worst : r == 3 ? N : r == 1 ? 9 : (uint32_t)best;
	}
	size_t wb = kern_sample_work_bytes(ROWS, N);
	void *hwork = specd_malloc_array(1, wb), *dwork = gpu_check_dev_from(gpu, NULL, wb);
	float *dx = gpu_check_dev_floats(gpu, x, ROWS * N);
	float pp[ROWS];
	struct kern_sample_rows s = {
		.rows = ROWS, .n = N, .x = x, .ldx = N, .u = u, .probe = probe, .work = hwork,
		.probe_p = pp,
		.params = {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f},
	};
	bool same = hwork && sample_same(cpu, gpu, s, dx, dwork);
	s.exclude_probe = true;
	same = same && sample_same(cpu, gpu, s, dx, dwork);
	s.probe_p = NULL;
	same = same && sample_same(cpu, gpu, s, dx, dwork);
	gpu_check_expect(same, "op", "sample edges", "equal to the CPU (+inf, probes, NaN)");

	bool refused = true;
	for (int kind = 0; kind < 2; kind++) { /* row 1: all -inf, then all NaN */
		uint32_t out[2] = {12345, 12345};
		for (size_t i = 0; i < N; i++)
			x[N + i] = kind ? NAN : -INFINITY;
		s = (struct kern_sample_rows){.rows = 2, .n = N, .x = x, .ldx = N, .u = u,
					      .work = hwork, .out = out, .params = {.temperature = 1.0f,
					      .top_p = 1.0f}};
		refused &= kern_sample(cpu, &s) == SPECD_INVAL &&
			   kern_upload(gpu, dx, x, 2 * N * sizeof(float)) == SPECD_OK;
		s.x = dx, s.work = dwork;
		refused &= kern_sample(gpu, &s) == SPECD_INVAL && out[0] == 12345 && out[1] == 12345;
	}
	gpu_check_expect(refused, "op", "sample edges",
			 "a row with nothing above -inf refused, nothing written");
	kern_free(gpu, dwork), kern_free(gpu, dx);
	specd_free(x), specd_free(u), specd_free(hwork);
}

/* What no backend may accept: an allocation whose size cannot be rounded up
 * (kern_sample_work_bytes' SIZE_MAX); a call of zero rows every backend takes, as the
 * CPU does, whatever its other fields say; and on CUDA the launch limits: more rows than a
 * grid's y dimension holds, rows of 2^31 or more logits, refused before any launch
 * (buffers sized so that a missing refusal reads nothing outside them). */
static void check_limits(struct kern_ctx *gpu, bool cuda)
{
	enum { ROWS = 65536 };
	void *p = NULL;
	gpu_check_expect(kern_alloc(gpu, SIZE_MAX, &p) == SPECD_NOMEM, "op", "alloc",
			 "SIZE_MAX bytes refused (SPECD_NOMEM)");
	struct kern_sample_rows none = {.rows = 0, .n = SIZE_MAX}; /* the rest unset */
	gpu_check_expect(kern_sample(gpu, &none) == SPECD_OK, "op", "sample",
			 "zero rows: nothing to do, whatever the rest says");
	if (!cuda)
		return;
	size_t big = (size_t)1 << 31;
	uint32_t *out = specd_calloc(ROWS, sizeof(uint32_t));
	int32_t *ids = specd_calloc(ROWS, sizeof(int32_t));
	float *dx = gpu_check_dev_floats(gpu, NULL, ROWS);
	struct kern_topk_rows t = {.rows = ROWS, .n = 1, .x = dx, .ldx = 1, .k = 1, .ids = ids};
	struct kern_sample_rows s = {.rows = 1, .n = big, .x = dx, .ldx = big, .out = out,
				     .params = {.temperature = 0.0f, .top_p = 1.0f}};
	bool ok = out && ids && kern_argmax(gpu, out, dx, 1, ROWS, 1) == SPECD_INVAL &&
		  kern_argmax(gpu, out, dx, big, 1, big) == SPECD_INVAL &&
		  kern_softmax(gpu, dx, 1, ROWS, 1) == SPECD_INVAL &&
		  kern_topk(gpu, &t) == SPECD_INVAL && kern_sample(gpu, &s) == SPECD_INVAL;
	gpu_check_expect(ok, "op", "launch limits",
			 "65536 rows, rows of 2^31 logits: SPECD_INVAL before a launch");
	kern_free(gpu, dx);
	specd_free(out), specd_free(ids);
}

void gpu_check_ops(struct kern_ctx *cpu, struct kern_ctx *gpu, struct kern_ctx *ref,
		   struct kern_ctx *small_stage)
{
	static const enum kern_dtype types[] = {KERN_F32,  KERN_F16,  KERN_BF16, KERN_Q8_0,
						KERN_Q4_0, KERN_Q4_1, KERN_Q5_0, KERN_Q5_1,
						KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		check_matmul(cpu, gpu, ref, types[i], 256, 96, 9, false);
		check_get_rows(cpu, gpu, types[i], 256, 100);
	}
	/* a float row's tail past the last chunk; rows over several blocks; rows of more
	 * chunks than the grid has threads (64 blocks of 256: 131072 elements a pass) */
	check_get_rows(cpu, gpu, KERN_F32, 172, 100);
	check_get_rows(cpu, gpu, KERN_BF16, 4100, 100);
	check_get_rows(cpu, gpu, KERN_Q4_K, 256 * 70, 100);
	check_get_rows(cpu, gpu, KERN_F16, 131072 * 2 + 20, 8);
	check_matmul(cpu, gpu, ref, KERN_BF16, 4096, 512, 1, false);
	check_matmul(cpu, gpu, ref, KERN_F16, 4096, 300, 17, true);
	check_matmul(cpu, gpu, ref, KERN_F32, 172, 64, 64, true); /* a tail shorter than a vector */
	check_matmul(cpu, gpu, ref, KERN_BF16, 11008, 64, 5, false);
	/* 4 features per warp (n_out >= 4096) with a ragged last warp, every rows-per-pass
	 * variant (1..16, then two passes), chunks in flight plus their remainder, a tail. */
	check_matmul(cpu, gpu, ref, KERN_BF16, 1004, 4101, 33, false);
	check_matmul(cpu, gpu, ref, KERN_F16, 2056, 4099, 20, true);
	check_matmul(cpu, gpu, ref, KERN_F32, 520, 4097, 18, true);
	check_matmul(cpu, gpu, ref, KERN_BF16, 7168, 1793, 17, false);
	/* an f16 row that is no whole number of 8-wide loads; quantised rows in two passes */
	check_matmul(cpu, gpu, ref, KERN_F16, 300, 64, 3, false);
	check_matmul(cpu, gpu, ref, KERN_Q4_K, 512, 96, 20, true);
	check_matmul(cpu, gpu, ref, KERN_Q8_0, 256, 40, 17, false);
	check_rows_ops(cpu, gpu);
	check_attention(cpu, gpu, 8);
	check_attention(cpu, gpu, 64);
	check_attention(cpu, gpu, 128);
	check_attention(cpu, gpu, 256);
	check_attention_wide_tree(cpu, gpu, 64);
	check_sample_edges(cpu, gpu);
	if (small_stage) {
		/* Every op that stages host arrays, the ring wrapping under it: the wide
		 * tree alone stages about 10 KiB. */
		printf("ops again with a %u KiB staging ring\n", GPU_CHECK_SMALL_STAGE >> 10);
		check_get_rows(cpu, small_stage, KERN_Q8_0, 256, 100);
		check_rows_ops(cpu, small_stage);
		check_attention(cpu, small_stage, 64);
		check_attention_wide_tree(cpu, small_stage, 64);
		check_sample_edges(cpu, small_stage);
	}
	check_limits(gpu, strcmp(kern_name(gpu), "cuda") == 0);
}

