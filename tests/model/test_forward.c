/* model/llama: the forward pass on generated models (llama and qwen2, several weight
 * types) against a double-precision reference written here, and the exactness
 * properties speculative decoding rests on, bitwise: a batch of sequences equals each
 * alone, a prompt equals its tokens one by one, truncate + re-decode equals straight
 * decoding, a token tree equals its causal branches. Also: no allocation after load,
 * clear load errors, the communication hook's call sites, and stories260K against the
 * fixture of an independent numpy implementation (tests/fixtures/stories260K.json). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/shard.h"
#include "test_support.h"

static char g_dir[512];
static char g_llama[600];  /* f32, untied, GQA 4:2 */
static char g_qwen[600];   /* qwen2, q8_0, biases, halves RoPE */
static char g_q4[600];     /* llama, q4_1, tied */

static void gen_model(const char *out, const char *const *args)
{
	assert_int_equal(ts_gen_model(out, args), 0);
}

static int setup_models(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_llama, sizeof(g_llama), "%s/llama.gguf", g_dir);
	snprintf(g_qwen, sizeof(g_qwen), "%s/qwen.gguf", g_dir);
	snprintf(g_q4, sizeof(g_q4), "%s/q4.gguf", g_dir);
	const char *llama[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			       "--ffn", "96", "--vocab", "300", "--ctx", "64", "--type", "f32",
			       "--seed", "7", NULL};
	const char *qwen[] = {"--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
			      "--kv-heads", "1", "--ffn", "128", "--vocab", "280", "--ctx", "64",
			      "--type", "q8_0", "--seed", "8", NULL};
	const char *q4[] = {"--dim", "64", "--layers", "3", "--heads", "2", "--kv-heads", "2",
			    "--ffn", "64", "--vocab", "270", "--ctx", "64", "--type", "q4_1",
			    "--tied", "--seed", "9", NULL};
	gen_model(g_llama, llama);
	gen_model(g_qwen, qwen);
	gen_model(g_q4, q4);
	return 0;
}

