/* The CPU reference backend's ops, one file per op family (ops_*.c), gathered into
 * one struct kern_ops table by backend.c. Folder-private: model/ reaches these only
 * through kernels/kern.h. Plain scalar C with one fixed reduction order per output
 * element, so every op is batch-invariant (kern.h). */
#ifndef SPECD_KERNELS_CPU_OPS_H
#define SPECD_KERNELS_CPU_OPS_H

#include "kernels/kern.h"

/* Rows of a matmul accumulated together: the weight block dequantised once serves
 * this many rows. A fixed bound keeps the accumulators on the stack. */
#define CPU_MATMUL_ROW_CHUNK 64

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
enum specd_status cpu_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
			      size_t n);
enum specd_status cpu_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x, size_t ldx,
			     size_t rows, size_t n);

#endif
