/* model/sampler: greedy, seeded reproducibility, the distribution sampled (chi-square
 * at a fixed seed), the top-k / top-p cuts and their tie order, temperature, and that
 * sampling allocates nothing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "model/sampler.h"

static struct sampler *make(int32_t n, float temp, int32_t k, float p, uint64_t seed)
{
	struct sampler_params sp = { .temperature = temp, .top_k = k, .top_p = p, .seed = seed };
	struct sampler *s = NULL;

	assert_int_equal(sampler_create(n, &sp, &s, NULL), SPECD_OK);
	return s;
}

/* Deterministic pseudo-random logits for the property tests. */
static void fill_logits(float *l, int32_t n, uint64_t seed)
{
	for (int32_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		l[i] = (float)((double)(seed >> 11) * 0x1.0p-53 * 8.0 - 4.0);
	}
}

static void test_sampler_greedy__picks_argmax_lowest_on_ties(void **state)
{
	float l[6] = { 0.5f, 2.0f, -1.0f, 2.0f, NAN, 1.0f };
	float probs[6];
	struct sampler *s = make(6, 0.0f, 0, 1.0f, 7), *fresh = make(6, 0.0f, 0, 1.0f, 7);
	int32_t tok = -1;

	(void)state;
	assert_true(sampler_is_greedy(s));
	for (int i = 0; i < 10; i++) {
		assert_int_equal(sampler_sample(s, l, &tok), SPECD_OK);
		assert_int_equal(tok, 1);
	}
	/* greedy draws nothing from the PRNG */
	assert_true(sampler_uniform(s) == sampler_uniform(fresh));
	assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
	for (int i = 0; i < 6; i++)
		assert_true(probs[i] == (i == 1 ? 1.0f : 0.0f));
	assert_int_equal(sampler_argmax(l, 6), 1);
	assert_int_equal(sampler_argmax(l, 0), -1);
	sampler_destroy(s);
	sampler_destroy(fresh);

	/* top_k 1 is greedy at any temperature */
	s = make(6, 1.5f, 1, 1.0f, 7);
	assert_true(sampler_is_greedy(s));
	assert_int_equal(sampler_sample(s, l, &tok), SPECD_OK);
	assert_int_equal(tok, 1);
	sampler_destroy(s);
}

static void test_sampler_seed__reproduces_and_differs(void **state)
{
	float l[64];
	int32_t a[500], b[500], c[500];
	struct sampler *s1 = make(64, 1.0f, 0, 1.0f, 42), *s2 = make(64, 1.0f, 0, 1.0f, 42);
	struct sampler *s3 = make(64, 1.0f, 0, 1.0f, 43);
	struct sampler_params sp = { .temperature = 1.0f, .top_p = 1.0f, .seed = 42 };
	int differ = 0;

	(void)state;
	fill_logits(l, 64, 1);
	for (int i = 0; i < 500; i++) {
		assert_int_equal(sampler_sample(s1, l, &a[i]), SPECD_OK);
		assert_int_equal(sampler_sample(s2, l, &b[i]), SPECD_OK);
		assert_int_equal(sampler_sample(s3, l, &c[i]), SPECD_OK);
		differ += a[i] != c[i];
	}
	assert_memory_equal(a, b, sizeof(a));
	assert_true(differ > 100);
	/* reset restarts the same sequence */
	assert_int_equal(sampler_reset(s1, &sp, NULL), SPECD_OK);
	for (int i = 0; i < 500; i++) {
		assert_int_equal(sampler_sample(s1, l, &b[i]), SPECD_OK);
	}
	assert_memory_equal(a, b, sizeof(a));
	sampler_destroy(s1);
	sampler_destroy(s2);
	sampler_destroy(s3);
}

/* Golden values pin the PRNG, so a seed means the same draws on every platform. */
static void test_sampler_uniform__is_pinned_and_in_range(void **state)
{
	struct sampler *s = make(4, 1.0f, 0, 1.0f, 0);
	struct sampler *g = make(4, 1.0f, 0, 1.0f, 0);
	double sum = 0;
	const uint32_t golden[3] = { 10087519, 12545567, 1728388 };

	(void)state;
	for (int i = 0; i < 100000; i++) {
		float u = sampler_uniform(s);

		assert_true(u >= 0.0f && u < 1.0f);
		assert_true(u * 16777216.0f == floorf(u * 16777216.0f)); /* 24 bits */
		sum += u;
	}
	assert_true(fabs(sum / 100000 - 0.5) < 0.005);
	/* splitmix64(0) seeds xoshiro256**; its outputs (0x99ec5f36cb75f2b4, ...) >> 40,
	 * scaled by 2^-24 (computed independently in Python) */
	for (int i = 0; i < 3; i++)
		assert_true(sampler_uniform(g) == (float)golden[i] * 0x1.0p-24f);
	sampler_destroy(s);
	sampler_destroy(g);
}

