/* selector/online.c: acceptance per position as evidence comes in, each sequence's K
 * planned in a shared batch, and the cluster's method and K re-decided from sequences
 * of acceptance: it converges to the method and K the cost model predicts best, follows
 * a change of workload, does not flap on noise, and probes a stopped method and the
 * held methods that are not running. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sel_fixture.h"
#include "selector/online.h"

/* A draft model in the leader: a 20 ms target step (+1 ms a row), 0.5 ms + 2 ms a
 * drafted token. */
static struct sel_inputs leader_draft(void)
{
	struct sel_inputs in = sel_fx_inputs(8, 0.020, 0.001, 4096);
	sel_fx_method(&in, DRAFT_METHOD_DRAFT_MODEL, 0.5e-3, 2e-3);
	return in;
}

static struct sel_online_config online_cfg(uint32_t k_start)
{
	return (struct sel_online_config){
		.method = DRAFT_METHOD_DRAFT_MODEL,
		.k_max = 8, .k_start = k_start, .interval = 16, .hysteresis = 0.05,
		.decay = 0.98, .prior_weight = 8, .job_prior_weight = 2, .min_evidence = 16,
		.probe_every = 4,
	};
}

/* o initialised with online_cfg(k_start); returns that config for tests that vary it. */
static struct sel_online_config online_start(struct sel_online *o, uint32_t k_start)
{
	struct sel_online_config cfg = online_cfg(k_start);
	struct specd_error err;
	assert_int_equal(sel_online_init(o, &cfg, &err), SPECD_OK);
	return cfg;
}

/* The K sel_predict rates best for method m at acceptance a (the answer the online K
 * should reach), and its tokens/s in *tps. */
static uint32_t best_k_of(const struct sel_inputs *in, enum draft_method m, double a,
			  double *tps)
{
	struct sel_inputs now = *in;
	now.methods[m].acceptance = a > 1e-9 ? a : 1e-9; /* 0: the prior */
	uint32_t best = 0;
	double top = sel_predict(&now, m, 0, SEL_TRANSPORT_GREEDY).tokens_per_s;
	for (uint32_t k = 1; k <= now.k_max; k++) {
		double t = sel_predict(&now, m, k, SEL_TRANSPORT_GREEDY).tokens_per_s;
		if (t > top) {
			top = t;
			best = k;
		}
	}
	if (tps)
		*tps = top;
	return best;
}

static uint32_t best_k_for(const struct sel_inputs *in, double a)
{
	return best_k_of(in, DRAFT_METHOD_DRAFT_MODEL, a, NULL);
}

/* A small deterministic generator, so every run sees the same "random" acceptance. */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (double)(g_rng >> 11) / 9007199254740992.0;
}

/* Runs `steps` steps of one sequence drafting with the online method and K (a probe's
 * when it is one), each draft of method m kept with probability a[m] (the next only if
 * the one before was kept); returns how many times the method or K moved. */
static uint64_t run_methods(struct sel_online *o, const struct sel_inputs *in,
			    const double *a, uint32_t steps)
{
	uint64_t before = o->changes;
	for (uint32_t s = 0; s < steps; s++) {
		enum draft_method m;
		uint32_t k, kept = 0;
		sel_online_next(o, &m, &k);
		while (kept < k && uniform() < a[m])
			kept++;
		sel_online_observe(o, m, k, kept);
		sel_online_step(o, in);
	}
	return o->changes - before;
}

/* run_methods with the draft model's acceptance a (the one method of online_cfg). */
static uint64_t run(struct sel_online *o, const struct sel_inputs *in, double a, uint32_t steps)
{
	double all[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_DRAFT_MODEL] = a};
	return run_methods(o, in, all, steps);
}

