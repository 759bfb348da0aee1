/* The emulated two-node cluster (bench/netns-cluster.sh): the dedicated draft rank
 * across a veth link shaped three ways, and what the leader's link probe measures and
 * the selector decides for each. Needs root and network namespaces, and skips without
 * them (CI containers often lack CAP_NET_ADMIN), or without SmolLM2-135M. */
#include <libgen.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_support.h"

#define SCRIPT_CANNOT 77 /* bench/netns-cluster.sh: this machine cannot host it */
#define SMOLLM2 "SmolLM2-135M-Instruct.Q4_1.gguf"

/* One link shape and what the cluster made of it. */
struct shape_run {
	const char *name, *rate, *delay;
	int rc;                   /* the script's exit status */
	double latency_us;        /* the link probe's figures */
	double bandwidth_mbs;
	char method[32];          /* the selector's choice */
	unsigned k;
	double draft_model_tps;   /* predicted tokens/s of draft_model's full-q row */
	double ngram_tps;         /* and of ngram's row */
	double target_ms;         /* the calibrated 1-token target forward */
};

struct suite {
	char dir[256];
	char skip_why[1024];      /* non-empty: every case skips, saying this */
	struct shape_run fast, slow, far;
};

static struct suite g;

static void script_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/bench/netns-cluster.sh", ts_source_dir());
}

/* Figures from the script's `decide` output (log records without their prefix). */
static void parse_run(const char *out, struct shape_run *r)
{
	const char *p = strstr(out, "link leader<->draft rank ");
	if (p)
		sscanf(p, "link leader<->draft rank %*d: latency %lf us, bandwidth %lf MB/s",
		       &r->latency_us, &r->bandwidth_mbs);
	/* The choice is the one "selector: " line followed by a name, not by the table's
	 * indentation. */
	for (p = out; (p = strstr(p, "selector: ")); p++) {
		if (p[10] != ' ' &&
		    sscanf(p, "selector: %31[a-z_], K %u,", r->method, &r->k) == 2)
			break;
	}
	for (p = out; (p = strstr(p, "selector:   draft_model K ")); p++) {
		unsigned k;
		if (sscanf(p, "selector:   draft_model K %u full a %*f %lf tokens/s", &k,
			   &r->draft_model_tps) == 2)
			break;
	}
	p = strstr(out, "selector:   ngram ");
	if (p)
		sscanf(p, "selector:   ngram K %*u greedy a %*f %lf tokens/s", &r->ngram_tps);
	p = strstr(out, "calibration in ");
	if (p)
		sscanf(p, "calibration in %*f s: target %lf ms for 1 token", &r->target_ms);
}

/* Runs `decide` for one shape; false (with the reason in g.skip_why) when this
 * machine cannot host the namespaces. */
static bool run_shape(struct shape_run *r, const char *cluster)
{
	char script[512];
	script_path(script, sizeof(script));
	const char *argv[] = {script, "decide", "--rate", r->rate, "--delay", r->delay,
			      "--build", ts_binary_dir(), cluster, NULL};
	char *out = NULL;
	r->rc = ts_run(argv, &out, 300);
	fprintf(stderr, "netns %s (%s, %s): exit %d\n", r->name, r->rate, r->delay, r->rc);
	if (r->rc == SCRIPT_CANNOT) {
		snprintf(g.skip_why, sizeof(g.skip_why), "%s", out ? out : "");
		free(out);
		return false;
	}
	if (r->rc != 0)
		fprintf(stderr, "%s\n", out ? out : "(no output)");
	else
		parse_run(out, r);
	fprintf(stderr, "  latency %.1f us, bandwidth %.2f MB/s; target %.1f ms a token; "
		"selector: %s K %u; predicted tokens/s: draft_model (full q) %.1f, ngram %.1f\n",
		r->latency_us, r->bandwidth_mbs, r->target_ms, r->method, r->k,
		r->draft_model_tps, r->ngram_tps);
	free(out);
	return true;
}

static void script_down(void)
{
	char script[512];
	script_path(script, sizeof(script));
	const char *argv[] = {script, "down", NULL};
	char *out = NULL;
	if (ts_run(argv, &out, 60) != 0)
		fprintf(stderr, "netns-cluster.sh down: %s\n", out ? out : "(no output)");
	free(out);
}

static int setup_netns(void **state)
{
	(void)state;
	g.fast = (struct shape_run){.name = "fast", .rate = "1gbit", .delay = "100us"};
	g.slow = (struct shape_run){.name = "slow", .rate = "10mbit", .delay = "5ms"};
	g.far = (struct shape_run){.name = "far", .rate = "1gbit", .delay = "100ms"};
	if (geteuid() != 0) {
		snprintf(g.skip_why, sizeof(g.skip_why), "not root: network namespaces, veth "
			 "and tc need CAP_NET_ADMIN");
		return 0;
	}
	/* Namespaces of the test's own (teardown's `down` included), so that a cluster
	 * someone emulates by hand at the same time is left alone. */
	setenv("SPECD_NETNS_NAME", "specdt", 1);
	setenv("SPECD_NETNS_NET", "10.78.0", 1);
	char model[512], models_dir[512];
	if (!ts_model_path(SMOLLM2, model, sizeof(model))) {
		snprintf(g.skip_why, sizeof(g.skip_why), "%s not found (SPECD_MODELS, "
			 "../shared/models; tools/fetch-models smollm2-135m)", SMOLLM2);
		return 0;
	}
	snprintf(models_dir, sizeof(models_dir), "%s", model);
	if (!ts_mkdtemp(g.dir, sizeof(g.dir)))
		return -1;
	/* A draft model sharing SmolLM2's vocabulary, so that the draft rank may run
	 * draft_model and its q rows (49152 floats a token) would cross the link. */
	char draft[512];
	snprintf(draft, sizeof(draft), "%s/draft.gguf", g.dir);
	const char *gen[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			     "--ffn", "128", "--ctx", "1024", "--type", "q8_0", "--tied",
			     "--vocab-from", model, NULL};
	if (ts_gen_model(draft, gen) != 0)
		return -1;
	setenv("SPECD_MODELS", dirname(models_dir), 1);
	setenv("SPECD_NETNS_DRAFT", draft, 1);
	char cluster[512];
	snprintf(cluster, sizeof(cluster), "%s/configs/netns-smollm2-draft.yaml", ts_source_dir());
	struct shape_run *runs[] = {&g.fast, &g.slow, &g.far};
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
		if (!run_shape(runs[i], cluster))
			break;
	return 0;
}

