/* The EAGLE drafter (drafters/eagle.c) on generated llama and qwen2 targets with
 * specd-gen-heads --eagle checkpoints: greedy output bit-identical to plain decoding for
 * both trees, many K, widths, depths, dtypes and layers, with deferred prefill or not;
 * every proposal a well-formed tree of the configured shape; catch-up on real hidden
 * rows exact (step by step = all rows at once, also after a gap and while held beside
 * ngram); dynamic trees that are the draft's most probable paths, as a reference built
 * from the layer's full logits finds them, ties included; sampling that keeps the
 * target's distribution (chi-square at alpha = 0.001); checkpoints and settings that do
 * not fit refused with a clear message; specd-run. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "drafters/drafter.h"
#include "drafters/eagle.h"
#include "drafters/engine.h"
#include "drafters/medusa.h"
#include "kernels/kern.h"
#include "model/eagle.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_support.h"

#define VOCAB 260
#define GEN 40
#define CTX 128
#define N_SEEDS 10000

static char g_dir[512], g_target[600], g_qwen[600];
static struct model *g_t, *g_q;
static const int32_t k_prompt[6] = {1, 70, 71, 72, 70, 71};

/* The checkpoints of the greedy suite: on the llama target unless `qwen`; echo ones
 * pass the target's state through (fx_gen_eagle), so their trees are cut inside. */
static const struct ckpt {
	const char *name;
	bool qwen, echo;
	const char *args[10];
} k_ckpts[] = {
	{"f32", false, true, {"--scale", "0.1", NULL}},
	{"f16-2", false, true, {"--dtype", "f16", "--layers", "2", "--scale", "0.1", "--seed", "2",
				NULL}},
	{"bf16-nobias", false, true, {"--dtype", "bf16", "--no-fc-bias", "--scale", "0.1", "--seed",
				      "3", NULL}},
	{"random", false, false, {"--seed", "4", NULL}},
	{"qwen", true, true, {"--scale", "0.1", NULL}},
	{"qwen-bf16-2", true, true, {"--dtype", "bf16", "--layers", "2", "--no-qkv-bias", "--scale",
				     "0.1", NULL}},
};
#define N_CKPT (sizeof(k_ckpts) / sizeof(k_ckpts[0]))
static char g_ckpt[N_CKPT][600];

static int setup(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	snprintf(g_qwen, sizeof(g_qwen), "%s/qwen.gguf", g_dir);
	/* ctx 1024: the long prompt's case loads it with more rows */
	fx_gen_model(g_target, (const char *[]){"--dim", "48", "--layers", "2", "--heads", "4",
						"--kv-heads", "2", "--ffn", "96", "--vocab", "260",
						"--ctx", "1024", "--seed", "11", NULL});
	fx_gen_model(g_qwen, (const char *[]){"--arch", "qwen2", "--dim", "64", "--layers", "2",
					      "--heads", "4", "--kv-heads", "2", "--ffn", "128",
					      "--vocab", "260", "--ctx", "128", "--seed", "12",
					      NULL});
	for (size_t c = 0; c < N_CKPT; c++) {
		const char *args[12] = {"-m", k_ckpts[c].qwen ? g_qwen : g_target};
		int n = 2;
		for (int i = 0; k_ckpts[c].args[i]; i++)
			args[n++] = k_ckpts[c].args[i];
		args[n] = NULL;
		snprintf(g_ckpt[c], sizeof(g_ckpt[c]), "%s/eagle-%s", g_dir, k_ckpts[c].name);
		fx_gen_eagle(g_ckpt[c], args, k_ckpts[c].echo);
	}
	g_t = fx_load(g_target, 1, CTX);
	g_q = fx_load(g_qwen, 1, CTX);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	model_destroy(g_t);
	model_destroy(g_q);
	ts_rmtree(g_dir);
	return 0;
}

static enum specd_status eagle(struct model *t, const struct draft_eagle_config *ec, uint32_t k,
			       uint32_t n_slots, struct drafter **out, struct specd_error *err)
{
	struct draft_config dc = {
		.method = DRAFT_METHOD_EAGLE, .k_max = k, .n_slots = n_slots,
		.n_ctx = kv_n_ctx(model_kv(t)), .target = t, .eagle = *ec,
	};
	return draft_create(&dc, out, err);
}

static struct drafter *eagle_ok(struct model *t, const struct draft_eagle_config *ec, uint32_t k,
				uint32_t n_slots)
{
	struct drafter *d = NULL;
	struct specd_error err;
	if (eagle(t, ec, k, n_slots, &d, &err) != SPECD_OK)
		fail_msg("%s: %s", ec->path, err.msg);
	return d;
}

/* An EAGLE drafter for t whose layer computes on backend k (the target's embedding
 * and LM head copied there from its file). */
static struct drafter *eagle_on(struct kern_ctx *k, struct model *t,
				const struct draft_eagle_config *ec, uint32_t k_max)
{
	struct draft_config dc = {
		.method = DRAFT_METHOD_EAGLE, .k_max = k_max, .n_slots = 1,
		.n_ctx = kv_n_ctx(model_kv(t)), .target = t, .eagle = *ec, .kern = k,
	};
	struct drafter *d = NULL;
	struct specd_error err;
	if (draft_create(&dc, &d, &err) != SPECD_OK)
		fail_msg("%s on %s: %s", ec->path, kern_name(k), err.msg);
	return d;
}

/* ---- the shape of every proposal ---- */

/* What a proposal of the drafter under test must look like. */
static struct tree_rules {
	uint32_t k, width, depth;
	bool fixed;                        /* a static tree: these parents */
	int32_t parent[DRAFT_MAX_TOKENS];
	uint64_t checked, singles;         /* proposals seen, of them of one node */
} g_rules;

static void rules_for(const struct draft_eagle_config *ec, uint32_t k)
{
	uint32_t depth[DRAFT_MAX_TOKENS], rank[DRAFT_MAX_TOKENS];
	g_rules = (struct tree_rules){
		.k = k, .width = ec->width ? ec->width : EAGLE_DEFAULT_WIDTH,
		.depth = ec->depth ? ec->depth : EAGLE_DEFAULT_DEPTH, .fixed = ec->static_tree,
	};
	if (ec->static_tree)
		assert_int_equal(draft_medusa_tree(k, g_rules.depth, g_rules.parent, depth, rank),
				 SPECD_OK);
}

/* Parents before children, siblings distinct, at most k nodes; a dynamic tree no
 * deeper than its depth with at most width children a node (a chain at width 1), a
 * static one the first nodes of its fixed shape. */
