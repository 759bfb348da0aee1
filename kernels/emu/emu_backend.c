/* The emulated device backend (kern.h kern_emu_create): device memory in a window the
 * host cannot touch (emu_mem.c), computed by an inner CPU backend on the bytes behind
 * it. Every op checks and translates each backend pointer it is given before the CPU
 * op sees it, so model/'s device paths run, and fail loudly, on machines without a GPU. */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "emu_int.h"
#include "kernels/kern.h"
#include "kernels/sample.h"

#define EMU_DEFAULT_WINDOW ((size_t)16 << 30)

struct emu_backend {
	struct kern_ctx base; /* first: ops receive &base */
	struct kern_ctx *inner; /* the CPU backend that computes, on storage addresses */
	struct emu_mem mem;
	struct kern_emu_stats stats;
	double *marks; /* (KERN_MARKS) host clock; made at the first mark */
	uint32_t n_marks;
};

static struct emu_backend *emu_of(struct kern_ctx *ctx)
{
	return (struct emu_backend *)(void *)ctx;
}

/* emu_of for an op a GPU would launch a kernel for: counted (kern_emu_stats). */
static struct emu_backend *emu_launch(struct kern_ctx *ctx)
{
	struct emu_backend *be = emu_of(ctx);
	be->stats.launches++;
	return be;
}

/* (rows - 1) * ld + n elements of elem bytes: what a strided op touches from its first
 * row's start. SIZE_MAX when that overflows (no block is that big). rows >= 1. */
static size_t span(size_t rows, size_t ld, size_t n, size_t elem)
{
	size_t r = rows - 1;
	if (ld && r > (SIZE_MAX - n) / ld)
		return SIZE_MAX;
	size_t elems = r * ld + n;
	return elems > SIZE_MAX / elem ? SIZE_MAX : elems * elem;
}

/* The bytes a matrix's rows cover: the last row needs only its packed size. */
static size_t mat_span(const struct kern_mat *w)
{
	if (w->n_out == 0)
		return 0;
	return span(w->n_out, w->row_bytes, kern_dtype_row_bytes(w->type, w->n_in), 1);
}

/* Device pointer p of op's argument `arg`, which the op reads or writes `bytes` from,
 * as its storage address. NULL stays NULL (the CPU op says whether it may be). A p
 * outside every live block, or whose bytes run past its block, is logged and clears
 * *ok; the result is then NULL. */
static void *xlat(struct emu_backend *be, const char *op, const char *arg, const void *p,
		  size_t bytes, bool *ok)
{
	if (!p)
		return NULL;
	const struct emu_block *b = emu_mem_find(&be->mem, p);
	if (!b) {
		LOG_ERROR("emu: %s: %s is not device memory (%p)", op, arg, p);
		*ok = false;
		return NULL;
	}
	size_t off = (size_t)((uintptr_t)p - (uintptr_t)be->mem.window) - b->off;
	if (bytes > b->bytes - off) {
		LOG_ERROR("emu: %s: %s (%p) + %zu bytes runs past its block of %zu bytes at %p",
			  op, arg, p, bytes, b->bytes, (const void *)(be->mem.window + b->off));
		*ok = false;
		return NULL;
	}
	return emu_mem_host(&be->mem, p);
}

static void emu_destroy(struct kern_ctx *ctx)
{
	struct emu_backend *be = emu_of(ctx);
	if (be->mem.n_live)
		LOG_DEBUG("emu: destroyed with %zu blocks still allocated", be->mem.n_live);
	emu_mem_fini(&be->mem);
	kern_destroy(be->inner);
	specd_free(be->marks);
	specd_free(be);
}

static enum specd_status emu_alloc(struct kern_ctx *ctx, size_t bytes, void **out)
{
	return emu_mem_alloc(&emu_of(ctx)->mem, bytes, out);
}

static void emu_free(struct kern_ctx *ctx, void *p)
{
	struct emu_backend *be = emu_of(ctx);
	if (p && !emu_mem_free(&be->mem, p))
		LOG_ERROR("emu: free: %p is not the start of a live block", p);
}

static enum specd_status emu_upload(struct kern_ctx *ctx, void *dst, const void *src,
				    size_t bytes)
{
	struct emu_backend *be = emu_of(ctx);
	bool ok = true;
	if (bytes == 0)
		return SPECD_OK;
	void *d = xlat(be, "upload", "dst", dst, bytes, &ok);
	if (!ok || !d || !src)
		return SPECD_INVAL;
	memcpy(d, src, bytes);
	return SPECD_OK;
}

