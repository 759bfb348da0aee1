/* drafters/verify: the greedy rule (longest agreeing prefix, then the target's own
 * token) and speculative sampling on hand-made logits: p == q accepts everything, a
 * token the target never samples is always rejected and never re-emitted, and the
 * first emitted token follows p exactly (chi-square goodness of fit over 200,000 draws),
 * which a classic wrong variant (resampling from p on rejection) fails. Verification
 * from draws taken where the logits are (draft_verify_drawn) gives the host
 * verifier's verdicts and leaves the sampler where it leaves it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "drafters/verify.h"
#include "kernels/kern.h"
#include "model/sampler.h"

#define V 6

/* Rows of logits whose argmax is the given id. */
static void peaked_rows(float *logits, const int32_t *argmax, uint32_t rows)
{
	for (uint32_t r = 0; r < rows; r++)
		for (uint32_t j = 0; j < V; j++)
			logits[r * V + j] = (int32_t)j == argmax[r] ? 5.0f : (float)j * 0.1f;
}

/* The greedy walk of a chain over logits rows. */
static enum specd_status greedy_chain(const float *logits, int32_t *tokens, uint32_t n,
				      struct draft_verdict *v)
{
	struct draft_rows r = {.logits = logits, .n_vocab = V};
	struct draft_proposal p = {.n = n, .tokens = tokens};
	return draft_verify_rows(&r, &p, v);
}

static void test_verify__greedy_accepts_the_agreeing_prefix(void **state)
{
	(void)state;
	float logits[5 * V];
	int32_t argmax[5] = {3, 1, 4, 0, 2};
	struct draft_verdict v;

	peaked_rows(logits, argmax, 5);
	int32_t all[4] = {3, 1, 4, 0};
	assert_int_equal(greedy_chain(logits, all, 4, &v), SPECD_OK);
	assert_int_equal(v.n_accepted, 4);
	assert_int_equal(v.next, 2); /* the bonus: the argmax after the last */

	int32_t some[4] = {3, 1, 5, 0};
	assert_int_equal(greedy_chain(logits, some, 4, &v), SPECD_OK);
	assert_int_equal(v.n_accepted, 2);
	assert_int_equal(v.next, 4); /* the target's own token at the first mismatch */

	int32_t none[4] = {2, 1, 4, 0};
	assert_int_equal(greedy_chain(logits, none, 4, &v), SPECD_OK);
	assert_int_equal(v.n_accepted, 0);
	assert_int_equal(v.next, 3);

	assert_int_equal(greedy_chain(logits, NULL, 0, &v), SPECD_OK);
	assert_int_equal(v.n_accepted, 0);
	assert_int_equal(v.next, 3);

	/* From the rows' argmax alone (a device's model_batch.ids): the same verdicts. */
	const uint32_t ids[5] = {3, 1, 4, 0, 2};
	struct draft_rows by_ids = {.ids = ids, .n_vocab = V};
	int32_t *cases[3] = {all, some, none};
	for (int c = 0; c < 3; c++) {
		struct draft_proposal p = {.n = 4, .tokens = cases[c]};
		struct draft_verdict w;
		assert_int_equal(greedy_chain(logits, cases[c], 4, &v), SPECD_OK);
		assert_int_equal(draft_verify_rows(&by_ids, &p, &w), SPECD_OK);
		assert_int_equal(w.n_accepted, v.n_accepted);
		assert_int_equal(w.next, v.next);
	}
	/* An id outside the vocabulary, a proposed token outside it, no rows: refused. */
	const uint32_t bad_ids[5] = {3, 1, V, 0, 2};
	struct draft_rows bad = {.ids = bad_ids, .n_vocab = V};
	struct draft_proposal p = {.n = 4, .tokens = all};
	assert_int_equal(draft_verify_rows(&bad, &p, &v), SPECD_INVAL);
	int32_t out_of_range[1] = {V};
	struct draft_proposal q = {.n = 1, .tokens = out_of_range};
	assert_int_equal(draft_verify_rows(&by_ids, &q, &v), SPECD_INVAL);
	struct draft_rows empty = {.n_vocab = V};
	assert_int_equal(draft_verify_rows(&empty, &p, &v), SPECD_INVAL);
}

