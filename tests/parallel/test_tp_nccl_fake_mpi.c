/* The tensor-parallel target with its all-reduces over NCCL (par_tp_config.nccl), on
 * the fake NCCL of fake_nccl/ over host memory, against the same shards over MPI, under
 * mpirun -np T: parallel/tp.c opens the NCCL communicator beside the MPI one, the
 * forward hands it its partial sums in place (model_comm.device_memory), and every
 * logit of a prompt and of greedy decoding is bitwise what the MPI path gives (both
 * add the shards in rank order), with every all-reduce of the forward on NCCL; and a
 * shard whose NCCL fails mid-forward stops every rank with a clear error. */
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_nccl.h"
#include "model/kv.h"
#include "model/llama.h"
#include "parallel/tp.h"
#include "test_mpi.h"
#include "test_support.h"

#define N_PROMPT 6
#define N_DECODE 12

static int g_rank, g_size;
static char g_dir[512];

static const char *const g_args[][32] = {
	{"--dim", "576", "--layers", "2", "--heads", "9", "--kv-heads", "3", "--ffn", "224",
	 "--vocab", "400", "--ctx", "128", "--type", "q8_0", "--seed", "21", NULL},
	{"--arch", "qwen2", "--dim", "192", "--layers", "3", "--heads", "12", "--kv-heads", "2",
	 "--ffn", "288", "--vocab", "333", "--ctx", "128", "--type", "q4_0", "--seed", "22",
	 NULL},
};
#define N_MODELS (sizeof(g_args) / sizeof(g_args[0]))
static char g_paths[N_MODELS][600];

