/* The vector inner loops of the CPU backend, written once over a small set of vector
 * primitives and included by each ISA file (simd_avx2.c, simd_avx512.c), which defines
 * before including it: VL (floats per vector), `vec`, and the
 * primitives v_zero v_set1 v_loadu v_storeu v_add v_sub v_mul v_fma v_hsum v_load_f16
 * v_load_bf16 v_load_i8 v_q4_chunk v_i8x32_chunk f16_scalar. Both ISAs have AVX2, whose
 * 256-bit integer operations unpack the 5-bit and K-quant blocks.
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

/* How far ahead of a tile's reading its weights are prefetched. A tile reads its
 * outputs' rows (adjacent in memory) side by side, a few hundred bytes of each at a
 * time: the hardware sees short interleaved streams and fetches too late (on Zen 4, 4
 * rows of 864 bytes read that way came at a third of a sequential read's bandwidth).
 * Reading ahead along the tile's bytes as one stream restores most of it. */
#define PREFETCH_AHEAD 8192

/* Prefetches the len bytes at base + at + PREFETCH_AHEAD: called as a tile consumes
 * [at, at + len) of its rows' bytes (a prefetch past the matrix does not fault). */
static SIMD_INLINE void prefetch_ahead(const unsigned char *base, size_t at, size_t len)
{
	for (size_t i = 0; i < len; i += 64)
		_mm_prefetch((const char *)(base + at + PREFETCH_AHEAD + i), _MM_HINT_T0);
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
	default: /* never: the other types go to tile_bblock */
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

/* ---- Q5_0, Q5_1 and the K-quants: 32 weights at a time as 32 small ints ----
 *
 * These types are read a block at a time (32 weights for Q5_x, a super-block of 256
 * for Q4_K/Q5_K/Q6_K): its header (scales, mins, high bits) is decoded once per tile
 * row into floats, then each group of 32 weights is unpacked into one 256-bit vector
 * of signed bytes (the integer the reference multiplies, offset included), and each
 * VL-chunk of it becomes floats by the same one or two float operations the reference
 * does: d * q, d * q + m, or (d * sc) * q - dmin * m. The chunks are summed in
 * increasing index order into the output's single accumulator, as above. */

static SIMD_INLINE bool is_byte_group_type(enum kern_dtype t)
{
	return t == KERN_Q5_0 || t == KERN_Q5_1 || t == KERN_Q4_K || t == KERN_Q5_K ||
	       t == KERN_Q6_K;
}

static SIMD_INLINE uint32_t rd32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static SIMD_INLINE __m256i ld256(const unsigned char *p)
{
	return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/* One block of one output row, opened once per tile row. mul holds the multiplier of
 * each group of 32 (Q4_K/Q5_K: d * sc; Q5_x: d) or of each 16 (Q6_K: d * sc), off the
 * matching offset, added (Q4_K/Q5_K: -dmin * m; Q5_1: m). */
struct bblock {
	float mul[16];
	float off[8];
	const unsigned char *p;
};

/* Q8_0, Q4_0 and Q4_1 take the block path only under KERN_ACT_Q8 (simd_q8.h). */
static SIMD_INLINE size_t bblock_weights(enum kern_dtype t)
{
	return t == KERN_Q4_K || t == KERN_Q5_K || t == KERN_Q6_K ? KERN_QK_K : KERN_QK;
}

static SIMD_INLINE size_t bblock_bytes(enum kern_dtype t)
{
	switch (t) {
	case KERN_Q8_0: return 34;
	case KERN_Q4_0: return 18;
	case KERN_Q4_1: return 20;
	case KERN_Q5_0: return 22;
	case KERN_Q5_1: return 24;
	case KERN_Q4_K: return 144;
	case KERN_Q5_K: return 176;
	default: return 210; /* Q6_K */
	}
}

/* 8 unsigned bytes (the low 64 bits of b) times the scalar s, as 8 floats into out. */
static SIMD_INLINE void scale_u8x8(float *out, __m128i b, float s)
{
	__m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
	_mm256_storeu_ps(out, _mm256_mul_ps(_mm256_set1_ps(s), f));
}

/* A Q4_K/Q5_K super-block's 8 six-bit scales and 8 mins as bytes 0..7 and 8..15 of
 * one vector. The 12 bytes at p + 4, read as words a, b, c: a = bytes 0..3 (scales
 * 0..3 and, in bits 6-7, the top bits of scales 4..7), b = 4..7 (the same for the
 * mins), c = 8..11 (low nibbles: scales 4..7; high: mins 4..7). Word-wise:
 * [a, b] & 0x3f.. gives scales and mins 0..3; [c, c >> 4] & 0x0f.. with the top bits
 * of [a, b] gives 4..7. (The 16-byte load ends inside the block.) */
static SIMD_INLINE __m128i kq_scale_vec(const unsigned char *p)
{
	const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 4));
	const __m128i c = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2)),
					 _mm_set_epi32(0, 0, 4, 0));
	const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x3f));
	const __m128i top = _mm_and_si128(_mm_srli_epi32(v, 6), _mm_set1_epi8(0x03));
	const __m128i hi = _mm_or_si128(_mm_and_si128(c, _mm_set1_epi8(0x0f)),
					_mm_slli_epi32(top, 4));
	return _mm_unpacklo_epi32(lo, hi); /* sc 0..3, sc 4..7, m 0..3, m 4..7 */
}