static int teardown_models(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static struct model *load(const char *path, uint32_t n_slots)
{
	struct model_config cfg = {.n_slots = n_slots, .n_ctx = 48, .max_batch = 16};
	struct model *m = NULL;
	struct specd_error err;
	enum specd_status st = model_load(path, &cfg, &m, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "model_load: %s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	return m;
}

/* Runs a causal batch, logits for every token into logits (n, vocab). */
static void run(struct model *m, uint32_t n, const uint32_t *tokens, const uint32_t *slots,
		const uint32_t *pos, float *logits)
{
	uint32_t idx[64];
	for (uint32_t i = 0; i < n; i++)
		idx[i] = i;
	struct model_batch b = {.n_tokens = n, .tokens = tokens, .slots = slots, .pos = pos,
				.n_out = n, .out_idx = idx, .logits = logits};
	struct specd_error err;
	enum specd_status st = model_forward(m, &b, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "model_forward: %s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
}

/* One token of one slot, at the slot's next position. */
static void step(struct model *m, uint32_t slot, uint32_t token, float *logits)
{
	uint32_t pos = kv_len(model_kv(m), slot);
	run(m, 1, &token, &slot, &pos, logits);
}

/* ---- a double-precision reference forward (one sequence, causal) ---- */

static double *ref_weight(const struct gguf_file *f, const char *name, size_t *n_in,
			  size_t *n_out)
{
	const struct gguf_tensor *t = gguf_find_tensor(f, name);
	if (!t)
		return NULL;
	size_t ni = t->ne[0], no = t->ne[1];
	float *row = malloc(ni * sizeof(float));
	double *w = malloc(ni * no * sizeof(double));
	size_t rb = kern_dtype_row_bytes(t->type, ni);
	for (size_t o = 0; o < no; o++) {
		kern_dequant_row(t->type, (const unsigned char *)t->data + o * rb, row, ni);
		for (size_t i = 0; i < ni; i++)
			w[o * ni + i] = row[i];
	}
	free(row);
	if (n_in)
		*n_in = ni;
	if (n_out)
		*n_out = no;
	return w;
}

static void ref_matvec(double *y, const double *x, const double *w, const double *b,
		       size_t n_in, size_t n_out)
{
	for (size_t o = 0; o < n_out; o++) {
		double s = b ? b[o] : 0;
		for (size_t i = 0; i < n_in; i++)
			s += x[i] * w[o * n_in + i];
		y[o] = s;
	}
}

static void ref_rmsnorm(double *y, const double *x, const double *w, size_t n, double eps)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	double sc = 1.0 / sqrt(ss / n + eps);
	for (size_t i = 0; i < n; i++)
		y[i] = x[i] * sc * w[i];
}

static void ref_rope(double *x, size_t heads, size_t hd, size_t pos, double base, bool halves)
{
	for (size_t h = 0; h < heads; h++) {
		for (size_t j = 0; j < hd / 2; j++) {
			double th = pos * pow(base, -2.0 * j / hd);
			size_t a = h * hd + (halves ? j : 2 * j);
			size_t b = h * hd + (halves ? j + hd / 2 : 2 * j + 1);
			double u = x[a], v = x[b];
			x[a] = u * cos(th) - v * sin(th);
			x[b] = u * sin(th) + v * cos(th);
		}
	}
}

/* Logits (vocab) of the last of n tokens. */
static void ref_forward(const struct model *m, const uint32_t *toks, size_t n, double *out)
{
	const struct model_hparams *hp = model_hparams(m);
	const struct gguf_file *f = model_gguf(m);
	size_t dim = hp->dim, hd = hp->head_dim, nh = hp->n_heads, nkv = hp->n_kv_heads;
	size_t qd = nh * hd, kvd = nkv * hd, ffn = hp->ffn_dim, V = hp->n_vocab;
	bool halves = hp->arch == MODEL_ARCH_QWEN2;
	double *x = calloc(n * dim, sizeof(double)), *xb = calloc(dim, sizeof(double));
	double *q = calloc(n * qd, sizeof(double)), *k = calloc(n * kvd, sizeof(double));
	double *v = calloc(n * kvd, sizeof(double)), *att = calloc(qd, sizeof(double));
	double *o = calloc(dim, sizeof(double)), *g = calloc(ffn, sizeof(double));
	double *u = calloc(ffn, sizeof(double)), *s = calloc(n, sizeof(double));
	double *embd = ref_weight(f, "token_embd.weight", NULL, NULL);
	for (size_t t = 0; t < n; t++)
		memcpy(x + t * dim, embd + toks[t] * dim, dim * sizeof(double));
	char name[64];
#define W(part) (snprintf(name, sizeof(name), "blk.%u." part, l), ref_weight(f, name, NULL, NULL))
	for (uint32_t l = 0; l < hp->n_layers; l++) {
		double *an = W("attn_norm.weight"), *wq = W("attn_q.weight"), *wk = W("attn_k.weight");
		double *wv = W("attn_v.weight"), *wo = W("attn_output.weight");
		double *bq = W("attn_q.bias"), *bk = W("attn_k.bias"), *bv = W("attn_v.bias");
		double *fn = W("ffn_norm.weight"), *wg = W("ffn_gate.weight");
		double *wu = W("ffn_up.weight"), *wd = W("ffn_down.weight");
		for (size_t t = 0; t < n; t++) {
			ref_rmsnorm(xb, x + t * dim, an, dim, hp->rms_eps);
			ref_matvec(q + t * qd, xb, wq, bq, dim, qd);
			ref_matvec(k + t * kvd, xb, wk, bk, dim, kvd);
			ref_matvec(v + t * kvd, xb, wv, bv, dim, kvd);
			ref_rope(q + t * qd, nh, hd, t, hp->rope_base, halves);
			ref_rope(k + t * kvd, nkv, hd, t, hp->rope_base, halves);
		}
		for (size_t t = 0; t < n; t++) {
			for (size_t h = 0; h < nh; h++) {
				size_t kh = h / (nh / nkv);
				double max = -INFINITY, sum = 0;
				for (size_t r = 0; r <= t; r++) {
					s[r] = 0;
					for (size_t d = 0; d < hd; d++)
						s[r] += q[t * qd + h * hd + d] * k[r * kvd + kh * hd + d];
					s[r] /= sqrt((double)hd);
					max = fmax(max, s[r]);
				}
				for (size_t r = 0; r <= t; r++)
					sum += (s[r] = exp(s[r] - max));
				for (size_t d = 0; d < hd; d++) {
					double a = 0;
					for (size_t r = 0; r <= t; r++)
						a += s[r] / sum * v[r * kvd + kh * hd + d];
					att[h * hd + d] = a;
				}
			}
			ref_matvec(o, att, wo, NULL, qd, dim);
			for (size_t i = 0; i < dim; i++)
				x[t * dim + i] += o[i];
			ref_rmsnorm(xb, x + t * dim, fn, dim, hp->rms_eps);
			ref_matvec(g, xb, wg, NULL, dim, ffn);
			ref_matvec(u, xb, wu, NULL, dim, ffn);
			for (size_t i = 0; i < ffn; i++)
				g[i] = g[i] / (1 + exp(-g[i])) * u[i];
			ref_matvec(o, g, wd, NULL, ffn, dim);
			for (size_t i = 0; i < dim; i++)
				x[t * dim + i] += o[i];
		}
		double *all[] = {an, wq, wk, wv, wo, bq, bk, bv, fn, wg, wu, wd};
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			free(all[i]);
	}
#undef W
	double *on = ref_weight(f, "output_norm.weight", NULL, NULL);
	double *wout = ref_weight(f, "output.weight", NULL, NULL);
	ref_rmsnorm(xb, x + (n - 1) * dim, on, dim, hp->rms_eps);
	ref_matvec(out, xb, wout ? wout : embd, NULL, dim, V);
	double *all[] = {x, xb, q, k, v, att, o, g, u, s, embd, on, wout};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		free(all[i]);
}

static void check_against_reference(const char *path, enum model_arch arch)
{
	struct model *m = load(path, 1);
	const struct model_hparams *hp = model_hparams(m);
	assert_int_equal(hp->arch, arch);
	const uint32_t toks[] = {1, 77, 200, 5, 130, 42, 9};
	const size_t n = sizeof(toks) / sizeof(toks[0]);
	uint32_t slots[7] = {0}, pos[7];
	for (uint32_t i = 0; i < n; i++)
		pos[i] = i;
	float *logits = malloc(n * hp->n_vocab * sizeof(float));
	double *ref = malloc(hp->n_vocab * sizeof(double));
	run(m, (uint32_t)n, toks, slots, pos, logits);
	for (size_t t = 1; t <= n; t += 3) {
		ref_forward(m, toks, t, ref);
		double max = 0;
		for (uint32_t i = 0; i < hp->n_vocab; i++)
			max = fmax(max, fabs(ref[i]));
		assert_true(max > 0.01); /* the model computes something */
		for (uint32_t i = 0; i < hp->n_vocab; i++)
			assert_true(fabs(logits[(t - 1) * hp->n_vocab + i] - ref[i]) <= 1e-4 * (1 + max));
	}
	free(logits);
	free(ref);
	model_destroy(m);
}

static void test_forward__llama_matches_double_reference(void **state)
{
	(void)state;
	check_against_reference(g_llama, MODEL_ARCH_LLAMA);
	check_against_reference(g_q4, MODEL_ARCH_LLAMA);
}

static void test_forward__qwen2_biases_and_halves_rope_match_reference(void **state)
{
	(void)state;
	check_against_reference(g_qwen, MODEL_ARCH_QWEN2);
	struct model *m = load(g_qwen, 1);
	assert_int_equal(model_hparams(m)->wtype, KERN_Q8_0);
	assert_int_equal(model_hparams(m)->n_kv_heads, 1);
	model_destroy(m);
}

static void test_forward__batch_of_sequences_equals_each_alone(void **state)
{
	(void)state;
	const char *paths[] = {g_llama, g_qwen};
	for (int pi = 0; pi < 2; pi++) {
		struct model *m = load(paths[pi], 3);
		uint32_t V = model_hparams(m)->n_vocab;
		/* Three sequences, interleaved: slot 2 has 2 tokens, slot 0 has 4, slot 1 has 3. */
		uint32_t tok[] = {1, 1, 50, 60, 1, 51, 61, 70, 52};
		uint32_t slot[] = {0, 1, 0, 1, 2, 0, 1, 2, 0};
		uint32_t pos[] = {0, 0, 1, 1, 0, 2, 2, 1, 3};
		float *mixed = malloc(9 * V * sizeof(float)), *alone = malloc(9 * V * sizeof(float));
		run(m, 9, tok, slot, pos, mixed);
		model_destroy(m);
		for (uint32_t s = 0; s < 3; s++) {
			m = load(paths[pi], 3);
			uint32_t t[9], sl[9], p[9], idx[9], n = 0;
			for (uint32_t i = 0; i < 9; i++) {
				if (slot[i] != s)
					continue;
				t[n] = tok[i];
				sl[n] = 1; /* another slot than in the mixed run */
				p[n] = pos[i];
				idx[n++] = i;
			}
			float *out = malloc(n * V * sizeof(float));
			run(m, n, t, sl, p, out);
			for (uint32_t i = 0; i < n; i++)
				memcpy(alone + idx[i] * V, out + i * V, V * sizeof(float));
			free(out);
			model_destroy(m);
		}
		assert_memory_equal(mixed, alone, 9 * V * sizeof(float));
		free(mixed);
		free(alone);
	}
}

static void test_forward__prompt_equals_tokens_one_by_one(void **state)
{
	(void)state;
	const char *paths[] = {g_llama, g_qwen, g_q4};
	for (int pi = 0; pi < 3; pi++) {
		struct model *m = load(paths[pi], 1);
		uint32_t V = model_hparams(m)->n_vocab;
		uint32_t tok[12], slot[12] = {0}, pos[12];
		for (uint32_t i = 0; i < 12; i++) {
			tok[i] = (i * 37 + 1) % V;
			pos[i] = i;
		}
		float *batch = malloc(12 * V * sizeof(float)), *one = malloc(12 * V * sizeof(float));
		run(m, 12, tok, slot, pos, batch);
		assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
		for (uint32_t i = 0; i < 12; i++)
			step(m, 0, tok[i], one + i * V);
		assert_memory_equal(batch, one, 12 * V * sizeof(float));
		/* And split 5 + 7. */
		assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
		run(m, 5, tok, slot, pos, one);
		run(m, 7, tok + 5, slot, pos + 5, one + 5 * V);
		assert_memory_equal(batch, one, 12 * V * sizeof(float));
		free(batch);
		free(one);
		model_destroy(m);
	}
}

static void test_kv__truncate_then_redecode_equals_straight_decode(void **state)
{
	(void)state;
	struct model *m = load(g_llama, 2);
	uint32_t V = model_hparams(m)->n_vocab;
	float *straight = malloc(10 * V * sizeof(float)), *again = malloc(10 * V * sizeof(float));
	float *junk = malloc(V * sizeof(float));
	const uint32_t tok[10] = {1, 9, 8, 7, 6, 5, 4, 3, 2, 10};
	for (uint32_t i = 0; i < 10; i++)
		step(m, 0, tok[i], straight + i * V);
	/* Roll back to 4, decode other tokens (rewriting rows 4..6), roll back again. */
	assert_int_equal(kv_truncate(model_kv(m), 0, 4), SPECD_OK);
	assert_int_equal(kv_len(model_kv(m), 0), 4);
	for (uint32_t i = 0; i < 3; i++)
		step(m, 0, 100 + i, junk);
	assert_int_equal(kv_truncate(model_kv(m), 0, 4), SPECD_OK);
	for (uint32_t i = 4; i < 10; i++)
		step(m, 0, tok[i], again + i * V);
	assert_memory_equal(straight + 4 * V, again + 4 * V, 6 * V * sizeof(float));
	/* Truncation cannot grow a slot, and slot 1 was never touched. */
	assert_int_equal(kv_truncate(model_kv(m), 0, 11), SPECD_INVAL);
	assert_int_equal(kv_len(model_kv(m), 1), 0);
	free(straight);
	free(again);
	free(junk);
	model_destroy(m);
}

/* Prefix of 3 tokens, then a tree: A (root), B and C children of A, D child of C. */
static void test_forward__tree_equals_its_causal_branches(void **state)
{
	(void)state;
	struct model *m = load(g_qwen, 3);
	struct kv_cache *kv = model_kv(m);
	uint32_t V = model_hparams(m)->n_vocab;
	const uint32_t prefix[] = {1, 20, 30};
	const uint32_t A = 40, B = 50, C = 60, D = 70, E = 80;
	float *scratch = malloc(8 * V * sizeof(float));
	for (uint32_t s = 0; s < 3; s++) {
		uint32_t sl[3] = {s, s, s}, pos[3] = {0, 1, 2};
		run(m, 3, prefix, sl, pos, scratch);
	}
	uint32_t ttok[] = {A, B, C, D}, tslot[] = {0, 0, 0, 0}, tpos[] = {3, 4, 4, 5};
	int32_t parent[] = {-1, 0, 0, 2};
	uint32_t idx[] = {0, 1, 2, 3};
	float *tree = malloc(4 * V * sizeof(float)), *hidden = malloc(4 * 64 * sizeof(float));
	struct model_batch b = {.n_tokens = 4, .tokens = ttok, .slots = tslot, .pos = tpos,
				.parent = parent, .n_out = 4, .out_idx = idx, .logits = tree,
				.hidden = hidden};
	struct specd_error err;
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 7);

	/* Branch A C D in slot 1, branch A B in slot 2, causally. */
	float *acd = malloc(3 * V * sizeof(float)), *ab = malloc(2 * V * sizeof(float));
	uint32_t t1[] = {A, C, D}, s1[] = {1, 1, 1}, p1[] = {3, 4, 5};
	uint32_t t2[] = {A, B}, s2[] = {2, 2}, p2[] = {3, 4};
	run(m, 3, t1, s1, p1, acd);
	run(m, 2, t2, s2, p2, ab);
	assert_memory_equal(tree, acd, V * sizeof(float));                   /* A */
	assert_memory_equal(tree + 2 * V, acd + V, 2 * V * sizeof(float));   /* C, D */
	assert_memory_equal(tree + V, ab + V, V * sizeof(float));            /* B */

	/* Keep branch A C D (rows 3, 5, 6): the next token then equals slot 1's. */
	const uint32_t keep[] = {3, 5, 6};
	assert_int_equal(kv_compact(kv, 0, 3, keep, 3), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 6);
	step(m, 0, E, scratch);
	step(m, 1, E, scratch + V);
	assert_memory_equal(scratch, scratch + V, V * sizeof(float));

	/* A parent that is not an earlier token of the slot is refused, cache unchanged. */
	int32_t bad[] = {-1, 1};
	uint32_t bt[] = {A, B}, bs[] = {2, 2}, bp[] = {5, 6};
	struct model_batch bb = {.n_tokens = 2, .tokens = bt, .slots = bs, .pos = bp,
				 .parent = bad};
	assert_int_equal(model_forward(m, &bb, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "parent"));
	assert_int_equal(kv_len(kv, 2), 5);
	free(scratch);
	free(tree);
	free(hidden);
	free(acd);
	free(ab);
	model_destroy(m);
}

static void test_forward__hidden_outputs_are_consistent(void **state)
{
	(void)state;
	struct model *m = load(g_q4, 1); /* tied: logits = hidden . token_embd^T */
	const struct model_hparams *hp = model_hparams(m);
	uint32_t V = hp->n_vocab, dim = hp->dim;
	uint32_t tok[] = {1, 2, 3, 4, 5}, slot[5] = {0}, pos[] = {0, 1, 2, 3, 4};
	uint32_t idx[] = {4, 1}, layers[] = {hp->n_layers - 1, 0};
	float *logits = malloc(2 * V * sizeof(float)), *hidden = malloc(2 * dim * sizeof(float));
	float *lh = malloc(2 * 2 * dim * sizeof(float)), *check = malloc(2 * V * sizeof(float));
	struct model_batch b = {.n_tokens = 5, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = 2, .out_idx = idx, .logits = logits, .hidden = hidden,
				.n_layers_out = 2, .layers = layers, .layer_hidden = lh};
	struct specd_error err;
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK);

	const struct gguf_tensor *embd = gguf_find_tensor(model_gguf(m), "token_embd.weight");
	struct kern_mat w = kern_mat_packed(embd->type, dim, V, embd->data);
	assert_int_equal(kern_matmul(model_kern(m), check, V, hidden, dim, 2, &w, NULL), SPECD_OK);
	assert_memory_equal(check, logits, 2 * V * sizeof(float));

	/* The last layer's residual, normed, is the final hidden state. */
	const struct gguf_tensor *on = gguf_find_tensor(model_gguf(m), "output_norm.weight");
	float normed[2 * 64];
	assert_int_equal(kern_rmsnorm(model_kern(m), normed, dim, lh, dim, 2, dim, on->data,
				      hp->rms_eps),
			 SPECD_OK);
	assert_memory_equal(normed, hidden, 2 * dim * sizeof(float));
	/* Layer 0's output differs from the last layer's. */
	assert_true(memcmp(lh, lh + 2 * dim, dim * sizeof(float)) != 0);
	free(logits);
	free(hidden);
	free(lh);
	free(check);
	model_destroy(m);
}

