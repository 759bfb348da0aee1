/* The draft rank drafts for all running jobs in one pass (under mpirun -np 2): rank 0
 * steps four jobs (distinct slots, different prompts, K and lengths) through the engine
 * with the remote drafter, rank 1 serves (drafters/remote.h). Every step sends one
 * propose request for all drafting jobs (draft_link_stats.batches); greedy output is
 * bitwise plain decoding's, with and without pipelining (which drafts ahead for every
 * sequence of a batch); sampled output, proposals and q rows are the in-process
 * drafter's for the same seeds, also for Medusa's and EAGLE's token trees drafted on
 * the draft rank from the hidden rows the leader ships (EAGLE's: every position's) and
 * for a drafter holding three methods switched every step; malformed batches get an
 * error and the rank serves on; a batch that misses its deadline turns every job into
 * plain decoding. */
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
#include "drafters/remote_int.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_mpi.h"
#include "test_support.h"

#define N_JOBS 4
#define N_SLOTS 4
#define CTX 128
#define K 4
#define VOCAB 300
#define MAX_OUT 40

static int g_rank;
static char g_dir[512], g_target[600], g_near[600], g_far[600], g_heads[600], g_eagle[600];
static struct model *g_t;
/* Rank 0: the link of the test running, while rank 1 serves on it. */
static struct draft_link *g_open;

/* Four jobs on slots out of order, each with its own prompt, K and length. */
static const struct job_spec {
	uint32_t slot, k, max_tokens, n_prompt;
	int32_t prompt[12];
	struct sampler_params sampled; /* the sampled runs' (temperature 0: greedy) */
} k_jobs[N_JOBS] = {
	{2, 4, 30, 9, {1, 5, 6, 7, 5, 6, 7, 5, 6},
	 {.temperature = 0.8f, .top_p = 1.0f, .seed = 101}},
	{0, 2, 23, 4, {1, 40, 41, 40},
	 {.temperature = 0.6f, .top_k = 8, .top_p = 0.9f, .seed = 102}},
	{3, 3, 35, 12, {1, 9, 10, 11, 12, 9, 10, 11, 12, 9, 10, 11},
	 {.temperature = 0.0f, .top_p = 1.0f}},
	{1, 1, 27, 6, {1, 77, 78, 79, 77, 78},
	 {.temperature = 1.0f, .top_p = 0.95f, .seed = 104}},
};

/* A drafter: its method, draft model and heads files, lookup length, the methods it
 * holds beside (switched every step, in a fixed cycle, when any) and EAGLE's settings. */
struct method_case {
	enum draft_method method;
	const char *draft, *heads;
	uint32_t lookup_min;
	uint32_t also;
	struct draft_eagle_config eagle;
};

struct run {
	int32_t out[N_JOBS][MAX_OUT];
	uint32_t n[N_JOBS];
	uint64_t drafted[N_JOBS], accepted[N_JOBS];
	uint64_t drafted_all, accepted_all;
};

static struct sampler_params job_sampling(uint32_t i, bool sampled)
{
	struct sampler_params greedy = {.temperature = 0.0f, .top_p = 1.0f};
	return sampled ? k_jobs[i].sampled : greedy;
}

/* Before step `step`, a drafter holding several methods proposes with the next of them
 * in turn (the online selector's switch, every step). */
static void cycle_method(struct drafter *d, uint32_t step)
{
	enum draft_method held[DRAFT_METHOD_COUNT];
	uint32_t n = 0, mask = draft_methods(d);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
		if (mask & 1u << m)
			held[n++] = (enum draft_method)m;
	if (n > 1)
		assert_int_equal(draft_select(d, held[step % n], NULL), SPECD_OK);
}

/* Rank 0: the four jobs stepped together to their ends with drafter d (NULL: plain).
 * With link (d is then its remote drafter): every step sends exactly one propose
 * request, a batch when more than one job drafts. */
