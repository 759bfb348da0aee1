/* drafters/engine with the ngram and draft_model drafters: greedy output bit-identical
 * to plain decoding (one forward per token, written here without the engine) for every
 * method x K in {1, 3, 8} x several prompts, on random llama and qwen2 models and on
 * stories260K (with a random draft sharing its vocabulary, and itself as draft). Also:
 * rollback when all, none and some proposals are rejected (a scripted drafter, and a
 * verifier that refuses correct tokens so the draft model must roll back; rows it drafted
 * that another method's step left out of the sequence), the cuts at
 * EOS, max tokens and the end of the context, two jobs in one forward, the metrics, and
 * a draft model with another vocabulary refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/tokenizer.h"
#include "spec_fixture.h"
#include "test_support.h"

#define MAX_GEN 40
#define CAP 600

static char g_dir[512];
static char g_llama[600], g_llama_q8[600], g_llama_draft[600], g_other_vocab[600];
static char g_qwen[600], g_qwen_draft[600];
static char g_st[600], g_st_draft[600], g_st_synth[600];
static bool g_have_st;
static const struct sampler_params k_greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};

static int setup_models(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
#define PATH(var, name) snprintf(var, sizeof(var), "%s/" name, g_dir)
	PATH(g_llama, "llama.gguf");
	PATH(g_llama_q8, "llama_q8.gguf");
	PATH(g_llama_draft, "llama_draft.gguf");
	PATH(g_other_vocab, "other_vocab.gguf");
	PATH(g_qwen, "qwen.gguf");
	PATH(g_qwen_draft, "qwen_draft.gguf");
	PATH(g_st_draft, "st_draft.gguf");
	PATH(g_st_synth, "st_synth.gguf");
#undef PATH
	const char *llama[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			       "--ffn", "96", "--vocab", "300", "--ctx", "128", "--seed", "7", NULL};
	/* The same weights rounded to q8_0: a draft that mostly agrees. */
	const char *llama_q8[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads",
				  "2", "--ffn", "96", "--vocab", "300", "--ctx", "128", "--seed",
				  "7", "--type", "q8_0", NULL};
	const char *llama_draft[] = {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads",
				     "1", "--ffn", "64", "--vocab", "300", "--ctx", "128", "--seed",
				     "17", NULL};
	const char *other[] = {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
			       "--ffn", "64", "--vocab", "320", "--ctx", "128", NULL};
	const char *qwen[] = {"--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
			      "--kv-heads", "1", "--ffn", "128", "--vocab", "280", "--ctx", "128",
			      "--type", "q8_0", "--seed", "8", NULL};
	const char *qwen_draft[] = {"--arch", "qwen2", "--dim", "32", "--layers", "1", "--heads",
				    "2", "--kv-heads", "2", "--ffn", "32", "--vocab", "280",
				    "--ctx", "128", "--seed", "18", NULL};
	fx_gen_model(g_llama, llama);
	fx_gen_model(g_llama_q8, llama_q8);
	fx_gen_model(g_llama_draft, llama_draft);
	fx_gen_model(g_other_vocab, other);
	fx_gen_model(g_qwen, qwen);
	fx_gen_model(g_qwen_draft, qwen_draft);
	g_have_st = ts_model_path("stories260K.gguf", g_st, sizeof(g_st));
	if (g_have_st) {
		const char *st_draft[] = {"--vocab-from", g_st, "--dim", "32", "--layers", "1",
					  "--heads", "2", "--kv-heads", "1", "--ffn", "64", "--ctx",
					  "512", "--seed", "5", NULL};
		const char *st_synth[] = {"--dim", "32", "--layers", "1", "--heads", "2",
					  "--kv-heads", "1", "--ffn", "64", "--vocab", "512",
					  "--ctx", "512", NULL};
		fx_gen_model(g_st_draft, st_draft);
		fx_gen_model(g_st_synth, st_synth);
	}
	return 0;
}

static int teardown_models(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

struct prompt {
	int32_t ids[32];
	uint32_t n;
};

/* Each prompt's plain greedy decoding, alone on a fresh model: the reference every
 * batched run must equal. */
static void plain_refs(const struct prompt *p, int n, int32_t (*ref)[CAP])
{
	for (int i = 0; i < n; i++) {
		struct model *alone = fx_load(g_llama, 1, 0);
		assert_int_equal(fx_plain_greedy(alone, p[i].ids, p[i].n, MAX_GEN, ref[i]), MAX_GEN);
		model_destroy(alone);
	}
}

/* Every job produced MAX_GEN tokens equal to its reference; then the jobs are gone. */
static void check_and_destroy_jobs(struct draft_job **j, int n, int32_t (*ref)[CAP])
{
	for (int i = 0; i < n; i++) {
		uint32_t got;
		const int32_t *out = draft_job_output(j[i], &got);
		assert_int_equal(got, MAX_GEN);
		assert_memory_equal(out, ref[i], got * sizeof(int32_t));
		draft_job_destroy(j[i]);
	}
}

/* Greedy output of every method and K equals plain decoding of `target_path`. */
static void check_all_methods(const char *target_path, const char *const *drafts,
			      const struct prompt *prompts, int n_prompts)
{
	struct model *t = fx_load(target_path, 1, 0);
	static const uint32_t ks[] = {1, 3, 8};
	int32_t ref[CAP], got[CAP];

	for (int p = 0; p < n_prompts; p++) {
		uint32_t n_ref = fx_plain_greedy(t, prompts[p].ids, prompts[p].n, MAX_GEN, ref), n;
		struct draft_metrics m;
		assert_int_equal(n_ref, MAX_GEN);
		assert_int_equal(fx_generate(t, NULL, 0, NULL, prompts[p].ids, prompts[p].n,
					     &k_greedy, MAX_GEN, -1, got, CAP, &n, &m, NULL),
				 SPECD_OK);
		assert_int_equal(n, n_ref);
		assert_memory_equal(got, ref, n * sizeof(int32_t));
		assert_int_equal(m.steps, n_ref);
		assert_int_equal(m.drafted, 0);
		for (size_t k = 0; k < sizeof(ks) / sizeof(ks[0]); k++) {
			struct drafter *ds[8];
			int nd = 0;
			ds[nd++] = fx_drafter(DRAFT_METHOD_NGRAM, t, ks[k], 1, NULL, 1);
			ds[nd++] = fx_drafter(DRAFT_METHOD_NGRAM, t, ks[k], 1, NULL, 0);
			for (int d = 0; drafts[d]; d++)
				ds[nd++] = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, ks[k], 1,
						      drafts[d], 0);
			for (int d = 0; d < nd; d++) {
				assert_int_equal(fx_generate(t, ds[d], ks[k], NULL, prompts[p].ids,
							     prompts[p].n, &k_greedy, MAX_GEN, -1,
							     got, CAP, &n, &m, NULL),
						 SPECD_OK);
				if (n != n_ref || memcmp(got, ref, n * sizeof(int32_t)) != 0)
					fail_msg("%s: prompt %d, drafter %d (%s), K=%u: output "
						 "differs from plain decoding", target_path, p, d,
						 draft_method_name(draft_method_of(ds[d])), ks[k]);
				if (getenv("FX_VERBOSE"))
					fprintf(stderr, "p%d d%d K%u: steps %llu drafted %llu accepted %llu\n",
						p, d, ks[k], (unsigned long long)m.steps,
						(unsigned long long)m.drafted, (unsigned long long)m.accepted);
				assert_int_equal(m.generated, n);
				assert_int_equal(m.emitted, m.accepted + m.steps);
				assert_true(m.steps <= n);
				/* Self-drafting accepts everything (also after the KV catch-up). */
				if (d >= 2 && strcmp(drafts[d - 2], target_path) == 0)
					assert_int_equal(m.accepted, m.drafted);
			}
			for (int d = 0; d < nd; d++)
				draft_destroy(ds[d]);
		}
	}
	model_destroy(t);
}