static void test_accept__positions_after_a_rejection_are_not_judged(void **state)
{
	(void)state;
	struct sel_accept a;
	memset(&a, 0, sizeof(a));
	sel_accept_observe(&a, 4, 1, 1.0); /* 1 kept, 2 rejected, 3 and 4 never judged */
	sel_accept_observe(&a, 4, 4, 1.0);
	sel_accept_observe(&a, 2, 0, 1.0);
	assert_float_equal(a.tries[0], 3, 1e-12);
	assert_float_equal(a.hits[0], 2, 1e-12);
	assert_float_equal(a.tries[1], 2, 1e-12);
	assert_float_equal(a.hits[1], 1, 1e-12);
	assert_float_equal(a.tries[2], 1, 1e-12);
	assert_float_equal(a.tries[4], 0, 1e-12);
	/* No prior weight: the raw rate; some: shrunk towards the prior. */
	assert_float_equal(sel_accept_rate(&a, 1, 0.5, 0), 2.0 / 3.0, 1e-12);
	assert_float_equal(sel_accept_rate(&a, 1, 0.5, 3), (2 + 1.5) / 6.0, 1e-12);
	/* Unjudged: like the position before. */
	assert_float_equal(sel_accept_rate(&a, 5, 0.7, 8), sel_accept_rate(&a, 4, 0.7, 8), 1e-12);
	assert_float_equal(sel_accept_rate(&a, 2, 0.7, 8),
			   (1 + 8 * ((2 + 8 * 0.7) / 11.0)) / 10.0, 1e-12);
	assert_float_equal(sel_accept_per_token(&a, 0.5, 0), 5.0 / 7.0, 1e-12);
	assert_float_equal(sel_accept_evidence(&a), 3, 1e-12);
	/* Decay: old evidence fades, so the rate follows a change. */
	struct sel_accept d;
	memset(&d, 0, sizeof(d));
	for (int i = 0; i < 200; i++)
		sel_accept_observe(&d, 1, 1, 0.9);
	for (int i = 0; i < 60; i++)
		sel_accept_observe(&d, 1, 0, 0.9);
	assert_true(sel_accept_rate(&d, 1, 0.5, 0) < 0.01);
	assert_true(sel_accept_evidence(&d) < 10.0 + 1e-9);
}

static void test_online__converges_to_the_predicted_k_and_follows_a_change(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	struct sel_online o;
	online_start(&o, 2);

	/* A workload the draft model predicts well: K rises to what the model rates best. */
	uint32_t want_high = best_k_for(&in, 0.9);
	assert_true(want_high >= 5);
	run(&o, &in, 0.9, 2000);
	assert_true(o.k + 1 >= want_high && o.k <= want_high + 1);
	assert_true(o.changes >= 1);
	assert_non_null(strstr(o.last_change, "K 2 -> "));

	/* Then one where its drafts are never kept: K falls to plain decoding. (Near
	 * a = 0.15 one draft and none are predicted within the margin: K may rest at 1.) */
	uint32_t want_low = best_k_for(&in, 0.0);
	assert_int_equal(want_low, 0);
	run(&o, &in, 0.0, 2000);
	assert_int_equal(o.k, want_low);
	assert_non_null(strstr(o.last_change, "-> 0"));
}

static void test_online__stable_acceptance_does_not_flap(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	struct sel_online o;
	struct sel_online_config cfg = online_start(&o, 4);
	/* Acceptance where neighbouring Ks are predicted within a few percent: noise
	 * must not move K back and forth once it has settled. */
	run(&o, &in, 0.7, 1000);
	uint64_t settled = run(&o, &in, 0.7, 6000);
	assert_true(settled <= 2);

	/* Without hysteresis the same noise moves it more (the margin is what holds it). */
	struct sel_online loose;
	struct specd_error err;
	cfg.hysteresis = 0;
	assert_int_equal(sel_online_init(&loose, &cfg, &err), SPECD_OK);
	g_rng = 0x9e3779b97f4a7c15ull;
	run(&loose, &in, 0.7, 1000);
	uint64_t loose_moves = run(&loose, &in, 0.7, 6000);
	assert_true(loose_moves > settled);
}