static void assert_well_formed(const struct draft_proposal *p, const struct tree_rules *r)
{
	uint32_t depth[DRAFT_MAX_TOKENS], kids[DRAFT_MAX_TOKENS + 1] = {0};

	assert_true(p->n <= r->k);
	if (p->n == 0)
		return;
	assert_true(p->tree);
	assert_true(p->q_onehot);
	for (uint32_t i = 0; i < p->n; i++) {
		int32_t up = p->parent[i];
		if (up < -1 || up >= (int32_t)i)
			fail_msg("node %u of %u has parent %d", i, p->n, (int)up);
		assert_true(p->tokens[i] >= 0 && p->tokens[i] < VOCAB);
		depth[i] = up < 0 ? 0 : depth[up] + 1;
		assert_true(depth[i] < r->depth);
		kids[up + 1]++;
		for (uint32_t j = 0; j < i; j++)
			if (p->parent[j] == up && p->tokens[j] == p->tokens[i])
				fail_msg("nodes %u and %u: siblings with token %d", j, i,
					 (int)p->tokens[i]);
		if (!r->fixed && r->width == 1)
			assert_int_equal(up, (int32_t)i - 1);
	}
	if (r->fixed)
		assert_memory_equal(p->parent, r->parent, p->n * sizeof(int32_t));
	for (uint32_t i = 0; !r->fixed && i <= p->n; i++)
		assert_true(kids[i] <= r->width);
	if (r->k == 1)
		assert_int_equal(p->n, 1);
}

/* The exact verifier, after checking the proposal against g_rules. */
static enum specd_status checking_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
					 const struct draft_proposal *prop, float *work,
					 struct draft_verdict *out)
{
	assert_well_formed(prop, &g_rules);
	g_rules.checked += prop->n > 0;
	g_rules.singles += prop->n == 1;
	return draft_verify(s, logits, n_vocab, prop, work, out);
}

/* ---- greedy exactness ---- */

static const struct draft_eagle_config k_shapes[] = {
	{.width = 1, .depth = 1}, {.width = 4, .depth = 5}, {.width = 10, .depth = 8},
	{.width = 3, .depth = 2}, {.width = 0, .depth = 0},
};
#define N_SHAPES (sizeof(k_shapes) / sizeof(k_shapes[0]))

/* One greedy job of GEN tokens from k_prompt with d, proposals checked against g_rules. */
static void greedy_run(struct model *t, struct drafter *d, uint32_t k, bool defer, int32_t *out,
		       struct draft_metrics *m)
{
	uint32_t n;
	struct fx_job job = {
		.target = t, .d = d, .k = k, .verify = checking_verify, .prompt = k_prompt,
		.n_prompt = 6,
		.params = {.sampling = {.temperature = 0.0f, .top_p = 1.0f}, .max_tokens = GEN,
			   .eos = -1, .defer_prefill = defer},
	};
	assert_int_equal(fx_run_job(&job, out, GEN, &n, m, NULL), SPECD_OK);
	assert_int_equal(n, GEN);
}

static void test_eagle__greedy_identical_to_plain(void **state)
{
	(void)state;
	static const uint32_t ks[] = {1, 3, 8, 20};
	int32_t plain[2][GEN], out[GEN];

	assert_int_equal(fx_plain_greedy(g_t, k_prompt, 6, GEN, plain[0]), GEN);
	assert_int_equal(fx_plain_greedy(g_q, k_prompt, 6, GEN, plain[1]), GEN);
	for (size_t c = 0; c < N_CKPT; c++) {
		struct model *t = k_ckpts[c].qwen ? g_q : g_t;
		uint64_t drafted = 0, accepted = 0;
		for (uint32_t run = 0; run < 2 * 4; run++) {
			bool fixed = run / 4, defer = (run + c) % 2;
			uint32_t k = ks[run % 4], s = (uint32_t)(c + run) % N_SHAPES;
			/* one level of a static tree holds EAGLE_MAX_WIDTH nodes */
			if (fixed && k_shapes[s].depth == 1 && k > EAGLE_MAX_WIDTH)
				s = (s + 1) % N_SHAPES;
			struct draft_eagle_config ec = k_shapes[s];
			ec.path = g_ckpt[c];
			ec.static_tree = fixed;
			struct drafter *d = eagle_ok(t, &ec, k, 1);
			struct draft_metrics m;
			assert_true(draft_memory_bytes(d) > 0);
			rules_for(&ec, k);
			greedy_run(t, d, k, defer, out, &m);
			if (memcmp(out, plain[k_ckpts[c].qwen], sizeof(out)) != 0)
				fail_msg("%s, %s tree %u x %u, K %u, defer %d: not plain decoding",
					 k_ckpts[c].name, fixed ? "static" : "dynamic", ec.width,
					 ec.depth, k, defer);
			assert_true(m.drafted > 0);
			assert_true(g_rules.checked > 0);
			if (k == 1)
				assert_int_equal(g_rules.singles, g_rules.checked);
			drafted += m.drafted;
			accepted += m.accepted;
			draft_destroy(d);
		}
		if (getenv("FX_VERBOSE"))
			fprintf(stderr, "  %s: drafted %llu accepted %llu\n", k_ckpts[c].name,
				(unsigned long long)drafted, (unsigned long long)accepted);
		/* a layer passing the state through is right now and then: paths accepted */
		if (k_ckpts[c].echo)
			assert_true(accepted > 0 && accepted < drafted);
	}
}

/* ---- catch-up on real hidden rows ---- */

/* A history (the prompt and plain decoding's output) and the target's hidden state at
 * every position but the last, from one forward. */
struct history {
	int32_t tokens[6 + GEN];
	uint32_t n;
	float rows[(6 + GEN) * 48];
};

static void history_init(struct history *h)
{
	memcpy(h->tokens, k_prompt, sizeof(k_prompt));
	assert_int_equal(fx_plain_greedy(g_t, k_prompt, 6, GEN, h->tokens + 6), GEN);
	h->n = 6 + GEN;
	assert_int_equal(model_hparams(g_t)->dim, 48);
	fx_forward_all(g_t, h->tokens, h->n - 1, h->rows, NULL);
}

/* The first n tokens of h on `slot`, with the rows of positions from .. n - 2. */
static struct draft_seq history_seq(const struct history *h, uint32_t slot, uint32_t n,
				    uint32_t from)
{
	return (struct draft_seq){.slot = slot, .tokens = h->tokens, .n_tokens = n,
				  .hidden = h->rows + (size_t)from * 48, .n_hidden = n - 1 - from};
}

struct prop_buf {
	int32_t tokens[DRAFT_MAX_TOKENS], parent[DRAFT_MAX_TOKENS];
	struct draft_proposal p;
};

static struct draft_proposal *prop_init(struct prop_buf *b)
{
	memset(b, 0, sizeof(*b));
	b->p = (struct draft_proposal){.tokens = b->tokens, .parent = b->parent};
	return &b->p;
}

static void assert_same_proposal(const struct draft_proposal *a, const struct draft_proposal *b,
				 const char *what, uint32_t n)
{
	if (a->n != b->n)
		fail_msg("%s at %u tokens: %u nodes, a fresh drafter %u", what, n, a->n, b->n);
	assert_memory_equal(a->tokens, b->tokens, a->n * sizeof(int32_t));
	assert_memory_equal(a->parent, b->parent, a->n * sizeof(int32_t));
}

/* A fresh drafter's proposal for the first n tokens with the rows from `from` on. */
static void fresh_propose(struct drafter *d, const struct history *h, uint32_t n, uint32_t from,
			  uint32_t k, struct draft_proposal *out)
{
	struct draft_seq seq = history_seq(h, 0, n, from);
	assert_int_equal(draft_reset(d, &seq, NULL), SPECD_OK);
	assert_int_equal(draft_propose(d, &seq, k, out, NULL), SPECD_OK);
}

