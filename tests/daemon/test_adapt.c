/* daemon/adapt.c: when the online selector is on and why not, the cluster's K moving
 * with acceptance (logged, reported), each slot's own acceptance steering its K in the
 * engine's plan, probes while speculation is off, and a switch to a held method whose
 * probes are kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../selector/sel_fixture.h"
#include "daemon/adapt.h"
#include "test_support.h"

/* Prompt lookup in the leader: a 20 ms target step (+2 ms a row), drafting nearly free. */
static struct sel_inputs g_in;

static int setup(void **state)
{
	(void)state;
	g_in = sel_fx_inputs(6, 0.020, 0.002, 512);
	sel_fx_method(&g_in, DRAFT_METHOD_NGRAM, 10e-6, 2e-6);
	return 0;
}

static struct adapt_config config(void)
{
	return (struct adapt_config){
		.in = &g_in, .method = DRAFT_METHOD_NGRAM,
		.k = 6, .k_start = 6, .enabled = true, .interval = 8, .hysteresis = 0.05, .n_slots = 2,
	};
}

static void test_adapt__off_says_why(void **state)
{
	(void)state;
	struct adapt_config c;
	struct adapt_report r;
	struct adapt *a;
	const char *whys[] = {"plain decoding", "speculation.adapt is false",
			      "num_speculative_tokens fixes K at 6", "speculation.measure is false"};
	for (int i = 0; i < 4; i++) {
		c = config();
		struct sel_inputs raw = g_in;
		if (i == 0)
			c.method = DRAFT_METHOD_NONE;
		else if (i == 1)
			c.enabled = false;
		else if (i == 2)
			c.k_fixed = true;
		else {
			raw.calibrated = false;
			c.in = &raw;
		}
		assert_int_equal(adapt_create(&c, &a, NULL), SPECD_OK);
		adapt_report(a, &r);
		assert_false(r.active);
		if (!strstr(r.why_off, whys[i]))
			fail_msg("case %d: '%s' lacks '%s'", i, r.why_off, whys[i]);
		/* Off: observing and stepping change nothing. */
		adapt_observe(a, 0, 6, 0);
		adapt_step_done(a);
		adapt_report(a, &r);
		assert_int_equal(r.decisions, 0);
		adapt_destroy(a);
	}
}

static void test_adapt__k_follows_acceptance_and_is_reported(void **state)
{
	(void)state;
	struct adapt_config c = config();
	struct adapt *a;
	struct adapt_report r;
	assert_int_equal(adapt_create(&c, &a, NULL), SPECD_OK);
	adapt_report(a, &r);
	assert_true(r.active);
	assert_int_equal(r.k, 6);

	ts_log_capture_begin();
	/* Two sequences whose drafts are never kept: K falls to 0, and it is logged. */
	adapt_job_start(a, 0);
	adapt_job_start(a, 1);
	for (int s = 0; s < 200; s++) {
		adapt_observe(a, 0, 6, 0);
		adapt_observe(a, 1, 6, 0);
		adapt_step_done(a);
	}
	adapt_report(a, &r);
	assert_int_equal(r.k, 0);
	assert_true(r.changes >= 1);
	assert_true(r.decisions == 200 / 8);
	assert_true(r.acceptance < 0.2);
	assert_non_null(strstr(r.last_change, "-> 0"));
	bool logged = strstr(ts_log_captured(), "online selector: ngram K 6 -> ") != NULL;
	ts_log_capture_end();
	assert_true(logged);

	/* Off, only probe steps draft; probes whose drafts are all kept bring K back,
	 * and once it drafts again, K climbs. */
	uint32_t steps = 0, back = 0;
	for (; steps < 4000 && r.k < 3; steps++) {
		uint32_t k = r.probing ? r.probe_k : r.k;
		if (k)
			adapt_observe(a, 0, k, k);
		if (r.k == 0)
			back = steps + 1;
		adapt_step_done(a);
		adapt_report(a, &r);
	}
	assert_true(r.probes >= 1);
	assert_true(r.probes < back / 8); /* now and then, not every step */
	assert_true(r.k >= 3);
	adapt_destroy(a);
}

/* The start-up choice is low (K 1 of a stack sized for 6): accepted drafts raise the
 * cluster's K past it. */
static void test_adapt__k_rises_past_the_start_up_choice(void **state)
{
	(void)state;
	struct adapt_config c = config();
	c.k_start = 1;
	struct adapt *a;
	struct adapt_report r;
	assert_int_equal(adapt_create(&c, &a, NULL), SPECD_OK);
	adapt_report(a, &r);
	assert_int_equal(r.k, 1);
	adapt_job_start(a, 0);
	for (int s = 0; s < 400; s++) {
		adapt_observe(a, 0, r.k, r.k); /* every draft kept */
		adapt_step_done(a);
		adapt_report(a, &r);
	}
	assert_true(r.k >= 4);
	assert_true(r.k <= 6);
	assert_non_null(strstr(r.last_change, "K "));
	adapt_destroy(a);
}

/* Prompt lookup runs, a draft model is held: prompt lookup's drafts are rejected (and
 * the draft model's, when probed, kept), so the cluster switches to the draft model
 * (logged, reported). */
static void test_adapt__switches_to_the_held_method_whose_drafts_are_kept(void **state)
{
	(void)state;
	struct sel_inputs in = g_in;
	sel_fx_method(&in, DRAFT_METHOD_DRAFT_MODEL, 0.5e-3, 1e-3);
	struct adapt_config c = config();
	c.in = &in;
	c.methods = 1u << DRAFT_METHOD_DRAFT_MODEL;
	struct adapt *a;
	struct adapt_report r;
	assert_int_equal(adapt_create(&c, &a, NULL), SPECD_OK);
	adapt_report(a, &r);
	assert_int_equal(r.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(r.methods, 1u << DRAFT_METHOD_NGRAM | 1u << DRAFT_METHOD_DRAFT_MODEL);
	ts_log_capture_begin();
	adapt_job_start(a, 0);
	for (int s = 0; s < 2000 && r.method == DRAFT_METHOD_NGRAM; s++) {
		enum draft_method m = r.probing ? r.probe_method : r.method;
		uint32_t k = r.probing ? r.probe_k : r.k;
		if (k)
			adapt_observe(a, 0, k, m == DRAFT_METHOD_DRAFT_MODEL ? k : 0);
		adapt_step_done(a);
		adapt_report(a, &r);
	}
	bool logged = strstr(ts_log_captured(), "online selector: ngram K ") &&
		      strstr(ts_log_captured(), "-> draft_model K");
	ts_log_capture_end();
	assert_int_equal(r.method, DRAFT_METHOD_DRAFT_MODEL);
	assert_true(r.k >= 1);
	assert_non_null(strstr(r.last_change, "-> draft_model K"));
	assert_true(logged);
	adapt_destroy(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_adapt__off_says_why),
		cmocka_unit_test(test_adapt__k_follows_acceptance_and_is_reported),
		cmocka_unit_test(test_adapt__k_rises_past_the_start_up_choice),
		cmocka_unit_test(test_adapt__switches_to_the_held_method_whose_drafts_are_kept),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
