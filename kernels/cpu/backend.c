/* The CPU backend object: the struct kern_ops table over the ops_*.c files, the
 * thread pool its matmul and attention run on, and the ISA's inner loops, all chosen
 * and created once here so that ops never allocate or decide anything per call. */
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "cpu_ops.h"

static void cpu_destroy(struct kern_ctx *ctx)
{
	struct cpu_backend *be = cpu_backend_of(ctx);
	cpu_pool_destroy(be->pool);
	specd_free(be->q8_buf);
	specd_free(be); /* base is the first member, so ctx is the allocation */
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

static enum specd_status cpu_alloc(struct kern_ctx *ctx, size_t bytes, void **out)
{
	(void)ctx;
	void *p = specd_aligned_alloc(64, bytes ? bytes : 1);
	if (!p)
		return SPECD_NOMEM;
	memset(p, 0, bytes);
	*out = p;
	return SPECD_OK;
}

static void cpu_free(struct kern_ctx *ctx, void *p)
{
	(void)ctx;
	specd_free(p);
}

/* One address space: uploads and downloads are copies. */
static enum specd_status cpu_transfer(struct kern_ctx *ctx, void *dst, const void *src,
				      size_t bytes)
{
	return cpu_copy(ctx, dst, src, bytes);
}

static enum specd_status cpu_upload_mat(struct kern_ctx *ctx, const struct kern_mat *src,
					struct kern_mat *out)
{
	size_t bytes = kern_mat_packed_size(src);
	if (bytes == 0)
		return SPECD_INVAL;
	void *p;
	enum specd_status st = cpu_alloc(ctx, bytes, &p);
	if (st != SPECD_OK)
		return st;
	kern_mat_pack(src, p);
	*out = kern_mat_packed(src->type, src->n_in, src->n_out, p);
	return SPECD_OK;
}

static const struct kern_ops cpu_ops = {
	.name = "cpu",
	.host_memory = true,
	.destroy = cpu_destroy,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_transfer,
	.download = cpu_transfer,
	.upload_mat = cpu_upload_mat,
	.matmul = cpu_matmul,
	.get_rows = cpu_get_rows,
	.rmsnorm = cpu_rmsnorm,
	.rope = cpu_rope,
	.attention = cpu_attention,
	.silu_mul = cpu_silu_mul,
	.add = cpu_add,
	.set_rows = cpu_set_rows,
	.softmax = cpu_softmax,
	.argmax = cpu_argmax,
	.add_rmsnorm = cpu_add_rmsnorm,
	.sample = cpu_sample,
	.topk = cpu_topk,
	.copy = cpu_copy,
	.sync = cpu_sync,
	.reserve = cpu_reserve,
};

static const struct cpu_isa_kernels *kernels_for(enum kern_isa isa)
{
#if defined(__x86_64__)
	switch (isa) {
	case KERN_ISA_AVX512: return &cpu_kernels_avx512;
	case KERN_ISA_AVX2: return &cpu_kernels_avx2;
	case KERN_ISA_SCALAR: break;
	}
#else
	(void)isa;
#endif
	return &cpu_kernels_scalar;
}

enum specd_status kern_cpu_create(const struct kern_cpu_config *cfg, struct kern_ctx **out)
{
	enum kern_isa isa = kern_cpu_isa();
	if (cfg && cfg->isa) {
		enum kern_isa cap;
		if (strcmp(cfg->isa, "scalar") == 0)
			cap = KERN_ISA_SCALAR;
		else if (strcmp(cfg->isa, "avx2") == 0)
			cap = KERN_ISA_AVX2;
		else if (strcmp(cfg->isa, "avx512") == 0)
			cap = KERN_ISA_AVX512;
		else
			return SPECD_INVAL;
		if (cap < isa)
			isa = cap;
	}
	enum kern_act act = cfg ? cfg->act : KERN_ACT_F32;
	if (!kern_act_name(act))
		return SPECD_INVAL;
	struct cpu_backend *be = specd_calloc(1, sizeof(*be));
	if (!be)
		return SPECD_NOMEM;
	be->base.ops = &cpu_ops;
	be->k = kernels_for(isa);
	be->act = act;
	unsigned n_threads = cfg && cfg->n_threads > 1 ? cfg->n_threads : 1;
	enum specd_status st = cpu_pool_create(n_threads, &be->pool);
	if (st != SPECD_OK) {
		specd_free(be);
		return st;
	}
	LOG_DEBUG("cpu backend: %s, %u threads, %s activations", kern_isa_name(be->k->isa),
		  n_threads, kern_act_name(act));
	*out = &be->base;
	return SPECD_OK;
}

const char *kern_cpu_isa_of(const struct kern_ctx *ctx)
{
	if (!ctx || ctx->ops != &cpu_ops)
		return NULL;
	const struct cpu_backend *be = (const struct cpu_backend *)(const void *)ctx;
	return kern_isa_name(be->k->isa);
}

const char *kern_cpu_act_of(const struct kern_ctx *ctx)
{
	if (!ctx || ctx->ops != &cpu_ops)
		return NULL;
	const struct cpu_backend *be = (const struct cpu_backend *)(const void *)ctx;
	return kern_act_name(be->act);
}

static const char *const act_names[] = {[KERN_ACT_F32] = "f32", [KERN_ACT_Q8] = "q8"};

const char *kern_act_name(enum kern_act act)
{
	return (unsigned)act < sizeof(act_names) / sizeof(act_names[0]) ? act_names[act] : NULL;
}

enum specd_status kern_act_parse(const char *name, enum kern_act *out)
{
	for (unsigned i = 0; name && i < sizeof(act_names) / sizeof(act_names[0]); i++) {
		if (strcmp(name, act_names[i]) == 0) {
			*out = (enum kern_act)i;
			return SPECD_OK;
		}
	}
	return SPECD_INVAL;
}