/* Steps of the history as the engine shows them: the prompt's rows, then each step's
 * accepted path (advance tokens, as many rows). `step` drafts with the whole history
 * so far (slot 0), `gap` proposes only every third step (its other steps' rows are
 * never shown), `held` holds EAGLE beside ngram and proposes with EAGLE on odd steps
 * only, `dev` is `step` on the emulated device (the device code path: weights, cache,
 * features and the joined rows in device memory). At every step each proposal is the
 * fresh drafter's for the rows it was shown last (or all, when nothing was missed),
 * whatever k. */
static void test_eagle__catch_up_is_exact(void **state)
{
	(void)state;
	static struct history h;
	static const uint32_t adv[] = {1, 3, 2, 1, 5, 4, 1, 2, 6, 1, 3, 2, 1, 1, 4};
	history_init(&h);
	const struct draft_eagle_config shapes[] = {
		{.path = g_ckpt[0], .width = 4, .depth = 5},
		{.path = g_ckpt[1], .static_tree = true, .depth = 4},
		{.path = g_ckpt[3], .width = 10, .depth = 8},
	};
	const uint32_t k_max[] = {8, 12, 20};
	struct kern_ctx *emu = NULL;
	assert_int_equal(kern_emu_create(NULL, &emu), SPECD_OK);
	for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
		uint32_t K = k_max[c];
		struct drafter *step = eagle_ok(g_t, &shapes[c], K, 1);
		struct drafter *dev = eagle_on(emu, g_t, &shapes[c], K);
		struct drafter *gap = eagle_ok(g_t, &shapes[c], K, 1);
		struct drafter *fresh = eagle_ok(g_t, &shapes[c], K, 1), *held = NULL;
		struct draft_config dc = {
			.method = DRAFT_METHOD_NGRAM, .k_max = K, .n_slots = 1, .n_ctx = CTX,
			.target = g_t, .eagle = shapes[c], .also = 1u << DRAFT_METHOD_EAGLE,
		};
		assert_int_equal(draft_create(&dc, &held, NULL), SPECD_OK);
		assert_int_equal(draft_hidden_rows(held), DRAFT_HIDDEN_ROWS);
		struct prop_buf b[4];
		uint32_t n = 6;
		struct draft_seq seq = history_seq(&h, 0, n, 0);
		assert_int_equal(draft_reset(step, &seq, NULL), SPECD_OK);
		assert_int_equal(draft_reset(dev, &seq, NULL), SPECD_OK);
		assert_int_equal(draft_reset(gap, &seq, NULL), SPECD_OK);
		assert_int_equal(draft_reset(held, &seq, NULL), SPECD_OK);
		for (uint32_t s = 0; n < h.n; s++) {
			uint32_t k = 1 + (s * 5 + (uint32_t)c) % K, from = n - 1 - seq.n_hidden;
			rules_for(&shapes[c], K);
			g_rules.k = k;
			assert_int_equal(draft_propose(step, &seq, k, prop_init(&b[0]), NULL),
					 SPECD_OK);
			fresh_propose(fresh, &h, n, 0, k, prop_init(&b[1]));
			assert_well_formed(&b[0].p, &g_rules);
			assert_same_proposal(&b[0].p, &b[1].p, "step by step", n);
			assert_int_equal(draft_propose(dev, &seq, k, prop_init(&b[1]), NULL),
					 SPECD_OK);
			assert_same_proposal(&b[1].p, &b[0].p, "on the emulated device", n);
			/* all k nodes while the tree has them */
			uint32_t w = shapes[c].width, all = w + (shapes[c].depth - 1) * w * w;
			assert_int_equal(b[0].p.n, shapes[c].static_tree || k < all ? k : all);
			/* held: EAGLE on odd steps, ngram (whose rows EAGLE still takes) else */
			enum draft_method m = s % 2 ? DRAFT_METHOD_EAGLE : DRAFT_METHOD_NGRAM;
			assert_int_equal(draft_select(held, m, NULL), SPECD_OK);
			assert_int_equal(draft_propose(held, &seq, k, prop_init(&b[2]), NULL),
					 SPECD_OK);
			if (m == DRAFT_METHOD_EAGLE)
				assert_same_proposal(&b[2].p, &b[0].p, "held beside ngram", n);
			/* gap: shown every third step's rows only, it starts over from them */
			if (s % 3 == 0) {
				struct draft_proposal *g = prop_init(&b[3]);
				assert_int_equal(draft_propose(gap, &seq, k, g, NULL), SPECD_OK);
				fresh_propose(fresh, &h, n, from, k, prop_init(&b[1]));
				assert_same_proposal(&b[3].p, &b[1].p, "after a gap", n);
				assert_true(b[3].p.n > 0);
			}
			/* the verdict: the next adv tokens of the history, their rows shown */
			uint32_t a = adv[s % (sizeof(adv) / sizeof(adv[0]))];
			a = n + a > h.n ? h.n - n : a;
			seq = history_seq(&h, 0, n + a, n - 1);
			int32_t next = h.tokens[n + a - 1];
			assert_int_equal(draft_commit(step, &seq, a - 1, next, NULL), SPECD_OK);
			assert_int_equal(draft_commit(dev, &seq, a - 1, next, NULL), SPECD_OK);
			assert_int_equal(draft_commit(gap, &seq, 0, next, NULL), SPECD_OK);
			assert_int_equal(draft_commit(held, &seq, a - 1, next, NULL), SPECD_OK);
			n += a;
		}
		draft_destroy(step);
		draft_destroy(dev);
		draft_destroy(gap);
		draft_destroy(fresh);
		draft_destroy(held);
	}
	kern_destroy(emu);
}

/* ---- the dynamic tree's scores ---- */

/* EAGLE-2 ranks a dynamic tree's nodes by their path's log-probability under the
 * draft: a child scores its parent's score plus log-softmax of the parent's logits at
 * its token. Output stays exact whatever the scores (verification fixes any draft), so
 * the suites above cannot see a row normalised by another row's log-normaliser, or
 * ties broken the other way. Here a reference tree is built from the layer's full
 * logits rows in double, by the documented rule, and every proposal of a grid must be
 * it. The layer is loaded a second time for this, and each node's logits come from
 * its path run as one causal batch, not from the drafter's tree batch. */

#define REF_DIM 48
#define REF_K_MAX 32
#define REF_MAX_NODES 80 /* the grid's largest pool (width 4, depth 5): 4 + 4 x 4 x 4 */
/* A node's logits hang on its path only, so one history's are run once for every
 * shape, K and rule built on it: some 20 distinct paths (the widest tree's 4 x 4, and
 * what the wrong rules pick besides). */
#define REF_MAX_PATHS 64
/* A case with a decision closer than this (logits or scores) hangs on rounding (the
 * drafter scores in float, its tree batch may sum in another order): not a test of
 * the rule, so it is passed over. */
#define REF_EPS 1e-4

/* How the reference scores and ranks: the documented rule, and the slips a test of it
 * must tell apart (each checked to change some tree of the grid). */
enum ref_rule {
	REF_DOCUMENTED,
	REF_LOGITS,      /* no normaliser: a child's score adds its raw logit */
	REF_FIRST_ROW,   /* every node of a level normalised by the level's first row */
	REF_LATER_PICKS, /* equal scores at a level's cut go to the later node */
	REF_LATER_KEEPS, /* the same at the final cut */
	REF_N_RULES
};

