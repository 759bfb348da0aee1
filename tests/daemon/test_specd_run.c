/* specd-run end to end: greedy text and perplexity on stories260K as the numpy
 * fixture has them (tests/fixtures/stories260K.json), reproducible sampling, stopping
 * at the context, and the clear errors of bad flags, a missing model and a prompt
 * longer than the context, options the run would not use refused at the command line,
 * --activations reaching the CPU backend. Runs the program with ts_run (stdout and stderr merged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels/cuda/cuda_device.h"
#include "test_support.h"

static char g_dir[512];
static char g_small[600]; /* a generated model with a 32-token context */
static char g_run[600];

/* Runs specd-run with args (NULL-terminated); returns the exit status, *out the text. */
static int run(char **out, const char *const *args)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = g_run;
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return ts_run(argv, out, 120);
}

static void expect(const char *text, const char *want)
{
	if (!strstr(text, want))
		fail_msg("output lacks '%s':\n%s", want, text);
}

/* Two runs' generated text is the same: from the line after the load line to the
 * prompt statistics. */
static void expect_same_text(const char *a, const char *b)
{
	const char *ta = strchr(strstr(a, "loaded in"), '\n');
	const char *tb = strchr(strstr(b, "loaded in"), '\n');
	size_t na = (size_t)(strstr(ta, "specd-run: prompt") - ta);
	size_t nb = (size_t)(strstr(tb, "specd-run: prompt") - tb);
	assert_int_equal(na, nb);
	assert_memory_equal(ta, tb, na);
}

static int setup_all(void **state)
{
	(void)state;
	snprintf(g_run, sizeof(g_run), "%s/daemon/specd-run", ts_binary_dir());
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_small, sizeof(g_small), "%s/small.gguf", g_dir);
	char gen[600];
	snprintf(gen, sizeof(gen), "%s/tools/specd-gen-model", ts_binary_dir());
	const char *argv[] = {gen, "-o", g_small, "--ctx", "32", "--vocab", "300", "--seed", "3",
			      NULL};
	char *out = NULL;
	int rc = ts_run(argv, &out, 60);
	free(out);
	return rc == 0 ? 0 : -1;
}

static int teardown_all(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static void test_specd_run__greedy_stories260k_matches_fixture(void **state)
{
	(void)state;
	char model[600];
	if (!ts_model_path("stories260K.gguf", model, sizeof(model)))
		skip();
	char *out = NULL;
	const char *args[] = {"-m", model, "-p", "Once upon a time", "-n", "48", NULL};
	assert_int_equal(run(&out, args), 0);
	/* The prompt, then the fixture's greedy_text for this prompt, streamed. */
	expect(out, "Once upon a time, there was a little girl named Lily. She loved to play "
		    "outside in the park. One day, she saw a big, red ball. She wanted to play "
		    "with it,\n");
	expect(out, "prompt 5 tokens");
	expect(out, "generated 48 tokens");
	expect(out, "stopped: max tokens");
	free(out);
}

static void test_specd_run__perplexity_matches_fixture(void **state)
{
	(void)state;
	char model[600], fx[600], path[700];
	if (!ts_model_path("stories260K.gguf", model, sizeof(model)))
		skip();
	/* The fixture's perplexity text, its JSON escapes (quote, backslash, newline) undone. */
	snprintf(fx, sizeof(fx), "%s/tests/fixtures/stories260K.json", ts_source_dir());
	FILE *f = fopen(fx, "rb");
	assert_non_null(f);
	static char json[1 << 20];
	size_t n = fread(json, 1, sizeof(json) - 1, f);
	fclose(f);
	json[n] = '\0';
	const char *p = strstr(json, "\"perplexity\": {");
	assert_non_null(p);
	p = strstr(p, "\"text\": \"");
	assert_non_null(p);
	p += strlen("\"text\": \"");
	char *text = malloc(strlen(p) + 1);
	size_t k = 0;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\') {
			p++;
			assert_true(*p == '"' || *p == '\\' || *p == 'n');
			text[k++] = *p == 'n' ? '\n' : *p;
		} else {
			text[k++] = *p;
		}
	}
	text[k] = '\0';
	assert_true(ts_write_file(g_dir, "ppl.txt", text, path, sizeof(path)));
	free(text);

	char *out = NULL;
	const char *args[] = {"-m", model, "--perplexity", path, NULL};
	assert_int_equal(run(&out, args), 0);
	expect(out, "237 tokens, 236 predicted, mean NLL 0.9739"); /* fixture: 0.97389951 */
	free(out);
}

