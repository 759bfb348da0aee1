/* Speculative sampling across ranks (under mpirun -np 2): rank 0 runs the engine with
 * the remote drafter, rank 1 the draft rank's server (drafters/remote.h). As
 * test_spec_sampling.c, on a tiny-vocabulary random model: the joint distribution of
 * the first two generated tokens over N_SEEDS seeds must pass a two-sample chi-square
 * homogeneity test against plain sampling at alpha = 0.001, for ngram, a draft model
 * close to the target and an unrelated one, with and without top-k/top-p. And since the
 * draft rank owns the engine's draft sampler stream, every seed must give exactly the
 * tokens the in-process drafter gives. Fewer seeds than the one-process test: each job
 * crosses the link. */
#include <mpi.h>
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
#include "drafters/remote.h"
#include "model/kv.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_mpi.h"
#include "test_support.h"

#define N_SEEDS 4000
#define VOCAB 260
#define K 3

static int g_rank;
static char g_dir[512], g_target[600], g_near[600], g_far[600];
static struct model *g_t;
static int32_t g_prompt[4];

static const struct sampler_params k_plain = {.temperature = 0.5f, .top_k = 0, .top_p = 1.0f};
static const struct sampler_params k_trunc = {.temperature = 0.8f, .top_k = 6, .top_p = 0.9f};

/* Rank 0: cells[t1 * VOCAB + t2] over N_SEEDS seeds from seed0; pairs[i] = t1 * VOCAB + t2
 * of seed i. */