static void test_engine__greedy_matches_plain_on_random_llama(void **state)
{
	(void)state;
	const char *drafts[] = {g_llama_draft, g_llama_q8, g_llama, NULL};
	struct prompt prompts[] = {
		{{1}, 1},
		{{1, 100, 101, 102}, 4},
		{{1, 50, 60, 50, 60, 50, 60, 50}, 8},
		{{1, 200, 3, 4, 5, 6, 200, 3, 4, 5, 200, 3}, 12},
	};
	check_all_methods(g_llama, drafts, prompts, 4);
}

static void test_engine__greedy_matches_plain_on_random_qwen2(void **state)
{
	(void)state;
	const char *drafts[] = {g_qwen_draft, g_qwen, NULL};
	struct prompt prompts[] = {
		{{1, 270, 271}, 3},
		{{1, 40, 41, 42, 40, 41, 42, 40}, 8},
	};
	check_all_methods(g_qwen, drafts, prompts, 2);
}

static void encode(const char *model_path, const char *text, struct prompt *p)
{
	struct gguf_file *f;
	struct tok *t;
	size_t n;
	assert_int_equal(gguf_open(model_path, &f, NULL), SPECD_OK);
	assert_int_equal(tok_load_gguf(f, &t, NULL), SPECD_OK);
	assert_int_equal(tok_encode(t, text, strlen(text), true, p->ids, 32, &n), SPECD_OK);
	p->n = (uint32_t)n;
	tok_destroy(t);
	gguf_close(f);
}

static void test_engine__greedy_matches_plain_on_stories260k(void **state)
{
	(void)state;
	if (!g_have_st)
		skip();
	const char *drafts[] = {g_st_draft, g_st, NULL};
	struct prompt prompts[3];
	encode(g_st, "Once upon a time", &prompts[0]);
	encode(g_st, "Lily and Tom went to the park. Lily and Tom", &prompts[1]);
	encode(g_st, "The cat sat on the mat. The cat", &prompts[2]);
	check_all_methods(g_st, drafts, prompts, 3);
}

/* ---- rollback with a scripted drafter ---- */

enum script { SCRIPT_ALL, SCRIPT_NONE, SCRIPT_SECOND_WRONG };

struct scripted {
	const int32_t *truth; /* prompt + plain greedy output */
	uint32_t n_truth;
	uint32_t n_vocab;
	enum script mode;
};

static struct scripted g_script;

static enum specd_status sc_create(const struct draft_config *cfg, void **state,
				   struct specd_error *err)
{
	(void)cfg;
	(void)err;
	*state = &g_script;
	return SPECD_OK;
}

static void sc_destroy(void *state)
{
	(void)state;
}

static enum specd_status sc_supports(const void *state, const struct model *target,
				     struct specd_error *err)
{
	(void)state;
	(void)target;
	(void)err;
	return SPECD_OK;
}

static size_t sc_memory(const void *state)
{
	(void)state;
	return 0;
}

static enum specd_status sc_reset(void *state, const struct draft_seq *seq,
				  struct specd_error *err)
{
	(void)state;
	(void)seq;
	(void)err;
	return SPECD_OK;
}

static enum specd_status sc_propose(void *state, const struct draft_seq *seq, uint32_t k,
				    struct draft_proposal *out, struct specd_error *err)
{
	struct scripted *s = state;
	uint32_t n = seq->n_tokens;
	(void)err;
	/* The engine's history is always the truth's prefix: rollback kept nothing wrong. */
	assert_true(n <= s->n_truth);
	assert_memory_equal(seq->tokens, s->truth, n * sizeof(int32_t));
	uint32_t m = s->n_truth - n < k ? s->n_truth - n : k;
	memcpy(out->tokens, s->truth + n, m * sizeof(int32_t));
	if (s->mode == SCRIPT_NONE && m >= 1)
		out->tokens[0] = (out->tokens[0] + 1) % (int32_t)s->n_vocab;
	if (s->mode == SCRIPT_SECOND_WRONG && m >= 2)
		out->tokens[1] = (out->tokens[1] + 1) % (int32_t)s->n_vocab;
	out->n = m;
	out->q_onehot = true;
	return SPECD_OK;
}

static enum specd_status sc_commit(void *state, const struct draft_seq *seq, uint32_t n_acc,
				   int32_t next, struct specd_error *err)
{
	struct scripted *s = state;
	(void)err;
	(void)n_acc;
	assert_int_equal(next, s->truth[seq->n_tokens - 1]);
	return SPECD_OK;
}

static const struct draft_ops scripted_ops = {
	.method = DRAFT_METHOD_NGRAM, .create = sc_create, .destroy = sc_destroy,
	.supports = sc_supports, .memory_bytes = sc_memory, .reset = sc_reset,
	.propose = sc_propose, .commit = sc_commit,
};

