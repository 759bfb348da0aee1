/* The op profiler (kern.h kern_prof_create): a backend that forwards every op to the
 * one it wraps and, while on, times each call on the host's clock and, when the inner
 * backend has marks (CUDA events), on the backend's own timeline. Calls are kept with
 * their two marks until the marks run out or the profile is read; then each mark's
 * time is read back (a wait) and the calls' busy times are summed. */
#include <stdint.h>
#include <stdio.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "kernels/kern.h"

#define PENDING_MAX (KERN_MARKS / 2) /* a call takes two marks */

static const char *const op_names[KERN_OP_COUNT] = {
	[KERN_OP_UPLOAD] = "upload",     [KERN_OP_DOWNLOAD] = "download",
	[KERN_OP_UPLOAD_MAT] = "upload_mat", [KERN_OP_MATMUL] = "matmul",
	[KERN_OP_GET_ROWS] = "get_rows", [KERN_OP_RMSNORM] = "rmsnorm",
	[KERN_OP_ADD_RMSNORM] = "add_rmsnorm", [KERN_OP_ROPE] = "rope",
	[KERN_OP_ATTENTION] = "attention", [KERN_OP_SILU_MUL] = "silu_mul",
	[KERN_OP_ADD] = "add",           [KERN_OP_SOFTMAX] = "softmax",
	[KERN_OP_ARGMAX] = "argmax",     [KERN_OP_SAMPLE] = "sample",
	[KERN_OP_TOPK] = "topk",         [KERN_OP_SET_ROWS] = "set_rows",
	[KERN_OP_COPY] = "copy",         [KERN_OP_SYNC] = "sync",
};

const char *kern_op_name(enum kern_op op)
{
	return (unsigned)op < KERN_OP_COUNT ? op_names[op] : "?";
}

/* A call whose busy time waits on its marks. */
struct pending {
	enum kern_op op;
	uint32_t begin, end;
};

struct prof_backend {
	struct kern_ctx base;  /* first: ops receive &base */
	struct kern_ops ops;   /* prof_ops with inner's name and memory kind */
	struct kern_ctx *inner;
	bool on;
	bool marks;            /* inner has mark, mark_time and mark_clear */
	bool started;          /* a call was timed since kern_prof_start */
	struct kern_profile acc;
	double first, last;    /* host clock: the first call's start, the last's end */
	struct pending pending[PENDING_MAX];
	uint32_t n_pending;
};

/* One call being timed. */
struct timing {
	bool on;
	double host0;
	uint32_t begin;
};

static struct prof_backend *prof_of(struct kern_ctx *ctx)
{
	return (struct prof_backend *)(void *)ctx;
}

/* Reads back the pending calls' marks into acc and frees them. */
static enum specd_status flush(struct prof_backend *p)
{
	enum specd_status st = SPECD_OK;
	double last = 0;
	for (uint32_t i = 0; i < p->n_pending && st == SPECD_OK; i++) {
		const struct pending *c = &p->pending[i];
		double t0, t1;
		if ((st = p->inner->ops->mark_time(p->inner, c->begin, &t0)) == SPECD_OK &&
		    (st = p->inner->ops->mark_time(p->inner, c->end, &t1)) == SPECD_OK) {
			p->acc.busy[c->op] += t1 - t0;
			last = t1;
		}
	}
	/* Mark 0 is the first call's start: what lies between two batches is the
	 * profiler's own wait, left out of span. */
	p->acc.span += last;
	p->inner->ops->mark_clear(p->inner);
	p->n_pending = 0;
	return st;
}

/* A failed mark or read-back ends the profile: the ops themselves go on. */
static void give_up(struct prof_backend *p, enum specd_status st)
{
	LOG_ERROR("profiler: the %s backend's marks failed (%s); profiling stops",
		  p->ops.name, specd_status_str(st));
	p->on = false;
	p->n_pending = 0;
	if (p->marks)
		p->inner->ops->mark_clear(p->inner);
}

static void begin(struct prof_backend *p, struct timing *t)
{
	t->on = p->on;
	if (!t->on)
		return;
	enum specd_status st = SPECD_OK;
	if (p->marks && p->n_pending == PENDING_MAX)
		st = flush(p);
	if (st == SPECD_OK && p->marks)
		st = p->inner->ops->mark(p->inner, &t->begin);
	if (st != SPECD_OK) {
		give_up(p, st);
		t->on = false;
		return;
	}
	t->host0 = specd_now();
	if (!p->started)
		p->first = t->host0;
	p->started = true;
}