/* An expanded path from the root and what the layer gives at its end. */
struct ref_path {
	uint32_t depth, token[EAGLE_MAX_DEPTH];
	float logits[VOCAB], feat[REF_DIM];
};

/* The layer of a checkpoint, run by hand on slot 0. */
struct ref_layer {
	struct model *m;
	uint32_t n_done;                    /* history entries in its cache */
	float root_logits[VOCAB];           /* at the last history token */
	float root_feat[REF_DIM];           /* the state it predicts there */
	float feat[REF_MAX_NODES][REF_DIM]; /* each expanded node's predicted state */
	uint32_t n_paths;                   /* paths run on this history */
	struct ref_path paths[REF_MAX_PATHS];
};

/* A reference tree: every node grown, in the drafter's pool order (a level's parents
 * in pool order, each one's children best first), and which of them are kept. */
struct ref_tree {
	uint32_t n;
	int32_t token[REF_MAX_NODES], parent[REF_MAX_NODES];
	uint32_t depth[REF_MAX_NODES];
	double score[REF_MAX_NODES];
	bool kept[REF_MAX_NODES];
	uint32_t cut_ties;  /* level or final cuts falling between two equal scores */
	double min_gap;     /* the closest other decision */
};

static struct ref_layer *ref_layer_load(struct model *t, const char *path)
{
	struct ref_layer *r = calloc(1, sizeof(*r));
	struct model_config mc = {.n_slots = 1, .n_ctx = CTX + 32, .max_batch = 64};
	struct specd_error err;

	assert_non_null(r);
	assert_int_equal(model_hparams(t)->dim, REF_DIM);
	if (model_load_eagle(path, t, &mc, &r->m, &err) != SPECD_OK)
		fail_msg("%s: %s", path, err.msg);
	return r;
}

static void ref_layer_free(struct ref_layer *r)
{
	model_destroy(r->m);
	free(r);
}

/* The cache the drafter builds for the first n tokens of h with all their rows: entry
 * p - 1 is token p after the target's state at p - 1 (p = 1 .. n - 1); the last one's
 * output is the root. */
static void ref_history(struct ref_layer *r, const struct history *h, uint32_t n)
{
	uint32_t tok[6 + GEN], slot[6 + GEN] = {0}, pos[6 + GEN], last = n - 2;
	struct specd_error err;

	for (uint32_t p = 1; p < n; p++) {
		tok[p - 1] = (uint32_t)h->tokens[p];
		pos[p - 1] = p - 1;
	}
	struct model_batch b = {
		.n_tokens = n - 1, .tokens = tok, .slots = slot, .pos = pos,
		.features = h->rows, .n_out = 1, .out_idx = &last, .logits = r->root_logits,
		.hidden = r->root_feat,
	};
	assert_int_equal(kv_truncate(model_kv(r->m), 0, 0), SPECD_OK);
	if (model_forward(r->m, &b, &err) != SPECD_OK)
		fail_msg("history of %u: %s", n, err.msg);
	r->n_done = n - 1;
	r->n_paths = 0;
}

/* The logits at node i of t, its predicted state into r->feat[i]: its path from the
 * root as one causal batch after the history, each entry with the state its
 * predecessor predicted (the root's for the first); run on the first call for that
 * path since the history, kept in r->paths for the next. */
static const float *ref_node_logits(struct ref_layer *r, const struct ref_tree *t, uint32_t i)
{
	uint32_t path[EAGLE_MAX_DEPTH], tok[EAGLE_MAX_DEPTH], pos[EAGLE_MAX_DEPTH];
	uint32_t slot[EAGLE_MAX_DEPTH] = {0}, d = t->depth[i];
	float feat[EAGLE_MAX_DEPTH * REF_DIM];
	struct ref_path *p = r->paths;
	struct specd_error err;

	for (int32_t j = (int32_t)i; j >= 0; j = t->parent[j])
		path[t->depth[j]] = (uint32_t)j;
	for (uint32_t j = 0; j <= d; j++)
		tok[j] = (uint32_t)t->token[path[j]];
	while (p < r->paths + r->n_paths &&
	       (p->depth != d || memcmp(p->token, tok, (d + 1) * sizeof(*tok))))
		p++;
	if (p == r->paths + r->n_paths) {
		assert_true(r->n_paths++ < REF_MAX_PATHS);
		p->depth = d;
		memcpy(p->token, tok, (d + 1) * sizeof(*tok));
		for (uint32_t j = 0; j <= d; j++) {
			pos[j] = r->n_done + j;
			memcpy(feat + (size_t)j * REF_DIM, j ? r->feat[path[j - 1]] : r->root_feat,
			       sizeof(r->root_feat));
		}
		struct model_batch b = {
			.n_tokens = d + 1, .tokens = tok, .slots = slot, .pos = pos,
			.features = feat, .n_out = 1, .out_idx = &d, .logits = p->logits,
			.hidden = p->feat,
		};
		assert_int_equal(kv_truncate(model_kv(r->m), 0, r->n_done), SPECD_OK);
		if (model_forward(r->m, &b, &err) != SPECD_OK)
			fail_msg("node %u: %s", i, err.msg);
	}
	memcpy(r->feat[i], p->feat, sizeof(p->feat));
	return p->logits;
}

/* log(sum(exp(row))), in double. */
static double ref_lse(const float *row)
{
	double max = row[0], sum = 0.0;

	for (uint32_t v = 1; v < VOCAB; v++)
		max = row[v] > max ? row[v] : max;
	for (uint32_t v = 0; v < VOCAB; v++)
		sum += exp(row[v] - max);
	return max + log(sum);
}

/* Notes a decision between a value taken (hi) and the best passed over (lo): equal at
 * a `cut` (a level's or the final one) is a tie the rule breaks; any other decision
 * only counts by how close it was. */
static void ref_decided(struct ref_tree *t, double hi, double lo, bool cut)
{
	if (hi == lo)
		t->cut_ties += cut;
	else if (hi - lo < t->min_gap)
		t->min_gap = hi - lo;
}

/* Grows the n_cand best tokens of a logits row (the lower id first among equals, as
 * kern topk) as children of `parent`, each scoring the parent's score plus its logit
 * minus z. */
static void ref_grow(struct ref_tree *t, const float *row, int32_t parent, uint32_t n_cand,
		     double z)
{
	double base = parent < 0 ? 0.0 : t->score[parent];
	uint32_t d = parent < 0 ? 0 : t->depth[parent] + 1;
	bool taken[VOCAB] = {false};
	int32_t prev = -1;

	for (uint32_t r = 0; r <= n_cand; r++) {
		int32_t best = -1;
		for (int32_t v = 0; v < VOCAB; v++)
			if (!taken[v] && (best < 0 || row[v] > row[best]))
				best = v;
		if (r == n_cand) {
			/* equal logits go to the lower id in both: not a tie of the rule */
			if (row[prev] != row[best])
				ref_decided(t, row[prev], row[best], false);
			break;
		}
		assert_true(t->n < REF_MAX_NODES);
		taken[best] = true;
		prev = best;
		t->token[t->n] = best;
		t->parent[t->n] = parent;
		t->depth[t->n] = d;
		t->score[t->n++] = base + row[best] - z;
	}
}

