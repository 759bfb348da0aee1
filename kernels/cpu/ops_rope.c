/* Reference rotary position embedding for Q and K, in both layouts of model/arch.h.
 * Angles are computed in double from the position and then rounded, so a position
 * deep in a long context is as precise as position 1 (an iterated float product of
 * the frequencies would drift). */
#include <math.h>

#include "cpu_ops.h"

enum specd_status cpu_rope(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
			   size_t n_heads, size_t head_dim, const uint32_t *pos,
			   float freq_base, enum kern_rope_layout layout)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!x || !pos || head_dim == 0 || head_dim % 2 != 0 || ldx < n_heads * head_dim ||
	    !(freq_base > 0.0f) || (layout != KERN_ROPE_ADJACENT && layout != KERN_ROPE_HALVES))
		return SPECD_INVAL;
	size_t half = head_dim / 2;
	for (size_t r = 0; r < rows; r++) {
		float *xr = x + r * ldx;
		for (size_t j = 0; j < half; j++) {
			double freq = pow((double)freq_base, -2.0 * (double)j / (double)head_dim);
			double theta = (double)pos[r] * freq;
			float c = (float)cos(theta), s = (float)sin(theta);
			size_t i0 = layout == KERN_ROPE_ADJACENT ? 2 * j : j;
			size_t i1 = layout == KERN_ROPE_ADJACENT ? 2 * j + 1 : j + half;
			for (size_t h = 0; h < n_heads; h++) {
				float *xh = xr + h * head_dim;
				float a = xh[i0], b = xh[i1];
				xh[i0] = a * c - b * s;
				xh[i1] = a * s + b * c;
			}
		}
	}
	return SPECD_OK;
}
