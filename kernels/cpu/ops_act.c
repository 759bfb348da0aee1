/* Reference element-wise ops of the forward pass: the SwiGLU activation of the MLP,
 * the residual add and the scatter of a batch's keys and values into the cache. Each
 * element is independent, so they are trivially batch-invariant. */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

enum specd_status cpu_silu_mul(struct kern_ctx *ctx, float *gate, const float *up, size_t n)
{
	(void)ctx;
	if (n == 0)
		return SPECD_OK;
	if (!gate || !up)
		return SPECD_INVAL;
	for (size_t i = 0; i < n; i++) {
		float g = gate[i];
		gate[i] = g / (1.0f + expf(-g)) * up[i];
	}
	return SPECD_OK;
}

enum specd_status cpu_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
			       const uint32_t *idx, const float *src, size_t ld_src, size_t rows,
			       size_t n)
{
	(void)ctx;
	if (rows == 0 || n == 0)
		return SPECD_OK;
	if (!dst || !idx || !src || ld_dst < n || ld_src < n)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++)
		memcpy(dst + (size_t)idx[r] * ld_dst, src + r * ld_src, n * sizeof(float));
	return SPECD_OK;
}

enum specd_status cpu_add(struct kern_ctx *ctx, float *y, const float *x, size_t n)
{
	(void)ctx;
	if (n == 0)
		return SPECD_OK;
	if (!y || !x)
		return SPECD_INVAL;
	for (size_t i = 0; i < n; i++)
		y[i] += x[i];
	return SPECD_OK;
}