/* Outputs are gathered a run of consecutive indices at a time: in any order, with
 * repeats and runs broken anywhere, each output row (logits, hidden, layer output)
 * is the row the identity order gives for its token. */
static void test_forward__outputs_in_any_order(void **state)
{
	(void)state;
	struct model *m = load(g_q4, 1);
	const struct model_hparams *hp = model_hparams(m);
	size_t V = hp->n_vocab, dim = hp->dim;
	uint32_t tok[] = {1, 2, 3, 4, 5}, slot[5] = {0}, pos[] = {0, 1, 2, 3, 4}, layer = 0;
	static const uint32_t orders[][5] = {
		{0, 1, 2, 3, 4}, {3, 4, 0, 1, 2}, {4, 3, 2, 1, 0}, {1, 2, 2, 3, 0},
	};
	float *lg[2], *hid[2], *lh[2];
	for (int i = 0; i < 2; i++) {
		lg[i] = malloc(5 * V * sizeof(float));
		hid[i] = malloc(5 * dim * sizeof(float));
		lh[i] = malloc(5 * dim * sizeof(float));
		assert_true(lg[i] && hid[i] && lh[i]);
	}
	for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
		int w = o > 0; /* order 0 is the reference */
		struct model_batch b = {.n_tokens = 5, .tokens = tok, .slots = slot, .pos = pos,
					.n_out = 5, .out_idx = orders[o], .logits = lg[w],
					.hidden = hid[w], .n_layers_out = 1, .layers = &layer,
					.layer_hidden = lh[w]};
		assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
		assert_int_equal(model_forward(m, &b, NULL), SPECD_OK);
		for (uint32_t r = 0; w && r < 5; r++) {
			uint32_t t = orders[o][r];
			assert_memory_equal(lg[1] + r * V, lg[0] + t * V, V * sizeof(float));
			assert_memory_equal(hid[1] + r * dim, hid[0] + t * dim, dim * sizeof(float));
			assert_memory_equal(lh[1] + r * dim, lh[0] + t * dim, dim * sizeof(float));
		}
	}
	for (int i = 0; i < 2; i++) {
		free(lg[i]);
		free(hid[i]);
		free(lh[i]);
	}
	model_destroy(m);
}

