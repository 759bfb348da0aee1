/* Token-tree verification (drafters/tree_verify.c) against a brute-force reference:
 * greedy against the longest agreeing root path found by trying every node; sampling
 * against the exact outcome distribution of the SpecInfer rule enumerated in doubles
 * (which is itself checked to be lossless: the first emitted token follows the target,
 * for one-hot and for independently drawn siblings), by a chi-square goodness of fit;
 * a chain given as a tree verifies exactly as a chain. Then the engine: a tree drafter
 * of several shapes, one branch of which holds the target's continuation, gives output
 * bit-identical to plain greedy decoding, with the accepted paths kept in the cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "drafters/verify.h"
#include "model/kv.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_support.h"

#define V 6          /* vocabulary of the synthetic cases */
#define MAX_NODES 12
#define N_DRAWS 200000

static uint64_t g_rng = 0x1234567;

static uint32_t rnd(uint32_t n)
{
	g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)((g_rng >> 33) % n);
}

/* A random tree of n nodes over vocabulary v, siblings distinct when distinct is set. */
static void random_tree(uint32_t n, uint32_t v, bool distinct, int32_t *parent, int32_t *tok)
{
	for (uint32_t i = 0; i < n; i++) {
		parent[i] = (int32_t)rnd(i + 1) - 1;
		for (int tries = 0;; tries++) {
			/* A parent whose children took every token: node i - 1 has none yet. */
			if (tries == 64)
				parent[i] = (int32_t)i - 1;
			tok[i] = (int32_t)rnd(v);
			bool clash = false;
			for (uint32_t j = 0; j < i && distinct; j++)
				clash |= parent[j] == parent[i] && tok[j] == tok[i];
			if (!clash)
				break;
		}
	}
}

static void random_logits(float *l, uint32_t rows, uint32_t v)
{
	for (uint32_t i = 0; i < rows * v; i++)
		l[i] = (float)rnd(1000) / 250.0f - 2.0f;
}

/* ---- greedy ---- */

static int32_t argmax(const float *row, uint32_t v)
{
	int32_t b = 0;
	for (uint32_t i = 1; i < v; i++)
		if (row[i] > row[b])
			b = (int32_t)i;
	return b;
}

static uint32_t depth_of(const int32_t *parent, int32_t node)
{
	uint32_t d = 0;
	for (; node >= 0; node = parent[node])
		d++;
	return d;
}

static void test_tree__greedy_matches_brute_force(void **state)
{
	(void)state;
	float logits[(MAX_NODES + 1) * V];
	int32_t parent[MAX_NODES], tok[MAX_NODES];

	for (int it = 0; it < 3000; it++) {
		uint32_t n = rnd(MAX_NODES + 1);
		random_tree(n, 3, true, parent, tok); /* 3 of V tokens: matches are common */
		random_logits(logits, n + 1, V);
		/* Brute force: the deepest node whose whole root path agrees with the argmax
		 * at each parent (siblings are distinct, so it is unique). */
		int32_t best = -1;
		uint32_t best_d = 0;
		for (uint32_t i = 0; i < n; i++) {
			bool ok = true;
			for (int32_t x = (int32_t)i; x >= 0 && ok; x = parent[x])
				ok = tok[x] == argmax(logits + (size_t)(parent[x] + 1) * V, V);
			if (ok && depth_of(parent, (int32_t)i) > best_d) {
				best = (int32_t)i;
				best_d = depth_of(parent, (int32_t)i);
			}
		}
		struct draft_proposal p = {.n = n, .tokens = tok, .q_onehot = true, .tree = true,
					   .parent = parent};
		struct draft_verdict v;
		struct draft_rows rows = {.logits = logits, .n_vocab = V};
		assert_int_equal(draft_verify_rows(&rows, &p, &v), SPECD_OK);
		assert_int_equal(v.n_accepted, best_d);
		assert_int_equal(v.next, argmax(logits + (size_t)(best + 1) * V, V));
		for (int32_t x = best, i = (int32_t)best_d - 1; x >= 0; x = parent[x], i--)
			assert_int_equal(v.path[i], (uint32_t)x);
		/* The rows' argmax alone, as a device gives it: the same verdict. */
		uint32_t ids[MAX_NODES + 1];
		for (uint32_t r = 0; r <= n; r++)
			ids[r] = (uint32_t)argmax(logits + (size_t)r * V, V);
		struct draft_rows by_ids = {.ids = ids, .n_vocab = V};
		struct draft_verdict w;
		assert_int_equal(draft_verify_rows(&by_ids, &p, &w), SPECD_OK);
		assert_int_equal(w.n_accepted, v.n_accepted);
		assert_int_equal(w.next, v.next);
		assert_memory_equal(w.path, v.path, v.n_accepted * sizeof(uint32_t));
	}
}