static SIMD_INLINE void bblock_open(enum kern_dtype t, const unsigned char *p,
				    struct bblock *bb)
{
	bb->p = p;
	switch (t) {
	case KERN_Q8_0:
	case KERN_Q4_0:
	case KERN_Q5_0: bb->mul[0] = f16_scalar(rd16(p)); break;
	case KERN_Q4_1:
	case KERN_Q5_1:
		bb->mul[0] = f16_scalar(rd16(p));
		bb->off[0] = f16_scalar(rd16(p + 2));
		break;
	case KERN_Q4_K:
	case KERN_Q5_K: {
		const __m128i scm = kq_scale_vec(p);
		scale_u8x8(bb->mul, scm, f16_scalar(rd16(p)));
		scale_u8x8(bb->off, _mm_unpackhi_epi64(scm, scm), -f16_scalar(rd16(p + 2)));
		break;
	}
	default: { /* Q6_K: 16 int8 scales at 192, f16 d at 208 */
		__m128i sc = _mm_loadu_si128((const __m128i *)(const void *)(p + 192));
		__m256 d = _mm256_set1_ps(f16_scalar(rd16(p + 208)));
		__m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
		__m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc)));
		_mm256_storeu_ps(bb->mul, _mm256_mul_ps(d, lo));
		_mm256_storeu_ps(bb->mul + 8, _mm256_mul_ps(d, hi));
		break;
	}
	}
}

/* Each byte of v shifted right by c (0..7), in 16-bit lanes: callers mask away the
 * bits that cross from the neighbouring byte. c may vary at run time. */
static SIMD_INLINE __m256i srl8(__m256i v, int c)
{
	return _mm256_srl_epi16(v, _mm_cvtsi32_si128(c));
}

/* Group g of a Q6_K block as its 32 stored 6-bit integers (0..63; the weight is d *
 * sc * (u - 32)). Group g = 4 * half + i, as dtype.h describes; g is a constant after
 * unrolling, so the shifts are too. */
