/* KERN_ACT_Q8's vector loops (kern.h; the arithmetic is spelled out in cpu_ops.h and
 * kept bit for bit by isa_scalar.c's scalar_q8_range). Included by simd_body.h, whose
 * block readers (bblock_open, bblock_group; bblock_stored for the K-quants, whose
 * stored integers are unsigned, Q6_K taking its offset apart) unpack each group of 32
 * weights into one vector of bytes; the products with the row's 8-bit activations are
 * summed in 256-bit integer lanes on both ISAs (AVX-512 runs the same AVX2 instructions), so the
 * ISAs agree bitwise and an element's arithmetic never depends on the tile. */

/* Lane l (0..7) of a group is the exact sum of q[i] * x[i], i in 4l..4l+3: maddubs
 * multiplies an unsigned byte by a signed one, so a signed q gives its magnitude and
 * its sign moves to x; |q| <= 128 and |x| <= 127 keep each pair's sum inside int16,
 * and madd's multiplier (a K-quant's sub-block scale, |sc| <= 128) keeps the lane far
 * inside int32, and so does a K-quant super-block's 8 groups summed (Q6_K's unsigned
 * integers at most 8 x 4 x 63 x 127 x 128 = 32774144, and its offset, subtracted
 * after, at most 8 x 32 x 2 x 16 x 127 x 128 < 2^24 per lane). The conversions to float
 * are exact below 2^24 (every type but Q6_K stays there) and round to nearest above,
 * the same on every ISA. */

/* cpu_q8_hsum's order. */
static SIMD_INLINE float q8_hsum(__m256 v)
{
	__m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	__m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
	return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
}

/* Weights and activations of one group as cpu_ops.h's eight int32 lanes: the integer
 * sums, each times the integer scale of its sub-block (K-quants) or 1. */
static SIMD_INLINE __m256i q8_group(enum kern_dtype t, __m256i q, const int8_t *x, __m256i sc)
{
	__m256i a = q, b = ld256((const unsigned char *)x);
	if (cpu_q8_signed(t)) {
		a = _mm256_sign_epi8(q, q);
		b = _mm256_sign_epi8(b, q);
	}
	return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), sc);
}

/* A tile's weight rows and zeroed accumulators. */
static SIMD_INLINE void tile_open_q8(const int no, const int nr, const struct kern_mat *w,
				     size_t o0, const unsigned char *wr[TILE_MAX_OUT],
				     __m256 acc[TILE_MAX_ROWS][TILE_MAX_OUT])
{
#pragma GCC unroll 8
	for (int o = 0; o < no; o++)
		wr[o] = (const unsigned char *)w->data + (o0 + o) * w->row_bytes;
#pragma GCC unroll 4
	for (int r = 0; r < nr; r++) {
#pragma GCC unroll 8
		for (int o = 0; o < no; o++)
			acc[r][o] = _mm256_setzero_ps();
	}
}

static SIMD_INLINE void tile_store_q8(const int no, const int nr,
				      const struct cpu_matmul_job *jb,
				      size_t o0, size_t r0, __m256 acc[TILE_MAX_ROWS][TILE_MAX_OUT])
{
#pragma GCC unroll 4
	for (int r = 0; r < nr; r++) {
		float *yr = jb->y + (r0 + r) * jb->ldy + o0;
#pragma GCC unroll 8
		for (int o = 0; o < no; o++) {
			float v = q8_hsum(acc[r][o]);
			yr[o] = jb->bias ? v + jb->bias[o0 + o] : v;
		}
	}
}

/* A K-quant super-block's integer scales as 16-bit lanes, its d and (Q4_K/Q5_K) its
 * mins. s16[h] holds 8 scales, the same in both 128-bit halves (Q4_K/Q5_K: s16[0] the
 * block's 8; Q6_K: s16[0] scales 0..7 of its sixteen, s16[1] 8..15), so that one byte
 * shuffle per group gives madd its multipliers. */
struct kscales {
	__m256i s16[2];
	__m256i all16; /* Q6_K: its 16 scales in order, for the offset */
	float d;
	__m256 mins;
};