static void test_engine__rolls_back_all_none_and_some_rejections(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 1, 0);
	int32_t truth[CAP], got[CAP];
	struct prompt p = {{1, 100, 101, 102}, 4};
	memcpy(truth, p.ids, p.n * sizeof(int32_t));
	uint32_t n_ref = fx_plain_greedy(t, p.ids, p.n, MAX_GEN, truth + p.n);
	g_script = (struct scripted){.truth = truth, .n_truth = p.n + n_ref, .n_vocab = 300};

	for (int mode = SCRIPT_ALL; mode <= SCRIPT_SECOND_WRONG; mode++) {
		struct draft_config dc = {.k_max = 8, .n_slots = 1, .target = t};
		struct drafter *d;
		struct draft_metrics m;
		uint32_t n;
		g_script.mode = (enum script)mode;
		assert_int_equal(draft_create_ops(&scripted_ops, &dc, &d, NULL), SPECD_OK);
		assert_int_equal(fx_generate(t, d, 3, NULL, p.ids, p.n, &k_greedy, MAX_GEN, -1, got,
					     CAP, &n, &m, NULL), SPECD_OK);
		assert_int_equal(n, n_ref);
		assert_memory_equal(got, truth + p.n, n * sizeof(int32_t));
		assert_true(m.drafted > 0);
		switch (mode) {
		case SCRIPT_ALL:
			assert_int_equal(m.accepted, m.drafted);
			assert_true(m.steps < n / 3 + 2); /* 4 tokens a step */
			break;
		case SCRIPT_NONE:
			assert_int_equal(m.accepted, 0);
			assert_int_equal(m.steps, n);
			break;
		default:
			assert_int_equal(m.accepted_at[0], m.proposed_at[0]);
			assert_int_equal(m.accepted_at[1], 0);
			assert_true(m.proposed_at[2] > 0);
			assert_int_equal(m.accepted_at[2], 0);
			assert_true(draft_metrics_position_rate(&m, 1) == 1.0);
			break;
		}
		draft_destroy(d);
	}
	model_destroy(t);
}

/* Greedy, but never keeps more than one proposed token (correct ones included): the
 * output is unchanged, and the draft model must roll back its KV every step. */
static int g_mismatch;
static enum specd_status stingy_verify(struct sampler *s, const float *logits,
				       uint32_t n_vocab, const struct draft_proposal *prop,
				       float *work, struct draft_verdict *out)
{
	struct draft_verdict v;
	enum specd_status st = draft_verify(s, logits, n_vocab, prop, work, &v);
	if (st != SPECD_OK)
		return st;
	if (v.n_accepted != prop->n)
		g_mismatch++; /* a self-draft that is not in sync with the target */
	if (v.n_accepted > 1) {
		v.n_accepted = 1;
		v.next = prop->tokens[1]; /* the target's argmax there, as accepted */
	}
	*out = v;
	return SPECD_OK;
}

static void test_engine__draft_model_rolls_back_its_cache(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 1, 0);
	int32_t ref[CAP], got[CAP];
	struct prompt p = {{1, 50, 60, 50, 60}, 5};
	uint32_t n_ref = fx_plain_greedy(t, p.ids, p.n, MAX_GEN, ref), n;
	struct drafter *d = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, 4, 1, g_llama, 0);
	struct draft_metrics m;

	g_mismatch = 0;
	assert_int_equal(fx_generate(t, d, 4, stingy_verify, p.ids, p.n, &k_greedy, MAX_GEN, -1,
				     got, CAP, &n, &m, NULL), SPECD_OK);
	assert_int_equal(n, n_ref);
	assert_memory_equal(got, ref, n * sizeof(int32_t));
	assert_int_equal(g_mismatch, 0);
	assert_true(m.steps >= n / 2);
	assert_true(m.accepted < m.drafted);
	draft_destroy(d);
	model_destroy(t);
}

/* Rows a draft model computed past a commit (the draft rank drafts ahead of the
 * leader's verdict) that the committed sequence does not hold, because another
 * method's proposal was verified instead, are dropped: the next proposal is the one a
 * fresh draft model makes for that sequence. */
static void test_engine__draft_model_drops_rows_the_sequence_does_not_hold(void **state)
{
	(void)state;
	enum { K = 8, N0 = 5 };
	struct model *t = fx_load(g_llama, 1, 0);
	struct drafter *d = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, K, 1, g_llama, 0);
	struct drafter *fresh = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, K, 1, g_llama, 0);
	int32_t toks[N0 + K] = {1, 50, 60, 70, 80}, a[K], b[K], c[K];
	struct draft_seq seq = {.slot = 0, .tokens = toks, .n_tokens = N0};
	struct draft_proposal pa = {.tokens = a}, pb = {.tokens = b}, pc = {.tokens = c};
	struct specd_error err;

	specd_error_clear(&err);
	assert_int_equal(draft_reset(d, &seq, &err), SPECD_OK);
	assert_int_equal(draft_propose(d, &seq, K, &pa, &err), SPECD_OK);
	assert_int_equal(pa.n, K);
	/* Another method's three tokens, none the draft's, accepted; then the bonus. */
	for (uint32_t i = 0; i < 3; i++)
		toks[N0 + i] = (a[i] + 1 + (int32_t)i) % 300;
	toks[N0 + 3] = 7;
	seq.n_tokens = N0 + 4;
	assert_int_equal(draft_commit(d, &seq, 3, 7, &err), SPECD_OK);
	assert_int_equal(draft_propose(d, &seq, K, &pb, &err), SPECD_OK);
	assert_int_equal(draft_reset(fresh, &seq, &err), SPECD_OK);
	assert_int_equal(draft_propose(fresh, &seq, K, &pc, &err), SPECD_OK);
	assert_int_equal(pb.n, pc.n);
	assert_memory_equal(b, c, pc.n * sizeof(int32_t));
	draft_destroy(fresh);
	draft_destroy(d);
	model_destroy(t);
}