/* Runs b with every allocation failing: it must succeed without making any. */
static void expect_forward_allocates_nothing(struct model *m, struct model_batch *b)
{
	struct specd_error err;
	specd_alloc_fail_after(1); /* any allocation from here on fails */
	enum specd_status st = model_forward(m, b, &err);
	long count = specd_alloc_count();
	specd_alloc_fail_reset();
	assert_int_equal(st, SPECD_OK);
	assert_int_equal(count, 0);
}

static void test_forward__makes_no_allocation_after_load(void **state)
{
	(void)state;
	struct model *m = load(g_qwen, 2);
	uint32_t V = model_hparams(m)->n_vocab;
	float *logits = malloc(4 * V * sizeof(float));
	uint32_t tok[] = {1, 2, 3, 4}, slot[] = {0, 0, 1, 0}, pos[] = {0, 1, 0, 2};
	run(m, 4, tok, slot, pos, logits); /* warm-up */
	uint32_t t2[] = {5, 6}, s2[] = {0, 1}, p2[] = {3, 1};
	uint32_t idx[] = {0, 1};
	struct model_batch b = {.n_tokens = 2, .tokens = t2, .slots = s2, .pos = p2,
				.n_out = 2, .out_idx = idx, .logits = logits};
	expect_forward_allocates_nothing(m, &b);
	free(logits);
	model_destroy(m);
}

/* The same on a CPU backend with 8-bit activations, whose matmuls need a buffer for
 * the quantised rows: the load reserved it for a whole batch, so even the first and
 * largest forward allocates nothing; and a load whose reservation fails says so. */
static void test_forward__q8_backend_reserves_at_load(void **state)
{
	(void)state;
	struct kern_cpu_config kc = {.n_threads = 1, .act = KERN_ACT_Q8};
	struct kern_ctx *kern = NULL;
	assert_int_equal(kern_cpu_create(&kc, &kern), SPECD_OK);
	struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16, .kern = kern};
	struct model *m = NULL;
	struct specd_error err;
	assert_int_equal(model_load(g_q4, &cfg, &m, &err), SPECD_OK);
	uint32_t V = model_hparams(m)->n_vocab, tok[16], slot[16] = {0}, pos[16], idx[16];
	for (uint32_t i = 0; i < 16; i++)
		tok[i] = i + 1, pos[i] = i, idx[i] = i;
	float *logits = malloc(16 * V * sizeof(float));
	struct model_batch b = {.n_tokens = 16, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = 16, .out_idx = idx, .logits = logits};
	expect_forward_allocates_nothing(m, &b);
	free(logits);
	model_destroy(m);
	/* Every allocation of the load in turn fails cleanly, the reservation's included. */
	for (long n = 1;; n++) {
		specd_alloc_fail_after(n);
		enum specd_status st = model_load(g_q4, &cfg, &m, &err);
		specd_alloc_fail_reset();
		if (st == SPECD_OK)
			break;
		assert_int_equal(st, SPECD_NOMEM);
	}
	model_destroy(m);
	kern_destroy(kern);
}

static void test_forward__rejects_bad_batches_without_touching_the_cache(void **state)
{
	(void)state;
	struct model *m = load(g_llama, 2);
	struct kv_cache *kv = model_kv(m);
	uint32_t V = model_hparams(m)->n_vocab;
	float *logits = malloc(V * sizeof(float));
	step(m, 0, 1, logits);
	struct specd_error err;
	uint32_t tok[] = {5, 6}, slot[] = {0, 0}, pos[] = {1, 3}; /* 3: a gap */
	struct model_batch b = {.n_tokens = 2, .tokens = tok, .slots = slot, .pos = pos};
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "token 1: position 3, expected 2"));
	assert_int_equal(kv_len(kv, 0), 1);
	pos[1] = 2;
	tok[1] = V; /* out of the vocabulary */
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	tok[1] = 6;
	slot[1] = 2; /* no such slot */
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	slot[1] = 0;
	uint32_t idx = 2;
	b.n_out = 1;
	b.out_idx = &idx; /* past the batch */
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	b.n_out = 0;
	b.n_tokens = 17; /* above max_batch */
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	b.n_tokens = 2;
	assert_int_equal(kv_len(kv, 0), 1);
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK); /* the fixed batch runs */
	assert_int_equal(kv_len(kv, 0), 3);
	/* Fill slot 1's 48 rows; the 49th token is refused. */
	for (uint32_t i = 0; i < 48; i++)
		step(m, 1, 3, logits);
	uint32_t t = 3, s = 1, p = 48;
	struct model_batch full = {.n_tokens = 1, .tokens = &t, .slots = &s, .pos = &p};
	assert_int_equal(model_forward(m, &full, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "full"));
	free(logits);
	model_destroy(m);
}

struct comm_count {
	int calls;
	size_t floats;
};

static enum specd_status count_allreduce(float *buf, size_t n, void *user)
{
	struct comm_count *c = user;
	(void)buf;
	c->calls++;
	c->floats += n;
	return SPECD_OK;
}

static enum specd_status failing_allreduce(float *buf, size_t n, void *user)
{
	(void)buf;
	(void)n;
	(void)user;
	return SPECD_TIMEOUT;
}