/* Pearson's chi-square of counts against expected probabilities. */
static double chi_square(const long *count, const double *p, int n, long total)
{
	double x2 = 0;

	for (int i = 0; i < n; i++) {
		double e = p[i] * (double)total;

		if (e > 0)
			x2 += (count[i] - e) * (count[i] - e) / e;
	}
	return x2;
}

/* Critical values of chi-square at significance 0.001, by degrees of freedom. */
static const double chi2_crit_001[] = { 0, 10.828, 13.816, 16.266, 18.467, 20.515 };

static void test_sampler_sample__follows_the_distribution(void **state)
{
	const double p[5] = { 0.05, 0.10, 0.15, 0.20, 0.50 };
	const double wrong[5] = { 0.06, 0.10, 0.15, 0.20, 0.49 };
	float l[5];
	long count[5] = { 0 }, kcount[5] = { 0 };
	const long draws = 100000;
	struct sampler *s = make(5, 1.0f, 0, 1.0f, 2024), *sk = make(5, 1.0f, 3, 1.0f, 2024);
	double pk[5] = { 0, 0, 0.15 / 0.85, 0.20 / 0.85, 0.50 / 0.85 };

	(void)state;
	for (int i = 0; i < 5; i++)
		l[i] = (float)log(p[i]) + 3.0f; /* a shift changes nothing */
	for (long d = 0; d < draws; d++) {
		int32_t t, tk;

		assert_int_equal(sampler_sample(s, l, &t), SPECD_OK);
		assert_int_equal(sampler_sample(sk, l, &tk), SPECD_OK);
		count[t]++;
		kcount[tk]++;
	}
	assert_true(chi_square(count, p, 5, draws) < chi2_crit_001[4]);
	/* the test has power: a distribution 1% off is rejected */
	assert_true(chi_square(count, wrong, 5, draws) > chi2_crit_001[4]);
	assert_int_equal(kcount[0] + kcount[1], 0);
	assert_true(chi_square(kcount, pk, 5, draws) < chi2_crit_001[2]);
	sampler_destroy(s);
	sampler_destroy(sk);
}

static void test_sampler_sample_probs__follows_given_weights(void **state)
{
	const float w[6] = { 0.0f, 3.0f, 0.0f, 1.0f, 4.0f, 2.0f }; /* unnormalised */
	const double p[6] = { 0, 0.3, 0, 0.1, 0.4, 0.2 };
	long count[6] = { 0 };
	const long draws = 100000;
	struct sampler *s = make(6, 1.0f, 0, 1.0f, 99);
	float bad[6] = { 0.1f, -0.1f, 0, 0, 0, 0 }, zero[6] = { 0 };
	int32_t t;

	(void)state;
	for (long d = 0; d < draws; d++) {
		assert_int_equal(sampler_sample_probs(s, w, &t), SPECD_OK);
		count[t]++;
	}
	assert_int_equal(count[0] + count[2], 0);
	assert_true(chi_square(count, p, 6, draws) < chi2_crit_001[3]);
	assert_int_equal(sampler_sample_probs(s, bad, &t), SPECD_INVAL);
	assert_int_equal(sampler_sample_probs(s, zero, &t), SPECD_INVAL);
	sampler_destroy(s);
}

/* sampler_sample is exactly sampler_probs then sampler_sample_probs, draw for draw. */
static void test_sampler_sample__equals_probs_then_sample_probs(void **state)
{
	float l[300], probs[300];
	struct sampler *a = make(300, 0.8f, 40, 0.9f, 5), *b = make(300, 0.8f, 40, 0.9f, 5);

	(void)state;
	for (int i = 0; i < 200; i++) {
		int32_t ta, tb;

		fill_logits(l, 300, (uint64_t)i);
		assert_int_equal(sampler_sample(a, l, &ta), SPECD_OK);
		assert_int_equal(sampler_probs(b, l, probs), SPECD_OK);
		assert_int_equal(sampler_sample_probs(b, probs, &tb), SPECD_OK);
		assert_int_equal(ta, tb);
		assert_true(probs[ta] > 0.0f);
	}
	sampler_destroy(a);
	sampler_destroy(b);
}