/* ---- sampling: the exact reference ---- */

struct outcome_table {
	double pr[MAX_NODES + 1][V]; /* [path end + 1][next] */
};

/* norm(max(0, r - q)) in place, r normalised; kept when it would be empty. */
static void residual(double *r, const double *q)
{
	double t = 0, nr[V];
	for (uint32_t j = 0; j < V; j++) {
		nr[j] = r[j] > q[j] ? r[j] - q[j] : 0;
		t += nr[j];
	}
	if (t <= 0)
		return;
	for (uint32_t j = 0; j < V; j++)
		r[j] = nr[j] / t;
}

static void probs_of(struct sampler *s, const float *logits, double *out)
{
	float p[V];
	assert_int_equal(sampler_probs(s, logits, p), SPECD_OK);
	double t = 0;
	for (uint32_t j = 0; j < V; j++)
		t += p[j];
	for (uint32_t j = 0; j < V; j++)
		out[j] = p[j] / t;
}

/* The SpecInfer rule walked with exact probabilities: every (path end, next) outcome
 * with the probability the rule gives it. q (NULL: one-hot) rows per node. g_wrong
 * leaves out the residual update (the classic mistake), for the control. */
static bool g_wrong;

static void reference(struct sampler *s, const float *logits, const struct draft_proposal *p,
		      const float *q, int32_t node, double mass, struct outcome_table *o)
{
	double r[V];
	probs_of(s, logits + (size_t)(node + 1) * V, r);
	for (uint32_t c = 0; c < p->n; c++) {
		if (p->parent[c] != node)
			continue;
		double qc[V];
		for (uint32_t j = 0; j < V; j++)
			qc[j] = q ? q[(size_t)c * V + j] : (j == (uint32_t)p->tokens[c]);
		double acc = qc[p->tokens[c]] > 0 ? fmin(1.0, r[p->tokens[c]] / qc[p->tokens[c]]) : 0;
		reference(s, logits, p, q, (int32_t)c, mass * acc, o);
		mass *= 1 - acc;
		if (!g_wrong)
			residual(r, qc);
	}
	for (uint32_t j = 0; j < V; j++)
		o->pr[node + 1][j] += mass * r[j];
}

/* The first emitted token's law under the reference: the first accepted child's token
 * or, with none, the next token drawn at the root. */
static void first_token_law(const struct draft_proposal *p, const struct outcome_table *o,
			    double *law)
{
	memset(law, 0, V * sizeof(*law));
	for (uint32_t e = 0; e <= p->n; e++) {
		for (uint32_t j = 0; j < V; j++) {
			if (e == 0) {
				law[j] += o->pr[0][j];
				continue;
			}
			int32_t x = (int32_t)e - 1;
			while (p->parent[x] >= 0)
				x = p->parent[x];
			law[p->tokens[x]] += o->pr[e][j];
		}
	}
}

/* N_DRAWS verifier runs against the reference's outcome probabilities. */
static double fit(struct sampler *s, const float *logits, const struct draft_proposal *p,
		  const struct outcome_table *o, bool strict, int *df)
{
	static uint32_t count[MAX_NODES + 1][V];
	float work[2 * V];
	memset(count, 0, sizeof(count));
	for (int i = 0; i < N_DRAWS; i++) {
		struct draft_verdict v;
		assert_int_equal(draft_verify(s, logits, V, p, work, &v), SPECD_OK);
		uint32_t end = v.n_accepted ? v.path[v.n_accepted - 1] + 1 : 0;
		for (uint32_t a = 1; a < v.n_accepted; a++)
			assert_int_equal(p->parent[v.path[a]], (int32_t)v.path[a - 1]);
		if (v.n_accepted)
			assert_int_equal(p->parent[v.path[0]], -1);
		assert_int_equal(depth_of(p->parent, (int32_t)end - 1), v.n_accepted);
		count[end][v.next]++;
	}
	double stat = 0, oe = 0, oo = 0;
	int bins = 0;
	for (uint32_t e = 0; e <= p->n; e++) {
		for (uint32_t j = 0; j < V; j++) {
			double exp_n = o->pr[e][j] * N_DRAWS;
			if (exp_n < 10) {
				oe += exp_n;
				oo += count[e][j];
				/* An outcome the rule cannot give must never happen. */
				if (strict && o->pr[e][j] == 0 && count[e][j])
					fail_msg("outcome (end %u, next %u) has probability 0 and came %u "
						 "times", e, j, count[e][j]);
				continue;
			}
			stat += (count[e][j] - exp_n) * (count[e][j] - exp_n) / exp_n;
			bins++;
		}
	}
	if (oe >= 10) {
		stat += (oo - oe) * (oo - oe) / oe;
		bins++;
	}
	*df = bins - 1;
	return stat;
}