static void test_online__little_evidence_keeps_k(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	struct sel_online o;
	struct specd_error err;
	struct sel_online_config cfg = online_cfg(6);
	cfg.min_evidence = 1000;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_OK);
	run(&o, &in, 0.05, 200); /* decayed evidence stays far below 1000 */
	assert_int_equal(o.k, 6);
	assert_int_equal(o.changes, 0);
	assert_true(o.decisions >= 10);
	assert_true(o.acceptance < 0.3);
}

static void test_online__a_stopped_method_is_probed_and_comes_back(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	struct sel_online o;
	online_start(&o, 3);
	run(&o, &in, 0.05, 800);
	assert_int_equal(o.k, 0);
	assert_true(o.k_probe >= 1); /* the last K above 0 */

	/* Stopped: every probe_every re-decisions the next step is a probe. */
	uint32_t probes = 0;
	for (uint32_t s = 0; s < 16 * 4 * 5; s++) {
		if (o.probe_now) {
			probes++;
			sel_online_observe(&o, o.probe_method, o.k_probe, 0);
		}
		sel_online_step(&o, &in);
	}
	assert_int_equal(probes, 5);
	assert_int_equal(o.k, 0);

	/* The workload changes: the probes see it and speculation comes back. */
	run(&o, &in, 0.95, 16 * 4 * 60);
	assert_true(o.k >= 3);
}

/* A sequence starts from the cluster's rates and moves to its own within a few steps: a
 * prose request on a cluster whose other sequences draft code well. */
static void test_online__a_sequence_leaves_the_cluster_rate_quickly(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	struct sel_online o;
	online_start(&o, 4);
	for (int i = 0; i < 200; i++)
		sel_online_observe(&o, DRAFT_METHOD_DRAFT_MODEL, 4, 4);
	struct sel_accept fresh, prose;
	memset(&fresh, 0, sizeof(fresh));
	memset(&prose, 0, sizeof(prose));
	double r[4];
	sel_online_job_rates(&o, &in, &fresh, 4, r);
	assert_true(r[0] > 0.9 && r[3] > 0.9);
	for (int i = 0; i < 5; i++)
		sel_accept_observe(&prose, 4, 0, 0.99);
	sel_online_job_rates(&o, &in, &prose, 4, r);
	assert_true(r[0] < 0.35); /* 5 rejections against the cluster's weight of 2 */
}

static void test_online__bad_config(void **state)
{
	(void)state;
	struct sel_online o;
	struct specd_error err;
	struct sel_online_config cfg = online_cfg(2);
	cfg.method = DRAFT_METHOD_NONE;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	cfg = online_cfg(9);
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "K 9 of at most 8"));
	cfg = online_cfg(2);
	cfg.interval = 0;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	cfg = online_cfg(2);
	cfg.hysteresis = NAN;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	cfg = online_cfg(2);
	cfg.decay = 0;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	cfg = online_cfg(2);
	cfg.methods = 1u << DRAFT_METHOD_NONE;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "methods 0x1"));
}

/* Prompt lookup (nearly free to draft) and the draft model of leader_draft, both held,
 * starting with prompt lookup at K 2. */
static struct sel_inputs two_methods(struct sel_online *o)
{
	struct sel_inputs in = leader_draft();
	sel_fx_method(&in, DRAFT_METHOD_NGRAM, 0.02e-3, 0.01e-3);
	struct sel_online_config cfg = online_cfg(2);
	cfg.method = DRAFT_METHOD_NGRAM;
	cfg.methods = 1u << DRAFT_METHOD_DRAFT_MODEL;
	struct specd_error err;
	assert_int_equal(sel_online_init(o, &cfg, &err), SPECD_OK);
	return in;
}

/* Fed a workload where the draft model is right far more often than prompt lookup, the
 * online selector moves to it (which the probes measure while prompt lookup runs) at
 * the K the cost model rates best for it; when the workload turns to one prompt lookup
 * predicts (code it can copy), it moves back. */