static void test_engine__cuts_at_eos_max_tokens_and_context(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 1, 0);
	struct drafter *d = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, 8, 1, g_llama, 0);
	int32_t ref[CAP], got[CAP];
	struct prompt p = {{1, 100, 101, 102}, 4};
	uint32_t n_ref = fx_plain_greedy(t, p.ids, p.n, MAX_GEN, ref), n;
	enum draft_stop stop;

	/* Max tokens inside an accepted run. */
	assert_int_equal(fx_generate(t, d, 8, NULL, p.ids, p.n, &k_greedy, 5, -1, got, CAP, &n,
				     NULL, &stop), SPECD_OK);
	assert_int_equal(n, 5);
	assert_int_equal(stop, DRAFT_STOP_MAX_TOKENS);
	assert_memory_equal(got, ref, 5 * sizeof(int32_t));
	/* EOS: an id that greedy decoding produces; the output ends before its first use. */
	int32_t eos = ref[6];
	uint32_t first = 0;
	while (ref[first] != eos)
		first++;
	assert_int_equal(fx_generate(t, d, 8, NULL, p.ids, p.n, &k_greedy, MAX_GEN, eos, got, CAP,
				     &n, NULL, &stop), SPECD_OK);
	assert_int_equal(stop, DRAFT_STOP_EOS);
	assert_int_equal(n, first);
	assert_memory_equal(got, ref, n * sizeof(int32_t));
	/* The same id as one of the extra end ids (a chat model's <|endoftext|> beside its
	 * EOS), the EOS one greedy decoding never produces. */
	int32_t extra[2] = {(int32_t)model_hparams(t)->n_vocab + 5, eos};
	struct fx_job job = {
		.target = t, .d = d, .k = 8, .prompt = p.ids, .n_prompt = p.n,
		.params = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1,
			   .extra_eos = extra, .n_extra_eos = 2},
	};
	assert_int_equal(fx_run_job(&job, got, CAP, &n, NULL, &stop), SPECD_OK);
	assert_int_equal(stop, DRAFT_STOP_EOS);
	assert_int_equal(n, first);
	assert_memory_equal(got, ref, n * sizeof(int32_t));
	/* max_tokens 0: nothing. */
	assert_int_equal(fx_generate(t, d, 8, NULL, p.ids, p.n, &k_greedy, 0, -1, got, CAP, &n,
				     NULL, &stop), SPECD_OK);
	assert_int_equal(n, 0);
	assert_int_equal(stop, DRAFT_STOP_MAX_TOKENS);
	draft_destroy(d);
	model_destroy(t);

	/* The context: a 20-row slot holds the prompt and 16 more tokens; plain decoding
	 * also emits the token sampled from the last row. */
	t = fx_load(g_llama, 1, 20);
	n_ref = fx_plain_greedy(t, p.ids, p.n, 100, ref);
	assert_int_equal(n_ref, 20 - p.n + 1);
	static const enum draft_method methods[] = {DRAFT_METHOD_NONE, DRAFT_METHOD_NGRAM,
						    DRAFT_METHOD_DRAFT_MODEL};
	for (int i = 0; i < 3; i++) {
		d = methods[i] == DRAFT_METHOD_NONE ? NULL
			: fx_drafter(methods[i], t, 8, 1, g_llama_q8, 1);
		assert_int_equal(fx_generate(t, d, 8, NULL, p.ids, p.n, &k_greedy, 100, -1, got,
					     CAP, &n, NULL, &stop), SPECD_OK);
		assert_int_equal(stop, DRAFT_STOP_CONTEXT);
		assert_int_equal(n, n_ref);
		assert_memory_equal(got, ref, n * sizeof(int32_t));
		draft_destroy(d);
	}
	model_destroy(t);
}

/* Two sequences verified in one forward give what each gives alone. */
static void test_engine__two_jobs_share_a_forward(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 2, 0);
	struct prompt p[2] = {{{1, 100, 101, 102}, 4}, {{1, 50, 60, 50, 60, 50}, 6}};
	int32_t ref[2][CAP];
	static const enum draft_method methods[] = {DRAFT_METHOD_NGRAM, DRAFT_METHOD_DRAFT_MODEL};

	plain_refs(p, 2, ref);
	for (int mi = 0; mi < 2; mi++) {
		struct drafter *d = fx_drafter(methods[mi], t, 3, 2, g_llama_q8, 1);
		struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = 3};
		struct draft_job_params jp = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1};
		struct draft_engine *e;
		struct draft_job *j[2];
		assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
		for (uint32_t i = 0; i < 2; i++) {
			assert_int_equal(draft_job_create(e, i, &j[i], NULL), SPECD_OK);
			assert_int_equal(draft_job_start(j[i], p[i].ids, p[i].n, &jp, NULL), SPECD_OK);
		}
		struct draft_job *same[2] = {j[0], j[0]};
		assert_int_equal(draft_engine_step(e, same, 2, NULL), SPECD_INVAL);
		while (draft_job_stop(j[0]) == DRAFT_STOP_NONE || draft_job_stop(j[1]) == DRAFT_STOP_NONE)
			assert_int_equal(draft_engine_step(e, j, 2, NULL), SPECD_OK);
		check_and_destroy_jobs(j, 2, ref);
		draft_engine_destroy(e);
		draft_destroy(d);
	}
	model_destroy(t);
}

/* A job's own speculation setting (plain, or fewer tokens than the engine drafts)
 * changes nothing in its output, and its log-probabilities are bitwise those of plain
 * decoding: the verify rows are the same batch-invariant logits. */
static void test_engine__per_job_speculation_and_logprobs(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 1, 0);
	struct prompt p = {{1, 50, 60, 50, 60, 50, 60}, 7};
	struct drafter *d = fx_drafter(DRAFT_METHOD_NGRAM, t, 4, 1, NULL, 1);
	struct draft_engine_config plain_cfg = {.target = t};
	struct draft_engine_config spec_cfg = {.target = t, .drafter = d, .spec_tokens = 4};
	struct draft_engine *plain_e, *spec_e;
	struct draft_job *pj, *sj;
	enum { TOP = 3 };
	struct draft_job_params jp = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1,
				      .logprobs = true, .top_logprobs = TOP};
	assert_int_equal(draft_engine_create(&plain_cfg, &plain_e, NULL), SPECD_OK);
	assert_int_equal(draft_engine_create(&spec_cfg, &spec_e, NULL), SPECD_OK);
	assert_int_equal(draft_job_create(plain_e, 0, &pj, NULL), SPECD_OK);
	assert_int_equal(draft_job_create(spec_e, 0, &sj, NULL), SPECD_OK);
	assert_int_equal(draft_job_start(pj, p.ids, p.n, &jp, NULL), SPECD_OK);
	while (draft_job_stop(pj) == DRAFT_STOP_NONE)
		assert_int_equal(draft_job_step(pj, NULL), SPECD_OK);
	uint32_t n_ref, stride;
	const int32_t *ref = draft_job_output(pj, &n_ref);
	const struct sampler_logprob *ref_lp = draft_job_logprobs(pj, &stride);
	assert_non_null(ref_lp);
	assert_int_equal(stride, 1 + TOP);
	for (uint32_t i = 0; i < n_ref; i++) {
		/* Greedy: the chosen token is the most likely. */
		assert_int_equal(ref_lp[i * stride].token, ref[i]);
		assert_int_equal(ref_lp[i * stride + 1].token, ref[i]);
		assert_true(ref_lp[i * stride].logprob <= 0);
		assert_true(ref_lp[i * stride + 1].logprob >= ref_lp[i * stride + 2].logprob);
	}
	static const struct { bool plain; uint32_t k, want_k; } cases[] = {
		{false, 0, 4}, {false, 2, 2}, {false, 4, 4}, {true, 0, 0}, {true, 3, 0},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		jp.plain = cases[c].plain;
		jp.spec_tokens = cases[c].k;
		jp.defer_prefill = c % 2; /* the prompt through the steps: the same again */
		assert_int_equal(draft_job_start(sj, p.ids, p.n, &jp, NULL), SPECD_OK);
		assert_int_equal(draft_job_spec_tokens(sj), cases[c].want_k);
		while (draft_job_stop(sj) == DRAFT_STOP_NONE)
			assert_int_equal(draft_job_step(sj, NULL), SPECD_OK);
		uint32_t n, s2;
		const int32_t *out = draft_job_output(sj, &n);
		const struct sampler_logprob *lp = draft_job_logprobs(sj, &s2);
		const struct draft_metrics *m = draft_job_metrics(sj);
		assert_int_equal(n, n_ref);
		assert_memory_equal(out, ref, n * sizeof(int32_t));
		assert_int_equal(s2, stride);
		assert_memory_equal(lp, ref_lp, (size_t)n * stride * sizeof(*lp));
		if (cases[c].want_k == 0)
			assert_int_equal(m->drafted, 0);
		else
			assert_true(m->drafted > 0 && m->steps < n); /* the repeats are drafted */
		assert_true(m->drafted <= m->steps * cases[c].want_k);
	}
	/* More than the engine drafts, or too many alternatives: refused. */
	jp.defer_prefill = false;
	jp.plain = false;
	jp.spec_tokens = 5;
	assert_int_equal(draft_job_start(sj, p.ids, p.n, &jp, NULL), SPECD_INVAL);
	jp.spec_tokens = 0;
	jp.top_logprobs = SAMPLER_MAX_TOP_LOGPROBS + 1;
	assert_int_equal(draft_job_start(sj, p.ids, p.n, &jp, NULL), SPECD_INVAL);
	/* Without logprobs: none kept. */
	jp.logprobs = false;
	assert_int_equal(draft_job_start(sj, p.ids, p.n, &jp, NULL), SPECD_OK);
	assert_null(draft_job_logprobs(sj, &stride));
	assert_int_equal(stride, 0);
	draft_job_destroy(pj);
	draft_job_destroy(sj);
	draft_engine_destroy(plain_e);
	draft_engine_destroy(spec_e);
	draft_destroy(d);
	model_destroy(t);
}