static void run_jobs(struct drafter *d, bool sampled, struct draft_link *link, struct run *res)
{
	uint32_t step = 0;

	struct draft_engine_config ec = {.target = g_t, .drafter = d, .spec_tokens = K};
	struct draft_engine *e;
	struct draft_job *jobs[N_JOBS];
	struct specd_error err;

	memset(res, 0, sizeof(*res));
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	for (uint32_t i = 0; i < N_JOBS; i++) {
		const struct job_spec *js = &k_jobs[i];
		struct draft_job_params jp = {.sampling = job_sampling(i, sampled),
					      .max_tokens = js->max_tokens, .eos = -1,
					      .spec_tokens = d ? js->k : 0};
		assert_int_equal(draft_job_create(e, js->slot, &jobs[i], NULL), SPECD_OK);
		assert_int_equal(draft_job_start(jobs[i], js->prompt, js->n_prompt, &jp, NULL),
				 SPECD_OK);
	}
	for (;;) {
		uint32_t drafting = 0, running = 0;
		for (uint32_t i = 0; i < N_JOBS; i++) {
			uint32_t n_out;
			draft_job_output(jobs[i], &n_out);
			if (draft_job_stop(jobs[i]) != DRAFT_STOP_NONE)
				continue;
			running++;
			/* the engine drafts for a job unless one token is all it has left */
			drafting += k_jobs[i].max_tokens - n_out >= 2;
		}
		if (!running)
			break;
		struct draft_link_stats a, b;
		if (d)
			cycle_method(d, step++);
		if (link)
			draft_link_get_stats(link, &a);
		if (draft_engine_step(e, jobs, N_JOBS, &err) != SPECD_OK)
			fail_msg("step: %s", err.msg);
		if (!link)
			continue;
		draft_link_get_stats(link, &b);
		assert_false(b.dead);
		assert_int_equal(b.requests - a.requests, drafting > 0);
		assert_int_equal(b.batches - a.batches, drafting > 1);
		assert_int_equal(b.proposals - a.proposals, drafting);
	}
	for (uint32_t i = 0; i < N_JOBS; i++) {
		const int32_t *out = draft_job_output(jobs[i], &res->n[i]);
		assert_int_equal(res->n[i], k_jobs[i].max_tokens);
		memcpy(res->out[i], out, res->n[i] * sizeof(int32_t));
		const struct draft_metrics *m = draft_job_metrics(jobs[i]);
		res->drafted[i] = m->drafted;
		res->accepted[i] = m->accepted;
		res->drafted_all += m->drafted;
		res->accepted_all += m->accepted;
		draft_job_destroy(jobs[i]);
	}
	draft_engine_destroy(e);
}

static void assert_same_output(const struct run *a, const struct run *b)
{
	for (uint32_t i = 0; i < N_JOBS; i++) {
		assert_int_equal(a->n[i], b->n[i]);
		assert_memory_equal(a->out[i], b->out[i], a->n[i] * sizeof(int32_t));
	}
}

static struct draft_config case_config(const struct method_case *mc)
{
	return (struct draft_config){.method = mc->method, .k_max = K, .n_slots = N_SLOTS,
				     .n_ctx = CTX, .target = g_t,
				     .prompt_lookup_min = mc->lookup_min, .draft_path = mc->draft,
				     .heads_path = mc->heads, .also = mc->also, .eagle = mc->eagle};
}

/* Both ranks: a fresh link. Rank 1 serves on it until rank 0 destroys it and returns
 * NULL; rank 0 gets the remote drafter of case mc and the link. */
static struct drafter *remote_open(const struct method_case *mc, bool pipeline,
				   struct draft_link **link)
{
	struct draft_link_config lc = {.leader = 0, .draft = 1};
	struct specd_error err;
	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, link, NULL), SPECD_OK);
	if (g_rank == 1) {
		struct draft_server_config sc = {.target = g_t, .draft_path = mc->draft,
						 .heads_path = mc->heads, .eagle = mc->eagle};
		if (draft_serve(*link, &sc, &err) != SPECD_OK)
			fail_msg("draft_serve: %s", err.msg);
		draft_link_destroy(*link);
		return NULL;
	}
	struct draft_config dc = case_config(mc);
	dc.draft_path = dc.heads_path = dc.eagle.path = NULL; /* the draft rank's files */
	/* a drafter of several methods keeps the idle ones warm, as on a machine of its own */
	struct draft_remote_config rc = {.link = *link, .pipeline = pipeline,
					 .warm = mc->also != 0};
	struct drafter *d;
	g_open = *link;
	if (draft_remote_create(&rc, &dc, &d, &err) != SPECD_OK)
		fail_msg("draft_remote_create: %s", err.msg);
	return d;
}

static void remote_close(struct drafter *d, struct draft_link *link)
{
	draft_destroy(d);
	draft_link_destroy(link);
	g_open = NULL;
}

/* A test that failed on rank 0 while rank 1 serves would leave rank 1 waiting for
 * ever. Its teardown stops rank 1's server; the next setup (or the group's teardown),
 * once cmocka has printed why the test failed, ends the whole job: the ranks are out
 * of step. */
static bool g_failed;

