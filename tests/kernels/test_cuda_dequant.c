/* The CUDA matmul's reading of quantised blocks (kernels/cuda/cuda_dequant.cuh), its
 * host build: every weight of every type it reads as stored is bitwise what the CPU's
 * reference dequantiser gives, for rows quantised from floats and for rows of random
 * bytes (every pattern of scales, high bits and signs); float types and ragged rows
 * are refused. Runs without a GPU; skipped, saying so, in a build without CUDA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kern.h"

enum { N = 1024 }; /* 4 super-blocks, 32 blocks */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd32(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (uint32_t)(g_rng >> 16);
}

static const enum kern_dtype k_types[] = {KERN_Q8_0, KERN_Q4_0, KERN_Q4_1, KERN_Q5_0,
					  KERN_Q5_1, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};

/* The device's values of row (type t) equal the reference's, bitwise. */
static void expect_reference(enum kern_dtype t, const void *row)
{
	float want[N], got[N];
	kern_dequant_row(t, row, want, N);
	memset(got, 0xff, sizeof(got));
	assert_int_equal(kern_cuda_dequant_host(t, row, N, got), SPECD_OK);
	for (size_t i = 0; i < N; i++)
		if (memcmp(&want[i], &got[i], sizeof(float)) != 0)
			fail_msg("%s weight %zu: device %a, reference %a", kern_dtype_name(t), i,
				 (double)got[i], (double)want[i]);
}

static void test_cuda_dequant__bitwise_the_reference_every_type(void **state)
{
	(void)state;
	if (kern_cuda_dequant_host(KERN_Q8_0, NULL, 0, NULL) == SPECD_UNSUPPORTED)
		skip(); /* built without CUDA */
	unsigned char row[N * 2];
	float src[N];
	for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
		enum kern_dtype t = k_types[ti];
		size_t bytes = kern_dtype_row_bytes(t, N);
		assert_true(bytes <= sizeof(row));
		for (int rep = 0; rep < 8; rep++) {
			/* Quantised from floats of a spread of magnitudes and signs. */
			float scale = (float)(1u << (rep * 3)) / 64.0f;
			for (size_t i = 0; i < N; i++)
				src[i] = ((float)(rnd32() % 20001) / 10000.0f - 1.0f) * scale;
			kern_quant_row(t, src, row, N);
			expect_reference(t, row);
			/* Random bytes, but for finite scales (an f16 exponent below 31). */
			for (size_t i = 0; i < bytes; i++)
				row[i] = (unsigned char)rnd32();
			for (size_t b = 0; b < bytes; b += kern_dtype_block_bytes(t)) {
				size_t d_at = t == KERN_Q6_K ? 208 : 0;
				row[b + d_at + 1] &= 0x7b;
				if (t == KERN_Q4_1 || t == KERN_Q5_1 || t == KERN_Q4_K || t == KERN_Q5_K)
					row[b + 3] &= 0x7b; /* the min, or dmin */
			}
			expect_reference(t, row);
		}
	}
}

static void test_cuda_dequant__refuses_floats_and_ragged_rows(void **state)
{
	(void)state;
	float out[64];
	unsigned char row[256] = {0};
	if (kern_cuda_dequant_host(KERN_Q8_0, NULL, 0, NULL) == SPECD_UNSUPPORTED)
		skip(); /* built without CUDA */
	assert_int_equal(kern_cuda_dequant_host(KERN_F16, row, 32, out), SPECD_UNSUPPORTED);
	assert_int_equal(kern_cuda_dequant_host(KERN_BF16, row, 32, out), SPECD_UNSUPPORTED);
	assert_int_equal(kern_cuda_dequant_host(KERN_Q8_0, row, 48, out), SPECD_INVAL);
	assert_int_equal(kern_cuda_dequant_host(KERN_Q4_K, row, 32, out), SPECD_INVAL);
	assert_int_equal(kern_cuda_dequant_host(KERN_Q8_0, row, 32, out), SPECD_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cuda_dequant__bitwise_the_reference_every_type),
		cmocka_unit_test(test_cuda_dequant__refuses_floats_and_ragged_rows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
