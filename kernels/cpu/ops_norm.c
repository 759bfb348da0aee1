/* Reference RMSNorm, applied before attention, before the MLP and before the LM
 * head. The sum of squares is kept in double, as llama.cpp does, so the reference is
 * as close to exact as a float result can be. */
#include <math.h>

#include "cpu_ops.h"

enum specd_status cpu_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			      size_t ldx, size_t rows, size_t n, const float *w, float eps)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !w || n == 0 || ldx < n || ldy < n)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * ldx;
		float *yr = y + r * ldy;
		double sum = 0.0;
		for (size_t i = 0; i < n; i++)
			sum += (double)xr[i] * (double)xr[i];
		float scale = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
		for (size_t i = 0; i < n; i++)
			yr[i] = (xr[i] * scale) * w[i];
	}
	return SPECD_OK;
}