static void abort_if_failed(void)
{
	if (g_rank != 0 || !g_failed)
		return;
	fprintf(stderr, "a test failed while the draft rank served: ending the job\n");
	fflush(stdout);
	fflush(stderr);
	MPI_Abort(MPI_COMM_WORLD, 1);
}

static int setup_test(void **state)
{
	(void)state;
	abort_if_failed();
	return 0;
}

static int teardown_test(void **state)
{
	(void)state;
	if (g_rank == 0 && g_open) {
		draft_link_destroy(g_open);
		g_open = NULL;
		g_failed = true;
	}
	return 0;
}

static int setup(void **state)
{
	(void)state;
	MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
	if (!ts_mpi_shared_dir(g_dir, sizeof(g_dir)))
		return -1;
	char *const paths[] = {g_target, g_near, g_far};
	const char *const names[] = {"target", "near", "far"};
	for (int i = 0; i < 3; i++)
		snprintf(paths[i], sizeof(g_target), "%s/%s.gguf", g_dir, names[i]);
	snprintf(g_heads, sizeof(g_heads), "%s/heads.safetensors", g_dir);
	snprintf(g_eagle, sizeof(g_eagle), "%s/eagle", g_dir);
	if (g_rank == 0) {
		/* near: the target quantised, so most but not all proposals are accepted;
		 * far: another model on the same vocabulary */
		const char *target[] = {"--dim", "64", "--layers", "2", "--heads", "4",
					"--kv-heads", "2", "--ffn", "128", "--vocab", "300", "--ctx",
					"128", "--seed", "31", NULL};
		const char *near[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads",
				      "2", "--ffn", "128", "--vocab", "300", "--ctx", "128",
				      "--seed", "31", "--type", "q4_0", NULL};
		fx_gen_model(g_target, target);
		fx_gen_model(g_near, near);
		const char *far[] = {"--vocab-from", g_target, "--dim", "32", "--layers", "1",
				     "--heads", "2", "--kv-heads", "1", "--ffn", "64", "--ctx",
				     "128", "--seed", "32", NULL};
		fx_gen_model(g_far, far);
		/* Medusa heads near the target's own LM head, so they guess right now and then */
		fx_gen_heads(g_heads, (const char *[]){"-m", g_target, "--shared", "--scale", "0.1",
						       NULL});
		/* an EAGLE layer passing the target's state on: right now and then too */
		fx_gen_eagle(g_eagle, (const char *[]){"-m", g_target, "--scale", "0.1", NULL},
			     true);
	}
	MPI_Barrier(MPI_COMM_WORLD);
	g_t = fx_load(g_target, N_SLOTS, CTX);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	abort_if_failed();
	model_destroy(g_t);
	ts_mpi_remove_shared_dir(g_dir);
	return 0;
}

static const struct method_case *method_cases(size_t *n)
{
	static struct method_case cases[7];
	cases[0] = (struct method_case){DRAFT_METHOD_NGRAM, .lookup_min = 1};
	cases[1] = (struct method_case){DRAFT_METHOD_DRAFT_MODEL, .draft = g_near};
	cases[2] = (struct method_case){DRAFT_METHOD_DRAFT_MODEL, .draft = g_far};
	/* token trees drafted from the hidden rows the leader ships */
	cases[3] = (struct method_case){DRAFT_METHOD_MEDUSA, .heads = g_heads};
	/* all three held, the method switched every step */
	cases[4] = (struct method_case){DRAFT_METHOD_NGRAM, .draft = g_near, .heads = g_heads,
					.lookup_min = 1,
					.also = 1u << DRAFT_METHOD_DRAFT_MODEL |
						1u << DRAFT_METHOD_MEDUSA};
	/* EAGLE's trees from every position's hidden row, dynamic and static */
	cases[5] = (struct method_case){DRAFT_METHOD_EAGLE,
					.eagle = {.path = g_eagle, .width = 3, .depth = 4}};
	cases[6] = (struct method_case){DRAFT_METHOD_EAGLE,
					.eagle = {.path = g_eagle, .static_tree = true}};
	*n = 7;
	return cases;
}

/* Rank 0: the jobs with the in-process drafter of case mc. */
static void run_local(const struct method_case *mc, bool sampled, struct run *res)
{
	struct draft_config dc = case_config(mc);
	struct drafter *d;
	struct specd_error err;
	if (draft_create(&dc, &d, &err) != SPECD_OK)
		fail_msg("draft_create: %s", err.msg);
	run_jobs(d, sampled, NULL, res);
	draft_destroy(d);
}

