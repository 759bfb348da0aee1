/* drafters/engine with sampling: speculative sampling leaves the target's distribution
 * unchanged. On a tiny-vocabulary random model, the joint distribution of the first two
 * generated tokens (of K + 1 = 4, so that the first step drafts K = 3) over 20,000 seeds
 * is compared between plain sampling and each of
 * ngram, a draft model close to the target (its q4_0 rounding) and an unrelated random
 * draft, with and without top-k/top-p, by a two-sample chi-square homogeneity test at
 * alpha = 0.001. Seeds are fixed, so the outcome is deterministic. A deliberately wrong
 * verifier must fail the same test, which shows the test can fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "model/kv.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_support.h"

#define N_SEEDS 20000
#define VOCAB 260
#define K 3

static char g_dir[512], g_target[600], g_near[600], g_far[600];
static struct model *g_t;
static int32_t g_prompt[4];

static const struct sampler_params k_plain = {.temperature = 0.5f, .top_k = 0, .top_p = 1.0f};
static const struct sampler_params k_trunc = {.temperature = 0.8f, .top_k = 6, .top_p = 0.9f};

/* Counts of the first two tokens, cell t1 * VOCAB + t2, over N_SEEDS seeds from seed0. */
static void sample_joint(struct drafter *d, draft_verify_fn *verify,
			 const struct sampler_params *sp, uint64_t seed0, uint32_t *cells,
			 struct draft_metrics *total)
{
	struct draft_engine_config ec = {.target = g_t, .drafter = d, .spec_tokens = K,
					 .verify = verify};
	struct draft_engine *e;
	struct draft_job *j;
	memset(cells, 0, sizeof(uint32_t) * VOCAB * VOCAB);
	memset(total, 0, sizeof(*total));
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	assert_int_equal(draft_job_create(e, 0, &j, NULL), SPECD_OK);
	for (uint64_t i = 0; i < N_SEEDS; i++) {
		/* K + 1 tokens, so the first step drafts all K; the first two are counted. */
		struct draft_job_params jp = {.sampling = *sp, .max_tokens = K + 1, .eos = -1};
		jp.sampling.seed = seed0 + i;
		assert_int_equal(draft_job_start(j, g_prompt, 4, &jp, NULL), SPECD_OK);
		while (draft_job_stop(j) == DRAFT_STOP_NONE)
			assert_int_equal(draft_job_step(j, NULL), SPECD_OK);
		uint32_t n;
		const int32_t *out = draft_job_output(j, &n);
		assert_int_equal(n, K + 1);
		cells[out[0] * VOCAB + out[1]]++;
		const struct draft_metrics *m = draft_job_metrics(j);
		total->drafted += m->drafted;
		total->accepted += m->accepted;
	}
	draft_job_destroy(j);
	draft_engine_destroy(e);
}

