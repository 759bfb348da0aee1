// Matmul and embedding lookup on the device: the weight-reading ops. Decoding and
// verification are bound by reading the weights once per call, so the matmul reads
// each weight element once for all the rows of x (up to CUDA_MM_PASS rows per pass):
// a warp owns F output features, its lanes stream their rows with 16-byte loads
// (several chunks in flight per lane) and apply every loaded chunk to all rows.
// Batch invariance: for every output element, lane l sums the 8-element chunks
// l, l + 32, l + 64, ... of the weight row in that order (8 fmaf each, element order),
// then the tail elements l, l + 32, ... past the last whole chunk, and a fixed xor-
// shuffle tree adds the 32 lanes; F, the rows per pass and the loads in flight change
// only which elements run side by side, never that order. The reference kernel (one
// warp per feature, CUDA_MM_ROWS rows per pass) sums in exactly the same order, so the
// two agree bitwise; it also serves x whose rows are not 16-byte aligned. Quantised
// weights are read as stored and each chunk dequantised in registers to exactly the
// values kern_dequant_row gives (cuda_dequant.cuh): the same sums as over the matrix
// dequantised to f32 at load, from a quarter to an eighth of the bytes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_dequant.cuh"
#include "cuda_launch.h"

namespace {

constexpr int MM_WARPS = 4; // warps per block of the batched kernel

// Weights of one 8-element chunk as loaded: 16 bytes (f16, bf16) or 32 (f32); a
// quantised chunk is dequantised as it is loaded. (Separate layouts, so that neither
// path carries the other's registers.)
template <int T, bool Q = dq_quantised(T)> struct chunk_raw {
	uint4 a, b;
};
template <int T> struct chunk_raw<T, true> {
	float q[8];
};

template <int T> __device__ __forceinline__ chunk_raw<T> load_chunk(const unsigned char *row,
								    size_t v)
{
	chunk_raw<T> c;
	if constexpr (dq_quantised(T)) {
		dq_chunk<T>(row, v, c.q);
	} else if constexpr (T == CUDA_W_F32) {
		const uint4 *p = reinterpret_cast<const uint4 *>(row + v * 32);
		c.a = __ldg(p);
		c.b = __ldg(p + 1);
	} else {
		c.a = __ldg(reinterpret_cast<const uint4 *>(row + v * 16));
		c.b = make_uint4(0, 0, 0, 0);
	}
	return c;
}

__device__ __forceinline__ float half_lo(unsigned u, bool f16)
{
	return f16 ? __half2float(__ushort_as_half((unsigned short)(u & 0xffffu)))
		   : __uint_as_float(u << 16); // bf16 is the top half of an f32: exact
}

__device__ __forceinline__ float half_hi(unsigned u, bool f16)
{
	return f16 ? __half2float(__ushort_as_half((unsigned short)(u >> 16)))
		   : __uint_as_float(u & 0xffff0000u);
}

template <int T> __device__ __forceinline__ void unpack(const chunk_raw<T> &c, float w[8])
{
	if constexpr (dq_quantised(T)) {
#pragma unroll
		for (int j = 0; j < 8; j++)
			w[j] = c.q[j];
	} else if constexpr (T == CUDA_W_F32) {
		w[0] = __uint_as_float(c.a.x), w[1] = __uint_as_float(c.a.y);
		w[2] = __uint_as_float(c.a.z), w[3] = __uint_as_float(c.a.w);
		w[4] = __uint_as_float(c.b.x), w[5] = __uint_as_float(c.b.y);
		w[6] = __uint_as_float(c.b.z), w[7] = __uint_as_float(c.b.w);
	} else {
		const bool f16 = T == CUDA_W_F16;
		w[0] = half_lo(c.a.x, f16), w[1] = half_hi(c.a.x, f16);
		w[2] = half_lo(c.a.y, f16), w[3] = half_hi(c.a.y, f16);
		w[4] = half_lo(c.a.z, f16), w[5] = half_hi(c.a.z, f16);
		w[6] = half_lo(c.a.w, f16), w[7] = half_hi(c.a.w, f16);
	}
}

template <int T> __device__ __forceinline__ float load1(const unsigned char *row, size_t i)
{
	if constexpr (dq_quantised(T)) { // rows hold whole blocks, so no tail comes here
		float w[8];
		dq_chunk<T>(row, i / 8, w);
		return w[i % 8];
	}
	if (T == CUDA_W_F32)
		return reinterpret_cast<const float *>(row)[i];
	unsigned short h = reinterpret_cast<const unsigned short *>(row)[i];
	if (T == CUDA_W_F16)
		return __half2float(__ushort_as_half(h));
	return __uint_as_float((unsigned)h << 16);
}

__device__ __forceinline__ float lane_sum(float v)
{
#pragma unroll
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, off);
	return v;
}