static void test_specd_run__seeded_sampling_is_reproducible(void **state)
{
	(void)state;
	char *a = NULL, *b = NULL, *c = NULL;
	const char *args[] = {"-m", g_small, "-p", "hi", "-n", "20", "--temperature", "0.9",
			      "--top-k", "50", "--top-p", "0.95", "--seed", "11", NULL};
	const char *other[] = {"-m", g_small, "-p", "hi", "-n", "20", "--temperature", "0.9",
			       "--top-k", "50", "--top-p", "0.95", "--seed", "12", NULL};
	assert_int_equal(run(&a, args), 0);
	assert_int_equal(run(&b, args), 0);
	assert_int_equal(run(&c, other), 0);
	/* Stats lines carry timings: compare the text line only (it starts with the prompt). */
	char *ta = strstr(a, "\nhi"), *tb = strstr(b, "\nhi"), *tc = strstr(c, "\nhi");
	assert_non_null(ta);
	assert_non_null(tb);
	assert_non_null(tc);
	*strchr(ta + 1, '\n') = '\0';
	*strchr(tb + 1, '\n') = '\0';
	*strchr(tc + 1, '\n') = '\0';
	assert_string_equal(ta, tb);
	assert_string_not_equal(ta, tc);
	free(a);
	free(b);
	free(c);
}

static void test_specd_run__stops_when_the_context_is_full(void **state)
{
	(void)state;
	char *out = NULL;
	const char *args[] = {"-m", g_small, "-p", "hello", "-n", "100", NULL};
	assert_int_equal(run(&out, args), 0);
	/* 7 prompt tokens (BOS, "▁" and 5 bytes) fill rows 0..6; 25 more rows, 26 tokens. */
	expect(out, "generated 26 tokens");
	expect(out, "stopped: context full");
	free(out);
}