static void check_sampling(const struct sampler_params *sp, bool onehot)
{
	float logits[(MAX_NODES + 1) * V], q[MAX_NODES * V];
	int32_t parent[MAX_NODES], tok[MAX_NODES];
	struct sampler *s;
	int caught = 0;
	assert_int_equal(sampler_create(V, sp, &s, NULL), SPECD_OK);
	for (int it = 0; it < 6; it++) {
		uint32_t n = 3 + rnd(MAX_NODES - 2);
		random_tree(n, V, onehot, parent, tok);
		random_logits(logits, n + 1, V);
		/* Siblings share one q row (independent draws from it), as the rule needs. */
		for (uint32_t i = 0; i < n; i++) {
			int32_t first = (int32_t)i;
			for (uint32_t j = 0; j < i; j++)
				if (parent[j] == parent[i]) {
					first = (int32_t)j;
					break;
				}
			if (first != (int32_t)i) {
				memcpy(q + (size_t)i * V, q + (size_t)first * V, V * sizeof(float));
				continue;
			}
			float t = 0;
			for (uint32_t j = 0; j < V; j++)
				t += q[(size_t)i * V + j] = 0.05f + (float)rnd(100);
			for (uint32_t j = 0; j < V; j++)
				q[(size_t)i * V + j] /= t;
		}
		struct draft_proposal p = {.n = n, .tokens = tok, .q = onehot ? NULL : q,
					   .q_onehot = onehot, .tree = true, .parent = parent};
		struct outcome_table o;
		memset(&o, 0, sizeof(o));
		reference(s, logits, &p, onehot ? NULL : q, -1, 1.0, &o);
		double total = 0;
		for (uint32_t e = 0; e <= n; e++)
			for (uint32_t j = 0; j < V; j++)
				total += o.pr[e][j];
		assert_true(fabs(total - 1.0) < 1e-9);
		if (onehot) {
			/* Lossless: the first emitted token follows the target at the root. */
			double law[V], pr[V];
			first_token_law(&p, &o, law);
			probs_of(s, logits, pr);
			for (uint32_t j = 0; j < V; j++)
				assert_true(fabs(law[j] - pr[j]) < 1e-9);
		}
		int df;
		double stat = fit(s, logits, &p, &o, true, &df);
		assert_true(df >= 1);
		if (getenv("FX_VERBOSE"))
			fprintf(stderr, "  tree of %u: chi2 %.2f df %d crit %.2f\n", n, stat, df, fx_chi2_critical(df));
		assert_true(stat < fx_chi2_critical(df));
		/* The same fit tells a wrong rule apart (so it can fail). */
		memset(&o, 0, sizeof(o));
		g_wrong = true;
		reference(s, logits, &p, onehot ? NULL : q, -1, 1.0, &o);
		g_wrong = false;
		caught += fit(s, logits, &p, &o, false, &df) > fx_chi2_critical(df);
	}
	assert_true(caught >= 3);
	sampler_destroy(s);
}

static void test_tree__sampling_matches_brute_force(void **state)
{
	(void)state;
	struct sampler_params sp = {.temperature = 0.9f, .top_k = 0, .top_p = 1.0f, .seed = 5};
	check_sampling(&sp, true);
	check_sampling(&sp, false);
	struct sampler_params tr = {.temperature = 1.3f, .top_k = 4, .top_p = 0.95f, .seed = 6};
	check_sampling(&tr, true);
}

/* SpecInfer's claim for independent siblings, on the reference: averaged over the
 * sibling draws from q, the first emitted token follows p exactly. */