/* The ids ranked by logit descending, id ascending. */
static int32_t g_rank_logits_n;
static const float *g_rank_logits;

static int rank_cmp(const void *pa, const void *pb)
{
	int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;

	if (g_rank_logits[a] != g_rank_logits[b])
		return g_rank_logits[a] > g_rank_logits[b] ? -1 : 1;
	return a < b ? -1 : 1;
}

static void rank(const float *l, int32_t n, int32_t *order)
{
	for (int32_t i = 0; i < n; i++)
		order[i] = i;
	g_rank_logits = l;
	g_rank_logits_n = n;
	qsort(order, (size_t)n, sizeof(*order), rank_cmp);
}

static void test_sampler_top_k__keeps_exactly_k_best(void **state)
{
	enum { N = 1000 };
	float l[N], probs[N];
	int32_t order[N];
	const int32_t ks[] = { 2, 10, 999 };

	(void)state;
	fill_logits(l, N, 3);
	rank(l, N, order);
	for (size_t j = 0; j < sizeof(ks) / sizeof(ks[0]); j++) {
		struct sampler *s = make(N, 1.0f, ks[j], 1.0f, 1);
		double sum = 0, z = 0;
		int kept = 0;

		assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
		for (int i = 0; i < N; i++) {
			kept += probs[i] > 0.0f;
			sum += probs[i];
		}
		assert_int_equal(kept, ks[j]);
		assert_true(fabs(sum - 1.0) < 1e-5);
		for (int i = 0; i < ks[j]; i++) {
			assert_true(probs[order[i]] > 0.0f);
			z += exp((double)l[order[i]] - l[order[0]]);
		}
		/* renormalised softmax over the kept set */
		for (int i = 0; i < ks[j]; i += 7)
			assert_true(fabs(probs[order[i]] - exp((double)l[order[i]] - l[order[0]]) / z)
				    < 1e-6);
		sampler_destroy(s);
	}
}

static void test_sampler_cuts__ties_keep_lowest_ids(void **state)
{
	float l[8] = { 1, 1, 1, 1, 1, 1, 1, 1 }, probs[8];
	struct sampler *sk = make(8, 1.0f, 3, 1.0f, 1), *sp = make(8, 1.0f, 0, 0.3f, 1);

	(void)state;
	assert_int_equal(sampler_probs(sk, l, probs), SPECD_OK);
	for (int i = 0; i < 8; i++)
		assert_true(fabsf(probs[i] - (i < 3 ? 1.0f / 3 : 0.0f)) < 1e-6f);
	/* each holds 1/8: three reach 0.375 >= 0.3 */
	assert_int_equal(sampler_probs(sp, l, probs), SPECD_OK);
	for (int i = 0; i < 8; i++)
		assert_true(fabsf(probs[i] - (i < 3 ? 1.0f / 3 : 0.0f)) < 1e-6f);
	sampler_destroy(sk);
	sampler_destroy(sp);
}

