/* The scalar reference inner loops (SPECD_ISA=scalar): portable C, one product at a
 * time in increasing index order. Every other ISA and backend is tested against these;
 * simd_avx2.c and simd_avx512.c are their vector counterparts. */
#include <assert.h>
#include <string.h>

#include "cpu_ops.h"

/* Elements per chunk of a float-typed row; quantised rows use their block size
 * (at least this), which must not exceed CHUNK_MAX. */
#define CHUNK KERN_QK
#define CHUNK_MAX 256

static size_t chunk_len(enum kern_dtype t)
{
	size_t block = kern_dtype_block(t);
	return block > CHUNK ? block : CHUNK;
}

/* Weights [i0, i0 + len) of one row as floats: a pointer into the row itself for
 * aligned f32, else dequantised into buf (CHUNK_MAX floats). i0 is a multiple of
 * chunk_len(t). */
static const float *row_chunk(enum kern_dtype t, const unsigned char *row, size_t i0,
			      size_t len, float *buf)
{
	size_t block = kern_dtype_block(t);
	if (t == KERN_F32) {
		const unsigned char *p = row + i0 * sizeof(float);
		if (((uintptr_t)p & (sizeof(float) - 1)) == 0)
			return (const float *)(const void *)p;
		memcpy(buf, p, len * sizeof(float));
		return buf;
	}
	if (block == 1) /* f16, bf16 */
		kern_dequant_row(t, row + i0 * 2, buf, len);
	else
		kern_dequant_row(t, row + (i0 / block) * kern_dtype_block_bytes(t), buf, len);
	return buf;
}

static void scalar_matmul_range(const struct cpu_matmul_job *j, size_t o_begin, size_t o_end)
{
	const struct kern_mat *w = j->w;
	const unsigned char *base = w->data;
	size_t chunk = chunk_len(w->type);
	float buf[CHUNK_MAX];
	float acc[CPU_MATMUL_ROW_CHUNK];
	assert(chunk <= CHUNK_MAX);
	for (size_t r0 = 0; r0 < j->rows; r0 += CPU_MATMUL_ROW_CHUNK) {
		size_t nr = j->rows - r0 < CPU_MATMUL_ROW_CHUNK ? j->rows - r0 : CPU_MATMUL_ROW_CHUNK;
		for (size_t o = o_begin; o < o_end; o++) {
			const unsigned char *row = base + o * w->row_bytes;
			for (size_t r = 0; r < nr; r++)
				acc[r] = 0.0f;
			/* Each y[r, o] is summed in increasing i, one product at a time, the
			 * same whatever nr is: that order is what batch invariance rests on. */
			for (size_t i0 = 0; i0 < w->n_in; i0 += chunk) {
				size_t len = w->n_in - i0 < chunk ? w->n_in - i0 : chunk;
				const float *wc = row_chunk(w->type, row, i0, len, buf);
				for (size_t r = 0; r < nr; r++) {
					const float *xr = j->x + (r0 + r) * j->ldx + i0;
					float a = acc[r];
					for (size_t i = 0; i < len; i++)
						a += xr[i] * wc[i];
					acc[r] = a;
				}
			}
			for (size_t r = 0; r < nr; r++)
				j->y[(r0 + r) * j->ldy + o] = j->bias ? acc[r] + j->bias[o] : acc[r];
		}
	}
}

static float scalar_dot(const float *a, const float *b, size_t n)
{
	float s = 0.0f;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static void scalar_axpy(float *acc, float p, const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		acc[i] += p * v[i];
}

const struct cpu_isa_kernels cpu_kernels_scalar = {
	.isa = KERN_ISA_SCALAR,
	.matmul_range = scalar_matmul_range,
	.dot = scalar_dot,
	.axpy = scalar_axpy,
};
