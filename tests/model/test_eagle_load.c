/* model_load_eagle (model/eagle_load.c) on specd-gen-heads --eagle checkpoints for
 * generated targets: the sizes it reads from config.json and their defaults, the first
 * layer without an input norm, a pass-through layer giving back the feature and the
 * target's own logits, features required by EAGLE layers only, the weight bytes; and
 * hidden-only outputs (model_batch.n_hidden_only) of an ordinary model. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "model/eagle.h"
#include "model/kv.h"
#include "model/llama.h"
#include "../drafters/spec_fixture.h"
#include "test_support.h"

#define DIM 48
#define VOCAB 260
#define N 8 /* tokens of the test batches */

static char g_dir[512], g_target[600];
static struct model *g_t;
static const int32_t k_tokens[N + 1] = {1, 70, 71, 72, 70, 71, 9, 250, 3};
/* The target's hidden states and logits at k_tokens[0 .. N): the features of an EAGLE
 * batch over k_tokens[1 .. N]. */
static float g_feat[N * DIM], g_logits[N * VOCAB];

static int setup(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	fx_gen_model(g_target, (const char *[]){"--dim", "48", "--layers", "2", "--heads", "4",
						"--kv-heads", "2", "--ffn", "96", "--vocab", "260",
						"--ctx", "128", "--seed", "11", NULL});
	g_t = fx_load(g_target, 1, 64);
	fx_forward_all(g_t, k_tokens, N, g_feat, g_logits);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	model_destroy(g_t);
	ts_rmtree(g_dir);
	return 0;
}

/* An EAGLE checkpoint g_dir/name for target (specd-gen-heads --eagle -m target args). */
static const char *ckpt(const char *name, const char *target, const char *const *args,
			char *dir, size_t size)
{
	const char *all[16] = {"-m", target};
	int n = 2;
	for (int i = 0; args[i]; i++)
		all[n++] = args[i];
	all[n] = NULL;
	snprintf(dir, size, "%s/%s", g_dir, name);
	fx_gen_eagle(dir, all, false);
	return dir;
}

/* config.json of dir with the keys `drop` (NULL-terminated) removed and `set` (JSON)
 * merged in. */
static void config_edit(const char *dir, const char *const *drop, const char *set)
{
	char file[700];
	snprintf(file, sizeof(file), "%s/config.json", dir);
	json_t *c = json_load_file(file, 0, NULL);
	assert_non_null(c);
	for (int i = 0; drop && drop[i]; i++)
		assert_int_equal(json_object_del(c, drop[i]), 0);
	json_t *s = json_loads(set ? set : "{}", 0, NULL);
	assert_non_null(s);
	assert_int_equal(json_object_update(c, s), 0);
	json_decref(s);
	assert_int_equal(json_dump_file(c, file, 0), 0);
	json_decref(c);
}

static struct model *load(const char *dir, const struct model *target)
{
	struct model_config mc = {.n_slots = 1, .n_ctx = 32};
	struct specd_error err;
	struct model *m = NULL;
	if (model_load_eagle(dir, target, &mc, &m, &err) != SPECD_OK)
		fail_msg("%s: %s", dir, err.msg);
	return m;
}

static void expect_refusal(const char *dir, const struct model_config *mc, enum specd_status want,
			   const char *needle)
{
	struct specd_error err;
	struct model *m = NULL;
	specd_error_clear(&err);
	enum specd_status st = model_load_eagle(dir, g_t, mc, &m, &err);
	assert_null(m);
	if (st != want || !strstr(err.msg, needle))
		fail_msg("%s: %s '%s'; wanted %s saying '%s'", dir ? dir : "(null)",
			 specd_status_str(st), err.msg, specd_status_str(want), needle);
}

/* The layer's outputs for k_tokens[1 .. N] after the target's states g_feat, from an
 * empty cache: hidden (N, DIM) and logits (N, VOCAB). */
static void eagle_forward(struct model *m, float *hidden, float *logits)
{
	uint32_t tok[N], slot[N] = {0}, pos[N], idx[N];
	for (uint32_t i = 0; i < N; i++) {
		tok[i] = (uint32_t)k_tokens[i + 1];
		pos[i] = idx[i] = i;
	}
	struct model_batch b = {.n_tokens = N, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = N, .out_idx = idx, .logits = logits, .hidden = hidden,
				.features = g_feat};
	struct specd_error err;
	assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
	if (model_forward(m, &b, &err) != SPECD_OK)
		fail_msg("eagle forward: %s", err.msg);
}

