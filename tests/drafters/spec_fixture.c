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
#include <jansson.h>

#include "kernels/dtype.h"
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

/* A safetensors file read whole: its header parsed, its bytes kept. */
struct st_image {
	unsigned char *bytes;
	size_t size;
	uint64_t hlen;      /* the header's length; the data start at 8 + hlen */
	json_t *hdr;
};

static void st_load(const char *path, struct st_image *im)
{
	im->bytes = ts_read_file(path, &im->size);
	assert_non_null(im->bytes);
	assert_true(im->size >= 8);
	im->hlen = 0;
	for (int i = 7; i >= 0; i--)
		im->hlen = im->hlen << 8 | im->bytes[i];
	assert_true(im->hlen <= im->size - 8);
	im->hdr = json_loadb((const char *)im->bytes + 8, im->hlen, 0, NULL);
	assert_non_null(im->hdr);
}

static void st_free(struct st_image *im)
{
	json_decref(im->hdr);
	free(im->bytes);
}

static void st_write_parts(const char *path, const char *hdr, const void *data, size_t n_data,
			   const void *tail, size_t n_tail)
{
	/* The header padded with spaces to a multiple of 8, so the data stay aligned. */
	size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
	unsigned char len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(len, 1, 8, f), 8);
	assert_int_equal(fwrite(hdr, 1, hlen, f), hlen);
	for (size_t i = hlen; i < padded; i++)
		assert_int_equal(fputc(' ', f), ' ');
	assert_int_equal(fwrite(data, 1, n_data, f), n_data);
	if (n_tail)
		assert_int_equal(fwrite(tail, 1, n_tail, f), n_tail);
	assert_int_equal(fclose(f), 0);
}