// The chunks v, v + 32, ..., v + 32 (U - 1) of F weight rows applied to RC rows of
// x, chunk after chunk (the order of the sum). The loads are all issued first.
template <int T, int F, int RC, int U>
__device__ __forceinline__ void apply_chunks(float (&acc)[F][RC], const unsigned char *const (&wr)[F],
					     const float *__restrict__ x, const unsigned (&xo)[RC],
					     size_t v)
{
	chunk_raw<T> raw[U][F];
#pragma unroll
	for (int u = 0; u < U; u++)
#pragma unroll
		for (int f = 0; f < F; f++)
			raw[u][f] = load_chunk<T>(wr[f], v + 32 * (size_t)u);
#pragma unroll
	for (int u = 0; u < U; u++) {
		float w[F][8];
#pragma unroll
		for (int f = 0; f < F; f++)
			unpack<T>(raw[u][f], w[f]);
		const size_t e = (v + 32 * (size_t)u) * 8;
#pragma unroll
		for (int r = 0; r < RC; r++) {
			const float4 *xp = reinterpret_cast<const float4 *>(x + xo[r] + e);
			const float4 a = __ldg(xp), b = __ldg(xp + 1);
			const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
			for (int f = 0; f < F; f++)
#pragma unroll
				for (int j = 0; j < 8; j++)
					acc[f][r] = fmaf(w[f][j], xv[j], acc[f][r]);
		}
	}
}

// F output features per warp, nr <= RC rows of x (16-byte aligned, ldx a multiple of
// 4); rows past nr repeat the last row and are not stored.
template <int T, int F, int RC>
__global__ void __launch_bounds__(MM_WARPS * 32)
	matmul_rows_kernel(float *y, size_t ldy, const float *__restrict__ x, size_t ldx,
			   unsigned nr, const unsigned char *__restrict__ wdata, size_t row_bytes,
			   size_t n_in, size_t n_out, const float *__restrict__ bias)
{
	constexpr int U = RC <= 2 ? 4 : 2; // chunks in flight per lane and feature
	const unsigned lane = threadIdx.x & 31u;
	const size_t o0 = ((size_t)blockIdx.x * MM_WARPS + threadIdx.x / 32) * F;
	if (o0 >= n_out) // the whole warp: the shuffles below stay within full warps
		return;
	const unsigned char *wr[F];
#pragma unroll
	for (int f = 0; f < F; f++)
		wr[f] = wdata + (o0 + f < n_out ? o0 + f : n_out - 1) * row_bytes;
	unsigned xo[RC]; // the launcher keeps CUDA_MM_PASS * ldx below 2^32
#pragma unroll
	for (int r = 0; r < RC; r++)
		xo[r] = ((unsigned)r < nr ? (unsigned)r : nr - 1) * (unsigned)ldx;
	float acc[F][RC];
#pragma unroll
	for (int f = 0; f < F; f++)
#pragma unroll
		for (int r = 0; r < RC; r++)
			acc[f][r] = 0.0f;

	const size_t nv = n_in / 8;
	size_t v = lane;
	for (; v + 32 * (U - 1) < nv; v += 32 * U)
		apply_chunks<T, F, RC, U>(acc, wr, x, xo, v);
	for (; v < nv; v += 32)
		apply_chunks<T, F, RC, 1>(acc, wr, x, xo, v);
	for (size_t i = nv * 8 + lane; i < n_in; i += 32) {
#pragma unroll
		for (int f = 0; f < F; f++) {
			const float w = load1<T>(wr[f], i);
#pragma unroll
			for (int r = 0; r < RC; r++)
				acc[f][r] = fmaf(w, x[xo[r] + i], acc[f][r]);
		}
	}
#pragma unroll
	for (int f = 0; f < F; f++)
#pragma unroll
		for (int r = 0; r < RC; r++)
			acc[f][r] = lane_sum(acc[f][r]);
	if (lane != 0) // every lane holds the same sums (each step adds a pair both ways)
		return;
#pragma unroll
	for (int f = 0; f < F; f++) {
		const size_t o = o0 + f;
		if (o >= n_out)
			break;
		const float b = bias ? bias[o] : 0.0f;
#pragma unroll
		for (int r = 0; r < RC; r++)
			if ((unsigned)r < nr)
				y[r * ldy + o] = bias ? acc[f][r] + b : acc[f][r];
	}
}

