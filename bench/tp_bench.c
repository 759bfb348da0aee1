/* specd-bench-tp: decode tokens/s of the tensor-parallel target and the cost of its
 * all-reduces, under `mpirun -np T` (T = 1 runs the whole model). Rank 0 drives greedy
 * decoding through par_tp_step; the others follow. Then every rank times all-reduces
 * of one decode step's size (dim floats), two of which each layer makes.
 *
 *   mpirun -np 2 specd-bench-tp MODEL [TOKENS] [REPEATS]
 *
 * Prints one line per repeat and a summary with medians (rank 0, stdout). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model/kv.h"
#include "parallel/tp.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int fail(const char *what, const struct specd_error *err)
{
	fprintf(stderr, "specd-bench-tp: %s: %s\n", what, err->msg);
	MPI_Abort(MPI_COMM_WORLD, 1);
	return 1;
}

/* Rank 0: greedy decoding of n tokens after a short prompt; seconds per token. */
static double decode(struct par_tp_model *tp, int n)
{
	struct specd_error err;
	if (par_tp_truncate(tp, 0, 0, &err) != SPECD_OK)
		fail("truncate", &err);
	uint32_t tok = 1, slot = 0, idx = 0;
	double t0 = 0;
	for (int i = -4; i < n; i++) { /* 4 warm-up tokens */
		if (i == 0)
			t0 = specd_now();
		uint32_t pos = kv_len(model_kv(par_tp_model_get(tp)), 0);
		struct model_batch b = {.n_tokens = 1, .tokens = &tok, .slots = &slot, .pos = &pos,
					.n_out = 1, .out_idx = &idx};
		if (par_tp_step(tp, &b, PAR_TP_WANT_ARGMAX, &tok, &err) != SPECD_OK)
			fail("step", &err);
	}
	return (specd_now() - t0) / n;
}

int main(int argc, char **argv)
{
	int provided, rank, size;
	MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	log_init_from_env();
	if (argc < 2) {
		if (rank == 0)
			fprintf(stderr, "usage: mpirun -np T specd-bench-tp MODEL [TOKENS] [REPEATS]\n");
		MPI_Finalize();
		return 2;
	}
	int n_tok = argc > 2 ? atoi(argv[2]) : 32, repeats = argc > 3 ? atoi(argv[3]) : 5;
	if (n_tok < 1 || repeats < 1 || repeats > 64)
		return 2;
	struct model_config mc = {.n_slots = 1, .n_ctx = (uint32_t)n_tok + 8, .max_batch = 8};
	struct par_tp_config tc = {.deadline_s = 120};
	struct par_tp_model *tp = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	if (par_tp_model_load(MPI_COMM_WORLD, argv[1], &mc, &tc, &tp, &err) != SPECD_OK)
		return fail("load", &err);
	struct model *m = par_tp_model_get(tp);
	const struct model_hparams *hp = model_hparams(m);
	const struct model_shard *s = model_shard(m);
	unsigned long long res = s->resident_bytes, res_max = 0;
	MPI_Reduce(&res, &res_max, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, MPI_COMM_WORLD);

	double tps[64], ar[64];
	float *buf = specd_calloc(hp->dim, sizeof(float));
	for (int r = 0; r < repeats; r++) {
		if (rank == 0) {
			tps[r] = 1.0 / decode(tp, n_tok);
			if (par_tp_stop(tp, &err) != SPECD_OK)
				return fail("stop", &err);
		} else if (par_tp_follow(tp, &err) != SPECD_OK) {
			return fail("follow", &err);
		}
		/* all-reduces of one decode step's residual row, as the layers make them */
		enum { N_AR = 400 };
		MPI_Barrier(MPI_COMM_WORLD);
		double t0 = specd_now();
		for (int i = 0; i < N_AR; i++) {
			if (par_comm_allreduce_sum(par_tp_comm(tp), buf, hp->dim, &err) != SPECD_OK)
				return fail("all-reduce", &err);
		}
		ar[r] = (specd_now() - t0) / N_AR;
		if (rank == 0)
			printf("repeat %d: %.2f tokens/s, all-reduce of %u floats %.1f us\n", r, tps[r],
			       hp->dim, ar[r] * 1e6);
	}
	if (rank == 0) {
		double t = median(tps, repeats), a = median(ar, repeats);
		printf("T=%d %s: dim %u, %u layers, %s; median %.2f tokens/s (%.2f ms/token), "
		       "all-reduce %.1f us, per layer (2) %.1f us = %.1f%% of a token; resident "
		       "weights per rank up to %.1f MiB of %.1f MiB\n",
		       size, argv[1], hp->dim, hp->n_layers, kern_dtype_name(hp->wtype), t, 1e3 / t,
		       a * 1e6, 2 * a * 1e6, size > 1 ? 100.0 * 2 * a * hp->n_layers * t : 0.0,
		       (double)res_max / (1 << 20), (double)s->weight_bytes / (1 << 20));
	}
	specd_free(buf);
	par_tp_model_destroy(tp);
	MPI_Finalize();
	return 0;
}
