/* Shared helpers of the drafters/ suites (see spec_fixture.h). */
#include "spec_fixture.h"

#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/kv.h"
#include "model/sampler.h"
#include "test_support.h"

void fx_gen_model(const char *out, const char *const *args)
{
	assert_int_equal(ts_gen_model(out, args), 0);
}

void fx_gen_heads(const char *out, const char *const *args)
{
	assert_int_equal(ts_gen("specd-gen-heads", out, args), 0);
}

struct model *fx_load(const char *path, uint32_t n_slots, uint32_t n_ctx)
{
	struct model_config mc = {.n_slots = n_slots, .n_ctx = n_ctx};
	struct specd_error err;
	struct model *m = NULL;

	if (model_load(path, &mc, &m, &err) != SPECD_OK)
		fail_msg("%s: %s", path, err.msg);
	return m;
}

bool fx_mpi_init_pair(int *argc, char ***argv)
{
	int provided = 0, size = 0;
	MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size == 2)
		return true;
	fprintf(stderr, "run under mpirun -np 2\n");
	MPI_Finalize();
	return false;
}

bool fx_mpi_shared_dir(char *dir, size_t size, int *rank)
{
	MPI_Comm_rank(MPI_COMM_WORLD, rank);
	if (*rank == 0 && !ts_mkdtemp(dir, size))
		dir[0] = '\0'; /* told to the other ranks, so no one waits for a folder */
	MPI_Bcast(dir, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
	return dir[0] != '\0';
}

struct drafter *fx_drafter(enum draft_method method, struct model *target, uint32_t k,
			   uint32_t n_slots, const char *path, uint32_t lookup_min)
{
	bool heads = method == DRAFT_METHOD_MEDUSA;
	struct draft_config dc = {
		.method = method, .k_max = k, .n_slots = n_slots,
		.n_ctx = kv_n_ctx(model_kv(target)), .target = target,
		.prompt_lookup_min = lookup_min, .draft_path = heads ? NULL : path,
		.heads_path = heads ? path : NULL,
	};
	struct specd_error err;
	struct drafter *d = NULL;

	if (draft_create(&dc, &d, &err) != SPECD_OK)
		fail_msg("draft_create %s: %s", draft_method_name(method), err.msg);
	return d;
}

enum specd_status fx_generate(struct model *target, struct drafter *d, uint32_t k,
			      draft_verify_fn *verify, const int32_t *prompt, uint32_t n_prompt,
			      const struct sampler_params *sp, uint32_t max_tokens, int32_t eos,
			      int32_t *out, uint32_t cap, uint32_t *n_out, struct draft_metrics *m,
			      enum draft_stop *stop)
{
	struct draft_engine_config ec = {.target = target, .drafter = d, .spec_tokens = k,
					 .verify = verify};
	struct draft_job_params jp = {.sampling = *sp, .max_tokens = max_tokens, .eos = eos};
	struct draft_engine *e = NULL;
	struct draft_job *j = NULL;
	struct specd_error err;
	enum specd_status st;

	if ((st = draft_engine_create(&ec, &e, &err)) != SPECD_OK ||
	    (st = draft_job_create(e, 0, &j, &err)) != SPECD_OK ||
	    (st = draft_job_start(j, prompt, n_prompt, &jp, &err)) != SPECD_OK)
		goto out;
	while (draft_job_stop(j) == DRAFT_STOP_NONE) {
		uint32_t before, after;
		draft_job_output(j, &before);
		if ((st = draft_job_step(j, &err)) != SPECD_OK)
			goto out;
		draft_job_output(j, &after);
		/* The KV invariant: the target holds every history token but the last. */
		if (draft_job_stop(j) == DRAFT_STOP_NONE)
			assert_int_equal(kv_len(model_kv(target), 0), n_prompt + after - 1);
		assert_true(after > before || draft_job_stop(j) != DRAFT_STOP_NONE);
	}
	uint32_t n;
	const int32_t *gen = draft_job_output(j, &n);
	assert_true(n <= cap);
	memcpy(out, gen, n * sizeof(*gen));
	*n_out = n;
	if (m)
		*m = *draft_job_metrics(j);
	if (stop)
		*stop = draft_job_stop(j);
out:
	if (st != SPECD_OK)
		fprintf(stderr, "fx_generate: %s\n", err.msg);
	draft_job_destroy(j);
	draft_engine_destroy(e);
	return st;
}

uint32_t fx_plain_greedy(struct model *target, const int32_t *prompt, uint32_t n_prompt,
			 uint32_t max_tokens, int32_t *out)
{
	uint32_t V = model_hparams(target)->n_vocab, n_ctx = kv_n_ctx(model_kv(target));
	float *logits = malloc((size_t)V * sizeof(float));
	struct specd_error err;
	uint32_t n = 0, zero = 0, last = 0;

	assert_non_null(logits);
	assert_int_equal(kv_truncate(model_kv(target), 0, 0), SPECD_OK);
	for (uint32_t i = 0; i < n_prompt; i++) {
		uint32_t t = (uint32_t)prompt[i], pos = i;
		struct model_batch b = {.n_tokens = 1, .tokens = &t, .slots = &zero, .pos = &pos,
					.n_out = 1, .out_idx = &last, .logits = logits};
		assert_int_equal(model_forward(target, &b, &err), SPECD_OK);
	}
	while (n < max_tokens) {
		out[n] = sampler_argmax(logits, (int32_t)V);
		n++;
		uint32_t pos = n_prompt + n - 1;
		if (n == max_tokens || pos == n_ctx)
			break;
		uint32_t t = (uint32_t)out[n - 1];
		struct model_batch b = {.n_tokens = 1, .tokens = &t, .slots = &zero, .pos = &pos,
					.n_out = 1, .out_idx = &last, .logits = logits};
		assert_int_equal(model_forward(target, &b, &err), SPECD_OK);
	}
	free(logits);
	return n;
}

enum specd_status fx_biased_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
				   const struct draft_proposal *prop, float *work,
				   struct draft_verdict *out)
{
	float *p = work;
	for (uint32_t i = 0; i < prop->n; i++) {
		int32_t t = prop->tokens[i];
		float q = prop->q_onehot ? 1.0f : prop->q[(size_t)i * n_vocab + (size_t)t];
		if (sampler_probs(s, logits + (size_t)i * n_vocab, p) != SPECD_OK)
			return SPECD_INVAL;
		if (sampler_uniform(s) * q < p[t])
			continue;
		out->n_accepted = i;
		return sampler_sample_probs(s, p, &out->next);
	}
	out->n_accepted = prop->n;
	if (sampler_probs(s, logits + (size_t)prop->n * n_vocab, p) != SPECD_OK)
		return SPECD_INVAL;
	return sampler_sample_probs(s, p, &out->next);
}