/* Sampling with prompt lookup gives plain sampling's tokens for the same seed (plain
 * sampling written without the engine, fx_plain_decode): each emitted token is one
 * draw from the target at its position with the next uniform (verify.h), whatever
 * was drafted; drafts are accepted now and then. The engine without a drafter gives
 * them too. */
static void test_engine__sampled_ngram_output_is_plain_samplings(void **state)
{
	(void)state;
	static const struct sampler_params sp[] = {
		{.temperature = 0.8f, .top_p = 0.9f},
		{.temperature = 1.2f, .top_k = 20, .top_p = 1.0f, .min_p = 0.05f},
		{.temperature = 0.3f, .top_p = 1.0f},
	};
	struct model *t = fx_load(g_llama, 1, 0);
	struct drafter *d = fx_drafter(DRAFT_METHOD_NGRAM, t, 4, 1, NULL, 1);
	struct prompt p = {{1, 50, 60, 50, 60, 50, 60}, 7};
	fx_expect_plain_sampling(t, NULL, 0, p.ids, p.n, sp, 3, 9, MAX_GEN);
	uint64_t accepted = fx_expect_plain_sampling(t, d, 4, p.ids, p.n, sp, 3, 9, MAX_GEN);
	assert_true(accepted > 0);
	draft_destroy(d);
	model_destroy(t);
}

/* Jobs stepped together in one engine: outputs, metrics, and what the emulated device
 * holding the target downloaded meanwhile. */
#define MAX_JOBS 3
struct multi_run {
	int32_t out[MAX_JOBS][CAP];
	uint32_t n[MAX_JOBS];
	struct draft_metrics m[MAX_JOBS];
	uint64_t downloaded;
};

/* Starts n jobs on e (slot i: prompt p[i], parameters jp[i]), steps them together until
 * every one has stopped, and records them in r. */
static void run_jobs(struct draft_engine *e, struct kern_ctx *kern, uint32_t n,
		     const struct prompt *p, const struct draft_job_params *jp,
		     struct multi_run *r)
{
	struct draft_job *j[MAX_JOBS];
	assert_true(n <= MAX_JOBS);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(draft_job_create(e, i, &j[i], NULL), SPECD_OK);
		assert_int_equal(draft_job_start(j[i], p[i].ids, p[i].n, &jp[i], NULL), SPECD_OK);
	}
	uint64_t before = kern_emu_stats(kern).downloaded;
	for (bool running = true; running;) {
		running = false;
		for (uint32_t i = 0; i < n; i++)
			running |= draft_job_stop(j[i]) == DRAFT_STOP_NONE;
		if (running)
			assert_int_equal(draft_engine_step(e, j, n, NULL), SPECD_OK);
	}
	r->downloaded = kern_emu_stats(kern).downloaded - before;
	for (uint32_t i = 0; i < n; i++) {
		const int32_t *out = draft_job_output(j[i], &r->n[i]);
		assert_true(r->n[i] <= CAP);
		memcpy(r->out[i], out, r->n[i] * sizeof(int32_t));
		r->m[i] = *draft_job_metrics(j[i]);
		draft_job_destroy(j[i]);
	}
}

/* Two runs of n jobs give the same tokens and speculation counts, job by job. */
static void expect_same_runs(const struct multi_run *a, const struct multi_run *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(a->n[i], b->n[i]);
		assert_memory_equal(a->out[i], b->out[i], a->n[i] * sizeof(int32_t));
		assert_int_equal(a->m[i].drafted, b->m[i].drafted);
		assert_int_equal(a->m[i].accepted, b->m[i].accepted);
	}
}

/* Three jobs in one engine: a sampling ngram job, a sampling plain one and a greedy
 * ngram one, each with its own seed. */
static void run_mixed(struct model *t, const struct sampler_params *sp, uint64_t seed,
		      bool logprobs, struct multi_run *r)
{
	struct prompt p[3] = {{{1, 50, 60, 50, 60, 50, 60}, 7}};
	struct draft_job_params jp[3];
	struct drafter *d = fx_drafter(DRAFT_METHOD_NGRAM, t, 4, 3, NULL, 1);
	struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = 4};
	struct draft_engine *e;
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	for (uint32_t i = 0; i < 3; i++) {
		p[i] = p[0];
		jp[i] = (struct draft_job_params){.sampling = i == 2 ? k_greedy : *sp,
						  .max_tokens = MAX_GEN, .eos = -1,
						  .plain = i == 1, .logprobs = logprobs && i == 0};
		jp[i].sampling.seed = seed + i;
	}
	run_jobs(e, model_kern(t), 3, p, jp, r);
	draft_engine_destroy(e);
	draft_destroy(d);
}

/* On a device (the emulated one), sampling jobs drafting chains with prompt lookup are
 * verified from tokens drawn where the logits are (drafters/verify.h
 * draft_verify_drawn): a step that mixes them with plain sampling and a greedy job
 * downloads no logits at all, and every job's tokens and speculation counts are the
 * CPU's (whose verifier reads the rows) for the same seeds. A job that wants
 * log-probabilities brings its rows back, and still gives the CPU's tokens. */