static void test_verify__rejects_bad_arguments(void **state)
{
	(void)state;
	struct sampler_params sp = {.temperature = 1.0f, .top_p = 1.0f, .seed = 1};
	struct sampler *s;
	float logits[2 * V] = {0};
	int32_t tok[1] = {V};
	struct draft_proposal prop = {.n = 1, .tokens = tok, .q_onehot = true};
	float work[2 * V];
	struct draft_verdict v = {.n_accepted = 77, .next = 77};

	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	assert_int_equal(draft_verify(s, logits, V, &prop, work, &v), SPECD_INVAL);
	tok[0] = 1;
	assert_int_equal(draft_verify(s, logits, V + 1, &prop, work, &v), SPECD_INVAL);
	prop.q_onehot = false; /* a sampled proposal without its q */
	assert_int_equal(draft_verify(s, logits, V, &prop, work, &v), SPECD_INVAL);
	for (int i = 0; i < 2 * V; i++)
		logits[i] = -INFINITY;
	prop.q_onehot = true;
	assert_int_equal(draft_verify(s, logits, V, &prop, work, &v), SPECD_INVAL);
	assert_int_equal(v.n_accepted, 77); /* out-parameter untouched on error */
	sampler_destroy(s);
}

static void test_verify__sampling_accepts_all_when_q_is_p(void **state)
{
	(void)state;
	struct sampler_params sp = {.temperature = 0.8f, .top_k = 4, .top_p = 0.9f};
	struct sampler *s, *ds;
	float logits[4 * V], q[3 * V], work[2 * V];
	int32_t tok[3];
	struct draft_proposal prop = {.n = 3, .tokens = tok, .q = q, .q_onehot = false};

	for (int i = 0; i < 4 * V; i++)
		logits[i] = (float)((i * 7) % 11) * 0.3f;
	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	assert_int_equal(sampler_create(V, &sp, &ds, NULL), SPECD_OK);
	for (uint64_t seed = 0; seed < 2000; seed++) {
		struct sampler_params a = sp, b = sp;
		struct draft_verdict v;
		a.seed = seed;
		b.seed = seed + 99991;
		sampler_reset(s, &a, NULL);
		sampler_reset(ds, &b, NULL);
		for (int i = 0; i < 3; i++) {
			assert_int_equal(sampler_probs(ds, logits + i * V, q + i * V), SPECD_OK);
			assert_int_equal(sampler_sample_probs(ds, q + i * V, &tok[i]), SPECD_OK);
		}
		assert_int_equal(draft_verify(s, logits, V, &prop, work, &v), SPECD_OK);
		assert_int_equal(v.n_accepted, 3);
		assert_true(v.next >= 0 && v.next < V);
	}
	sampler_destroy(s);
	sampler_destroy(ds);
}

static void test_verify__sampling_rejects_what_the_target_never_samples(void **state)
{
	(void)state;
	/* top_k 3: ids 3..5 have p = 0. A one-hot proposal of id 5 is always rejected,
	 * and the replacement comes from p without it: one of 0..2. */
	struct sampler_params sp = {.temperature = 1.0f, .top_k = 3, .top_p = 1.0f};
	struct sampler *s;
	float logits[2 * V] = {3, 2, 1, -1, -2, -3, 3, 2, 1, -1, -2, -3}, work[2 * V];
	int32_t tok[1] = {5};
	struct draft_proposal prop = {.n = 1, .tokens = tok, .q_onehot = true};

	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	for (uint64_t seed = 0; seed < 2000; seed++) {
		struct draft_verdict v;
		sp.seed = seed;
		sampler_reset(s, &sp, NULL);
		assert_int_equal(draft_verify(s, logits, V, &prop, work, &v), SPECD_OK);
		assert_int_equal(v.n_accepted, 0);
		assert_true(v.next >= 0 && v.next <= 2);
	}
	sampler_destroy(s);
}

/* The classic mistake: on rejection, draw from p instead of norm(max(0, p - q)). */
static enum specd_status biased_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
				       const struct draft_proposal *prop, float *work,
				       struct draft_verdict *out)
{
	float *p = work;
	for (uint32_t i = 0; i < prop->n; i++) {
		int32_t t = prop->tokens[i];
		sampler_probs(s, logits + (size_t)i * n_vocab, p);
		float q = prop->q_onehot ? 1.0f : prop->q[(size_t)i * n_vocab + (size_t)t];
		if (sampler_uniform(s) * q < p[t])
			continue;
		out->n_accepted = i;
		return sampler_sample_probs(s, p, &out->next);
	}
	out->n_accepted = prop->n;
	sampler_probs(s, logits + (size_t)prop->n * n_vocab, p);
	return sampler_sample_probs(s, p, &out->next);
}

/* The chi-square statistic of the first emitted token against p over n draws, with a
 * draft q far from p (so that rejections are frequent). */
