/* KERN_ACT_Q8 (kernels/kern.h): quantised matmuls over 8-bit activations. Every ISA
 * gives the scalar reference's results bit for bit, whatever the row count, thread
 * count or pitches; each result is within the quantisation's own error bound of the
 * exact product (and differs from the f32 path, so the mode is really taken); a NaN
 * or an inf stays in its row; the activations' buffer is allocated once. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "kernels/kern.h"
#include "kern_test.h"

static const enum kern_dtype q_types[] = {KERN_Q8_0, KERN_Q4_0, KERN_Q4_1, KERN_Q5_0,
					  KERN_Q5_1, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
#define N_QTYPES (sizeof(q_types) / sizeof(q_types[0]))
static const char *const isa_names[] = {"scalar", "avx2", "avx512"};
#define N_ISAS 3
#define MAX_ROWS 70

/* Activations shaped like a model's: mostly small, a few large ones per row, so that
 * groups have different scales. */
static float *act_array(size_t n)
{
	float *a = malloc(n * sizeof(float));
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = ktest_rnd() * (i % 37 == 5 ? 20.0f : 1.0f);
	return a;
}

/* A backend for ISA index i and n threads, or NULL where this CPU lacks the ISA. */
static struct kern_ctx *q8_ctx(int isa, unsigned threads, enum kern_act act)
{
	return ktest_cpu(isa_names[isa], threads, act);
}

static size_t n_in_of(enum kern_dtype t, int k)
{
	static const size_t small[] = {32, 96, 160, 512}, big[] = {256, 768, 1280, 512};
	return kern_dtype_block(t) == KERN_QK_K ? big[k] : small[k];
}

/* Every ISA, 1 and 2 threads, n = 1..17 and 70 rows at a time, odd pitches: each row
 * equals the scalar reference's row computed alone, bitwise. */
static void test_q8__isas_agree_bitwise_and_rows_are_invariant(void **state)
{
	(void)state;
	const size_t n_outs[] = {1, 13, 37, 100};
	struct kern_ctx *ref = q8_ctx(0, 1, KERN_ACT_Q8);
	int isas = 0;
	for (int isa = 0; isa < N_ISAS; isa++) {
		struct kern_ctx *ctx[2] = {q8_ctx(isa, 1, KERN_ACT_Q8), q8_ctx(isa, 2, KERN_ACT_Q8)};
		if (!ctx[0]) {
			kern_destroy(ctx[1]);
			continue;
		}
		isas++;
		for (size_t ti = 0; ti < N_QTYPES; ti++) {
			for (int k = 0; k < 4; k++) {
				enum kern_dtype t = q_types[ti];
				size_t n_in = n_in_of(t, k), n_out = n_outs[k];
				size_t ldx = n_in + 5, ldy = n_out + 3;
				struct ktest_mat qm;
				ktest_mat_make(&qm, t, n_in, n_out, 0);
				float *x = act_array(MAX_ROWS * ldx), *bias = act_array(n_out);
				float *alone = malloc(MAX_ROWS * ldy * sizeof(float));
				float *y = malloc(MAX_ROWS * ldy * sizeof(float));
				assert_non_null(alone);
				assert_non_null(y);
				for (size_t r = 0; r < MAX_ROWS; r++)
					assert_int_equal(kern_matmul(ref, alone + r * ldy, ldy, x + r * ldx,
								     ldx, 1, &qm.m, bias),
							 SPECD_OK);
				for (int c = 0; c < 2; c++) {
					for (size_t n = 1; n <= 18; n++) {
						size_t rows = n == 18 ? MAX_ROWS : n;
						memset(y, 0xff, MAX_ROWS * ldy * sizeof(float));
						assert_int_equal(kern_matmul(ctx[c], y, ldy, x, ldx, rows,
									     &qm.m, bias),
								 SPECD_OK);
						for (size_t r = 0; r < rows; r++) {
							if (memcmp(y + r * ldy, alone + r * ldy,
								   n_out * sizeof(float)) != 0)
								fail_msg("%s %s %zux%zu, %zu rows, %d "
									 "threads: row %zu differs "
									 "from the scalar's",
									 isa_names[isa],
									 kern_dtype_name(t), n_out,
									 n_in, rows, c + 1, r);
						}
					}
				}
				free(x);
				free(bias);
				free(alone);
				free(y);
				ktest_mat_free(&qm);
			}
		}
		kern_destroy(ctx[0]);
		kern_destroy(ctx[1]);
	}
	kern_destroy(ref);
	assert_true(isas >= 1);
}

/* Rounding x to the grid d = max|x| / 127 of its span (its group of 32, or for K-quant
 * weights its super-block of 256) moves each x by at most d / 2, so a result is within
 * sum over groups of d / 2 * sum |w| (plus float rounding) of the exact product with the
 * dequantised weights; the f32 path is within rounding of it, and the two must differ
 * somewhere (else the mode was not taken). */