static void test_engine__sampled_chains_on_a_device_leave_the_logits_there(void **state)
{
	(void)state;
	static const struct sampler_params params[] = {
		{.temperature = 0.8f, .top_p = 0.9f},
		{.temperature = 1.2f, .top_k = 20, .top_p = 1.0f, .min_p = 0.05f},
	};
	struct kern_ctx *emu = NULL;
	assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
	struct model_config mc = {.n_slots = 3, .kern = emu};
	struct model *c = fx_load(g_llama, 3, 0), *dev = NULL;
	assert_int_equal(model_load(g_llama, &mc, &dev, NULL), SPECD_OK);
	static struct multi_run rc, rd;
	uint64_t drafted = 0, accepted = 0;
	for (size_t pi = 0; pi < sizeof(params) / sizeof(params[0]); pi++) {
		for (uint64_t seed = 1; seed <= 12; seed += 3) {
			bool lp = seed == 10;
			run_mixed(c, &params[pi], seed, lp, &rc);
			run_mixed(dev, &params[pi], seed, lp, &rd);
			expect_same_runs(&rc, &rd, 3);
			uint64_t row = model_hparams(dev)->n_vocab * sizeof(float);
			if (lp)
				assert_true(rd.downloaded >= rd.m[0].steps * row);
			else
				assert_int_equal(rd.downloaded, 0);
			drafted += rd.m[0].drafted;
			accepted += rd.m[0].accepted;
		}
	}
	/* Both ends of the walk ran: drafts accepted and drafts rejected. */
	assert_true(accepted > 0 && accepted < drafted);
	model_destroy(dev);
	model_destroy(c);
	kern_destroy(emu);
}

/* Two greedy jobs with a draft model, target and draft on one backend. */
static void run_draft_greedy(struct model *t, struct kern_ctx *kern, struct multi_run *r)
{
	const struct prompt p[2] = {{{1, 100, 101, 102}, 4}, {{1, 50, 60, 50, 60, 50}, 6}};
	const struct draft_job_params jp = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1};
	const struct draft_job_params jps[2] = {jp, jp};
	struct draft_config dc = {.method = DRAFT_METHOD_DRAFT_MODEL, .k_max = 4, .n_slots = 2,
				  .n_ctx = kv_n_ctx(model_kv(t)), .target = t,
				  .draft_path = g_llama_q8, .kern = kern};
	struct drafter *d = NULL;
	assert_int_equal(draft_create(&dc, &d, NULL), SPECD_OK);
	struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = 4};
	struct draft_engine *e;
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	run_jobs(e, kern, 2, p, jps, r);
	draft_engine_destroy(e);
	draft_destroy(d);
}

/* Greedy drafting on a device takes each draft token from the argmax where the draft's
 * logits are, as the target's verdict is taken from its own: two jobs drafting from a
 * draft model batched together download nothing, and give the CPU's tokens and counts. */
static void test_engine__greedy_draft_model_on_a_device_downloads_nothing(void **state)
{
	(void)state;
	struct kern_ctx *cpu = NULL, *emu = NULL;
	assert_int_equal(kern_cpu_create(NULL, &cpu), SPECD_OK);
	assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
	struct model_config mc = {.n_slots = 2, .kern = emu};
	struct model *c = fx_load(g_llama, 2, 0), *dev = NULL;
	assert_int_equal(model_load(g_llama, &mc, &dev, NULL), SPECD_OK);
	static struct multi_run rc, rd;
	run_draft_greedy(c, cpu, &rc);
	run_draft_greedy(dev, emu, &rd);
	expect_same_runs(&rc, &rd, 2);
	for (int i = 0; i < 2; i++)
		assert_true(rd.m[i].accepted > 0);
	assert_int_equal(rd.downloaded, 0);
	model_destroy(dev);
	model_destroy(c);
	kern_destroy(cpu);
	kern_destroy(emu);
}

/* A batch too small for every job's K + 1: each job drafts its fair share (6 rows, 2
 * jobs: 2 tokens each) and the outputs are still those of plain decoding. */
static void test_engine__small_batch_lowers_each_jobs_k(void **state)
{
	(void)state;
	struct model_config mc = {.n_slots = 2, .max_batch = 6};
	struct model *t = NULL;
	struct specd_error err;
	assert_int_equal(model_load(g_llama, &mc, &t, &err), SPECD_OK);
	struct prompt p[2] = {{{1, 50, 60, 50, 60, 50}, 6},
			      {{1, 70, 80, 70, 80, 70, 90, 91, 92, 93, 70, 80, 70}, 13}};
	int32_t ref[2][CAP];
	plain_refs(p, 2, ref);
	struct drafter *d = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, 4, 2, g_llama, 0);
	struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = 4};
	struct draft_job_params jp = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1};
	struct draft_engine *e;
	struct draft_job *j[2];
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	for (uint32_t i = 0; i < 2; i++) {
		/* The second prompt (12 tokens to prefill) goes through the 6-row steps. */
		jp.defer_prefill = i == 1;
		assert_int_equal(draft_job_create(e, i, &j[i], NULL), SPECD_OK);
		assert_int_equal(draft_job_start(j[i], p[i].ids, p[i].n, &jp, NULL), SPECD_OK);
	}
	/* Step 1: job 0 verifies 3 rows (its share of 6), job 1 prefills the other 3. */
	assert_int_equal(draft_engine_step(e, j, 2, NULL), SPECD_OK);
	uint32_t n0, n1;
	draft_job_output(j[0], &n0);
	draft_job_output(j[1], &n1);
	assert_true(n0 >= 1);
	assert_int_equal(n1, 0);
	uint32_t steps = 0;
	while (draft_job_stop(j[0]) == DRAFT_STOP_NONE && draft_job_stop(j[1]) == DRAFT_STOP_NONE) {
		uint64_t before[2] = {draft_job_metrics(j[0])->drafted, draft_job_metrics(j[1])->drafted};
		assert_int_equal(draft_engine_step(e, j, 2, NULL), SPECD_OK);
		/* Self-drafting would take all 4; the shared batch allows 2 each. */
		for (int i = 0; i < 2; i++)
			assert_true(draft_job_metrics(j[i])->drafted - before[i] <= 2);
		steps++;
	}
	while (draft_job_stop(j[0]) == DRAFT_STOP_NONE || draft_job_stop(j[1]) == DRAFT_STOP_NONE)
		assert_int_equal(draft_engine_step(e, j, 2, NULL), SPECD_OK);
	assert_true(steps > 0);
	for (int i = 0; i < 2; i++) {
		uint32_t n;
		const int32_t *out = draft_job_output(j[i], &n);
		assert_int_equal(n, MAX_GEN);
		assert_memory_equal(out, ref[i], n * sizeof(int32_t));
		assert_true(draft_job_metrics(j[i])->accepted > 0);
		draft_job_destroy(j[i]);
	}
	draft_engine_destroy(e);
	draft_destroy(d);
	model_destroy(t);
}