// The reference: one warp per output feature, CUDA_MM_ROWS rows per pass, x read
// element by element (any alignment).
template <int T>
__global__ void __launch_bounds__(CUDA_MM_WARPS * 32)
	matmul_warp_kernel(float *y, size_t ldy, const float *__restrict__ x, size_t ldx,
			   size_t rows, const unsigned char *__restrict__ wdata, size_t row_bytes,
			   size_t n_in, size_t n_out, const float *__restrict__ bias)
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
			unpack<T>(load_chunk<T>(wr, v), w);
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
		for (int r = 0; r < CUDA_MM_ROWS; r++)
			acc[r] = lane_sum(acc[r]);
		if (lane == 0) {
			float b = bias ? bias[o] : 0.0f;
#pragma unroll
			for (int r = 0; r < CUDA_MM_ROWS; r++)
				if ((size_t)r < nr)
					y[(r0 + r) * ldy + o] = bias ? acc[r] + b : acc[r];
		}
	}
}

// Row ids[r] of the table into row r of y, a chunk of 8 elements per thread (a
// quantised chunk is dequantised once), then a float row's tail element by element.
template <int T>
__global__ void get_rows_kernel(float *y, size_t ldy, const unsigned char *__restrict__ table,
				size_t row_bytes, size_t n_in, const uint32_t *__restrict__ ids)
{
	const unsigned char *src = table + (size_t)ids[blockIdx.y] * row_bytes;
	float *out = y + (size_t)blockIdx.y * ldy;
	const size_t t0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	const size_t step = (size_t)gridDim.x * blockDim.x, nv = n_in / 8;
	for (size_t v = t0; v < nv; v += step) {
		float w[8];
		unpack<T>(load_chunk<T>(src, v), w);
#pragma unroll
		for (int j = 0; j < 8; j++)
			out[v * 8 + j] = w[j];
	}
	for (size_t i = nv * 8 + t0; i < n_in; i += step)
		out[i] = load1<T>(src, i);
}

struct mm_call {
	cudaStream_t s;
	float *y;
	size_t ldy;
	const float *x;
	size_t ldx;
	unsigned nr;
	const struct cuda_wmat *w;
	const float *bias;
};

template <int T, int F, int RC> void launch_rows(const mm_call &c)
{
	const size_t warps = (c.w->n_out + F - 1) / F;
	const dim3 grid((unsigned)((warps + MM_WARPS - 1) / MM_WARPS));
	matmul_rows_kernel<T, F, RC><<<grid, MM_WARPS * 32, 0, c.s>>>(
		c.y, c.ldy, c.x, c.ldx, c.nr, static_cast<const unsigned char *>(c.w->data),
		c.w->row_bytes, c.w->n_in, c.w->n_out, c.bias);
}

// Rows per pass, rounded up to a compiled size (the extra rows repeat the last one).
template <int T, int F> void launch_rows_f(const mm_call &c)
{
	if (c.nr <= 1)
		launch_rows<T, F, 1>(c);
	else if (c.nr <= 2)
		launch_rows<T, F, 2>(c);
	else if (c.nr <= 3)
		launch_rows<T, F, 3>(c);
	else if (c.nr <= 4)
		launch_rows<T, F, 4>(c);
	else if (c.nr <= 6)
		launch_rows<T, F, 6>(c);
	else if (c.nr <= 8)
		launch_rows<T, F, 8>(c);
	else if (c.nr <= 12)
		launch_rows<T, F, 12>(c);
	else
		launch_rows<T, F, 16>(c);
}

// Quantised types: fewer compiled sizes (each is one more kernel for every type and
// architecture to build), two features a warp.
template <int T> void launch_rows_q(const mm_call &c)
{
	if (c.nr <= 1)
		launch_rows<T, 2, 1>(c);
	else if (c.nr <= 2)
		launch_rows<T, 2, 2>(c);
	else if (c.nr <= 4)
		launch_rows<T, 2, 4>(c);
	else if (c.nr <= 8)
		launch_rows<T, 2, 8>(c);
	else
		launch_rows<T, 2, 16>(c);
}

// Features per warp: 4 shares each load of x among more weight rows; matrices with
// few rows take 2, for more warps in flight. Only the weight's shape decides.
template <int T> void launch_rows_t(const mm_call &c)
{
	if constexpr (dq_quantised(T))
		launch_rows_q<T>(c);
	else if (c.w->n_out >= 4096)
		launch_rows_f<T, 4>(c);
	else
		launch_rows_f<T, 2>(c);
}