/* Both ranks: the jobs with case mc's drafter on the draft rank; false on rank 1,
 * which served them. */
static bool run_remote(const struct method_case *mc, bool sampled, bool pipeline,
		       struct run *res)
{
	struct draft_link *link;
	struct drafter *d = remote_open(mc, pipeline, &link);
	if (!d)
		return false;
	run_jobs(d, sampled, link, res);
	struct draft_link_stats ls;
	draft_link_get_stats(link, &ls);
	remote_close(d, link);
	assert_true(ls.batches > 0);
	assert_false(ls.dead);
	return true;
}

/* Job by job, what the in-process drafter drafted and got accepted. */
static void assert_same_drafting(const struct run *a, const struct run *b)
{
	assert_memory_equal(a->drafted, b->drafted, sizeof(a->drafted));
	assert_memory_equal(a->accepted, b->accepted, sizeof(a->accepted));
}

static void test_draft_rank_batch__greedy_equals_plain_decoding(void **state)
{
	(void)state;
	static struct run plain, local, remote;
	size_t n_cases;
	const struct method_case *mc = method_cases(&n_cases);

	if (g_rank == 0)
		run_jobs(NULL, false, NULL, &plain);
	for (size_t c = 0; c < n_cases; c++) {
		if (g_rank == 0) {
			run_local(&mc[c], false, &local);
			assert_same_output(&plain, &local);
		}
		for (int pipe = 0; pipe <= 1; pipe++) {
			if (!run_remote(&mc[c], false, pipe, &remote))
				continue;
			assert_same_output(&plain, &remote);
			assert_same_drafting(&local, &remote);
			/* ngram, the near draft and the heads: partial acceptance */
			if (mc[c].draft != g_far)
				assert_true(remote.accepted_all > 0 &&
					    remote.accepted_all < remote.drafted_all);
		}
	}
}

static void test_draft_rank_batch__sampling_equals_the_in_process_drafter(void **state)
{
	(void)state;
	static struct run local, remote, plain;
	size_t n_cases;
	const struct method_case *mc = method_cases(&n_cases);

	if (g_rank == 0)
		run_jobs(NULL, true, NULL, &plain);
	for (size_t c = 0; c < n_cases; c++) {
		if (g_rank == 0)
			run_local(&mc[c], true, &local);
		/* pipelining on: job 2 is greedy and drafts ahead inside the sampled batch */
		if (!run_remote(&mc[c], true, true, &remote))
			continue;
		assert_same_output(&local, &remote);
		assert_same_drafting(&local, &remote);
		assert_true(remote.accepted_all > 0 && remote.accepted_all < remote.drafted_all);
		/* the greedy job's output is plain decoding's whatever its neighbours do */
		assert_memory_equal(remote.out[2], plain.out[2], plain.n[2] * sizeof(int32_t));
	}
}

/* Three sequences at once, two sampling: the tokens and q rows that come back are
 * bitwise those of draft_propose_batch on the same drafter in this process, over two
 * rounds with a partial acceptance between them. */