static void test_online__converges_to_the_right_method_and_k(void **state)
{
	(void)state;
	struct sel_online o;
	struct sel_inputs in = two_methods(&o);
	double dm_tps, ng_tps;
	double prose[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_NGRAM] = 0.15,
					   [DRAFT_METHOD_DRAFT_MODEL] = 0.85};
	uint32_t want = best_k_of(&in, DRAFT_METHOD_DRAFT_MODEL, 0.85, &dm_tps);
	best_k_of(&in, DRAFT_METHOD_NGRAM, 0.15, &ng_tps);
	assert_true(dm_tps > 1.2 * ng_tps); /* the right answer is clear */
	run_methods(&o, &in, prose, 3000);
	assert_int_equal(o.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_true(o.k + 1 >= want && o.k <= want + 1);
	assert_non_null(strstr(o.last_change, "draft_model K"));

	double code[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_NGRAM] = 0.95,
					  [DRAFT_METHOD_DRAFT_MODEL] = 0.85};
	want = best_k_of(&in, DRAFT_METHOD_NGRAM, 0.95, &ng_tps);
	best_k_of(&in, DRAFT_METHOD_DRAFT_MODEL, 0.85, &dm_tps);
	assert_true(ng_tps > 1.2 * dm_tps);
	run_methods(&o, &in, code, 6000);
	assert_int_equal(o.method, DRAFT_METHOD_NGRAM);
	assert_true(o.k + 1 >= want && o.k <= want + 1);
}

/* Two methods predicted within a few percent of each other: once settled, noise does
 * not switch back and forth between them. */
static void test_online__close_methods_do_not_flap(void **state)
{
	(void)state;
	struct sel_online o;
	struct sel_inputs in = two_methods(&o);
	/* find the draft model's acceptance whose best is closest to prompt lookup's at 0.6 */
	double ng_tps, dm_tps, a_dm = 0.5, gap = 1e9;
	best_k_of(&in, DRAFT_METHOD_NGRAM, 0.6, &ng_tps);
	for (double a = 0.3; a < 0.99; a += 0.01) {
		best_k_of(&in, DRAFT_METHOD_DRAFT_MODEL, a, &dm_tps);
		if (fabs(dm_tps / ng_tps - 1.0) < gap) {
			gap = fabs(dm_tps / ng_tps - 1.0);
			a_dm = a;
		}
	}
	assert_true(gap < 0.03);
	double rates[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_NGRAM] = 0.6,
					   [DRAFT_METHOD_DRAFT_MODEL] = a_dm};
	run_methods(&o, &in, rates, 2000);
	uint64_t switches = 0;
	enum draft_method was = o.method;
	for (int i = 0; i < 60; i++) {
		run_methods(&o, &in, rates, 100);
		switches += o.method != was;
		was = o.method;
	}
	assert_true(switches <= 2);
}

/* While one held method runs, the other is probed at every re-decision until it has
 * min_evidence proposals of its own, then every probe_every re-decisions (the count
 * restarts when the choice moves), with the K the cost model would give it; its
 * proposals feed its own estimate only. */
static void test_online__a_held_method_that_is_not_running_is_probed(void **state)
{
	(void)state;
	struct sel_online o;
	struct sel_inputs in = two_methods(&o);
	uint32_t probes = 0, late = 0, steps = 16 * 4 * 16; /* 64 re-decisions */
	for (uint32_t s = 0; s < steps; s++) {
		enum draft_method m;
		uint32_t k;
		sel_online_next(&o, &m, &k);
		if (o.probe_now) {
			probes++;
			late += s >= steps / 2;
			assert_int_equal(m, DRAFT_METHOD_DRAFT_MODEL);
			assert_true(k >= 1);
		} else {
			assert_int_equal(m, DRAFT_METHOD_NGRAM);
		}
		/* prompt lookup keeps everything, the draft model nothing: no switch */
		sel_online_observe(&o, m, k, m == DRAFT_METHOD_NGRAM ? k : 0);
		sel_online_step(&o, &in);
	}
	/* 20 eager probes (at decay 0.98, the 20th brings the decayed evidence past 16),
	 * then about one per 4 re-decisions; in the second half, only those */
	assert_true(probes >= 20 + 8 && probes <= 20 + 13);
	assert_true(late >= 6 && late <= 9);
	assert_int_equal(o.method, DRAFT_METHOD_NGRAM);
	assert_true(o.cluster[DRAFT_METHOD_DRAFT_MODEL].tries[0] > 5);
	assert_float_equal(o.cluster[DRAFT_METHOD_DRAFT_MODEL].hits[0], 0, 1e-12);
	assert_true(o.cluster[DRAFT_METHOD_NGRAM].hits[0] > 40); /* 50 at decay 0.98 */
}