static void test_eagle_load__reads_its_sizes_from_config_json(void **state)
{
	(void)state;
	char mha[600], qwen[600], dir[700];
	snprintf(mha, sizeof(mha), "%s/mha.gguf", g_dir);
	snprintf(qwen, sizeof(qwen), "%s/qwen.gguf", g_dir);
	fx_gen_model(mha, (const char *[]){"--dim", "48", "--layers", "1", "--heads", "4",
					   "--kv-heads", "4", "--ffn", "80", "--vocab", "260",
					   "--ctx", "256", "--seed", "5", NULL});
	fx_gen_model(qwen, (const char *[]){"--arch", "qwen2", "--dim", "64", "--layers", "1",
					    "--heads", "4", "--kv-heads", "2", "--ffn", "128",
					    "--vocab", "260", "--ctx", "128", "--seed", "6", NULL});
	struct model *t = fx_load(mha, 1, 16), *q = fx_load(qwen, 1, 16);

	/* head_dim and num_key_value_heads absent: dim / heads and heads */
	ckpt("mha", mha, (const char *[]){NULL}, dir, sizeof(dir));
	config_edit(dir, (const char *[]){"head_dim", "num_key_value_heads",
					  "max_position_embeddings", NULL},
		    "{\"rms_norm_eps\": 1e-4, \"rope_theta\": 5000.0}");
	struct model *m = load(dir, t);
	const struct model_hparams *hp = model_hparams(m);
	assert_int_equal(hp->arch, MODEL_ARCH_LLAMA);
	assert_int_equal(hp->dim, 48);
	assert_int_equal(hp->n_layers, 1);
	assert_int_equal(hp->n_heads, 4);
	assert_int_equal(hp->n_kv_heads, 4);
	assert_int_equal(hp->head_dim, 12);
	assert_int_equal(hp->ffn_dim, 80);
	assert_int_equal(hp->n_vocab, 260);
	assert_int_equal(hp->n_ctx_train, 256);
	assert_true(hp->rms_eps == 1e-4f);
	assert_true(hp->rope_base == 5000.0f);
	assert_true(model_eagle_weight_bytes(m) > 0);
	model_destroy(m);

	/* qwen2 named by its architectures only; GQA heads and two layers from the file */
	ckpt("qwen", qwen, (const char *[]){"--layers", "2", NULL}, dir, sizeof(dir));
	config_edit(dir, (const char *[]){"model_type", NULL}, NULL);
	m = load(dir, q);
	hp = model_hparams(m);
	assert_int_equal(hp->arch, MODEL_ARCH_QWEN2);
	assert_int_equal(hp->n_layers, 2);
	assert_int_equal(hp->n_kv_heads, 2);
	assert_int_equal(hp->head_dim, 16);
	assert_int_equal(hp->dim, 64);
	model_destroy(m);

	/* sizes the tensors contradict, or heads that cannot be split */
	ckpt("head-dim", g_target, (const char *[]){NULL}, dir, sizeof(dir));
	config_edit(dir, NULL, "{\"head_dim\": 6}");
	expect_refusal(dir, NULL, SPECD_INVAL, "layers.0.self_attn.q_proj.weight is 48 x 48");
	expect_refusal(dir, NULL, SPECD_INVAL, "24 x 48");
	config_edit(dir, NULL, "{\"head_dim\": 12, \"num_key_value_heads\": 3}");
	expect_refusal(dir, NULL, SPECD_UNSUPPORTED, "over 3 KV heads");
	config_edit(dir, NULL, "{\"num_key_value_heads\": 2, \"intermediate_size\": 97}");
	expect_refusal(dir, NULL, SPECD_INVAL, "layers.0.mlp.gate_proj.weight is 96 x 48");
	model_destroy(t);
	model_destroy(q);
}

static float three(uint64_t r, uint64_t c, float old, void *user)
{
	(void)c, (void)old, (void)user;
	return 3.0f + 0.25f * (float)(r % 5);
}

/* A checkpoint WITH layers.0.input_layernorm.weight loads, warns and computes what the
 * one without does; layer 1's input norm is read. */
static void test_eagle_load__the_first_layer_has_no_input_norm(void **state)
{
	(void)state;
	char base[700], norm0[700], norm1[700];
	const char *args[] = {"--layers", "2", "--seed", "7", NULL};
	static float h0[N * DIM], h1[N * DIM], l0[N * VOCAB], l1[N * VOCAB];
	struct model *m = load(ckpt("norm-none", g_target, args, base, sizeof(base)), g_t);
	eagle_forward(m, h0, l0);
	model_destroy(m);

	char file[800];
	snprintf(file, sizeof(file), "%s/model.safetensors",
		 ckpt("norm-0", g_target, args, norm0, sizeof(norm0)));
	fx_st_add(file, "layers.0.input_layernorm.weight", DIM, three, NULL);
	ts_log_capture_begin();
	m = load(norm0, g_t);
	const char *log = ts_log_captured();
	if (!strstr(log, "layers.0.input_layernorm.weight is ignored"))
		fail_msg("no warning: '%s'", log);
	ts_log_capture_end();
	eagle_forward(m, h1, l1);
	model_destroy(m);
	assert_memory_equal(h0, h1, sizeof(h0));
	assert_memory_equal(l0, l1, sizeof(l0));

	snprintf(file, sizeof(file), "%s/model.safetensors",
		 ckpt("norm-1", g_target, args, norm1, sizeof(norm1)));
	fx_st_edit(file, "layers.1.input_layernorm.weight", three, NULL);
	m = load(norm1, g_t);
	eagle_forward(m, h1, l1);
	model_destroy(m);
	assert_true(memcmp(h0, h1, sizeof(h0)) != 0);
}