/* Whether node a ranks before node b: the higher score, then the earlier node (the
 * later with `later`). */
static bool ref_before(const struct ref_tree *t, uint32_t a, uint32_t b, bool later)
{
	if (t->score[a] != t->score[b])
		return t->score[a] > t->score[b];
	return later ? a > b : a < b;
}

/* Ranks idx[0 .. n) best first and returns how many are taken, min(keep, n), noting
 * the decision at the cut. */
static uint32_t ref_rank(struct ref_tree *t, uint32_t *idx, uint32_t n, uint32_t keep,
			 bool later)
{
	for (uint32_t a = 1; a < n; a++)
		for (uint32_t b = a; b > 0 && ref_before(t, idx[b], idx[b - 1], later); b--) {
			uint32_t x = idx[b];
			idx[b] = idx[b - 1];
			idx[b - 1] = x;
		}
	if (keep >= n)
		return n;
	ref_decided(t, t->score[idx[keep - 1]], t->score[idx[keep]], true);
	return keep;
}

/* The tree the drafter should propose at K = k with the history in r's cache: the
 * root's min(width, k) best tokens; then, for min(depth, k) - 1 levels, the width best
 * nodes of the last level each grown by its own min(width, k) best; the k best nodes
 * of all kept. */
static void ref_tree_build(struct ref_layer *r, uint32_t width, uint32_t depth, uint32_t k,
			   enum ref_rule rule, struct ref_tree *t)
{
	uint32_t n_cand = width < k ? width : k, levels = depth < k ? depth : k;
	uint32_t idx[REF_MAX_NODES];

	memset(t, 0, sizeof(*t));
	t->min_gap = INFINITY;
	ref_grow(t, r->root_logits, -1, n_cand, rule == REF_LOGITS ? 0.0 : ref_lse(r->root_logits));
	for (uint32_t d = 0; d + 1 < levels; d++) {
		uint32_t n = 0;
		for (uint32_t i = 0; i < t->n; i++)
			if (t->depth[i] == d)
				idx[n++] = i;
		n = ref_rank(t, idx, n, width, rule == REF_LATER_PICKS);
		if (n == 0)
			break;
		/* grown in pool order, as the drafter appends them */
		bool pick[REF_MAX_NODES] = {false};
		for (uint32_t j = 0; j < n; j++)
			pick[idx[j]] = true;
		uint32_t n_pool = t->n;
		double z0 = NAN;
		for (uint32_t i = 0; i < n_pool; i++) {
			if (!pick[i])
				continue;
			const float *logits = ref_node_logits(r, t, i);
			double z = ref_lse(logits);
			z0 = isnan(z0) ? z : z0;
			ref_grow(t, logits, (int32_t)i, n_cand,
				 rule == REF_LOGITS ? 0.0 : rule == REF_FIRST_ROW ? z0 : z);
		}
	}
	for (uint32_t i = 0; i < t->n; i++)
		idx[i] = i;
	uint32_t n = ref_rank(t, idx, t->n, k, rule == REF_LATER_KEEPS);
	for (uint32_t j = 0; j < n; j++)
		t->kept[idx[j]] = true;
}

/* The kept nodes of t as a proposal, in pool order (one whose parent is not kept, which
 * only a wrong rule makes, left out as the drafter would). */
static void ref_proposal(const struct ref_tree *t, struct prop_buf *b)
{
	struct draft_proposal *p = prop_init(b);
	int32_t out_of[REF_MAX_NODES];

	for (uint32_t i = 0; i < t->n; i++) {
		int32_t up = t->parent[i];
		out_of[i] = -1;
		if (!t->kept[i] || (up >= 0 && out_of[up] < 0))
			continue;
		out_of[i] = (int32_t)p->n;
		p->tokens[p->n] = t->token[i];
		p->parent[p->n++] = up < 0 ? -1 : out_of[up];
	}
	p->tree = true;
	p->q_onehot = true;
}

/* Whether a and b hold the same paths from the root, in whatever order (a's parents
 * before their children, siblings distinct in b). */
static bool same_tree(const struct draft_proposal *a, const struct draft_proposal *b)
{
	int32_t in_b[DRAFT_MAX_TOKENS] = {0};

	if (a->n != b->n)
		return false;
	for (uint32_t i = 0; i < a->n; i++) {
		int32_t up = a->parent[i] < 0 ? -1 : in_b[a->parent[i]];
		in_b[i] = -1;
		for (uint32_t j = 0; j < b->n && in_b[i] < 0; j++)
			if (b->tokens[j] == a->tokens[i] && b->parent[j] == up)
				in_b[i] = (int32_t)j;
		if (in_b[i] < 0)
			return false;
	}
	return true;
}

/* " token<parent" per node, for a failure message. */
static const char *tree_str(const struct draft_proposal *p, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (uint32_t i = 0; i < p->n && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, " %d<%d", (int)p->tokens[i],
				      (int)p->parent[i]);
	return buf;
}

/* Cases of the grid checked, those passed over as too close to call, and of the
 * checked ones those whose tree a wrong rule changes and those whose reference cuts
 * between equal scores. */
struct ref_stats {
	uint32_t cases, close, changed[REF_N_RULES], cut_ties;
};

static const struct draft_eagle_config k_dyn_shapes[] = {
	{.width = 2, .depth = 3}, {.width = 3, .depth = 4}, {.width = 4, .depth = 5},
	{.width = 5, .depth = 3},
};
#define N_DYN_SHAPES (sizeof(k_dyn_shapes) / sizeof(k_dyn_shapes[0]))
/* K below most widths and depths (the tree cut by K), then up to the whole tree (a
 * twin expanded at a level shows only if its children are kept). Each case is a
 * drafter run, most of this suite's time under the sanitizers: these K and three
 * histories (short to longest) are enough for each slip of the rules to change
 * several trees, the rarest (another row's normaliser, a level's tie) 5 to 10. */
static const uint32_t k_dyn_ks[] = {3, 12, 24, 32};
static const uint32_t k_dyn_lens[] = {12, 27, 46};

/* One case: the drafter's proposal at K = k for the first n tokens of h, all their
 * rows shown, is the reference tree of r (whose cache holds that history). */
static void check_tree(struct drafter *d, struct ref_layer *r, const struct history *h,
		       const struct draft_eagle_config *ec, uint32_t n, uint32_t k,
		       struct ref_stats *st)
{
	struct prop_buf got, want, other;
	struct ref_tree tree;
	char s_got[1024], s_want[1024];

	g_rules.k = k;
	fresh_propose(d, h, n, 0, k, prop_init(&got));
	assert_well_formed(&got.p, &g_rules);
	ref_tree_build(r, ec->width, ec->depth, k, REF_DOCUMENTED, &tree);
	if (tree.min_gap < REF_EPS) {
		st->close++;
		return;
	}
	ref_proposal(&tree, &want);
	if (!same_tree(&got.p, &want.p))
		fail_msg("%s, tree %u x %u, K %u, %u tokens: proposed%s; the draft's path "
			 "log-probabilities give%s", ec->path, ec->width, ec->depth, k, n,
			 tree_str(&got.p, s_got, sizeof(s_got)),
			 tree_str(&want.p, s_want, sizeof(s_want)));
	st->cases++;
	st->cut_ties += tree.cut_ties > 0;
	for (int rule = REF_DOCUMENTED + 1; rule < REF_N_RULES; rule++) {
		ref_tree_build(r, ec->width, ec->depth, k, rule, &tree);
		ref_proposal(&tree, &other);
		st->changed[rule] += !same_tree(&other.p, &want.p);
	}
}