static void test_sampler_top_p__keeps_smallest_prefix_reaching_p(void **state)
{
	const float p5[5] = { 0.05f, 0.10f, 0.15f, 0.20f, 0.50f };
	const struct { float p; int kept; } known[] = {
		{ 0.45f, 1 }, { 0.69f, 2 }, { 0.71f, 3 }, { 0.86f, 4 }, { 0.96f, 5 },
	};
	float l5[5], probs5[5];
	enum { N = 50000 };
	float *l = malloc(N * sizeof(*l)), *probs = malloc(N * sizeof(*probs));
	int32_t *order = malloc(N * sizeof(*order));
	const float ps[] = { 0.05f, 0.5f, 0.9f, 0.99f };

	(void)state;
	assert_non_null(l);
	assert_non_null(probs);
	assert_non_null(order);
	for (int i = 0; i < 5; i++)
		l5[i] = logf(p5[i]);
	for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++) {
		struct sampler *s = make(5, 1.0f, 0, known[j].p, 1);
		int kept = 0;

		assert_int_equal(sampler_probs(s, l5, probs5), SPECD_OK);
		for (int i = 0; i < 5; i++)
			kept += probs5[i] > 0.0f;
		assert_int_equal(kept, known[j].kept);
		assert_true(probs5[4] > 0.0f); /* the most likely is always kept */
		sampler_destroy(s);
	}

	/* A large vocabulary: the kept set is a prefix of the ranking whose mass reaches p
	 * and which, one shorter, would not. */
	fill_logits(l, N, 11);
	rank(l, N, order);
	for (size_t j = 0; j < sizeof(ps) / sizeof(ps[0]); j++) {
		struct sampler *s = make(N, 1.0f, 0, ps[j], 1);
		double z = 0, cum = 0;
		int kept = 0;

		for (int i = 0; i < N; i++)
			z += exp((double)l[i] - l[order[0]]);
		assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
		for (int i = 0; i < N; i++)
			kept += probs[i] > 0.0f;
		assert_true(kept >= 1);
		for (int i = 0; i < N; i++)
			assert_true((probs[order[i]] > 0.0f) == (i < kept));
		for (int i = 0; i < kept - 1; i++)
			cum += exp((double)l[order[i]] - l[order[0]]) / z;
		assert_true(cum < ps[j] + 1e-6);
		cum += exp((double)l[order[kept - 1]] - l[order[0]]) / z;
		assert_true(cum >= ps[j] - 1e-6);
		sampler_destroy(s);
	}
	free(l);
	free(probs);
	free(order);
}

static void test_sampler_top_k_then_p__p_measured_within_k(void **state)
{
	const float l[5] = { logf(0.5f), logf(0.2f), logf(0.15f), logf(0.1f), logf(0.05f) };
	float probs[5];
	/* within the top 2, 0.5/0.7 = 0.714 < 0.8: both stay */
	struct sampler *s = make(5, 1.0f, 2, 0.8f, 1);

	(void)state;
	assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
	assert_true(fabsf(probs[0] - 0.5f / 0.7f) < 1e-6f);
	assert_true(fabsf(probs[1] - 0.2f / 0.7f) < 1e-6f);
	assert_true(probs[2] == 0.0f && probs[3] == 0.0f && probs[4] == 0.0f);
	sampler_destroy(s);
}

static void test_sampler_temperature__sharpens_and_flattens(void **state)
{
	const float l[4] = { 2.0f, 1.0f, 0.5f, -1.0f };
	const float temps[] = { 0.25f, 0.5f, 1.0f, 2.0f, 8.0f };
	float probs[4], prev_max = 2.0f;
	double z = 0;

	(void)state;
	for (int i = 0; i < 4; i++)
		z += exp(l[i]);
	for (size_t j = 0; j < sizeof(temps) / sizeof(temps[0]); j++) {
		struct sampler *s = make(4, temps[j], 0, 1.0f, 1);

		assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
		assert_true(probs[0] < prev_max); /* the favourite loses mass as T grows */
		assert_true(probs[0] > probs[1] && probs[1] > probs[2] && probs[2] > probs[3]);
		prev_max = probs[0];
		if (temps[j] == 1.0f)
			for (int i = 0; i < 4; i++)
				assert_true(fabs(probs[i] - exp(l[i]) / z) < 1e-6);
		sampler_destroy(s);
	}
	assert_true(prev_max < 0.35f); /* T = 8 is close to uniform */
}

/* A temperature so small that logit / T overflows (1e-40 is subnormal: 1 / T is
 * +inf; at 1e-38, 20 / T is): the limit T -> 0+, the argmax, never a tie of
 * infinities nor an error; and tied maxima share as at any small T. */