static int teardown_netns(void **state)
{
	(void)state;
	if (geteuid() == 0)
		script_down(); /* also after a run the script could not clean up after */
	if (g.dir[0])
		ts_rmtree(g.dir);
	return 0;
}

static void need_runs(void)
{
	if (g.skip_why[0]) {
		print_message("skipped: %s\n", g.skip_why);
		skip();
	}
	assert_int_equal(g.fast.rc, 0);
	assert_int_equal(g.slow.rc, 0);
	assert_int_equal(g.far.rc, 0);
}

/* The verdicts follow from the links' cost next to a target forward of tens of
 * milliseconds. A sanitized build runs the target ten times slower and its verify
 * cost grows with every token, so there the target, not the link, decides (measured:
 * plain decoding even over the fast link); the link figures are still checked. */
static void need_verdicts(void)
{
	need_runs();
#if defined(__SANITIZE_ADDRESS__)
	print_message("skipped: a sanitized target (%.0f ms a token) is too slow for these "
		      "links to decide\n", g.fast.target_ms);
	skip();
#endif
}

static void test_netns_probe__latency_follows_the_delay(void **state)
{
	(void)state;
	need_runs();
	/* A delay is a floor: the probe may see more (the machine's own latency), never
	 * less. */
	assert_true(g.fast.latency_us > 0);
	assert_true(g.slow.latency_us >= 5000);
	assert_true(g.far.latency_us >= 100000);
	assert_true(g.fast.latency_us < g.slow.latency_us);
	assert_true(g.slow.latency_us < g.far.latency_us);
}

static void test_netns_probe__bandwidth_follows_the_rate(void **state)
{
	(void)state;
	need_runs();
	/* tbf is a ceiling: 10 Mbit/s is 1.25 MB/s, with its burst on top for the
	 * probe's mid-sized messages. */
	assert_true(g.slow.bandwidth_mbs > 0);
	assert_true(g.slow.bandwidth_mbs <= 2.5);
	assert_true(g.fast.bandwidth_mbs > 10 * g.slow.bandwidth_mbs);
}

static void test_netns_selector__speculates_over_a_fast_link(void **state)
{
	(void)state;
	need_verdicts();
	/* 0.1 ms each way is nothing next to a 135M-parameter forward on a CPU. */
	assert_string_not_equal(g.fast.method, "");
	assert_string_not_equal(g.fast.method, "none");
	assert_true(g.fast.k >= 1);
}

static void test_netns_selector__slow_link_rules_out_q_rows(void **state)
{
	(void)state;
	need_verdicts();
	/* Sampling jobs would ship draft_model's full q rows: 192 KiB a drafted token,
	 * 157 ms at 10 Mbit/s. Prompt lookup ships token ids only, so next to it (the
	 * same target timing on both rows) draft_model loses ground on the slow link. */
	assert_string_not_equal(g.slow.method, "");
	assert_string_not_equal(g.slow.method, "draft_model");
	assert_true(g.fast.draft_model_tps > 0 && g.fast.ngram_tps > 0);
	assert_true(g.slow.draft_model_tps > 0 && g.slow.ngram_tps > 0);
	assert_true(g.slow.draft_model_tps / g.slow.ngram_tps <
		    g.fast.draft_model_tps / g.fast.ngram_tps);
}

static void test_netns_selector__far_draft_rank_leaves_only_the_leaders_drafting(void **state)
{
	(void)state;
	need_verdicts();
	/* Two 100 ms crossings a step cost more than any draft on the far rank can save;
	 * prompt lookup runs in the leader (it needs no weights) and crosses nothing. */
	assert_true(strcmp(g.far.method, "none") == 0 || strcmp(g.far.method, "ngram") == 0);
	assert_true(strcmp(g.far.method, "none") != 0 || g.far.k == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_netns_probe__latency_follows_the_delay),
		cmocka_unit_test(test_netns_probe__bandwidth_follows_the_rate),
		cmocka_unit_test(test_netns_selector__speculates_over_a_fast_link),
		cmocka_unit_test(test_netns_selector__slow_link_rules_out_q_rows),
		cmocka_unit_test(test_netns_selector__far_draft_rank_leaves_only_the_leaders_drafting),
	};
	return cmocka_run_group_tests(tests, setup_netns, teardown_netns);
}
