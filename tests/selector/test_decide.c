/* selector/decide.c and cost_model.c: whole clusters injected as figures (census,
 * link probes, calibration), each scenario asserting the choice and the reason given
 * for it; and the origin rule table as the decision before anything is measured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sel_fixture.h"
#include "selector/selector.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)

/* A fast pair of ranks: a 20 ms target step (+1 ms a token), a draft model at 2 ms a
 * token on its own rank over a 10 GB/s, 5 us link, prompt lookup nearly free. */
static struct sel_inputs base(void)
{
	struct sel_inputs in = sel_fx_inputs(8, 0.020, 0.001, 4096);
	in.dedicated_draft = true;
	for (int t = 0; t < SEL_TRANSPORT_COUNT; t++)
		in.transport_built[t] = true;
	in.draft_memory_free = 16 * GIB;
	in.link = (struct sel_link){.measured = true, .latency_s = 5e-6, .bandwidth = 10e9};
	sel_fx_method(&in, DRAFT_METHOD_NGRAM, 10e-6, 2e-6);
	sel_fx_method(&in, DRAFT_METHOD_DRAFT_MODEL, 0.5e-3, 2e-3);
	in.methods[DRAFT_METHOD_DRAFT_MODEL].memory_bytes = 1 * GIB;
	return in;
}

static struct sel_decision decide(const struct sel_inputs *in)
{
	struct sel_decision d;
	memset(&d, 0, sizeof(d));
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(sel_decide(in, &d, &err), SPECD_OK);
	return d;
}

/* The reason containing `needle`, failing the test when there is none. */
static const char *reason(const struct sel_decision *d, const char *needle)
{
	for (uint32_t i = 0; i < d->n_reasons; i++)
		if (strstr(d->reasons[i], needle))
			return d->reasons[i];
	for (uint32_t i = 0; i < d->n_reasons; i++)
		print_message("  reason: %s\n", d->reasons[i]);
	fail_msg("no reason mentions '%s'", needle);
	return NULL;
}

static const struct sel_candidate *row(const struct sel_decision *d, enum draft_method m,
				       enum sel_transport t)
{
	for (uint32_t i = 0; i < d->n_candidates; i++)
		if (d->candidates[i].method == m && d->candidates[i].transport == t)
			return &d->candidates[i];
	fail_msg("no row for %s/%s", draft_method_name(m), sel_transport_name(t));
	return NULL;
}

static void test_cost__expected_tokens(void **state)
{
	(void)state;
	assert_float_equal(sel_expected_tokens(0.5, 3), 1.875, 1e-12);
	assert_float_equal(sel_expected_tokens(1.0, 4), 5.0, 1e-12);
	assert_float_equal(sel_expected_tokens(0.0, 4), 1.0, 1e-12);
	assert_float_equal(sel_expected_tokens(0.8, 0), 1.0, 1e-12);
}

static void test_cost__verify_time_interpolates_missing_sizes(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	memset(in.t_verify_s, 0, sizeof(in.t_verify_s));
	in.t_verify_s[1] = 0.010;
	in.t_verify_s[9] = 0.018;
	assert_float_equal(sel_verify_time(&in, 5), 0.014, 1e-12);
	assert_float_equal(sel_verify_time(&in, 1), 0.010, 1e-12);
	/* past the last measured size: the last slope */
	in.k_max = 10;
	assert_float_equal(sel_verify_time(&in, 11), 0.020, 1e-12);
}

static void test_cost__tp_scaling_adds_two_allreduces_a_layer(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	struct sel_link ar = {.measured = true, .latency_s = 1e-5, .bandwidth = 1e9};
	sel_scale_for_tp(&in, 2, 10, &ar);
	/* 20 ms / 2 + 20 x (10 us + 4096 x 4 B / 1 GB/s) */
	assert_float_equal(in.t_verify_s[1], 0.010 + 20 * (1e-5 + 16384.0 / 1e9), 1e-12);
}