static void test_sampler_temperature__tiny_is_the_argmax_limit(void **state)
{
	const float peaked[4] = { 20.0f, 15.0f, 0.0f, -1.0f };
	const float nonpos[3] = { 0.0f, -1.0f, -2.0f };
	const float tied[3] = { 5.0f, 5.0f, 0.0f };
	const float temps[] = { 1e-40f, 1e-38f };
	float probs[4];
	int32_t t;

	(void)state;
	for (size_t j = 0; j < sizeof(temps) / sizeof(temps[0]); j++) {
		struct sampler *s4 = make(4, temps[j], 0, 1.0f, 7), *s3 = make(3, temps[j], 0, 1.0f, 7);

		assert_false(sampler_is_greedy(s4)); /* still sampling: draws stay in step */
		assert_int_equal(sampler_probs(s4, peaked, probs), SPECD_OK);
		assert_true(probs[0] == 1.0f && probs[1] == 0.0f && probs[2] == 0.0f &&
			    probs[3] == 0.0f);
		assert_int_equal(sampler_probs(s3, nonpos, probs), SPECD_OK);
		assert_true(probs[0] == 1.0f && probs[1] == 0.0f && probs[2] == 0.0f);
		assert_int_equal(sampler_probs(s3, tied, probs), SPECD_OK);
		assert_true(probs[0] == 0.5f && probs[1] == 0.5f && probs[2] == 0.0f);
		for (int d = 0; d < 200; d++) {
			assert_int_equal(sampler_sample(s4, peaked, &t), SPECD_OK);
			assert_int_equal(t, 0);
			assert_int_equal(sampler_sample(s3, nonpos, &t), SPECD_OK);
			assert_int_equal(t, 0);
		}
		sampler_destroy(s4);
		sampler_destroy(s3);
	}
}

static void test_sampler_params__rejects_bad_values(void **state)
{
	const struct sampler_params bad[] = {
		{ .temperature = -0.1f, .top_p = 1.0f },
		{ .temperature = NAN, .top_p = 1.0f },
		{ .temperature = INFINITY, .top_p = 1.0f },
		{ .temperature = 1.0f, .top_k = -1, .top_p = 1.0f },
		{ .temperature = 1.0f, .top_p = 0.0f },
		{ .temperature = 1.0f, .top_p = 1.5f },
		{ .temperature = 1.0f, .top_p = NAN },
	};
	struct sampler_params good = { .temperature = 0.7f, .top_k = 40, .top_p = 0.95f };
	struct sampler *s = NULL;
	struct specd_error err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(sampler_params_check(&bad[i], &err), SPECD_INVAL);
		assert_int_equal(sampler_create(10, &bad[i], &s, &err), SPECD_INVAL);
		assert_null(s);
	}
	assert_int_equal(sampler_create(0, &good, &s, &err), SPECD_INVAL);
	assert_int_equal(sampler_create(10, &good, &s, &err), SPECD_OK);
	assert_int_equal(sampler_vocab_size(s), 10);
	/* a failed reset leaves the sampler as it was */
	assert_int_equal(sampler_reset(s, &bad[0], &err), SPECD_INVAL);
	assert_false(sampler_is_greedy(s));
	sampler_destroy(s);
	sampler_destroy(NULL);
}

static void test_sampler_logits__nan_and_inf(void **state)
{
	float l[4] = { NAN, 1.0f, INFINITY, 0.0f }, probs[4];
	float none[3] = { -INFINITY, NAN, -INFINITY };
	struct sampler *s = make(4, 1.0f, 0, 1.0f, 1), *s3 = make(3, 1.0f, 0, 1.0f, 1);
	struct sampler *g3 = make(3, 0.0f, 0, 1.0f, 1);
	int32_t t;

	(void)state;
	assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
	assert_true(probs[2] == 1.0f && probs[0] == 0.0f && probs[1] == 0.0f);
	assert_int_equal(sampler_sample(s, l, &t), SPECD_OK);
	assert_int_equal(t, 2);
	assert_int_equal(sampler_sample(s3, none, &t), SPECD_INVAL);
	assert_int_equal(sampler_sample(g3, none, &t), SPECD_INVAL);
	assert_int_equal(sampler_sample(s3, NULL, &t), SPECD_INVAL);
	sampler_destroy(s);
	sampler_destroy(s3);
	sampler_destroy(g3);
}

static void test_sampler_sample__allocates_nothing(void **state)
{
	enum { N = 4096 };
	static float l[N], probs[N];
	struct sampler *s = make(N, 0.9f, 50, 0.9f, 1), *sp = make(N, 0.9f, 0, 0.5f, 1);
	long before;
	int32_t t;

	(void)state;
	fill_logits(l, N, 5);
	before = specd_alloc_count();
	for (int i = 0; i < 20; i++) {
		assert_int_equal(sampler_sample(s, l, &t), SPECD_OK);
		assert_int_equal(sampler_sample(sp, l, &t), SPECD_OK);
		assert_int_equal(sampler_probs(s, l, probs), SPECD_OK);
	}
	assert_int_equal(specd_alloc_count(), before);
	sampler_destroy(s);
	sampler_destroy(sp);
}