/* Every history length x shape x K of the grid on checkpoint `path` for target t (the
 * shapes inside, so that each history's paths are run once for all). */
static void check_dynamic_trees(struct model *t, const char *path, const struct history *h,
				struct ref_stats *st)
{
	struct ref_layer *r = ref_layer_load(t, path);
	struct draft_eagle_config ec[N_DYN_SHAPES];
	struct drafter *d[N_DYN_SHAPES];

	for (size_t s = 0; s < N_DYN_SHAPES; s++) {
		ec[s] = k_dyn_shapes[s];
		ec[s].path = path;
		d[s] = eagle_ok(t, &ec[s], REF_K_MAX, 1);
	}
	for (size_t l = 0; l < sizeof(k_dyn_lens) / sizeof(k_dyn_lens[0]); l++) {
		ref_history(r, h, k_dyn_lens[l]);
		for (size_t s = 0; s < N_DYN_SHAPES; s++) {
			rules_for(&ec[s], REF_K_MAX);
			for (size_t j = 0; j < sizeof(k_dyn_ks) / sizeof(k_dyn_ks[0]); j++)
				check_tree(d[s], r, h, &ec[s], k_dyn_lens[l], k_dyn_ks[j], st);
		}
	}
	for (size_t s = 0; s < N_DYN_SHAPES; s++)
		draft_destroy(d[s]);
	ref_layer_free(r);
}

/* Over two checkpoints (one passing the target's state on, one random) and the grid,
 * each proposal is the tree of the draft's path log-probabilities: each node's logits
 * normalised by its own row, the width best of each level expanded, the k best kept.
 * The grid is one where dropping the normaliser, or taking a level's first row's for
 * all, changes trees. */
static void test_eagle__dynamic_tree_ranks_paths_by_draft_log_probability(void **state)
{
	(void)state;
	static struct history h;
	struct ref_stats st = {0};

	history_init(&h);
	check_dynamic_trees(g_t, g_ckpt[0], &h, &st);
	check_dynamic_trees(g_t, g_ckpt[3], &h, &st);
	if (getenv("FX_VERBOSE"))
		fprintf(stderr, "  %u cases (%u too close); changed by raw logits %u, by the "
			"first row's normaliser %u\n", st.cases, st.close, st.changed[REF_LOGITS],
			st.changed[REF_FIRST_ROW]);
	assert_true(st.close * 8 < st.cases);
	assert_true(st.changed[REF_LOGITS] > 0);
	assert_true(st.changed[REF_FIRST_ROW] > 0);
}

/* A copy of the llama target whose LM head gives token 2j + 1 the row of token 2j:
 * every logits row ties each such pair, so twin siblings score equal. */
static void write_twins_target(const char *out)
{
	size_t n;
	char *buf = ts_read_file(g_target, &n);
	struct gguf_file *f;

	assert_non_null(buf);
	assert_int_equal(gguf_open_memory(buf, n, &f, NULL), SPECD_OK);
	const struct gguf_tensor *w = gguf_find_tensor(f, "output.weight");
	assert_non_null(w);
	assert_int_equal(w->type, KERN_F32);
	size_t row = w->ne[0] * sizeof(float);
	/* the reader's view is read-only; the buffer under it is ours to edit */
	char *data = buf + ((const char *)w->data - buf);
	for (uint64_t v = 0; v + 1 < w->ne[1]; v += 2)
		memcpy(data + (v + 1) * row, data + v * row, row);
	gguf_close(f);
	FILE *o = fopen(out, "wb");
	assert_non_null(o);
	assert_int_equal(fwrite(buf, 1, n, o), n);
	assert_int_equal(fclose(o), 0);
	free(buf);
}

/* With twin tokens (equal logits in every row, distinct embeddings, so distinct
 * subtrees) the level and final cuts fall between equal scores: the earlier node wins,
 * as documented, and the grid is one where the later winning changes trees. */
static void test_eagle__dynamic_tree_breaks_ties_to_the_earlier_node(void **state)
{
	(void)state;
	static struct history h;
	struct ref_stats st = {0};
	char path[700];

	snprintf(path, sizeof(path), "%s/twins.gguf", g_dir);
	write_twins_target(path);
	struct model *t = fx_load(path, 1, CTX);
	history_init(&h);
	/* the rows this target computes for the same tokens */
	fx_forward_all(t, h.tokens, h.n - 1, h.rows, NULL);
	check_dynamic_trees(t, g_ckpt[0], &h, &st);
	if (getenv("FX_VERBOSE"))
		fprintf(stderr, "  %u cases (%u too close), %u with a cut between equal scores; "
			"changed by ties to the later node at a level %u, at the end %u\n",
			st.cases, st.close, st.cut_ties, st.changed[REF_LATER_PICKS],
			st.changed[REF_LATER_KEEPS]);
	assert_true(st.close * 8 < st.cases);
	assert_true(st.cut_ties > 0);
	assert_true(st.changed[REF_LATER_PICKS] > 0);
	assert_true(st.changed[REF_LATER_KEEPS] > 0);
	model_destroy(t);
}

/* The online selector's switch, every step: EAGLE, then ngram, ... */
static void switch_every_step(struct drafter *d, uint32_t step, void *user)
{
	(void)user;
	enum draft_method m = step % 2 ? DRAFT_METHOD_NGRAM : DRAFT_METHOD_EAGLE;
	assert_int_equal(draft_select(d, m, NULL), SPECD_OK);
}

/* A prompt longer than DRAFT_HIDDEN_ROWS: the drafter gets its last rows only and
 * builds on those; held beside ngram and switched every step, EAGLE takes in the rows
 * ngram's steps bring. Output is plain decoding's either way, prefill deferred or not. */
static void test_eagle__long_prompts_and_switching_keep_plain_output(void **state)
{
	(void)state;
	enum { LONG = 540 }; /* more rows than DRAFT_HIDDEN_ROWS */
	static int32_t prompt[LONG], plain[GEN], out[GEN];
	struct model *t = fx_load(g_target, 1, LONG + GEN + 8);
	for (uint32_t i = 0; i < LONG; i++)
		prompt[i] = i == 0 ? 1 : (int32_t)(5 + (i * 37 + i / 7) % 250);
	assert_int_equal(fx_plain_greedy(t, prompt, LONG, GEN, plain), GEN);
	for (int v = 0; v < 4; v++) {
		bool held = v >= 2, defer = v % 2;
		struct draft_eagle_config ec = {.path = g_ckpt[0], .width = 4, .depth = 4};
		struct draft_config dc = {
			.method = held ? DRAFT_METHOD_NGRAM : DRAFT_METHOD_EAGLE, .k_max = 8,
			.n_slots = 1, .n_ctx = kv_n_ctx(model_kv(t)), .target = t, .eagle = ec,
			.prompt_lookup_min = 1, .also = held ? 1u << DRAFT_METHOD_EAGLE : 0,
		};
		struct drafter *d;
		struct specd_error err;
		if (draft_create(&dc, &d, &err) != SPECD_OK)
			fail_msg("%s", err.msg);
		struct fx_job job = {
			.target = t, .d = d, .k = 8, .prompt = prompt, .n_prompt = LONG,
			.params = {.sampling = {.temperature = 0.0f, .top_p = 1.0f},
				   .max_tokens = GEN, .eos = -1, .defer_prefill = defer},
			.before_step = held ? switch_every_step : NULL,
		};
		struct draft_metrics m;
		uint32_t n;
		assert_int_equal(fx_run_job(&job, out, GEN, &n, &m, NULL), SPECD_OK);
		assert_int_equal(n, GEN);
		if (memcmp(out, plain, sizeof(out)) != 0)
			fail_msg("held %d, defer %d: not plain decoding's", held, defer);
		assert_true(m.drafted > 0);
		draft_destroy(d);
	}
	model_destroy(t);
}

