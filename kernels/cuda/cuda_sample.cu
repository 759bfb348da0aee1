// The sample op on the device: one block per row turns its logits into one token with
// the sampler's transform (kernels/sample.h, model/sampler.h) and the caller's
// uniform, so only the token (and the probe's probability) goes back to the host.
//
// Every cut of the transform keeps a prefix of the sampler's order (z descending, id
// ascending), that is every element whose (order key of z, id) is at or above the
// last one kept. The CPU finds that element by sorting; here it is searched for: the
// largest key t whose elements at or above it still hold k elements (top-k) or the
// top-p mass, two bits of t per pass over the row, then the ties at t are taken in id
// order. Each pass sums in a fixed order (thread strides, then a fixed tree), and a
// row is a block of its own, so a row's token does not depend on the rows beside it
// and is the same on every run. The unnormalised probabilities are computed once (exp
// in double, rounded to float: the CPU's expf to within its own rounding) into the
// caller's work; sums are in double as on the CPU, in another order, so a token can
// differ from the CPU's only where the draw lies within rounding of a boundary.
#include <math.h>
#include <stdint.h>

#include "cuda_launch.h"

namespace {

constexpr unsigned NT = 1024;               // threads per row
constexpr uint32_t NONE = CUDA_SAMPLE_NONE; // no id (a failed row's token)

// The order key of a (non-NaN) z: larger z, larger key; -0 and +0 share one, since
// they compare equal and the id decides between them. 0 is no key's: "below all".
__device__ __forceinline__ uint32_t order_key(float z)
{
	uint32_t b = z == 0.0f ? 0u : __float_as_uint(z);
	return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

// Elements kept by a cut: key above `key`, or equal with an id below `end`.
struct cut {
	uint32_t key, end;
};

__device__ __forceinline__ bool kept_by(cut c, uint32_t key, uint32_t i)
{
	return key > c.key || (key == c.key && i < c.end);
}

// What every thread of a row's block knows.
struct row {
	const float *x;
	float *e;        // (n) the unnormalised probabilities, in the caller's work
	uint32_t n;
	float inv_t;
	bool limit;      // x * inv_t overflows: the T -> 0+ limit (kernels/sample.h)
	float xmax;      // limit only: the row's largest non-NaN logit
	uint32_t lo, hi; // this thread's run of ids for the in-order passes
};

// kern_sample_z of kernels/sample.h.
__device__ __forceinline__ float z_at(const row &rw, uint32_t i)
{
	float x = rw.x[i];
	if (isnan(x))
		return -INFINITY;
	if (rw.limit)
		return x == rw.xmax ? 0.0f : -INFINITY;
	return x * rw.inv_t;
}

// Per-thread values v[0..W) summed over the block in a fixed tree; every thread gets
// the sums. sh: W * NT elements of shared memory.
template <typename T, int W> __device__ void block_sum(T (&v)[W], T *sh)
{
	for (int j = 0; j < W; j++)
		sh[j * NT + threadIdx.x] = v[j];
	__syncthreads();
	for (unsigned w = NT / 2; w > 0; w >>= 1) {
		if (threadIdx.x < w)
			for (int j = 0; j < W; j++)
				sh[j * NT + threadIdx.x] += sh[j * NT + threadIdx.x + w];
		__syncthreads();
	}
	for (int j = 0; j < W; j++)
		v[j] = sh[j * NT];
	__syncthreads();
}

template <typename T> __device__ T block_sum1(T v, T *sh)
{
	T a[1] = {v};
	block_sum<T, 1>(a, sh);
	return a[0];
}

// The largest (max) or smallest of the threads' v.
template <typename T, bool MAX> __device__ T block_pick(T v, T *sh)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (unsigned w = NT / 2; w > 0; w >>= 1) {
		if (threadIdx.x < w) {
			T o = sh[threadIdx.x + w];
			if (MAX ? o > sh[threadIdx.x] : o < sh[threadIdx.x])
				sh[threadIdx.x] = o;
		}
		__syncthreads();
	}
	T r = sh[0];
	__syncthreads();
	return r;
}

// Exclusive prefix sum of the threads' v in thread order (a fixed Hillis-Steele
// scan); *total gets the sum of all.
template <typename T> __device__ T block_scan(T v, T *sh, T *total)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (unsigned off = 1; off < NT; off <<= 1) {
		T add = threadIdx.x >= off ? sh[threadIdx.x - off] : T(0);
		__syncthreads();
		sh[threadIdx.x] += add;
		__syncthreads();
	}
	T excl = threadIdx.x ? sh[threadIdx.x - 1] : T(0);
	*total = sh[NT - 1];
	__syncthreads();
	return excl;
}