double fx_homogeneity(const uint32_t *a, const uint32_t *b, uint32_t n_cells, int *df)
{
	uint32_t *order = malloc((size_t)n_cells * sizeof(*order));
	uint32_t n = 0;
	assert_non_null(order);
	for (uint32_t c = 0; c < n_cells; c++)
		if (a[c] + b[c] > 0)
			order[n++] = c;
	/* Selection of the largest cells, by combined count then cell id (deterministic). */
	int bins = 0;
	double stat = 0, oa = 0, ob = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t best = i;
		for (uint32_t k = i + 1; k < n && bins < FX_MAX_BINS - 1; k++) {
			uint32_t x = order[k], y = order[best];
			if (a[x] + b[x] > a[y] + b[y] || (a[x] + b[x] == a[y] + b[y] && x < y))
				best = k;
		}
		uint32_t t = order[i];
		order[i] = order[best];
		order[best] = t;
		uint32_t c = order[i];
		if (bins < FX_MAX_BINS - 1 && a[c] + b[c] >= 20) {
			double d = (double)a[c] - (double)b[c];
			stat += d * d / ((double)a[c] + (double)b[c]);
			bins++;
		} else {
			oa += a[c];
			ob += b[c];
		}
	}
	if (oa + ob >= 20) {
		stat += (oa - ob) * (oa - ob) / (oa + ob);
		bins++;
	}
	free(order);
	*df = bins - 1;
	return stat;
}

double fx_chi2_critical(int df)
{
	static const double crit[FX_MAX_BINS] = {
		0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877,
		29.588, 31.264, 32.909, 34.528, 36.123, 37.697, 39.252, 40.790, 42.312, 43.820,
		45.315, 46.797, 48.268, 49.728, 51.179, 52.620, 54.052, 55.476, 56.892, 58.301,
		59.703,
	};
	assert_true(df >= 1);
	if (df < FX_MAX_BINS)
		return crit[df];
	/* Wilson-Hilferty beyond the table (within 0.3% of the exact value from 30 on). */
	double h = 2.0 / (9.0 * df);
	return df * pow(1 - h + 3.0902 * sqrt(h), 3);
}