static void test_cost__link_bytes_by_transport(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	double greedy = sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_FULL, 0.7);
	in.sampling = true;
	double full = sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_FULL, 0.7);
	double topk = sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_TOPK, 0.7);
	/* greedy jobs never ship q; sampling ones ship K rows of the vocabulary */
	assert_float_equal(full - greedy, 4.0 * 32000 * 4, 1e-6);
	assert_float_equal(topk - greedy, 4.0 * SEL_TOPK_ENTRIES * 8, 1e-6);
	/* prompt lookup's q is one-hot: never shipped */
	assert_float_equal(sel_link_bytes(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_FULL, 0.5),
			   greedy, 1e-6);
	in.dedicated_draft = false;
	assert_float_equal(sel_link_bytes(&in, DRAFT_METHOD_DRAFT_MODEL, 4, SEL_TRANSPORT_FULL, 0.7),
			   0.0, 0);
}

static void test_cost__prompt_lookup_in_the_leader_crosses_no_link(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	double over_link = sel_step_time(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_GREEDY, 0.5);
	in.ngram_in_leader = true;
	assert_true(sel_crosses_link(&in, DRAFT_METHOD_DRAFT_MODEL));
	assert_false(sel_crosses_link(&in, DRAFT_METHOD_NGRAM));
	assert_float_equal(sel_link_bytes(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_GREEDY, 0.5),
			   0.0, 0);
	double local = sel_step_time(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_GREEDY, 0.5);
	/* the same step as a cluster without a draft rank: no round trip, no pipelining */
	in.dedicated_draft = false;
	assert_float_equal(local, sel_step_time(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_GREEDY,
						0.5), 1e-15);
	assert_true(local < over_link);
	/* a far draft rank leaves prompt lookup as it is */
	in.dedicated_draft = true;
	in.link.latency_s = 0.1;
	assert_float_equal(sel_step_time(&in, DRAFT_METHOD_NGRAM, 4, SEL_TRANSPORT_GREEDY, 0.5),
			   local, 1e-15);
}

static void test_decide__fast_link_picks_the_draft_model(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	struct sel_decision d = decide(&in);
	assert_true(d.measured);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_true(d.k >= 3 && d.k <= 8);
	assert_int_equal(d.transport, SEL_TRANSPORT_GREEDY);
	assert_true(d.speedup > 1.5);
	reason(&d, "chosen: draft_model K");
	reason(&d, "next best: ngram");
	/* the baseline is reported, and beaten */
	reason(&d, "the origin rule table would run ngram K 5");
	assert_true(d.tokens_per_s > row(&d, DRAFT_METHOD_NGRAM, SEL_TRANSPORT_GREEDY)->tokens_per_s);
}

static void test_decide__nothing_measured_uses_the_rule_table(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.calibrated = false;
	in.link.measured = false;
	struct sel_decision d = decide(&in);
	assert_false(d.measured);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(d.k, 5);
	reason(&d, "nothing measured yet: the origin rule table decides (default)");
	/* its default rule's prompt lookup: n-grams up to 4 (the minimum left as it is) */
	assert_int_equal(d.lookup_min, 0);
	assert_int_equal(d.lookup_max, 4);
	reason(&d, "n-grams of 2 to 4 tokens, as the rule says");
	/* its low-memory rule: 2 to 5 */
	in.low_memory = true;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(d.lookup_min, 2);
	assert_int_equal(d.lookup_max, 5);
	in.low_memory = false;
	/* the table's draft-model rule, when the floor is above 2: no n-gram lengths */
	in.target_speedup = 2.2;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_int_equal(d.lookup_max, 0);
	reason(&d, "target_speedup > 2 and a draft model is available");
	/* ngram forced where the rule picks the draft model: the rule says no lengths */
	in.method_forced = true;
	in.method = DRAFT_METHOD_NGRAM;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(d.lookup_max, 0);
	in.method_forced = false;
	/* K is clamped to what the cluster allows */
	in.k_max = 3;
	assert_int_equal(decide(&in).k, 3);
}

static void test_decide__rule_table_skips_a_draft_model_that_does_not_fit(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.calibrated = false;
	in.target_speedup = 2.2;
	in.draft_memory_free = 512 * MIB;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	reason(&d, "(default)");
	assert_non_null(strstr(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->excluded,
			       "the draft rank has 512 MiB free"));
}

static void test_decide__no_memory_for_the_draft_model(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.draft_memory_free = 512 * MIB;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	reason(&d, "chosen: ngram K");
	assert_string_equal(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->excluded,
			    "needs 1024 MiB; the draft rank has 512 MiB free");
}

static void test_decide__max_draft_memory_caps_the_drafter(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.max_draft_memory = 256 * MIB;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_string_equal(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->excluded,
			    "needs 1024 MiB; constraints.max_draft_memory is 256 MiB");
}

