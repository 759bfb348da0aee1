/* The CUDA backend's kernel launchers (cuda_*.cu), called by the backend object
 * (cuda_backend.c) once it has checked an op's arguments and put its host arrays on
 * the device. Plain C types only, so the .cu files need no C header of the project
 * and the C side needs only the runtime API. Each launcher queues its kernels on
 * `stream` and returns the launch error (asynchronous faults show at the next sync).
 * Folder-private. */
#ifndef SPECD_KERNELS_CUDA_LAUNCH_H
#define SPECD_KERNELS_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weight element types the device kernels read: floats, and quantised blocks as the
 * GGUF file stores them (cuda_dequant.cuh), unless kern_cuda_config.dequant_at_load
 * makes them f32 at upload. The quantised ones follow the floats. */
enum cuda_wtype {
	CUDA_W_F32,
	CUDA_W_F16,
	CUDA_W_BF16,
	CUDA_W_Q8_0,
	CUDA_W_Q4_0,
	CUDA_W_Q4_1,
	CUDA_W_Q5_0,
	CUDA_W_Q5_1,
	CUDA_W_Q4_K,
	CUDA_W_Q5_K,
	CUDA_W_Q6_K,
};

/* The reference matmul kernel (cuda_matmul.cu): output features per block (one warp
 * each), and rows of x accumulated per pass over a weight row. */
#define CUDA_MM_WARPS 8
#define CUDA_MM_ROWS 8
/* Rows of x the batched matmul kernel applies each weight load to; more rows take
 * more passes over the weights. */
#define CUDA_MM_PASS 16

/* A device weight matrix: n_out rows of n_in elements, row_bytes apart; data and
 * row_bytes are multiples of 16 bytes (kern_upload_mat pads them); a quantised row
 * holds whole blocks. */
struct cuda_wmat {
	enum cuda_wtype type;
	size_t n_in, n_out, row_bytes;
	const void *data;
};

/* y = x W^T (+ bias). reference != 0 runs the one-warp-per-feature kernel instead of
 * the batched one; both sum every element in the same order, so they agree bitwise. */
cudaError_t cuda_launch_matmul(cudaStream_t s, float *y, size_t ldy, const float *x, size_t ldx,
			       size_t rows, const struct cuda_wmat *w, const float *bias,
			       int reference);
cudaError_t cuda_launch_get_rows(cudaStream_t s, float *y, size_t ldy,
				 const struct cuda_wmat *table, const uint32_t *ids, size_t rows);
/* The device's dequantiser run on the host: the n_in weights of one row of a
 * quantised type into out (host memory). Returns 0, or -1 for a float type. */
int cuda_dequant_row_host(enum cuda_wtype t, const void *row, size_t n_in, float *out);
/* x[r] += d[r], then y[r] = rmsnorm(x[r]); y may equal d. */
cudaError_t cuda_launch_add_rmsnorm(cudaStream_t s, float *y, size_t ldy, float *x, size_t ldx,
				    const float *d, size_t ldd, size_t rows, size_t n,
				    const float *w, float eps);
cudaError_t cuda_launch_rmsnorm(cudaStream_t s, float *y, size_t ldy, const float *x, size_t ldx,
				size_t rows, size_t n, const float *w, float eps);
cudaError_t cuda_launch_rope(cudaStream_t s, float *x, size_t ldx, size_t rows, size_t n_heads,
			     size_t head_dim, const uint32_t *pos, float freq_base, int halves);
cudaError_t cuda_launch_silu_mul(cudaStream_t s, float *gate, const float *up, size_t n);
cudaError_t cuda_launch_add(cudaStream_t s, float *y, const float *x, size_t n);
/* idx: device memory (rows entries). */
cudaError_t cuda_launch_set_rows(cudaStream_t s, float *dst, size_t ld_dst, const uint32_t *idx,
				 const float *src, size_t ld_src, size_t rows, size_t n);
cudaError_t cuda_launch_softmax(cudaStream_t s, float *x, size_t ldx, size_t rows, size_t n);
cudaError_t cuda_launch_argmax(cudaStream_t s, uint32_t *out, const float *x, size_t ldx,
			       size_t rows, size_t n);
/* The topk op, one block per row: ids and vals (rows, k) and lse (rows, or NULL), all
 * device memory. */
cudaError_t cuda_launch_topk(cudaStream_t s, int32_t *ids, float *vals, float *lse,
			     const float *x, size_t ldx, size_t rows, size_t n, uint32_t k);

/* Attention with each token's visible rows flattened on the host: token t reads rows
 * 0 .. n_prefix - 1 of its slot, then extra[off .. off + n_extra), in that order. */
struct cuda_attn_token {
	uint32_t slot, n_prefix, off, n_extra;
};

struct cuda_attn_args {
	size_t n_tokens, n_heads, n_kv_heads, head_dim;
	float scale;
	const float *q;
	size_t ldq;
	float *out;
	size_t ldo;
	const float *k, *v;
	size_t slot_stride, row_stride;
	const struct cuda_attn_token *tok; /* (n_tokens) device */
	const uint32_t *extra;             /* device */
};

cudaError_t cuda_launch_attention(cudaStream_t s, const struct cuda_attn_args *a);

/* The sample op (cuda_sample.cu), one block per row; the backend has checked the
 * arguments (kernels/sample.h) and staged u and probe. A row with no logit above -inf
 * gets the token CUDA_SAMPLE_NONE. */
#define CUDA_SAMPLE_NONE 0xffffffffu

struct cuda_sample_args {
	size_t rows, n; /* n < 2^31 */
	const float *x;
	size_t ldx;
	int greedy;
	float inv_t;           /* 1 / temperature */
	uint32_t top_k;        /* n when off */
	float top_p, min_p;
	const float *u;        /* (rows) device; unused when greedy */
	const uint32_t *probe; /* (rows) device, or NULL; entries >= n: none */
	int exclude_probe;
	float *e;              /* (rows, n) device scratch; unused when greedy */
	uint32_t *out;         /* (rows) device */
	float *probe_p;        /* (rows) device, or NULL */
};

cudaError_t cuda_launch_sample(cudaStream_t s, const struct cuda_sample_args *a);

#ifdef __cplusplus
}
#endif

#endif
