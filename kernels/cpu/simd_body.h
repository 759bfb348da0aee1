/* The vector inner loops of the CPU backend, written once over a small set of vector
 * primitives and included by each ISA file (simd_avx2.c, simd_avx512.c), which defines
 * before including it: VL (floats per vector), `vec`, and the
 * primitives v_zero v_set1 v_loadu v_storeu v_add v_sub v_mul v_fma v_hsum v_load_f16
 * v_load_bf16 v_load_i8 v_q4_chunk f16_scalar.
 *
 * Batch invariance: every output element has one vector accumulator, fed by FMAs over
 * its n_in in increasing chunks of VL (the row's last partial chunk zero-padded), then
 * summed across lanes by v_hsum, then the bias added. Tiles of several outputs and
 * rows only interleave independent accumulators, so an element's arithmetic is the
 * same whatever the tile shape, row count or thread split. Weights are dequantised to
 * the reference's float values (kern_dequant_row) before the FMA, so activations stay
 * f32: exact against the reference up to the summation order. */
#include <string.h>

#define SIMD_INLINE inline __attribute__((always_inline))
#define NV (KERN_QK / VL) /* vectors per group of 32 weights (one quant block) */
#define TILE_MAX_OUT 8    /* output features per tile of one row */
#define TILE_MAX_ROWS 4   /* rows per register tile */

static SIMD_INLINE uint16_t rd16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static SIMD_INLINE bool is_float_type(enum kern_dtype t)
{
	return t == KERN_F32 || t == KERN_F16 || t == KERN_BF16;
}

/* Group g (32 weights, one quant block) of a row, opened once per tile row: the
 * block's scale d and offset m (quantised types), and where its weights start. */
struct group {
	vec d, m;
	const unsigned char *q;
};

static SIMD_INLINE struct group group_open(enum kern_dtype t, const unsigned char *row,
					   size_t g)
{
	struct group gr;
	gr.d = gr.m = v_zero();
	switch (t) {
	case KERN_F32: gr.q = row + g * KERN_QK * sizeof(float); break;
	case KERN_F16:
	case KERN_BF16: gr.q = row + g * KERN_QK * sizeof(uint16_t); break;
	case KERN_Q8_0: {
		const unsigned char *b = row + g * (2 + KERN_QK);
		gr.d = v_set1(f16_scalar(rd16(b)));
		gr.q = b + 2;
		break;
	}
	case KERN_Q4_0: {
		const unsigned char *b = row + g * (2 + KERN_QK / 2);
		gr.d = v_set1(f16_scalar(rd16(b)));
		gr.q = b + 2;
		break;
	}
	case KERN_Q4_1: {
		const unsigned char *b = row + g * (4 + KERN_QK / 2);
		gr.d = v_set1(f16_scalar(rd16(b)));
		gr.m = v_set1(f16_scalar(rd16(b + 2)));
		gr.q = b + 4;
		break;
	}
	default: /* never: simd_matmul_range sends other types to the scalar loop */
		gr.q = row;
		break;
	}
	return gr;
}

/* Weights [j * VL, (j + 1) * VL) of an open group as floats, equal to what
 * kern_dequant_row gives (d * q, d * (q - 8), d * q + m: same operations, no FMA). */
static SIMD_INLINE vec group_chunk(enum kern_dtype t, const struct group *gr, int j)
{
	switch (t) {
	case KERN_F32: return v_loadu((const float *)(const void *)gr->q + j * VL);
	case KERN_F16: return v_load_f16((const uint16_t *)(const void *)gr->q + j * VL);
	case KERN_BF16: return v_load_bf16((const uint16_t *)(const void *)gr->q + j * VL);
	case KERN_Q8_0: return v_mul(gr->d, v_load_i8((const int8_t *)(const void *)gr->q + j * VL));
	case KERN_Q4_0: return v_mul(gr->d, v_sub(v_q4_chunk(gr->q, j), v_set1(8.0f)));
	case KERN_Q4_1: return v_add(v_mul(gr->d, v_q4_chunk(gr->q, j)), gr->m);
	default: return v_zero();
	}
}