static int setup(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	snprintf(g_near, sizeof(g_near), "%s/near.gguf", g_dir);
	snprintf(g_far, sizeof(g_far), "%s/far.gguf", g_dir);
	const char *target[] = {"--dim", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
				"--ffn", "64", "--vocab", "260", "--ctx", "16", "--seed", "21", NULL};
	const char *near[] = {"--dim", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
			      "--ffn", "64", "--vocab", "260", "--ctx", "16", "--seed", "21",
			      "--type", "q4_0", NULL};
	const char *far[] = {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
			     "--ffn", "32", "--vocab", "260", "--ctx", "16", "--seed", "22", NULL};
	fx_gen_model(g_target, target);
	fx_gen_model(g_near, near);
	fx_gen_model(g_far, far);
	g_t = fx_load(g_target, 1, 16);

	/* A prompt [BOS a b a] where ngram proposes b (and then a) and the target gives b
	 * a probability between 0.2 and 0.8, so both acceptance and rejection happen. */
	struct sampler *s;
	float logits[VOCAB], p[VOCAB];
	assert_int_equal(sampler_create(VOCAB, &k_plain, &s, NULL), SPECD_OK);
	for (int32_t a = 3; a < VOCAB; a++) {
		int32_t pre[2] = {1, a}, b;
		uint32_t n;
		assert_int_equal(fx_generate(g_t, NULL, 0, NULL, pre, 2, &(struct sampler_params){.top_p = 1.0f},
					     1, -1, &b, 1, &n, NULL, NULL), SPECD_OK);
		int32_t pr[4] = {1, a, b, a};
		uint32_t toks[4] = {1, (uint32_t)a, (uint32_t)b, (uint32_t)a}, slots[4] = {0},
			 pos[4] = {0, 1, 2, 3}, last = 3;
		struct model_batch mb = {.n_tokens = 4, .tokens = toks, .slots = slots, .pos = pos,
					 .n_out = 1, .out_idx = &last, .logits = logits};
		assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
		assert_int_equal(model_forward(g_t, &mb, NULL), SPECD_OK);
		assert_int_equal(sampler_probs(s, logits, p), SPECD_OK);
		if (p[b] > 0.2f && p[b] < 0.8f) {
			memcpy(g_prompt, pr, sizeof(pr));
			break;
		}
	}
	sampler_destroy(s);
	assert_int_equal(g_prompt[0], 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	model_destroy(g_t);
	ts_rmtree(g_dir);
	return 0;
}

struct outcome {
	double stat;
	int df;
	struct draft_metrics m;
};

static struct outcome compare(const uint32_t *plain, struct drafter *d, draft_verify_fn *verify,
			      const struct sampler_params *sp, uint64_t seed0)
{
	static uint32_t cells[VOCAB * VOCAB];
	struct outcome o;
	sample_joint(d, verify, sp, seed0, cells, &o.m);
	o.stat = fx_homogeneity(plain, cells, VOCAB * VOCAB, &o.df);
	assert_true(o.df >= 3 && o.df < FX_MAX_BINS);
	if (getenv("FX_VERBOSE"))
		fprintf(stderr, "  %s: drafted %llu accepted %llu, chi2 %.2f df %d (crit %.3f)\n",
			draft_method_name(draft_method_of(d)), (unsigned long long)o.m.drafted,
			(unsigned long long)o.m.accepted, o.stat, o.df, fx_chi2_critical(o.df));
	return o;
}

static void check_params(const struct sampler_params *sp)
{
	static uint32_t plain[VOCAB * VOCAB];
	struct draft_metrics m;
	struct drafter *ng = fx_drafter(DRAFT_METHOD_NGRAM, g_t, K, 1, NULL, 1);
	struct drafter *near = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, g_t, K, 1, g_near, 0);
	struct drafter *far = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, g_t, K, 1, g_far, 0);

	sample_joint(NULL, NULL, sp, 0, plain, &m);
	struct outcome o = compare(plain, ng, NULL, sp, 1 * N_SEEDS);
	assert_true(o.stat < fx_chi2_critical(o.df));
	assert_true(o.m.accepted > 0 && o.m.accepted < o.m.drafted);
	o = compare(plain, near, NULL, sp, 2 * N_SEEDS);
	assert_true(o.stat < fx_chi2_critical(o.df));
	assert_true(o.m.accepted > o.m.drafted / 4 && o.m.accepted < o.m.drafted);
	o = compare(plain, far, NULL, sp, 3 * N_SEEDS);
	assert_true(o.stat < fx_chi2_critical(o.df));
	assert_true(o.m.accepted < o.m.drafted);
	/* The same test rejects a verifier that is not exact. (With the near draft: the
	 * far one's q can miss p's support entirely, and then the residual is p.) */
	o = compare(plain, near, fx_biased_verify, sp, 4 * N_SEEDS);
	assert_true(o.stat > fx_chi2_critical(o.df));
	o = compare(plain, ng, fx_biased_verify, sp, 5 * N_SEEDS);
	assert_true(o.stat > fx_chi2_critical(o.df));
	draft_destroy(ng);
	draft_destroy(near);
	draft_destroy(far);
}

static void test_spec_sampling__temperature_keeps_the_distribution(void **state)
{
	(void)state;
	check_params(&k_plain);
}

static void test_spec_sampling__top_k_top_p_keep_the_distribution(void **state)
{
	(void)state;
	check_params(&k_trunc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_sampling__temperature_keeps_the_distribution),
		cmocka_unit_test(test_spec_sampling__top_k_top_p_keep_the_distribution),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
