// The CUDA backend's row and element-wise ops: RMSNorm, RoPE, SiLU-mul, add,
// softmax, argmax, top-k. Reductions run one block per row with a fixed thread count and a
// fixed shared-memory tree, so a row's result never depends on the rows beside it.
// Sums that the CPU keeps in double (RMSNorm's squares, softmax's denominator) are
// double here too. Also the rank-order reductions of cuda_reduce.h (device all-reduce).
#include <math.h>

#include "cuda_launch.h"
#include "cuda_reduce.h"

namespace {

constexpr int ROW_THREADS = 256;

// Sum of v over the block, in a fixed tree; every thread gets the result.
template <typename T> __device__ T block_sum(T v, T *sh)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (int w = ROW_THREADS / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w)
			sh[threadIdx.x] += sh[threadIdx.x + w];
		__syncthreads();
	}
	T r = sh[0];
	__syncthreads();
	return r;
}

__device__ float block_max(float v, float *sh)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (int w = ROW_THREADS / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w)
			sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + w]);
		__syncthreads();
	}
	float r = sh[0];
	__syncthreads();
	return r;
}

__global__ void rmsnorm_kernel(float *y, size_t ldy, const float *x, size_t ldx, size_t n,
			       const float *__restrict__ w, float eps)
{
	__shared__ double sh[ROW_THREADS];
	const float *xr = x + blockIdx.x * ldx;
	float *yr = y + blockIdx.x * ldy;
	double sum = 0.0;
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS)
		sum += (double)xr[i] * (double)xr[i];
	sum = block_sum(sum, sh);
	float scale = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS)
		yr[i] = (xr[i] * scale) * w[i];
}

// rmsnorm_kernel after the residual add, in one pass over the row: thread t adds,
// squares and later scales its own elements i = t, t + 256, ..., so y may be d (each
// d[i] is read by the thread that writes y[i], before it does).
__global__ void add_rmsnorm_kernel(float *y, size_t ldy, float *x, size_t ldx,
				   const float *d, size_t ldd, size_t n,
				   const float *__restrict__ w, float eps)
{
	__shared__ double sh[ROW_THREADS];
	float *xr = x + blockIdx.x * ldx;
	const float *dr = d + blockIdx.x * ldd;
	float *yr = y + blockIdx.x * ldy;
	double sum = 0.0;
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS) {
		float v = xr[i] + dr[i];
		xr[i] = v;
		sum += (double)v * (double)v;
	}
	sum = block_sum(sum, sh);
	float scale = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS)
		yr[i] = (xr[i] * scale) * w[i];
}

// One thread per (row, pair j, head); angles in double as the CPU computes them.
__global__ void rope_kernel(float *x, size_t ldx, size_t n_heads, size_t head_dim,
			    const uint32_t *__restrict__ pos, float freq_base, int halves)
{
	const size_t half = head_dim / 2;
	const size_t r = blockIdx.y;
	for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < half * n_heads;
	     p += (size_t)gridDim.x * blockDim.x) {
		size_t j = p % half, h = p / half;
		double freq = pow((double)freq_base, -2.0 * (double)j / (double)head_dim);
		double theta = (double)pos[r] * freq;
		float c = (float)cos(theta), sn = (float)sin(theta);
		size_t i0 = halves ? j : 2 * j;
		size_t i1 = halves ? j + half : 2 * j + 1;
		float *xh = x + r * ldx + h * head_dim;
		float a = xh[i0], b = xh[i1];
		xh[i0] = a * c - b * sn;
		xh[i1] = a * sn + b * c;
	}
}

__global__ void silu_mul_kernel(float *gate, const float *__restrict__ up, size_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float g = gate[i];
		gate[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

/* One block per row: row r of src to row idx[r] of dst. */
__global__ void set_rows_kernel(float *dst, size_t ld_dst, const uint32_t *__restrict__ idx,
				const float *__restrict__ src, size_t ld_src, size_t n)
{
	float *d = dst + (size_t)idx[blockIdx.x] * ld_dst;
	const float *s = src + (size_t)blockIdx.x * ld_src;
	for (size_t i = threadIdx.x; i < n; i += blockDim.x)
		d[i] = s[i];
}

__global__ void add_kernel(float *y, const float *__restrict__ x, size_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		y[i] += x[i];
}

__global__ void softmax_kernel(float *x, size_t ldx, size_t n)
{
	__shared__ double shd[ROW_THREADS];
	__shared__ float shf[ROW_THREADS];
	float *xr = x + blockIdx.x * ldx;
	// The CPU starts from x[0] and keeps the larger (NaN-blind) value; fmaxf ignores
	// NaN the same way unless all are NaN.
	float m = xr[0];
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS)
		m = xr[i] > m ? xr[i] : m;
	m = block_max(m, shf);
	double sum = 0.0;
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS) {
		float e = expf(xr[i] - m);
		xr[i] = e;
		sum += e;
	}
	sum = block_sum(sum, shd);
	float inv = (float)(1.0 / sum);
	for (size_t i = threadIdx.x; i < n; i += ROW_THREADS)
		xr[i] *= inv;
}