/* Log-probabilities: exact log-softmax of the raw logits, the top list in the
 * sampler's order (ties to the lower id), NaN as -inf, and bad arguments refused. */
static void test_sampler_logprobs__log_softmax_and_ordered_top(void **state)
{
	(void)state;
	const float logits[6] = {1.0f, 3.0f, NAN, 3.0f, -2.0f, 0.5f};
	struct sampler_logprob out[1 + 8];
	double z = 0;
	for (int i = 0; i < 6; i++)
		if (!isnan(logits[i]))
			z += exp((double)logits[i]);
	assert_int_equal(sampler_logprobs(logits, 6, 4, 4, out), SPECD_OK);
	assert_int_equal(out[0].token, 4);
	assert_float_equal(out[0].logprob, -2.0 - log(z), 1e-6);
	static const int32_t order[4] = {1, 3, 0, 5};
	for (int i = 0; i < 4; i++) {
		assert_int_equal(out[1 + i].token, order[i]);
		assert_float_equal(out[1 + i].logprob, logits[order[i]] - log(z), 1e-6);
	}
	/* More alternatives than tokens: the NaN one comes last as -inf, then none. */
	assert_int_equal(sampler_logprobs(logits, 6, 2, 8, out), SPECD_OK);
	assert_true(isinf(out[0].logprob) && out[0].logprob < 0);
	assert_int_equal(out[6].token, 2);
	assert_int_equal(out[7].token, -1);
	assert_int_equal(out[8].token, -1);
	/* top 0: the chosen token only. */
	out[1].token = 99;
	assert_int_equal(sampler_logprobs(logits, 6, 1, 0, out), SPECD_OK);
	assert_float_equal(out[0].logprob, 3.0 - log(z), 1e-6);
	assert_int_equal(out[1].token, 99);
	const float dead[2] = {-INFINITY, NAN};
	assert_int_equal(sampler_logprobs(dead, 2, 0, 1, out), SPECD_INVAL);
	assert_int_equal(sampler_logprobs(logits, 6, 6, 1, out), SPECD_INVAL);
	assert_int_equal(sampler_logprobs(logits, 6, -1, 1, out), SPECD_INVAL);
	assert_int_equal(sampler_logprobs(logits, 6, 0, SAMPLER_MAX_TOP_LOGPROBS + 1, out),
			 SPECD_INVAL);
}

static void test_sampler_create__nomem(void **state)
{
	struct sampler_params p = { .temperature = 1.0f, .top_p = 1.0f };
	int fails = 0;

	(void)state;
	for (long k = 1; k < 10; k++) {
		struct sampler *s = NULL;
		enum specd_status st;

		specd_alloc_fail_after(k);
		st = sampler_create(100, &p, &s, NULL);
		specd_alloc_fail_reset();
		if (st == SPECD_OK) {
			sampler_destroy(s);
			break;
		}
		assert_int_equal(st, SPECD_NOMEM);
		assert_null(s);
		fails++;
	}
	assert_true(fails > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sampler_greedy__picks_argmax_lowest_on_ties),
		cmocka_unit_test(test_sampler_seed__reproduces_and_differs),
		cmocka_unit_test(test_sampler_uniform__is_pinned_and_in_range),
		cmocka_unit_test(test_sampler_sample__follows_the_distribution),
		cmocka_unit_test(test_sampler_sample_probs__follows_given_weights),
		cmocka_unit_test(test_sampler_sample__equals_probs_then_sample_probs),
		cmocka_unit_test(test_sampler_top_k__keeps_exactly_k_best),
		cmocka_unit_test(test_sampler_cuts__ties_keep_lowest_ids),
		cmocka_unit_test(test_sampler_top_p__keeps_smallest_prefix_reaching_p),
		cmocka_unit_test(test_sampler_top_k_then_p__p_measured_within_k),
		cmocka_unit_test(test_sampler_temperature__sharpens_and_flattens),
		cmocka_unit_test(test_sampler_temperature__tiny_is_the_argmax_limit),
		cmocka_unit_test(test_sampler_params__rejects_bad_values),
		cmocka_unit_test(test_sampler_logits__nan_and_inf),
		cmocka_unit_test(test_sampler_sample__allocates_nothing),
		cmocka_unit_test(test_sampler_logprobs__log_softmax_and_ordered_top),
		cmocka_unit_test(test_sampler_create__nomem),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