/* Float types only: VL weights from element i, or the last len < VL zero-padded. */
static SIMD_INLINE vec load_chunk(enum kern_dtype t, const unsigned char *row, size_t i)
{
	if (t == KERN_F32)
		return v_loadu((const float *)(const void *)row + i);
	const uint16_t *p = (const uint16_t *)(const void *)row + i;
	return t == KERN_F16 ? v_load_f16(p) : v_load_bf16(p);
}

static SIMD_INLINE vec load_partial(enum kern_dtype t, const unsigned char *row, size_t i,
				    size_t len)
{
	if (t == KERN_F32) {
		float tmp[VL] = {0};
		memcpy(tmp, row + i * sizeof(float), len * sizeof(float));
		return v_loadu(tmp);
	}
	uint16_t tmp[VL] = {0};
	memcpy(tmp, row + i * sizeof(uint16_t), len * sizeof(uint16_t));
	return t == KERN_F16 ? v_load_f16(tmp) : v_load_bf16(tmp);
}

static SIMD_INLINE vec x_partial(const float *x, size_t len)
{
	float tmp[VL] = {0};
	memcpy(tmp, x, len * sizeof(float));
	return v_loadu(tmp);
}

/* y for outputs [o0, o0 + no) and rows [r0, r0 + nr): one register tile. no and nr
 * are constants after inlining, so the accumulators live in registers. */
static SIMD_INLINE void tile(enum kern_dtype t, const int no, const int nr,
			     const struct cpu_matmul_job *jb, size_t o0, size_t r0)
{
	const struct kern_mat *w = jb->w;
	const unsigned char *wr[TILE_MAX_OUT];
	const float *xr[TILE_MAX_ROWS];
	vec acc[TILE_MAX_ROWS][TILE_MAX_OUT];
#pragma GCC unroll 8
	for (int o = 0; o < no; o++)
		wr[o] = (const unsigned char *)w->data + (o0 + o) * w->row_bytes;
#pragma GCC unroll 4
	for (int r = 0; r < nr; r++) {
		xr[r] = jb->x + (r0 + r) * jb->ldx;
#pragma GCC unroll 8
		for (int o = 0; o < no; o++)
			acc[r][o] = v_zero();
	}
	size_t n_in = w->n_in, ng = n_in / KERN_QK;
	for (size_t g = 0; g < ng; g++) {
		struct group gr[TILE_MAX_OUT];
#pragma GCC unroll 8
		for (int o = 0; o < no; o++)
			gr[o] = group_open(t, wr[o], g);
		/* Chunk by chunk: each activation vector is loaded once and serves every
		 * output of the tile; each weight vector serves every row. */
#pragma GCC unroll 4
		for (int j = 0; j < NV; j++) {
			vec wv[TILE_MAX_OUT];
#pragma GCC unroll 8
			for (int o = 0; o < no; o++)
				wv[o] = group_chunk(t, &gr[o], j);
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++) {
				vec xv = v_loadu(xr[r] + g * KERN_QK + j * VL);
#pragma GCC unroll 8
				for (int o = 0; o < no; o++)
					acc[r][o] = v_fma(wv[o], xv, acc[r][o]);
			}
		}
	}
	if (is_float_type(t)) {
		size_t i = ng * KERN_QK;
		for (; i + VL <= n_in; i += VL) {
#pragma GCC unroll 8
			for (int o = 0; o < no; o++) {
				vec wv = load_chunk(t, wr[o], i);
#pragma GCC unroll 4
				for (int r = 0; r < nr; r++)
					acc[r][o] = v_fma(wv, v_loadu(xr[r] + i), acc[r][o]);
			}
		}
		if (i < n_in) {
			size_t len = n_in - i;
#pragma GCC unroll 8
			for (int o = 0; o < no; o++) {
				vec wv = load_partial(t, wr[o], i, len);
#pragma GCC unroll 4
				for (int r = 0; r < nr; r++)
					acc[r][o] = v_fma(wv, x_partial(xr[r] + i, len), acc[r][o]);
			}
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < nr; r++) {
		float *yr = jb->y + (r0 + r) * jb->ldy + o0;
#pragma GCC unroll 8
		for (int o = 0; o < no; o++) {
			float s = v_hsum(acc[r][o]);
			yr[o] = jb->bias ? s + jb->bias[o0 + o] : s;
		}
	}
}

