/* kernels/sample and the CPU backend's sample op: the op with a uniform drawn from a
 * sampler gives exactly sampler_sample's token on many random rows and parameters
 * (min-p included), rows are independent, the probe's probability and the residual
 * draw are the verifier's, min-p keeps what it says, and bad arguments and dead rows
 * are refused with nothing written. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "kernels/kern.h"
#include "kernels/sample.h"
#include "model/sampler.h"

static uint64_t rng_state;

static uint64_t rnd64(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static double rnd_unit(void) /* [0, 1) */
{
	return (double)(rnd64() >> 11) * 0x1p-53;
}

/* Logits of one of several shapes: smooth, coarse (many ties), peaked, with NaN and
 * -inf holes, with a +inf, or mostly -inf with signed zeros. */
static void fill_row(float *x, size_t n, unsigned shape)
{
	for (size_t i = 0; i < n; i++) {
		double v = rnd_unit() * 8.0 - 4.0;

		switch (shape % 6) {
		case 1: v = floor(v * 2.0) / 2.0; break;
		case 2: v *= 4.0; break;
		case 3: if (rnd64() % 10 == 0) v = rnd64() % 2 ? NAN : -INFINITY; break;
		case 4: if (rnd64() % 100 == 0) v = INFINITY; break;
		case 5: v = rnd64() % 3 ? -INFINITY : (rnd64() % 2 ? -0.0 : v); break;
		default: break;
		}
		x[i] = (float)v;
	}
}

static struct sampler_params rnd_params(size_t n)
{
	unsigned pick = (unsigned)(rnd64() % 16);
	struct sampler_params sp = {
		.temperature = pick == 0 ? 0.0f : (float)(0.2 + 1.5 * rnd_unit()),
		.top_k = pick & 1 ? (int32_t)(rnd64() % (n + 3)) : 0,
		.top_p = pick & 2 ? (float)(0.05 + 0.9 * rnd_unit()) : 1.0f,
		.min_p = pick & 4 ? (float)(0.5 * rnd_unit()) : 0.0f,
		.seed = rnd64(),
	};

	if (pick == 15)
		sp.min_p = 1.0f;
	return sp;
}

static struct kern_sample_params kern_params(const struct sampler_params *sp)
{
	struct kern_sample_params p = {
		.temperature = sp->temperature, .top_k = (uint32_t)sp->top_k,
		.top_p = sp->top_p, .min_p = sp->min_p,
	};
	return p;
}

static int setup_ctx(void **state)
{
	struct kern_ctx *ctx = NULL;

	if (kern_cpu_create(NULL, &ctx) != SPECD_OK)
		return -1;
	rng_state = 0x243f6a8885a308d3ull;
	*state = ctx;
	return 0;
}

static int teardown_ctx(void **state)
{
	kern_destroy(*state);
	return 0;
}

/* The op's token for one row with u from `s`, as a caller of kern_sample draws it. */
static enum specd_status op_token(struct kern_ctx *ctx, struct sampler *s, const float *x,
				  size_t n, void *work, uint32_t *tok)
{
	const struct sampler_params *sp = sampler_get_params(s);
	float u = sampler_is_greedy(s) ? 0.0f : sampler_uniform(s);
	struct kern_sample_rows r = {
		.rows = 1, .n = n, .x = x, .ldx = n, .params = kern_params(sp), .u = &u,
		.work = work, .out = tok,
	};
	return kern_sample(ctx, &r);
}