static SIMD_INLINE void kscales_open(enum kern_dtype t, const unsigned char *p,
				     struct kscales *k)
{
	if (t == KERN_Q6_K) {
		const __m128i sc = _mm_loadu_si128((const __m128i *)(const void *)(p + 192));
		k->all16 = _mm256_cvtepi8_epi16(sc);
		k->s16[0] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc));
		k->s16[1] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(sc, sc)));
		k->d = f16_scalar(rd16(p + 208));
		k->mins = _mm256_setzero_ps();
		return;
	}
	const __m128i scm = kq_scale_vec(p);
	k->s16[0] = k->s16[1] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
	k->d = f16_scalar(rd16(p));
	float mins[8];
	scale_u8x8(mins, _mm_unpackhi_epi64(scm, scm), -f16_scalar(rd16(p + 2)));
	k->mins = _mm256_loadu_ps(mins);
}

/* Group g's madd multipliers: every lane its sub-block's scale (Q6_K: lanes 0..3 the
 * scale of weights 0..15, lanes 4..7 that of 16..31). g is a constant after unrolling,
 * so the shuffle's control is too. */
static SIMD_INLINE __m256i kscale_group(enum kern_dtype t, const struct kscales *k, int g)
{
	/* the control picking 16-bit lane j of each 128-bit half: bytes 2j, 2j + 1 */
#define PICK16(j) _mm_set1_epi16((short)(0x0100 * (2 * (j) + 1) + 2 * (j)))
	if (t == KERN_Q6_K) {
		const int j = 2 * (g % 4); /* the low half's scale within s16[g / 4] */
		return _mm256_shuffle_epi8(k->s16[g / 4], _mm256_set_m128i(PICK16(j + 1), PICK16(j)));
	}
	return _mm256_shuffle_epi8(k->s16[0], _mm256_set_m128i(PICK16(g), PICK16(g)));
#undef PICK16
}

/* y for outputs [o0, o0 + no) and rows [r0, r0 + nr) of a K-quant under KERN_ACT_Q8:
 * per super-block and output, its 8 groups unpacked once; per row, the block's sum in
 * a lane vector of its own, then scaled into the output's accumulator. */
static SIMD_INLINE void tile_q8k(enum kern_dtype t, const int no, const int nr,
				 const struct cpu_matmul_job *jb, size_t o0, size_t r0)
{
	const struct kern_mat *w = jb->w;
	const struct cpu_q8_rows *xq = jb->xq;
	const unsigned char *wr[TILE_MAX_OUT];
	__m256 acc[TILE_MAX_ROWS][TILE_MAX_OUT];
	const size_t bbytes = bblock_bytes(t);
	tile_open_q8(no, nr, w, o0, wr, acc);
	const size_t nb = w->n_in / KERN_QK_K;
	for (size_t b = 0; b < nb; b++) {
		prefetch_ahead(wr[0], (size_t)no * b * bbytes, (size_t)no * bbytes);
#pragma GCC unroll 8
		for (int o = 0; o < no; o++) {
			struct bblock bb = {.p = wr[o] + b * bbytes};
			struct kscales ks;
			kscales_open(t, bb.p, &ks);
			__m256i q[8];
#pragma GCC unroll 8
			for (int g = 0; g < 8; g++)
				q[g] = bblock_stored(t, &bb, g); /* Q6_K's offset: below */
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++) {
				const size_t xg = (r0 + r) * xq->ng + b * 8;
				const int8_t *x = xq->q + (r0 + r) * xq->ldq + b * KERN_QK_K;
				__m256i tb = _mm256_setzero_si256();
#pragma GCC unroll 8
				for (int g = 0; g < 8; g++)
					tb = _mm256_add_epi32(tb, q8_group(t, q[g], x + g * KERN_QK,
										 kscale_group(t, &ks, g)));
				if (t == KERN_Q6_K) { /* the offset: lane l, group l's 16s */
					const __m256i bs = ld256((const unsigned char *)(xq->bs + 2 * xg));
					tb = _mm256_sub_epi32(tb, _mm256_slli_epi32(
									 _mm256_madd_epi16(ks.all16, bs), 5));
				}
				acc[r][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tb),
							    _mm256_set1_ps(ks.d * xq->d[xg]), acc[r][o]);
				if (t != KERN_Q6_K)
					acc[r][o] = _mm256_fmadd_ps(ks.mins, _mm256_loadu_ps(xq->s + xg),
								    acc[r][o]);
			}
		}
	}
	tile_store_q8(no, nr, jb, o0, r0, acc);
}