/* Ends the timing of a call that returned st; returns st. */
static enum specd_status end(struct prof_backend *p, struct timing *t, enum kern_op op,
			     enum specd_status st)
{
	if (!t->on)
		return st;
	uint32_t mark_end = 0;
	enum specd_status ms = p->marks ? p->inner->ops->mark(p->inner, &mark_end) : SPECD_OK;
	double now = specd_now();
	if (ms != SPECD_OK) {
		give_up(p, ms);
		return st;
	}
	p->acc.calls[op]++;
	p->acc.host[op] += now - t->host0;
	if (p->marks) {
		p->pending[p->n_pending++] = (struct pending){op, t->begin, mark_end};
	} else {
		p->acc.busy[op] += now - t->host0;
		p->last = now;
	}
	return st;
}

/* The body of every timed op: `call` on the inner backend, between begin and end. */
#define TIMED(op, call)                                   \
	struct prof_backend *p = prof_of(ctx);            \
	struct timing t;                                  \
	begin(p, &t);                                     \
	return end(p, &t, op, (call))

static void prof_destroy(struct kern_ctx *ctx)
{
	struct prof_backend *p = prof_of(ctx);
	kern_destroy(p->inner);
	specd_free(p);
}

static enum specd_status prof_alloc(struct kern_ctx *ctx, size_t bytes, void **out)
{
	return kern_alloc(prof_of(ctx)->inner, bytes, out);
}

static void prof_free(struct kern_ctx *ctx, void *ptr)
{
	kern_free(prof_of(ctx)->inner, ptr);
}

static enum specd_status prof_upload(struct kern_ctx *ctx, void *dst, const void *src,
				     size_t bytes)
{
	TIMED(KERN_OP_UPLOAD, kern_upload(p->inner, dst, src, bytes));
}

static enum specd_status prof_download(struct kern_ctx *ctx, void *dst, const void *src,
				       size_t bytes)
{
	TIMED(KERN_OP_DOWNLOAD, kern_download(p->inner, dst, src, bytes));
}

static enum specd_status prof_upload_mat(struct kern_ctx *ctx, const struct kern_mat *src,
					 struct kern_mat *out)
{
	TIMED(KERN_OP_UPLOAD_MAT, kern_upload_mat(p->inner, src, out));
}

static enum specd_status prof_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				     size_t ldx, size_t rows, const struct kern_mat *w,
				     const float *bias)
{
	TIMED(KERN_OP_MATMUL, kern_matmul(p->inner, y, ldy, x, ldx, rows, w, bias));
}

static enum specd_status prof_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
				       const struct kern_mat *table, const uint32_t *ids,
				       size_t rows)
{
	TIMED(KERN_OP_GET_ROWS, kern_get_rows(p->inner, y, ldy, table, ids, rows));
}

static enum specd_status prof_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy,
				      const float *x, size_t ldx, size_t rows, size_t n,
				      const float *w, float eps)
{
	TIMED(KERN_OP_RMSNORM, kern_rmsnorm(p->inner, y, ldy, x, ldx, rows, n, w, eps));
}

static enum specd_status prof_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy,
					  float *x, size_t ldx, const float *d, size_t ldd,
					  size_t rows, size_t n, const float *w, float eps)
{
	TIMED(KERN_OP_ADD_RMSNORM,
	      kern_add_rmsnorm(p->inner, y, ldy, x, ldx, d, ldd, rows, n, w, eps));
}

static enum specd_status prof_rope(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				   size_t n_heads, size_t head_dim, const uint32_t *pos,
				   float freq_base, enum kern_rope_layout layout)
{
	TIMED(KERN_OP_ROPE,
	      kern_rope(p->inner, x, ldx, rows, n_heads, head_dim, pos, freq_base, layout));
}

static enum specd_status prof_attention(struct kern_ctx *ctx, const struct kern_attn *a)
{
	TIMED(KERN_OP_ATTENTION, kern_attention(p->inner, a));
}

static enum specd_status prof_silu_mul(struct kern_ctx *ctx, float *gate, const float *up,
				       size_t n)
{
	TIMED(KERN_OP_SILU_MUL, kern_silu_mul(p->inner, gate, up, n));
}

static enum specd_status prof_add(struct kern_ctx *ctx, float *y, const float *x, size_t n)
{
	TIMED(KERN_OP_ADD, kern_add(p->inner, y, x, n));
}

static enum specd_status prof_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				      size_t n)
{
	TIMED(KERN_OP_SOFTMAX, kern_softmax(p->inner, x, ldx, rows, n));
}

static enum specd_status prof_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x,
				     size_t ldx, size_t rows, size_t n)
{
	TIMED(KERN_OP_ARGMAX, kern_argmax(p->inner, out, x, ldx, rows, n));
}

static enum specd_status prof_sample(struct kern_ctx *ctx, const struct kern_sample_rows *s)
{
	TIMED(KERN_OP_SAMPLE, kern_sample(p->inner, s));
}

static enum specd_status prof_topk(struct kern_ctx *ctx, const struct kern_topk_rows *tk)
{
	TIMED(KERN_OP_TOPK, kern_topk(p->inner, tk));
}