static void test_sample__cpu_op_equals_sampler_sample(void **state)
{
	enum { MAX_N = 3000, CASES = 400 };
	struct kern_ctx *ctx = *state;
	float *x = specd_malloc_array(MAX_N, sizeof(float));
	void *work = specd_malloc_array(1, kern_sample_work_bytes(1, MAX_N));
	unsigned refused = 0;

	assert_non_null(x);
	assert_non_null(work);
	for (int c = 0; c < CASES; c++) {
		size_t n = 1 + (size_t)(rnd64() % (c % 2 ? MAX_N : 40));
		struct sampler_params sp = rnd_params(n);
		struct sampler *a = NULL, *b = NULL;

		assert_int_equal(sampler_create((int32_t)n, &sp, &a, NULL), SPECD_OK);
		assert_int_equal(sampler_create((int32_t)n, &sp, &b, NULL), SPECD_OK);
		for (int draw = 0; draw < 4; draw++) {
			int32_t want = -1;
			uint32_t got = UINT32_MAX;

			fill_row(x, n, (unsigned)(c + draw));
			enum specd_status st = sampler_sample(a, x, &want);
			assert_int_equal(op_token(ctx, b, x, n, work, &got), st);
			if (st != SPECD_OK) {
				refused++;
				assert_int_equal(got, UINT32_MAX); /* nothing written */
				if (!sampler_is_greedy(a))
					sampler_uniform(a); /* the caller drew its u anyway */
				continue;
			}
			assert_int_equal(got, (uint32_t)want);
		}
		/* The same number of draws on both sides: the streams stay in step. */
		assert_true(sampler_uniform(a) == sampler_uniform(b));
		sampler_destroy(a);
		sampler_destroy(b);
	}
	assert_true(refused < CASES); /* most rows have mass */
	specd_free(x);
	specd_free(work);
}

static void test_sample__rows_equal_each_row_alone(void **state)
{
	enum { ROWS = 9, N = 700, LD = 703 };
	struct kern_ctx *ctx = *state;
	float *x = specd_malloc_array(ROWS * LD, sizeof(float));
	void *work = specd_malloc_array(1, kern_sample_work_bytes(ROWS, N));
	float u[ROWS], pp[ROWS], pp1;
	uint32_t probe[ROWS], out[ROWS], one;

	assert_non_null(x);
	assert_non_null(work);
	for (size_t r = 0; r < ROWS; r++) {
		fill_row(x + r * LD, N, (unsigned)r);
		u[r] = (float)(rnd64() >> 40) * 0x1p-24f;
		probe[r] = r == 4 ? UINT32_MAX : (uint32_t)(rnd64() % N);
	}
	struct kern_sample_rows s = {
		.rows = ROWS, .n = N, .x = x, .ldx = LD,
		.params = {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f, .min_p = 0.01f},
		.u = u, .probe = probe, .exclude_probe = true, .work = work, .out = out,
		.probe_p = pp,
	};
	assert_int_equal(kern_sample(ctx, &s), SPECD_OK);
	assert_true(pp[4] == 0.0f); /* no probe: probability 0 */
	for (size_t r = 0; r < ROWS; r++) {
		struct kern_sample_rows alone = s;

		alone.rows = 1;
		alone.x = x + r * LD;
		alone.u = &u[r];
		alone.probe = &probe[r];
		alone.out = &one;
		alone.probe_p = &pp1;
		assert_int_equal(kern_sample(ctx, &alone), SPECD_OK);
		assert_int_equal(one, out[r]);
		assert_true(pp1 == pp[r]);
	}
	specd_free(x);
	specd_free(work);
}

/* drafters/verify.c's numbers for a one-hot draft token d: p(d) from sampler_probs,
 * and on rejection a draw from max(0, p - onehot(d)) (p itself when that is empty). */