static SIMD_INLINE __m256i q6k_group_u(const unsigned char *p, int g)
{
	const int half = g / 4, i = g % 4;
	const __m256i ql = ld256(p + 64 * half + 32 * (i & 1));
	const __m256i q = _mm256_and_si256(i >= 2 ? _mm256_srli_epi16(ql, 4) : ql,
					   _mm256_set1_epi8(0x0f));
	/* bits 2i, 2i + 1 of qh[l] become bits 4, 5 */
	__m256i qh = ld256(p + 128 + 32 * half);
	qh = i < 2 ? _mm256_slli_epi16(qh, 4 - 2 * i) : i == 3 ? _mm256_srli_epi16(qh, 2) : qh;
	return _mm256_or_si256(q, _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
}

/* What a type's stored integers are offset by: its reference dequantises d * (q - it)
 * (Q4_0 8, Q5_0 16, Q6_K 32; 0 for the rest, Q8_0's being signed already). */
static SIMD_INLINE int stored_offset(enum kern_dtype t)
{
	return t == KERN_Q4_0 ? 8 : t == KERN_Q5_0 ? 16 : t == KERN_Q6_K ? 32 : 0;
}

/* Group g (weights 32g..32g+31 of the block) as its 32 stored integers: unsigned but
 * for Q8_0's, the offset not yet taken off (bblock_group takes it). */
static SIMD_INLINE __m256i bblock_stored(enum kern_dtype t, const struct bblock *bb, int g)
{
	const __m256i low4 = _mm256_set1_epi8(0x0f);
	const unsigned char *p = bb->p;
	switch (t) {
	case KERN_Q8_0: return ld256(p + 2);
	case KERN_Q4_0:
	case KERN_Q4_1: {
		__m128i qs = _mm_loadu_si128((const __m128i *)(const void *)(p + (t == KERN_Q4_1 ? 4 : 2)));
		/* weights 0..15: low nibbles; 16..31: high nibbles */
		return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), low4);
	}
	case KERN_Q5_0:
	case KERN_Q5_1: {
		const unsigned char *h = p + (t == KERN_Q5_1 ? 4 : 2);
		__m128i qs = _mm_loadu_si128((const __m128i *)(const void *)(h + 4));
		/* weights 0..15: low nibbles; 16..31: high nibbles */
		__m256i q = _mm256_and_si256(
			_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), low4);
		/* byte j takes byte j / 8 of qh, then keeps bit j % 8 of it as 0x10 */
		__m256i qh = _mm256_shuffle_epi8(
			_mm256_set1_epi32((int)rd32(h)),
			_mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
					  0x0101010101010101, 0x0000000000000000));
		const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
		qh = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit),
				      _mm256_set1_epi8(0x10));
		return _mm256_or_si256(q, qh);
	}
	case KERN_Q4_K:
	case KERN_Q5_K: {
		/* Each 64 weights share 32 bytes: group 2k in the low nibbles, 2k+1 high. */
		const unsigned char *qs = p + (t == KERN_Q5_K ? 48 : 16) + 32 * (g / 2);
		__m256i v = ld256(qs);
		__m256i q = _mm256_and_si256(g & 1 ? _mm256_srli_epi16(v, 4) : v, low4);
		if (t == KERN_Q5_K) { /* qh[l] bit g is the 5th bit of weight l of group g */
			__m256i hb = _mm256_and_si256(srl8(ld256(p + 16), g), _mm256_set1_epi8(1));
			q = _mm256_or_si256(q, _mm256_slli_epi16(hb, 4));
		}
		return q;
	}
	default: /* Q6_K */
		return q6k_group_u(p, g);
	}
}

/* Group g as 32 signed bytes: the integer each weight's reference dequantisation
 * multiplies (the stored integers less stored_offset). */
static SIMD_INLINE __m256i bblock_group(enum kern_dtype t, const struct bblock *bb, int g)
{
	const __m256i q = bblock_stored(t, bb, g);
	return stored_offset(t) ? _mm256_sub_epi8(q, _mm256_set1_epi8((char)stored_offset(t)))
				: q;
}

/* Weights [32g + j * VL, 32g + (j + 1) * VL) of the block as the reference's floats.
 * Where the reference multiplies and then adds (Q5_1: d * q + m; Q4_K/Q5_K:
 * (d * sc) * q - dmin * m), one FMA gives the same float: the product is exact (d and
 * dmin are f16, 11 significant bits; sc, m < 64; |q| < 32: at most 22 bits), so the
 * reference's first rounding does nothing and both round only the sum. */
static SIMD_INLINE vec bblock_chunk(enum kern_dtype t, const struct bblock *bb, __m256i q,
				    int g, int j)
{
	vec f = v_i8x32_chunk(q, j);
	switch (t) {
	case KERN_Q5_0: return v_mul(v_set1(bb->mul[0]), f);
	case KERN_Q5_1: return v_fma(v_set1(bb->mul[0]), f, v_set1(bb->off[0]));
	case KERN_Q4_K:
	case KERN_Q5_K: return v_fma(v_set1(bb->mul[g]), f, v_set1(bb->off[g]));
	default: /* Q6_K: one scale per 16 weights, VL <= 16 */
		return v_mul(v_set1(bb->mul[2 * g + j * VL / 16]), f);
	}
}

/* Writes a tile's sums (plus the bias) to y: each accumulator's lanes are added in
 * v_hsum's fixed order. */