/* Outputs [o0, o1) (at most TILE_MAX_OUT) for rows [r0, r0 + nr) in tiles of no. */
static SIMD_INLINE void tiles(enum kern_dtype t, const int no, const int nr,
			      const struct cpu_matmul_job *jb, size_t o0, size_t o1, size_t r0)
{
	size_t o = o0;
	for (; o + (size_t)no <= o1; o += (size_t)no)
		tile(t, no, nr, jb, o, r0);
	for (; o < o1; o++)
		tile(t, 1, nr, jb, o, r0);
}

/* For each group of TILE_MAX_OUT output features, every row block: that group's
 * weights stay in L1/L2 while all rows use them. The tile shape (measured per type
 * on Zen 3, docs/performance.md) only changes how many independent accumulators are
 * in flight, never an element's arithmetic. */
static SIMD_INLINE void range_body(enum kern_dtype t, const struct cpu_matmul_job *jb,
				   size_t o_begin, size_t o_end)
{
	for (size_t o0 = o_begin; o0 < o_end; o0 += TILE_MAX_OUT) {
		size_t o1 = o_end - o0 < TILE_MAX_OUT ? o_end : o0 + TILE_MAX_OUT;
		size_t r0 = 0;
		while (r0 < jb->rows) {
			size_t left = jb->rows - r0;
			if (is_float_type(t) ? left >= 2 : left == 2) {
				/* Float weights are cheap to convert: two rows keep both rows'
				 * activations in L1 and four outputs' FMAs in flight. */
				tiles(t, 4, 2, jb, o0, o1, r0);
				r0 += 2;
			} else if (left >= 4) {
				/* Dequantising costs more: spread it over four rows. */
				tiles(t, 2, 4, jb, o0, o1, r0);
				r0 += 4;
			} else if (left == 3) {
				tiles(t, 2, 3, jb, o0, o1, r0);
				r0 += 3;
			} else {
				tiles(t, 4, 1, jb, o0, o1, r0);
				r0 += 1;
			}
		}
	}
}

#define SIMD_RANGE(T, name)                                                               \
	static void name(const struct cpu_matmul_job *jb, size_t o_begin, size_t o_end)  \
	{                                                                                 \
		range_body(T, jb, o_begin, o_end);                                        \
	}
SIMD_RANGE(KERN_F32, range_f32)
SIMD_RANGE(KERN_F16, range_f16)
SIMD_RANGE(KERN_BF16, range_bf16)
SIMD_RANGE(KERN_Q8_0, range_q8_0)
SIMD_RANGE(KERN_Q4_0, range_q4_0)
SIMD_RANGE(KERN_Q4_1, range_q4_1)

static void simd_matmul_range(const struct cpu_matmul_job *jb, size_t o_begin, size_t o_end)
{
	switch (jb->w->type) {
	case KERN_F32: range_f32(jb, o_begin, o_end); break;
	case KERN_F16: range_f16(jb, o_begin, o_end); break;
	case KERN_BF16: range_bf16(jb, o_begin, o_end); break;
	case KERN_Q8_0: range_q8_0(jb, o_begin, o_end); break;
	case KERN_Q4_0: range_q4_0(jb, o_begin, o_end); break;
	case KERN_Q4_1: range_q4_1(jb, o_begin, o_end); break;
	default: /* types without a vector loop yet: the reference's (still one order) */
		cpu_kernels_scalar.matmul_range(jb, o_begin, o_end);
		break;
	}
}

/* Attention's two inner loops, one accumulator as above. */
static float simd_dot(const float *a, const float *b, size_t n)
{
	vec acc = v_zero();
	size_t i = 0;
	for (; i + VL <= n; i += VL)
		acc = v_fma(v_loadu(a + i), v_loadu(b + i), acc);
	if (i < n)
		acc = v_fma(x_partial(a + i, n - i), x_partial(b + i, n - i), acc);
	return v_hsum(acc);
}

static void simd_axpy(float *acc, float p, const float *v, size_t n)
{
	vec pv = v_set1(p);
	size_t i = 0;
	for (; i + VL <= n; i += VL)
		v_storeu(acc + i, v_fma(pv, v_loadu(v + i), v_loadu(acc + i)));
	if (i < n) {
		float tmp[VL];
		v_storeu(tmp, v_fma(pv, x_partial(v + i, n - i), x_partial(acc + i, n - i)));
		memcpy(acc + i, tmp, (n - i) * sizeof(float));
	}
}
