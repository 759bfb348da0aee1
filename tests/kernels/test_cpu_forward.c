/* kernels/cpu under the whole forward pass: for every ISA this CPU runs and 1 or 2
 * threads, on generated models of every weight type (Q5_x and the K-quants included)
 * with odd shapes, a forward over n tokens gives bitwise the logits of n single-token
 * forwards, the thread count changes no bit, and a decode step with a threaded backend
 * allocates nothing. */
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
#include "kernels/kern.h"
#include "model/kv.h"
#include "model/llama.h"
#include "test_support.h"

static const char *const type_names[] = {"f32",  "f16",  "bf16", "q8_0", "q4_0", "q4_1",
					 "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"};
#define N_TYPES 11
static const char *const isa_names[] = {"scalar", "avx2", "avx512"};
#define N_ISAS 3
#define N_TOK 9

static char g_dir[512];
static char g_paths[N_TYPES][600];

static int setup_models(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	char gen[600];
	snprintf(gen, sizeof(gen), "%s/tools/specd-gen-model", ts_binary_dir());
	for (int t = 0; t < N_TYPES; t++) {
		snprintf(g_paths[t], sizeof(g_paths[t]), "%s/%s.gguf", g_dir, type_names[t]);
		/* dim 96 (3 heads of 32, GQA 3:1), ffn 160, vocab 301: no power of two. The
		 * K-quants need multiples of their 256-weight super-block: dim 768 (12 heads
		 * of 64, GQA 3:1), ffn 1280. */
		enum kern_dtype dt;
		if (!kern_dtype_parse(type_names[t], &dt))
			return -1;
		bool k = kern_dtype_block(dt) == KERN_QK_K;
		const char *argv[] = {gen, "-o", g_paths[t], "--dim", k ? "768" : "96",
				      "--layers", "2", "--heads", k ? "12" : "3", "--kv-heads",
				      k ? "4" : "1", "--ffn", k ? "1280" : "160", "--vocab", "301",
				      "--ctx", "64", "--type", type_names[t], "--seed", "11", NULL};
		char *text = NULL;
		int rc = ts_run(argv, &text, 60);
		if (rc != 0)
			fprintf(stderr, "specd-gen-model: %s\n", text ? text : "(no output)");
		free(text);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static int teardown_models(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

/* The model on a backend of ISA index isa and n threads; NULL when not on this CPU. */
static struct model *load(const char *path, int isa, unsigned threads, struct kern_ctx **kern)
{
	struct kern_cpu_config kc = {.n_threads = threads, .isa = isa_names[isa]};
	assert_int_equal(kern_cpu_create(&kc, kern), SPECD_OK);
	if (strcmp(kern_cpu_isa_of(*kern), isa_names[isa]) != 0) {
		kern_destroy(*kern);
		return NULL;
	}
	struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16, .kern = *kern};
	struct model *m = NULL;
	struct specd_error err;
	enum specd_status st = model_load(path, &cfg, &m, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "model_load: %s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	return m;
}

/* n causal tokens at the slot's end, logits for each. */
static void run(struct model *m, uint32_t n, const uint32_t *tokens, float *logits)
{
	uint32_t slots[N_TOK] = {0}, pos[N_TOK], idx[N_TOK];
	uint32_t len = kv_len(model_kv(m), 0);
	for (uint32_t i = 0; i < n; i++) {
		pos[i] = len + i;
		idx[i] = i;
	}
	struct model_batch b = {.n_tokens = n, .tokens = tokens, .slots = slots, .pos = pos,
				.n_out = n, .out_idx = idx, .logits = logits};
	struct specd_error err;
	enum specd_status st = model_forward(m, &b, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "model_forward: %s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
}

static void test_forward__n_tokens_equal_n_single_forwards_every_isa_and_threads(void **state)
{
	(void)state;
	const uint32_t toks[N_TOK] = {1, 77, 200, 5, 130, 42, 9, 300, 64};
	for (int t = 0; t < N_TYPES; t++) {
		for (int isa = 0; isa < N_ISAS; isa++) {
			float *single = NULL;
			uint32_t V = 0;
			for (unsigned threads = 1; threads <= 2; threads++) {
				struct kern_ctx *kern = NULL;
				struct model *m = load(g_paths[t], isa, threads, &kern);
				if (!m)
					break;
				V = model_hparams(m)->n_vocab;
				if (!single) { /* the reference: one token at a time, one thread */
					single = malloc(N_TOK * V * sizeof(float));
					assert_non_null(single);
					for (uint32_t i = 0; i < N_TOK; i++)
						run(m, 1, toks + i, single + i * V);
				}
				float *batch = malloc(N_TOK * V * sizeof(float));
				assert_non_null(batch);
				/* A 2-token prefix as one batch, then the rest: n = 2 and n = 7
				 * after a prefix; and all 9 at once from the start. */
				for (int plan = 0; plan < 2; plan++) {
					kv_truncate(model_kv(m), 0, 0);
					if (plan == 0) {
						run(m, 2, toks, batch);
						run(m, N_TOK - 2, toks + 2, batch + 2 * V);
					} else {
						run(m, N_TOK, toks, batch);
					}
					if (memcmp(batch, single, N_TOK * V * sizeof(float)) != 0)
						fail_msg("%s on %s, %u threads, plan %d: batched logits "
							 "differ from single-token ones",
							 type_names[t], isa_names[isa], threads, plan);
				}
				/* Decoding with a threaded backend allocates nothing. */
				kv_truncate(model_kv(m), 0, 3);
				specd_alloc_fail_reset();
				run(m, 1, toks + 3, batch);
				assert_int_equal(specd_alloc_count(), 0);
				assert_memory_equal(batch, single + 3 * V, V * sizeof(float));
				free(batch);
				model_destroy(m);
				kern_destroy(kern);
			}
			free(single);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forward__n_tokens_equal_n_single_forwards_every_isa_and_threads),
	};
	return cmocka_run_group_tests(tests, setup_models, teardown_models);
}