static void test_forward__calls_the_comm_hook_twice_per_layer(void **state)
{
	(void)state;
	struct comm_count cc = {0};
	struct model_comm comm = {.allreduce_sum = count_allreduce, .user = &cc, .rank = 0,
				  .size = 1};
	struct model_config cfg = {.n_ctx = 32, .max_batch = 8, .comm = &comm};
	struct model *m = NULL, *plain = load(g_llama, 1);
	struct specd_error err;
	assert_int_equal(model_load(g_llama, &cfg, &m, &err), SPECD_OK);
	const struct model_hparams *hp = model_hparams(m);
	uint32_t V = hp->n_vocab;
	float *a = malloc(3 * V * sizeof(float)), *b = malloc(3 * V * sizeof(float));
	uint32_t tok[] = {1, 2, 3}, slot[] = {0, 0, 0}, pos[] = {0, 1, 2};
	run(m, 3, tok, slot, pos, a);
	run(plain, 3, tok, slot, pos, b);
	assert_int_equal(cc.calls, 2 * (int)hp->n_layers);
	assert_int_equal(cc.floats, 2 * hp->n_layers * 3 * hp->dim);
	assert_memory_equal(a, b, 3 * V * sizeof(float));
	model_destroy(m);

	/* A failing all-reduce is passed up and leaves the slot's length alone. */
	comm.allreduce_sum = failing_allreduce;
	assert_int_equal(model_load(g_llama, &cfg, &m, &err), SPECD_OK);
	uint32_t idx = 0;
	struct model_batch bt = {.n_tokens = 1, .tokens = tok, .slots = slot, .pos = pos,
				 .n_out = 1, .out_idx = &idx, .logits = a};
	assert_int_equal(model_forward(m, &bt, &err), SPECD_TIMEOUT);
	assert_int_equal(kv_len(model_kv(m), 0), 0);
	model_destroy(m);

	/* A sharded load needs the max-loc and gather callbacks too (parallel/tp.c fills
	 * them; tests/parallel/test_tp_mpi.c runs the shards). */
	comm.size = 2;
	assert_int_equal(model_load(g_llama, &cfg, &m, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "maxloc missing"));
	free(a);
	free(b);
	model_destroy(plain);
}

/* ---- malformed files, written with the GGUF writer ---- */

enum bad_kind {
	BAD_NONE, BAD_SHAPE, BAD_MISSING, BAD_ARCH, BAD_NORM_TYPE, BAD_KEY,
	/* Features the forward pass lacks, which must be refused rather than ignored. */
	BAD_ROPE_FREQS,    /* Llama 3.1's rope_freqs.weight, factors not all 1 */
	BAD_ROPE_LINEAR,   /* rope.scaling.type linear, factor 2 */
	BAD_ROPE_YARN,     /* rope.scaling.type yarn, factor 4 */
	BAD_SCALE_LINEAR,  /* the older rope.scale_linear alone (llama.cpp: linear) */
	BAD_PARTIAL_ROPE,  /* rope.dimension_count 4 of a head of 8 */
	BAD_VALUE_LENGTH,  /* attention.value_length 4 of a key head of 8 */
	BAD_EXPERTS,       /* expert_count 8 */
	BAD_OUTPUT_BIAS,   /* blk.0.attn_output.bias: a tensor nothing reads */
	BAD_FFN_BIAS,      /* blk.1.ffn_down.bias */
	BAD_EXTRA_BLOCK,   /* blk.2.attn_norm.weight in a model of 2 blocks */
	/* Variants that change nothing and load. */
	OK_ROPE_FREQS_ONES, OK_SCALING_NONE, OK_SCALING_UNIT, OK_ROPE_DIMS,
};

static void write_small_model(const char *path, enum bad_kind bad)
{
	const uint64_t dim = 32, ffn = 64, vocab = 40, hd = 8;
	struct gguf_writer *w = NULL;
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	gguf_writer_set_str(w, "general.architecture", bad == BAD_ARCH ? "gpt2" : "llama");
	gguf_writer_set_u32(w, "llama.context_length", 16);
	gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)dim);
	gguf_writer_set_u32(w, "llama.block_count", 2);
	gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)ffn);
	gguf_writer_set_u32(w, "llama.attention.head_count", 4);
	gguf_writer_set_u32(w, "llama.attention.head_count_kv", 2);
	if (bad != BAD_KEY)
		gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
	if (bad == BAD_ROPE_LINEAR || bad == BAD_ROPE_YARN || bad == OK_SCALING_NONE ||
	    bad == OK_SCALING_UNIT) {
		gguf_writer_set_str(w, "llama.rope.scaling.type", bad == BAD_ROPE_LINEAR ? "linear"
				    : bad == OK_SCALING_NONE ? "none" : "yarn");
		gguf_writer_set_f32(w, "llama.rope.scaling.factor", bad == BAD_ROPE_LINEAR ? 2.0f
				    : bad == OK_SCALING_UNIT ? 1.0f : 4.0f);
	}
	if (bad == BAD_SCALE_LINEAR)
		gguf_writer_set_f32(w, "llama.rope.scale_linear", 4.0f);
	if (bad == BAD_PARTIAL_ROPE || bad == OK_ROPE_DIMS)
		gguf_writer_set_u32(w, "llama.rope.dimension_count", bad == OK_ROPE_DIMS ? 8 : 4);
	if (bad == BAD_VALUE_LENGTH)
		gguf_writer_set_u32(w, "llama.attention.value_length", 4);
	if (bad == BAD_EXPERTS)
		gguf_writer_set_u32(w, "llama.expert_count", 8);
	float *data = calloc(vocab * dim + ffn * dim, sizeof(float));
	for (size_t i = 0; i < vocab * dim + ffn * dim; i++)
		data[i] = (float)((i * 7919) % 13) * 0.01f - 0.06f;
	unsigned char f16[2 * 32];
	memset(f16, 0, sizeof(f16));
#define ADD(name, a, b)                                                                     \
	do {                                                                                \
		uint64_t ne[2] = {a, b};                                                    \
		assert_int_equal(gguf_writer_add_tensor(w, name, KERN_F32, b > 1 ? 2 : 1, ne, data), \
				 SPECD_OK);                                                 \
	} while (0)
	ADD("token_embd.weight", dim, vocab);
	for (int l = 0; l < 2; l++) {
		char n[64];
		snprintf(n, sizeof(n), "blk.%d.attn_norm.weight", l);
		if (bad == BAD_NORM_TYPE && l == 0) {
			uint64_t ne[1] = {dim};
			assert_int_equal(gguf_writer_add_tensor(w, n, KERN_F16, 1, ne, f16), SPECD_OK);
		} else {
			ADD(n, dim, 1);
		}
		snprintf(n, sizeof(n), "blk.%d.attn_q.weight", l);
		ADD(n, dim, 4 * hd);
		snprintf(n, sizeof(n), "blk.%d.attn_k.weight", l);
		if (!(bad == BAD_MISSING && l == 0))
			ADD(n, dim, 2 * hd);
		snprintf(n, sizeof(n), "blk.%d.attn_v.weight", l);
		ADD(n, dim, 2 * hd);
		snprintf(n, sizeof(n), "blk.%d.attn_output.weight", l);
		ADD(n, 4 * hd, dim);
		snprintf(n, sizeof(n), "blk.%d.ffn_norm.weight", l);
		ADD(n, dim, 1);
		snprintf(n, sizeof(n), "blk.%d.ffn_gate.weight", l);
		ADD(n, dim, ffn);
		snprintf(n, sizeof(n), "blk.%d.ffn_up.weight", l);
		if (bad == BAD_SHAPE && l == 1)
			ADD(n, dim, ffn - 32);
		else
			ADD(n, dim, ffn);
		snprintf(n, sizeof(n), "blk.%d.ffn_down.weight", l);
		ADD(n, ffn, dim);
	}
	ADD("output_norm.weight", dim, 1);
	if (bad == BAD_ROPE_FREQS || bad == OK_ROPE_FREQS_ONES) {
		const float factors[4] = {1.0f, 1.0f, bad == BAD_ROPE_FREQS ? 0.25f : 1.0f, 1.0f};
		uint64_t ne[1] = {hd / 2};
		assert_int_equal(gguf_writer_add_tensor(w, "rope_freqs.weight", KERN_F32, 1, ne,
							factors), SPECD_OK);
	}
	if (bad == BAD_OUTPUT_BIAS)
		ADD("blk.0.attn_output.bias", dim, 1);
	if (bad == BAD_FFN_BIAS)
		ADD("blk.1.ffn_down.bias", dim, 1);
	if (bad == BAD_EXTRA_BLOCK)
		ADD("blk.2.attn_norm.weight", dim, 1);