static enum specd_status prof_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
				       const uint32_t *idx, const float *src, size_t ld_src,
				       size_t rows, size_t n)
{
	TIMED(KERN_OP_SET_ROWS, kern_set_rows(p->inner, dst, ld_dst, idx, src, ld_src, rows, n));
}

static enum specd_status prof_copy(struct kern_ctx *ctx, void *dst, const void *src,
				   size_t bytes)
{
	TIMED(KERN_OP_COPY, kern_copy(p->inner, dst, src, bytes));
}

static enum specd_status prof_sync(struct kern_ctx *ctx)
{
	TIMED(KERN_OP_SYNC, kern_sync(p->inner));
}

/* Not timed: set-up, not an op. */
static enum specd_status prof_reserve(struct kern_ctx *ctx, size_t rows, size_t n_in)
{
	return kern_reserve(prof_of(ctx)->inner, rows, n_in);
}

/* name and host_memory are inner's, filled in at create. */
static const struct kern_ops prof_ops = {
	.destroy = prof_destroy,
	.alloc = prof_alloc,
	.free = prof_free,
	.upload = prof_upload,
	.download = prof_download,
	.upload_mat = prof_upload_mat,
	.matmul = prof_matmul,
	.get_rows = prof_get_rows,
	.rmsnorm = prof_rmsnorm,
	.add_rmsnorm = prof_add_rmsnorm,
	.rope = prof_rope,
	.attention = prof_attention,
	.silu_mul = prof_silu_mul,
	.add = prof_add,
	.softmax = prof_softmax,
	.argmax = prof_argmax,
	.sample = prof_sample,
	.topk = prof_topk,
	.set_rows = prof_set_rows,
	.copy = prof_copy,
	.sync = prof_sync,
	.reserve = prof_reserve,
};

enum specd_status kern_prof_create(struct kern_ctx *inner, struct kern_ctx **out)
{
	struct prof_backend *p = specd_calloc(1, sizeof(*p));
	if (!p) {
		kern_destroy(inner);
		return SPECD_NOMEM;
	}
	p->ops = prof_ops;
	p->ops.name = inner->ops->name;
	p->ops.host_memory = inner->ops->host_memory;
	p->base.ops = &p->ops;
	p->inner = inner;
	p->marks = inner->ops->mark && inner->ops->mark_time && inner->ops->mark_clear;
	*out = &p->base;
	return SPECD_OK;
}

static struct prof_backend *profiler(struct kern_ctx *ctx)
{
	return ctx && ctx->ops->destroy == prof_destroy ? prof_of(ctx) : NULL;
}

enum specd_status kern_prof_start(struct kern_ctx *ctx)
{
	struct prof_backend *p = profiler(ctx);
	if (!p)
		return SPECD_INVAL;
	if (p->marks) /* a stopped profile may leave marks behind */
		p->inner->ops->mark_clear(p->inner);
	p->acc = (struct kern_profile){0};
	p->first = p->last = 0;
	p->started = false;
	p->n_pending = 0;
	p->on = true;
	return SPECD_OK;
}

enum specd_status kern_prof_read(struct kern_ctx *ctx, struct kern_profile *out)
{
	struct prof_backend *p = profiler(ctx);
	if (!p)
		return SPECD_INVAL;
	enum specd_status st = SPECD_OK;
	if (p->n_pending && (st = flush(p)) != SPECD_OK)
		give_up(p, st);
	*out = p->acc;
	if (!p->marks)
		out->span = p->last - p->first;
	return st;
}

void kern_prof_stop(struct kern_ctx *ctx)
{
	struct prof_backend *p = profiler(ctx);
	if (!p || !p->on)
		return;
	enum specd_status st = p->n_pending ? flush(p) : SPECD_OK;
	if (st != SPECD_OK)
		give_up(p, st);
	p->on = false;
}

void kern_prof_print(FILE *to, const char *what, const struct kern_profile *p, uint32_t steps)
{
	double busy = 0, per = steps ? 1e3 / steps : 0;
	for (int op = 0; op < KERN_OP_COUNT; op++)
		busy += p->busy[op];
	fprintf(to, "profile %s: %.3f ms/step on the backend, ops busy %.3f ms (%.1f%%), idle "
		"%.3f ms\n", what, p->span * per, busy * per,
		p->span > 0 ? 100.0 * busy / p->span : 0.0, (p->span - busy) * per);
	for (int op = 0; op < KERN_OP_COUNT; op++) {
		if (!p->calls[op])
			continue;
		fprintf(to, "profile %s   %-11s %6.1f calls/step, busy %8.4f ms/step (%5.1f%%), "
			"host %7.2f us/call\n", what, kern_op_name((enum kern_op)op),
			steps ? (double)p->calls[op] / steps : 0.0, p->busy[op] * per,
			busy > 0 ? 100.0 * p->busy[op] / busy : 0.0,
			p->host[op] / (double)p->calls[op] * 1e6);
	}
}
