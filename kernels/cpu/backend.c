/* The CPU reference backend object: the struct kern_ops table over the ops_*.c files.
 * It owns nothing yet; the thread pool and per-thread scratch of the SIMD issue will
 * live in struct cpu_backend, created here once, so ops keep never allocating. */
#include <string.h>

#include "common/alloc.h"
#include "cpu_ops.h"

struct cpu_backend {
	struct kern_ctx base; /* first: ops receive &base */
	unsigned n_threads;
};

static void cpu_destroy(struct kern_ctx *ctx)
{
	specd_free(ctx); /* base is the first member, so ctx is the allocation */
}

static enum specd_status cpu_copy(struct kern_ctx *ctx, void *dst, const void *src,
				  size_t bytes)
{
	(void)ctx;
	if (bytes == 0)
		return SPECD_OK;
	if (!dst || !src)
		return SPECD_INVAL;
	memmove(dst, src, bytes);
	return SPECD_OK;
}

static enum specd_status cpu_sync(struct kern_ctx *ctx)
{
	(void)ctx;
	return SPECD_OK;
}

static const struct kern_ops cpu_ops = {
	.name = "cpu",
	.destroy = cpu_destroy,
	.matmul = cpu_matmul,
	.get_rows = cpu_get_rows,
	.rmsnorm = cpu_rmsnorm,
	.rope = cpu_rope,
	.attention = cpu_attention,
	.silu_mul = cpu_silu_mul,
	.add = cpu_add,
	.softmax = cpu_softmax,
	.argmax = cpu_argmax,
	.copy = cpu_copy,
	.sync = cpu_sync,
};

enum specd_status kern_cpu_create(const struct kern_cpu_config *cfg, struct kern_ctx **out)
{
	struct cpu_backend *be = specd_calloc(1, sizeof(*be));
	if (!be)
		return SPECD_NOMEM;
	be->base.ops = &cpu_ops;
	be->n_threads = cfg && cfg->n_threads > 1 ? cfg->n_threads : 1;
	*out = &be->base;
	return SPECD_OK;
}