static void test_draft_rank_batch__proposals_and_q_rows_equal_draft_propose_batch(void **state)
{
	(void)state;
	struct draft_link *link;
	struct drafter *remote = remote_open(
		&(struct method_case){DRAFT_METHOD_DRAFT_MODEL, .draft = g_near}, true, &link);
	if (!remote)
		return;
	struct drafter *local = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, g_t, K, N_SLOTS, g_near, 0);
	enum { N = 3 };
	const uint32_t job[N] = {0, 1, 2}; /* k_jobs 0 and 1 sample, 2 is greedy */
	static int32_t hist[N][CTX], tok[2][N][K];
	static float q[2][N][K * VOCAB];
	struct sampler *s_remote[N], *s_local[N];
	struct draft_seq seq_r[N], seq_l[N];
	struct draft_proposal p[2][N], *out[2][N];
	uint32_t k[N];

	for (uint32_t i = 0; i < N; i++) {
		const struct job_spec *js = &k_jobs[job[i]];
		assert_int_equal(sampler_create(VOCAB, &js->sampled, &s_remote[i], NULL), SPECD_OK);
		assert_int_equal(sampler_create(VOCAB, &js->sampled, &s_local[i], NULL), SPECD_OK);
		memcpy(hist[i], js->prompt, js->n_prompt * sizeof(int32_t));
		seq_r[i] = (struct draft_seq){.slot = js->slot, .tokens = hist[i],
					      .n_tokens = js->n_prompt, .sampler = s_remote[i]};
		seq_l[i] = seq_r[i];
		seq_l[i].sampler = s_local[i];
		k[i] = js->k;
		for (int w = 0; w < 2; w++) {
			p[w][i] = (struct draft_proposal){.tokens = tok[w][i], .q = q[w][i]};
			out[w][i] = &p[w][i];
		}
		assert_int_equal(draft_reset(remote, &seq_r[i], NULL), SPECD_OK);
		assert_int_equal(draft_reset(local, &seq_l[i], NULL), SPECD_OK);
	}
	for (int round = 0; round < 2; round++) {
		struct draft_link_stats a, b;
		draft_link_get_stats(link, &a);
		assert_int_equal(draft_propose_batch(remote, seq_r, k, out[0], N, NULL), SPECD_OK);
		draft_link_get_stats(link, &b);
		assert_int_equal(b.batches - a.batches, 1);
		assert_int_equal(b.requests - a.requests, 1);
		assert_int_equal(draft_propose_batch(local, seq_l, k, out[1], N, NULL), SPECD_OK);
		for (uint32_t i = 0; i < N; i++) {
			assert_int_equal(p[0][i].n, p[1][i].n);
			assert_true(p[0][i].n > 0 && p[0][i].n <= k[i]);
			assert_int_equal(p[0][i].q_onehot, p[1][i].q_onehot);
			assert_int_equal(p[0][i].q_onehot, k_jobs[job[i]].sampled.temperature == 0.0f);
			assert_memory_equal(tok[0][i], tok[1][i], p[0][i].n * sizeof(int32_t));
			if (!p[0][i].q_onehot)
				assert_memory_equal(q[0][i], q[1][i],
						    (size_t)p[0][i].n * VOCAB * sizeof(float));
		}
		/* the verdict: the first proposed token kept (none for sequence 1), then a
		 * correction of the test's choosing */
		for (uint32_t i = 0; i < N; i++) {
			uint32_t acc = i == 1 ? 0 : 1, n = seq_r[i].n_tokens;
			int32_t next = (tok[0][i][acc < p[0][i].n ? acc : 0] + 7) % VOCAB;
			memcpy(hist[i] + n, tok[0][i], acc * sizeof(int32_t));
			hist[i][n + acc] = next;
			seq_r[i].n_tokens = seq_l[i].n_tokens = n + acc + 1;
			assert_int_equal(draft_commit(remote, &seq_r[i], acc, next, NULL), SPECD_OK);
			assert_int_equal(draft_commit(local, &seq_l[i], acc, next, NULL), SPECD_OK);
		}
	}
	for (uint32_t i = 0; i < N; i++) {
		sampler_destroy(s_remote[i]);
		sampler_destroy(s_local[i]);
	}
	draft_destroy(local);
	struct draft_link_stats ls;
	draft_link_get_stats(link, &ls);
	assert_false(ls.dead);
	remote_close(remote, link);
}

/* The target as its own draft accepts everything, so every commit matches the guess
 * the draft rank drafted ahead on for each sequence of the batch: all proposals but
 * each job's first come from drafting ahead. */
static void test_draft_rank_batch__pipelining_drafts_ahead_for_every_sequence(void **state)
{
	(void)state;
	static struct run plain, remote;
	struct draft_link *link;

	if (g_rank == 0)
		run_jobs(NULL, false, NULL, &plain);
	struct drafter *d = remote_open(
		&(struct method_case){DRAFT_METHOD_DRAFT_MODEL, .draft = g_target}, true, &link);
	if (!d)
		return;
	run_jobs(d, false, link, &remote);
	struct draft_link_stats ls;
	draft_link_get_stats(link, &ls);
	remote_close(d, link);
	assert_same_output(&plain, &remote);
	assert_int_equal(remote.accepted_all, remote.drafted_all);
	assert_true(ls.batches > 0);
	assert_true(ls.pipelined > 0);
	assert_true(ls.pipelined + N_JOBS >= ls.proposals);
}

/* Rank 0: a raw request (req->n_hidden rows of req->dim floats, then a body of
 * req->n_new words) and the status of its answer, the message in msg. */
