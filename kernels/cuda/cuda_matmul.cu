// Matmul and embedding lookup on the device: the weight-reading ops. Decoding is
// bound by reading the weights once per step, so one warp streams one weight row
// (16-byte loads, coalesced across the lanes) and applies it to up to CUDA_MM_ROWS
// rows of x at a time. Batch invariance: lane l always sums elements 8(32j + l) ..
// 8(32j + l) + 7 for j = 0, 1, ... in that order, then the tail, and a fixed xor-
// shuffle tree adds the lanes; nothing about that depends on how many rows run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_launch.h"

namespace {

template <int T> __device__ __forceinline__ void load8(const unsigned char *row, size_t i,
						       float w[8])
{
	if (T == CUDA_W_F32) {
		const float4 *p = reinterpret_cast<const float4 *>(row + i * 4);
		float4 a = __ldg(p), b = __ldg(p + 1);
		w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w;
		w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
	} else {
		uint4 u = __ldg(reinterpret_cast<const uint4 *>(row + i * 2));
		const unsigned short *h = reinterpret_cast<const unsigned short *>(&u);
#pragma unroll
		for (int j = 0; j < 8; j++) {
			if (T == CUDA_W_F16)
				w[j] = __half2float(__ushort_as_half(h[j]));
			else // bf16 is the top half of an f32: exact
				w[j] = __uint_as_float((unsigned)h[j] << 16);
		}
	}
}

template <int T> __device__ __forceinline__ float load1(const unsigned char *row, size_t i)
{
	if (T == CUDA_W_F32)
		return reinterpret_cast<const float *>(row)[i];
	unsigned short h = reinterpret_cast<const unsigned short *>(row)[i];
	if (T == CUDA_W_F16)
		return __half2float(__ushort_as_half(h));
	return __uint_as_float((unsigned)h << 16);
}

template <int T>
__global__ void __launch_bounds__(CUDA_MM_WARPS * 32)
	matmul_kernel(float *y, size_t ldy, const float *__restrict__ x, size_t ldx, size_t rows,
		      const unsigned char *__restrict__ wdata, size_t row_bytes, size_t n_in,
		      size_t n_out, const float *__restrict__ bias)
{
	const unsigned lane = threadIdx.x & 31u;
	const size_t o = (size_t)blockIdx.x * CUDA_MM_WARPS + threadIdx.x / 32;
	if (o >= n_out)
		return;
	const unsigned char *wr = wdata + o * row_bytes;
	const size_t nv = n_in / 8;
	for (size_t r0 = 0; r0 < rows; r0 += CUDA_MM_ROWS) {
		const size_t nr = rows - r0 < CUDA_MM_ROWS ? rows - r0 : CUDA_MM_ROWS;
		const float *xb = x + r0 * ldx;
		float acc[CUDA_MM_ROWS];
#pragma unroll
		for (int r = 0; r < CUDA_MM_ROWS; r++)
			acc[r] = 0.0f;
#pragma unroll 2
		for (size_t v = lane; v < nv; v += 32) {
			float w[8];
			load8<T>(wr, v * 8, w);
#pragma unroll
			for (int r = 0; r < CUDA_MM_ROWS; r++) {
				if ((size_t)r < nr) {
					const float *xr = xb + r * ldx + v * 8;
#pragma unroll
					for (int j = 0; j < 8; j++)
						acc[r] = fmaf(w[j], xr[j], acc[r]);
				}
			}
		}
		for (size_t i = nv * 8 + lane; i < n_in; i += 32) {
			float w = load1<T>(wr, i);
#pragma unroll
			for (int r = 0; r < CUDA_MM_ROWS; r++)
				if ((size_t)r < nr)
					acc[r] = fmaf(w, xb[r * ldx + i], acc[r]);
		}
#pragma unroll
		for (int r = 0; r < CUDA_MM_ROWS; r++) {
#pragma unroll
			for (int off = 16; off > 0; off >>= 1)
				acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
		}
		if (lane == 0) {
			float b = bias ? bias[o] : 0.0f;
#pragma unroll
			for (int r = 0; r < CUDA_MM_ROWS; r++)
				if ((size_t)r < nr)
					y[(r0 + r) * ldy + o] = bias ? acc[r] + b : acc[r];
		}
	}
}

template <int T>
__global__ void get_rows_kernel(float *y, size_t ldy, const unsigned char *__restrict__ table,
				size_t row_bytes, size_t n_in, const uint32_t *__restrict__ ids)
{
	const size_t r = blockIdx.y;
	const unsigned char *src = table + (size_t)ids[r] * row_bytes;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_in;
	     i += (size_t)gridDim.x * blockDim.x)
		y[r * ldy + i] = load1<T>(src, i);
}

} // namespace

extern "C" cudaError_t cuda_launch_matmul(cudaStream_t s, float *y, size_t ldy, const float *x,
					  size_t ldx, size_t rows, const struct cuda_wmat *w,
					  const float *bias)
{
	dim3 grid((unsigned)((w->n_out + CUDA_MM_WARPS - 1) / CUDA_MM_WARPS));
	dim3 block(CUDA_MM_WARPS * 32);
	const unsigned char *d = static_cast<const unsigned char *>(w->data);
	switch (w->type) {
	case CUDA_W_F32:
		matmul_kernel<CUDA_W_F32><<<grid, block, 0, s>>>(y, ldy, x, ldx, rows, d, w->row_bytes,
								 w->n_in, w->n_out, bias);
		break;
	case CUDA_W_F16:
		matmul_kernel<CUDA_W_F16><<<grid, block, 0, s>>>(y, ldy, x, ldx, rows, d, w->row_bytes,
								 w->n_in, w->n_out, bias);
		break;
	case CUDA_W_BF16:
		matmul_kernel<CUDA_W_BF16><<<grid, block, 0, s>>>(y, ldy, x, ldx, rows, d,
								  w->row_bytes, w->n_in, w->n_out,
								  bias);
		break;
	}
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_get_rows(cudaStream_t s, float *y, size_t ldy,
					    const struct cuda_wmat *t, const uint32_t *ids,
					    size_t rows)
{
	unsigned bx = (unsigned)((t->n_in + 255) / 256);
	dim3 grid(bx > 64 ? 64 : bx, (unsigned)rows);
	const unsigned char *d = static_cast<const unsigned char *>(t->data);
	switch (t->type) {
	case CUDA_W_F32:
		get_rows_kernel<CUDA_W_F32><<<grid, 256, 0, s>>>(y, ldy, d, t->row_bytes, t->n_in, ids);
		break;
	case CUDA_W_F16:
		get_rows_kernel<CUDA_W_F16><<<grid, 256, 0, s>>>(y, ldy, d, t->row_bytes, t->n_in, ids);
		break;
	case CUDA_W_BF16:
		get_rows_kernel<CUDA_W_BF16><<<grid, 256, 0, s>>>(y, ldy, d, t->row_bytes, t->n_in,
								  ids);
		break;
	}
	return cudaGetLastError();
}