#undef ADD
	struct specd_error err;
	assert_int_equal(gguf_writer_write(w, path, 3, &err), SPECD_OK);
	gguf_writer_destroy(w);
	free(data);
}

static void test_load__errors_name_the_tensor_or_key(void **state)
{
	(void)state;
	struct {
		enum bad_kind kind;
		enum specd_status st;
		const char *msg, *msg2;
	} cases[] = {
		{BAD_SHAPE, SPECD_INVAL,
		 "tensor blk.1.ffn_up.weight: shape [32, 32], expected [32, 64]", NULL},
		{BAD_MISSING, SPECD_INVAL, "tensor blk.0.attn_k.weight: missing", NULL},
		{BAD_ARCH, SPECD_UNSUPPORTED, "general.architecture 'gpt2'", NULL},
		{BAD_NORM_TYPE, SPECD_UNSUPPORTED, "blk.0.attn_norm.weight: type f16", NULL},
		{BAD_KEY, SPECD_INVAL, "llama.attention.layer_norm_rms_epsilon: missing", NULL},
	};
	char path[600];
	snprintf(path, sizeof(path), "%s/bad.gguf", g_dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_small_model(path, cases[i].kind);
		struct model *m = NULL;
		struct specd_error err;
		assert_int_equal(model_load(path, NULL, &m, &err), cases[i].st);
		assert_null(m);
		if (!strstr(err.msg, cases[i].msg))
			fail_msg("error '%s' lacks '%s'", err.msg, cases[i].msg);
		if (cases[i].msg2 && !strstr(err.msg, cases[i].msg2))
			fail_msg("error '%s' lacks '%s'", err.msg, cases[i].msg2);
		assert_non_null(strstr(err.msg, path)); /* and names the file */
	}
	/* The well-formed one loads, tied to token_embd. */
	write_small_model(path, BAD_NONE);
	struct model *m = NULL;
	struct specd_error err;
	assert_int_equal(model_load(path, NULL, &m, &err), SPECD_OK);
	assert_true(model_hparams(m)->tied_output);
	assert_int_equal(model_hparams(m)->n_vocab, 40);
	assert_int_equal(model_hparams(m)->head_dim, 8);
	assert_int_equal(kv_n_ctx(model_kv(m)), 16); /* context_length by default */
	model_destroy(m);
	assert_int_equal(model_load("/nonexistent/x.gguf", NULL, &m, &err), SPECD_IO);
}

/* Keys and tensors that change the output, which the forward pass does not compute,
 * are refused naming the key or tensor: before, such files loaded and quietly wrote
 * other text. Unscaled variants (type none, factor 1, every frequency factor 1, a
 * rotary dimension of the whole head) load. */
static void test_load__refuses_what_the_forward_would_ignore(void **state)
{
	(void)state;
	struct {
		enum bad_kind kind;
		const char *msg, *msg2;
	} cases[] = {
		{BAD_ROPE_FREQS, "tensor rope_freqs.weight: RoPE frequency factors",
		 "not supported; factor 2 is 0.25"},
		{BAD_ROPE_LINEAR, "rope scaling 'linear' by 2 (llama.rope.scaling.type, "
		 "llama.rope.scaling.factor) is not supported", NULL},
		{BAD_ROPE_YARN, "rope scaling 'yarn' by 4", "not supported"},
		{BAD_SCALE_LINEAR, "rope scaling 'linear' by 4 (llama.rope.scale_linear) is not "
		 "supported", NULL},
		{BAD_PARTIAL_ROPE, "llama.rope.dimension_count 4 with a head size of 8",
		 "partial rotary embedding is not supported"},
		{BAD_VALUE_LENGTH, "llama.attention.value_length 4", "not supported"},
		{BAD_EXPERTS, "llama.expert_count 8", "not supported"},
		{BAD_OUTPUT_BIAS, "tensor blk.0.attn_output.bias: not supported",
		 "(1 of the file's 21 tensors unused)"},
		{BAD_FFN_BIAS, "tensor blk.1.ffn_down.bias: not supported", NULL},
		{BAD_EXTRA_BLOCK, "tensor blk.2.attn_norm.weight: not supported", NULL},
	};
	enum bad_kind fine[] = {OK_ROPE_FREQS_ONES, OK_SCALING_NONE, OK_SCALING_UNIT,
				OK_ROPE_DIMS};
	char path[600];
	struct model *m = NULL;
	struct specd_error err;
	snprintf(path, sizeof(path), "%s/unsupported.gguf", g_dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_small_model(path, cases[i].kind);
		enum specd_status st = model_load(path, NULL, &m, &err);
		if (st != SPECD_UNSUPPORTED)
			fail_msg("case %zu: %s: %s", i, specd_status_str(st),
				 st == SPECD_OK ? "loaded" : err.msg);
		assert_null(m);
		if (!strstr(err.msg, cases[i].msg))
			fail_msg("error '%s' lacks '%s'", err.msg, cases[i].msg);
		if (cases[i].msg2 && !strstr(err.msg, cases[i].msg2))
			fail_msg("error '%s' lacks '%s'", err.msg, cases[i].msg2);
	}
	for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
		write_small_model(path, fine[i]);
		enum specd_status st = model_load(path, NULL, &m, &err);
		if (st != SPECD_OK)
			fail_msg("variant %zu: %s", i, err.msg);
		model_destroy(m);
		m = NULL;
	}
	/* Every model the generator writes uses each of its tensors. */
	const char *const gens[] = {g_llama, g_qwen, g_q4};
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(model_load(gens[i], NULL, &m, &err), SPECD_OK);
		model_destroy(m);
		m = NULL;
	}
}

static void test_load__fails_cleanly_on_every_allocation(void **state)
{
	(void)state;
	for (long n = 1;; n++) {
		struct model *m = NULL;
		struct specd_error err;
		/* huge_pages_max: its block is one more allocation that can fail */
		struct model_config cfg = {.n_ctx = 16, .max_batch = 4, .huge_pages_max = SIZE_MAX};
		specd_alloc_fail_after(n);
		enum specd_status st = model_load(g_q4, &cfg, &m, &err);
		specd_alloc_fail_reset();
		if (st == SPECD_OK) {
			model_destroy(m);
			assert_true(n > 3);
			break;
		}
		assert_int_equal(st, SPECD_NOMEM);
		assert_null(m);
	}
}

/* ---- stories260K against the numpy fixture ---- */

/* The integers of the JSON array that follows `key` after position `from`. */
static size_t json_ints(const char *from, const char *key, long *out, size_t cap)
{
	const char *p = strstr(from, key);
	assert_non_null(p);
	p = strchr(p, '[');
	assert_non_null(p);
	size_t n = 0;
	for (p++; *p && *p != ']';) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p) {
			p++;
			continue;
		}
		assert_true(n < cap);
		out[n++] = v;
		p = end;
	}
	return n;
}

static char *read_text(const char *path)
{
	size_t n;
	return ts_read_file(path, &n);
}

