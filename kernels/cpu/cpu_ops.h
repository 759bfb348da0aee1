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

/* A matmul's rows of activations quantised for KERN_ACT_Q8 (kern.h): each group of 32
 * values x[32g..32g+31] of row r becomes q[r * ldq + 32g + i] = x * (127 / m) rounded
 * to the nearest integer (ties to even, in double), in -127..127, where m = max|x| over
 * the group's span: the group itself, or for K-quant weights the 256 values of a
 * super-block (its 8 groups share one scale, as llama.cpp's Q8_K); d[r * ng + g] = m /
 * 127 (NaN when the span holds a NaN, inf when it holds an inf); and s[r * ng + g] = d *
 * (the sum of the group's q), which the weights' offsets multiply (inf, and the output
 * NaN, once the group's values pass about 1e37 in magnitude); bs[r * 2 * ng + j] is the
 * exact sum of the q of values 16j..16j+15 (Q6_K's offset multiplies it). A row's groups
 * depend on that row alone, so batch invariance survives quantising. */
struct cpu_q8_rows {
	const int8_t *q;
	const float *d;
	const float *s;
	const int16_t *bs;
	size_t ldq; /* bytes between rows of q: n_in rounded up to 64 */
	size_t ng;  /* groups per row: n_in / 32 */
};

/* One matmul call as the ISA kernels see it (arguments already checked). */
struct cpu_matmul_job {
	float *y;
	size_t ldy;
	const float *x;
	size_t ldx;
	size_t rows;
	const struct kern_mat *w;
	const float *bias;
	const struct cpu_q8_rows *xq; /* non-NULL: quantised weights read these instead of x */
};

/* The KERN_ACT_Q8 arithmetic of one output and row, which every ISA follows exactly so
 * that all agree bitwise. Eight float lanes accumulate; for each group of 32 weights
 * (kern_group_ints' q; x its activations' q8 integers, d their scale, s = d * sum x)
 * lane l first takes the exact integer sum of q * x over weights 4l..4l+3, then:
 *   - blocks of 32 (Q8_0, Q4_x, Q5_x): lane l += float(sum) * (mul * d) by one FMA;
 *     where the type has an offset, lane 0 then takes one FMA of off * s (the other
 *     lanes off * 0);
 *   - K-quants (kern_kblock_scales; one activation d per super-block): the sum times
 *     its sub-block's integer scale sc is added, exactly, into a block-local int32 lane
 *     t_l. Q6_K's sums take its stored integers u = q + 32 (0..63, so no sign needs
 *     moving), and after the block's 8 groups t_l -= 32 * (sc_2l * bs_2l + sc_2l+1 *
 *     bs_2l+1) over the block's 16-value sums bs (group l's share of the offset, as
 *     llama.cpp's Q6_K dot takes it), exactly. Then lane l += float(t_l) * (the
 *     block's d * the activations' d) by one FMA (t_l may pass 2^24 for Q6_K; the
 *     conversion then rounds to nearest, as everywhere), then (Q4_K/Q5_K) lane l +=
 *     mins[l] * s of the block's group l by one FMA.
 * At the end the lanes are added as cpu_q8_hsum does, then the bias. */
#define CPU_Q8_LANES 8

static inline bool cpu_q8_kquant(enum kern_dtype t)
{
	return t == KERN_Q4_K || t == KERN_Q5_K || t == KERN_Q6_K;
}

/* Types whose multiplied integers can be negative (the products take the sign trick);
 * Q6_K multiplies its unsigned stored integers and takes the offset apart. */
static inline bool cpu_q8_signed(enum kern_dtype t)
{
	return t == KERN_Q8_0 || t == KERN_Q4_0 || t == KERN_Q5_0;
}


/* The fixed order the eight lanes are summed in: (l, l + 4) pairs, then (0, 2), (1, 3). */
static inline float cpu_q8_hsum(const float a[CPU_Q8_LANES])
{
	float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
	return (t0 + t2) + (t1 + t3);
}

/* Quantises rows of x (n_in a multiple of span, span 32 or 256: the values sharing one
 * scale) into q8, whose q, d, s and bs point into caller storage of cpu_q8_bytes(rows,
 * n_in) bytes at 64-byte alignment. */
size_t cpu_q8_bytes(size_t rows, size_t n_in);
void cpu_q8_quantize(const float *x, size_t ldx, size_t rows, size_t n_in, size_t span,
		     void *buf, struct cpu_q8_rows *q8);

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
	enum kern_act act;
	/* KERN_ACT_Q8: the quantised activations of the matmul running now, as large as
	 * kern_reserve asked or the largest call so far (the one allocation an op may make). */
	void *q8_buf;
	size_t q8_cap;
};

static inline struct cpu_backend *cpu_backend_of(struct kern_ctx *ctx)
{
	return (struct cpu_backend *)(void *)ctx;
}

enum specd_status cpu_reserve(struct kern_ctx *ctx, size_t rows, size_t n_in);
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
