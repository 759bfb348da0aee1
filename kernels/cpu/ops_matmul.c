/* Reference matmul and embedding lookup: the weight-reading ops of the forward pass.
 * Weights stay in their file type; one block (32 weights) at a time is dequantised
 * into a stack buffer and used for a chunk of rows, so no call allocates. */
#include <stdbool.h>
#include <string.h>

#include "cpu_ops.h"

/* Elements per chunk of a float-typed row; quantised rows use their block size. */
#define CHUNK KERN_QK

static bool mat_valid(const struct kern_mat *w)
{
	size_t block = kern_dtype_block(w->type);
	if (!w->data || block == 0 || w->n_in == 0 || w->n_in % block != 0)
		return false;
	return w->row_bytes >= kern_dtype_row_bytes(w->type, w->n_in);
}

/* Weights [i0, i0 + len) of one row as floats: a pointer into the row itself for
 * aligned f32, else dequantised into buf (CHUNK floats). i0 is a multiple of CHUNK. */
static const float *row_chunk(enum kern_dtype t, const unsigned char *row, size_t i0,
			      size_t len, float *buf)
{
	switch (t) {
	case KERN_F32: {
		const unsigned char *p = row + i0 * sizeof(float);
		if (((uintptr_t)p & (sizeof(float) - 1)) == 0)
			return (const float *)(const void *)p;
		memcpy(buf, p, len * sizeof(float));
		return buf;
	}
	case KERN_F16:
	case KERN_BF16:
		kern_dequant_row(t, row + i0 * 2, buf, len);
		return buf;
	case KERN_Q8_0:
	case KERN_Q4_0:
	case KERN_Q4_1:
		kern_dequant_row(t, row + (i0 / KERN_QK) * kern_dtype_block_bytes(t), buf, len);
		return buf;
	}
	return NULL;
}

enum specd_status cpu_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
			     size_t ldx, size_t rows, const struct kern_mat *w,
			     const float *bias)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !w || !mat_valid(w) || ldx < w->n_in || ldy < w->n_out)
		return SPECD_INVAL;

	const unsigned char *base = w->data;
	float buf[CHUNK];
	float acc[CPU_MATMUL_ROW_CHUNK];
	for (size_t r0 = 0; r0 < rows; r0 += CPU_MATMUL_ROW_CHUNK) {
		size_t nr = rows - r0 < CPU_MATMUL_ROW_CHUNK ? rows - r0 : CPU_MATMUL_ROW_CHUNK;
		for (size_t o = 0; o < w->n_out; o++) {
			const unsigned char *row = base + o * w->row_bytes;
			for (size_t r = 0; r < nr; r++)
				acc[r] = 0.0f;
			/* Each y[r, o] is summed in increasing i, one product at a time, the
			 * same whatever nr is: that order is what batch invariance rests on. */
			for (size_t i0 = 0; i0 < w->n_in; i0 += CHUNK) {
				size_t len = w->n_in - i0 < CHUNK ? w->n_in - i0 : CHUNK;
				const float *wc = row_chunk(w->type, row, i0, len, buf);
				for (size_t r = 0; r < nr; r++) {
					const float *xr = x + (r0 + r) * ldx + i0;
					float a = acc[r];
					for (size_t j = 0; j < len; j++)
						a += xr[j] * wc[j];
					acc[r] = a;
				}
			}
			for (size_t r = 0; r < nr; r++)
				y[(r0 + r) * ldy + o] = bias ? acc[r] + bias[o] : acc[r];
		}
	}
	return SPECD_OK;
}

enum specd_status cpu_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
			       const struct kern_mat *table, const uint32_t *ids, size_t rows)
{
	(void)ctx;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !ids || !table || !mat_valid(table) || ldy < table->n_in)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		if (ids[r] >= table->n_out)
			return SPECD_INVAL;
	}
	const unsigned char *base = table->data;
	for (size_t r = 0; r < rows; r++)
		kern_dequant_row(table->type, base + ids[r] * table->row_bytes, y + r * ldy,
				 table->n_in);
	return SPECD_OK;
}