/* ---- sampling ---- */

static void test_eagle__sampling_keeps_the_distribution(void **state)
{
	(void)state;
	char small[700], ckpt[700];
	snprintf(small, sizeof(small), "%s/small.gguf", g_dir);
	snprintf(ckpt, sizeof(ckpt), "%s/eagle-small", g_dir);
	fx_gen_model(small, (const char *[]){"--dim", "32", "--layers", "2", "--heads", "2",
					     "--kv-heads", "1", "--ffn", "64", "--vocab", "260",
					     "--ctx", "16", "--seed", "21", NULL});
	fx_gen_eagle(ckpt, (const char *[]){"-m", small, "--scale", "0.1", NULL}, true);
	struct model *t = fx_load(small, 1, 16);
	const struct sampler_params sp = {.temperature = 0.7f, .top_k = 0, .top_p = 1.0f};
	int32_t prompt[4] = {1, 80, 81, 80};
	static double joint[VOCAB * VOCAB];
	static uint32_t count[VOCAB * VOCAB];
	fx_exact_joint(t, prompt, 4, &sp, joint);

	struct draft_eagle_config ec = {.path = ckpt, .width = 3, .depth = 3};
	struct drafter *d = eagle_ok(t, &ec, 6, 1);
	uint64_t drafted, accepted;
	/* K + 1 tokens, so that the first step may draft the whole tree */
	fx_count_first_two(t, d, 6, prompt, 4, &sp, 7, N_SEEDS, count, &drafted, &accepted);
	fx_assert_exact_law("eagle sampling", joint, count, VOCAB * VOCAB, N_SEEDS, drafted,
			    accepted);
	draft_destroy(d);
	model_destroy(t);
}

/* Drafts that are not samples are verified by a walk that draws one token a level
 * from the target (verify.h): each emitted token is the draw plain sampling makes at
 * its position with the same uniform, so a sampled job with EAGLE's trees, dynamic or
 * static, gives plain sampling's tokens for the same seed (plain sampling written
 * without the engine, fx_plain_decode), while accepting drafts. */
static void test_eagle__sampled_output_is_plain_samplings(void **state)
{
	(void)state;
	static const struct sampler_params sp[] = {
		{.temperature = 0.8f, .top_p = 0.95f},
		{.temperature = 1.0f, .top_k = 20, .top_p = 1.0f},
	};
	struct draft_eagle_config shapes[] = {{.path = g_ckpt[0], .width = 4, .depth = 5},
					      {.path = g_ckpt[0], .static_tree = true, .depth = 4}};
	uint64_t accepted = 0;
	for (size_t sh = 0; sh < 2; sh++) {
		struct drafter *d = eagle_ok(g_t, &shapes[sh], 8, 1);
		accepted += fx_expect_plain_sampling(g_t, d, 8, k_prompt, 6, sp, 2, 6, GEN);
		draft_destroy(d);
	}
	assert_true(accepted > 0);
}

/* ---- refusals ---- */

static void expect_refusal(const struct draft_eagle_config *ec, uint32_t k,
			   enum specd_status want, const char *needle)
{
	struct drafter *d = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = eagle(g_t, ec, k, 1, &d, &err);
	assert_null(d);
	if (st != want || !strstr(err.msg, needle))
		fail_msg("%s: %s '%s'; wanted %s saying '%s'", ec->path ? ec->path : "(null)",
			 specd_status_str(st), err.msg, specd_status_str(want), needle);
}

/* A folder `name` under g_dir holding g_ckpt[0]'s config.json with `key` removed (NULL:
 * none) and `set` (a JSON object, may be NULL) merged in, or `text` as config.json when
 * not NULL; path gets the folder. */
static void bad_config(const char *name, const char *key, const char *set, const char *text,
		       char *path, size_t size)
{
	char file[800], src[700];
	snprintf(path, size, "%s/%s", g_dir, name);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(file, sizeof(file), "%s/config.json", path);
	if (text) {
		FILE *f = fopen(file, "w");
		assert_non_null(f);
		fputs(text, f);
		assert_int_equal(fclose(f), 0);
		return;
	}
	snprintf(src, sizeof(src), "%s/config.json", g_ckpt[0]);
	json_t *c = json_load_file(src, 0, NULL);
	assert_non_null(c);
	if (key)
		assert_int_equal(json_object_del(c, key), 0);
	if (set) {
		json_t *s = json_loads(set, 0, NULL);
		assert_non_null(s);
		assert_int_equal(json_object_update(c, s), 0);
		json_decref(s);
	}
	assert_int_equal(json_dump_file(c, file, 0), 0);
	json_decref(c);
}

