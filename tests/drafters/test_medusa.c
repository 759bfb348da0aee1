/* The Medusa drafter (drafters/medusa.c) on generated models and specd-gen-heads heads:
 * its static tree's shape; greedy output bit-identical to plain decoding for several
 * tree sizes and head files (own or shared LM head, prefixed or bare names, f16, two
 * blocks); sampling that keeps the target's distribution (the first two tokens over
 * 10,000 seeds against their exact law, chi-square at alpha = 0.001); heads that do not
 * fit the target refused with a message naming the tensor; specd-run --method medusa. */
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
#include "drafters/medusa.h"
#include "kernels/kern.h"
#include "model/kv.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_support.h"

#define VOCAB 260
#define GEN 40

static char g_dir[512], g_target[600], g_small[600];
static char g_heads[6][600]; /* own, shared, bare f16, two blocks, wrong dim, wrong vocab */
static struct model *g_t;

/* ts_run_built, failing the test when it could not run at all. */
static char *tool(const char *rel, const char *out, const char *const *args, int *rc)
{
	char *text = ts_run_built(rel, out, args, rc);
	assert_non_null(text);
	return text;
}

static int setup(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	snprintf(g_small, sizeof(g_small), "%s/small.gguf", g_dir);
	const char *target[] = {"--dim", "48", "--layers", "2", "--heads", "4", "--kv-heads", "2",
				"--ffn", "96", "--vocab", "260", "--ctx", "128", "--seed", "11", NULL};
	const char *small[] = {"--dim", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
			       "--ffn", "64", "--vocab", "260", "--ctx", "16", "--seed", "21", NULL};
	fx_gen_model(g_target, target);
	fx_gen_model(g_small, small);
	static const char *const names[6] = {"own", "shared", "bare", "two", "dim", "vocab"};
	for (int i = 0; i < 6; i++)
		snprintf(g_heads[i], sizeof(g_heads[i]), "%s/%s.safetensors", g_dir, names[i]);
	fx_gen_heads(g_heads[0], (const char *[]){"-m", g_target, "--heads", "4", NULL});
	fx_gen_heads(g_heads[1],
		     (const char *[]){"-m", g_target, "--shared", "--scale", "0.1", NULL});
	fx_gen_heads(g_heads[2], (const char *[]){"-m", g_target, "--bare", "--type", "f16",
						  "--heads", "2", NULL});
	fx_gen_heads(g_heads[3],
		     (const char *[]){"-m", g_target, "--layers", "2", "--seed", "5", NULL});
	fx_gen_heads(g_heads[4], (const char *[]){"--dim", "64", "--vocab", "260", NULL});
	fx_gen_heads(g_heads[5], (const char *[]){"--dim", "48", "--vocab", "300", NULL});
	g_t = fx_load(g_target, 1, 128);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	model_destroy(g_t);
	ts_rmtree(g_dir);
	return 0;
}

static enum specd_status medusa(struct model *t, const char *heads, uint32_t k,
				struct drafter **out, struct specd_error *err)
{
	struct draft_config dc = {
		.method = DRAFT_METHOD_MEDUSA, .k_max = k, .n_slots = 1,
		.n_ctx = kv_n_ctx(model_kv(t)), .target = t, .heads_path = heads,
	};
	return draft_create(&dc, out, err);
}

static void test_medusa__tree_is_best_first_and_prefix_closed(void **state)
{
	(void)state;
	int32_t parent[64], p2[64];
	uint32_t depth[64], rank[64], d2[64], r2[64];

	assert_int_equal(draft_medusa_tree(64, 4, parent, depth, rank), SPECD_OK);
	for (uint32_t i = 0; i < 64; i++) {
		assert_true(parent[i] < (int32_t)i && parent[i] >= -1);
		assert_int_equal(depth[i], parent[i] < 0 ? 0 : depth[parent[i]] + 1);
		assert_true(depth[i] < 4 && rank[i] < MEDUSA_MAX_RANK);
		/* Siblings in rank order, without gaps. */
		uint32_t before = 0;
		for (uint32_t j = 0; j < i; j++)
			before += parent[j] == parent[i];
		assert_int_equal(rank[i], before);
	}
	/* The first choices: head 0's best (1/2), its second (1/3), then head 1's best
	 * below the first (1/4). */
	assert_true(parent[0] == -1 && rank[0] == 0);
	assert_true(parent[1] == -1 && rank[1] == 1);
	assert_true((parent[2] == 0 && rank[2] == 0) || (parent[2] == -1 && rank[2] == 2));
	for (uint32_t k = 1; k <= 64; k += 7) {
		assert_int_equal(draft_medusa_tree(k, 4, p2, d2, r2), SPECD_OK);
		assert_memory_equal(p2, parent, k * sizeof(*p2));
		assert_memory_equal(r2, rank, k * sizeof(*r2));
	}
	/* One head: a single level of candidates, at most MEDUSA_MAX_RANK of them. */
	assert_int_equal(draft_medusa_tree(MEDUSA_MAX_RANK, 1, parent, depth, rank), SPECD_OK);
	for (uint32_t i = 0; i < MEDUSA_MAX_RANK; i++)
		assert_int_equal(parent[i], -1);
	assert_int_equal(draft_medusa_tree(MEDUSA_MAX_RANK + 1, 1, parent, depth, rank),
			 SPECD_INVAL);
	assert_int_equal(draft_medusa_tree(0, 4, parent, depth, rank), SPECD_INVAL);
	assert_int_equal(draft_medusa_tree(65, 4, parent, depth, rank), SPECD_INVAL);
}