template <int T> void launch_warp(cudaStream_t s, float *y, size_t ldy, const float *x, size_t ldx,
				  size_t rows, const struct cuda_wmat *w, const float *bias)
{
	const dim3 grid((unsigned)((w->n_out + CUDA_MM_WARPS - 1) / CUDA_MM_WARPS));
	matmul_warp_kernel<T><<<grid, CUDA_MM_WARPS * 32, 0, s>>>(
		y, ldy, x, ldx, rows, static_cast<const unsigned char *>(w->data), w->row_bytes,
		w->n_in, w->n_out, bias);
}

template <int T> void launch_matmul(cudaStream_t s, float *y, size_t ldy, const float *x,
				    size_t ldx, size_t rows, const struct cuda_wmat *w,
				    const float *bias, int reference)
{
	if (reference || (uintptr_t)x % 16 != 0 || ldx % 4 != 0 ||
	    ldx > UINT32_MAX / CUDA_MM_PASS) {
		launch_warp<T>(s, y, ldy, x, ldx, rows, w, bias);
		return;
	}
	for (size_t r0 = 0; r0 < rows; r0 += CUDA_MM_PASS) {
		const size_t nr = rows - r0 < CUDA_MM_PASS ? rows - r0 : CUDA_MM_PASS;
		const mm_call c = {s, y + r0 * ldy, ldy, x + r0 * ldx, ldx, (unsigned)nr, w, bias};
		launch_rows_t<T>(c);
	}
}

// Calls F<T>::run(args...) for the weight type t.
template <template <int> class F, typename... A> void by_type(enum cuda_wtype t, A... a)
{
	switch (t) {
	case CUDA_W_F32: F<CUDA_W_F32>::run(a...); break;
	case CUDA_W_F16: F<CUDA_W_F16>::run(a...); break;
	case CUDA_W_BF16: F<CUDA_W_BF16>::run(a...); break;
	case CUDA_W_Q8_0: F<CUDA_W_Q8_0>::run(a...); break;
	case CUDA_W_Q4_0: F<CUDA_W_Q4_0>::run(a...); break;
	case CUDA_W_Q4_1: F<CUDA_W_Q4_1>::run(a...); break;
	case CUDA_W_Q5_0: F<CUDA_W_Q5_0>::run(a...); break;
	case CUDA_W_Q5_1: F<CUDA_W_Q5_1>::run(a...); break;
	case CUDA_W_Q4_K: F<CUDA_W_Q4_K>::run(a...); break;
	case CUDA_W_Q5_K: F<CUDA_W_Q5_K>::run(a...); break;
	case CUDA_W_Q6_K: F<CUDA_W_Q6_K>::run(a...); break;
	}
}

template <int T> struct matmul_of {
	static void run(cudaStream_t s, float *y, size_t ldy, const float *x, size_t ldx,
			size_t rows, const struct cuda_wmat *w, const float *bias, int reference)
	{
		launch_matmul<T>(s, y, ldy, x, ldx, rows, w, bias, reference);
	}
};

template <int T> struct get_rows_of {
	static void run(cudaStream_t s, dim3 grid, float *y, size_t ldy, const cuda_wmat *t,
			const uint32_t *ids)
	{
		get_rows_kernel<T><<<grid, 256, 0, s>>>(
			y, ldy, static_cast<const unsigned char *>(t->data), t->row_bytes, t->n_in,
			ids);
	}
};

template <int T> struct dequant_of {
	static void run(const unsigned char *row, size_t n_in, float *out)
	{
		if constexpr (dq_quantised(T))
			for (size_t v = 0; v < n_in / 8; v++)
				dq_chunk<T>(row, v, out + 8 * v);
	}
};

} // namespace

extern "C" cudaError_t cuda_launch_matmul(cudaStream_t s, float *y, size_t ldy, const float *x,
					  size_t ldx, size_t rows, const struct cuda_wmat *w,
					  const float *bias, int reference)
{
	by_type<matmul_of>(w->type, s, y, ldy, x, ldx, rows, w, bias, reference);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_get_rows(cudaStream_t s, float *y, size_t ldy,
					    const struct cuda_wmat *t, const uint32_t *ids,
					    size_t rows)
{
	unsigned bx = (unsigned)((t->n_in / 8 + 255) / 256); // a thread per chunk, up to 64 blocks
	dim3 grid(bx < 1 ? 1 : bx > 64 ? 64 : bx, (unsigned)rows);
	by_type<get_rows_of>(t->type, s, grid, y, ldy, t, ids);
	return cudaGetLastError();
}

extern "C" int cuda_dequant_row_host(enum cuda_wtype t, const void *row, size_t n_in, float *out)
{
	if (!dq_quantised(t))
		return -1;
	by_type<dequant_of>(t, static_cast<const unsigned char *>(row), n_in, out);
	return 0;
}
