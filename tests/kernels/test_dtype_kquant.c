/* kernels/dtype's Q5_0, Q5_1 and K-quant (Q4_K, Q5_K, Q6_K) layouts: dequantisation
 * bit-exact against the gguf package's numpy code (tests/fixtures/kquant_vectors.json,
 * made by tools/reference/kquant_vectors.py), and the simple quantisers' round trips
 * within their format's error bound. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/dtype.h"
#include "test_fixture.h"
#include "test_support.h"

static void test_kquant__sizes_and_names(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum kern_dtype t;
		size_t block, bytes;
	} want[] = {
		{"q5_0", KERN_Q5_0, 32, 22}, {"q5_1", KERN_Q5_1, 32, 24},
		{"q4_k", KERN_Q4_K, 256, 144}, {"q5_k", KERN_Q5_K, 256, 176},
		{"q6_k", KERN_Q6_K, 256, 210},
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		enum kern_dtype t;
		assert_true(kern_dtype_known(want[i].t));
		assert_true(kern_dtype_parse(want[i].name, &t));
		assert_int_equal(t, want[i].t);
		assert_string_equal(kern_dtype_name(want[i].t), want[i].name);
		assert_int_equal(kern_dtype_block(t), want[i].block);
		assert_int_equal(kern_dtype_block_bytes(t), want[i].bytes);
	}
	assert_int_equal(KERN_Q5_0, 6);
	assert_int_equal(KERN_Q4_K, 12);
	assert_int_equal(KERN_Q6_K, 14);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q4_K, 1536), 6 * 144);
	assert_int_equal(kern_dtype_row_bytes(KERN_Q6_K, 896), 0); /* 3.5 super-blocks */
	assert_false(kern_dtype_known(15)); /* Q8_K: activations only, not a weight type */
}


static void test_kquant__dequant_matches_gguf_numpy(void **state)
{
	(void)state;
	yaml_document_t doc;
	assert_true(ts_fx_load("kquant_vectors", &doc));

	yaml_node_t *types = ts_fx_get(&doc, yaml_document_get_root_node(&doc), "types");
	assert_non_null(types);
	size_t n_types = 0;
	for (yaml_node_pair_t *p = types->data.mapping.pairs.start; p < types->data.mapping.pairs.top;
	     p++, n_types++) {
		const char *name = (const char *)yaml_document_get_node(&doc, p->key)->data.scalar.value;
		yaml_node_t *v = yaml_document_get_node(&doc, p->value);
		const char *hex = (const char *)ts_fx_get(&doc, v, "bytes")->data.scalar.value;
		yaml_node_t *bits = ts_fx_get(&doc, v, "floats_bits");
		size_t nb = strlen(hex) / 2;
		size_t n = (size_t)(bits->data.sequence.items.top - bits->data.sequence.items.start);
		enum kern_dtype t;

		assert_true(kern_dtype_parse(name, &t));
		assert_int_equal(kern_dtype_row_bytes(t, n), nb);
		unsigned char *raw = malloc(nb);
		float *got = malloc(n * sizeof(float));
		assert_non_null(raw);
		assert_non_null(got);
		for (size_t i = 0; i < nb; i++) {
			unsigned x;
			assert_int_equal(sscanf(hex + 2 * i, "%2x", &x), 1);
			raw[i] = (unsigned char)x;
		}
		kern_dequant_row(t, raw, got, n);
		for (size_t i = 0; i < n; i++) {
			yaml_node_t *b = yaml_document_get_node(&doc, bits->data.sequence.items.start[i]);
			uint32_t want = (uint32_t)strtoul((const char *)b->data.scalar.value, NULL, 10);
			uint32_t have;
			memcpy(&have, &got[i], 4);
			if (have != want)
				fprintf(stderr, "%s[%zu]: %08x, numpy %08x\n", name, i, have, want);
			assert_int_equal(have, want);
		}
		free(raw);
		free(got);
	}
	assert_true(n_types >= 5);
	yaml_document_delete(&doc);
}

static float lcg_float(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)(*s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* Quantise then dequantise: each weight within the format's step of its block's range
 * (a sub-block's scale is itself quantised, so allow a step and a half, plus a little
 * for the 6-bit scale rounding of the K-quants). */
static void test_kquant__round_trip_within_bound(void **state)
{
	(void)state;
	enum { N = 1024 };
	static const struct {
		enum kern_dtype t;
		float rel; /* allowed error / the largest magnitude of the super-block */
	} cases[] = {
		{KERN_Q5_0, 1.0f / 16}, {KERN_Q5_1, 1.1f / 31}, {KERN_Q4_K, 2.5f / 15},
		{KERN_Q5_K, 2.5f / 31}, {KERN_Q6_K, 1.5f / 32},
	};
	float x[N], y[N];
	unsigned char q[N * 2];
	uint32_t seed = 7;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t block = kern_dtype_block(cases[c].t);
		for (int trial = 0; trial < 4; trial++) {
			for (int i = 0; i < N; i++) /* vary the scale between blocks */
				x[i] = lcg_float(&seed) * (float)(1 + (i / 64) % 5) *
				       (trial == 3 ? 0.0f : 1.0f);
			kern_quant_row(cases[c].t, x, q, N);
			kern_dequant_row(cases[c].t, q, y, N);
			for (size_t b0 = 0; b0 < N; b0 += block) {
				float amax = 0;
				for (size_t i = b0; i < b0 + block; i++)
					amax = fmaxf(amax, fabsf(x[i]));
				for (size_t i = b0; i < b0 + block; i++) {
					if (!(fabsf(x[i] - y[i]) <= cases[c].rel * amax + 1e-6f))
						fprintf(stderr, "%s: x[%zu] %g -> %g (amax %g)\n",
							kern_dtype_name(cases[c].t), i, (double)x[i],
							(double)y[i], (double)amax);
					assert_true(fabsf(x[i] - y[i]) <= cases[c].rel * amax + 1e-6f);
				}
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kquant__sizes_and_names),
		cmocka_unit_test(test_kquant__dequant_matches_gguf_numpy),
		cmocka_unit_test(test_kquant__round_trip_within_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
