/* specd-gpu-check, the program bench/gpu-check.sh runs on a lent GPU, run here on the
 * emulated device (SPECD_GPU_CHECK_CPU=emulated): its own code must keep host and
 * device memory apart as the CUDA backend needs (a host access to device memory
 * faults there), and its checks must pass, so a GPU session is not spent finding a
 * bug of the program's. ops, greedy and bench on stories260K, and methods with every
 * drafter (stories260K its own draft model, random Medusa heads and EAGLE layer). The
 * timing-heavy `sample` step is left to the GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_support.h"

static char g_dir[256], g_model[512], g_heads[320], g_eagle[320];

static int setup(void **state)
{
	(void)state;
	if (!ts_model_path("stories260K.gguf", g_model, sizeof(g_model)) ||
	    !ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_heads, sizeof(g_heads), "%s/heads.safetensors", g_dir);
	snprintf(g_eagle, sizeof(g_eagle), "%s/eagle", g_dir);
	if (ts_gen("specd-gen-heads", g_heads, (const char *[]){"-m", g_model, NULL}) != 0 ||
	    ts_gen("specd-gen-heads", g_eagle, (const char *[]){"--eagle", "-m", g_model, NULL}))
		return -1;
	return setenv("SPECD_GPU_CHECK_CPU", "emulated", 1);
}

static int teardown(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

/* Runs specd-gpu-check with args; it must exit 0 and say `result NAME: PASS`. Returns
 * its output (the caller frees it). */
static char *check(const char *const *args)
{
	int rc = -1;
	char *out = ts_run_built("tools/specd-gpu-check", NULL, args, &rc);
	assert_non_null(out);
	char want[64];
	snprintf(want, sizeof(want), "result %s: PASS", args[0]);
	if (rc != 0 || !strstr(out, want))
		fail_msg("specd-gpu-check %s: exit %d:\n%s", args[0], rc, out);
	assert_non_null(strstr(out, "backends: emu"));
	return out;
}

static void test_gpu_check__ops_greedy_and_bench_pass_on_the_emulated_device(void **state)
{
	(void)state;
	free(check((const char *[]){"ops", NULL}));
	char *out = check((const char *[]){"greedy", g_model, "16", NULL});
	assert_non_null(strstr(out, "greedy tokens"));
	free(out);
	out = check((const char *[]){"bench", g_model, "8", NULL});
	assert_non_null(strstr(out, "bench none:"));
	/* The op profiler's tables: a decode step's and the deepest context's. */
	assert_non_null(strstr(out, "profile decode: "));
	assert_non_null(strstr(out, "profile decode   matmul"));
	assert_non_null(strstr(out, "profile context 1000   attention"));
	free(out);
}

/* Every method through the engine, each output equal to plain decoding's; sampled,
 * each method's device draws give the host verifier's tokens. */
static void test_gpu_check__methods_pass_on_the_emulated_device(void **state)
{
	(void)state;
	char *out = check((const char *[]){"methods", g_model, "--draft", g_model, "--heads",
					   g_heads, "--eagle", g_eagle, "-n", "24", "-k", "2,4",
					   NULL});
	const char *methods[] = {"none ", "ngram ", "draft_model ", "medusa ", "eagle "};
	for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
		char line[64];
		snprintf(line, sizeof(line), "methods %s", methods[m]);
		const char *at = strstr(out, line);
		if (!at || !strstr(at, "output == plain"))
			fail_msg("no passing line for %s:\n%s", methods[m], out);
		snprintf(line, sizeof(line), "sampled %s", methods[m]);
		at = strstr(out, line);
		if (!at || !strstr(at, "output equal"))
			fail_msg("no passing sampled line for %s:\n%s", methods[m], out);
		/* Its profiled run at the largest K (plain decoding: K 0). */
		snprintf(line, sizeof(line), "profile %sK=%s: ", methods[m], m ? "4" : "0");
		if (!strstr(out, line))
			fail_msg("no profile for %s:\n%s", methods[m], out);
	}
	/* The tree drafters pick candidates on the device: their profiles show topk. */
	assert_non_null(strstr(out, "profile medusa K=4   topk"));
	assert_non_null(strstr(out, "profile eagle K=4   topk"));
	assert_null(strstr(out, "DIFFERS"));
	free(out);
	/* A bad argument is a usage error, not a crash. */
	int rc = 0;
	out = ts_run_built("tools/specd-gpu-check", NULL,
			   (const char *[]){"methods", g_model, "-k", "0", NULL}, &rc);
	assert_non_null(out);
	assert_int_equal(rc, 2);
	assert_non_null(strstr(out, "usage: specd-gpu-check methods"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu_check__ops_greedy_and_bench_pass_on_the_emulated_device),
		cmocka_unit_test(test_gpu_check__methods_pass_on_the_emulated_device),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