/* fc = [0 | I], no bias, o_proj and down_proj zero: the layer's output is its input. */
static float pass_fc(uint64_t r, uint64_t c, float old, void *user)
{
	(void)old, (void)user;
	return c == DIM + r ? 1.0f : 0.0f;
}

static float zero(uint64_t r, uint64_t c, float old, void *user)
{
	(void)r, (void)c, (void)old, (void)user;
	return 0.0f;
}

/* So fc joins [embedding, feature] in that order, nothing normalises the output, and
 * the LM head is the target's: the feature comes back as the hidden state, and its
 * logits are bitwise the target's at that position. */
static void test_eagle_load__a_pass_through_layer_gives_the_targets_logits(void **state)
{
	(void)state;
	char dir[700], file[800];
	static float h[N * DIM], l[N * VOCAB];
	ckpt("pass", g_target, (const char *[]){"--no-fc-bias", "--dtype", "bf16", NULL}, dir,
	     sizeof(dir));
	snprintf(file, sizeof(file), "%s/model.safetensors", dir);
	fx_st_edit(file, "fc.weight", pass_fc, NULL);
	fx_st_edit(file, "layers.0.self_attn.o_proj.weight", zero, NULL);
	fx_st_edit(file, "layers.0.mlp.down_proj.weight", zero, NULL);
	struct model *m = load(dir, g_t);
	eagle_forward(m, h, l);
	assert_memory_equal(h, g_feat, sizeof(h));
	assert_memory_equal(l, g_logits, sizeof(l));
	model_destroy(m);
}

static bool all_finite(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return false;
	return true;
}

static void test_eagle_load__features_go_to_eagle_layers_only(void **state)
{
	(void)state;
	char dir[700];
	static float h[N * DIM], l[N * VOCAB];
	struct model *m = load(ckpt("plain", g_target, (const char *[]){"--layers", "2", NULL},
				    dir, sizeof(dir)), g_t);
	eagle_forward(m, h, l);
	assert_true(all_finite(h, N * DIM));
	assert_true(all_finite(l, N * VOCAB));
	assert_true(memcmp(h, g_feat, sizeof(h)) != 0);

	uint32_t tok = 70, slot = 0, pos = 0, idx = 0;
	struct model_batch b = {.n_tokens = 1, .tokens = &tok, .slots = &slot, .pos = &pos,
				.n_out = 1, .out_idx = &idx, .logits = l};
	struct specd_error err;
	assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(m, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "needs the target's features"));
	assert_int_equal(kv_len(model_kv(m), 0), 0);
	model_destroy(m);

	b.features = g_feat;
	uint32_t before = kv_len(model_kv(g_t), 0);
	assert_int_equal(model_forward(g_t, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "features are for EAGLE layers only"));
	assert_int_equal(kv_len(model_kv(g_t), 0), before);
}

static void test_eagle_load__weight_bytes_count_the_tensors_it_uses(void **state)
{
	(void)state;
	char a[700], b[700], c[700];
	static float h0[N * DIM], h1[N * DIM], l0[N * VOCAB], l1[N * VOCAB];
	const char *none[] = {NULL}, *with_embed[] = {"--with-embed", NULL};
	const char *half[] = {"--dtype", "f16", NULL};
	struct model *f32 = load(ckpt("bytes", g_target, none, a, sizeof(a)), g_t);
	/* embed_tokens.weight is the target's: a checkpoint shipping it uses none of it */
	struct model *embed = load(ckpt("embed", g_target, with_embed, b, sizeof(b)), g_t);
	struct model *f16 = load(ckpt("half", g_target, half, c, sizeof(c)), g_t);
	assert_true(model_eagle_weight_bytes(f32) > 0);
	assert_int_equal(model_eagle_weight_bytes(embed), model_eagle_weight_bytes(f32));
	assert_true(model_eagle_weight_bytes(f16) < model_eagle_weight_bytes(f32));
	eagle_forward(f32, h0, l0);
	eagle_forward(embed, h1, l1);
	assert_memory_equal(h0, h1, sizeof(h0));
	assert_memory_equal(l0, l1, sizeof(l0));
	model_destroy(f32);
	model_destroy(embed);
	model_destroy(f16);
}