static struct model *load_stories(char **fixture)
{
	char path[600];
	if (!ts_model_path("stories260K.gguf", path, sizeof(path)))
		return NULL;
	char fx[600];
	snprintf(fx, sizeof(fx), "%s/tests/fixtures/stories260K.json", ts_source_dir());
	*fixture = read_text(fx);
	struct model_config cfg = {.n_ctx = 512, .max_batch = 64};
	struct model *m = NULL;
	struct specd_error err;
	enum specd_status st = model_load(path, &cfg, &m, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "%s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	return m;
}

static void greedy(struct model *m, const long *prompt, size_t n_prompt, uint32_t *out,
		   size_t n)
{
	uint32_t V = model_hparams(m)->n_vocab;
	float *logits = malloc(V * sizeof(float));
	uint32_t tok[64], slot[64] = {0}, pos[64], idx = (uint32_t)n_prompt - 1;
	for (size_t i = 0; i < n_prompt; i++) {
		tok[i] = (uint32_t)prompt[i];
		pos[i] = (uint32_t)i;
	}
	assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
	struct model_batch b = {.n_tokens = (uint32_t)n_prompt, .tokens = tok, .slots = slot,
				.pos = pos, .n_out = 1, .out_idx = &idx, .logits = logits};
	struct specd_error err;
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(kern_argmax(model_kern(m), &out[i], logits, V, 1, V), SPECD_OK);
		if (i + 1 < n)
			step(m, 0, out[i], logits);
	}
	free(logits);
}

static void test_stories260k__greedy_matches_fixture(void **state)
{
	(void)state;
	char *fx = NULL;
	struct model *m = load_stories(&fx);
	if (!m)
		skip();
	const struct model_hparams *hp = model_hparams(m);
	assert_int_equal(hp->dim, 64);
	assert_int_equal(hp->n_layers, 5);
	assert_int_equal(hp->n_kv_heads, 4);
	assert_int_equal(hp->n_vocab, 512);
	/* Default prompt ids of "Once upon a time" (with BOS) if the fixture is absent. */
	long prompt[64] = {1, 403, 407, 261, 378}, want[64];
	size_t n_prompt = 5, n_want = 0;
	if (fx) {
		const char *p = strstr(fx, "\"greedy\": {");
		assert_non_null(p);
		p = strstr(p, "\"text\": \"Once upon a time\"");
		assert_non_null(p);
		n_prompt = json_ints(p, "\"ids\"", prompt, 64);
		n_want = json_ints(p, "\"greedy\"", want, 64);
		assert_true(n_want >= 16);
	}
	uint32_t a[64], b[64];
	size_t n = n_want ? n_want : 32;
	greedy(m, prompt, n_prompt, a, n);
	greedy(m, prompt, n_prompt, b, n);
	assert_memory_equal(a, b, n * sizeof(uint32_t)); /* deterministic */
	for (size_t i = 0; i < n_want; i++) {
		if ((long)a[i] != want[i])
			fail_msg("greedy token %zu: %u, fixture %ld", i, a[i], want[i]);
	}
	free(fx);
	model_destroy(m);
}

static void test_stories260k__logits_and_perplexity_match_fixture(void **state)
{
	(void)state;
	char *fx = NULL;
	struct model *m = load_stories(&fx);
	if (!m || !fx) {
		model_destroy(m);
		free(fx);
		skip();
	}
	uint32_t V = model_hparams(m)->n_vocab;
	const char *lg = strstr(fx, "\"logits\": {");
	assert_non_null(lg);
	long ids[64], positions[8];
	size_t n_ids = json_ints(lg, "\"ids\"", ids, 64);
	size_t n_pos = json_ints(lg, "\"positions\"", positions, 8);
	uint32_t tok[64], slot[64] = {0}, pos[64], idx[8];
	for (size_t i = 0; i < n_ids; i++) {
		tok[i] = (uint32_t)ids[i];
		pos[i] = (uint32_t)i;
	}
	for (size_t i = 0; i < n_pos; i++)
		idx[i] = (uint32_t)positions[i];
	float *logits = malloc(n_pos * V * sizeof(float));
	struct model_batch b = {.n_tokens = (uint32_t)n_ids, .tokens = tok, .slots = slot,
				.pos = pos, .n_out = (uint32_t)n_pos, .out_idx = idx,
				.logits = logits};
	struct specd_error err;
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK);
	const char *p = strchr(strstr(lg, "\"values\""), '[') + 1;
	double max_diff = 0;
	for (size_t r = 0; r < n_pos; r++) {
		p = strchr(p, '[') + 1;
		for (uint32_t i = 0; i < V; i++) {
			char *end;
			double v = strtod(p, &end);
			assert_true(end != p);
			max_diff = fmax(max_diff, fabs(v - logits[r * V + i]));
			p = end + strspn(end, ", \n");
		}
	}
	if (max_diff > 1e-4)
		fail_msg("logits differ from the fixture by %g", max_diff);

	/* Perplexity: mean NLL over the fixture's text, in batches of 64. */
	const char *pp = strstr(fx, "\"perplexity\": {");
	assert_non_null(pp);
	long *pids = malloc(4096 * sizeof(long));
	size_t np = json_ints(pp, "\"ids\"", pids, 4096);
	const char *mn = strstr(pp, "\"mean_nll\":");
	assert_non_null(mn);
	double want_nll = strtod(mn + strlen("\"mean_nll\":"), NULL);
	assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
	float *lb = malloc(64 * V * sizeof(float));
	double nll = 0;
	for (size_t s = 0; s + 1 < np; s += 64) {
		uint32_t n = (uint32_t)(np - 1 - s < 64 ? np - 1 - s : 64);
		for (uint32_t i = 0; i < n; i++) {
			tok[i] = (uint32_t)pids[s + i];
			pos[i] = (uint32_t)(s + i);
		}
		run(m, n, tok, slot, pos, lb);
		for (uint32_t i = 0; i < n; i++) {
			const float *l = lb + (size_t)i * V;
			double max = -INFINITY, sum = 0;
			for (uint32_t j = 0; j < V; j++)
				max = fmax(max, l[j]);
			for (uint32_t j = 0; j < V; j++)
				sum += exp(l[j] - max);
			nll += -(l[pids[s + i + 1]] - max - log(sum));
		}
	}
	nll /= (double)(np - 1);
	if (fabs(nll - want_nll) > 1e-4)
		fail_msg("mean NLL %.8f, fixture %.8f", nll, want_nll);
	free(pids);
	free(lb);
	free(logits);
	free(fx);
	model_destroy(m);
}

static enum specd_status unused_maxloc(float *val, int32_t *idx, size_t n, void *user)
{
	(void)val;
	(void)idx;
	(void)n;
	(void)user;
	return SPECD_INVAL; /* a load calls no collective */
}

static enum specd_status unused_gather(const float *send, float *recv, const size_t *counts,
				       const size_t *displs, void *user)
{
	(void)send;
	(void)recv;
	(void)counts;
	(void)displs;
	(void)user;
	return SPECD_INVAL;
}

/* The logits of a 6-token prompt are bitwise the same from both models; frees both. */
static void expect_same_logits(struct model *a, struct model *b, size_t n_vocab)
{
	const uint32_t toks[6] = {1, 17, 42, 99, 5, 250};
	const uint32_t slots[6] = {0};
	const uint32_t pos[6] = {0, 1, 2, 3, 4, 5};
	float *la = calloc(6 * n_vocab, sizeof(float)), *lb = calloc(6 * n_vocab, sizeof(float));
	assert_true(la && lb);
	run(a, 6, toks, slots, pos, la);
	run(b, 6, toks, slots, pos, lb);
	assert_memory_equal(la, lb, 6 * n_vocab * sizeof(float));
	free(la);
	free(lb);
	model_destroy(a);
	model_destroy(b);
}