static void test_q8__within_the_quantisation_bound_of_exact(void **state)
{
	(void)state;
	struct kern_ctx *q8 = q8_ctx(0, 1, KERN_ACT_Q8), *f32 = q8_ctx(0, 1, KERN_ACT_F32);
	for (size_t ti = 0; ti < N_QTYPES; ti++) {
		enum kern_dtype t = q_types[ti];
		size_t n_in = n_in_of(t, 2), n_out = 37, rows = 9;
		struct ktest_mat qm;
		ktest_mat_make(&qm, t, n_in, n_out, 0);
		float *x = act_array(rows * n_in);
		float *yq = malloc(rows * n_out * sizeof(float));
		float *yf = malloc(rows * n_out * sizeof(float));
		assert_non_null(yq);
		assert_non_null(yf);
		assert_int_equal(kern_matmul(q8, yq, n_out, x, n_in, rows, &qm.m, NULL), SPECD_OK);
		assert_int_equal(kern_matmul(f32, yf, n_out, x, n_in, rows, &qm.m, NULL), SPECD_OK);
		size_t differ = 0;
		double worst = 0.0;
		for (size_t r = 0; r < rows; r++) {
			for (size_t o = 0; o < n_out; o++) {
				const float *xr = x + r * n_in, *wr = qm.deq + o * n_in;
				double exact = 0.0, bound = 0.0, mag = 0.0;
				const size_t span = kern_dtype_block(t);
				for (size_t g = 0; g < n_in / span; g++) {
					double amax = 0.0, wsum = 0.0;
					for (size_t i = span * g; i < span * g + span; i++) {
						exact += (double)xr[i] * wr[i];
						mag += fabs((double)xr[i] * wr[i]);
						amax = fmax(amax, fabs((double)xr[i]));
						wsum += fabs((double)wr[i]);
					}
					bound += amax / 127.0 / 2.0 * wsum;
				}
				double tol = bound * (1.0 + 1e-5) + 4.0 * (double)n_in * 0x1p-24 * mag;
				double err = fabs((double)yq[r * n_out + o] - exact);
				if (err > tol)
					fail_msg("%s: (%zu, %zu) is %.9g, exact %.9g, bound %.3g",
						 kern_dtype_name(t), r, o, (double)yq[r * n_out + o], exact,
						 tol);
				worst = fmax(worst, bound > 0.0 ? err / bound : 0.0);
				differ += yq[r * n_out + o] != yf[r * n_out + o];
			}
		}
		print_message("%s: largest error %.2f of the bound; %zu of %zu differ from f32\n",
			      kern_dtype_name(t), worst, differ, rows * n_out);
		assert_true(differ > rows * n_out / 2);
		free(x);
		free(yq);
		free(yf);
		ktest_mat_free(&qm);
	}
	kern_destroy(q8);
	kern_destroy(f32);
}

/* A NaN or an inf in one row's activations makes that row's outputs NaN (its group's
 * scale is NaN or inf, and 0 * inf is NaN; through f32 they would be NaN or inf) and
 * leaves the other rows as computed alone. */
static void test_q8__non_finite_stays_in_its_row(void **state)
{
	(void)state;
	const float bad[] = {NAN, INFINITY, -INFINITY};
	for (int isa = 0; isa < N_ISAS; isa++) {
		struct kern_ctx *ctx = q8_ctx(isa, 2, KERN_ACT_Q8);
		if (!ctx)
			continue;
		for (size_t ti = 0; ti < N_QTYPES; ti++) {
			enum kern_dtype t = q_types[ti];
			size_t n_in = n_in_of(t, 1), n_out = 13, rows = 5;
			struct ktest_mat qm;
			ktest_mat_make(&qm, t, n_in, n_out, 0);
			for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
				float *x = act_array(rows * n_in);
				float *y = malloc(rows * n_out * sizeof(float));
				float alone[13];
				assert_non_null(y);
				x[2 * n_in + 40] = bad[b];
				assert_int_equal(kern_matmul(ctx, y, n_out, x, n_in, rows, &qm.m, NULL),
						 SPECD_OK);
				for (size_t r = 0; r < rows; r++) {
					assert_int_equal(kern_matmul(ctx, alone, n_out, x + r * n_in,
								     n_in, 1, &qm.m, NULL),
							 SPECD_OK);
					/* a NaN's sign and payload may differ (kern.h) */
					for (size_t o = 0; o < n_out; o++) {
						float v = y[r * n_out + o];
						if (r == 2)
							assert_true(isnan(v) && isnan(alone[o]));
						else
							assert_true(isfinite(v) && v == alone[o]);
					}
				}
				free(x);
				free(y);
			}
			ktest_mat_free(&qm);
		}
		kern_destroy(ctx);
	}
}