static enum specd_status raw_request(struct draft_link *l, struct rd_req *req, const int32_t *body,
				     char *msg, size_t cap)
{
	static unsigned char buf[1 << 16];
	static float hidden[4096];
	if (req->n_new && req->n_new <= RD_INLINE)
		memcpy(req->tokens, body, req->n_new * sizeof(int32_t));
	assert_int_equal(par_comm_bcast(l->comm, req, sizeof(*req), RD_LEADER, NULL), SPECD_OK);
	assert_true((uint64_t)req->n_hidden * req->dim <= 4096);
	if (req->n_hidden && req->dim)
		assert_int_equal(par_comm_bcast(l->comm, hidden, (size_t)req->n_hidden * req->dim *
						sizeof(float), RD_LEADER, NULL), SPECD_OK);
	if (req->n_new > RD_INLINE)
		assert_int_equal(par_comm_bcast(l->comm, (void *)(uintptr_t)body,
						(size_t)req->n_new * sizeof(int32_t), RD_LEADER, NULL),
				 SPECD_OK);
	assert_int_equal(par_comm_recv(l->comm, buf, sizeof(buf), RD_DRAFT, RD_TAG_REPLY, NULL),
			 SPECD_OK);
	struct rd_rep rep;
	memcpy(&rep, buf, sizeof(rep));
	rep.msg[RD_MSG_BYTES - 1] = '\0';
	snprintf(msg, cap, "%s", rep.msg);
	return (enum specd_status)rep.status;
}

/* A batch request of n entries (slot, n_total, n_new 0, k each). */
static enum specd_status raw_batch(struct draft_link *l, uint32_t n, const uint32_t *slot,
				   const uint32_t *n_total, const uint32_t *k, uint32_t extra_words,
				   char *msg, size_t cap)
{
	static int32_t body[4096];
	struct rd_req req = {.op = RD_PROPOSE_BATCH, .n_seqs = n, .method = DRAFT_METHOD_NGRAM};
	struct rd_batch_seq *ent = (struct rd_batch_seq *)(void *)body;
	for (uint32_t i = 0; i < n; i++) {
		ent[i] = (struct rd_batch_seq){.slot = slot[i], .n_total = n_total[i], .k = k[i]};
		req.k += k[i];
	}
	req.n_new = n * (uint32_t)RD_BATCH_SEQ_WORDS + extra_words;
	assert_true(req.n_new <= 4096);
	return raw_request(l, &req, body, msg, cap);
}