/* A planner that lowers K per slot: slot 0 never drafts, slot 1 one token, slot 2 what
 * it may. What it is offered is each job's cap (plain job: 0); asking for more than
 * the cap is ignored; the outputs stay those of plain decoding. */
struct plan_log {
	uint32_t calls, seen_cap[3], asked_more;
};

static void plan_by_slot(void *user, const uint32_t *slots, uint32_t *k, uint32_t n)
{
	struct plan_log *log = user;
	log->calls++;
	for (uint32_t i = 0; i < n; i++) {
		assert_true(slots[i] < 3);
		if (k[i] > log->seen_cap[slots[i]])
			log->seen_cap[slots[i]] = k[i];
		if (slots[i] == 0)
			k[i] = 0;
		else if (slots[i] == 1)
			k[i] = 1;
		else
			k[i] += 5; /* more than allowed: the engine keeps the cap */
	}
}

static void test_engine__planner_lowers_k_per_job(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 3, 0);
	struct prompt p[3] = {{{1, 50, 60, 50, 60, 50}, 6}, {{1, 70, 80, 70, 80, 70}, 6},
			      {{1, 90, 91, 90, 91, 90}, 6}};
	int32_t ref[3][CAP];
	plain_refs(p, 3, ref);
	struct drafter *d = fx_drafter(DRAFT_METHOD_NGRAM, t, 3, 3, NULL, 1);
	struct draft_engine_config ec = {.target = t, .drafter = d, .spec_tokens = 3};
	struct draft_engine *e;
	struct draft_job *j[3];
	struct plan_log log = {0};
	assert_int_equal(draft_engine_create(&ec, &e, NULL), SPECD_OK);
	draft_engine_set_planner(e, plan_by_slot, &log);
	for (uint32_t i = 0; i < 3; i++) {
		struct draft_job_params jp = {.sampling = k_greedy, .max_tokens = MAX_GEN, .eos = -1};
		assert_int_equal(draft_job_create(e, i, &j[i], NULL), SPECD_OK);
		assert_int_equal(draft_job_start(j[i], p[i].ids, p[i].n, &jp, NULL), SPECD_OK);
	}
	uint32_t most[3] = {0};
	while (draft_job_stop(j[0]) == DRAFT_STOP_NONE || draft_job_stop(j[1]) == DRAFT_STOP_NONE ||
	       draft_job_stop(j[2]) == DRAFT_STOP_NONE) {
		assert_int_equal(draft_engine_step(e, j, 3, NULL), SPECD_OK);
		for (int i = 0; i < 3; i++) {
			uint32_t drafted, kept;
			if (draft_job_last_step(j[i], &drafted, &kept)) {
				assert_true(kept <= drafted);
				if (drafted > most[i])
					most[i] = drafted;
			}
		}
	}
	assert_true(log.calls > 0);
	assert_int_equal(log.seen_cap[0], 3); /* offered its K ... */
	assert_int_equal(most[0], 0);         /* ... and told to draft none */
	assert_int_equal(most[1], 1);
	assert_true(most[2] >= 2 && most[2] <= 3); /* the cap, never the 8 asked */
	assert_int_equal(draft_job_metrics(j[0])->drafted, 0);
	check_and_destroy_jobs(j, 3, ref);
	draft_engine_destroy(e);
	draft_destroy(d);
	model_destroy(t);
}

/* The draft model's batched proposals are exactly the one-by-one ones: three sequences
 * drafted together and apart, greedy and sampled (each with its own seeded sampler),
 * over several rounds of partial acceptance, give the same tokens and q rows. */
static void test_engine__draft_model_batch_equals_one_by_one(void **state)
{
	(void)state;
	enum { N = 3, K = 4, ROUNDS = 4 };
	struct model *t = fx_load(g_llama, N, 0);
	uint32_t V = model_hparams(t)->n_vocab;
	/* Greedy, sampled, and greedy from cold slots with 30-token histories: 90 tokens of
	 * catch-up do not fit one forward of 64, so a sequence goes alone beside the
	 * group. */
	for (int mode = 0; mode < 3; mode++) {
		bool sampled = mode == 1, cold = mode == 2;
		struct drafter *one = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, K, N, g_llama_draft, 0);
		struct drafter *all = fx_drafter(DRAFT_METHOD_DRAFT_MODEL, t, K, N, g_llama_draft, 0);
		int32_t hist[N][64] = {{1, 50, 60, 50}, {1, 7, 8, 9, 10, 11, 12}, {1, 200}};
		uint32_t len[N] = {4, 7, 2};
		for (uint32_t i = 0; cold && i < N; i++) {
			for (len[i] = 1; len[i] < 30; len[i]++)
				hist[i][len[i]] = (int32_t)((len[i] * 37 + i * 11) % 290 + 3);
		}
		struct sampler *sa[N], *sb[N];
		struct draft_proposal pa[N], pb[N], *pbp[N];
		struct draft_seq qa[N], qb[N];
		uint32_t ks[N] = {K, 2, K};
		for (int i = 0; i < N; i++) {
			struct sampler_params sp = {.temperature = 0.9f, .top_p = 1.0f, .seed = 40 + i};
			assert_int_equal(sampler_create((int32_t)V, &sp, &sa[i], NULL), SPECD_OK);
			assert_int_equal(sampler_create((int32_t)V, &sp, &sb[i], NULL), SPECD_OK);
			pa[i].tokens = calloc(K, sizeof(int32_t));
			pb[i].tokens = calloc(K, sizeof(int32_t));
			pa[i].q = calloc((size_t)K * V, sizeof(float));
			pb[i].q = calloc((size_t)K * V, sizeof(float));
			pbp[i] = &pb[i];
		}
		for (int r = 0; r < ROUNDS; r++) {
			for (uint32_t i = 0; i < N; i++) {
				qa[i] = (struct draft_seq){.slot = i, .tokens = hist[i], .n_tokens = len[i],
							   .sampler = sampled ? sa[i] : NULL};
				qb[i] = qa[i];
				qb[i].sampler = sampled ? sb[i] : NULL;
				if (r == 0 && !cold) {
					assert_int_equal(draft_reset(one, &qa[i], NULL), SPECD_OK);
					assert_int_equal(draft_reset(all, &qb[i], NULL), SPECD_OK);
				}
			}
			for (int i = 0; i < N; i++)
				assert_int_equal(draft_propose(one, &qa[i], ks[i], &pa[i], NULL), SPECD_OK);
			assert_int_equal(draft_propose_batch(all, qb, ks, pbp, N, NULL), SPECD_OK);
			for (int i = 0; i < N; i++) {
				assert_int_equal(pa[i].n, ks[i]);
				assert_int_equal(pb[i].n, pa[i].n);
				assert_int_equal(pb[i].q_onehot, !sampled);
				assert_memory_equal(pb[i].tokens, pa[i].tokens, pa[i].n * sizeof(int32_t));
				if (sampled)
					assert_memory_equal(pb[i].q, pa[i].q, (size_t)pa[i].n * V * sizeof(float));
				/* Keep the first r % 3 drafts and a correction, as a verifier might. */
				uint32_t keep = (uint32_t)(r + i) % 3 < pa[i].n ? (uint32_t)(r + i) % 3 : pa[i].n;
				memcpy(hist[i] + len[i], pa[i].tokens, keep * sizeof(int32_t));
				len[i] += keep;
				hist[i][len[i]++] = (int32_t)(3 + r + i);
				qa[i].n_tokens = qb[i].n_tokens = len[i];
				assert_int_equal(draft_commit(one, &qa[i], keep, hist[i][len[i] - 1], NULL), SPECD_OK);
				assert_int_equal(draft_commit(all, &qb[i], keep, hist[i][len[i] - 1], NULL), SPECD_OK);
			}
		}
		for (int i = 0; i < N; i++) {
			sampler_destroy(sa[i]);
			sampler_destroy(sb[i]);
			free(pa[i].tokens);
			free(pb[i].tokens);
			free(pa[i].q);
			free(pb[i].q);
		}
		draft_destroy(one);
		draft_destroy(all);
	}
	model_destroy(t);
}

