/* specd-run --method ngram|draft_model end to end (daemon/specd_run.c on the engine of
 * drafters/engine.h): greedy text identical to --method none for K in {1, 3, 8}, on
 * stories260K (draft: itself, and a random model given its vocabulary with
 * specd-gen-model --vocab-from) and on a random model up to the end of its context; the
 * metrics on stderr; a seed reproducing a sampled run; sampled ngram text equal to
 * sampled plain decoding's for the seed; and the clear errors of a
 * missing --draft, a draft with another vocabulary and inverted lookup lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "spec_fixture.h"
#include "test_support.h"

static char g_dir[512], g_run[600];
static char g_small[600], g_small_draft[600], g_other[600], g_st[600], g_st_draft[600];
static bool g_have_st;

static int run(char **out, const char *const *args)
{
	const char *argv[40];
	int n = 0;
	argv[n++] = g_run;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return ts_run(argv, out, 120);
}

static void expect(const char *text, const char *want)
{
	if (!strstr(text, want))
		fail_msg("output lacks '%s':\n%s", want, text);
}

/* The generated text: the line that starts with the prompt (stats lines start with
 * "specd-run:"). Returns a malloc'd copy. */
static char *text_line(const char *out, const char *prompt)
{
	const char *p = out;
	while (p && *p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (strncmp(p, prompt, strlen(prompt)) == 0) {
			char *s = malloc(len + 1);
			memcpy(s, p, len);
			s[len] = '\0';
			return s;
		}
		p = end ? end + 1 : NULL;
	}
	fail_msg("no text line in:\n%s", out);
	return NULL;
}