/* Sampling jobs with a draft rank across a 400 Mb/s link: prompt lookup runs (no q), the
 * draft model is held. The draft model ships whole q rows of a 128k vocabulary when it
 * runs, which costs more than its better acceptance buys: the online selector must cost
 * it so, and stay with prompt lookup (it used to cost it with prompt lookup's token
 * ids only, and move). */
static void test_online__a_held_method_is_costed_with_its_own_transport(void **state)
{
	(void)state;
	struct sel_inputs in = sel_fx_inputs(8, 0.020, 0.001, 4096);
	in.n_vocab = 128256;
	in.sampling = true;
	in.dedicated_draft = true;
	in.ngram_in_leader = true;
	in.transport_built[SEL_TRANSPORT_FULL] = true;
	in.link = (struct sel_link){.measured = true, .latency_s = 50e-6, .bandwidth = 50e6};
	sel_fx_method(&in, DRAFT_METHOD_NGRAM, 0.02e-3, 0.01e-3);
	sel_fx_method(&in, DRAFT_METHOD_DRAFT_MODEL, 0.2e-3, 1e-3);
	double rates[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_NGRAM] = 0.45,
					   [DRAFT_METHOD_DRAFT_MODEL] = 0.8};
	assert_int_equal(sel_method_transport(&in, DRAFT_METHOD_NGRAM), SEL_TRANSPORT_GREEDY);
	assert_int_equal(sel_method_transport(&in, DRAFT_METHOD_DRAFT_MODEL), SEL_TRANSPORT_FULL);
	/* The premise: on token ids the draft model would win clearly; on q rows it loses. */
	double ng, dm_ids = 0, dm_q = 0;
	best_k_of(&in, DRAFT_METHOD_NGRAM, 0.45, &ng);
	struct sel_inputs now = in;
	now.methods[DRAFT_METHOD_DRAFT_MODEL].acceptance = 0.8;
	for (uint32_t k = 1; k <= in.k_max; k++) {
		double ids = sel_predict(&now, DRAFT_METHOD_DRAFT_MODEL, k, SEL_TRANSPORT_GREEDY)
				     .tokens_per_s;
		double q = sel_predict(&now, DRAFT_METHOD_DRAFT_MODEL, k, SEL_TRANSPORT_FULL)
				   .tokens_per_s;
		dm_ids = ids > dm_ids ? ids : dm_ids;
		dm_q = q > dm_q ? q : dm_q;
	}
	print_message("prompt lookup %.1f, draft model %.1f on ids, %.1f on q rows tokens/s\n",
		      ng, dm_ids, dm_q);
	assert_true(dm_ids > 1.1 * ng && ng > 1.1 * dm_q);

	struct sel_online o;
	struct sel_online_config cfg = online_cfg(2);
	cfg.method = DRAFT_METHOD_NGRAM;
	cfg.methods = 1u << DRAFT_METHOD_DRAFT_MODEL;
	struct specd_error err;
	assert_int_equal(sel_online_init(&o, &cfg, &err), SPECD_OK);
	run_methods(&o, &in, rates, 3000);
	assert_int_equal(o.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(o.changes == 0 || strstr(o.last_change, "draft_model") == NULL, 1);
}