/* Shard 1 of 2 (comm counts its allreduce calls into cc) holding its f32 weights as
 * f16, O's and down's column slices copied: the shard the dtype and huge-page tests
 * load. */
static struct model_config f16_shard(struct model_comm *comm, struct comm_count *cc)
{
	*comm = (struct model_comm){.allreduce_sum = count_allreduce, .maxloc = unused_maxloc,
				    .gather = unused_gather, .user = cc, .rank = 1, .size = 2};
	return (struct model_config){.n_slots = 1, .n_ctx = 48, .max_batch = 16, .comm = comm,
				     .convert = true, .weight_type = KERN_F16};
}

/* model_config.convert (target.dtype): f32 weights held as f16 or bf16 compute bit for
 * bit what the same weights written in that type compute (specd-gen-model rounds its
 * f32 values as the conversion does); quantised matrices stay as they are. */
static void test_load__dtype_holds_weights_as_asked(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum kern_dtype type;
	} types[] = {{"f16", KERN_F16}, {"bf16", KERN_BF16}};
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		char path[700];
		snprintf(path, sizeof(path), "%s/llama_%s.gguf", g_dir, types[t].name);
		const char *args[] = {"--dim", "64", "--layers", "2", "--heads", "4",
				      "--kv-heads", "2", "--ffn", "96", "--vocab", "300", "--ctx",
				      "64", "--type", types[t].name, "--seed", "7", NULL};
		gen_model(path, args);
		struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16,
					   .convert = true, .weight_type = types[t].type};
		struct model *conv = NULL, *file = load(path, 1);
		struct specd_error err;
		assert_int_equal(model_load(g_llama, &cfg, &conv, &err), SPECD_OK);
		assert_int_equal(model_hparams(conv)->wtype, types[t].type);
		assert_true(model_resident_bytes(conv) == model_resident_bytes(file));
		expect_same_logits(conv, file, 300);
	}
	/* A quantised model: nothing to hold otherwise, the same logits. */
	struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16, .convert = true,
				   .weight_type = KERN_BF16};
	struct model *conv = NULL, *plain = load(g_q4, 1);
	struct specd_error err;
	assert_int_equal(model_load(g_q4, &cfg, &conv, &err), SPECD_OK);
	assert_int_equal(model_hparams(conv)->wtype, KERN_Q4_1);
	expect_same_logits(conv, plain, 270);
	/* A shard (1 of 2) converts only its own slices, the copied column slices of O and
	 * down included: it holds what the same shard of the f16 file holds. */
	struct model_comm comm;
	struct comm_count cc = {0};
	char f16[700];
	snprintf(f16, sizeof(f16), "%s/llama_f16.gguf", g_dir);
	struct model_config shard = f16_shard(&comm, &cc);
	struct model *a_shard = NULL, *b_shard = NULL;
	assert_int_equal(model_load(g_llama, &shard, &a_shard, &err), SPECD_OK);
	shard.convert = false;
	assert_int_equal(model_load(f16, &shard, &b_shard, &err), SPECD_OK);
	assert_int_equal(model_hparams(a_shard)->wtype, KERN_F16);
	assert_true(model_resident_bytes(a_shard) == model_resident_bytes(b_shard));
	model_destroy(a_shard);
	model_destroy(b_shard);

	/* Quantised types are no type to hold weights in. */
	cfg.weight_type = KERN_Q8_0;
	assert_int_equal(model_load(g_llama, &cfg, &conv, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "f32, f16 or bf16"));
}

/* model_config.huge_pages_max: the matrices copied into huge pages compute exactly what
 * they compute from the file, for a whole model (untied and tied), a quantised one,
 * and a shard whose O and down slices are copies and whose weights were converted. */
static void test_load__huge_pages_change_no_logit(void **state)
{
	(void)state;
	char tied[700];
	snprintf(tied, sizeof(tied), "%s/llama_tied.gguf", g_dir);
	const char *args[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			      "--ffn", "96", "--vocab", "300", "--ctx", "64", "--type", "q8_0",
			      "--tied", "--seed", "3", NULL};
	gen_model(tied, args);
	const struct {
		const char *path;
		size_t n_vocab;
	} files[] = {{g_llama, 300}, {g_q4, 270}, {tied, 300}};
	struct specd_error err;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16,
					   .huge_pages_max = SIZE_MAX};
		struct model *huge = NULL, *file = load(files[i].path, 1);
		assert_int_equal(model_load(files[i].path, &cfg, &huge, &err), SPECD_OK);
		assert_true(model_huge_bytes(huge) > 0);
		assert_int_equal(model_huge_bytes(file), 0);
		expect_same_logits(huge, file, files[i].n_vocab);
	}
	struct comm_count cc = {0};
	struct model_comm comm;
	struct model_config shard = f16_shard(&comm, &cc);
	struct model *a = NULL, *b = NULL;
	assert_int_equal(model_load(g_llama, &shard, &a, &err), SPECD_OK);
	shard.huge_pages_max = SIZE_MAX;
	assert_int_equal(model_load(g_llama, &shard, &b, &err), SPECD_OK);
	assert_true(model_huge_bytes(b) > 0);
	assert_true(model_resident_bytes(a) == model_resident_bytes(b));
	expect_same_logits(a, b, 150);
	/* A copy larger than huge_pages_max is not made: the model loads from the mapping. */
	struct model_config small = {.n_slots = 1, .n_ctx = 48, .max_batch = 16,
				     .huge_pages_max = 1024};
	struct model *m = NULL;
	assert_int_equal(model_load(g_llama, &small, &m, &err), SPECD_OK);
	assert_int_equal(model_huge_bytes(m), 0);
	model_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forward__llama_matches_double_reference),
		cmocka_unit_test(test_forward__qwen2_biases_and_halves_rope_match_reference),
		cmocka_unit_test(test_forward__batch_of_sequences_equals_each_alone),
		cmocka_unit_test(test_forward__prompt_equals_tokens_one_by_one),
		cmocka_unit_test(test_kv__truncate_then_redecode_equals_straight_decode),
		cmocka_unit_test(test_forward__tree_equals_its_causal_branches),
		cmocka_unit_test(test_forward__hidden_outputs_are_consistent),
		cmocka_unit_test(test_forward__outputs_in_any_order),
		cmocka_unit_test(test_forward__makes_no_allocation_after_load),
		cmocka_unit_test(test_forward__q8_backend_reserves_at_load),
		cmocka_unit_test(test_forward__rejects_bad_batches_without_touching_the_cache),
		cmocka_unit_test(test_forward__calls_the_comm_hook_twice_per_layer),
		cmocka_unit_test(test_load__errors_name_the_tensor_or_key),
		cmocka_unit_test(test_load__refuses_what_the_forward_would_ignore),
		cmocka_unit_test(test_load__dtype_holds_weights_as_asked),
		cmocka_unit_test(test_load__huge_pages_change_no_logit),
		cmocka_unit_test(test_load__fails_cleanly_on_every_allocation),
		cmocka_unit_test(test_stories260k__greedy_matches_fixture),
		cmocka_unit_test(test_stories260k__logits_and_perplexity_match_fixture),
	};
	return cmocka_run_group_tests(tests, setup_models, teardown_models);
}