// The greedy token: the largest logit, the lowest id on ties, NaN never; NONE when
// no logit is above -inf.
__device__ uint32_t greedy_token(const row &rw, double *shd)
{
	float *sv = (float *)shd;
	uint32_t *si = (uint32_t *)(sv + NT);
	float bv = -INFINITY;
	uint32_t bi = NONE;
	for (uint32_t i = threadIdx.x; i < rw.n; i += NT) {
		float v = rw.x[i];
		if (!isnan(v) && (bi == NONE || v > bv))
			bv = v, bi = i;
	}
	sv[threadIdx.x] = bv;
	si[threadIdx.x] = bi;
	__syncthreads();
	for (unsigned w = NT / 2; w > 0; w >>= 1) {
		if (threadIdx.x < w) {
			float ov = sv[threadIdx.x + w];
			uint32_t oi = si[threadIdx.x + w];
			uint32_t mi = si[threadIdx.x];
			if (oi != NONE && (mi == NONE || ov > sv[threadIdx.x] ||
					   (ov == sv[threadIdx.x] && oi < mi))) {
				sv[threadIdx.x] = ov;
				si[threadIdx.x] = oi;
			}
		}
		__syncthreads();
	}
	uint32_t best = si[0];
	float v = sv[0];
	__syncthreads();
	return best == NONE || v == -INFINITY ? NONE : best;
}

// The largest key t with f(t) >= target, where f(t) sums w over the elements kept by
// c whose key is >= t (w = 1: a count; w = e: a mass). f falls as t rises, and
// f(0) >= target is the caller's to ensure. Two bits of t per pass, from the top.
template <typename T, bool MASS>
__device__ uint32_t search_key(const row &rw, cut c, T target, T *sh)
{
	uint32_t t = 0;
	for (int shift = 30; shift >= 0; shift -= 2) {
		const uint32_t step = 1u << shift;
		T acc[3] = {T(0), T(0), T(0)};
		for (uint32_t i = threadIdx.x; i < rw.n; i += NT) {
			uint32_t key = order_key(z_at(rw, i));
			if (key < t + step || !kept_by(c, key, i))
				continue;
			T w = MASS ? T(rw.e[i]) : T(1);
			acc[0] += w;
			if (key >= t + 2 * step)
				acc[1] += w;
			if (key >= t + 3 * step)
				acc[2] += w;
		}
		block_sum<T, 3>(acc, sh);
		t += acc[2] >= target ? 3 * step : acc[1] >= target ? 2 * step
				 : acc[0] >= target ? step : 0;
	}
	return t;
}

// The id one past the j-th (from 1, in id order) element kept by c with key t; 0 for
// j = 0. The thread whose run holds it finds it.
__device__ uint32_t tie_end(const row &rw, cut c, uint32_t t, uint32_t j, uint32_t *shu,
			    uint32_t *found)
{
	if (j == 0)
		return 0;
	uint32_t cnt = 0, total;
	for (uint32_t i = rw.lo; i < rw.hi; i++) {
		uint32_t key = order_key(z_at(rw, i));
		if (kept_by(c, key, i) && key == t)
			cnt++;
	}
	if (threadIdx.x == 0)
		*found = 0; // ordered before the finder's write by the scan's barriers
	uint32_t before = block_scan<uint32_t>(cnt, shu, &total);
	if (before < j && j <= before + cnt) {
		uint32_t left = j - before;
		for (uint32_t i = rw.lo; i < rw.hi; i++) {
			uint32_t key = order_key(z_at(rw, i));
			if (kept_by(c, key, i) && key == t && --left == 0) {
				*found = i + 1;
				break;
			}
		}
	}
	__syncthreads();
	uint32_t end = *found;
	__syncthreads();
	return end;
}