static void test_engine__refuses_a_draft_with_another_vocabulary(void **state)
{
	(void)state;
	struct model *t = fx_load(g_llama, 1, 0);
	struct draft_config dc = {.method = DRAFT_METHOD_DRAFT_MODEL, .k_max = 4, .n_slots = 1,
				  .target = t, .draft_path = g_other_vocab};
	struct specd_error err;
	struct drafter *d = NULL;

	assert_int_equal(draft_create(&dc, &d, &err), SPECD_INVAL);
	assert_null(d);
	assert_non_null(strstr(err.msg, "vocabulary is not the target's"));
	assert_non_null(strstr(err.msg, "320 tokens in the draft, 300 in the target"));
	dc.draft_path = NULL;
	assert_int_equal(draft_create(&dc, &d, &err), SPECD_INVAL);
	dc.draft_path = "/nonexistent/draft.gguf";
	assert_int_not_equal(draft_create(&dc, &d, &err), SPECD_OK);
	assert_non_null(strstr(err.msg, "/nonexistent/draft.gguf"));
	dc.method = DRAFT_METHOD_EAGLE;
	assert_int_equal(draft_create(&dc, &d, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "no checkpoint folder"));
	model_destroy(t);

	if (!g_have_st)
		return;
	/* Same size, other pieces. */
	t = fx_load(g_st, 1, 0);
	dc.target = t;
	dc.method = DRAFT_METHOD_DRAFT_MODEL;
	dc.draft_path = g_st_synth;
	assert_int_equal(draft_create(&dc, &d, &err), SPECD_INVAL);
	if (!strstr(err.msg, "vocabulary is not the target's: token "))
		fail_msg("%s", err.msg);
	/* The generated draft with stories260K's vocabulary is accepted. */
	dc.draft_path = g_st_draft;
	assert_int_equal(draft_create(&dc, &d, &err), SPECD_OK);
	assert_true(draft_memory_bytes(d) > 0);
	draft_destroy(d);
	model_destroy(t);
}

static void test_engine__metrics_definitions(void **state)
{
	(void)state;
	struct draft_metrics m;
	char buf[1024];
	draft_metrics_init(&m, 3);
	draft_metrics_add_step(&m, 3, 3); /* 4 tokens */
	draft_metrics_add_step(&m, 3, 1); /* 2 */
	draft_metrics_add_step(&m, 0, 0); /* 1: nothing proposed */
	assert_int_equal(m.drafted, 6);
	assert_int_equal(m.accepted, 4);
	assert_int_equal(m.emitted, 7);
	assert_true(draft_metrics_mean_accept_len(&m) == 7.0 / 3.0);
	assert_true(draft_metrics_efficiency(&m) == 7.0 / 12.0);
	assert_true(draft_metrics_acceptance_rate(&m) == 4.0 / 6.0);
	assert_true(draft_metrics_position_rate(&m, 1) == 1.0);
	assert_true(draft_metrics_position_rate(&m, 2) == 0.5);
	assert_true(draft_metrics_position_rate(&m, 4) == 0.0);
	size_t len = draft_metrics_format(&m, "x: ", buf, sizeof(buf));
	assert_int_equal(len, strlen(buf));
	assert_non_null(strstr(buf, "x: steps 3, drafted 6, accepted 4 (66.7%)"));
	assert_non_null(strstr(buf, "mean acceptance length 2.33"));
	assert_non_null(strstr(buf, "acceptance by position: 1:100% 2:50% 3:50%"));
	char small[10];
	assert_int_equal(draft_metrics_format(&m, "x: ", small, sizeof(small)), len);
	assert_int_equal(strlen(small), 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_engine__metrics_definitions),
		cmocka_unit_test(test_engine__greedy_matches_plain_on_random_llama),
		cmocka_unit_test(test_engine__greedy_matches_plain_on_random_qwen2),
		cmocka_unit_test(test_engine__greedy_matches_plain_on_stories260k),
		cmocka_unit_test(test_engine__rolls_back_all_none_and_some_rejections),
		cmocka_unit_test(test_engine__draft_model_rolls_back_its_cache),
		cmocka_unit_test(test_engine__draft_model_drops_rows_the_sequence_does_not_hold),
		cmocka_unit_test(test_engine__cuts_at_eos_max_tokens_and_context),
		cmocka_unit_test(test_engine__two_jobs_share_a_forward),
		cmocka_unit_test(test_engine__per_job_speculation_and_logprobs),
		cmocka_unit_test(test_engine__sampled_ngram_output_is_plain_samplings),
		cmocka_unit_test(test_engine__sampled_chains_on_a_device_leave_the_logits_there),
		cmocka_unit_test(test_engine__greedy_draft_model_on_a_device_downloads_nothing),
		cmocka_unit_test(test_engine__small_batch_lowers_each_jobs_k),
		cmocka_unit_test(test_engine__planner_lowers_k_per_job),
		cmocka_unit_test(test_engine__draft_model_batch_equals_one_by_one),
		cmocka_unit_test(test_engine__refuses_a_draft_with_another_vocabulary),
	};
	return cmocka_run_group_tests(tests, setup_models, teardown_models);
}
