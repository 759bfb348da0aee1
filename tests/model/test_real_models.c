/* Real models against llama.cpp: logits over 256 positions and greedy continuations of
 * SmolLM2-135M, Qwen2.5-Coder-1.5B and -0.5B, compared with the fixtures that
 * tools/reference/real_reference.py made (llama.cpp on the same quantised file). The
 * model is argv[1] (default smollm2-135m); a model not in SPECD_MODELS skips. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "test_fixture.h"
#include "test_support.h"

/* llama.cpp rounds activations to 8 bits inside its dot products and specd keeps them
 * f32, so logits differ by that rounding, more for deeper and wider models; tol bounds
 * the difference over the reference's top-8 logits at every position but the first.
 * At position 0 Qwen2.5-1.5B's activations are huge (an attention sink) and llama.cpp's
 * 8-bit rounding is off by 5 or more there; the float64 reference checks that position
 * (specd agrees with it to 1e-4). */
struct real_model {
	const char *name, *file;
	double tol;
};

static const struct real_model real_models[] = {
	{"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 1.5},
	{"qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1.0},
	{"qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 1.0},
};

#define BATCH 64

static const struct real_model *chosen = &real_models[0];

struct real {
	struct kern_ctx *kern; /* the q8 setup's backend; NULL: the model's own (f32) */
	struct model *m;
	struct tok *t;
	yaml_document_t doc;
	bool have_doc;
	float *logits; /* (BATCH, n_vocab) */
};
/* Loads the chosen model on a CPU backend whose quantised matmuls read activations as
 * act says (kernels/kern.h). */
static int setup_real_load(void **state, enum kern_act act)
{
	struct real *r = calloc(1, sizeof(*r));
	char path[1024];
	struct specd_error err;
	if (!r)
		return -1;
	*state = r;
	if (!ts_model_path(chosen->file, path, sizeof(path))) {
		fprintf(stderr, "%s: not in SPECD_MODELS (tools/fetch-models %s); skipping\n",
			chosen->file, chosen->name);
		return 0;
	}
	struct kern_cpu_config kc = {.act = act};
	if (act != KERN_ACT_F32 && kern_cpu_create(&kc, &r->kern) != SPECD_OK)
		return -1;
	struct model_config cfg = {.n_slots = 1, .n_ctx = 512, .max_batch = BATCH, .kern = r->kern};
	if (model_load(path, &cfg, &r->m, &err) != SPECD_OK) {
		fprintf(stderr, "model_load: %s\n", err.msg);
		return -1;
	}
	if (tok_load_gguf(model_gguf(r->m), &r->t, &err) != SPECD_OK) {
		fprintf(stderr, "tok_load_gguf: %s\n", err.msg);
		return -1;
	}
	r->logits = malloc((size_t)BATCH * model_hparams(r->m)->n_vocab * sizeof(float));
	if (!r->logits)
		return -1;
	r->have_doc = ts_fx_load(chosen->name, &r->doc);
	return r->have_doc ? 0 : -1;
}

static int teardown_real(void **state)
{
	struct real *r = *state;
	if (!r)
		return 0;
	if (r->have_doc)
		yaml_document_delete(&r->doc);
	tok_destroy(r->t);
	model_destroy(r->m);
	kern_destroy(r->kern); /* after the model that borrowed it */
	free(r->logits);
	free(r);
	return 0;
}

/* cmocka runs no teardown after a failed setup: clean up here then. */
static int setup_real_act(void **state, enum kern_act act)
{
	int rc = setup_real_load(state, act);
	if (rc != 0) {
		teardown_real(state);
		*state = NULL;
	}
	return rc;
}

static int setup_real(void **state)
{
	return setup_real_act(state, KERN_ACT_F32);
}

static int setup_real_q8(void **state)
{
	return setup_real_act(state, KERN_ACT_Q8);
}

/* Runs ids[0..n) from position pos0 in batches, calling back with each token's logits. */
/* Token ids (< 2^31) into the uint32_t arrays a batch takes: int32_t and uint32_t may
 * alias each other, so the fixture's reader fills them in place. */
static size_t read_ids(yaml_document_t *d, yaml_node_t *seq, uint32_t *ids, size_t cap)
{
	return ts_fx_ids(d, seq, (int32_t *)ids, cap);
}

static void run_ids(struct real *r, const uint32_t *ids, size_t n, uint32_t pos0,
		    void (*each)(void *, size_t, const float *), void *arg)
{
	uint32_t n_vocab = model_hparams(r->m)->n_vocab;
	uint32_t slots[BATCH] = {0}, pos[BATCH], out[BATCH];
	struct specd_error err;

	for (size_t b0 = 0; b0 < n; b0 += BATCH) {
		uint32_t nb = (uint32_t)(n - b0 < BATCH ? n - b0 : BATCH);
		for (uint32_t i = 0; i < nb; i++) {
			pos[i] = pos0 + (uint32_t)(b0 + i);
			out[i] = i;
		}
		struct model_batch b = {.n_tokens = nb, .tokens = ids + b0, .slots = slots,
					.pos = pos, .n_out = nb, .out_idx = out,
					.logits = r->logits};
		enum specd_status st = model_forward(r->m, &b, &err);
		if (st != SPECD_OK)
			fprintf(stderr, "model_forward: %s\n", err.msg);
		assert_int_equal(st, SPECD_OK);
		for (uint32_t i = 0; i < nb; i++)
			each(arg, b0 + i, r->logits + (size_t)i * n_vocab);
	}
}

static uint32_t argmax(const float *x, uint32_t n)
{
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

struct logit_check {
	struct real *r;
	yaml_node_t *positions;
	uint32_t n_vocab;
	size_t from;    /* positions before this one count for top-1 only */
	double max_err;
	size_t agree, n;
	double flip_margin; /* the reference's largest top-2 margin where top-1 differed */
	size_t outside;     /* positions from `from` whose top-1 of ours is not in the
			       reference's top 8 */
};

static void check_position(void *arg, size_t p, const float *logits)
{
	struct logit_check *c = arg;
	yaml_document_t *d = &c->r->doc;
	yaml_node_t *at = ts_fx_at(d, c->positions, p);
	yaml_node_t *ids = ts_fx_get(d, at, "ids"), *vals = ts_fx_get(d, at, "logits");

	for (size_t k = 0; k < ts_fx_len(ids); k++) {
		uint32_t id = (uint32_t)ts_fx_num(ts_fx_at(d, ids, k));
		assert_true(id < c->n_vocab);
		double e = fabs((double)logits[id] - ts_fx_num(ts_fx_at(d, vals, k)));
		if (p >= c->from)
			c->max_err = e > c->max_err ? e : c->max_err;
	}
	uint32_t top = argmax(logits, c->n_vocab);
	bool same = top == (uint32_t)ts_fx_num(ts_fx_at(d, ids, 0)), listed = false;
	for (size_t k = 0; k < ts_fx_len(ids); k++)
		listed |= top == (uint32_t)ts_fx_num(ts_fx_at(d, ids, k));
	c->outside += !listed && p >= c->from;
	double margin = ts_fx_num(ts_fx_at(d, vals, 0)) - ts_fx_num(ts_fx_at(d, vals, 1));
	if (!same && p >= c->from)
		c->flip_margin = margin > c->flip_margin ? margin : c->flip_margin;
	c->agree += same;
	c->n++;
}

static void test_real__logits_match_llama_cpp(void **state)
{
	struct real *r = *state;
	if (!r->m)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *lg = ts_fx_get(d, yaml_document_get_root_node(d), "logits");
	uint32_t ids[1024];
	size_t n = read_ids(d, ts_fx_get(d, lg, "ids"), ids, 1024);
	struct logit_check c = {.r = r, .positions = ts_fx_get(d, lg, "positions"),
				.n_vocab = model_hparams(r->m)->n_vocab, .from = 1};

	assert_int_equal(ts_fx_len(c.positions), n);
	assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
	run_ids(r, ids, n, 0, check_position, &c);
	fprintf(stderr, "%s: %zu positions, max |logit error| %.4f over the top 8 (from "
		"position 1), top-1 agreement %zu/%zu\n", chosen->name, c.n, c.max_err, c.agree,
		c.n);
	assert_int_equal(c.n, n);
	assert_true(c.max_err <= chosen->tol);
	/* A position whose top two are closer than the rounding may flip; a few do. */
	assert_true(c.agree * 100 >= c.n * 98);
}

/* Against the float64 numpy reference on the same dequantised weights: what is left
 * is f32 rounding, so the bound is tight and every top-1 agrees. */
static void test_real__logits_match_float_reference(void **state)
{
	struct real *r = *state;
	if (!r->m)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *root = yaml_document_get_root_node(d);
	yaml_node_t *lg = ts_fx_get(d, root, "logits"), *fl = ts_fx_get(d, root, "float_logits");
	uint32_t ids[1024];
	assert_non_null(fl);
	struct logit_check c = {.r = r, .positions = ts_fx_get(d, fl, "positions"),
				.n_vocab = model_hparams(r->m)->n_vocab};
	size_t n = ts_fx_len(c.positions);

	assert_true(read_ids(d, ts_fx_get(d, lg, "ids"), ids, 1024) >= n);
	assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
	run_ids(r, ids, n, 0, check_position, &c);
	fprintf(stderr, "%s: %zu positions, max |logit error| %.5f against float64, top-1 "
		"agreement %zu/%zu\n", chosen->name, c.n, c.max_err, c.agree, c.n);
	assert_true(c.max_err <= 0.01);
	assert_int_equal(c.agree, n);
}

/* With 8-bit activations (KERN_ACT_Q8, the daemon's default) the logits are rounded as
 * llama.cpp's are (one scale per 32 values, per 256 for K-quants), though not identically
 * (llama.cpp's Q4_1 takes Q8_1, ours Q8_0 activations): against llama.cpp and the float64
 * reference they must stay within the bound the f32 path is held to against llama.cpp,
 * and the top-1 token may differ only where the reference's top two are closer than
 * twice the largest error (a near-tie), and never to a token outside the reference's
 * top 8. */
static void test_real__q8_logits_match_llama_cpp_and_float_reference(void **state)
{
	struct real *r = *state;
	if (!r->m)
		skip();
	assert_string_equal(kern_cpu_act_of(r->kern), "q8");
	yaml_document_t *d = &r->doc;
	yaml_node_t *root = yaml_document_get_root_node(d);
	yaml_node_t *lg = ts_fx_get(d, root, "logits"), *fl = ts_fx_get(d, root, "float_logits");
	uint32_t ids[1024];
	size_t n = read_ids(d, ts_fx_get(d, lg, "ids"), ids, 1024);
	struct logit_check cl = {.r = r, .positions = ts_fx_get(d, lg, "positions"),
				 .n_vocab = model_hparams(r->m)->n_vocab, .from = 1};
	assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
	run_ids(r, ids, n, 0, check_position, &cl);
	struct logit_check cf = {.r = r, .positions = ts_fx_get(d, fl, "positions"),
				 .n_vocab = model_hparams(r->m)->n_vocab, .from = 1};
	size_t nf = ts_fx_len(cf.positions);
	assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
	run_ids(r, ids, nf, 0, check_position, &cf);
	fprintf(stderr, "%s, q8 activations: max |logit error| %.4f against llama.cpp over the "
		"top 8 (from position 1), top-1 agreement %zu/%zu (flips at margins up to %.4f); "
		"against float64 %.4f, top-1 agreement %zu/%zu (flips at margins up to %.4f)\n",
		chosen->name, cl.max_err, cl.agree, cl.n, cl.flip_margin, cf.max_err, cf.agree,
		cf.n, cf.flip_margin);
	assert_true(cl.max_err <= chosen->tol);
	assert_true(cf.max_err <= chosen->tol);
	assert_true(cl.flip_margin <= 2 * cl.max_err);
	assert_true(cf.flip_margin <= 2 * cf.max_err);
	assert_int_equal(cl.outside + cf.outside, 0);
}

struct last_logits {
	float *copy;
	uint32_t n_vocab;
};

static void keep_last(void *arg, size_t p, const float *logits)
{
	struct last_logits *l = arg;
	(void)p;
	memcpy(l->copy, logits, l->n_vocab * sizeof(float));
}

/* Greedy continuations equal llama.cpp's up to the first place where our top two are
 * within the tolerance (a near-tie either engine may break either way). */
static void test_real__greedy_matches_llama_cpp(void **state)
{
	struct real *r = *state;
	if (!r->m)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *greedy = ts_fx_get(d, yaml_document_get_root_node(d), "greedy");
	uint32_t n_vocab = model_hparams(r->m)->n_vocab;
	float *last = malloc(n_vocab * sizeof(float));
	assert_non_null(last);
	struct last_logits l = {.copy = last, .n_vocab = n_vocab};
	size_t total = 0, matched = 0;

	for (size_t g = 0; g < ts_fx_len(greedy); g++) {
		yaml_node_t *c = ts_fx_at(d, greedy, g);
		uint32_t prompt[256], want[256];
		size_t np = read_ids(d, ts_fx_get(d, c, "prompt_ids"), prompt, 256);
		size_t nw = read_ids(d, ts_fx_get(d, c, "ids"), want, 256);

		assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
		run_ids(r, prompt, np, 0, keep_last, &l);
		for (size_t i = 0; i < nw; i++) {
			uint32_t got = argmax(last, n_vocab);
			total++;
			if (got != want[i]) {
				float margin = last[got] - last[want[i]];
				fprintf(stderr, "%s: prompt %zu token %zu: %u vs llama.cpp's %u, "
					"margin %.4f\n", chosen->name, g, i, got, want[i], margin);
				assert_true(margin <= chosen->tol);
				break;
			}
			matched++;
			run_ids(r, &got, 1, (uint32_t)(np + i), keep_last, &l);
		}
	}
	fprintf(stderr, "%s: greedy tokens equal to llama.cpp's: %zu of %zu\n", chosen->name,
		matched, total);
	assert_true(matched > 0);
	free(last);
}

/* The prompt ids of the fixture decode and re-encode to themselves. */
static void test_real__tokenizer_agrees_on_logit_prompt(void **state)
{
	struct real *r = *state;
	if (!r->m)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *lg = ts_fx_get(d, yaml_document_get_root_node(d), "logits");
	uint32_t ids[1024];
	int32_t ids32[1024], again[2048];
	size_t n = read_ids(d, ts_fx_get(d, lg, "ids"), ids, 1024), len, n2;
	char *text = malloc(1 << 16);

	assert_non_null(text);
	for (size_t i = 0; i < n; i++)
		ids32[i] = (int32_t)ids[i];
	assert_int_equal(tok_decode(r->t, ids32, n, text, 1 << 16, &len), SPECD_OK);
	assert_int_equal(tok_encode(r->t, text, len, false, again, 2048, &n2), SPECD_OK);
	/* The fixture's ids are a prefix of the full prompt's: the last word may re-split. */
	assert_true(n2 >= n - 1);
	assert_memory_equal(again, ids32, (n - 1) * sizeof(int32_t));
	free(text);
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		chosen = NULL;
		for (size_t i = 0; i < sizeof(real_models) / sizeof(real_models[0]); i++)
			if (strcmp(argv[1], real_models[i].name) == 0)
				chosen = &real_models[i];
		if (!chosen) {
			fprintf(stderr, "unknown model %s\n", argv[1]);
			return 2;
		}
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_real__logits_match_llama_cpp, setup_real,
						teardown_real),
		cmocka_unit_test_setup_teardown(test_real__logits_match_float_reference, setup_real,
						teardown_real),
		cmocka_unit_test_setup_teardown(test_real__greedy_matches_llama_cpp, setup_real,
						teardown_real),
		cmocka_unit_test_setup_teardown(test_real__tokenizer_agrees_on_logit_prompt,
						setup_real, teardown_real),
		cmocka_unit_test_setup_teardown(
			test_real__q8_logits_match_llama_cpp_and_float_reference, setup_real_q8,
			teardown_real),
	};
	return cmocka_run_group_tests_name(chosen->name, tests, NULL, NULL);
}