static void test_sample__probe_and_residual_are_the_verifiers(void **state)
{
	enum { N = 500, CASES = 300 };
	struct kern_ctx *ctx = *state;
	float x[N], p[N], r[N];
	void *work = specd_malloc_array(1, kern_sample_work_bytes(1, N));
	unsigned emptied = 0;

	assert_non_null(work);
	for (int c = 0; c < CASES; c++) {
		struct sampler_params sp = rnd_params(N);
		struct sampler *a = NULL, *b = NULL;

		sp.temperature = c % 10 == 0 ? 0.0f : (c % 3 == 0 ? 0.05f : sp.temperature);
		assert_int_equal(sampler_create(N, &sp, &a, NULL), SPECD_OK);
		assert_int_equal(sampler_create(N, &sp, &b, NULL), SPECD_OK);
		fill_row(x, N, (unsigned)c % 5); /* no all -inf rows */
		assert_int_equal(sampler_probs(a, x, p), SPECD_OK);
		/* The draft token: often the argmax, so the residual is sometimes empty. */
		uint32_t d = c % 4 == 0 ? (uint32_t)sampler_argmax(x, N) : (uint32_t)(rnd64() % N);
		double left = 0.0;
		for (uint32_t j = 0; j < N; j++) {
			float dj = p[j] - (j == d ? 1.0f : 0.0f);
			r[j] = dj > 0.0f ? dj : 0.0f;
			left += r[j];
		}
		int32_t want;
		assert_int_equal(sampler_sample_probs(a, left > 0.0 ? r : p, &want), SPECD_OK);
		emptied += left == 0.0;

		float u = sampler_uniform(b), pd = -1.0f;
		uint32_t got;
		struct kern_sample_rows s = {
			.rows = 1, .n = N, .x = x, .ldx = N, .params = kern_params(&sp), .u = &u,
			.probe = &d, .exclude_probe = true, .work = work, .out = &got,
			.probe_p = &pd,
		};
		assert_int_equal(kern_sample(ctx, &s), SPECD_OK);
		assert_true(pd == p[d]);
		assert_int_equal(got, (uint32_t)want);
		sampler_destroy(a);
		sampler_destroy(b);
	}
	assert_true(emptied > 0); /* the fallback to p was exercised */
	specd_free(work);
}

static void test_sample__min_p_keeps_tokens_within_ratio_of_best(void **state)
{
	/* T = 1: probabilities proportional to e^logit; the best is id 1. */
	const float x[6] = {0.0f, 3.0f, 1.0f, NAN, 3.0f - logf(4.0f), -2.0f};
	struct kern_sample_params p = {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.2f};
	float probs[6];
	unsigned char scratch[6 * 16];

	(void)state;
	assert_true(kern_sample_scratch_bytes(6) <= sizeof(scratch));
	assert_int_equal(kern_sample_probs(&p, x, 6, probs, scratch), SPECD_OK);
	/* kept: id 1 (ratio 1) and id 4 (ratio 1/4); e^-2 and e^-3 are below 0.2. */
	double kept = 1.0 + exp(-log(4.0));
	assert_float_equal(probs[1], 1.0 / kept, 1e-6);
	assert_float_equal(probs[4], 0.25 / kept, 1e-6);
	assert_true(probs[0] == 0.0f && probs[2] == 0.0f && probs[3] == 0.0f && probs[5] == 0.0f);
	/* min-p 1 keeps the best alone (and ties to it); with top-k 3 the filter still
	 * applies within the cut. */
	p.min_p = 1.0f;
	assert_int_equal(kern_sample_probs(&p, x, 6, probs, scratch), SPECD_OK);
	assert_true(probs[1] == 1.0f);
	p.min_p = 0.2f;
	p.top_k = 3;
	assert_int_equal(kern_sample_probs(&p, x, 6, probs, scratch), SPECD_OK);
	assert_float_equal(probs[1], 1.0 / kept, 1e-6);
	assert_true(probs[2] == 0.0f);
	/* The sampler refuses a min-p outside [0, 1]. */
	struct sampler_params sp = {.temperature = 1.0f, .top_p = 1.0f, .min_p = 1.5f};
	struct specd_error err;
	assert_int_equal(sampler_params_check(&sp, &err), SPECD_INVAL);
	sp.min_p = -0.1f;
	assert_int_equal(sampler_params_check(&sp, &err), SPECD_INVAL);
	sp.min_p = NAN;
	assert_int_equal(sampler_params_check(&sp, &err), SPECD_INVAL);
	sp.min_p = 1.0f;
	assert_int_equal(sampler_params_check(&sp, &err), SPECD_OK);
}