static void test_draft_rank_batch__malformed_batches_are_refused_and_the_rank_serves_on(void **state)
{
	(void)state;
	struct draft_link_config lc = {.leader = 0, .draft = 1};
	struct draft_link *l;
	char msg[RD_MSG_BYTES];

	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, &l, NULL), SPECD_OK);
	if (g_rank == 1) {
		struct draft_server_config sc = {.target = g_t};
		assert_int_equal(draft_serve(l, &sc, NULL), SPECD_OK);
		draft_link_destroy(l);
		return;
	}
	g_open = l;
	/* before any drafter, with a body long enough to come as its own message */
	static int32_t zeros[4096];
	struct rd_req req = {.op = RD_PROPOSE_BATCH, .n_seqs = 2, .n_new = 100};
	assert_int_equal(raw_request(l, &req, zeros, msg, sizeof(msg)), SPECD_PROTO);
	assert_non_null(strstr(msg, "before any drafter"));

	struct draft_config dc = {.method = DRAFT_METHOD_NGRAM, .k_max = K, .n_slots = N_SLOTS,
				  .n_ctx = CTX, .target = g_t, .prompt_lookup_min = 1};
	struct draft_remote_config rc = {.link = l};
	struct drafter *d;
	assert_int_equal(draft_remote_create(&rc, &dc, &d, NULL), SPECD_OK);
	struct draft_seq seq[2];
	for (uint32_t i = 0; i < 2; i++) {
		seq[i] = (struct draft_seq){.slot = i, .tokens = k_jobs[0].prompt,
					    .n_tokens = k_jobs[0].n_prompt - i};
		assert_int_equal(draft_reset(d, &seq[i], NULL), SPECD_OK);
	}
	uint32_t n9 = k_jobs[0].n_prompt, n8 = n9 - 1;
	struct {
		uint32_t n, slot[5], n_total[5], k[5], extra;
		enum specd_status st;
		const char *says;
	} bad[] = {
		{0, {0}, {0}, {0}, 0, SPECD_PROTO, "a batch of 0 sequences"},
		{5, {0, 1, 2, 3, 0}, {n9, n8, 1, 1, n9}, {1, 1, 1, 1, 1}, 0, SPECD_PROTO,
		 "there are 4 slots"},
		{2, {0, 7}, {n9, 5}, {2, 2}, 0, SPECD_INVAL, "slot 7 of 4"},
		{2, {1, 1}, {n8, n8}, {2, 2}, 0, SPECD_PROTO, "slot 1 twice"},
		{2, {0, 1}, {n9, n8}, {2, K + 5}, 0, SPECD_INVAL, "K 9 of 4"},
		{2, {0, 1}, {n9, n8}, {2, 2}, 3, SPECD_PROTO, "the request says"},
		{2, {0, 1}, {n9, n8}, {2, 2}, 3000, SPECD_PROTO, "longer than any"},
		{2, {0, 1}, {n9, n9 + 3}, {2, 2}, 0, SPECD_PROTO, "out of step"},
		{2, {0, 3}, {n9, 1}, {2, 2}, 0, SPECD_PROTO, "slot 3: no sequence"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum specd_status st = raw_batch(l, bad[i].n, bad[i].slot, bad[i].n_total,
						 bad[i].k, bad[i].extra, msg, sizeof(msg));
		if (st != bad[i].st || !strstr(msg, bad[i].says))
			fail_msg("case %zu: %s (%s), wanted %s (%s)", i, specd_status_str(st), msg,
				 specd_status_str(bad[i].st), bad[i].says);
	}
	/* a single propose with K out of range, and an unknown request (not answered) */
	struct rd_req one = {.op = RD_PROPOSE, .slot = 0, .n_total = n9, .k = K + 5};
	assert_int_equal(raw_request(l, &one, NULL, msg, sizeof(msg)), SPECD_PROTO);
	assert_non_null(strstr(msg, "K 9 of 4"));
	/* hidden rows to a drafter that takes none: drained, refused */
	struct rd_req hid = {.op = RD_PROPOSE, .slot = 0, .n_total = n9, .k = 2, .n_hidden = 1,
			     .dim = 64, .method = DRAFT_METHOD_NGRAM};
	assert_int_equal(raw_request(l, &hid, NULL, msg, sizeof(msg)), SPECD_PROTO);
	assert_non_null(strstr(msg, "takes none"));
	static int32_t two[2 * RD_BATCH_SEQ_WORDS];
	struct rd_batch_seq *ent = (struct rd_batch_seq *)(void *)two;
	ent[0] = (struct rd_batch_seq){.slot = 0, .n_total = n9, .k = 2, .hidden = 1};
	ent[1] = (struct rd_batch_seq){.slot = 1, .n_total = n8, .k = 2, .hidden = 1};
	struct rd_req hb = {.op = RD_PROPOSE_BATCH, .n_seqs = 2, .k = 4, .n_hidden = 2,
			    .dim = 64, .n_new = 2 * RD_BATCH_SEQ_WORDS,
			    .method = DRAFT_METHOD_NGRAM};
	assert_int_equal(raw_request(l, &hb, two, msg, sizeof(msg)), SPECD_PROTO);
	assert_non_null(strstr(msg, "takes none"));
	/* a method the drafter does not hold */
	struct rd_req other = {.op = RD_PROPOSE, .slot = 0, .n_total = n9, .k = 2,
			       .method = DRAFT_METHOD_DRAFT_MODEL};
	assert_int_equal(raw_request(l, &other, NULL, msg, sizeof(msg)), SPECD_INVAL);
	assert_non_null(strstr(msg, "not held"));
	struct rd_req unknown = {.op = 99};
	assert_int_equal(par_comm_bcast(l->comm, &unknown, sizeof(unknown), RD_LEADER, NULL),
			 SPECD_OK);

	/* and the rank still drafts: a real batch through the remote drafter */
	int32_t t[2][K];
	struct draft_proposal p[2] = {{.tokens = t[0]}, {.tokens = t[1]}};
	struct draft_proposal *out[2] = {&p[0], &p[1]};
	uint32_t k[2] = {K, K};
	struct specd_error err;
	if (draft_propose_batch(d, seq, k, out, 2, &err) != SPECD_OK)
		fail_msg("a good batch after bad ones: %s", err.msg);
	/* the prompt repeats "5 6 7": prompt lookup continues it */
	assert_true(p[0].n > 0);
	assert_int_equal(t[0][0], 7);
	struct draft_link_stats ls;
	draft_link_get_stats(l, &ls);
	assert_false(ls.dead);
	assert_int_equal(ls.batches, 1);
	remote_close(d, l);
}

/* Rank 1 of the stall test: answers hello and single proposes (with nothing), takes
 * resets and commits, and never answers a batch, as a rank stopped mid-batch would. */