static void test_medusa__greedy_identical_to_plain(void **state)
{
	(void)state;
	int32_t prompt[6] = {1, 70, 71, 72, 70, 71}, plain[GEN], out[GEN];
	const struct sampler_params greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
	const uint32_t ks[] = {1, 3, 8, 20, 40};

	assert_int_equal(fx_plain_greedy(g_t, prompt, 6, GEN, plain), GEN);
	for (int h = 0; h < 4; h++) {
		for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
			struct drafter *d;
			struct specd_error err;
			struct draft_metrics m;
			uint32_t n;
			if (medusa(g_t, g_heads[h], ks[ki], &d, &err) != SPECD_OK)
				fail_msg("%s: %s", g_heads[h], err.msg);
			assert_true(draft_memory_bytes(d) > 0);
			assert_int_equal(fx_generate(g_t, d, ks[ki], NULL, prompt, 6, &greedy, GEN, -1,
						     out, GEN, &n, &m, NULL), SPECD_OK);
			assert_int_equal(n, GEN);
			assert_memory_equal(out, plain, sizeof(plain));
			assert_true(m.drafted > 0);
			draft_destroy(d);
		}
	}
}

/* Several sequences in one pass (one LM-head product for all of them and all heads
 * that share it) propose exactly what one propose each would, for heads with their own
 * LM heads and heads sharing the target's, whatever K each asks. */
static void test_medusa__a_batch_proposes_what_single_proposes_do(void **state)
{
	(void)state;
	const char *files[] = {g_heads[0], g_heads[1], g_heads[3]};
	int32_t tokens[4] = {1, 9, 8, 7};
	float hidden[3][48];
	for (int i = 0; i < 3; i++)
		for (int d = 0; d < 48; d++)
			hidden[i][d] = (float)((d * (i + 3)) % 7) - 3.0f + 0.25f * (float)i;
	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		struct draft_config dc = {
			.method = DRAFT_METHOD_MEDUSA, .k_max = 12, .n_slots = 3,
			.n_ctx = kv_n_ctx(model_kv(g_t)), .target = g_t, .heads_path = files[f],
		};
		struct drafter *d;
		struct specd_error err;
		if (draft_create(&dc, &d, &err) != SPECD_OK)
			fail_msg("%s: %s", files[f], err.msg);
		struct draft_seq seqs[3];
		int32_t bt[3][12], bp[3][12], st[12], sp[12];
		struct draft_proposal b[3], *outs[3];
		uint32_t k[3] = {12, 3, 7};
		for (uint32_t i = 0; i < 3; i++) {
			seqs[i] = (struct draft_seq){.slot = i, .tokens = tokens, .n_tokens = 4,
						     .hidden = hidden[i], .n_hidden = 1};
			b[i] = (struct draft_proposal){.tokens = bt[i], .parent = bp[i]};
			outs[i] = &b[i];
		}
		assert_int_equal(draft_propose_batch(d, seqs, k, outs, 3, NULL), SPECD_OK);
		for (uint32_t i = 0; i < 3; i++) {
			struct draft_proposal one = {.tokens = st, .parent = sp};
			assert_int_equal(draft_propose(d, &seqs[i], k[i], &one, NULL), SPECD_OK);
			assert_int_equal(b[i].n, k[i]);
			assert_int_equal(one.n, k[i]);
			assert_memory_equal(bt[i], st, k[i] * sizeof(int32_t));
			assert_memory_equal(bp[i], sp, k[i] * sizeof(int32_t));
		}
		/* a sequence without a hidden state drafts nothing, the others still do */
		seqs[1].hidden = NULL;
		assert_int_equal(draft_propose_batch(d, seqs, k, outs, 3, NULL), SPECD_OK);
		assert_int_equal(b[1].n, 0);
		assert_int_equal(b[0].n, 12);
		assert_int_equal(b[2].n, 7);
		draft_destroy(d);
	}
}