void fx_st_edit(const char *path, const char *name, fx_st_value_fn *fn, void *user)
{
	struct st_image im;
	st_load(path, &im);
	const json_t *t = json_object_get(im.hdr, name);
	const char *dtype = json_string_value(json_object_get(t, "dtype"));
	const json_t *shape = json_object_get(t, "shape");
	if (!dtype || json_array_size(shape) < 1 || json_array_size(shape) > 2)
		fail_msg("%s: no tensor %s of one or two dimensions", path, name);
	uint64_t rows = (uint64_t)json_integer_value(json_array_get(shape, 0));
	uint64_t cols = json_array_size(shape) == 2
				? (uint64_t)json_integer_value(json_array_get(shape, 1)) : 1;
	uint64_t at = 8 + im.hlen +
		      (uint64_t)json_integer_value(json_array_get(json_object_get(t,
								 "data_offsets"), 0));
	size_t width = strcmp(dtype, "F32") == 0 ? 4 : 2;
	if (strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
		fail_msg("%s: %s is %s", path, name, dtype);
	assert_true(at + rows * cols * width <= im.size);
	for (uint64_t r = 0; r < rows; r++) {
		for (uint64_t c = 0; c < cols; c++) {
			unsigned char *e = im.bytes + at + (r * cols + c) * width;
			float v;
			uint16_t h;
			if (width == 4) {
				memcpy(&v, e, 4);
				v = fn(r, json_array_size(shape) == 2 ? c : 0, v, user);
				memcpy(e, &v, 4);
				continue;
			}
			memcpy(&h, e, 2);
			bool bf = dtype[0] == 'B';
			v = fn(r, json_array_size(shape) == 2 ? c : 0,
			       bf ? kern_bf16_to_f32(h) : kern_f16_to_f32(h), user);
			h = bf ? kern_f32_to_bf16(v) : kern_f32_to_f16(v);
			memcpy(e, &h, 2);
		}
	}
	char *hdr = json_dumps(im.hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(hdr);
	st_write_parts(path, hdr, im.bytes + 8 + im.hlen, im.size - 8 - im.hlen, NULL, 0);
	free(hdr);
	st_free(&im);
}

void fx_st_add(const char *path, const char *name, uint64_t n, fx_st_value_fn *fn, void *user)
{
	struct st_image im;
	st_load(path, &im);
	size_t n_data = im.size - 8 - im.hlen;
	float *v = malloc(n * sizeof(float));
	assert_non_null(v);
	for (uint64_t i = 0; i < n; i++)
		v[i] = fn(i, 0, 0.0f, user);
	json_t *ent = json_pack("{s:s,s:[I],s:[I,I]}", "dtype", "F32", "shape", (json_int_t)n,
				"data_offsets", (json_int_t)n_data,
				(json_int_t)(n_data + n * sizeof(float)));
	assert_non_null(ent);
	assert_int_equal(json_object_set_new(im.hdr, name, ent), 0);
	char *hdr = json_dumps(im.hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(hdr);
	st_write_parts(path, hdr, im.bytes + 8 + im.hlen, n_data, v, n * sizeof(float));
	free(hdr);
	free(v);
	st_free(&im);
}

/* fc.weight (dim, 2 dim) plus [0 | I]: the feature passes through. */
static float add_identity(uint64_t r, uint64_t c, float old, void *user)
{
	uint64_t dim = *(const uint64_t *)user;
	return c == dim + r ? old + 1.0f : old;
}

void fx_gen_eagle(const char *dir, const char *const *args, bool echo)
{
	const char *all[40] = {"--eagle"};
	int n = 1;
	for (int i = 0; args[i]; i++) {
		assert_true(n < 39);
		all[n++] = args[i];
	}
	all[n] = NULL;
	assert_int_equal(ts_gen("specd-gen-heads", dir, all), 0);
	if (!echo)
		return;
	char file[700], config[700];
	snprintf(file, sizeof(file), "%s/model.safetensors", dir);
	snprintf(config, sizeof(config), "%s/config.json", dir);
	json_t *c = json_load_file(config, 0, NULL);
	assert_non_null(c);
	uint64_t dim = (uint64_t)json_integer_value(json_object_get(c, "hidden_size"));
	json_decref(c);
	assert_true(dim > 0);
	fx_st_edit(file, "fc.weight", add_identity, &dim);
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

void fx_forward_all(struct model *t, const int32_t *tokens, uint32_t n, float *hidden,
		    float *logits)
{
	uint32_t mb = model_max_batch(t), dim = model_hparams(t)->dim;
	uint32_t V = model_hparams(t)->n_vocab;
	uint32_t *tok = calloc(mb, sizeof(uint32_t)), *pos = calloc(mb, sizeof(uint32_t));
	uint32_t *slots = calloc(mb, sizeof(uint32_t)), *idx = calloc(mb, sizeof(uint32_t));
	struct specd_error err;

	assert_true(tok && pos && slots && idx);
	assert_int_equal(kv_truncate(model_kv(t), 0, 0), SPECD_OK);
	for (uint32_t s = 0; s < n; s += mb) {
		uint32_t c = n - s < mb ? n - s : mb;
		for (uint32_t i = 0; i < c; i++) {
			tok[i] = (uint32_t)tokens[s + i];
			pos[i] = s + i;
			idx[i] = i;
		}
		struct model_batch b = {
			.n_tokens = c, .tokens = tok, .slots = slots, .pos = pos, .n_out = c,
			.out_idx = idx, .hidden = hidden + (size_t)s * dim,
			.logits = logits ? logits + (size_t)s * V : NULL,
		};
		if (model_forward(t, &b, &err) != SPECD_OK)
			fail_msg("forward: %s", err.msg);
	}
	free(tok);
	free(pos);
	free(slots);
	free(idx);
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

enum specd_status fx_run_job(const struct fx_job *job, int32_t *out, uint32_t cap,
			     uint32_t *n_out, struct draft_metrics *m, enum draft_stop *stop)
{
	struct draft_engine_config ec = {.target = job->target, .drafter = job->d,
					 .spec_tokens = job->k, .verify = job->verify};
	struct draft_engine *e = NULL;
	struct draft_job *j = NULL;
	struct specd_error err;
	enum specd_status st;
	uint32_t step = 0;

	if ((st = draft_engine_create(&ec, &e, &err)) != SPECD_OK ||
	    (st = draft_job_create(e, 0, &j, &err)) != SPECD_OK ||
	    (st = draft_job_start(j, job->prompt, job->n_prompt, &job->params, &err)) != SPECD_OK)
		goto out;
	while (draft_job_stop(j) == DRAFT_STOP_NONE) {
		uint32_t before, after;
		draft_job_output(j, &before);
		if (job->before_step && job->d)
			job->before_step(job->d, step, job->user);
		step++;
		if ((st = draft_job_step(j, &err)) != SPECD_OK)
			goto out;
		draft_job_output(j, &after);
		/* A deferred prompt goes in first, emitting nothing. */
		if (job->params.defer_prefill && after == 0 && draft_job_stop(j) == DRAFT_STOP_NONE)
			continue;
		/* The KV invariant: the target holds every history token but the last. */
		if (draft_job_stop(j) == DRAFT_STOP_NONE)
			assert_int_equal(kv_len(model_kv(job->target), 0),
					 job->n_prompt + after - 1);
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
		fprintf(stderr, "fx_run_job: %s\n", err.msg);
	draft_job_destroy(j);
	draft_engine_destroy(e);
	return st;
}

enum specd_status fx_generate(struct model *target, struct drafter *d, uint32_t k,
			      draft_verify_fn *verify, const int32_t *prompt, uint32_t n_prompt,
			      const struct sampler_params *sp, uint32_t max_tokens, int32_t eos,
			      int32_t *out, uint32_t cap, uint32_t *n_out, struct draft_metrics *m,
			      enum draft_stop *stop)
{
	struct fx_job job = {
		.target = target, .d = d, .k = k, .verify = verify, .prompt = prompt,
		.n_prompt = n_prompt,
		.params = {.sampling = *sp, .max_tokens = max_tokens, .eos = eos},
	};
	return fx_run_job(&job, out, cap, n_out, m, stop);
}

uint32_t fx_plain_greedy(struct model *target, const int32_t *prompt, uint32_t n_prompt,
			 uint32_t max_tokens, int32_t *out)
{
	return fx_plain_decode(target, prompt, n_prompt, NULL, max_tokens, out);
}

uint32_t fx_plain_decode(struct model *target, const int32_t *prompt, uint32_t n_prompt,
			 const struct sampler_params *sp, uint32_t max_tokens, int32_t *out)
{
	uint32_t V = model_hparams(target)->n_vocab, n_ctx = kv_n_ctx(model_kv(target));
	float *logits = malloc((size_t)V * sizeof(float));
	struct specd_error err;
	uint32_t n = 0, zero = 0, last = 0;
	struct sampler *s = NULL;

	assert_non_null(logits);
	if (sp)
		assert_int_equal(sampler_create((int32_t)V, sp, &s, NULL), SPECD_OK);
	assert_int_equal(kv_truncate(model_kv(target), 0, 0), SPECD_OK);
	for (uint32_t i = 0; i < n_prompt; i++) {
		uint32_t t = (uint32_t)prompt[i], pos = i;
		struct model_batch b = {.n_tokens = 1, .tokens = &t, .slots = &zero, .pos = &pos,
					.n_out = 1, .out_idx = &last, .logits = logits};
		assert_int_equal(model_forward(target, &b, &err), SPECD_OK);
	}
	while (n < max_tokens) {
		if (s)
			assert_int_equal(sampler_sample(s, logits, &out[n]), SPECD_OK);
		else
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
	sampler_destroy(s);
	free(logits);
	return n;
}

uint64_t fx_expect_plain_sampling(struct model *target, struct drafter *d, uint32_t k,
				  const int32_t *prompt, uint32_t n_prompt,
				  const struct sampler_params *sp, uint32_t n_sp, uint32_t n_seeds,
				  uint32_t max_tokens)
{
	int32_t *plain = calloc(max_tokens, sizeof(int32_t));
	int32_t *out = calloc(max_tokens, sizeof(int32_t));
	uint64_t accepted = 0;
	assert_true(plain && out);
	for (uint32_t seed = 1; seed <= n_seeds; seed++) {
		struct fx_job job = {.target = target, .d = d, .k = d ? k : 0, .prompt = prompt,
				     .n_prompt = n_prompt,
				     .params = {.sampling = sp[seed % n_sp], .max_tokens = max_tokens,
						.eos = -1}};
		job.params.sampling.seed = seed;
		struct draft_metrics m;
		uint32_t n;
		assert_int_equal(fx_plain_decode(target, prompt, n_prompt, &job.params.sampling,
						 max_tokens, plain), max_tokens);
		assert_int_equal(fx_run_job(&job, out, max_tokens, &n, &m, NULL), SPECD_OK);
		assert_int_equal(n, max_tokens);
		assert_memory_equal(out, plain, max_tokens * sizeof(int32_t));
		accepted += m.accepted;
	}
	free(plain);
	free(out);
	return accepted;
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

void fx_exact_joint(struct model *t, const int32_t *prompt, uint32_t n,
		    const struct sampler_params *sp, double *joint)
{
	uint32_t V = model_hparams(t)->n_vocab, zero = 0, z = 0, last = n - 1;
	float *logits = malloc((size_t)V * sizeof(float));
	float *p1 = malloc((size_t)V * sizeof(float)), *p2 = malloc((size_t)V * sizeof(float));
	uint32_t *toks = calloc(n, sizeof(uint32_t)), *pos = calloc(n, sizeof(uint32_t));
	uint32_t *slots = calloc(n, sizeof(uint32_t));
	struct sampler *s;

	assert_true(logits && p1 && p2 && toks && pos && slots);
	assert_int_equal(sampler_create(V, sp, &s, NULL), SPECD_OK);
	for (uint32_t i = 0; i < n; i++) {
		toks[i] = (uint32_t)prompt[i];
		pos[i] = i;
	}
	struct model_batch b = {.n_tokens = n, .tokens = toks, .slots = slots, .pos = pos,
				.n_out = 1, .out_idx = &last, .logits = logits};
	assert_int_equal(kv_truncate(model_kv(t), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(t, &b, NULL), SPECD_OK);
	assert_int_equal(sampler_probs(s, logits, p1), SPECD_OK);
	for (uint32_t a = 0; a < V; a++) {
		double *row = joint + (size_t)a * V;
		for (uint32_t c = 0; c < V; c++)
			row[c] = 0;
		if (p1[a] == 0)
			continue;
		uint32_t one = a, at = n;
		struct model_batch b2 = {.n_tokens = 1, .tokens = &one, .slots = &zero, .pos = &at,
					 .n_out = 1, .out_idx = &z, .logits = logits};
		assert_int_equal(kv_truncate(model_kv(t), 0, n), SPECD_OK);
		assert_int_equal(model_forward(t, &b2, NULL), SPECD_OK);
		assert_int_equal(sampler_probs(s, logits, p2), SPECD_OK);
		for (uint32_t c = 0; c < V; c++)
			row[c] = (double)p1[a] * p2[c];
	}
	sampler_destroy(s);
	free(logits);
	free(p1);
	free(p2);
	free(toks);
	free(pos);
	free(slots);
}

void fx_count_first_two(struct model *t, struct drafter *d, uint32_t k, const int32_t *prompt,
			uint32_t n, const struct sampler_params *sp, uint32_t max_tokens,
			uint32_t n_seeds, uint32_t *count, uint64_t *drafted, uint64_t *accepted)
{
	uint32_t V = model_hparams(t)->n_vocab;
	struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = k};
	struct draft_engine *e;
	struct draft_job *j;

	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	assert_int_equal(draft_job_create(e, 0, &j, NULL), SPECD_OK);
	memset(count, 0, (size_t)V * V * sizeof(*count));
	*drafted = *accepted = 0;
	for (uint32_t i = 0; i < n_seeds; i++) {
		struct draft_job_params jp = {.sampling = *sp, .max_tokens = max_tokens, .eos = -1};
		jp.sampling.seed = 1000 + i;
		assert_int_equal(draft_job_start(j, prompt, n, &jp, NULL), SPECD_OK);
		uint32_t n_out = 0;
		const int32_t *out = NULL;
		/* the next start begins afresh: steps past the second token would be wasted */
		while (n_out < 2 && draft_job_stop(j) == DRAFT_STOP_NONE) {
			assert_int_equal(draft_job_step(j, NULL), SPECD_OK);
			out = draft_job_output(j, &n_out);
		}
		assert_true(n_out >= 2);
		count[(size_t)out[0] * V + (size_t)out[1]]++;
		*drafted += draft_job_metrics(j)->drafted;
		*accepted += draft_job_metrics(j)->accepted;
	}
	draft_job_destroy(j);
	draft_engine_destroy(e);
}

void fx_assert_exact_law(const char *what, const double *p, const uint32_t *count, uint32_t n,
			 uint32_t n_samples, uint64_t drafted, uint64_t accepted)
{
	double stat = 0, oe = 0, oo = 0;
	int bins = 0;
	for (uint32_t c = 0; c < n; c++) {
		double ex = p[c] * n_samples;
		if (ex < 10) {
			oe += ex;
			oo += count[c];
			continue;
		}
		stat += (count[c] - ex) * (count[c] - ex) / ex;
		bins++;
	}
	if (oe >= 10) {
		stat += (oo - oe) * (oo - oe) / oe;
		bins++;
	}
	int df = bins - 1;
	assert_true(df >= 3);
	double crit = fx_chi2_critical(df);
	if (getenv("FX_VERBOSE"))
		fprintf(stderr, "  %s: drafted %llu accepted %llu, chi2 %.2f df %d (crit %.2f)\n",
			what, (unsigned long long)drafted, (unsigned long long)accepted, stat, df,
			crit);
	if (!(stat < crit))
		fail_msg("%s: chi2 %.2f at df %d, critical %.2f", what, stat, df, crit);
	assert_true(accepted > 0 && accepted < drafted);
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