static void serve_but_stall_batches(struct draft_link *l)
{
	struct rd_req req;
	struct rd_rep rep;
	for (;;) {
		assert_int_equal(par_comm_bcast_idle(l->comm, &req, sizeof(req), RD_LEADER, NULL),
				 SPECD_OK);
		if (req.n_new > RD_INLINE) {
			int32_t *body = calloc(req.n_new, sizeof(int32_t));
			assert_non_null(body);
			assert_int_equal(par_comm_bcast(l->comm, body, (size_t)req.n_new * 4,
							RD_LEADER, NULL), SPECD_OK);
			free(body);
		}
		if (req.op == RD_STOP)
			return;
		if (req.op != RD_HELLO && req.op != RD_PROPOSE)
			continue;
		memset(&rep, 0, sizeof(rep));
		if (req.op == RD_HELLO)
			rep = (struct rd_rep){.version = RD_VERSION,
					      .req_bytes = sizeof(struct rd_req),
					      .rep_bytes = sizeof(struct rd_rep)};
		assert_int_equal(par_comm_send(l->comm, &rep, sizeof(rep), RD_LEADER, RD_TAG_REPLY,
					       NULL), SPECD_OK);
	}
}

static void test_draft_rank_batch__stalled_batch_falls_back_to_plain_for_every_job(void **state)
{
	(void)state;
	static struct run plain, remote;
	struct draft_link_config lc = {.leader = 0, .draft = 1, .deadline_s = 0.5};
	struct draft_link *l;

	if (g_rank == 0)
		run_jobs(NULL, false, NULL, &plain);
	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, &l, NULL), SPECD_OK);
	if (g_rank == 1) {
		serve_but_stall_batches(l);
		draft_link_destroy(l);
		return;
	}
	g_open = l;
	struct draft_config dc = {.method = DRAFT_METHOD_NGRAM, .k_max = K, .n_slots = N_SLOTS,
				  .n_ctx = CTX, .target = g_t, .prompt_lookup_min = 1};
	struct draft_remote_config rc = {.link = l};
	struct drafter *d;
	assert_int_equal(draft_remote_create(&rc, &dc, &d, NULL), SPECD_OK);
	struct draft_engine_config ec = {.target = g_t, .drafter = d, .spec_tokens = K};
	struct draft_engine *e;
	struct draft_job *jobs[N_JOBS];
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	for (uint32_t i = 0; i < N_JOBS; i++) {
		const struct job_spec *js = &k_jobs[i];
		struct draft_job_params jp = {.sampling = job_sampling(i, false),
					      .max_tokens = js->max_tokens, .eos = -1,
					      .spec_tokens = js->k};
		assert_int_equal(draft_job_create(e, js->slot, &jobs[i], NULL), SPECD_OK);
		assert_int_equal(draft_job_start(jobs[i], js->prompt, js->n_prompt, &jp, NULL),
				 SPECD_OK);
	}
	ts_log_capture_begin();
	bool running = true;
	while (running) {
		assert_int_equal(draft_engine_step(e, jobs, N_JOBS, NULL), SPECD_OK);
		running = false;
		for (uint32_t i = 0; i < N_JOBS; i++)
			running |= draft_job_stop(jobs[i]) == DRAFT_STOP_NONE;
	}
	const char *log = ts_log_captured();
	const char *said = "draft rank 1 stalled: falling back to plain decoding";
	const char *hit = strstr(log, said);
	assert_non_null(hit);
	assert_null(strstr(hit + strlen(said), "falling back"));
	ts_log_capture_end();
	struct draft_link_stats ls;
	draft_link_get_stats(l, &ls);
	assert_true(ls.dead);
	assert_int_equal(ls.batches, 1);
	assert_int_equal(ls.proposals, 0);
	for (uint32_t i = 0; i < N_JOBS; i++) {
		const struct draft_metrics *m = draft_job_metrics(jobs[i]);
		const int32_t *out = draft_job_output(jobs[i], &remote.n[i]);
		assert_int_equal(m->drafted, 0);
		assert_int_equal(remote.n[i], plain.n[i]);
		assert_memory_equal(out, plain.out[i], plain.n[i] * sizeof(int32_t));
		draft_job_destroy(jobs[i]);
	}
	draft_engine_destroy(e);
	remote_close(d, l);
}

int main(int argc, char **argv)
{
	if (!fx_mpi_init_pair(&argc, &argv))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__greedy_equals_plain_decoding,
						setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__sampling_equals_the_in_process_drafter,
						setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__proposals_and_q_rows_equal_draft_propose_batch,
						setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__pipelining_drafts_ahead_for_every_sequence,
						setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__malformed_batches_are_refused_and_the_rank_serves_on,
						setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_draft_rank_batch__stalled_batch_falls_back_to_plain_for_every_job,
						setup_test, teardown_test),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	MPI_Finalize();
	return rc;
}