/* On a device backend (the emulated one: heads, buffers and logits in device memory)
 * the heads propose exactly what they do on the CPU, downloading nothing (each row's
 * candidates are picked where its logits are, kern_topk): with their own LM heads, and with
 * the target's, either copied from its file (a target on the CPU) or used in place
 * (the target on the same device). */
static void test_medusa__on_a_device_proposes_what_the_cpu_does(void **state)
{
	(void)state;
	struct kern_ctx *emu = NULL;
	assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
	struct model_config mc = {.n_slots = 1, .n_ctx = 128, .kern = emu};
	struct model *t_dev = NULL;
	struct specd_error err;
	if (model_load(g_target, &mc, &t_dev, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	const char *files[] = {g_heads[0], g_heads[1], g_heads[2], g_heads[3]};
	int32_t tokens[4] = {1, 9, 8, 7};
	float hidden[2][48];
	for (int i = 0; i < 2; i++)
		for (int d = 0; d < 48; d++)
			hidden[i][d] = (float)((d * (i + 3)) % 7) - 3.0f + 0.25f * (float)i;
	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		struct drafter *d[3];
		for (int v = 0; v < 3; v++) {
			struct draft_config dc = {
				.method = DRAFT_METHOD_MEDUSA, .k_max = 12, .n_slots = 2,
				.n_ctx = 128, .target = v == 2 ? t_dev : g_t,
				.heads_path = files[f], .kern = v ? emu : NULL,
			};
			if (draft_create(&dc, &d[v], &err) != SPECD_OK)
				fail_msg("%s (%d): %s", files[f], v, err.msg);
		}
		struct draft_seq seqs[2];
		for (uint32_t i = 0; i < 2; i++)
			seqs[i] = (struct draft_seq){.slot = i, .tokens = tokens, .n_tokens = 4,
						     .hidden = hidden[i], .n_hidden = 1};
		uint32_t k[2] = {12, 5};
		int32_t tok[3][2][12], par[3][2][12];
		struct draft_proposal b[3][2];
		for (int v = 0; v < 3; v++) {
			struct draft_proposal *outs[2];
			for (int i = 0; i < 2; i++) {
				b[v][i] = (struct draft_proposal){.tokens = tok[v][i],
								  .parent = par[v][i]};
				outs[i] = &b[v][i];
			}
			uint64_t before = kern_emu_stats(emu).downloaded;
			assert_int_equal(draft_propose_batch(d[v], seqs, k, outs, 2, NULL),
					 SPECD_OK);
			/* The candidates are picked on the device: nothing comes back. */
			assert_int_equal(kern_emu_stats(emu).downloaded, before);
		}
		for (int v = 1; v < 3; v++)
			for (int i = 0; i < 2; i++) {
				assert_int_equal(b[v][i].n, k[i]);
				assert_int_equal(b[0][i].n, k[i]);
				assert_memory_equal(tok[v][i], tok[0][i], k[i] * sizeof(int32_t));
				assert_memory_equal(par[v][i], par[0][i], k[i] * sizeof(int32_t));
			}
		for (int v = 0; v < 3; v++)
			draft_destroy(d[v]);
	}
	model_destroy(t_dev);
	kern_destroy(emu);
}

/* Held beside prompt lookup (draft_config.also, the online selector's switching): the
 * drafter reads the hidden state because Medusa is held, costs both methods' memory,
 * proposes with the method selected, and refuses methods it does not hold. */
static void test_medusa__held_beside_ngram_proposes_with_the_method_selected(void **state)
{
	(void)state;
	struct draft_config dc = {
		.method = DRAFT_METHOD_NGRAM, .k_max = 8, .n_slots = 1,
		.n_ctx = kv_n_ctx(model_kv(g_t)), .target = g_t, .heads_path = g_heads[1],
		.also = 1u << DRAFT_METHOD_MEDUSA,
	};
	struct drafter *both, *alone;
	struct specd_error err;
	if (draft_create(&dc, &both, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	assert_int_equal(medusa(g_t, g_heads[1], 8, &alone, NULL), SPECD_OK);
	assert_int_equal(draft_methods(both), 1u << DRAFT_METHOD_NGRAM | 1u << DRAFT_METHOD_MEDUSA);
	assert_true(draft_wants_hidden(both));
	assert_int_equal(draft_memory_bytes(both), draft_memory_bytes(alone));
	assert_int_equal(draft_method_of(both), DRAFT_METHOD_NGRAM);
	assert_int_equal(draft_select(both, DRAFT_METHOD_DRAFT_MODEL, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "not held"));

	/* a history without a repeat: prompt lookup has nothing, the heads a tree */
	int32_t tokens[5] = {1, 9, 8, 7, 6}, t1[8], t2[8], p1[8], p2[8];
	float hidden[48];
	for (int i = 0; i < 48; i++)
		hidden[i] = (float)(i % 5) - 2.0f;
	struct draft_seq seq = {.slot = 0, .tokens = tokens, .n_tokens = 5, .hidden = hidden,
				.n_hidden = 1};
	struct draft_proposal a = {.tokens = t1, .parent = p1}, b = {.tokens = t2, .parent = p2};
	assert_int_equal(draft_reset(both, &seq, NULL), SPECD_OK);
	assert_int_equal(draft_reset(alone, &seq, NULL), SPECD_OK);
	assert_int_equal(draft_propose(both, &seq, 8, &a, NULL), SPECD_OK);
	assert_int_equal(a.n, 0);
	assert_int_equal(draft_select(both, DRAFT_METHOD_MEDUSA, NULL), SPECD_OK);
	assert_int_equal(draft_method_of(both), DRAFT_METHOD_MEDUSA);
	assert_int_equal(draft_propose(both, &seq, 8, &a, NULL), SPECD_OK);
	assert_int_equal(draft_propose(alone, &seq, 8, &b, NULL), SPECD_OK);
	assert_int_equal(a.n, 8);
	assert_true(a.tree);
	assert_int_equal(a.n, b.n);
	assert_memory_equal(t1, t2, sizeof(t1));
	assert_memory_equal(p1, p2, sizeof(p1));
	draft_destroy(both);
	draft_destroy(alone);

	/* none is no method to hold */
	dc.also = 1u << DRAFT_METHOD_NONE;
	assert_int_equal(draft_create(&dc, &both, &err), SPECD_INVAL);
}

/* Heads close to the target's own LM head propose what the target predicts one step
 * early: on a model that repeats itself they are accepted. */
static void test_medusa__shared_heads_are_accepted(void **state)
{
	(void)state;
	int32_t prompt[6] = {1, 70, 71, 72, 70, 71}, out[GEN];
	const struct sampler_params greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
	struct drafter *d;
	struct draft_metrics m;
	uint32_t n;
	assert_int_equal(medusa(g_t, g_heads[1], 10, &d, NULL), SPECD_OK);
	assert_int_equal(fx_generate(g_t, d, 10, NULL, prompt, 6, &greedy, GEN, -1, out, GEN, &n,
				     &m, NULL), SPECD_OK);
	assert_true(m.accepted > 0);
	assert_true(m.emitted > m.steps);
	draft_destroy(d);
}

static void expect_refusal(const char *heads, enum specd_status want, const char *needle)
{
	struct drafter *d = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(medusa(g_t, heads, 4, &d, &err), want);
	assert_null(d);
	if (!strstr(err.msg, needle))
		fail_msg("'%s' does not say '%s'", err.msg, needle);
}

static void test_medusa__refuses_heads_that_do_not_fit(void **state)
{
	(void)state;
	expect_refusal(g_heads[4], SPECD_INVAL, "medusa_head.0.0.linear.weight is 64 x 64");
	expect_refusal(g_heads[4], SPECD_INVAL, "hidden size 48");
	expect_refusal(g_heads[5], SPECD_INVAL, "medusa_head.0.1.weight is 300 x 48");
	expect_refusal(g_heads[5], SPECD_INVAL, "vocabulary 260");
	expect_refusal(g_target, SPECD_INVAL, g_target); /* a GGUF file is not safetensors */
	char missing[700];
	snprintf(missing, sizeof(missing), "%s/none.safetensors", g_dir);
	expect_refusal(missing, SPECD_IO, "none.safetensors");
	expect_refusal(NULL, SPECD_INVAL, "--heads");
	/* A safetensors file without heads. */
	char other[700];
	snprintf(other, sizeof(other), "%s/other.safetensors", g_dir);
	static const char hdr[] = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
	char buf[128];
	size_t hl = sizeof(hdr) - 1;
	memset(buf, 0, sizeof(buf));
	for (int i = 0; i < 8; i++)
		buf[i] = (char)((hl >> (8 * i)) & 0xff);
	memcpy(buf + 8, hdr, hl);
	FILE *f = fopen(other, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, 8 + hl + 4, f), 8 + hl + 4);
	assert_int_equal(fclose(f), 0);
	expect_refusal(other, SPECD_INVAL, "no Medusa heads");
}

/* ---- sampling ---- */

#define N_SEEDS 10000

static void test_medusa__sampling_keeps_the_distribution(void **state)
{
	(void)state;
	struct model *t = fx_load(g_small, 1, 16);
	char heads[700];
	snprintf(heads, sizeof(heads), "%s/small.safetensors", g_dir);
	fx_gen_heads(heads, (const char *[]){"-m", g_small, "--shared", "--scale", "0.1", NULL});
	const struct sampler_params sp = {.temperature = 0.7f, .top_k = 0, .top_p = 1.0f};
	int32_t prompt[4] = {1, 80, 81, 80};
	static double joint[VOCAB * VOCAB];
	static uint32_t count[VOCAB * VOCAB];
	fx_exact_joint(t, prompt, 4, &sp, joint);

	struct drafter *d;
	assert_int_equal(medusa(t, heads, 6, &d, NULL), SPECD_OK);
	uint64_t drafted = 0, accepted = 0;
	/* K + 1 tokens, so that the first step may draft the whole tree. */
	fx_count_first_two(t, d, 6, prompt, 4, &sp, 7, N_SEEDS, count, &drafted, &accepted);
	fx_assert_exact_law("medusa sampling", joint, count, VOCAB * VOCAB, N_SEEDS, drafted,
			    accepted);
	draft_destroy(d);
	model_destroy(t);
}

/* ---- specd-run ---- */

static char *run(const char *const *args, int *rc)
{
	return tool("daemon/specd-run", NULL, args, rc);
}

/* The generated text: the output without specd-run's statistics lines (stderr). */
static char *text_only(const char *out)
{
	char *t = malloc(strlen(out) + 1), *w = t;
	assert_non_null(t);
	for (const char *line = out; *line;) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) + 1 : strlen(line);
		if (strncmp(line, "specd-run:", 10) != 0) {
			memcpy(w, line, n);
			w += n;
		}
		line += n;
	}
	*w = '\0';
	return t;
}