/* A held method's prior alone cannot win it the cluster: at the first re-decision the
 * draft model (prior 0.7, far better than prompt lookup's measured 0.2) has no
 * proposals of its own yet, so it is probed, not switched to. */
static void test_online__a_held_method_needs_evidence_to_take_over(void **state)
{
	(void)state;
	struct sel_online o;
	struct sel_inputs in = two_methods(&o);
	double ng, dm;
	best_k_of(&in, DRAFT_METHOD_NGRAM, 0.18, &ng);
	best_k_of(&in, DRAFT_METHOD_DRAFT_MODEL, sel_acceptance_prior(DRAFT_METHOD_DRAFT_MODEL),
		  &dm);
	assert_true(dm > 1.3 * ng); /* the prior predicts a clear win */
	/* 16 sequences a step, so prompt lookup's own estimate is sure of itself */
	for (uint32_t step = 0; step < o.cfg.interval; step++) {
		for (uint32_t j = 0; j < 16; j++)
			sel_online_observe(&o, DRAFT_METHOD_NGRAM, 3, (step + j) % 5 == 0);
		sel_online_step(&o, &in);
	}
	assert_int_equal(o.decisions, 1);
	assert_int_equal(o.method, DRAFT_METHOD_NGRAM);
	assert_true(o.probe_now);
	/* and once its probes show it is right nowhere, it never takes over */
	double rates[DRAFT_METHOD_COUNT] = {[DRAFT_METHOD_NGRAM] = 0.18,
					   [DRAFT_METHOD_DRAFT_MODEL] = 0.0};
	run_methods(&o, &in, rates, 40 * o.cfg.interval);
	assert_int_equal(o.method, DRAFT_METHOD_NGRAM);
}

static struct sel_plan_job plan_job(uint32_t cap, double a)
{
	struct sel_plan_job j = {.cap = cap};
	for (uint32_t i = 0; i < SEL_K_MAX; i++)
		j.rate[i] = a;
	return j;
}

static void test_plan__one_sequence_takes_the_predicted_k(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	for (double a = 0.1; a < 0.96; a += 0.1) {
		struct sel_plan_job j = plan_job(8, a);
		uint32_t k = 99;
		sel_plan_batch(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY, &j, 1, &k);
		if (k != best_k_for(&in, a))
			fail_msg("acceptance %.1f: planned K %u, predicted best %u", a, k,
				 best_k_for(&in, a));
	}
	/* The cap binds. */
	struct sel_plan_job j = plan_job(2, 0.95);
	uint32_t k = 99;
	sel_plan_batch(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY, &j, 1, &k);
	assert_int_equal(k, 2);
}

static void test_plan__large_batch_turns_speculation_off(void **state)
{
	(void)state;
	/* Prompt lookup in the leader (nearly free to draft), a target whose forward is
	 * memory-bound for a few rows and compute-bound past them: 20 ms + 0.2 ms a row
	 * measured up to 9 rows, then 4 ms a row, as a CPU's batched forward is. */
	struct sel_inputs in = leader_draft();
	for (uint32_t n = 1; n <= 9; n++)
		in.t_verify_s[n] = 0.020 + 0.0002 * (n - 1);
	sel_fx_method(&in, DRAFT_METHOD_NGRAM, 10e-6, 2e-6);

	struct sel_plan_job jobs[16];
	uint32_t k[16];
	for (int i = 0; i < 16; i++)
		jobs[i] = plan_job(4, 0.6);
	/* Alone, a sequence drafts. */
	sel_plan_batch(&in, DRAFT_METHOD_NGRAM, SEL_TRANSPORT_GREEDY, jobs, 1, k);
	assert_true(k[0] >= 3);
	/* Sixteen sequences: past the measured rows the slope is the last one measured,
	 * still cheap, so each still drafts. */
	sel_plan_batch(&in, DRAFT_METHOD_NGRAM, SEL_TRANSPORT_GREEDY, jobs, 16, k);
	for (int i = 0; i < 16; i++)
		assert_true(k[i] >= 1);
	/* Measured compute-bound (each row as dear as a step's worth of tokens): off. */
	for (uint32_t n = 1; n <= 9; n++)
		in.t_verify_s[n] = 0.004 * n;
	sel_plan_batch(&in, DRAFT_METHOD_NGRAM, SEL_TRANSPORT_GREEDY, jobs, 16, k);
	for (int i = 0; i < 16; i++)
		assert_int_equal(k[i], 0);
}

