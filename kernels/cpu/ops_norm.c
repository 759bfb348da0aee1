/* Reference RMSNorm, applied before attention, before the MLP and before the LM
 * head, alone or after the residual add it follows (add_rmsnorm). The sum of squares
 * is kept in double, as llama.cpp does, so the reference is as close to exact as a
 * float result can be. */
#include <math.h>

#include "cpu_ops.h"

/* One row: y = x / sqrt(mean(x^2) + eps) * w. */
static void norm_row(float *yr, const float *xr, size_t n, const float *w, float eps)
{
	double sum = 0.0;
	for (size_t i = 0; i < n; i++)
		sum += (double)xr[i] * (double)xr[i];
	float scale = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
	for (size_t i = 0; i < n; i++)
		yr[i] = (xr[i] * scale) * w[i];
}

enum specd_status cpu_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			      size_t ldx, size_t rows, size_t n, const float *w, float eps)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !w || n == 0 || ldx < n || ldy < n)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++)
		norm_row(y + r * ldy, x + r * ldx, n, w, eps);
	return SPECD_OK;
}

enum specd_status cpu_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, float *x,
				  size_t ldx, const float *d, size_t ldd, size_t rows, size_t n,
				  const float *w, float eps)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !d || !w || n == 0 || ldx < n || ldy < n || ldd < n ||
	    (y == d && ldy != ldd))
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		float *xr = x + r * ldx;
		const float *dr = d + r * ldd;
		for (size_t i = 0; i < n; i++)
			xr[i] += dr[i];
		norm_row(y + r * ldy, xr, n, w, eps);
	}
	return SPECD_OK;
}