static enum specd_status emu_download(struct kern_ctx *ctx, void *dst, const void *src,
				      size_t bytes)
{
	struct emu_backend *be = emu_of(ctx);
	bool ok = true;
	if (bytes == 0)
		return SPECD_OK;
	const void *s = xlat(be, "download", "src", src, bytes, &ok);
	if (!ok || !s || !dst)
		return SPECD_INVAL;
	memcpy(dst, s, bytes);
	be->stats.downloaded += bytes;
	return SPECD_OK;
}

static enum specd_status emu_copy(struct kern_ctx *ctx, void *dst, const void *src,
				  size_t bytes)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (bytes == 0)
		return SPECD_OK;
	void *d = xlat(be, "copy", "dst", dst, bytes, &ok);
	const void *s = xlat(be, "copy", "src", src, bytes, &ok);
	if (!ok || !d || !s)
		return SPECD_INVAL;
	/* As the CUDA backend's copy: the two ranges must not overlap. */
	const unsigned char *a = d, *b = s;
	if (a < b + bytes && b < a + bytes) {
		LOG_ERROR("emu: copy: dst and src overlap (%zu bytes at %p and %p)", bytes, dst,
			  src);
		return SPECD_INVAL;
	}
	memcpy(d, s, bytes);
	return SPECD_OK;
}

static enum specd_status emu_sync(struct kern_ctx *ctx)
{
	(void)ctx;
	return SPECD_OK;
}

static enum specd_status emu_reserve(struct kern_ctx *ctx, size_t rows, size_t n_in)
{
	return kern_reserve(emu_of(ctx)->inner, rows, n_in);
}

/* A GPU's event timeline, for testing the profiler's read-back without one: the ops
 * have finished when they return, so a mark is the host clock at the call. */
static enum specd_status emu_mark(struct kern_ctx *ctx, uint32_t *id)
{
	struct emu_backend *be = emu_of(ctx);
	if (!be->marks && !(be->marks = specd_malloc_array(KERN_MARKS, sizeof(double))))
		return SPECD_NOMEM;
	if (be->n_marks == KERN_MARKS)
		return SPECD_NOMEM;
	be->marks[be->n_marks] = specd_now();
	*id = be->n_marks++;
	return SPECD_OK;
}

static enum specd_status emu_mark_time(struct kern_ctx *ctx, uint32_t id, double *seconds)
{
	struct emu_backend *be = emu_of(ctx);
	if (id >= be->n_marks)
		return SPECD_INVAL;
	*seconds = be->marks[id] - be->marks[0];
	return SPECD_OK;
}

static void emu_mark_clear(struct kern_ctx *ctx)
{
	emu_of(ctx)->n_marks = 0;
}

/* The CPU's semantics (kept type, rows packed), into the window. */
static enum specd_status emu_upload_mat(struct kern_ctx *ctx, const struct kern_mat *src,
					struct kern_mat *out)
{
	struct emu_backend *be = emu_of(ctx);
	size_t bytes = kern_mat_packed_size(src);
	if (bytes == 0)
		return SPECD_INVAL;
	void *p;
	enum specd_status st = emu_mem_alloc(&be->mem, bytes, &p);
	if (st != SPECD_OK)
		return st;
	kern_mat_pack(src, emu_mem_host(&be->mem, p));
	*out = kern_mat_packed(src->type, src->n_in, src->n_out, p);
	return SPECD_OK;
}

/* Ops: nothing to touch (no rows) is the CPU op's answer, SPECD_OK, without looking
 * at a pointer; otherwise every backend pointer is translated first, so a bad one
 * fails the op before anything is written. */

static enum specd_status emu_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				    size_t ldx, size_t rows, const struct kern_mat *w,
				    const float *bias)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	if (!w)
		return SPECD_INVAL;
	struct kern_mat wh = *w;
	wh.data = xlat(be, "matmul", "w", w->data, mat_span(w), &ok);
	float *yh = xlat(be, "matmul", "y", y, span(rows, ldy, w->n_out, sizeof(float)), &ok);
	const float *xh = xlat(be, "matmul", "x", x, span(rows, ldx, w->n_in, sizeof(float)),
			       &ok);
	const float *bh = xlat(be, "matmul", "bias", bias, span(1, 0, w->n_out, sizeof(float)),
				   &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->matmul(be->inner, yh, ldy, xh, ldx, rows, &wh, bh);
}

static enum specd_status emu_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
				      const struct kern_mat *table, const uint32_t *ids,
				      size_t rows)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	if (!table)
		return SPECD_INVAL;
	struct kern_mat th = *table;
	th.data = xlat(be, "get_rows", "table", table->data, mat_span(table), &ok);
	float *yh = xlat(be, "get_rows", "y", y, span(rows, ldy, table->n_in, sizeof(float)),
			 &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->get_rows(be->inner, yh, ldy, &th, ids, rows);
}