static void test_medusa__specd_run_matches_none(void **state)
{
	(void)state;
	int rc;
	char *plain = run((const char *[]){"-m", g_target, "-p", "abc abc", "-n", "30", NULL}, &rc);
	assert_int_equal(rc, 0);
	char *spec = run((const char *[]){"-m", g_target, "-p", "abc abc", "-n", "30", "--method",
					  "medusa", "--heads", g_heads[1], "--spec-tokens", "12",
					  NULL}, &rc);
	assert_int_equal(rc, 0);
	char *a = text_only(plain), *b = text_only(spec);
	assert_true(strlen(a) > 8);
	if (!strstr(spec, "method medusa, K=12") || strcmp(a, b) != 0)
		fail_msg("plain:\n%s\nmedusa:\n%s", plain, spec);
	free(a);
	free(b);
	free(plain);
	free(spec);
	char *bad = run((const char *[]){"-m", g_target, "-p", "x", "--method", "medusa", "--heads",
					 g_heads[4], NULL}, &rc);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(bad, "hidden size"));
	free(bad);
	char *none = run((const char *[]){"-m", g_target, "--method", "medusa", NULL}, &rc);
	assert_int_equal(rc, 2);
	assert_non_null(strstr(none, "--heads"));
	free(none);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_medusa__tree_is_best_first_and_prefix_closed),
		cmocka_unit_test(test_medusa__greedy_identical_to_plain),
		cmocka_unit_test(test_medusa__shared_heads_are_accepted),
		cmocka_unit_test(test_medusa__a_batch_proposes_what_single_proposes_do),
		cmocka_unit_test(test_medusa__on_a_device_proposes_what_the_cpu_does),
		cmocka_unit_test(test_medusa__held_beside_ngram_proposes_with_the_method_selected),
		cmocka_unit_test(test_medusa__refuses_heads_that_do_not_fit),
		cmocka_unit_test(test_medusa__sampling_keeps_the_distribution),
		cmocka_unit_test(test_medusa__specd_run_matches_none),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