// Over the elements kept by c: those with key above t (a count or a mass, as
// search_key summed them), how many have key t, and their e (one value: equal z).
template <typename T, bool MASS>
__device__ void at_key(const row &rw, cut c, uint32_t t, T *above, uint32_t *n_ties,
		       float *e_tie, double *shd)
{
	T a = T(0);
	uint32_t ties = 0;
	float et = 0.0f;
	for (uint32_t i = threadIdx.x; i < rw.n; i += NT) {
		uint32_t key = order_key(z_at(rw, i));
		if (!kept_by(c, key, i) || key < t)
			continue;
		if (key > t) {
			a += MASS ? T(rw.e[i]) : T(1);
		} else {
			ties++;
			et = rw.e[i];
		}
	}
	*above = block_sum1<T>(a, (T *)shd);
	*n_ties = block_sum1<uint32_t>(ties, (uint32_t *)shd);
	*e_tie = block_pick<float, true>(et, (float *)shd);
}

__device__ __forceinline__ float weight(const row &rw, cut c, float min_p, double kept_sum,
					uint32_t skip, uint32_t i)
{
	float e = rw.e[i];
	if (i == skip || !kept_by(c, order_key(z_at(rw, i)), i) || !(e >= min_p))
		return 0.0f;
	return (float)(e / kept_sum);
}

// The first id, in id order, whose running sum of weights exceeds u * total, or the
// last id of nonzero weight (rounding); skip's weight counts as 0 unless nothing
// else has any. Each thread sums its own run, then walks it from the sum before it.
__device__ uint32_t draw(const row &rw, cut c, float min_p, double kept_sum, uint32_t skip,
			 float u, double *shd)
{
	double total = 0.0, before = 0.0;
	for (int attempt = 0; attempt < 2; attempt++) {
		double s = 0.0;
		for (uint32_t i = rw.lo; i < rw.hi; i++)
			s += weight(rw, c, min_p, kept_sum, skip, i);
		before = block_scan<double>(s, shd, &total);
		if (total > 0.0 || skip == NONE)
			break;
		skip = NONE; // the residual is empty: draw from the distribution itself
	}
	double target = (double)u * total, cum = before;
	uint32_t found = NONE, last = 0;
	for (uint32_t i = rw.lo; i < rw.hi; i++) {
		float w = weight(rw, c, min_p, kept_sum, skip, i);
		if (w == 0.0f)
			continue;
		cum += w;
		last = i;
		if (cum > target) {
			found = i;
			break;
		}
	}
	found = block_pick<uint32_t, false>(found, (uint32_t *)shd);
	last = block_pick<uint32_t, true>(last, (uint32_t *)shd);
	return found != NONE ? found : last;
}