static SIMD_INLINE void tile_store(const int no, const int nr, const struct cpu_matmul_job *jb,
				   size_t o0, size_t r0, vec acc[TILE_MAX_ROWS][TILE_MAX_OUT])
{
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

/* tile() for the types above: same accumulators, same order, blocks of their size. */
static SIMD_INLINE void tile_bblock(enum kern_dtype t, const int no, const int nr,
				    const struct cpu_matmul_job *jb, size_t o0, size_t r0)
{
	const struct kern_mat *w = jb->w;
	const unsigned char *wr[TILE_MAX_OUT];
	const float *xr[TILE_MAX_ROWS];
	vec acc[TILE_MAX_ROWS][TILE_MAX_OUT];
	const size_t bw = bblock_weights(t), bbytes = bblock_bytes(t);
	const int ng = (int)(bw / KERN_QK);
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
	size_t nb = w->n_in / bw;
	for (size_t b = 0; b < nb; b++) {
		struct bblock bb[TILE_MAX_OUT];
		prefetch_ahead(wr[0], (size_t)no * b * bbytes, (size_t)no * bbytes);
#pragma GCC unroll 8
		for (int o = 0; o < no; o++)
			bblock_open(t, wr[o] + b * bbytes, &bb[o]);
		/* Groups in runs of gu, unrolled so that each group's shifts are constants
		 * (Q6_K: the four groups of a 128-weight half; Q4_K/Q5_K: the two groups
		 * sharing 32 bytes of nibbles). */
		const int gu = t == KERN_Q6_K ? 4 : ng == 8 ? 2 : 1;
		for (int k = 0; k < ng / gu; k++) {
#pragma GCC unroll 4
		for (int u = 0; u < gu; u++) {
			const int g = k * gu + u;
			size_t xo = b * bw + (size_t)g * KERN_QK;
			/* Output by output: one output's unpacked group, scales and weight
			 * vector live at a time (activations are re-read from L1), which keeps
			 * the accumulators in registers. */
#pragma GCC unroll 8
			for (int o = 0; o < no; o++) {
				__m256i q = bblock_group(t, &bb[o], g);
#pragma GCC unroll 4
				for (int j = 0; j < NV; j++) {
					vec wv = bblock_chunk(t, &bb[o], q, g, j);
#pragma GCC unroll 4
					for (int r = 0; r < nr; r++)
						acc[r][o] = v_fma(wv, v_loadu(xr[r] + xo + j * VL),
								  acc[r][o]);
				}
			}
		}
		}
	}
	tile_store(no, nr, jb, o0, r0, acc);
}

/* y for outputs [o0, o0 + no) and rows [r0, r0 + nr): one register tile. no and nr
 * are constants after inlining, so the accumulators live in registers. */
static SIMD_INLINE void tile(enum kern_dtype t, const int no, const int nr,
			     const struct cpu_matmul_job *jb, size_t o0, size_t r0)
{
	if (is_byte_group_type(t)) {
		tile_bblock(t, no, nr, jb, o0, r0);
		return;
	}
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
	const size_t gbytes = kern_dtype_row_bytes(t, KERN_QK);
	for (size_t g = 0; g < ng; g++) {
		struct group gr[TILE_MAX_OUT];
		prefetch_ahead(wr[0], (size_t)no * g * gbytes, (size_t)no * gbytes);
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
	tile_store(no, nr, jb, o0, r0, acc);
}

#include "simd_q8.h"

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
	if (!is_float_type(t) && jb->xq) {
		range_body_q8(t, jb, o_begin, o_end);
		return;
	}
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
SIMD_RANGE(KERN_Q5_0, range_q5_0)
SIMD_RANGE(KERN_Q5_1, range_q5_1)
SIMD_RANGE(KERN_Q4_K, range_q4_k)
SIMD_RANGE(KERN_Q5_K, range_q5_k)
SIMD_RANGE(KERN_Q6_K, range_q6_k)

static void simd_matmul_range(const struct cpu_matmul_job *jb, size_t o_begin, size_t o_end)
{
	switch (jb->w->type) {
	case KERN_F32: range_f32(jb, o_begin, o_end); break;
	case KERN_F16: range_f16(jb, o_begin, o_end); break;
	case KERN_BF16: range_bf16(jb, o_begin, o_end); break;
	case KERN_Q8_0: range_q8_0(jb, o_begin, o_end); break;
	case KERN_Q4_0: range_q4_0(jb, o_begin, o_end); break;
	case KERN_Q4_1: range_q4_1(jb, o_begin, o_end); break;
	case KERN_Q5_0: range_q5_0(jb, o_begin, o_end); break;
	case KERN_Q5_1: range_q5_1(jb, o_begin, o_end); break;
	case KERN_Q4_K: range_q4_k(jb, o_begin, o_end); break;
	case KERN_Q5_K: range_q5_k(jb, o_begin, o_end); break;
	case KERN_Q6_K: range_q6_k(jb, o_begin, o_end); break;
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