static void test_tree__independent_siblings_are_lossless(void **state)
{
	(void)state;
	struct sampler_params sp = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 1};
	struct sampler *s;
	float logits[4 * V], q[3 * V];
	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	random_logits(logits, 4, V);
	for (uint32_t j = 0; j < V; j++)
		q[j] = q[V + j] = q[2 * V + j] = (float)(j + 1) / (float)(V * (V + 1) / 2);
	int32_t parent[3] = {-1, -1, -1}, tok[3];
	double law[V] = {0}, pr[V];
	for (uint32_t a = 0; a < V; a++)
		for (uint32_t b = 0; b < V; b++)
			for (uint32_t c = 0; c < V; c++) {
				tok[0] = (int32_t)a;
				tok[1] = (int32_t)b;
				tok[2] = (int32_t)c;
				struct draft_proposal p = {.n = 3, .tokens = tok, .q = q, .tree = true,
							   .parent = parent};
				struct outcome_table o;
				double l[V], w = (double)q[a] * q[b] * q[c];
				memset(&o, 0, sizeof(o));
				reference(s, logits, &p, q, -1, 1.0, &o);
				first_token_law(&p, &o, l);
				for (uint32_t j = 0; j < V; j++)
					law[j] += w * l[j];
			}
	probs_of(s, logits, pr);
	for (uint32_t j = 0; j < V; j++)
		assert_true(fabs(law[j] - pr[j]) < 1e-6);
	sampler_destroy(s);
}

static void test_tree__chain_as_tree_verifies_as_chain(void **state)
{
	(void)state;
	float logits[(MAX_NODES + 1) * V], q[MAX_NODES * V], work[2 * V];
	int32_t parent[MAX_NODES], tok[MAX_NODES];
	struct sampler_params sp = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f};
	struct sampler *a, *b;
	assert_int_equal(sampler_create(V, &sp, &a, NULL), SPECD_OK);
	assert_int_equal(sampler_create(V, &sp, &b, NULL), SPECD_OK);
	for (int it = 0; it < 500; it++) {
		uint32_t n = rnd(MAX_NODES + 1);
		for (uint32_t i = 0; i < n; i++) {
			parent[i] = (int32_t)i - 1;
			tok[i] = (int32_t)rnd(3);
		}
		random_logits(logits, n + 1, V);
		for (uint32_t i = 0; i < n * V; i++)
			q[i] = 1.0f / V;
		sp.seed = (uint64_t)it;
		assert_int_equal(sampler_reset(a, &sp, NULL), SPECD_OK);
		assert_int_equal(sampler_reset(b, &sp, NULL), SPECD_OK);
		bool onehot = it % 2;
		struct draft_proposal chain = {.n = n, .tokens = tok, .q = q, .q_onehot = onehot};
		struct draft_proposal tree = chain;
		tree.tree = true;
		tree.parent = parent;
		struct draft_verdict vc, vt;
		assert_int_equal(draft_verify(a, logits, V, &chain, work, &vc), SPECD_OK);
		assert_int_equal(draft_verify(b, logits, V, &tree, work, &vt), SPECD_OK);
		assert_int_equal(vc.n_accepted, vt.n_accepted);
		assert_int_equal(vc.next, vt.next);
		for (uint32_t i = 0; i < vt.n_accepted; i++)
			assert_int_equal(vt.path[i], i);
	}
	sampler_destroy(a);
	sampler_destroy(b);
}

static void test_tree__bad_trees_are_refused(void **state)
{
	(void)state;
	float logits[3 * V] = {0}, work[2 * V];
	int32_t tok[2] = {1, 2}, parent[2] = {-1, 1}; /* node 1 its own parent */
	struct sampler_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
	struct sampler *s;
	struct draft_verdict v;
	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	struct draft_proposal p = {.n = 2, .tokens = tok, .q_onehot = true, .tree = true,
				   .parent = parent};
	assert_int_equal(draft_verify(s, logits, V, &p, work, &v), SPECD_INVAL);
	parent[1] = -2;
	assert_int_equal(draft_verify(s, logits, V, &p, work, &v), SPECD_INVAL);
	p.parent = NULL;
	assert_int_equal(draft_verify(s, logits, V, &p, work, &v), SPECD_INVAL);
	sampler_destroy(s);
}

/* ---- the engine with a tree drafter ---- */

#define GEN 48

static const int32_t *g_oracle; /* plain greedy output after the prompt */
static uint32_t g_prompt_n;
static int g_shape;

/* Trees of k nodes in several shapes; the oracle's continuation (when known) runs down
 * one branch, the rest are distractors. Shape 0: wide (every node a root child but a
 * chain of 3); 1: deep chain with side branches; 2: random. */