static void test_decide__eagle_heads_missing_then_present(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	struct sel_method_in *e = &in.methods[DRAFT_METHOD_EAGLE];
	e->built = true;
	e->t_draft_fixed_s = 0.2e-3;
	e->t_draft_token_s = 0.5e-3;
	e->memory_bytes = 600 * MIB;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_string_equal(row(&d, DRAFT_METHOD_EAGLE, SEL_TRANSPORT_GREEDY)->excluded,
			    "not configured (speculation.eagle.heads is unset)");
	/* with heads: cheaper per token and a higher prior than the draft model */
	e->configured = true;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_EAGLE);
	reason(&d, "chosen: eagle K");
	reason(&d, "next best: draft_model");
	/* heads that do not match the target */
	snprintf(e->incompatible, sizeof(e->incompatible), "hidden size 2048, the target's 4096");
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_string_equal(row(&d, DRAFT_METHOD_EAGLE, SEL_TRANSPORT_GREEDY)->excluded,
			    "incompatible with the target: hidden size 2048, the target's 4096");
}

static void test_decide__no_drafter_built_is_excluded(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.methods[DRAFT_METHOD_MEDUSA].configured = true;
	struct sel_decision d = decide(&in);
	assert_string_equal(row(&d, DRAFT_METHOD_MEDUSA, SEL_TRANSPORT_GREEDY)->excluded,
			    "no medusa drafter in this build");
}

static void test_decide__low_memory_rules_out_weights(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.low_memory = true;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_string_equal(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->excluded,
			    "constraints.low_memory rules out extra weights");
	reason(&d, "chosen: ngram");
}

static void test_decide__forced_method_wins_over_a_better_one(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.method_forced = true;
	in.method = DRAFT_METHOD_NGRAM;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	reason(&d, "speculation.method forces ngram");
	assert_string_equal(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->excluded,
			    "speculation.method forces ngram");
	assert_string_equal(row(&d, DRAFT_METHOD_NONE, SEL_TRANSPORT_GREEDY)->excluded,
			    "speculation.method forces ngram");
	/* forced none: plain decoding, K 0 */
	in.method = DRAFT_METHOD_NONE;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NONE);
	assert_int_equal(d.k, 0);
	reason(&d, "chosen: plain decoding");
}

static void test_decide__forced_k(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.k_forced = 2;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_int_equal(d.k, 2);
	reason(&d, "speculation.num_speculative_tokens forces K 2");
}

static void test_decide__target_speedup_floor(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.target_speedup = 1.5;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	reason(&d, "constraints.target_speedup 1.50 is predicted to be reached");
	/* a floor nothing reaches: the best is taken all the same, and it says so */
	in.target_speedup = 10;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	reason(&d, "no option is predicted to reach constraints.target_speedup 10.00: "
		   "taking the best");
}

static void test_decide__slow_link_ships_greedy_not_q_rows(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.sampling = true;
	in.n_vocab = 151936;
	in.transport_built[SEL_TRANSPORT_TOPK] = false;
	in.methods[DRAFT_METHOD_DRAFT_MODEL].acceptance = 0.85;
	/* fast link: whole q rows are cheap, and keep the acceptance */
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_int_equal(d.transport, SEL_TRANSPORT_FULL);
	assert_string_equal(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_TOPK)->excluded,
			    "the runtime cannot ship topk q yet");
	/* 1 Gb/s: a K x 152k-float reply costs more than the acceptance it buys */
	in.link = (struct sel_link){.measured = true, .latency_s = 50e-6, .bandwidth = 125e6};
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_int_equal(d.transport, SEL_TRANSPORT_GREEDY);
	reason(&d, "full q rows would move");
	reason(&d, "greedy wins");
	/* top-k, when the runtime ships it, is the best of both */
	in.transport_built[SEL_TRANSPORT_TOPK] = true;
	d = decide(&in);
	assert_int_equal(d.transport, SEL_TRANSPORT_TOPK);
	reason(&d, "topk wins");
}

static void test_decide__draft_rank_slower_than_the_target(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.methods[DRAFT_METHOD_DRAFT_MODEL].t_draft_token_s = 0.030;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	reason(&d, "draft_model drafts a token in 30.00 ms, the target verifies one in 20.00 ms: "
		   "the drafter is slower than the target");
	assert_true(row(&d, DRAFT_METHOD_DRAFT_MODEL, SEL_TRANSPORT_GREEDY)->speedup < 1.0);
}