// (value, index) a beats b: a number beats NaN, a larger value wins, equal values
// go to the lower index. Index n marks "nothing yet".
__device__ __forceinline__ bool beats(float av, uint32_t ai, float bv, uint32_t bi, uint32_t n)
{
	if (ai == n)
		return false;
	if (bi == n)
		return true;
	if (isnan(av))
		return false;
	if (isnan(bv))
		return true;
	return av > bv || (av == bv && ai < bi);
}

__global__ void argmax_kernel(uint32_t *out, const float *x, size_t ldx, uint32_t n)
{
	__shared__ float sv[ROW_THREADS];
	__shared__ uint32_t si[ROW_THREADS];
	const float *xr = x + blockIdx.x * ldx;
	float bv = 0.0f;
	uint32_t bi = n;
	for (uint32_t i = threadIdx.x; i < n; i += ROW_THREADS) {
		if (beats(xr[i], i, bv, bi, n))
			bv = xr[i], bi = i;
	}
	sv[threadIdx.x] = bv;
	si[threadIdx.x] = bi;
	__syncthreads();
	for (int w = ROW_THREADS / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w &&
		    beats(sv[threadIdx.x + w], si[threadIdx.x + w], sv[threadIdx.x], si[threadIdx.x], n)) {
			sv[threadIdx.x] = sv[threadIdx.x + w];
			si[threadIdx.x] = si[threadIdx.x + w];
		}
		__syncthreads();
	}
	if (threadIdx.x == 0) {
		// All NaN: the CPU's scan stops on the last element.
		uint32_t best = si[0];
		out[blockIdx.x] = best == n || isnan(sv[0]) ? n - 1 : best;
	}
}

// (v, i) comes after (pv, pi) in the top-k order: a smaller value, or an equal one at
// a larger index.
__device__ __forceinline__ bool after(float v, uint32_t i, float pv, uint32_t pi)
{
	return v < pv || (v == pv && i > pi);
}

// Round r picks the best (value, index) that comes after round r - 1's pick, by the
// argmax's reduction: k passes over the row, each exact, so the ids and values are
// the CPU's (kern_top_n). Then log(sum(exp(row))) as kern_log_norm, the sum in
// double in the block's fixed tree.
__global__ void topk_kernel(int32_t *ids, float *vals, float *lse, const float *x, size_t ldx,
			    uint32_t n, uint32_t k)
{
	__shared__ float sv[ROW_THREADS];
	__shared__ uint32_t si[ROW_THREADS];
	__shared__ double sd[ROW_THREADS];
	const float *xr = x + blockIdx.x * ldx;
	int32_t *ir = ids + (size_t)blockIdx.x * k;
	float *vr = vals + (size_t)blockIdx.x * k;
	float pv = 0.0f;
	uint32_t pi = n; // n: nothing picked yet
	for (uint32_t r = 0; r < k; r++) {
		float bv = 0.0f;
		uint32_t bi = n;
		for (uint32_t i = threadIdx.x; i < n; i += ROW_THREADS) {
			float v = xr[i];
			if (isnan(v) || (pi != n && !after(v, i, pv, pi)))
				continue;
			if (beats(v, i, bv, bi, n))
				bv = v, bi = i;
		}
		sv[threadIdx.x] = bv;
		si[threadIdx.x] = bi;
		__syncthreads();
		for (int w = ROW_THREADS / 2; w > 0; w >>= 1) {
			if ((int)threadIdx.x < w &&
			    beats(sv[threadIdx.x + w], si[threadIdx.x + w], sv[threadIdx.x],
				  si[threadIdx.x], n)) {
				sv[threadIdx.x] = sv[threadIdx.x + w];
				si[threadIdx.x] = si[threadIdx.x + w];
			}
			__syncthreads();
		}
		pi = si[0];
		pv = sv[0];
		__syncthreads(); // every thread has read the pick before the next round
		if (threadIdx.x == 0) {
			ir[r] = pi == n ? -1 : (int32_t)pi;
			vr[r] = pi == n ? -INFINITY : pv;
		}
		if (pi == n) { // the row's non-NaN values are used up: the rest stay -1
			for (uint32_t j = r + 1 + threadIdx.x; j < k; j += ROW_THREADS) {
				ir[j] = -1;
				vr[j] = -INFINITY;
			}
			break;
		}
	}
	if (!lse)
		return;
	float mx = -INFINITY;
	for (uint32_t i = threadIdx.x; i < n; i += ROW_THREADS)
		mx = xr[i] > mx ? xr[i] : mx;
	sv[threadIdx.x] = mx;
	__syncthreads();
	for (int w = ROW_THREADS / 2; w > 0; w >>= 1) {
		if ((int)threadIdx.x < w && sv[threadIdx.x + w] > sv[threadIdx.x])
			sv[threadIdx.x] = sv[threadIdx.x + w];
		__syncthreads();
	}
	mx = sv[0];
	double sum = 0.0;
	for (uint32_t i = threadIdx.x; i < n; i += ROW_THREADS)
		sum += exp((double)(xr[i] - mx));
	sum = block_sum(sum, sd);
	if (threadIdx.x == 0)
		lse[blockIdx.x] = mx + (float)log(sum);
}