static int setup(void **state)
{
	(void)state;
	snprintf(g_run, sizeof(g_run), "%s/daemon/specd-run", ts_binary_dir());
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_small, sizeof(g_small), "%s/small.gguf", g_dir);
	snprintf(g_small_draft, sizeof(g_small_draft), "%s/small_draft.gguf", g_dir);
	snprintf(g_other, sizeof(g_other), "%s/other.gguf", g_dir);
	snprintf(g_st_draft, sizeof(g_st_draft), "%s/st_draft.gguf", g_dir);
	const char *small[] = {"--ctx", "40", "--vocab", "300", "--seed", "3", NULL};
	const char *small_draft[] = {"--ctx", "40", "--vocab", "300", "--seed", "3", "--type",
				     "q8_0", NULL};
	const char *other[] = {"--ctx", "40", "--vocab", "400", "--dim", "32", "--layers", "1",
			       NULL};
	fx_gen_model(g_small, small);
	fx_gen_model(g_small_draft, small_draft);
	fx_gen_model(g_other, other);
	g_have_st = ts_model_path("stories260K.gguf", g_st, sizeof(g_st));
	if (g_have_st) {
		const char *st_draft[] = {"--vocab-from", g_st, "--dim", "32", "--layers", "2",
					  "--heads", "2", "--kv-heads", "1", "--ffn", "64", "--ctx",
					  "512", "--seed", "9", NULL};
		fx_gen_model(g_st_draft, st_draft);
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

/* Every method and K gives the text of --method none for these arguments. */
static void check_methods(const char *model, const char *draft, const char *prompt,
			  const char *n_tokens)
{
	char *out = NULL;
	const char *plain[] = {"-m", model, "-p", prompt, "-n", n_tokens, NULL};
	assert_int_equal(run(&out, plain), 0);
	char *want = text_line(out, prompt);
	free(out);
	static const char *const ks[] = {"1", "3", "8"};
	for (int k = 0; k < 3; k++) {
		const char *cases[][16] = {
			{"-m", model, "-p", prompt, "-n", n_tokens, "--method", "ngram",
			 "--spec-tokens", ks[k], "--prompt-lookup-min", "1", NULL},
			{"-m", model, "-p", prompt, "-n", n_tokens, "--method", "draft_model",
			 "--draft", model, "--spec-tokens", ks[k], NULL},
			{"-m", model, "-p", prompt, "-n", n_tokens, "--method", "draft_model",
			 "--draft", draft, "--spec-tokens", ks[k], NULL},
		};
		for (int c = 0; c < 3; c++) {
			assert_int_equal(run(&out, cases[c]), 0);
			char *got = text_line(out, prompt);
			if (strcmp(got, want) != 0)
				fail_msg("case %d K=%s: '%s' != '%s'", c, ks[k], got, want);
			expect(out, "drafted ");
			expect(out, "mean acceptance length ");
			expect(out, "system efficiency ");
			expect(out, "time: prefill ");
			if (c == 1) /* itself as draft: every token accepted */
				expect(out, "(100.0%)");
			free(got);
			free(out);
		}
	}
	free(want);
}

static void test_specd_run_methods__greedy_text_equals_plain_on_stories260k(void **state)
{
	(void)state;
	if (!g_have_st)
		skip();
	check_methods(g_st, g_st_draft, "Once upon a time", "48");
	check_methods(g_st, g_st_draft, "Tom had a ball. Tom", "32");
}

static void test_specd_run_methods__greedy_text_equals_plain_to_the_context_end(void **state)
{
	(void)state;
	check_methods(g_small, g_small_draft, "hi", "100");
	char *out = NULL;
	const char *args[] = {"-m", g_small, "-p", "hi", "-n", "100", "--method", "draft_model",
			      "--draft", g_small, "--spec-tokens", "8", NULL};
	assert_int_equal(run(&out, args), 0);
	expect(out, "stopped: context full");
	expect(out, "acceptance by position: 1:100%");
	free(out);
}

static void test_specd_run_methods__seed_reproduces_a_sampled_run(void **state)
{
	(void)state;
	char *a = NULL, *b = NULL;
	const char *args[] = {"-m", g_small, "-p", "hi", "-n", "20", "--temperature", "0.9",
			      "--top-k", "40", "--seed", "5", "--method", "draft_model", "--draft",
			      g_small_draft, "--spec-tokens", "3", NULL};
	assert_int_equal(run(&a, args), 0);
	assert_int_equal(run(&b, args), 0);
	char *ta = text_line(a, "hi"), *tb = text_line(b, "hi");
	assert_string_equal(ta, tb);
	free(ta);
	free(tb);
	free(a);
	free(b);
}

/* Sampling with prompt lookup writes, for a seed, the text sampling without a drafter
 * writes (drafters/verify.h: drafts that are not samples cost no draws), on stories260K
 * at two temperatures and K 4 and 6, with drafts accepted (a prompt that repeats
 * itself). */
static void test_specd_run_methods__sampled_ngram_text_equals_plain(void **state)
{
	(void)state;
	if (!g_have_st)
		skip();
	static const char *const prompt = "Lily and Ben went to the park. Lily and Ben went to the";
	static const char *const temps[] = {"0.5", "0.8"}, *const ks[] = {"4", "6"};
	for (int i = 0; i < 2; i++) {
		char *texts[2];
		for (int m = 0; m < 2; m++) {
			char *out = NULL;
			const char *args[] = {"-m", g_st, "-p", prompt, "-n", "48", "--temperature",
					      temps[i], "--top-p", "0.95", "--seed", "11",
					      "--method", m ? "ngram" : "none", "--spec-tokens",
					      ks[i], NULL};
			assert_int_equal(run(&out, args), 0);
			texts[m] = text_line(out, prompt);
			if (m) {
				const char *acc = strstr(out, ", accepted ");
				assert_non_null(acc);
				assert_true(atoi(acc + strlen(", accepted ")) > 0);
			}
			free(out);
		}
		assert_string_equal(texts[0], texts[1]);
		free(texts[0]);
		free(texts[1]);
	}
}

static void test_specd_run_methods__clear_errors(void **state)
{
	(void)state;
	struct {
		int rc;
		const char *want;
		const char *args[12];
	} cases[] = {
		{2, "--method draft_model needs --draft", {"-m", g_small, "--method", "draft_model",
							   NULL}},
		{1, "vocabulary is not the target's: 400 tokens in the draft, 300 in the target",
		 {"-m", g_small, "--method", "draft_model", "--draft", g_other, NULL}},
		{1, "/nonexistent/d.gguf", {"-m", g_small, "--method", "draft_model", "--draft",
					    "/nonexistent/d.gguf", NULL}},
		{2, "--prompt-lookup-min 3 is greater than --prompt-lookup-max 2",
		 {"-m", g_small, "--method", "ngram", "--prompt-lookup-min", "3",
		  "--prompt-lookup-max", "2", NULL}},
		{2, "--spec-tokens '0'", {"-m", g_small, "--method", "ngram", "--spec-tokens", "0",
					  NULL}},
		{2, "--method eagle needs --eagle DIR", {"-m", g_small, "--method", "eagle",
							 NULL}},
		{2, "--eagle-tree 'wide'", {"-m", g_small, "--method", "eagle", "--eagle", "x",
					    "--eagle-tree", "wide", NULL}},
		{2, "--eagle-width '11'", {"-m", g_small, "--method", "eagle", "--eagle", "x",
					   "--eagle-width", "11", NULL}},
		{1, "eagle: /nonexistent/e is not a checkpoint folder",
		 {"-m", g_small, "--method", "eagle", "--eagle", "/nonexistent/e", NULL}},
		{2, "--method medusa needs --heads", {"-m", g_small, "--method", "medusa", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL;
		int rc = run(&out, cases[i].args);
		if (rc != cases[i].rc)
			fail_msg("case %zu: exit %d, expected %d:\n%s", i, rc, cases[i].rc, out);
		expect(out, cases[i].want);
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_specd_run_methods__greedy_text_equals_plain_on_stories260k),
		cmocka_unit_test(test_specd_run_methods__greedy_text_equals_plain_to_the_context_end),
		cmocka_unit_test(test_specd_run_methods__seed_reproduces_a_sampled_run),
		cmocka_unit_test(test_specd_run_methods__sampled_ngram_text_equals_plain),
		cmocka_unit_test(test_specd_run_methods__clear_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