static double first_token_chi2(draft_verify_fn *verify, bool onehot, int n)
{
	struct sampler_params sp = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
	float tl[2 * V] = {2.0f, 1.5f, 1.0f, 0.2f, -0.5f, -1.0f, 0, 0, 0, 0, 0, 0};
	float dl[V] = {-1.0f, 0.0f, 2.5f, 2.0f, 0.0f, 0.5f};
	float p[V], q[V], work[2 * V];
	struct sampler *s, *ds;
	long count[V] = {0};
	int32_t tok[1];
	struct draft_proposal prop = {.n = 1, .tokens = tok, .q = q, .q_onehot = onehot};

	assert_int_equal(sampler_create(V, &sp, &s, NULL), SPECD_OK);
	assert_int_equal(sampler_create(V, &sp, &ds, NULL), SPECD_OK);
	assert_int_equal(sampler_probs(s, tl, p), SPECD_OK);
	assert_int_equal(sampler_probs(ds, dl, q), SPECD_OK);
	for (int i = 0; i < n; i++) {
		struct sampler_params a = sp, b = sp;
		struct draft_verdict v;
		a.seed = (uint64_t)i;
		b.seed = (uint64_t)i + 1000003;
		sampler_reset(s, &a, NULL);
		sampler_reset(ds, &b, NULL);
		if (onehot)
			tok[0] = i % 3 == 0 ? 2 : 3; /* any rule that ignores the target */
		else
			assert_int_equal(sampler_sample_probs(ds, q, &tok[0]), SPECD_OK);
		assert_int_equal(verify(s, tl, V, &prop, work, &v), SPECD_OK);
		count[v.n_accepted ? tok[0] : v.next]++;
	}
	double chi2 = 0;
	for (int j = 0; j < V; j++) {
		double e = p[j] * n;
		chi2 += (count[j] - e) * (count[j] - e) / e;
	}
	sampler_destroy(s);
	sampler_destroy(ds);
	return chi2;
}

static void test_verify__first_token_follows_p(void **state)
{
	(void)state;
	const double crit = 20.515; /* chi-square, 5 degrees of freedom, alpha 0.001 */
	assert_true(first_token_chi2(draft_verify, false, 200000) < crit);
	assert_true(first_token_chi2(draft_verify, true, 200000) < crit);
	/* The test has the power to see a wrong verifier. */
	assert_true(first_token_chi2(biased_verify, false, 200000) > crit);
	assert_true(first_token_chi2(biased_verify, true, 200000) > crit);
}

static uint64_t g_lcg = 12345;

static uint32_t lcg(uint32_t n)
{
	g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(g_lcg >> 33) % n;
}

/* A random proposal of n one-hot tokens: a chain, or a tree whose parents come
 * earlier; each token often its row's likeliest. */
static void random_proposal(float *logits, uint32_t n, bool tree, int32_t *tokens,
			    int32_t *parent, uint32_t vd)
{
	for (uint32_t r = 0; r <= n; r++) {
		uint32_t peak = lcg(vd);
		for (uint32_t j = 0; j < vd; j++)
			logits[r * vd + j] = (float)lcg(1000) / 250.0f + (j == peak ? 3.0f : 0);
	}
	for (uint32_t i = 0; i < n; i++) {
		parent[i] = tree ? (int32_t)lcg(i + 1) - 1 : (int32_t)i - 1;
		/* the likeliest token of the parent's row, or another */
		const float *row = logits + (size_t)(parent[i] + 1) * vd;
		tokens[i] = lcg(3) ? sampler_argmax(row, (int32_t)vd) : (int32_t)lcg(vd);
	}
}

/* Random chains and trees (0 to 8 nodes, one-hot q, a token often its parent row's
 * likeliest) under several transforms: the draws path, with the CPU backend's sample
 * op standing in for a device's, gives draft_verify's verdict and path every time,
 * and both samplers give the same uniform afterwards (the same number of draws was
 * taken). Both ends of the walk occur: a rejection, and every level accepted. */