__global__ void sum_slices_kernel(float *out, const float *slices, size_t n, int n_slices)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float v = slices[i];
		for (int sl = 1; sl < n_slices; sl++)
			v += slices[(size_t)sl * n + i];
		out[i] = v;
	}
}

__global__ void maxloc_slices_kernel(float *val, int32_t *idx, const float *vals,
				     const int32_t *idxs, size_t n, int n_slices)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float bv = vals[i];
		int32_t bi = idxs[i];
		for (int sl = 1; sl < n_slices; sl++) {
			float v = vals[(size_t)sl * n + i];
			int32_t j = idxs[(size_t)sl * n + i];
			if (v > bv || (v == bv && j < bi))
				bv = v, bi = j;
		}
		val[i] = bv;
		idx[i] = bi;
	}
}

unsigned grid_for(size_t n)
{
	size_t b = (n + 255) / 256;
	return (unsigned)(b > 4096 ? 4096 : (b ? b : 1));
}

} // namespace

extern "C" cudaError_t cuda_launch_rmsnorm(cudaStream_t s, float *y, size_t ldy, const float *x,
					   size_t ldx, size_t rows, size_t n, const float *w,
					   float eps)
{
	rmsnorm_kernel<<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, ldy, x, ldx, n, w, eps);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_add_rmsnorm(cudaStream_t s, float *y, size_t ldy, float *x,
					       size_t ldx, const float *d, size_t ldd, size_t rows,
					       size_t n, const float *w, float eps)
{
	add_rmsnorm_kernel<<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, ldy, x, ldx, d, ldd, n, w,
								   eps);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_rope(cudaStream_t s, float *x, size_t ldx, size_t rows,
					size_t n_heads, size_t head_dim, const uint32_t *pos,
					float freq_base, int halves)
{
	dim3 grid(grid_for(n_heads * head_dim / 2), (unsigned)rows);
	rope_kernel<<<grid, 256, 0, s>>>(x, ldx, n_heads, head_dim, pos, freq_base, halves);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_silu_mul(cudaStream_t s, float *gate, const float *up, size_t n)
{
	silu_mul_kernel<<<grid_for(n), 256, 0, s>>>(gate, up, n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_add(cudaStream_t s, float *y, const float *x, size_t n)
{
	add_kernel<<<grid_for(n), 256, 0, s>>>(y, x, n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_set_rows(cudaStream_t s, float *dst, size_t ld_dst,
					    const uint32_t *idx, const float *src, size_t ld_src,
					    size_t rows, size_t n)
{
	set_rows_kernel<<<(unsigned)rows, 256, 0, s>>>(dst, ld_dst, idx, src, ld_src, n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_softmax(cudaStream_t s, float *x, size_t ldx, size_t rows,
					   size_t n)
{
	softmax_kernel<<<(unsigned)rows, ROW_THREADS, 0, s>>>(x, ldx, n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_topk(cudaStream_t s, int32_t *ids, float *vals, float *lse,
					const float *x, size_t ldx, size_t rows, size_t n,
					uint32_t k)
{
	topk_kernel<<<(unsigned)rows, ROW_THREADS, 0, s>>>(ids, vals, lse, x, ldx, (uint32_t)n, k);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_argmax(cudaStream_t s, uint32_t *out, const float *x,
					  size_t ldx, size_t rows, size_t n)
{
	argmax_kernel<<<(unsigned)rows, ROW_THREADS, 0, s>>>(out, x, ldx, (uint32_t)n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_sum_slices(cudaStream_t s, float *out, const float *slices,
					      size_t n, int n_slices)
{
	sum_slices_kernel<<<grid_for(n), 256, 0, s>>>(out, slices, n, n_slices);
	return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_maxloc_slices(cudaStream_t s, float *val, int32_t *idx,
						 const float *vals, const int32_t *idxs, size_t n,
						 int n_slices)
{
	maxloc_slices_kernel<<<grid_for(n), 256, 0, s>>>(val, idx, vals, idxs, n, n_slices);
	return cudaGetLastError();
}
