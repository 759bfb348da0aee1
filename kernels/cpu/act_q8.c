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
	return rows * q8_ldq(n_in) + 2 * rows * (n_in / KERN_QK) * sizeof(float);
}

void cpu_q8_quantize(const float *x, size_t ldx, size_t rows, size_t n_in, size_t span,
		     void *buf, struct cpu_q8_rows *q8)
{
	size_t ldq = q8_ldq(n_in), ng = n_in / KERN_QK, per = span / KERN_QK;
	int8_t *q = buf;
	float *d = (float *)(void *)(q + rows * ldq), *s = d + rows * ng;
	for (size_t r = 0; r < rows; r++) {
		for (size_t g = 0; g < ng; g++) {
			const float *xg = x + r * ldx + g * KERN_QK;
			int8_t *qg = q + r * ldq + g * KERN_QK;
			/* The scale's span: this group's, or its span's when several share one. */
			const float *xs = x + r * ldx + g / per * span;
			float amax = 0.0f;
			bool nan = false;
			for (size_t i = 0; i < span; i++) {
				float a = fabsf(xs[i]);
				nan |= isnan(a);
				amax = a > amax ? a : amax;
			}
			/* |x| <= amax, so |x * 127 / amax| rounds into -127..127: the products
			 * stay inside the int16 pairs the vector loops sum them in. A NaN (or an
			 * inf, whose group is all zeros times an infinite scale) reaches the
			 * output as NaN, as it would through f32. */
			float id = amax > 0.0f && isfinite(amax) && !nan ? 127.0f / amax : 0.0f;
			int sum = 0;
			for (int i = 0; i < KERN_QK; i++) {
				int v = id != 0.0f ? (int)lrintf(xg[i] * id) : 0;
				qg[i] = (int8_t)v;
				sum += v;
			}
			float dg = nan ? NAN : amax / 127.0f;
			d[r * ng + g] = dg;
			s[r * ng + g] = dg * (float)sum;
		}
	}
	*q8 = (struct cpu_q8_rows){.q = q, .d = d, .s = s, .ldq = ldq, .ng = ng};
}
