/* The CPU backend's ops, one file per op family (ops_*.c), gathered into one struct
 * kern_ops table by backend.c. Folder-private: model/ reaches these only through
 * kernels/kern.h. The weight-reading inner loops (matmul, attention's dot products)
 * come in one version per ISA (struct cpu_isa_kernels: scalar here, simd_avx2.c,
 * simd_avx512.c), chosen once when the backend is created; each computes every output
 * element with one fixed reduction order, so every op is batch-invariant (kern.h). */
#ifndef SPECD_KERNELS_CPU_OPS_H
#define SPECD_KERNELS_CPU_OPS_H

#include "kernels/kern.h"
#include "cpu_features.h"
#include "pool.h"

/* Rows of a scalar matmul accumulated together: the weight block dequantised once
 * serves this many rows. A fixed bound keeps the accumulators on the stack. */
#define CPU_MATMUL_ROW_CHUNK 64

/* Output features per share of a parallel matmul: threads split n_out in whole units
 * of this many, so every output element is computed by exactly one thread. */
#define CPU_MATMUL_SPLIT 16

/* One matmul call as the ISA kernels see it (arguments already checked). */
struct cpu_matmul_job {
	float *y;
	size_t ldy;
	const float *x;
	size_t ldx;
	size_t rows;
	const struct kern_mat *w;
	const float *bias;
};

/* The per-ISA inner loops. Within one ISA each is a pure function of its arguments
 * (no dependence on how calls are grouped), which batch invariance rests on. */
struct cpu_isa_kernels {
	enum kern_isa isa;
	/* y[r, o] for every row and o in [o_begin, o_end). */
	void (*matmul_range)(const struct cpu_matmul_job *j, size_t o_begin, size_t o_end);
	/* sum_i a[i] * b[i]. */
	float (*dot)(const float *a, const float *b, size_t n);
	/* acc[i] += p * v[i]. */
	void (*axpy)(float *acc, float p, const float *v, size_t n);
};

extern const struct cpu_isa_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const struct cpu_isa_kernels cpu_kernels_avx2;
extern const struct cpu_isa_kernels cpu_kernels_avx512;
#endif

struct cpu_backend {
	struct kern_ctx base; /* first: ops receive &base */
	const struct cpu_isa_kernels *k;
	struct cpu_pool *pool;
};

static inline struct cpu_backend *cpu_backend_of(struct kern_ctx *ctx)
{
	return (struct cpu_backend *)(void *)ctx;
}

enum specd_status cpu_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			     size_t ldx, size_t rows, const struct kern_mat *w,
			     const float *bias);
enum specd_status cpu_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
			       const struct kern_mat *table, const uint32_t *ids, size_t rows);
enum specd_status cpu_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			      size_t ldx, size_t rows, size_t n, const float *w, float eps);
enum specd_status cpu_rope(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
			   size_t n_heads, size_t head_dim, const uint32_t *pos,
			   float freq_base, enum kern_rope_layout layout);
enum specd_status cpu_attention(struct kern_ctx *ctx, const struct kern_attn *a);
enum specd_status cpu_silu_mul(struct kern_ctx *ctx, float *gate, const float *up, size_t n);
enum specd_status cpu_add(struct kern_ctx *ctx, float *y, const float *x, size_t n);
enum specd_status cpu_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, float *x,
				  size_t ldx, const float *d, size_t ldd, size_t rows, size_t n,
				  const float *w, float eps);
enum specd_status cpu_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
			       const uint32_t *idx, const float *src, size_t ld_src, size_t rows,
			       size_t n);
enum specd_status cpu_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
			      size_t n);
enum specd_status cpu_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x, size_t ldx,
			     size_t rows, size_t n);
enum specd_status cpu_sample(struct kern_ctx *ctx, const struct kern_sample_rows *s);
enum specd_status cpu_topk(struct kern_ctx *ctx, const struct kern_topk_rows *t);

#endif