static void test_eagle_load__refuses_what_it_cannot_run(void **state)
{
	(void)state;
	char dir[700];
	ckpt("cfg", g_target, (const char *[]){NULL}, dir, sizeof(dir));
	expect_refusal(NULL, NULL, SPECD_INVAL, "no checkpoint folder");
	expect_refusal("", NULL, SPECD_INVAL, "no checkpoint folder");
	struct model_comm comm = {.rank = 0, .size = 2};
	struct model_config mc = {.comm = &comm};
	expect_refusal(dir, &mc, SPECD_UNSUPPORTED, "not in tensor-parallel shards");
	/* cfg NULL: the defaults */
	struct model *m = NULL;
	assert_int_equal(model_load_eagle(dir, g_t, NULL, &m, NULL), SPECD_OK);
	assert_non_null(m);
	model_destroy(m);
}

/* ---- hidden-only outputs of an ordinary model ---- */

static void test_forward__hidden_only_outputs_get_no_logits(void **state)
{
	(void)state;
	enum { T = 12, OUT = 6, H_ONLY = 2 };
	static const int32_t toks[T] = {1, 5, 9, 70, 71, 72, 70, 71, 250, 3, 44, 100};
	static const uint32_t idx[OUT] = {2, 5, 9, 11, 0, 7}; /* the last two hidden-only */
	static const uint32_t layers[2] = {1, 0};
	static float full_h[T * DIM], full_l[T * VOCAB], full_lh[2 * T * DIM];
	static float h[OUT * DIM], l[OUT * VOCAB], lh[2 * OUT * DIM];
	uint32_t tok[T], slot[T] = {0}, pos[T], all[T];
	for (uint32_t i = 0; i < T; i++) {
		tok[i] = (uint32_t)toks[i];
		pos[i] = all[i] = i;
	}
	struct model_batch b = {.n_tokens = T, .tokens = tok, .slots = slot, .pos = pos,
				.n_out = T, .out_idx = all, .logits = full_l, .hidden = full_h,
				.n_layers_out = 2, .layers = layers, .layer_hidden = full_lh};
	assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(g_t, &b, NULL), SPECD_OK);

	for (size_t i = 0; i < OUT * VOCAB; i++)
		l[i] = 12345.0f;
	b.n_out = OUT;
	b.out_idx = idx;
	b.logits = l;
	b.hidden = h;
	b.layer_hidden = lh;
	b.n_hidden_only = H_ONLY;
	assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(g_t, &b, NULL), SPECD_OK);
	for (uint32_t o = 0; o < OUT; o++) {
		assert_memory_equal(h + o * DIM, full_h + idx[o] * DIM, DIM * sizeof(float));
		for (uint32_t j = 0; j < 2; j++)
			assert_memory_equal(lh + (j * OUT + o) * DIM,
					    full_lh + (j * T + idx[o]) * DIM, DIM * sizeof(float));
		if (o < OUT - H_ONLY)
			assert_memory_equal(l + o * VOCAB, full_l + idx[o] * VOCAB,
					    VOCAB * sizeof(float));
		else
			for (uint32_t v = 0; v < VOCAB; v++)
				assert_true(l[o * VOCAB + v] == 12345.0f);
	}
	/* all hidden-only: no logits at all; more than the outputs: refused, cache kept */
	b.n_hidden_only = OUT;
	for (size_t i = 0; i < OUT * VOCAB; i++)
		l[i] = 12345.0f;
	assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(g_t, &b, NULL), SPECD_OK);
	assert_true(l[0] == 12345.0f && l[OUT * VOCAB - 1] == 12345.0f);
	assert_memory_equal(h, full_h + idx[0] * DIM, DIM * sizeof(float));
	struct specd_error err;
	b.n_hidden_only = OUT + 1;
	assert_int_equal(kv_truncate(model_kv(g_t), 0, 0), SPECD_OK);
	assert_int_equal(model_forward(g_t, &b, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "hidden-only"));
	assert_int_equal(kv_len(model_kv(g_t), 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_eagle_load__reads_its_sizes_from_config_json),
		cmocka_unit_test(test_eagle_load__the_first_layer_has_no_input_norm),
		cmocka_unit_test(test_eagle_load__a_pass_through_layer_gives_the_targets_logits),
		cmocka_unit_test(test_eagle_load__features_go_to_eagle_layers_only),
		cmocka_unit_test(test_eagle_load__weight_bytes_count_the_tensors_it_uses),
		cmocka_unit_test(test_eagle_load__refuses_what_it_cannot_run),
		cmocka_unit_test(test_forward__hidden_only_outputs_get_no_logits),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