static void sample_joint(struct drafter *d, const struct sampler_params *sp, uint64_t seed0,
			 uint32_t *cells, uint32_t *pairs, struct draft_metrics *total)
{
	struct draft_engine_config ec = {.target = g_t, .drafter = d, .spec_tokens = K};
	struct draft_engine *e;
	struct draft_job *j;
	memset(cells, 0, sizeof(uint32_t) * VOCAB * VOCAB);
	memset(total, 0, sizeof(*total));
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	assert_int_equal(draft_job_create(e, 0, &j, NULL), SPECD_OK);
	for (uint64_t i = 0; i < N_SEEDS; i++) {
		struct draft_job_params jp = {.sampling = *sp, .max_tokens = K + 1, .eos = -1};
		jp.sampling.seed = seed0 + i;
		assert_int_equal(draft_job_start(j, g_prompt, 4, &jp, NULL), SPECD_OK);
		while (draft_job_stop(j) == DRAFT_STOP_NONE)
			assert_int_equal(draft_job_step(j, NULL), SPECD_OK);
		uint32_t n;
		const int32_t *out = draft_job_output(j, &n);
		assert_int_equal(n, K + 1);
		uint32_t c = (uint32_t)out[0] * VOCAB + (uint32_t)out[1];
		cells[c]++;
		pairs[i] = c;
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
	MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
	if (!ts_mpi_shared_dir(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	snprintf(g_near, sizeof(g_near), "%s/near.gguf", g_dir);
	snprintf(g_far, sizeof(g_far), "%s/far.gguf", g_dir);
	const char *target[] = {"--dim", "32", "--layers", "2", "--heads", "2", "--kv-heads",
				"1", "--ffn", "64", "--vocab", "260", "--ctx", "16", "--seed", "21",
				NULL};
	const char *near[] = {"--dim", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
			      "--ffn", "64", "--vocab", "260", "--ctx", "16", "--seed", "21",
			      "--type", "q4_0", NULL};
	const char *far[] = {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
			     "--ffn", "32", "--vocab", "260", "--ctx", "16", "--seed", "22", NULL};
	if (!ts_mpi_gen_model(g_target, target) || !ts_mpi_gen_model(g_near, near) ||
	    !ts_mpi_gen_model(g_far, far))
		return -1;
	g_t = fx_load(g_target, 1, 16);
	if (g_rank != 0)
		return 0;
	/* The prompt [BOS a b a] of test_spec_sampling.c: ngram proposes b, which the
	 * target gives a probability between 0.2 and 0.8. */
	struct sampler *s;
	float logits[VOCAB], p[VOCAB];
	assert_int_equal(sampler_create(VOCAB, &k_plain, &s, NULL), SPECD_OK);
	for (int32_t a = 3; a < VOCAB; a++) {
		int32_t pre[2] = {1, a}, b;
		uint32_t n;
		assert_int_equal(fx_generate(g_t, NULL, 0, NULL, pre, 2,
					     &(struct sampler_params){.top_p = 1.0f}, 1, -1, &b, 1,
					     &n, NULL, NULL), SPECD_OK);
		uint32_t toks[4] = {1, (uint32_t)a, (uint32_t)b, (uint32_t)a}, slots[4] = {0},
			 pos[4] = {0, 1, 2, 3}, last = 3;
		struct model_batch mb = {.n_tokens = 4, .tokens = toks, .slots = slots, .pos = pos,
					 .n_out = 1, .out_idx = &last, .logits = logits};
		assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
		assert_int_equal(model_forward(g_t, &mb, NULL), SPECD_OK);
		assert_int_equal(sampler_probs(s, logits, p), SPECD_OK);
		if (p[b] > 0.2f && p[b] < 0.8f) {
			int32_t pr[4] = {1, a, b, a};
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
	ts_mpi_remove_shared_dir(g_dir);
	return 0;
}

/* The link, on rank 0; on rank 1, serves a draft rank with the draft model at `path`
 * until rank 0 is done, then NULL. */
static struct draft_link *open_link(const char *path)
{
	struct draft_link_config lc = {.leader = 0, .draft = 1};
	struct draft_link *link;
	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, &link, NULL), SPECD_OK);
	if (g_rank == 0)
		return link;
	struct draft_server_config sc = {.target = g_t, .draft_path = path};
	assert_int_equal(draft_serve(link, &sc, NULL), SPECD_OK);
	draft_link_destroy(link);
	return NULL;
}

/* One drafter through the draft rank against plain sampling and against the same
 * drafter in this process. Both ranks call it; rank 1 serves until rank 0 is done. */
static void check_remote(enum draft_method method, const char *path, uint32_t lookup_min,
			 const struct sampler_params *sp, const uint32_t *plain, uint64_t seed0)
{
	struct draft_link *link = open_link(path);
	if (!link)
		return;
	static uint32_t cells[VOCAB * VOCAB], cells_local[VOCAB * VOCAB];
	static uint32_t pairs[N_SEEDS], pairs_local[N_SEEDS];
	struct draft_metrics m, ml;
	struct draft_config dc = {.method = method, .k_max = K, .n_slots = 1, .n_ctx = 16,
				  .target = g_t, .prompt_lookup_min = lookup_min};
	struct draft_remote_config rc = {.link = link, .pipeline = true};
	struct drafter *remote, *local = fx_drafter(method, g_t, K, 1, path, lookup_min);
	assert_int_equal(draft_remote_create(&rc, &dc, &remote, NULL), SPECD_OK);
	assert_int_equal(draft_method_of(remote), method);
	sample_joint(remote, sp, seed0, cells, pairs, &m);
	sample_joint(local, sp, seed0, cells_local, pairs_local, &ml);
	draft_destroy(remote);
	draft_destroy(local);
	struct draft_link_stats ls;
	draft_link_get_stats(link, &ls);
	draft_link_destroy(link);
	int df;
	double stat = fx_homogeneity(plain, cells, VOCAB * VOCAB, &df);
	if (getenv("FX_VERBOSE"))
		fprintf(stderr, "  %s: drafted %llu accepted %llu, chi2 %.2f df %d (crit %.3f)\n",
			draft_method_name(method), (unsigned long long)m.drafted,
			(unsigned long long)m.accepted, stat, df, fx_chi2_critical(df));
	assert_true(df >= 3 && df < FX_MAX_BINS);
	assert_true(stat < fx_chi2_critical(df));
	assert_true(m.accepted > 0 && m.accepted < m.drafted);
	assert_false(ls.dead);
	assert_true(ls.proposals >= N_SEEDS);
	/* the draft rank's stream is the engine's: seed for seed the same tokens */
	assert_memory_equal(pairs, pairs_local, sizeof(pairs));
	assert_int_equal(m.accepted, ml.accepted);
	assert_int_equal(m.drafted, ml.drafted);
}

static void check_params(const struct sampler_params *sp)
{
	static uint32_t plain[VOCAB * VOCAB], pairs[N_SEEDS];
	struct draft_metrics m;
	if (g_rank == 0)
		sample_joint(NULL, sp, 0, plain, pairs, &m);
	check_remote(DRAFT_METHOD_NGRAM, NULL, 1, sp, plain, 1 * N_SEEDS);
	check_remote(DRAFT_METHOD_DRAFT_MODEL, g_near, 0, sp, plain, 2 * N_SEEDS);
	check_remote(DRAFT_METHOD_DRAFT_MODEL, g_far, 0, sp, plain, 3 * N_SEEDS);
}

/* draft_remote_config.local_ngram: prompt lookup proposes in the leader, the draft rank
 * hears only commits until a method it holds is selected. */
static void test_draft_rank_sampling__prompt_lookup_in_the_leader_asks_the_rank_nothing(
	void **state)
{
	(void)state;
	struct draft_link *link = open_link(g_near);
	if (!link)
		return;
	static uint32_t cells[VOCAB * VOCAB], cells_local[VOCAB * VOCAB];
	static uint32_t pairs[N_SEEDS], pairs_local[N_SEEDS];
	struct draft_metrics m, ml;
	struct draft_link_stats ls;
	struct draft_config dc = {.method = DRAFT_METHOD_NGRAM, .k_max = K, .n_slots = 1,
				  .n_ctx = 16, .target = g_t, .prompt_lookup_min = 1,
				  .draft_path = g_near, .also = 1u << DRAFT_METHOD_DRAFT_MODEL};
	struct draft_remote_config rc = {.link = link, .local_ngram = true};
	struct drafter *remote, *local = fx_drafter(DRAFT_METHOD_NGRAM, g_t, K, 1, NULL, 1);
	assert_int_equal(draft_remote_create(&rc, &dc, &remote, NULL), SPECD_OK);
	sample_joint(remote, &k_plain, 7 * N_SEEDS, cells, pairs, &m);
	sample_joint(local, &k_plain, 7 * N_SEEDS, cells_local, pairs_local, &ml);
	draft_link_get_stats(link, &ls);
	assert_int_equal(ls.proposals, 0);
	assert_int_equal(ls.requests, 0);
	assert_memory_equal(pairs, pairs_local, sizeof(pairs));
	assert_int_equal(m.drafted, ml.drafted);
	assert_true(m.drafted > 0);
	/* the draft model on the rank took every reset and commit in: it proposes now */
	assert_int_equal(draft_select(remote, DRAFT_METHOD_DRAFT_MODEL, NULL), SPECD_OK);
	sample_joint(remote, &k_plain, 8 * N_SEEDS, cells, pairs, &m);
	draft_link_get_stats(link, &ls);
	assert_true(ls.proposals >= N_SEEDS);
	assert_true(m.accepted > 0);
	draft_destroy(remote);
	draft_destroy(local);
	draft_link_destroy(link);
}

static void test_draft_rank_sampling__temperature_keeps_the_distribution(void **state)
{
	(void)state;
	check_params(&k_plain);
}

static void test_draft_rank_sampling__top_k_top_p_keep_the_distribution(void **state)
{
	(void)state;
	check_params(&k_trunc);
}

int main(int argc, char **argv)
{
	if (!fx_mpi_init_pair(&argc, &argv))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_draft_rank_sampling__temperature_keeps_the_distribution),
		cmocka_unit_test(test_draft_rank_sampling__top_k_top_p_keep_the_distribution),
		cmocka_unit_test(
			test_draft_rank_sampling__prompt_lookup_in_the_leader_asks_the_rank_nothing),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	MPI_Finalize();
	return rc;
}