static enum specd_status oracle_propose(void *st, const struct draft_seq *seq, uint32_t k,
					struct draft_proposal *out, struct specd_error *err)
{
	(void)st;
	(void)err;
	uint32_t have = seq->n_tokens - g_prompt_n; /* oracle tokens already in the history */
	for (uint32_t i = 0; i < k; i++) {
		switch (g_shape) {
		case 0: out->parent[i] = i < 3 ? (int32_t)i - 1 : -1; break;
		case 1: out->parent[i] = i % 3 == 2 ? (int32_t)i - 2 : (int32_t)i - 1; break;
		default: out->parent[i] = (int32_t)rnd(i + 1) - 1; break;
		}
		if (out->parent[i] >= (int32_t)i)
			out->parent[i] = (int32_t)i - 1;
		uint32_t d = depth_of(out->parent, (int32_t)i) - 1;
		/* The oracle branch: nodes whose ancestors are all oracle nodes. */
		bool on = true;
		for (int32_t x = out->parent[i]; x >= 0 && on; x = out->parent[x])
			on = out->tokens[x] == g_oracle[have + depth_of(out->parent, x) - 1];
		bool first = true;
		for (uint32_t j = 0; j < i; j++)
			first &= !(out->parent[j] == out->parent[i] &&
				   out->tokens[j] == g_oracle[have + d]);
		if (on && first && have + d < GEN && rnd(4) != 0) {
			out->tokens[i] = g_oracle[have + d];
			continue;
		}
		for (;;) {
			out->tokens[i] = (int32_t)(3 + rnd(250));
			bool clash = false;
			for (uint32_t j = 0; j < i; j++)
				clash |= out->parent[j] == out->parent[i] && out->tokens[j] == out->tokens[i];
			if (!clash)
				break;
		}
	}
	out->n = k;
	out->tree = true;
	out->q_onehot = true;
	return SPECD_OK;
}

static enum specd_status oracle_create(const struct draft_config *cfg, void **state,
				       struct specd_error *err)
{
	(void)cfg;
	(void)err;
	*state = &g_shape;
	return SPECD_OK;
}

static void oracle_destroy(void *state)
{
	(void)state;
}

static enum specd_status oracle_supports(const void *s, const struct model *t,
					 struct specd_error *err)
{
	(void)s;
	(void)t;
	(void)err;
	return SPECD_OK;
}

static size_t oracle_bytes(const void *s)
{
	(void)s;
	return 0;
}

static enum specd_status oracle_commit(void *s, const struct draft_seq *seq, uint32_t a,
				       int32_t next, struct specd_error *err)
{
	(void)s;
	(void)a;
	(void)err;
	/* The history the engine shows ends with the verdict's next token. */
	assert_int_equal(seq->tokens[seq->n_tokens - 1], next);
	return SPECD_OK;
}

static const struct draft_ops oracle_ops = {
	.method = DRAFT_METHOD_MEDUSA,
	.create = oracle_create,
	.destroy = oracle_destroy,
	.supports = oracle_supports,
	.memory_bytes = oracle_bytes,
	.propose = oracle_propose,
	.commit = oracle_commit,
};

static void test_tree__engine_greedy_identical_to_plain(void **state)
{
	(void)state;
	char dir[512], path[600];
	assert_non_null(ts_mkdtemp(dir, sizeof(dir)));
	snprintf(path, sizeof(path), "%s/t.gguf", dir);
	const char *args[] = {"--dim", "48", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			      "--ffn", "96", "--vocab", "260", "--ctx", "128", "--seed", "9", NULL};
	fx_gen_model(path, args);
	struct model *t = fx_load(path, 1, 128);
	int32_t prompt[5] = {1, 40, 41, 42, 43}, plain[GEN], out[GEN];
	assert_int_equal(fx_plain_greedy(t, prompt, 5, GEN, plain), GEN);
	g_oracle = plain;
	g_prompt_n = 5;
	const uint32_t ks[] = {1, 4, 9, 20, 40};
	for (g_shape = 0; g_shape < 3; g_shape++) {
		for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
			struct draft_config dc = {.k_max = ks[ki], .n_slots = 1, .target = t};
			struct drafter *d;
			struct draft_metrics m;
			uint32_t n;
			struct sampler_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
			assert_int_equal(draft_create_ops(&oracle_ops, &dc, &d, NULL), SPECD_OK);
			assert_int_equal(fx_generate(t, d, ks[ki], NULL, prompt, 5, &sp, GEN, -1, out,
						     GEN, &n, &m, NULL), SPECD_OK);
			assert_int_equal(n, GEN);
			assert_memory_equal(out, plain, sizeof(plain));
			assert_true(m.accepted > 0);
			assert_true(m.steps < GEN);
			draft_destroy(d);
		}
	}
	model_destroy(t);
	ts_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree__greedy_matches_brute_force),
		cmocka_unit_test(test_tree__sampling_matches_brute_force),
		cmocka_unit_test(test_tree__independent_siblings_are_lossless),
		cmocka_unit_test(test_tree__chain_as_tree_verifies_as_chain),
		cmocka_unit_test(test_tree__bad_trees_are_refused),
		cmocka_unit_test(test_tree__engine_greedy_identical_to_plain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
