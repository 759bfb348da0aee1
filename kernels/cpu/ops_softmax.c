/* Reference softmax and argmax over rows of logits: what greedy decoding, the
 * verifier and the sampler read from the forward's output. */
#include <math.h>

#include "cpu_ops.h"

enum specd_status cpu_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
			      size_t n)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!x || n == 0 || ldx < n)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		float *xr = x + r * ldx;
		float max = xr[0];
		for (size_t i = 1; i < n; i++)
			max = xr[i] > max ? xr[i] : max;
		/* The sum in double: vocabularies of 150k entries would lose low bits. */
		double sum = 0.0;
		for (size_t i = 0; i < n; i++) {
			xr[i] = expf(xr[i] - max);
			sum += xr[i];
		}
		float inv = (float)(1.0 / sum);
		for (size_t i = 0; i < n; i++)
			xr[i] *= inv;
	}
	return SPECD_OK;
}

enum specd_status cpu_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x, size_t ldx,
			     size_t rows, size_t n)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!out || !x || n == 0 || n > UINT32_MAX || ldx < n)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * ldx;
		size_t best = 0;
		/* Skip leading NaNs so a NaN never wins; a strict > keeps the first maximum. */
		while (best + 1 < n && isnan(xr[best]))
			best++;
		for (size_t i = best + 1; i < n; i++) {
			if (xr[i] > xr[best])
				best = i;
		}
		out[r] = (uint32_t)best;
	}
	return SPECD_OK;
}
