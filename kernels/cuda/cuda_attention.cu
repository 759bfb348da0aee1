// Attention on the device: one block of ATT_WARPS warps per (token, head). Warp w
// takes the token's visible rows i = w, w + ATT_WARPS, ... (their order fixed by the
// mask, kern.h), each lane a slice of the head's dimensions; a score is a lane sum
// added by a fixed xor-shuffle tree. As on the CPU, two passes (the max, then the
// weights and the weighted sum), and the warps' partial sums are combined in warp
// order at the end. Which rows a warp sees depends only on the token's own visible
// list, so the result of a token is the same whatever else is in the batch.
#include <math.h>

#include "cuda_launch.h"

namespace {

constexpr int ATT_WARPS = 8;
constexpr int MAX_PER_LANE = 8; // KERN_MAX_HEAD_DIM / 32

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, off);
	return v;
}

__device__ __forceinline__ uint32_t visible_row(const cuda_attn_token &t,
						const uint32_t *__restrict__ extra, uint32_t i)
{
	return i < t.n_prefix ? i : extra[t.off + (i - t.n_prefix)];
}

// q . k over the head, scaled: each lane its dimensions, then the fixed tree.
__device__ __forceinline__ float score(const float qv[MAX_PER_LANE], const float *kr,
				       unsigned lane, size_t hd, float scale)
{
	float part = 0.0f;
#pragma unroll
	for (int j = 0; j < MAX_PER_LANE; j++) {
		size_t d = lane + 32 * j;
		if (d < hd)
			part = fmaf(qv[j], kr[d], part);
	}
	return warp_sum(part) * scale;
}

__global__ void __launch_bounds__(ATT_WARPS * 32) attention_kernel(cuda_attn_args a)
{
	__shared__ float s_max[ATT_WARPS];
	__shared__ float s_sum[ATT_WARPS];
	__shared__ float s_acc[ATT_WARPS][MAX_PER_LANE * 32];

	const size_t t = blockIdx.x / a.n_heads, h = blockIdx.x % a.n_heads;
	const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x / 32;
	const cuda_attn_token tok = a.tok[t];
	const uint32_t n_vis = tok.n_prefix + tok.n_extra;
	const size_t hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
	const size_t koff = (h / group) * hd;
	const float *kslot = a.k + tok.slot * a.slot_stride + koff;
	const float *vslot = a.v + tok.slot * a.slot_stride + koff;
	const float *q = a.q + t * a.ldq + h * hd;

	float qv[MAX_PER_LANE];
#pragma unroll
	for (int j = 0; j < MAX_PER_LANE; j++) {
		size_t d = lane + 32 * j;
		qv[j] = d < hd ? q[d] : 0.0f;
	}

	float mx = -INFINITY;
	for (uint32_t i = warp; i < n_vis; i += ATT_WARPS) {
		const float *kr = kslot + (size_t)visible_row(tok, a.extra, i) * a.row_stride;
		float sc = score(qv, kr, lane, hd, a.scale);
		mx = sc > mx ? sc : mx;
	}
	if (lane == 0)
		s_max[warp] = mx;
	__syncthreads();
	mx = s_max[0];
	for (int w = 1; w < ATT_WARPS; w++)
		mx = s_max[w] > mx ? s_max[w] : mx;

	float acc[MAX_PER_LANE];
#pragma unroll
	for (int j = 0; j < MAX_PER_LANE; j++)
		acc[j] = 0.0f;
	float sum = 0.0f;
	for (uint32_t i = warp; i < n_vis; i += ATT_WARPS) {
		const size_t off = (size_t)visible_row(tok, a.extra, i) * a.row_stride;
		const float *vr = vslot + off;
		float p = expf(score(qv, kslot + off, lane, hd, a.scale) - mx);
		sum += p;
#pragma unroll
		for (int j = 0; j < MAX_PER_LANE; j++) {
			size_t d = lane + 32 * j;
			if (d < hd)
				acc[j] = fmaf(p, vr[d], acc[j]);
		}
	}
	if (lane == 0)
		s_sum[warp] = sum;
#pragma unroll
	for (int j = 0; j < MAX_PER_LANE; j++)
		s_acc[warp][lane + 32 * j] = acc[j];
	__syncthreads();
	if (warp != 0)
		return;
	float total = 0.0f;
	for (int w = 0; w < ATT_WARPS; w++)
		total += s_sum[w];
	float inv = 1.0f / total;
	float *o = a.out + t * a.ldo + h * hd;
#pragma unroll
	for (int j = 0; j < MAX_PER_LANE; j++) {
		size_t d = lane + 32 * j;
		if (d < hd) {
			float v = 0.0f;
			for (int w = 0; w < ATT_WARPS; w++)
				v += s_acc[w][d];
			o[d] = v * inv;
		}
	}
}

} // namespace

extern "C" cudaError_t cuda_launch_attention(cudaStream_t s, const struct cuda_attn_args *a)
{
	unsigned blocks = (unsigned)(a->n_tokens * a->n_heads);
	attention_kernel<<<blocks, ATT_WARPS * 32, 0, s>>>(*a);
	return cudaGetLastError();
}
