/* The scalar reference inner loops (SPECD_ISA=scalar): portable C, one product at a
 * time in increasing index order. Every other ISA and backend is tested against these;
 * simd_avx2.c and simd_avx512.c are their vector counterparts. */
#include <assert.h>
#include <math.h>
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

/* Exact sum of (q[i] + u) * x[i] over weights 4l..4l+3 of a group (u: 32 where Q6_K
 * multiplies its stored integers, else 0). */
static int32_t q8_lane(const int8_t *q, int u, const int8_t *x, int l)
{
	int32_t sum = 0;
	for (int i = 4 * l; i < 4 * l + 4; i++)
		sum += (q[i] + u) * x[i];
	return sum;
}

/* One output's row under KERN_ACT_Q8 for a K-quant, rows r0..r0+nr-1 into acc. */
static void scalar_q8_kquant(const struct cpu_matmul_job *j, const unsigned char *row,
			     size_t r0, size_t nr, float acc[][CPU_Q8_LANES])
{
	const struct kern_mat *w = j->w;
	const struct cpu_q8_rows *xq = j->xq;
	const size_t bytes = kern_dtype_block_bytes(w->type), gpb = KERN_QK_K / KERN_QK;
	const bool q6 = w->type == KERN_Q6_K;
	for (size_t b = 0; b < w->n_in / KERN_QK_K; b++) {
		const unsigned char *blk = row + b * bytes;
		int8_t q[KERN_QK_K / KERN_QK][KERN_QK];
		int16_t sc[16];
		float dw, mins[8], mul[2], off;
		kern_kblock_scales(w->type, blk, sc, &dw, mins);
		for (unsigned g = 0; g < gpb; g++)
			kern_group_ints(w->type, blk, g, q[g], mul, &off);
		for (size_t r = 0; r < nr; r++) {
			int32_t t[CPU_Q8_LANES] = {0};
			for (size_t g = 0; g < gpb; g++) {
				const int8_t *x = xq->q + (r0 + r) * xq->ldq + (b * gpb + g) * KERN_QK;
				for (int l = 0; l < CPU_Q8_LANES; l++) {
					int32_t s = q6 ? sc[2 * g + (size_t)l / 4] : sc[g];
					t[l] += q8_lane(q[g], q6 ? 32 : 0, x, l) * s;
				}
			}
			/* Q6_K's offset: -32 times each 16's scale times its activations' sum */
			const int16_t *bs = xq->bs + (r0 + r) * 2 * xq->ng + b * 2 * gpb;
			for (int l = 0; q6 && l < CPU_Q8_LANES; l++)
				t[l] -= 32 * (sc[2 * l] * bs[2 * l] + sc[2 * l + 1] * bs[2 * l + 1]);
			/* one activation scale per super-block: its first group's */
			const float d = dw * xq->d[(r0 + r) * xq->ng + b * gpb];
			const float *s = xq->s + (r0 + r) * xq->ng + b * gpb;
			for (int l = 0; l < CPU_Q8_LANES; l++) {
				acc[r][l] = fmaf((float)t[l], d, acc[r][l]);
				if (!q6)
					acc[r][l] = fmaf(mins[l], s[l], acc[r][l]);
			}
		}
	}
}

/* One output's row under KERN_ACT_Q8 for a type of 32-weight blocks, rows r0..r0+nr-1
 * into acc. */
static void scalar_q8_blocks(const struct cpu_matmul_job *j, const unsigned char *row,
			     size_t r0, size_t nr, float acc[][CPU_Q8_LANES])
{
	const struct kern_mat *w = j->w;
	const struct cpu_q8_rows *xq = j->xq;
	const size_t bytes = kern_dtype_block_bytes(w->type);
	const bool has_off = kern_dtype_has_offset(w->type);
	for (size_t gi = 0; gi < xq->ng; gi++) {
		int8_t q[KERN_QK];
		float mul[2], off;
		kern_group_ints(w->type, row + gi * bytes, 0, q, mul, &off);
		for (size_t r = 0; r < nr; r++) {
			const int8_t *x = xq->q + (r0 + r) * xq->ldq + gi * KERN_QK;
			float d = xq->d[(r0 + r) * xq->ng + gi], s = xq->s[(r0 + r) * xq->ng + gi];
			for (int l = 0; l < CPU_Q8_LANES; l++)
				acc[r][l] = fmaf((float)q8_lane(q, 0, x, l), mul[l / 4] * d, acc[r][l]);
			for (int l = 0; has_off && l < CPU_Q8_LANES; l++)
				acc[r][l] = fmaf(off, l == 0 ? s : 0.0f, acc[r][l]);
		}
	}
}

/* KERN_ACT_Q8 (cpu_ops.h spells out the arithmetic every ISA follows): one output at
 * a time, each block's integers unpacked once for all rows. fmaf is the FMA the
 * vector loops issue, so the results are theirs bit for bit. */
static void scalar_q8_range(const struct cpu_matmul_job *j, size_t o_begin, size_t o_end)
{
	const struct kern_mat *w = j->w;
	float acc[CPU_MATMUL_ROW_CHUNK][CPU_Q8_LANES];
	for (size_t r0 = 0; r0 < j->rows; r0 += CPU_MATMUL_ROW_CHUNK) {
		size_t nr = j->rows - r0 < CPU_MATMUL_ROW_CHUNK ? j->rows - r0 : CPU_MATMUL_ROW_CHUNK;
		for (size_t o = o_begin; o < o_end; o++) {
			const unsigned char *row = (const unsigned char *)w->data + o * w->row_bytes;
			memset(acc, 0, nr * sizeof(acc[0]));
			if (cpu_q8_kquant(w->type))
				scalar_q8_kquant(j, row, r0, nr, acc);
			else
				scalar_q8_blocks(j, row, r0, nr, acc);
			for (size_t r = 0; r < nr; r++) {
				float v = cpu_q8_hsum(acc[r]);
				j->y[(r0 + r) * j->ldy + o] = j->bias ? v + j->bias[o] : v;
			}
		}
	}
}

static void scalar_matmul_range(const struct cpu_matmul_job *j, size_t o_begin, size_t o_end)
{
	if (j->xq) {
		scalar_q8_range(j, o_begin, o_end);
		return;
	}
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