static enum specd_status emu_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy,
				     const float *x, size_t ldx, size_t rows, size_t n,
				     const float *w, float eps)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	float *yh = xlat(be, "rmsnorm", "y", y, span(rows, ldy, n, sizeof(float)), &ok);
	const float *xh = xlat(be, "rmsnorm", "x", x, span(rows, ldx, n, sizeof(float)), &ok);
	const float *wh = xlat(be, "rmsnorm", "w", w, span(1, 0, n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->rmsnorm(be->inner, yh, ldy, xh, ldx, rows, n, wh, eps);
}

static enum specd_status emu_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, float *x,
				       size_t ldx, const float *d, size_t ldd, size_t rows,
				       size_t n, const float *w, float eps)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	float *yh = xlat(be, "add_rmsnorm", "y", y, span(rows, ldy, n, sizeof(float)), &ok);
	float *xh = xlat(be, "add_rmsnorm", "x", x, span(rows, ldx, n, sizeof(float)), &ok);
	const float *dh = xlat(be, "add_rmsnorm", "d", d, span(rows, ldd, n, sizeof(float)), &ok);
	const float *wh = xlat(be, "add_rmsnorm", "w", w, span(1, 0, n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->add_rmsnorm(be->inner, yh, ldy, xh, ldx, dh, ldd, rows, n, wh, eps);
}

static enum specd_status emu_rope(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				  size_t n_heads, size_t head_dim, const uint32_t *pos,
				  float freq_base, enum kern_rope_layout layout)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	size_t n = head_dim && n_heads > SIZE_MAX / head_dim ? SIZE_MAX : n_heads * head_dim;
	float *xh = xlat(be, "rope", "x", x, span(rows, ldx, n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->rope(be->inner, xh, ldx, rows, n_heads, head_dim, pos, freq_base,
				    layout);
}

/* The cache views are checked at their start only: their extent depends on the mask. */
static enum specd_status emu_attention(struct kern_ctx *ctx, const struct kern_attn *a)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (!a)
		return SPECD_INVAL;
	if (a->n_tokens == 0)
		return SPECD_OK;
	size_t n = a->head_dim && a->n_heads > SIZE_MAX / a->head_dim ? SIZE_MAX :
		   a->n_heads * a->head_dim;
	struct kern_attn h = *a;
	h.q = xlat(be, "attention", "q", a->q, span(a->n_tokens, a->ldq, n, sizeof(float)), &ok);
	h.out = xlat(be, "attention", "out", a->out, span(a->n_tokens, a->ldo, n, sizeof(float)),
		     &ok);
	h.kv.k = xlat(be, "attention", "kv.k", a->kv.k, 0, &ok);
	h.kv.v = xlat(be, "attention", "kv.v", a->kv.v, 0, &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->attention(be->inner, &h);
}

static enum specd_status emu_silu_mul(struct kern_ctx *ctx, float *gate, const float *up,
				      size_t n)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (n == 0)
		return SPECD_OK;
	size_t bytes = span(1, 0, n, sizeof(float));
	float *gh = xlat(be, "silu_mul", "gate", gate, bytes, &ok);
	const float *uh = xlat(be, "silu_mul", "up", up, bytes, &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->silu_mul(be->inner, gh, uh, n);
}

static enum specd_status emu_add(struct kern_ctx *ctx, float *y, const float *x, size_t n)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (n == 0)
		return SPECD_OK;
	size_t bytes = span(1, 0, n, sizeof(float));
	float *yh = xlat(be, "add", "y", y, bytes, &ok);
	const float *xh = xlat(be, "add", "x", x, bytes, &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->add(be->inner, yh, xh, n);
}

/* As CUDA's: the destination rows must be distinct (threads would race on a repeat) and
 * src must not overlap them; both are checked here, where tests run. */
static enum specd_status emu_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
				      const uint32_t *idx, const float *src, size_t ld_src,
				      size_t rows, size_t n)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0 || n == 0)
		return SPECD_OK;
	if (!idx)
		return SPECD_INVAL;
	uint32_t top = 0;
	for (size_t r = 0; r < rows; r++) {
		top = idx[r] > top ? idx[r] : top;
		for (size_t q = 0; q < r; q++)
			if (idx[q] == idx[r]) {
				LOG_ERROR("emu: set_rows: row %u is written twice", idx[r]);
				return SPECD_INVAL;
			}
	}
	size_t dbytes = span((size_t)top + 1, ld_dst, n, sizeof(float));
	size_t sbytes = span(rows, ld_src, n, sizeof(float));
	float *dh = xlat(be, "set_rows", "dst", dst, dbytes, &ok);
	const float *sh = xlat(be, "set_rows", "src", src, sbytes, &ok);
	if (!ok)
		return SPECD_INVAL;
	if (dh && sh && (const char *)sh < (const char *)dh + dbytes &&
	    (const char *)dh < (const char *)sh + sbytes) {
		LOG_ERROR("emu: set_rows: src overlaps dst");
		return SPECD_INVAL;
	}
	return be->inner->ops->set_rows(be->inner, dh, ld_dst, idx, sh, ld_src, rows, n);
}