static int setup(void **state)
{
	(void)state;
	if (!ts_mpi_shared_dir(g_dir, sizeof(g_dir)))
		return -1;
	for (size_t i = 0; i < N_MODELS; i++) {
		snprintf(g_paths[i], sizeof(g_paths[i]), "%s/m%zu.gguf", g_dir, i);
		if (!ts_mpi_gen_model(g_paths[i], g_args[i]))
			return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ts_mpi_remove_shared_dir(g_dir);
	return 0;
}

static struct par_tp_model *load(const char *path, bool nccl, double deadline_s)
{
	struct model_config mc = {.n_slots = 1, .n_ctx = 64, .max_batch = 8};
	struct par_tp_config tc = {.deadline_s = deadline_s, .nccl = nccl};
	struct par_tp_model *tp = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	ts_mpi_check(par_tp_model_load(MPI_COMM_WORLD, path, &mc, &tc, &tp, &err), &err, "load");
	return tp;
}

/* Leader: the prompt, then greedy decoding, every row's logits into out
 * ((N_PROMPT + N_DECODE) rows of V). Followers serve until the stop. */
static void drive(struct par_tp_model *tp, float *out, uint32_t V)
{
	struct specd_error err;
	if (g_rank != 0) {
		ts_mpi_check(par_tp_follow(tp, &err), &err, "par_tp_follow");
		return;
	}
	uint32_t tokens[N_PROMPT] = {1, 300 % V, 17, 99, 260 % V, 5};
	uint32_t slots[N_PROMPT] = {0}, pos[N_PROMPT], idx[N_PROMPT];
	for (uint32_t i = 0; i < N_PROMPT; i++)
		pos[i] = idx[i] = i;
	struct model_batch b = {.n_tokens = N_PROMPT, .tokens = tokens, .slots = slots,
				.pos = pos, .n_out = N_PROMPT, .out_idx = idx, .logits = out};
	ts_mpi_check(par_tp_step(tp, &b, PAR_TP_WANT_LOGITS, NULL, &err), &err, "prompt");
	for (uint32_t s = 0; s < N_DECODE; s++) {
		const float *last = out + (size_t)(N_PROMPT - 1 + s) * V;
		uint32_t tok = 0;
		for (uint32_t v = 1; v < V; v++)
			tok = last[v] > last[tok] ? v : tok;
		uint32_t p = N_PROMPT + s, zero = 0;
		struct model_batch d = {.n_tokens = 1, .tokens = &tok, .slots = &zero, .pos = &p,
					.n_out = 1, .out_idx = &zero,
					.logits = out + (size_t)(N_PROMPT + s) * V};
		ts_mpi_check(par_tp_step(tp, &d, PAR_TP_WANT_LOGITS, NULL, &err), &err, "decode");
	}
	ts_mpi_check(par_tp_stop(tp, &err), &err, "par_tp_stop");
}

static void test_tp_nccl__bitwise_the_mpi_all_reduces(void **state)
{
	(void)state;
	for (size_t m = 0; m < N_MODELS; m++) {
		struct par_tp_model *over_nccl = load(g_paths[m], true, 30);
		struct par_tp_model *over_mpi = load(g_paths[m], false, 30);
		const struct model_hparams *hp = model_hparams(par_tp_model_get(over_mpi));
		uint32_t V = hp->n_vocab, rows = N_PROMPT + N_DECODE;
		float *a = calloc((size_t)rows * V, sizeof(float));
		float *b = calloc((size_t)rows * V, sizeof(float));
		assert_true(a && b);

		struct fake_nccl_stats s0 = fake_nccl_stats();
		drive(over_nccl, a, V);
		struct fake_nccl_stats s1 = fake_nccl_stats();
		drive(over_mpi, b, V);
		struct fake_nccl_stats s2 = fake_nccl_stats();
		/* Every all-reduce of every forward went over NCCL (the sharded embedding's,
		 * then attention's and the FFN's in each layer), as many on every rank, each
		 * summed on the "device"; the MPI model made none. */
		long reduces = s1.all_gathers - s0.all_gathers;
		assert_int_equal(reduces, (long)(1 + N_DECODE) * (1 + 2 * (long)hp->n_layers));
		assert_int_equal(s1.reductions - s0.reductions, reduces);
		assert_int_equal(s2.all_gathers, s1.all_gathers);
		long most = reduces, least = reduces;
		MPI_Allreduce(MPI_IN_PLACE, &most, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
		MPI_Allreduce(MPI_IN_PLACE, &least, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
		assert_int_equal(most, least);
		if (g_rank == 0) {
			assert_memory_equal(a, b, (size_t)rows * V * sizeof(float));
			printf("[ T=%d ] model %zu: %u rows of logits bitwise equal, %ld "
			       "all-reduces over NCCL\n", g_size, m, rows, reduces);
		}
		free(a);
		free(b);
		par_tp_model_destroy(over_nccl);
		par_tp_model_destroy(over_mpi);
	}
}

/* A rank without a GPU: every rank keeps MPI for the all-reduces (tp.c's vote), the
 * model still loads and runs, and no NCCL call is made. */
static void test_tp_nccl__a_rank_without_a_gpu_keeps_mpi(void **state)
{
	(void)state;
	if (g_rank == g_size - 1)
		fake_nccl_set_devices(0);
	struct fake_nccl_stats s0 = fake_nccl_stats();
	struct par_tp_model *tp = load(g_paths[0], true, 30);
	fake_nccl_set_devices(1);
	uint32_t V = model_hparams(par_tp_model_get(tp))->n_vocab;
	float *a = calloc((size_t)(N_PROMPT + N_DECODE) * V, sizeof(float));
	assert_non_null(a);
	drive(tp, a, V);
	assert_int_equal(fake_nccl_stats().inits, s0.inits);
	assert_int_equal(fake_nccl_stats().all_gathers, s0.all_gathers);
	free(a);
	par_tp_model_destroy(tp);
}

/* The leader's greedy step over tokens 1, 5 of slot 0 at positions 0 and second_pos. */
static enum specd_status two_token_step(struct par_tp_model *tp, uint32_t second_pos,
					struct specd_error *err)
{
	uint32_t tokens[2] = {1, 5}, slots[2] = {0, 0}, pos[2] = {0, second_pos}, idx[1] = {1};
	uint32_t id = 0;
	struct model_batch b = {.n_tokens = 2, .tokens = tokens, .slots = slots, .pos = pos,
				.n_out = 1, .out_idx = idx};
	return par_tp_step(tp, &b, PAR_TP_WANT_ARGMAX, &id, err);
}

/* One forward whose NCCL fails on rank `failing` (an asynchronous error, as a lost peer
 * shows): that rank's call returns SPECD_NCCL with NCCL's words, every other rank's
 * SPECD_TIMEOUT within the deadline instead of hanging; every rank's model says the
 * shards are out of step (par_tp_broken: the daemon then ends the job), and every rank
 * can still tear its model down. Before it, a step refused by the leader's own check
 * (position 7 after 0) leaves them in step. */
static void fail_mid_forward(int failing)
{
	/* 3 s: short for the test, long enough for the load's own votes on a busy machine */
	struct par_tp_model *tp = load(g_paths[1], true, 3);
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st;
	if (g_rank == 0) {
		assert_int_equal(two_token_step(tp, 7, &err), SPECD_INVAL);
		assert_false(par_tp_broken(tp));
	}
	if (g_rank == failing)
		fake_nccl_fail_next(ncclRemoteError);
	st = g_rank == 0 ? two_token_step(tp, 1, &err) : par_tp_follow(tp, &err);
	printf("[ T=%d ] rank %d: %s: %s\n", g_size, g_rank, specd_status_name(st), err.msg);
	if (g_rank == failing) {
		assert_int_equal(st, SPECD_NCCL);
		assert_non_null(strstr(err.msg, "remote process exited"));
	} else {
		assert_int_equal(st, SPECD_TIMEOUT);
		assert_true(g_rank != 0 || strstr(err.msg, "not done after 3.0 s"));
	}
	assert_true(par_tp_broken(tp)); /* on a shard as on the leader */
	par_tp_model_destroy(tp);
	MPI_Barrier(MPI_COMM_WORLD);
}

static void test_tp_nccl__a_shard_failing_mid_forward_stops_every_rank(void **state)
{
	(void)state;
	fail_mid_forward(g_size - 1);
}

static void test_tp_nccl__the_leaders_failure_mid_forward_breaks_the_group(void **state)
{
	(void)state;
	fail_mid_forward(0);
}

int main(int argc, char **argv)
{
	ts_mpi_init(&argc, &argv, &g_rank, &g_size);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tp_nccl__bitwise_the_mpi_all_reduces),
		cmocka_unit_test(test_tp_nccl__a_rank_without_a_gpu_keeps_mpi),
		cmocka_unit_test(test_tp_nccl__a_shard_failing_mid_forward_stops_every_rank),
		cmocka_unit_test(test_tp_nccl__the_leaders_failure_mid_forward_breaks_the_group),
	};
	return ts_mpi_finish(cmocka_run_group_tests(tests, setup, teardown));
}
