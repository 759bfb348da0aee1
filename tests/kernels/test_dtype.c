/* kernels/dtype: names and sizes, exact f16/bf16 conversion, and quantisation round
 * trips within each format's error bound. */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/cpu/cpu_features.h"
#include "kernels/dtype.h"

static void test_dtype__sizes_and_names(void **state)
{
	(void)state;
	assert_int_equal(kern_dtype_row_bytes(KERN_F32, 10), 40);
	assert_int_equal(kern_dtype_row_bytes(KERN_BF16, 10), 20);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q8_0, 64), 68);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q4_0, 64), 36);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q4_1, 96), 60);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q8_0, 33), 0); /* not whole blocks */
	assert_false(kern_dtype_known(9)); /* q8_1: activations only */
	assert_true(kern_dtype_known(30));
	enum kern_dtype t;
	assert_true(kern_dtype_parse("Q4_1", &t));
	assert_int_equal(t, KERN_Q4_1);
	assert_false(kern_dtype_parse("q2_k", &t));
	assert_string_equal(kern_dtype_name(KERN_BF16), "bf16");
}

static void test_f16__round_trips_every_value(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) /* nan payloads need not survive */
			continue;
		assert_int_equal(kern_f32_to_f16(kern_f16_to_f32((uint16_t)h)), h);
	}
}