/* Tiny and huge activations: where the largest magnitude m of a span is 127 normal
 * floats' worth or more (>= 1.5e-36), results stay within the rounding's bound of the
 * exact product; at m = 1e-37, where 127 / m overflows a float and used to zero every
 * group, they stay finite and nonzero. (Further down, d = m / 127 and its products
 * with the weights' scales underflow, as the f32 path's products soon do.) */
static void test_q8__tiny_and_huge_activations(void **state)
{
	(void)state;
	const double scales[] = {1e30, 1e-20, 2e-36, 1e-37};
	struct kern_ctx *ctx = q8_ctx(0, 1, KERN_ACT_Q8);
	for (size_t ti = 0; ti < N_QTYPES; ti++) {
		enum kern_dtype t = q_types[ti];
		size_t n_in = n_in_of(t, 0);
		struct ktest_mat qm;
		ktest_mat_make(&qm, t, n_in, 1, 0);
		float *x = malloc(n_in * sizeof(float));
		assert_non_null(x);
		for (size_t si = 0; si < sizeof(scales) / sizeof(scales[0]); si++) {
			double exact = 0.0, bound = 0.0, amax = 0.0, wsum = 0.0;
			for (size_t i = 0; i < n_in; i++) {
				x[i] = (float)(scales[si] * (double)(i % 13 + 1) / 13.0);
				exact += (double)x[i] * qm.deq[i];
				amax = fmax(amax, fabs((double)x[i]));
				wsum += fabs((double)qm.deq[i]);
			}
			bound = amax / 254.0 * wsum * (1.0 + 1e-5) + 1e-5 * fabs(exact);
			float y;
			assert_int_equal(kern_matmul(ctx, &y, 1, x, n_in, 1, &qm.m, NULL), SPECD_OK);
			assert_true(isfinite(y));
			if (amax >= 1.5e-36 && fabs((double)y - exact) > bound)
				fail_msg("%s at scale %g: %.9g, exact %.9g, bound %.3g",
					 kern_dtype_name(t), scales[si], (double)y, exact, bound);
			if (amax < 1.5e-36 && fabs(exact) > bound && y == 0.0f)
				fail_msg("%s at scale %g: the group was dropped", kern_dtype_name(t),
					 scales[si]);
		}
		free(x);
		ktest_mat_free(&qm);
	}
	kern_destroy(ctx);
}

/* The quantised activations' buffer is the one allocation: made by the largest call,
 * then reused by every smaller one. */
static void test_q8__allocates_only_to_grow(void **state)
{
	(void)state;
	struct kern_ctx *ctx = q8_ctx(0, 2, KERN_ACT_Q8);
	struct ktest_mat qm;
	ktest_mat_make(&qm, KERN_Q4_K, 512, 100, 0);
	float *x = act_array(9 * 512), *y = malloc(9 * 100 * sizeof(float));
	assert_non_null(y);
	assert_int_equal(kern_matmul(ctx, y, 100, x, 512, 9, &qm.m, NULL), SPECD_OK);
	specd_alloc_fail_reset();
	for (size_t n = 1; n <= 9; n++)
		assert_int_equal(kern_matmul(ctx, y, 100, x, 512, n, &qm.m, NULL), SPECD_OK);
	assert_int_equal(specd_alloc_count(), 0);
	free(x);
	free(y);
	ktest_mat_free(&qm);
	kern_destroy(ctx);
}

static void test_q8__names_parse_and_refuse(void **state)
{
	(void)state;
	enum kern_act a;
	assert_int_equal(kern_act_parse("q8", &a), SPECD_OK);
	assert_int_equal(a, KERN_ACT_Q8);
	assert_int_equal(kern_act_parse("f32", &a), SPECD_OK);
	assert_int_equal(a, KERN_ACT_F32);
	assert_int_equal(kern_act_parse("int4", &a), SPECD_INVAL);
	assert_int_equal(kern_act_parse(NULL, &a), SPECD_INVAL);
	assert_null(kern_act_name((enum kern_act)7));
	struct kern_cpu_config cfg = {.act = (enum kern_act)7};
	struct kern_ctx *ctx = NULL;
	assert_int_equal(kern_cpu_create(&cfg, &ctx), SPECD_INVAL);
	assert_null(ctx);
}

int main(void)
{
	ktest_seed(0x2545f4914f6cdd1dull);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_q8__isas_agree_bitwise_and_rows_are_invariant),
		cmocka_unit_test(test_q8__within_the_quantisation_bound_of_exact),
		cmocka_unit_test(test_q8__non_finite_stays_in_its_row),
		cmocka_unit_test(test_q8__tiny_and_huge_activations),
		cmocka_unit_test(test_q8__allocates_only_to_grow),
		cmocka_unit_test(test_q8__names_parse_and_refuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
