/* The AVX-512 (F/BW/VL) inner loops of the CPU backend: the vector primitives for
 * simd_body.h at 16 floats per vector. Compiled with those flags alone (cmake
 * specd_simd_source) and called only when kern_cpu_isa() reports AVX-512. */
#include <stdbool.h>
#include <stdint.h>

#include "cpu_ops.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
	defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define VL 16
typedef __m512 vec;

static inline vec v_zero(void) { return _mm512_setzero_ps(); }
static inline vec v_set1(float f) { return _mm512_set1_ps(f); }
static inline vec v_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_storeu(float *p, vec v) { _mm512_storeu_ps(p, v); }
static inline vec v_add(vec a, vec b) { return _mm512_add_ps(a, b); }
static inline vec v_sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
static inline vec v_mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
static inline vec v_fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }

/* Lanes summed in one fixed order, spelled out (not _mm512_reduce_add_ps, whose
 * order is the compiler's choice): halves, halves, pairs, the last two. */
static inline float v_hsum(vec v)
{
	__m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
				 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
	return _mm_cvtss_f32(s);
}

static inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

static inline vec v_load_f16(const uint16_t *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

static inline vec v_load_bf16(const uint16_t *p)
{
	__m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p));
	return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

static inline vec v_load_i8(const int8_t *q)
{
	__m128i b = _mm_loadu_si128((const __m128i *)(const void *)q);
	return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

/* Chunk j (16 weights) of a Q4 block's 32 nibbles as floats 0..15: the low nibbles
 * are weights 0..15, the high ones 16..31. */
static inline vec v_q4_chunk(const unsigned char *qs, int j)
{
	__m128i b = _mm_loadu_si128((const __m128i *)(const void *)qs);
	if (j >= 1)
		b = _mm_srli_epi16(b, 4);
	b = _mm_and_si128(b, _mm_set1_epi8(0x0f));
	return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
}

/* Chunk j (0..1) of 32 small signed ints held one per byte: bytes 16j..16j+15 as floats. */
static inline vec v_i8x32_chunk(__m256i q, int j)
{
	__m128i h = j ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q);
	return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(h));
}

#include "simd_body.h"

const struct cpu_isa_kernels cpu_kernels_avx512 = {
	.isa = KERN_ISA_AVX512,
	.matmul_range = simd_matmul_range,
	.dot = simd_dot,
	.axpy = simd_axpy,
};
#else
/* Not an x86-64 build: no AVX-512 kernels (backend.c never asks for them). */
extern const struct cpu_isa_kernels cpu_kernels_avx512;
#endif