/* y for outputs [o0, o0 + no) and rows [r0, r0 + nr) under KERN_ACT_Q8. */
static SIMD_INLINE void tile_q8(enum kern_dtype t, const int no, const int nr,
				const struct cpu_matmul_job *jb, size_t o0, size_t r0)
{
	if (cpu_q8_kquant(t)) {
		tile_q8k(t, no, nr, jb, o0, r0);
		return;
	}
	const struct kern_mat *w = jb->w;
	const struct cpu_q8_rows *xq = jb->xq;
	const unsigned char *wr[TILE_MAX_OUT];
	__m256 acc[TILE_MAX_ROWS][TILE_MAX_OUT];
	const size_t bbytes = bblock_bytes(t);
	const __m256i ones = _mm256_set1_epi16(1);
	tile_open_q8(no, nr, w, o0, wr, acc);
	for (size_t g = 0; g < xq->ng; g++) {
		prefetch_ahead(wr[0], (size_t)no * g * bbytes, (size_t)no * bbytes);
#pragma GCC unroll 8
		for (int o = 0; o < no; o++) {
			struct bblock bb;
			bblock_open(t, wr[o] + g * bbytes, &bb);
			__m256i q = bblock_group(t, &bb, 0);
			__m256 mul = _mm256_set1_ps(bb.mul[0]);
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++) {
				size_t xg = (r0 + r) * xq->ng + g;
				__m256 sum = _mm256_cvtepi32_ps(
					q8_group(t, q, xq->q + (r0 + r) * xq->ldq + g * KERN_QK, ones));
				acc[r][o] = _mm256_fmadd_ps(sum, _mm256_mul_ps(mul, _mm256_set1_ps(xq->d[xg])),
							    acc[r][o]);
				if (kern_dtype_has_offset(t))
					acc[r][o] = _mm256_fmadd_ps(
						_mm256_set1_ps(bb.off[0]),
						_mm256_zextps128_ps256(_mm_set_ss(xq->s[xg])), acc[r][o]);
			}
		}
	}
	tile_store_q8(no, nr, jb, o0, r0, acc);
}

static SIMD_INLINE void tiles_q8(enum kern_dtype t, const int no, const int nr,
				 const struct cpu_matmul_job *jb, size_t o0, size_t o1, size_t r0)
{
	size_t o = o0;
	for (; o + (size_t)no <= o1; o += (size_t)no)
		tile_q8(t, no, nr, jb, o, r0);
	for (; o < o1; o++)
		tile_q8(t, 1, nr, jb, o, r0);
}

/* range_body's loop under KERN_ACT_Q8: the same walk over output groups and rows.
 * prefetch_ahead reads a tile's rows ahead as one stream, which is their true order
 * only while the tile's rows fit in its distance; past that each row is a stream of
 * its own, read a few hundred bytes at a time, and the hardware follows them late
 * (docs/performance.md: without this rule Qwen2.5-Coder-1.5B, whose ffn_down rows are
 * 7350 bytes of Q6_K, decoded at 15.9 tokens/s, with it 18.8). Such rows go one output
 * at a time:
 * the weights are then read in order, and each group's unpacking still serves every
 * row of the tile. The tile shape changes no element's arithmetic. */
static SIMD_INLINE void range_body_q8(enum kern_dtype t, const struct cpu_matmul_job *jb,
				      size_t o_begin, size_t o_end)
{
	const bool one_out = 4 * jb->w->row_bytes > PREFETCH_AHEAD;
	for (size_t o0 = o_begin; o0 < o_end; o0 += TILE_MAX_OUT) {
		size_t o1 = o_end - o0 < TILE_MAX_OUT ? o_end : o0 + TILE_MAX_OUT;
		size_t r0 = 0;
		while (r0 < jb->rows) {
			size_t left = jb->rows - r0;
			int nr = left >= 4 ? 4 : (int)left;
			if (one_out) {
				if (nr == 4)
					tiles_q8(t, 1, 4, jb, o0, o1, r0);
				else if (nr == 3)
					tiles_q8(t, 1, 3, jb, o0, o1, r0);
				else if (nr == 2)
					tiles_q8(t, 1, 2, jb, o0, o1, r0);
				else
					tiles_q8(t, 1, 1, jb, o0, o1, r0);
			} else if (nr == 4) {
				tiles_q8(t, 2, 4, jb, o0, o1, r0);
			} else if (nr == 3) {
				tiles_q8(t, 2, 3, jb, o0, o1, r0);
			} else if (nr == 2) {
				tiles_q8(t, 4, 2, jb, o0, o1, r0);
			} else {
				tiles_q8(t, 4, 1, jb, o0, o1, r0);
			}
			r0 += (size_t)nr;
		}
	}
}