static void test_sample__greedy_needs_no_draw_or_work(void **state)
{
	struct kern_ctx *ctx = *state;
	const float x[2 * 5] = {0.5f, 2.0f, NAN, 2.0f, 1.0f,  NAN, -INFINITY, 7.0f, 7.0f, 7.0f};
	uint32_t out[2], probe[2] = {3, 2};
	float pp[2];
	struct kern_sample_rows s = {
		.rows = 2, .n = 5, .x = x, .ldx = 5,
		.params = {.temperature = 1.3f, .top_k = 1, .top_p = 1.0f}, /* top-k 1: greedy */
		.probe = probe, .out = out, .probe_p = pp,
	};

	assert_int_equal(kern_sample(ctx, &s), SPECD_OK);
	assert_int_equal(out[0], 1); /* lowest id of the tie */
	assert_int_equal(out[1], 2);
	assert_true(pp[0] == 0.0f && pp[1] == 1.0f);
	s.params.temperature = 0.0f;
	s.params.top_k = 0;
	assert_int_equal(kern_sample(ctx, &s), SPECD_OK);
	assert_int_equal(out[0], 1);
}

/* A temperature that makes logit / T overflow takes the limit T -> 0+ (kernels/sample.h)
 * in the op as in sampler_sample, whatever the cuts: the argmax always ({20, 15, ...}
 * no longer ties at +inf, {0, -1, -2} is no longer dead), tied maxima sharing, a +inf
 * logit still taking everything, the probe's probability that of the limit. */
static void test_sample__tiny_temperature_is_the_argmax_limit(void **state)
{
	enum { N = 4, ROWS = 5, TIED = 3 };
	struct kern_ctx *ctx = *state;
	const float x[ROWS][N] = {
		{20.0f, 15.0f, 0.0f, -1.0f},     {0.0f, -1.0f, -2.0f, -INFINITY},
		{-3e38f, NAN, -3.1e38f, -1e38f}, {15.0f, 20.0f, 20.0f, NAN},
		{20.0f, INFINITY, 15.0f, -1.0f},
	};
	const uint32_t want[ROWS] = {0, 0, 3, 1, 1}; /* row TIED: 1 or 2, by u */
	const uint32_t probe[ROWS] = {0, 1, 3, 2, 0};
	const float temps[] = {1e-40f, 1e-38f};
	const struct kern_sample_params cuts[] = {
		{.top_p = 1.0f}, {.top_k = 2, .top_p = 1.0f}, {.top_p = 0.5f},
		{.top_p = 1.0f, .min_p = 0.9f}, {.top_k = 3, .top_p = 0.9f, .min_p = 0.1f},
	};
	float work[ROWS * N * 4], u[ROWS], pp[ROWS];
	uint32_t out[ROWS];

	assert_true(kern_sample_work_bytes(ROWS, N) <= sizeof(work));
	for (size_t t = 0; t < sizeof(temps) / sizeof(temps[0]); t++) {
		for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			struct sampler_params sp = {.temperature = temps[t],
						    .top_k = (int32_t)cuts[c].top_k,
						    .top_p = cuts[c].top_p, .min_p = cuts[c].min_p};
			struct kern_sample_rows s = {
				.rows = ROWS, .n = N, .x = &x[0][0], .ldx = N,
				.params = kern_params(&sp), .u = u, .probe = probe, .work = work,
				.out = out, .probe_p = pp,
			};
			/* top_p 0.5 keeps the first of the two tied maxima alone. */
			bool shared = cuts[c].top_p != 0.5f;
			bool seen[N] = {false};
			struct sampler *ref = NULL;

			assert_int_equal(sampler_create(N, &sp, &ref, NULL), SPECD_OK);
			for (int d = 0; d < 64; d++) {
				for (int r = 0; r < ROWS; r++)
					u[r] = (float)((d * 5 + r) % 64) / 64.0f;
				assert_int_equal(kern_sample(ctx, &s), SPECD_OK);
				for (int r = 0; r < ROWS; r++) {
					int32_t tok = -1;

					assert_int_equal(sampler_sample(ref, x[r], &tok), SPECD_OK);
					if (r == TIED) {
						seen[out[r]] = true;
						assert_true(out[r] == 1 || (shared && out[r] == 2));
						assert_true(tok == 1 || (shared && tok == 2));
						assert_true(pp[r] == (shared ? 0.5f : 0.0f));
						continue;
					}
					assert_int_equal(out[r], want[r]);
					assert_int_equal(tok, (int32_t)want[r]);
					assert_true(pp[r] == (probe[r] == want[r] ? 1.0f : 0.0f));
				}
			}
			assert_true(seen[1] && seen[2] == shared);
			sampler_destroy(ref);
		}
	}
}