static void test_specd_run__clear_errors(void **state)
{
	(void)state;
	struct {
		int rc;
		const char *want;
		const char *args[8];
	} cases[] = {
		{1, "cannot open", {"-m", "/nonexistent/m.gguf", NULL}},
		{2, "no model", {"-p", "x", NULL}},
		{2, "unknown argument '--bogus'", {"-m", g_small, "--bogus", NULL}},
		{2, "--max-tokens 'many'", {"-m", g_small, "--max-tokens", "many", NULL}},
		{2, "--temperature needs a value", {"-m", g_small, "--temperature", NULL}},
		{2, "--method eagle needs --eagle DIR", {"-m", g_small, "--method", "eagle", NULL}},
		{2, "--method 'fast'", {"-m", g_small, "--method", "fast", NULL}},
		{2, "--device 'tpu': expected cpu, cuda or emulated",
		 {"-m", g_small, "--device", "tpu", NULL}},
		{2, "--activations 'int4': expected f32 or q8",
		 {"-m", g_small, "--activations", "int4", NULL}},
		{2, "--activations needs a value", {"-m", g_small, "--activations", NULL}},
		{2, "--threads 'all': expected auto or a count", {"-m", g_small, "--threads", "all", NULL}},
		{2, "--gpu '-1'", {"-m", g_small, "--gpu", "-1", NULL}},
		{2, "--tp 2 but mpirun started 1 rank", {"-m", g_small, "--tp=2", NULL}},
		{2, "--chat: chat: the file has no chat template", {"-m", g_small, "--chat", "-p", "hi", NULL}},
		{2, "the prompt is 42 tokens; the model's context is 32",
		 {"-m", g_small, "-p", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL;
		int rc = run(&out, cases[i].args);
		if (rc != cases[i].rc)
			fail_msg("case %zu: exit %d, expected %d:\n%s", i, rc, cases[i].rc, out);
		expect(out, cases[i].want);
		free(out);
	}
	/* Without a GPU (CI), --device cuda says why rather than falling back to the CPU. */
	int gpus = 0;
	char why[128];
	if (kern_cuda_device_count(&gpus, why, sizeof(why)) != SPECD_OK || gpus == 0) {
		char *out = NULL;
		assert_int_equal(run(&out, (const char *[]){"-m", g_small, "--device", "cuda",
							    NULL}), 1);
		expect(out, "cannot create the CUDA backend on GPU 0");
		free(out);
	}
}

/* Values that are no integer, and options the run would not use, end at the command line
 * (exit 2, the message naming both sides), before the model is loaded. */
static void test_specd_run__refuses_options_that_do_not_apply(void **state)
{
	(void)state;
	struct {
		const char *want;
		const char *args[8];
	} cases[] = {
		{"--seed ' -1'", {"--seed", " -1", NULL}},
		{"--seed '-1'", {"--seed", "-1", NULL}},
		{"--seed '18446744073709551616'", {"--seed", "18446744073709551616", NULL}},
		{"--top-k ' 5'", {"--top-k", " 5", NULL}},
		{"--max-tokens '+5'", {"--max-tokens", "+5", NULL}},
		{"--max-tokens '2.7'", {"--max-tokens", "2.7", NULL}},
		{"--prompt-lookup-max 1 is less than the default --prompt-lookup-min 2",
		 {"--method", "ngram", "--prompt-lookup-max", "1", NULL}},
		{"--prompt-lookup-min goes with --method ngram, not --method draft_model",
		 {"--method", "draft_model", "--draft", "d.gguf", "--prompt-lookup-min", "2",
		  NULL}},
		{"--prompt-lookup-max goes with --method ngram, not --method none",
		 {"--prompt-lookup-max", "4", NULL}},
		{"--eagle-width goes with --method eagle, not --method ngram",
		 {"--method", "ngram", "--eagle-width", "2", NULL}},
		{"--eagle-tree goes with --method eagle, not --method medusa",
		 {"--method", "medusa", "--heads", "h", "--eagle-tree", "static", NULL}},
		{"--eagle-depth goes with --method eagle, not --method none",
		 {"--eagle-depth", "3", NULL}},
		{"--pipeline goes with --placement rank, not --placement leader",
		 {"--method", "ngram", "--pipeline", "off", NULL}},
		{"--draft-deadline goes with --placement rank, not --placement leader",
		 {"--method", "ngram", "--placement", "leader", "--draft-deadline", "2", NULL}},
		{"--placement rank needs a speculation method", {"--placement", "rank", NULL}},
		{"--gpu goes with --device cuda, not --device cpu", {"--gpu", "0", NULL}},
		{"--gpu goes with --device cuda, not --device emulated",
		 {"--device", "emulated", "--gpu", "1", NULL}},
		{"--chat does not go with --perplexity", {"--perplexity", "f.txt", "--chat", NULL}},
		{"-n does not go with --perplexity", {"--perplexity", "f.txt", "-n", "3", NULL}},
		{"--seed does not go with --perplexity",
		 {"--perplexity", "f.txt", "--seed", "3", NULL}},
		{"--method ngram does not go with --perplexity",
		 {"--perplexity", "f.txt", "--method", "ngram", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[12] = {"-m", g_small};
		for (int j = 0; cases[i].args[j]; j++)
			args[2 + j] = cases[i].args[j];
		char *out = NULL;
		int rc = run(&out, args);
		if (rc != 2 || !strstr(out, cases[i].want))
			fail_msg("case %zu: exit %d, expected 2 and '%s':\n%s", i, rc,
				 cases[i].want, out);
		free(out);
	}
	/* A drafter's file another method does not read is a note (scripts hand every
	 * file and pick with --method); so is K with --method none. Both still run. */
	char *out = NULL;
	const char *heads[] = {"-m", g_small, "-p", "hi", "-n", "3", "--method", "ngram",
			       "--heads", "h.safetensors", NULL};
	assert_int_equal(run(&out, heads), 0);
	expect(out, "note: --heads has no effect with --method ngram");
	free(out);
	const char *k[] = {"-m", g_small, "-p", "hi", "-n", "3", "--spec-tokens", "3", NULL};
	assert_int_equal(run(&out, k), 0);
	expect(out, "note: --spec-tokens has no effect with --method none");
	free(out);
	/* A larger minimum alone raises the default maximum with it, as the drafter does. */
	const char *min_only[] = {"-m", g_small, "-p", "hi", "-n", "3", "--method", "ngram",
				  "--prompt-lookup-min", "7", NULL};
	assert_int_equal(run(&out, min_only), 0);
	free(out);
}

/* --dtype f16 holds the f32 model's weights as f16: its greedy text is that of the
 * same weights written as f16 (generated with the same seed), and the load line says
 * so; a type weights cannot be held in is a usage error. */
static void test_specd_run__dtype_holds_weights_as_asked(void **state)
{
	(void)state;
	char f16[700], gen[600];
	snprintf(f16, sizeof(f16), "%s/small_f16.gguf", g_dir);
	snprintf(gen, sizeof(gen), "%s/tools/specd-gen-model", ts_binary_dir());
	const char *gargs[] = {gen, "-o", f16, "--ctx", "32", "--vocab", "300", "--seed", "3",
			       "--type", "f16", NULL};
	char *out = NULL, *conv = NULL, *file = NULL;
	assert_int_equal(ts_run(gargs, &out, 60), 0);
	free(out);
	const char *a[] = {"-m", g_small, "-p", "hello", "-n", "16", "--dtype", "f16", NULL};
	const char *b[] = {"-m", f16, "-p", "hello", "-n", "16", NULL};
	assert_int_equal(run(&conv, a), 0);
	assert_int_equal(run(&file, b), 0);
	expect(conv, ", f16; loaded");
	expect_same_text(conv, file);
	free(conv);
	free(file);
	const char *bad[] = {"-m", g_small, "-p", "x", "--dtype", "q8_0", NULL};
	assert_int_equal(run(&out, bad), 2);
	expect(out, "--dtype 'q8_0': expected auto, f32, f16 or bf16");
	free(out);
}

/* --activations reaches the CPU backend (the load line says what the backend took; q8
 * by default, as the cluster file's default). The generated model's weights are f32,
 * which no setting affects: the text is the same either way. */
static void test_specd_run__activations_reach_the_backend(void **state)
{
	(void)state;
	char *def = NULL, *f32 = NULL, *q8 = NULL;
	const char *a[] = {"-m", g_small, "-p", "hello", "-n", "12", NULL};
	const char *b[] = {"-m", g_small, "-p", "hello", "-n", "12", "--activations", "f32", NULL};
	const char *c[] = {"-m", g_small, "-p", "hello", "-n", "12", "--activations=q8", NULL};
	assert_int_equal(run(&def, a), 0);
	assert_int_equal(run(&f32, b), 0);
	assert_int_equal(run(&q8, c), 0);
	expect(def, "on cpu (q8 activations");
	expect(f32, "on cpu (f32 activations");
	expect(q8, "on cpu (q8 activations");
	/* --threads: the default auto takes the machine's cores (one process here) */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	char want[64];
	snprintf(want, sizeof(want), ", %ld thread%s)", cores > 1 ? cores : 1, cores > 1 ? "s" : "");
	expect(def, want);
	expect(f32, want);
	expect_same_text(def, f32);
	free(def);
	free(f32);
	free(q8);
}

/* --huge-pages reaches the model (the load line says where the weights are) and
 * changes no token. */
static void test_specd_run__huge_pages_reach_the_model(void **state)
{
	(void)state;
	char *on = NULL, *off = NULL;
	const char *a[] = {"-m", g_small, "-p", "hello", "-n", "12", "--huge-pages", "on", NULL};
	const char *b[] = {"-m", g_small, "-p", "hello", "-n", "12", "--huge-pages", "off", NULL};
	const char *bad[] = {"-m", g_small, "-p", "hello", "--huge-pages", "maybe", NULL};
	assert_int_equal(run(&on, a), 0);
	assert_int_equal(run(&off, b), 0);
	expect(on, "activations, weights in huge pages, ");
	assert_null(strstr(off, "huge pages"));
	expect_same_text(on, off);
	free(on);
	free(off);
	char *err = NULL;
	assert_int_equal(run(&err, bad), 2);
	expect(err, "auto, on or off");
	free(err);
}

static void test_specd_run__help_and_version(void **state)
{
	(void)state;
	char *out = NULL;
	const char *help[] = {"--help", NULL}, *version[] = {"--version", NULL};
	assert_int_equal(run(&out, help), 0);
	const char *flags[] = {"--model", "--prompt", "--max-tokens", "--temperature", "--top-k",
			       "--top-p", "--seed", "--threads", "--method", "--spec-tokens",
			       "--draft", "--heads", "--tp", "--perplexity", "--activations",
			       "--huge-pages", "--version"};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		expect(out, flags[i]);
	free(out);
	assert_int_equal(run(&out, version), 0);
	expect(out, "specd-run ");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_specd_run__greedy_stories260k_matches_fixture),
		cmocka_unit_test(test_specd_run__perplexity_matches_fixture),
		cmocka_unit_test(test_specd_run__seeded_sampling_is_reproducible),
		cmocka_unit_test(test_specd_run__stops_when_the_context_is_full),
		cmocka_unit_test(test_specd_run__clear_errors),
		cmocka_unit_test(test_specd_run__refuses_options_that_do_not_apply),
		cmocka_unit_test(test_specd_run__dtype_holds_weights_as_asked),
		cmocka_unit_test(test_specd_run__activations_reach_the_backend),
		cmocka_unit_test(test_specd_run__huge_pages_reach_the_model),
		cmocka_unit_test(test_specd_run__help_and_version),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