static void test_plan__drafts_go_where_they_are_accepted(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	/* Rows cost 5 ms each: drafts must earn their row. */
	for (uint32_t n = 1; n <= 9; n++)
		in.t_verify_s[n] = 0.020 + 0.005 * (n - 1);
	struct sel_plan_job jobs[3] = {plan_job(6, 0.95), plan_job(6, 0.15), plan_job(0, 0.95)};
	uint32_t k[3];
	sel_plan_batch(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY, jobs, 3, k);
	assert_true(k[0] >= 2);
	assert_int_equal(k[1], 0);
	assert_int_equal(k[2], 0); /* cap 0: a plain job */

	/* A falling rate per position stops the chain where it stops paying. */
	struct sel_plan_job fall = plan_job(8, 0.9);
	for (uint32_t i = 2; i < SEL_K_MAX; i++)
		fall.rate[i] = 0.05;
	uint32_t kf;
	sel_plan_batch(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY, &fall, 1, &kf);
	assert_int_equal(kf, 2);

	/* Nothing measured: the caps, unplanned. */
	in.calibrated = false;
	sel_plan_batch(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY, jobs, 3, k);
	assert_int_equal(k[0], 6);
	assert_int_equal(k[1], 6);
	assert_int_equal(k[2], 0);
}

static void test_plan__batch_step_time_of_one_is_the_step_time(void **state)
{
	(void)state;
	struct sel_inputs in = leader_draft();
	in.dedicated_draft = true;
	in.link = (struct sel_link){.measured = true, .latency_s = 1e-3, .bandwidth = 1e8};
	uint32_t k = 4;
	assert_float_equal(sel_batch_step_time(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY,
					       &k, 1, 0.7),
			   sel_step_time(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_GREEDY, 0.7),
			   1e-15);
	/* Two sequences: one drafting pass and one round trip, rows added up. */
	uint32_t two[2] = {4, 2};
	double want = 0.5e-3 + 4 * 2e-3 + 2 * 1e-3 +
		      (sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_GREEDY, 0.7) +
		       sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 2, SEL_TRANSPORT_GREEDY, 0.7)) / 1e8 +
		      sel_verify_time(&in, 8);
	assert_float_equal(sel_batch_step_time(&in, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY,
					       two, 2, 0.7), want, 1e-12);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept__positions_after_a_rejection_are_not_judged),
		cmocka_unit_test(test_online__converges_to_the_predicted_k_and_follows_a_change),
		cmocka_unit_test(test_online__stable_acceptance_does_not_flap),
		cmocka_unit_test(test_online__little_evidence_keeps_k),
		cmocka_unit_test(test_online__a_stopped_method_is_probed_and_comes_back),
		cmocka_unit_test(test_online__a_sequence_leaves_the_cluster_rate_quickly),
		cmocka_unit_test(test_online__bad_config),
		cmocka_unit_test(test_online__converges_to_the_right_method_and_k),
		cmocka_unit_test(test_online__close_methods_do_not_flap),
		cmocka_unit_test(test_online__a_held_method_that_is_not_running_is_probed),
		cmocka_unit_test(test_online__a_held_method_is_costed_with_its_own_transport),
		cmocka_unit_test(test_online__a_held_method_needs_evidence_to_take_over),
		cmocka_unit_test(test_plan__one_sequence_takes_the_predicted_k),
		cmocka_unit_test(test_plan__large_batch_turns_speculation_off),
		cmocka_unit_test(test_plan__drafts_go_where_they_are_accepted),
		cmocka_unit_test(test_plan__batch_step_time_of_one_is_the_step_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
