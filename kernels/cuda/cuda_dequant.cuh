// Quantised weights read as they are stored: eight consecutive weights of a row
// (chunk v: elements 8v .. 8v + 7, which never straddle a block) computed the way the
// CPU's reference dequantiser (kernels/dtype.c kern_dequant_row) computes them, the
// same float operations in the same order (the library is built with --fmad=false),
// so every value is bitwise the reference's and a matmul summing them in its fixed
// order gives bitwise what it gives on the same matrix dequantised to f32 at load.
// Host and device: the host build is what tests/kernels/test_cuda_dequant.c checks
// against the reference on machines without a GPU. Bytes are read one at a time:
// blocks of 18, 20, 22, 34, 144, 176 or 210 bytes leave no alignment to rely on.
#ifndef SPECD_KERNELS_CUDA_DEQUANT_CUH
#define SPECD_KERNELS_CUDA_DEQUANT_CUH

#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_launch.h"

#define DQ_FN __host__ __device__ __forceinline__

DQ_FN unsigned dq_u16(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

DQ_FN unsigned dq_u32(const unsigned char *p)
{
	return dq_u16(p) | dq_u16(p + 2) << 16;
}

DQ_FN float dq_f16(const unsigned char *p)
{
	__half_raw r;
	r.x = (unsigned short)dq_u16(p);
	return __half2float(__half(r));
}

// Q4_K / Q5_K: the 6-bit scale and min of sub-block j of the 12 packed bytes q.
DQ_FN void dq_scale_min(const unsigned char *q, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4;
		*m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
	}
}

// Whether the kernels read type T as stored (else it is dequantised at upload).
__host__ __device__ constexpr bool dq_quantised(int t)
{
	return t >= CUDA_W_Q8_0;
}

// Bytes of a block of T and the elements it holds.
__host__ __device__ constexpr int dq_block_bytes(int t)
{
	return t == CUDA_W_Q8_0 ? 34 : t == CUDA_W_Q4_0 ? 18 : t == CUDA_W_Q4_1 ? 20
	     : t == CUDA_W_Q5_0 ? 22 : t == CUDA_W_Q5_1 ? 24 : t == CUDA_W_Q4_K ? 144
	     : t == CUDA_W_Q5_K ? 176 : 210;
}

__host__ __device__ constexpr int dq_block_elems(int t)
{
	return t >= CUDA_W_Q4_K ? 256 : 32;
}

template <int T> DQ_FN void dq_chunk(const unsigned char *row, size_t v, float w[8])
{
	constexpr size_t per = dq_block_elems(T) / 8; // chunks a block
	const unsigned char *b = row + (v / per) * dq_block_bytes(T);
	const unsigned c = (unsigned)(v % per);
	if constexpr (T == CUDA_W_Q8_0) {
		const float d = dq_f16(b);
		for (int i = 0; i < 8; i++)
			w[i] = d * (float)(int8_t)b[2 + 8 * c + i];
	} else if constexpr (T == CUDA_W_Q4_0 || T == CUDA_W_Q4_1) {
		// Elements 0..15 are the low nibbles of qs[0..15], 16..31 the high ones.
		const bool has_min = T == CUDA_W_Q4_1;
		const float d = dq_f16(b), m = has_min ? dq_f16(b + 2) : 0.0f;
		const unsigned char *qs = b + (has_min ? 4 : 2) + 8 * (c & 1);
		const unsigned shift = (c >> 1) * 4;
		for (int i = 0; i < 8; i++) {
			const int q = (qs[i] >> shift) & 0x0f;
			w[i] = has_min ? d * (float)q + m : d * (float)(q - 8);
		}
	} else if constexpr (T == CUDA_W_Q5_0 || T == CUDA_W_Q5_1) {
		// As Q4_x, with element j's fifth bit at bit j of qh.
		const bool has_min = T == CUDA_W_Q5_1;
		const float d = dq_f16(b), m = has_min ? dq_f16(b + 2) : 0.0f;
		const unsigned char *p = b + (has_min ? 4 : 2);
		const unsigned qh = dq_u32(p);
		const unsigned char *qs = p + 4 + 8 * (c & 1);
		const unsigned shift = (c >> 1) * 4;
		for (int i = 0; i < 8; i++) {
			const unsigned j = 8 * c + i;
			const int q = (int)(((qs[i] >> shift) & 0x0f) | ((qh >> j) & 1) << 4);
			w[i] = has_min ? d * (float)q + m : d * (float)(q - 16);
		}
	} else if constexpr (T == CUDA_W_Q4_K || T == CUDA_W_Q5_K) {
		// Four groups of 64: the low nibbles of 32 bytes (sub-block 2k), then their
		// high nibbles (2k + 1); Q5_K's fifth bits at bit `sub` of qh[l].
		const bool five = T == CUDA_W_Q5_K;
		const unsigned e0 = 8 * c, k = e0 / 64, hi = (e0 % 64) / 32, l0 = e0 % 32;
		const int sub = (int)(2 * k + hi);
		int sc, mn;
		dq_scale_min(b + 4, sub, &sc, &mn);
		const float d = dq_f16(b) * (float)sc, m = dq_f16(b + 2) * (float)mn;
		const unsigned char *qs = b + (five ? 48 : 16) + 32 * k + l0;
		const unsigned char *qh = b + 16 + l0;
		for (int i = 0; i < 8; i++) {
			int q = hi ? qs[i] >> 4 : qs[i] & 0x0f;
			if (five)
				q |= ((qh[i] >> sub) & 1) << 4;
			w[i] = d * (float)q - m;
		}
	} else { // Q6_K
		// Two halves of 128: group g of 32 takes ql[l] (g even) or ql[l + 32] (odd),
		// low nibble (g < 2) or high, and bits 2g, 2g + 1 of qh[l]; scale l / 16 + 2g.
		const unsigned e0 = 8 * c, h = e0 / 128, g = (e0 % 128) / 32, l0 = e0 % 32;
		const unsigned char *ql = b + 64 * h + 32 * (g & 1) + l0;
		const unsigned char *qh = b + 128 + 32 * h + l0;
		const int8_t scale = (int8_t)b[192 + 8 * h + l0 / 16 + 2 * g];
		const float d = dq_f16(b + 208);
		for (int i = 0; i < 8; i++) {
			const int q = (int)(((ql[i] >> (g >> 1) * 4) & 0x0f) |
					    ((qh[i] >> 2 * g) & 3) << 4) - 32;
			w[i] = d * (float)scale * (float)q;
		}
	}
}

#endif