static enum specd_status emu_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				     size_t n)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	float *xh = xlat(be, "softmax", "x", x, span(rows, ldx, n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->softmax(be->inner, xh, ldx, rows, n);
}

static enum specd_status emu_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x,
				    size_t ldx, size_t rows, size_t n)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (rows == 0)
		return SPECD_OK;
	const float *xh = xlat(be, "argmax", "x", x, span(rows, ldx, n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->argmax(be->inner, out, xh, ldx, rows, n);
}

/* work must hold kern_sample_work_bytes(rows, n), what a device's op needs, although
 * the CPU op uses one row's worth: a caller that sized it for the CPU is caught here. */
static enum specd_status emu_sample(struct kern_ctx *ctx, const struct kern_sample_rows *s)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (!s || s->rows == 0)
		return be->inner->ops->sample(be->inner, s); /* its checks; touches nothing */
	struct kern_sample_rows h = *s;
	h.x = xlat(be, "sample", "x", s->x, span(s->rows, s->ldx, s->n, sizeof(float)), &ok);
	h.work = xlat(be, "sample", "work", s->work, kern_sample_work_bytes(s->rows, s->n), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->sample(be->inner, &h);
}

static enum specd_status emu_topk(struct kern_ctx *ctx, const struct kern_topk_rows *t)
{
	struct emu_backend *be = emu_launch(ctx);
	bool ok = true;
	if (!t || !kern_topk_rows_ok(t))
		return SPECD_INVAL;
	if (t->rows == 0)
		return SPECD_OK;
	struct kern_topk_rows h = *t;
	h.x = xlat(be, "topk", "x", t->x, span(t->rows, t->ldx, t->n, sizeof(float)), &ok);
	if (!ok)
		return SPECD_INVAL;
	return be->inner->ops->topk(be->inner, &h);
}

static const struct kern_ops emu_ops = {
	.name = "emu",
	.host_memory = false,
	.destroy = emu_destroy,
	.alloc = emu_alloc,
	.free = emu_free,
	.upload = emu_upload,
	.download = emu_download,
	.upload_mat = emu_upload_mat,
	.matmul = emu_matmul,
	.get_rows = emu_get_rows,
	.rmsnorm = emu_rmsnorm,
	.rope = emu_rope,
	.attention = emu_attention,
	.silu_mul = emu_silu_mul,
	.add = emu_add,
	.set_rows = emu_set_rows,
	.softmax = emu_softmax,
	.argmax = emu_argmax,
	.add_rmsnorm = emu_add_rmsnorm,
	.sample = emu_sample,
	.topk = emu_topk,
	.copy = emu_copy,
	.sync = emu_sync,
	.reserve = emu_reserve,
	.mark = emu_mark,
	.mark_time = emu_mark_time,
	.mark_clear = emu_mark_clear,
};

enum specd_status kern_emu_create(const struct kern_emu_config *cfg, struct kern_ctx **out)
{
	struct emu_backend *be = specd_calloc(1, sizeof(*be));
	if (!be)
		return SPECD_NOMEM;
	be->base.ops = &emu_ops;
	enum specd_status st = kern_cpu_create(cfg ? &cfg->cpu : NULL, &be->inner);
	if (st != SPECD_OK)
		goto fail;
	size_t window = cfg && cfg->window_bytes ? cfg->window_bytes : EMU_DEFAULT_WINDOW;
	if ((st = emu_mem_init(&be->mem, window)) != SPECD_OK)
		goto fail;
	LOG_DEBUG("emu backend: %zu-byte window at %p, computing on the cpu backend (%s)",
		  be->mem.size, (void *)be->mem.window, kern_cpu_isa_of(be->inner));
	*out = &be->base;
	return SPECD_OK;
fail:
	emu_destroy(&be->base);
	return st;
}

struct kern_emu_stats kern_emu_stats(const struct kern_ctx *ctx)
{
	struct kern_emu_stats none = {0};
	return ctx && ctx->ops == &emu_ops ? ((const struct emu_backend *)(const void *)ctx)->stats
					   : none;
}
