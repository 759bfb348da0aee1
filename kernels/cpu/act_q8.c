/* KERN_ACT_Q8's activations (kern.h): each row of a matmul's x quantised to 8 bits in
 * groups of 32 (scaled per group, or per 256 for K-quant weights), once per call on the
 * calling thread, before the pool's threads read it
 * (rows x n_in values against the rows x n_in x n_out products that follow). The same
 * code serves every ISA, so every ISA multiplies the same integers. */
#include <math.h>

#include "cpu_ops.h"

static size_t q8_ldq(size_t n_in)
{
	return (n_in + 63) & ~(size_t)63;
}

size_t cpu_q8_bytes(size_t rows, size_t n_in)
{
	return rows * q8_ldq(n_in) + 2 * rows * (n_in / KERN_QK) * sizeof(float) +
	       rows * (n_in / 16) * sizeof(int16_t);
}

/* One span of n values (32 or 256) into q, its groups' d and s, its 16s' bs. */
static void quantize_span(const float *x, size_t n, int8_t *q, float *d, float *s,
			  int16_t *bs)
{
	float amax = 0.0f;
	bool nan = false;
	for (size_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		nan |= isnan(a);
		amax = a > amax ? a : amax;
	}
	/* |x| <= amax, so |x * 127 / amax| rounds into -127..127: the products stay inside
	 * the int16 pairs the vector loops sum them in. In double, so that 127 / amax
	 * stays finite for the smallest amax (in float it overflows below ~3.7e-37). A NaN,
	 * or an inf (whose span is all zeros times an infinite scale), reaches the output
	 * as NaN, as it would through f32. */
	double id = amax > 0.0f && isfinite(amax) && !nan ? 127.0 / (double)amax : 0.0;
	float dg = nan ? NAN : amax / 127.0f;
	for (size_t g = 0; g < n / KERN_QK; g++) {
		int sum[2] = {0, 0}; /* the group's two 16s */
		for (size_t i = g * KERN_QK; i < (g + 1) * KERN_QK; i++) {
			int v = id != 0.0 ? (int)lrint((double)x[i] * id) : 0;
			q[i] = (int8_t)v;
			sum[i / 16 % 2] += v;
		}
		bs[2 * g] = (int16_t)sum[0];
		bs[2 * g + 1] = (int16_t)sum[1];
		d[g] = dg;
		s[g] = dg * (float)(sum[0] + sum[1]);
	}
}

void cpu_q8_quantize(const float *x, size_t ldx, size_t rows, size_t n_in, size_t span,
		     void *buf, struct cpu_q8_rows *q8)
{
	size_t ldq = q8_ldq(n_in), ng = n_in / KERN_QK;
	int8_t *q = buf;
	float *d = (float *)(void *)(q + rows * ldq), *s = d + rows * ng;
	int16_t *bs = (int16_t *)(void *)(s + rows * ng);
	for (size_t r = 0; r < rows; r++) {
		for (size_t i = 0; i < n_in; i += span)
			quantize_span(x + r * ldx + i, span, q + r * ldq + i, d + r * ng + i / KERN_QK,
				      s + r * ng + i / KERN_QK, bs + r * 2 * ng + i / 16);
	}
	*q8 = (struct cpu_q8_rows){.q = q, .d = d, .s = s, .bs = bs, .ldq = ldq, .ng = ng};
}