static void test_f16__rounds_to_nearest_even(void **state)
{
	(void)state;
	assert_int_equal(kern_f32_to_f16(1.0f), 0x3c00);
	/* halfway between 1 and 1+2^-10 goes to even (1.0) */
	assert_int_equal(kern_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	assert_int_equal(kern_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	assert_int_equal(kern_f32_to_f16(65520.0f), 0x7c00); /* overflow to inf */
	assert_int_equal(kern_f32_to_f16(0x1p-24f), 0x0001); /* smallest subnormal */
	assert_int_equal(kern_f32_to_f16(-0.0f), 0x8000);
	assert_true(isnan(kern_f16_to_f32(kern_f32_to_f16(NAN))));
}

static void test_bf16__rounds_to_nearest_even(void **state)
{
	(void)state;
	assert_int_equal(kern_f32_to_bf16(1.0f), 0x3f80);
	assert_true(kern_bf16_to_f32(kern_f32_to_bf16(3.140625f)) == 3.140625f);
	assert_int_equal(kern_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie to even */
	assert_int_equal(kern_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
	assert_true(isnan(kern_bf16_to_f32(kern_f32_to_bf16(NAN))));
}

static float lcg_float(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)(*s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

static void test_quant__round_trip_within_bound(void **state)
{
	(void)state;
	enum { N = 256 };
	/* Float types: error relative to the value. Block types: relative to the block's
	 * largest magnitude, half a quantisation step plus the f16 rounding of the scale;
	 * Q4_0's levels run -8..7 with -8 on the largest weight's side, so a weight of the
	 * other sign clamps at 7/8 of it: up to 1/8 off. */
	const struct {
		enum kern_dtype type;
		float bound;
		bool relative;
	} cases[] = {
		{KERN_F32, 0, true},
		{KERN_F16, 1e-3f, true},
		{KERN_BF16, 8e-3f, true},
		{KERN_Q8_0, 0.51f / 127 + 1e-3f, false},
		{KERN_Q4_0, 1.0f / 8 + 2e-3f, false},
		{KERN_Q4_1, 0.51f * 2 / 15 + 2e-3f, false},
	};
	uint32_t seed = 7;
	float x[N], y[N];
	uint8_t buf[N * 4];
	for (int i = 0; i < N; i++)
		x[i] = lcg_float(&seed) * (i % 7 + 1);
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		kern_quant_row(cases[t].type, x, buf, N);
		kern_dequant_row(cases[t].type, buf, y, N);
		for (int b = 0; b < N / KERN_QK; b++) {
			float amax = 0;
			for (int j = 0; j < KERN_QK; j++)
				amax = fmaxf(amax, fabsf(x[b * KERN_QK + j]));
			for (int j = 0; j < KERN_QK; j++) {
				int i = b * KERN_QK + j;
				float tol = cases[t].relative ? cases[t].bound * fabsf(x[i]) + 1e-7f
							      : cases[t].bound * amax;
				if (fabsf(x[i] - y[i]) > tol)
					fail_msg("%s: x[%d]=%g came back as %g (tol %g)",
						 kern_dtype_name(cases[t].type), i, x[i], y[i], tol);
			}
		}
	}
}

static void test_quant__q4_0_layout_low_then_high_nibbles(void **state)
{
	(void)state;
	/* d = 1.0 (0x3c00); byte j: low nibble weight j, high nibble weight j+16 */
	uint8_t blk[18] = {0x00, 0x3c};
	for (int j = 0; j < 16; j++)
		blk[2 + j] = (uint8_t)((j & 0xf) | ((15 - j) << 4));
	float y[32];
	kern_dequant_row(KERN_Q4_0, blk, y, 32);
	for (int j = 0; j < 16; j++) {
		assert_true(y[j] == (float)(j - 8));
		assert_true(y[j + 16] == (float)(15 - j - 8));
	}
}

/* kern_dequant_row (kern_group_ints, group by group) on random bytes of Q8_0, Q4_0 and
 * Q4_1 against their formulas written out here (tests/kernels/test_dtype_kquant.c holds
 * Q5_x and the K-quants to the gguf package's dequantiser): every bit pattern of scale
 * and nibbles. */
static void test_dequant__q8_0_q4_x_match_their_formulas(void **state)
{
	(void)state;
	static const enum kern_dtype types[] = {KERN_Q8_0, KERN_Q4_0, KERN_Q4_1};
	uint32_t seed = 12345;
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		enum kern_dtype t = types[ti];
		size_t bytes = kern_dtype_block_bytes(t);
		unsigned char raw[64];
		float deq[KERN_QK];
		for (int trial = 0; trial < 500; trial++) {
			for (size_t i = 0; i < bytes; i++) {
				seed = seed * 1664525u + 1013904223u;
				raw[i] = (unsigned char)(seed >> 24);
			}
			kern_dequant_row(t, raw, deq, KERN_QK);
			float d = kern_f16_to_f32((uint16_t)(raw[0] | raw[1] << 8));
			float m = kern_f16_to_f32((uint16_t)(raw[2] | raw[3] << 8));
			for (int i = 0; i < KERN_QK; i++) {
				int nib = i < 16 ? raw[(t == KERN_Q4_1 ? 4 : 2) + i] & 0x0f
						 : raw[(t == KERN_Q4_1 ? 4 : 2) + i - 16] >> 4;
				float w = t == KERN_Q8_0   ? d * (float)(int8_t)raw[2 + i]
					  : t == KERN_Q4_0 ? d * (float)(nib - 8)
							   : d * (float)nib + m;
				if (!(memcmp(&w, &deq[i], sizeof(w)) == 0 || (isnan(w) && isnan(deq[i]))))
					fail_msg("%s weight %d: %g, dequantised %g", kern_dtype_name(t), i,
						 (double)w, (double)deq[i]);
			}
		}
	}
	int8_t q[KERN_QK];
	float mul[2], off;
	assert_false(kern_group_ints(KERN_F16, q, 0, q, mul, &off));
}

static void test_cpu__isa_cap_from_environment(void **state)
{
	(void)state;
	/* SPECD_ISA is read once; whatever it is, the level never exceeds the hardware. */
	assert_true(kern_cpu_isa() <= kern_cpu_isa_hw());
	assert_string_equal(kern_isa_name(KERN_ISA_SCALAR), "scalar");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype__sizes_and_names),
		cmocka_unit_test(test_f16__round_trips_every_value),
		cmocka_unit_test(test_f16__rounds_to_nearest_even),
		cmocka_unit_test(test_bf16__rounds_to_nearest_even),
		cmocka_unit_test(test_quant__round_trip_within_bound),
		cmocka_unit_test(test_quant__q4_0_layout_low_then_high_nibbles),
		cmocka_unit_test(test_dequant__q8_0_q4_x_match_their_formulas),
		cmocka_unit_test(test_cpu__isa_cap_from_environment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