static void test_sample__refuses_bad_arguments_and_dead_rows(void **state)
{
	struct kern_ctx *ctx = *state;
	float x[2 * 4] = {1.0f, 2.0f, 3.0f, 4.0f, 1.0f, 2.0f, 3.0f, 4.0f}, u[2] = {0.5f, 0.25f};
	float work[4 * 4 * 4];
	uint32_t out[2] = {77, 77};
	struct kern_sample_rows good = {
		.rows = 2, .n = 4, .x = x, .ldx = 4,
		.params = {.temperature = 1.0f, .top_p = 0.9f}, .u = u, .work = work, .out = out,
	};
	struct kern_sample_rows bad[10];

	assert_true(kern_sample_work_bytes(2, 4) <= sizeof(work));
	for (int i = 0; i < 10; i++)
		bad[i] = good;
	bad[0].params.temperature = -1.0f;
	bad[1].params.top_p = 0.0f;
	bad[2].params.min_p = 1.5f;
	bad[3].work = NULL;
	bad[4].u = NULL;
	u[1] = 1.0f; /* bad[5] sees it too; restored below */
	bad[6].ldx = 3;
	bad[7].n = 0;
	bad[8].exclude_probe = true; /* without probe */
	bad[9].params.temperature = INFINITY;
	assert_int_equal(kern_sample(ctx, &bad[5]), SPECD_INVAL);
	u[1] = 0.25f;
	for (int i = 0; i < 10; i++)
		if (i != 5)
			assert_int_equal(kern_sample(ctx, &bad[i]), SPECD_INVAL);
	assert_int_equal(kern_sample(ctx, NULL), SPECD_INVAL);
	/* A dead second row: nothing written for the first either. */
	for (int i = 4; i < 8; i++)
		x[i] = i % 2 ? NAN : -INFINITY;
	assert_int_equal(kern_sample(ctx, &good), SPECD_INVAL);
	good.params.temperature = 0.0f;
	assert_int_equal(kern_sample(ctx, &good), SPECD_INVAL);
	assert_true(out[0] == 77 && out[1] == 77);
	/* A finite logit is alive however small the temperature: one that T scales
	 * past -inf takes the limit T -> 0+ (kernels/sample.h), as in sampler_sample. */
	x[4] = -3e38f;
	good.params.temperature = 0.01f;
	assert_int_equal(kern_sample(ctx, &good), SPECD_OK);
	assert_int_equal(out[1], 0);
	out[1] = 77;
	good.params.temperature = 1.0f;
	assert_int_equal(kern_sample(ctx, &good), SPECD_OK);
	assert_int_equal(out[1], 0);
	good.rows = 0;
	good.x = NULL;
	assert_int_equal(kern_sample(ctx, &good), SPECD_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sample__cpu_op_equals_sampler_sample),
		cmocka_unit_test(test_sample__rows_equal_each_row_alone),
		cmocka_unit_test(test_sample__probe_and_residual_are_the_verifiers),
		cmocka_unit_test(test_sample__min_p_keeps_tokens_within_ratio_of_best),
		cmocka_unit_test(test_sample__greedy_needs_no_draw_or_work),
		cmocka_unit_test(test_sample__tiny_temperature_is_the_argmax_limit),
		cmocka_unit_test(test_sample__refuses_bad_arguments_and_dead_rows),
	};

	return cmocka_run_group_tests(tests, setup_ctx, teardown_ctx);
}
