/* Matmul and embedding lookup: the weight-reading ops of the forward pass. Weights
 * stay in their file type. The pool's threads split the output features in fixed
 * units (CPU_MATMUL_SPLIT) and each runs the ISA's inner loop over all rows for its
 * features, so the weights are read once per call however many rows, and no element's
 * result depends on the thread count. Nothing here allocates, but for KERN_ACT_Q8's
 * quantised activations, whose buffer cpu_reserve sets aside at load and a larger call
 * grows. */
#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"
#include "cpu_ops.h"

/* Below this many multiply-adds a call runs on the calling thread alone: waking the
 * pool would cost more than the work (results are the same either way). */
#define MATMUL_PARALLEL_MIN 32768

static bool mat_valid(const struct kern_mat *w)
{
	size_t block = kern_dtype_block(w->type);
	if (!w->data || block == 0 || w->n_in == 0 || w->n_in % block != 0)
		return false;
	return w->row_bytes >= kern_dtype_row_bytes(w->type, w->n_in);
}

struct matmul_share {
	const struct cpu_isa_kernels *k;
	const struct cpu_matmul_job *job;
};

static void matmul_share_run(void *arg, unsigned index, unsigned n)
{
	const struct matmul_share *s = arg;
	size_t n_out = s->job->w->n_out;
	size_t units = (n_out + CPU_MATMUL_SPLIT - 1) / CPU_MATMUL_SPLIT;
	size_t u0 = units * index / n, u1 = units * (index + 1) / n;
	size_t o0 = u0 * CPU_MATMUL_SPLIT, o1 = u1 * CPU_MATMUL_SPLIT;
	if (o1 > n_out)
		o1 = n_out;
	if (o0 < o1)
		s->k->matmul_range(s->job, o0, o1);
}

enum specd_status cpu_reserve(struct kern_ctx *ctx, size_t rows, size_t n_in)
{
	struct cpu_backend *be = cpu_backend_of(ctx);
	size_t bytes = cpu_q8_bytes(rows, n_in);
	if (be->act != KERN_ACT_Q8 || bytes <= be->q8_cap)
		return SPECD_OK;
	void *buf = specd_aligned_alloc(64, bytes);
	if (!buf)
		return SPECD_NOMEM;
	specd_free(be->q8_buf);
	be->q8_buf = buf;
	be->q8_cap = bytes;
	return SPECD_OK;
}

enum specd_status cpu_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			     size_t ldx, size_t rows, const struct kern_mat *w,
			     const float *bias)
{
	struct cpu_backend *be = cpu_backend_of(ctx);
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !w || !mat_valid(w) || ldx < w->n_in || ldy < w->n_out)
		return SPECD_INVAL;

	struct cpu_matmul_job job = {
		.y = y, .ldy = ldy, .x = x, .ldx = ldx, .rows = rows, .w = w, .bias = bias,
	};
	struct cpu_q8_rows q8;
	if (be->act == KERN_ACT_Q8 && kern_dtype_block(w->type) > 1) {
		enum specd_status st = cpu_reserve(ctx, rows, w->n_in);
		if (st != SPECD_OK)
			return st;
		cpu_q8_quantize(x, ldx, rows, w->n_in, kern_dtype_block(w->type), be->q8_buf, &q8);
		job.xq = &q8;
	}
	if (w->n_in * w->n_out * rows < MATMUL_PARALLEL_MIN || cpu_pool_size(be->pool) == 1) {
		be->k->matmul_range(&job, 0, w->n_out);
		return SPECD_OK;
	}
	struct matmul_share share = {.k = be->k, .job = &job};
	cpu_pool_run(be->pool, matmul_share_run, &share);
	return SPECD_OK;
}

enum specd_status cpu_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
			       const struct kern_mat *table, const uint32_t *ids, size_t rows)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !ids || !table || !mat_valid(table) || ldy < table->n_in)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		if (ids[r] >= table->n_out)
			return SPECD_INVAL;
	}
	const unsigned char *base = table->data;
	for (size_t r = 0; r < rows; r++)
		kern_dequant_row(table->type, base + ids[r] * table->row_bytes, y + r * ldy,
				 table->n_in);
	return SPECD_OK;
}