static void test_decide__high_latency_link_means_plain_decoding(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	/* 30 ms each way: every proposal costs more than a whole target step */
	in.link = (struct sel_link){.measured = true, .latency_s = 0.030, .bandwidth = 125e6};
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NONE);
	assert_int_equal(d.k, 0);
	reason(&d, "chosen: plain decoding, 50.0 tokens/s predicted: no method is predicted "
		   "to beat it");
	/* in the leader there is no link to pay */
	in.dedicated_draft = false;
	in.link.measured = false;
	d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_DRAFT_MODEL);
	reason(&d, "chosen: draft_model");
}

static void test_decide__pipelining_hides_drafting(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.methods[DRAFT_METHOD_DRAFT_MODEL].acceptance = 0.9;
	struct sel_decision off = decide(&in);
	in.pipeline = true;
	struct sel_decision on = decide(&in);
	assert_int_equal(on.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_true(on.tokens_per_s > off.tokens_per_s);
	/* sampling jobs are drafted on request: no overlap to count on */
	in.sampling = true;
	in.transport_built[SEL_TRANSPORT_TOPK] = false;
	struct sel_decision samp = decide(&in);
	assert_true(samp.tokens_per_s < on.tokens_per_s);
}

static void test_decide__measured_acceptance_replaces_the_prior(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.methods[DRAFT_METHOD_DRAFT_MODEL].acceptance = 0.2;
	in.methods[DRAFT_METHOD_NGRAM].acceptance = 0.9;
	struct sel_decision d = decide(&in);
	assert_int_equal(d.method, DRAFT_METHOD_NGRAM);
	assert_float_equal(row(&d, DRAFT_METHOD_NGRAM, SEL_TRANSPORT_GREEDY)->acceptance, 0.9, 1e-12);
	assert_int_equal(d.k, 8); /* nearly free drafts at 0.9: as many as allowed */
}

static void test_decide__bad_inputs_are_refused(void **state)
{
	(void)state;
	struct sel_decision d;
	memset(&d, 0x5a, sizeof(d));
	struct specd_error err;
	struct sel_inputs in = base();
	in.k_max = 0;
	assert_int_equal(sel_decide(&in, &d, &err), SPECD_INVAL);
	in = base();
	in.t_verify_s[1] = 0;
	assert_int_equal(sel_decide(&in, &d, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "1-token forward"));
	in = base();
	in.link.measured = false;
	assert_int_equal(sel_decide(&in, &d, &err), SPECD_INVAL);
	assert_int_equal(d.n_reasons, 0x5a5a5a5a); /* untouched on failure */
}

/* Drafting ahead on the draft rank (pipeline) is costed only for methods that can do it:
 * EAGLE and Medusa wait for the target's hidden states, so they never draft ahead. */
static void test_cost__no_pipelining_on_hidden_states(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	sel_fx_method(&in, DRAFT_METHOD_EAGLE, 0.5e-3, 6e-3);
	struct sel_inputs piped = in;
	piped.pipeline = true;
	double a = 0.7;
	for (uint32_t k = 1; k <= 4; k++) {
		assert_true(sel_step_time(&piped, DRAFT_METHOD_DRAFT_MODEL, k, SEL_TRANSPORT_GREEDY,
					  a) <
			    sel_step_time(&in, DRAFT_METHOD_DRAFT_MODEL, k, SEL_TRANSPORT_GREEDY,
					  a));
		assert_float_equal(sel_step_time(&piped, DRAFT_METHOD_EAGLE, k,
						 SEL_TRANSPORT_GREEDY, a),
				   sel_step_time(&in, DRAFT_METHOD_EAGLE, k, SEL_TRANSPORT_GREEDY, a),
				   1e-15);
	}
}

/* Past the last size timed, a forward never gets cheaper: noise that made the last
 * size look faster than the one before is not carried forward to zero and below. */
static void test_cost__verify_time_never_falls_past_the_last_timed(void **state)
{
	(void)state;
	struct sel_inputs in = base(); /* t[1..9] = 20 ms + 1 ms a row */
	in.t_verify_s[9] = in.t_verify_s[8] - 0.002;
	double last = in.t_verify_s[9];
	assert_float_equal(sel_verify_time(&in, 9), last, 1e-15);
	assert_true(sel_verify_time(&in, 10) >= last);
	assert_true(sel_verify_time(&in, 300) >= last);
}

/* A forced method with no transport the runtime can ship is an error, not a crash. */
static void test_decide__forced_method_without_a_transport(void **state)
{
	(void)state;
	struct sel_inputs in = base();
	in.sampling = true;
	in.method_forced = true;
	in.method = DRAFT_METHOD_DRAFT_MODEL;
	for (int t = 0; t < SEL_TRANSPORT_COUNT; t++)
		in.transport_built[t] = false;
	struct sel_decision d;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(sel_decide(&in, &d, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "the forced draft_model has no row left"));
}

/* The rule's n-gram lengths fill only what the cluster file leaves auto, and never
 * contradict what it gives. */
static void test_decide__lookup_lengths_given_win(void **state)
{
	(void)state;
	struct sel_decision d;
	memset(&d, 0, sizeof(d));
	d.lookup_max = 4; /* the default rule: up to 4, the minimum the drafter's */
	uint32_t lo, hi;
	sel_lookup_lengths(&d, 0, 0, &lo, &hi);
	assert_int_equal(lo, 0);
	assert_int_equal(hi, 4);
	sel_lookup_lengths(&d, 3, 0, &lo, &hi);
	assert_int_equal(lo, 3);
	assert_int_equal(hi, 4);
	sel_lookup_lengths(&d, 5, 0, &lo, &hi); /* a given 5 over the rule's 4 */
	assert_int_equal(lo, 5);
	assert_int_equal(hi, 5);
	sel_lookup_lengths(&d, 0, 7, &lo, &hi);
	assert_int_equal(lo, 0);
	assert_int_equal(hi, 7);
	d.lookup_min = 2; /* the low-memory rule: 2 to 5 */
	d.lookup_max = 5;
	sel_lookup_lengths(&d, 0, 1, &lo, &hi); /* a given 1 under the rule's 2 */
	assert_int_equal(lo, 1);
	assert_int_equal(hi, 1);
	memset(&d, 0, sizeof(d)); /* measured: the drafter's defaults */
	sel_lookup_lengths(&d, 0, 0, &lo, &hi);
	assert_int_equal(lo, 0);
	assert_int_equal(hi, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cost__expected_tokens),
		cmocka_unit_test(test_cost__verify_time_interpolates_missing_sizes),
		cmocka_unit_test(test_cost__tp_scaling_adds_two_allreduces_a_layer),
		cmocka_unit_test(test_cost__link_bytes_by_transport),
		cmocka_unit_test(test_cost__no_pipelining_on_hidden_states),
		cmocka_unit_test(test_cost__verify_time_never_falls_past_the_last_timed),
		cmocka_unit_test(test_decide__forced_method_without_a_transport),
		cmocka_unit_test(test_decide__lookup_lengths_given_win),
		cmocka_unit_test(test_cost__prompt_lookup_in_the_leader_crosses_no_link),
		cmocka_unit_test(test_decide__fast_link_picks_the_draft_model),
		cmocka_unit_test(test_decide__nothing_measured_uses_the_rule_table),
		cmocka_unit_test(test_decide__rule_table_skips_a_draft_model_that_does_not_fit),
		cmocka_unit_test(test_decide__no_memory_for_the_draft_model),
		cmocka_unit_test(test_decide__max_draft_memory_caps_the_drafter),
		cmocka_unit_test(test_decide__eagle_heads_missing_then_present),
		cmocka_unit_test(test_decide__no_drafter_built_is_excluded),
		cmocka_unit_test(test_decide__low_memory_rules_out_weights),
		cmocka_unit_test(test_decide__forced_method_wins_over_a_better_one),
		cmocka_unit_test(test_decide__forced_k),
		cmocka_unit_test(test_decide__target_speedup_floor),
		cmocka_unit_test(test_decide__slow_link_ships_greedy_not_q_rows),
		cmocka_unit_test(test_decide__draft_rank_slower_than_the_target),
		cmocka_unit_test(test_decide__high_latency_link_means_plain_decoding),
		cmocka_unit_test(test_decide__pipelining_hides_drafting),
		cmocka_unit_test(test_decide__measured_acceptance_replaces_the_prior),
		cmocka_unit_test(test_decide__bad_inputs_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