static void test_verify__drawn_equals_the_host_verifier(void **state)
{
	(void)state;
	enum { VD = 64, NMAX = 8, CASES = 3000 };
	static const struct sampler_params params[] = {
		{.temperature = 1.0f, .top_p = 1.0f},
		{.temperature = 0.7f, .top_p = 0.9f},
		{.temperature = 1.5f, .top_k = 5, .top_p = 1.0f},
		{.temperature = 0.9f, .top_k = 30, .top_p = 0.8f, .min_p = 0.05f},
		{.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.2f},
	};
	struct kern_ctx *cpu = NULL;
	assert_int_equal(kern_cpu_create(NULL, &cpu), SPECD_OK);
	float *logits = specd_malloc_array((NMAX + 1) * VD, sizeof(float));
	float *work = specd_malloc_array(2 * VD, sizeof(float));
	void *kwork = specd_malloc_array(1, kern_sample_work_bytes(NMAX + 1, VD));
	assert_true(logits && work && kwork);
	int32_t tokens[NMAX], parent[NMAX];
	uint32_t rejected = 0, all = 0, deep = 0;
	for (uint32_t c = 0; c < CASES; c++) {
		struct sampler_params sp = params[c % (sizeof(params) / sizeof(params[0]))];
		sp.seed = c;
		struct sampler *host, *dev;
		assert_int_equal(sampler_create(VD, &sp, &host, NULL), SPECD_OK);
		assert_int_equal(sampler_create(VD, &sp, &dev, NULL), SPECD_OK);
		uint32_t n = lcg(NMAX + 1);
		bool tree = c % 2;
		random_proposal(logits, n, tree, tokens, parent, VD);
		struct draft_proposal prop = {.n = n, .tokens = tokens, .q_onehot = true,
					      .tree = tree, .parent = parent};
		struct draft_verdict want, got;
		assert_int_equal(draft_verify(host, logits, VD, &prop, work, &want), SPECD_OK);

		float u[NMAX + 1];
		uint32_t drawn[NMAX + 1];
		assert_true(draft_verify_can_draw(dev, &prop));
		draft_draw_prepare(dev, &prop, u);
		struct kern_sample_rows rows = {
			.rows = n + 1, .n = VD, .x = logits, .ldx = VD,
			.params = sampler_kern_params(dev), .u = u, .work = kwork, .out = drawn,
		};
		assert_int_equal(kern_sample(cpu, &rows), SPECD_OK);
		assert_int_equal(draft_verify_drawn(dev, &prop, drawn, &got), SPECD_OK);
		assert_int_equal(got.n_accepted, want.n_accepted);
		assert_int_equal(got.next, want.next);
		if (tree)
			assert_memory_equal(got.path, want.path,
					    want.n_accepted * sizeof(uint32_t));
		assert_true(sampler_uniform(dev) == sampler_uniform(host));
		rejected += want.n_accepted < n;
		all += n > 0 && want.n_accepted == n;
		deep += tree && want.n_accepted >= 2;
		sampler_destroy(host);
		sampler_destroy(dev);
	}
	assert_true(rejected > CASES / 2 && all > CASES / 100 && deep > CASES / 100);

	/* What the draws path does not take: a greedy sampler, a full q, and a drawn token
	 * outside the vocabulary. */
	struct sampler *s;
	struct sampler_params sp = {.temperature = 0.0f, .top_p = 1.0f};
	assert_int_equal(sampler_create(VD, &sp, &s, NULL), SPECD_OK);
	struct draft_proposal prop = {.n = 1, .tokens = tokens, .q_onehot = true};
	assert_false(draft_verify_can_draw(s, &prop));
	sampler_destroy(s);
	sp.temperature = 1.0f;
	assert_int_equal(sampler_create(VD, &sp, &s, NULL), SPECD_OK);
	tokens[0] = 3;
	struct draft_proposal full = {.n = 1, .tokens = tokens, .q = work};
	struct draft_proposal none = {.n = 0};
	assert_false(draft_verify_can_draw(s, &full));
	assert_true(draft_verify_can_draw(s, &none));
	uint32_t drawn[2] = {VD, VD};
	struct draft_verdict v;
	assert_int_equal(draft_verify_drawn(s, &prop, drawn, &v), SPECD_INVAL);
	assert_int_equal(draft_verify_drawn(s, &full, drawn, &v), SPECD_INVAL);
	sampler_destroy(s);
	specd_free(logits);
	specd_free(work);
	specd_free(kwork);
	kern_destroy(cpu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verify__greedy_accepts_the_agreeing_prefix),
		cmocka_unit_test(test_verify__rejects_bad_arguments),
		cmocka_unit_test(test_verify__sampling_accepts_all_when_q_is_p),
		cmocka_unit_test(test_verify__sampling_rejects_what_the_target_never_samples),
		cmocka_unit_test(test_verify__first_token_follows_p),
		cmocka_unit_test(test_verify__drawn_equals_the_host_verifier),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