static void test_eagle__refuses_checkpoints_that_do_not_fit(void **state)
{
	(void)state;
	static const struct {
		const char *bad;
		enum specd_status st;
		const char *says[2];
	} faults[] = {
		{"hidden", SPECD_INVAL, {"hidden size 56", "the target has 48"}},
		{"vocab", SPECD_INVAL, {"261 tokens", "the target has 48 and 260"}},
		{"missing-mlp", SPECD_INVAL, {"layers.0.mlp.down_proj.weight", "missing"}},
		{"fc-shape", SPECD_INVAL, {"fc.weight is 48 x 48", "48 x 96"}},
		{"dtype", SPECD_UNSUPPORTED, {"fc.weight", "I8"}},
	};
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		char dir[700];
		snprintf(dir, sizeof(dir), "%s/bad-%s", g_dir, faults[i].bad);
		fx_gen_eagle(dir, (const char *[]){"-m", g_target, "--bad", faults[i].bad, NULL},
			     false);
		struct draft_eagle_config ec = {.path = dir};
		for (int s = 0; s < 2; s++)
			expect_refusal(&ec, 4, faults[i].st, faults[i].says[s]);
	}
	char dir[700], file[800];
	struct draft_eagle_config ec = {.path = dir};
	snprintf(dir, sizeof(dir), "%s/none", g_dir);
	expect_refusal(&ec, 4, SPECD_IO, "none is not a checkpoint folder");
	/* published checkpoints ship pytorch_model.bin: say how to convert them */
	bad_config("torch", NULL, NULL, NULL, dir, sizeof(dir));
	assert_true(ts_write_file(dir, "pytorch_model.bin", "", file, sizeof(file)));
	expect_refusal(&ec, 4, SPECD_IO, "convert it with tools/convert-eagle");
	/* config.json */
	bad_config("not-json", NULL, NULL, "{\"hidden_size\": 48,", dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_INVAL, "not JSON");
	static const char *const required[] = {"hidden_size", "intermediate_size",
					       "num_attention_heads", "num_hidden_layers",
					       "vocab_size"};
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		char name[64], says[96];
		snprintf(name, sizeof(name), "no-%s", required[i]);
		snprintf(says, sizeof(says), "key '%s' is missing", required[i]);
		bad_config(name, required[i], NULL, NULL, dir, sizeof(dir));
		expect_refusal(&ec, 4, SPECD_INVAL, says);
	}
	bad_config("no-arch", "model_type", "{\"architectures\": []}", NULL, dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_INVAL, "'model_type' (or 'architectures') is missing");
	bad_config("mistral", NULL, "{\"model_type\": \"mistral\"}", NULL, dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_UNSUPPORTED, "model_type 'mistral'");
	bad_config("rope", NULL, "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
		   NULL, dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_UNSUPPORTED, "rope_scaling");
	bad_config("layers", NULL, "{\"num_hidden_layers\": 9}", NULL, dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_INVAL, "9 layers, at most 8");
	bad_config("negative", NULL, "{\"intermediate_size\": -96}", NULL, dir, sizeof(dir));
	expect_refusal(&ec, 4, SPECD_INVAL, "'intermediate_size' is not a positive integer");
	/* the tree */
	struct draft_eagle_config tree = {.path = g_ckpt[0], .width = EAGLE_MAX_WIDTH + 1};
	expect_refusal(&tree, 4, SPECD_INVAL, "11 wide");
	tree = (struct draft_eagle_config){.path = g_ckpt[0], .depth = EAGLE_MAX_DEPTH + 1};
	expect_refusal(&tree, 4, SPECD_INVAL, "17 deep");
	tree = (struct draft_eagle_config){.path = g_ckpt[0], .static_tree = true, .depth = 1};
	expect_refusal(&tree, 20, SPECD_INVAL, "no static tree of 20 nodes");
	expect_refusal(&(struct draft_eagle_config){0}, 4, SPECD_INVAL, "no checkpoint folder");
	/* a checkpoint for the llama target does not fit the qwen one (hidden 64) */
	struct drafter *d = NULL;
	struct specd_error err;
	ec = (struct draft_eagle_config){.path = g_ckpt[0]};
	assert_int_equal(eagle(g_q, &ec, 4, 1, &d, &err), SPECD_INVAL);
	assert_null(d);
	assert_non_null(strstr(err.msg, "the target has 64"));
}

/* A folder holding nothing but pytorch_model.bin is a checkpoint to convert too. */
static void test_eagle__a_pytorch_only_folder_is_to_be_converted(void **state)
{
	(void)state;
	char dir[700], file[800];
	struct draft_eagle_config ec = {.path = dir};
	snprintf(dir, sizeof(dir), "%s/torch-only", g_dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(ts_write_file(dir, "pytorch_model.bin", "", file, sizeof(file)));
	expect_refusal(&ec, 4, SPECD_IO, "convert it with tools/convert-eagle");
}

/* ---- specd-run ---- */

/* specd-run's stdout and stderr, apart, for args; its exit status in *rc. */
static char *specd_run(const char *args, char **log, int *rc)
{
	char out[700], err[700], cmd[4096];
	snprintf(out, sizeof(out), "%s/run.out", g_dir);
	snprintf(err, sizeof(err), "%s/run.err", g_dir);
	snprintf(cmd, sizeof(cmd), "%s/daemon/specd-run %s > %s 2> %s", ts_binary_dir(), args, out,
		 err);
	const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	char *sh = NULL;
	*rc = ts_run(argv, &sh, 120);
	free(sh);
	char *text[2] = {NULL, NULL};
	const char *files[2] = {out, err};
	for (int i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "r");
		assert_non_null(f);
		text[i] = calloc(1, 65536);
		assert_non_null(text[i]);
		size_t n = fread(text[i], 1, 65535, f);
		text[i][n] = '\0';
		fclose(f);
	}
	*log = text[1];
	return text[0];
}

static void test_eagle__specd_run_matches_none(void **state)
{
	(void)state;
	char args[2048], *log;
	int rc;
	snprintf(args, sizeof(args), "-m %s -p 'abc abc' -n 30", g_target);
	char *plain = specd_run(args, &log, &rc);
	assert_int_equal(rc, 0);
	assert_true(strlen(plain) > 8);
	free(log);
	static const char *const trees[] = {
		"--spec-tokens 12", "--spec-tokens 20 --eagle-tree static --eagle-depth 4",
		"--spec-tokens 3 --eagle-tree dynamic --eagle-width 1 --eagle-depth 16",
	};
	for (size_t i = 0; i < sizeof(trees) / sizeof(trees[0]); i++) {
		snprintf(args, sizeof(args), "-m %s -p 'abc abc' -n 30 --method eagle --eagle %s "
			 "%s", g_target, g_ckpt[1], trees[i]);
		char *spec = specd_run(args, &log, &rc);
		if (rc != 0 || strcmp(spec, plain) != 0 || !strstr(log, "method eagle, K="))
			fail_msg("%s (rc %d):\n%s%s\nplain:\n%s", trees[i], rc, spec, log, plain);
		free(spec);
		free(log);
	}
	free(plain);
	static const struct {
		const char *args, *says;
		int rc;
	} bad[] = {
		{"--method eagle", "--method eagle needs --eagle DIR", 2},
		{"--method eagle --eagle x --eagle-tree wide", "expected dynamic or static", 2},
		{"--method eagle --eagle x --eagle-width 11", "a count from 1 to 10", 2},
		{"--method eagle --eagle x --eagle-depth 0", "a count from 1 to 16", 2},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(args, sizeof(args), "-m %s -p x %s", g_target, bad[i].args);
		char *out = specd_run(args, &log, &rc);
		if (rc != bad[i].rc || !strstr(log, bad[i].says))
			fail_msg("%s: rc %d, %s", bad[i].args, rc, log);
		free(out);
		free(log);
	}
	/* a checkpoint for another target: the loader's reason, and no text */
	snprintf(args, sizeof(args), "-m %s -p x --method eagle --eagle %s", g_qwen, g_ckpt[0]);
	char *out = specd_run(args, &log, &rc);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(log, "hidden size 48"));
	free(out);
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_eagle__greedy_identical_to_plain),
		cmocka_unit_test(test_eagle__catch_up_is_exact),
		cmocka_unit_test(test_eagle__dynamic_tree_ranks_paths_by_draft_log_probability),
		cmocka_unit_test(test_eagle__dynamic_tree_breaks_ties_to_the_earlier_node),
		cmocka_unit_test(test_eagle__long_prompts_and_switching_keep_plain_output),
		cmocka_unit_test(test_eagle__sampling_keeps_the_distribution),
		cmocka_unit_test(test_eagle__sampled_output_is_plain_samplings),
		cmocka_unit_test(test_eagle__refuses_checkpoints_that_do_not_fit),
		cmocka_unit_test(test_eagle__a_pytorch_only_folder_is_to_be_converted),
		cmocka_unit_test(test_eagle__specd_run_matches_none),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
