/* KERN_ACT_Q8's vector loops (kern.h; the arithmetic is spelled out in cpu_ops.h and
 * kept bit for bit by isa_scalar.c's scalar_q8_range). Included by simd_body.h, whose
 * block readers (bblock_open, bblock_group) unpack each group of 32 weights into one
 * vector of signed bytes; the products with the row's 8-bit activations are summed in
 * 256-bit integer lanes on both ISAs (AVX-512 runs the same AVX2 instructions), so the
 * ISAs agree bitwise and an element's arithmetic never depends on the tile. */

/* Lane l (0..7) of a group is the exact sum of q[i] * x[i], i in 4l..4l+3: maddubs
 * multiplies an unsigned byte by a signed one, so a signed q gives its magnitude and
 * its sign moves to x; |q| <= 128 and |x| <= 127 keep each pair's sum inside int16,
 * and madd's multiplier (a K-quant's sub-block scale, |sc| <= 128) keeps the lane
 * inside 2^24, and so does a K-quant super-block's 8 groups summed (Q6_K at most 8 x 4
 * x 32 x 127 x 128 = 16646144 < 2^24): every conversion to float is exact. */

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

/* A K-quant super-block's integer scales as madd multipliers, one per group (Q6_K:
 * lanes 0..3 and 4..7 each their 16 weights' scale), its d and (Q4_K/Q5_K) its mins. */
struct kscales {
	__m256i sc[8];
	float d;
	__m256 mins;
};

static SIMD_INLINE void kscales_open(enum kern_dtype t, const unsigned char *p,
				     struct kscales *k)
{
	if (t == KERN_Q6_K) {
		const int8_t *sc = (const int8_t *)(const void *)(p + 192);
#pragma GCC unroll 8
		for (int g = 0; g < 8; g++)
			k->sc[g] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * g + 1]),
						    _mm_set1_epi16(sc[2 * g]));
		k->d = f16_scalar(rd16(p + 208));
		k->mins = _mm256_setzero_ps();
		return;
	}
	uint32_t sc_w[2], m[2];
	kq_scale_bytes(p, sc_w, m);
	unsigned char sc[8];
	memcpy(sc, sc_w, sizeof(sc));
#pragma GCC unroll 8
	for (int g = 0; g < 8; g++)
		k->sc[g] = _mm256_set1_epi16(sc[g]);
	k->d = f16_scalar(rd16(p));
	float mins[8];
	scale_u8x8(mins, _mm_set_epi32(0, 0, (int)m[1], (int)m[0]), -f16_scalar(rd16(p + 2)));
	k->mins = _mm256_loadu_ps(mins);
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
				q[g] = bblock_group(t, &bb, g);
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++) {
				const size_t xg = (r0 + r) * xq->ng + b * 8;
				const int8_t *x = xq->q + (r0 + r) * xq->ldq + b * KERN_QK_K;
				__m256i tb = _mm256_setzero_si256();
#pragma GCC unroll 8
				for (int g = 0; g < 8; g++)
					tb = _mm256_add_epi32(tb, q8_group(t, q[g], x + g * KERN_QK, ks.sc[g]));
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

/* range_body's loop under KERN_ACT_Q8: the same walk over output groups and rows. */
static SIMD_INLINE void range_body_q8(enum kern_dtype t, const struct cpu_matmul_job *jb,
				      size_t o_begin, size_t o_end)
{
	for (size_t o0 = o_begin; o0 < o_end; o0 += TILE_MAX_OUT) {
		size_t o1 = o_end - o0 < TILE_MAX_OUT ? o_end : o0 + TILE_MAX_OUT;
		size_t r0 = 0;
		while (r0 < jb->rows) {
			size_t left = jb->rows - r0;
			int nr = left >= 4 ? 4 : (int)left;
			if (nr == 4)
				tiles_q8(t, 2, 4, jb, o0, o1, r0);
			else if (nr == 3)
				tiles_q8(t, 2, 3, jb, o0, o1, r0);
			else if (nr == 2)
				tiles_q8(t, 4, 2, jb, o0, o1, r0);
			else
				tiles_q8(t, 4, 1, jb, o0, o1, r0);
			r0 += (size_t)nr;
		}
	}
}