__global__ void __launch_bounds__(NT) sample_kernel(cuda_sample_args a)
{
	__shared__ double shd[3 * NT];
	__shared__ uint32_t shu[NT];
	__shared__ uint32_t found;

	const size_t r = blockIdx.x;
	const uint32_t n = (uint32_t)a.n, chunk = (n + NT - 1) / NT;
	row rw;
	rw.x = a.x + r * a.ldx;
	rw.e = a.e ? a.e + r * a.n : nullptr;
	rw.n = n;
	rw.inv_t = a.inv_t;
	rw.limit = false;
	rw.xmax = -INFINITY;
	rw.lo = min(n, threadIdx.x * chunk);
	rw.hi = min(n, rw.lo + chunk);
	const uint32_t probe = a.probe && a.probe[r] < n ? a.probe[r] : NONE;

	if (a.greedy) {
		uint32_t tok = greedy_token(rw, shd);
		if (threadIdx.x == 0) {
			a.out[r] = tok;
			if (a.probe_p)
				a.probe_p[r] = probe != NONE && probe == tok ? 1.0f : 0.0f;
		}
		return;
	}

	// kern_sample_scale_row: the largest logit, and the largest finite one, decide
	// whether the row takes the T -> 0+ limit (a temperature so small that x * inv_t
	// overflows).
	float xmax = -INFINITY, fmax = -INFINITY;
	for (uint32_t i = threadIdx.x; i < n; i += NT) {
		float x = rw.x[i];
		if (isnan(x))
			continue;
		xmax = fmaxf(xmax, x);
		if (isfinite(x))
			fmax = fmaxf(fmax, x);
	}
	rw.xmax = block_pick<float, true>(xmax, (float *)shd);
	fmax = block_pick<float, true>(fmax, (float *)shd);
	rw.limit = fmax > -INFINITY && (isinf(rw.inv_t) || isinf(fmax * rw.inv_t));

	// softmax(z - max z) unnormalised: e in double exp, a +inf z taking all the mass.
	float zmax = -INFINITY;
	for (uint32_t i = threadIdx.x; i < n; i += NT)
		zmax = fmaxf(zmax, z_at(rw, i));
	zmax = block_pick<float, true>(zmax, (float *)shd);
	if (zmax == -INFINITY) {
		if (threadIdx.x == 0)
			a.out[r] = NONE;
		return;
	}
	double part = 0.0;
	for (uint32_t i = threadIdx.x; i < n; i += NT) {
		float z = z_at(rw, i);
		float e = isinf(zmax) ? (z == zmax ? 1.0f : 0.0f) : (float)exp((double)(z - zmax));
		rw.e[i] = e;
		part += e;
	}
	double kept_sum = block_sum1<double>(part, shd);

	cut c = {0u, NONE}; // everything
	if (a.top_k < n) {
		uint32_t t = search_key<uint32_t, false>(rw, c, a.top_k, (uint32_t *)shd);
		uint32_t above, ties;
		float et;
		at_key<uint32_t, false>(rw, c, t, &above, &ties, &et, shd);
		c = cut{t, tie_end(rw, c, t, a.top_k - above, shu, &found)};
		part = 0.0;
		for (uint32_t i = threadIdx.x; i < n; i += NT)
			if (kept_by(c, order_key(z_at(rw, i)), i))
				part += rw.e[i];
		kept_sum = block_sum1<double>(part, shd);
	}
	if (a.top_p < 1.0f) {
		// The shortest prefix of the kept set whose running sum reaches the target.
		double target = (double)a.top_p * kept_sum, above;
		uint32_t t = search_key<double, true>(rw, c, target, shd);
		uint32_t ties, j = 0;
		float et;
		at_key<double, true>(rw, c, t, &above, &ties, &et, shd);
		for (double cum = above; j < ties && cum < target; j++)
			cum += et;
		c = cut{t, tie_end(rw, c, t, j, shu, &found)};
	}
	// min-p filters what is left; then normalise over the kept set.
	part = 0.0;
	for (uint32_t i = threadIdx.x; i < n; i += NT)
		if (kept_by(c, order_key(z_at(rw, i)), i) && rw.e[i] >= a.min_p)
			part += rw.e[i];
	kept_sum = block_sum1<double>(part, shd);

	float pp = probe != NONE ? weight(rw, c, a.min_p, kept_sum, NONE, probe) : 0.0f;
	uint32_t tok = draw(rw, c, a.min_p, kept_sum, a.exclude_probe ? probe : NONE, a.u[r], shd);
	if (threadIdx.x == 0) {
		a.out[r] = tok;
		if (a.probe_p)
			a.probe_p[r] = pp;
	}
}

} // namespace

extern "C" cudaError_t cuda_launch_sample(cudaStream_t s, const struct cuda_sample_args *a)
{
	sample_kernel<<<(unsigned)a->rows, NT, 0, s>>>(*a);
	return cudaGetLastError();
}
