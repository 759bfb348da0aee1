/* The cluster file: defaults, every key parsed, paths and ${VAR}, sizes, exact
 * "FILE:LINE: ... 'KEY'" messages for bad files, buffer == file, world size, forced
 * allocation failures, hostile input, the shipped configs/ files, and docs/config.md
 * staying equal to what specd-config-doc prints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "daemon/config.h"
#include "daemon/config_int.h"
#include "test_support.h"

static char g_dir[256];

static int setup_dir(void **state)
{
	(void)state;
	return ts_mkdtemp(g_dir, sizeof(g_dir)) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static struct cfg_cluster *parse_ok(const char *text, const char *path, unsigned flags)
{
	struct cfg_cluster *cfg = NULL;
	struct specd_error err = {0};
	enum specd_status st = cfg_parse_buffer(text, strlen(text), path, flags, &cfg, &err);
	if (st != SPECD_OK)
		fail_msg("unexpected error %s: %s", specd_status_name(st), err.msg);
	assert_non_null(cfg);
	return cfg;
}

static char *cwd_join(const char *rel)
{
	static char buf[4200];
	char cwd[4096];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(buf, sizeof(buf), "%s/%s", strcmp(cwd, "/") ? cwd : "", rel);
	return buf;
}

/* ---- defaults and the full file ---- */

static void test_defaults__apply_when_sections_omitted(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok("target:\n  model: /m/x.gguf\n", "d.yaml", 0);
	assert_string_equal(c->source_path, "d.yaml");
	assert_string_equal(c->name, "specd");
	assert_string_equal(c->log_level, "info");
	assert_string_equal(c->listen, "127.0.0.1:7070");
	assert_null(c->auth_token);
	assert_int_equal(c->limits.frame_bytes, 4u << 20);
	assert_int_equal(c->limits.prompt_tokens, 8192);
	assert_int_equal(c->limits.max_tokens, 4096);
	assert_int_equal(c->limits.jobs, 64);
	assert_int_equal(c->limits.jobs_per_connection, 0);
	assert_int_equal(c->limits.connections, 128);
	assert_true(c->limits.idle_seconds == 300);
	assert_true(c->limits.frame_seconds == 60);
	assert_string_equal(c->target_model, "/m/x.gguf");
	assert_int_equal(c->tensor_parallel, 1);
	assert_int_equal(c->target_device, CFG_DEVICE_CPU);
	assert_int_equal(c->target_dtype, CFG_DTYPE_AUTO);
	assert_true(c->target_threads_auto); /* the cores over the ranks on the machine */
	assert_int_equal(c->target_threads, 0);
	assert_int_equal(c->target_activations, KERN_ACT_Q8); /* speed, as llama.cpp */
	assert_int_equal(c->target_slots, 4);
	assert_int_equal(c->target_context, 4096);
	assert_int_equal(c->target_batch_tokens, 0);
	assert_int_equal(c->draft_placement, CFG_PLACEMENT_RANK);
	assert_int_equal(c->draft_device, CFG_DEVICE_CPU);
	assert_true(c->draft_threads_auto);
	assert_int_equal(c->draft_threads, 0);
	assert_int_equal(c->draft_activations, KERN_ACT_Q8);
	assert_int_equal(c->target_huge_pages, CFG_HUGE_AUTO);
	assert_int_equal(c->draft_huge_pages, CFG_HUGE_AUTO);
	assert_true(c->method_auto);
	assert_true(c->spec_tokens_auto);
	assert_int_equal(c->num_speculative_tokens, 0);
	assert_true(c->pipeline);
	assert_int_equal(c->max_speculative_tokens, 8);
	assert_true(c->measure);
	assert_false(c->expect_sampling);
	assert_true(c->adapt);
	assert_int_equal(c->adapt_interval, 64);
	assert_float_equal(c->adapt_hysteresis, 0.05, 1e-12);
	assert_true(c->lookup_min_auto && c->lookup_max_auto); /* the drafter's, or the rule's */
	assert_int_equal(c->prompt_lookup_min, 0);
	assert_int_equal(c->prompt_lookup_max, 0);
	assert_null(c->draft_model);
	assert_null(c->eagle_heads);
	assert_int_equal(c->eagle_tree, 0);
	assert_int_equal(c->eagle_width, 4);
	assert_int_equal(c->eagle_depth, 5);
	assert_null(c->medusa_heads);
	assert_true(c->target_speedup == 0.0);
	assert_false(c->low_memory);
	assert_int_equal(c->max_draft_memory, 0);
	cfg_destroy(c);
}

static const char full_yaml[] =
	"cluster:\n"
	"  name: full\n"
	"  log_level: debug\n"
	"server:\n"
	"  listen: 10.0.0.5:9000\n"
	"  auth_token: s3cret\n"
	"  limits:\n"
	"    frame_bytes: 8MiB\n"
	"    prompt_tokens: 1000\n"
	"    max_tokens: 2000\n"
	"    jobs: 3\n"
	"    jobs_per_connection: 2\n"
	"    connections: 4\n"
	"    idle_seconds: 12.5\n"
	"    frame_seconds: 0\n"
	"target:\n"
	"  model: /models/t.gguf\n"
	"  tensor_parallel: 4\n"
	"  device: cuda\n"
	"  dtype: bf16\n"
	"  threads: 8\n"
	"  activations: f32\n"
	"  huge_pages: off\n"
	"  slots: 16\n"
	"  context: 1024\n"
	"  batch_tokens: 48\n"
	"draft:\n"
	"  placement: leader\n"
	"  device: cuda\n"
	"  threads: 2\n"
	"  activations: f32\n"
	"  huge_pages: on\n"
	"speculation:\n"
	"  method: draft_model\n"
	"  num_speculative_tokens: 7\n"
	"  max_speculative_tokens: 12\n"
	"  pipeline: false\n"
	"  measure: false\n"
	"  expect_sampling: true\n"
	"  adapt: false\n"
	"  adapt_interval: 32\n"
	"  adapt_hysteresis: 0.1\n"
	"  ngram:\n"
	"    prompt_lookup_min: 3\n"
	"    prompt_lookup_max: 3\n"
	"  draft_model:\n"
	"    model: /models/d.gguf\n"
	"  eagle:\n"
	"    heads: /models/e\n"
	"    tree: static\n"
	"    width: 6\n"
	"    depth: 7\n"
	"  medusa:\n"
	"    heads: /models/m\n"
	"constraints:\n"
	"  target_speedup: 1.25\n"
	"  low_memory: false\n"
	"  max_draft_memory: 2GiB\n";

static void test_full__every_key_parsed(void **state)
{
	(void)state;
	/* the file really sets every key of the schema */
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const char *leaf = strrchr(cfg_schema[i].path, '.') + 1;
		char needle[96];
		snprintf(needle, sizeof(needle), " %s:", leaf);
		if (!strstr(full_yaml, needle))
			fail_msg("full_yaml lacks %s", cfg_schema[i].path);
	}
	struct cfg_cluster *c = parse_ok(full_yaml, "full.yaml", 0);
	assert_string_equal(c->name, "full");
	assert_string_equal(c->log_level, "debug");
	assert_string_equal(c->listen, "10.0.0.5:9000");
	assert_string_equal(c->auth_token, "s3cret");
	assert_int_equal(c->limits.frame_bytes, 8u << 20);
	assert_int_equal(c->limits.prompt_tokens, 1000);
	assert_int_equal(c->limits.max_tokens, 2000);
	assert_int_equal(c->limits.jobs, 3);
	assert_int_equal(c->limits.jobs_per_connection, 2);
	assert_int_equal(c->limits.connections, 4);
	assert_true(c->limits.idle_seconds == 12.5);
	assert_true(c->limits.frame_seconds == 0);
	assert_string_equal(c->target_model, "/models/t.gguf");
	assert_int_equal(c->tensor_parallel, 4);
	assert_int_equal(c->target_device, CFG_DEVICE_CUDA);
	assert_int_equal(c->target_dtype, CFG_DTYPE_BF16);
	assert_false(c->target_threads_auto);
	assert_int_equal(c->target_threads, 8);
	assert_int_equal(c->target_activations, KERN_ACT_F32);
	assert_int_equal(c->target_huge_pages, CFG_HUGE_OFF);
	assert_int_equal(c->target_slots, 16);
	assert_int_equal(c->target_context, 1024);
	assert_int_equal(c->target_batch_tokens, 48);
	assert_int_equal(c->draft_placement, CFG_PLACEMENT_LEADER);
	assert_int_equal(c->draft_device, CFG_DEVICE_CUDA);
	assert_false(c->draft_threads_auto);
	assert_int_equal(c->draft_threads, 2);
	assert_int_equal(c->draft_activations, KERN_ACT_F32);
	assert_int_equal(c->draft_huge_pages, CFG_HUGE_ON);
	assert_false(c->method_auto);
	assert_int_equal(c->method, DRAFT_METHOD_DRAFT_MODEL);
	assert_false(c->spec_tokens_auto);
	assert_int_equal(c->num_speculative_tokens, 7);
	assert_int_equal(c->max_speculative_tokens, 12);
	assert_false(c->pipeline);
	assert_false(c->measure);
	assert_true(c->expect_sampling);
	assert_false(c->adapt);
	assert_int_equal(c->adapt_interval, 32);
	assert_float_equal(c->adapt_hysteresis, 0.1, 1e-12);
	assert_false(c->lookup_min_auto || c->lookup_max_auto);
	assert_int_equal(c->prompt_lookup_min, 3);
	assert_int_equal(c->prompt_lookup_max, 3);
	assert_string_equal(c->draft_model, "/models/d.gguf");
	assert_string_equal(c->eagle_heads, "/models/e");
	assert_int_equal(c->eagle_tree, 1);
	assert_int_equal(c->eagle_width, 6);
	assert_int_equal(c->eagle_depth, 7);
	assert_string_equal(c->medusa_heads, "/models/m");
	assert_true(c->target_speedup == 1.25);
	assert_false(c->low_memory);
	assert_int_equal(c->max_draft_memory, 2ull << 30);
	cfg_destroy(c);
}

static void test_full__flow_style_and_quotes_parse_alike(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok(
		"{target: {model: '/m/x.gguf', threads: \"3\"}, speculation: {method: ngram},\n"
		" cluster: {name: \"a b\"}, draft: ~}\n",
		"flow.yaml", 0);
	assert_string_equal(c->target_model, "/m/x.gguf");
	assert_int_equal(c->target_threads, 3);
	assert_false(c->method_auto);
	assert_int_equal(c->method, DRAFT_METHOD_NGRAM);
	assert_string_equal(c->name, "a b");
	cfg_destroy(c);
}

static void test_null__means_default(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok("target:\n  model: /m\n  threads:\n"
					 "server:\n  auth_token: ~\ndraft:\n",
					 "n.yaml", 0);
	assert_true(c->target_threads_auto);
	assert_null(c->auth_token);
	assert_int_equal(c->draft_placement, CFG_PLACEMENT_RANK);
	cfg_destroy(c);
}

/* target.activations and draft.activations are two keys: each section's own value,
 * the other keeping the default (q8). */
static void test_activations__each_section_its_own(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok("target: {model: /m, activations: f32}\n", "a.yaml", 0);
	assert_int_equal(c->target_activations, KERN_ACT_F32);
	assert_int_equal(c->draft_activations, KERN_ACT_Q8);
	cfg_destroy(c);
	c = parse_ok("target: {model: /m}\ndraft: {activations: f32}\n", "a.yaml", 0);
	assert_int_equal(c->target_activations, KERN_ACT_Q8);
	assert_int_equal(c->draft_activations, KERN_ACT_F32);
	cfg_destroy(c);
	c = parse_ok("target: {model: /m, activations: q8}\ndraft: {activations: q8}\n",
		     "a.yaml", 0);
	assert_int_equal(c->target_activations, KERN_ACT_Q8);
	assert_int_equal(c->draft_activations, KERN_ACT_Q8);
	cfg_destroy(c);
}

/* target.huge_pages and draft.huge_pages: auto, on or off, each section its own;
 * what auto means is the kernel's setting, and on and off mean what they say. */
static void test_huge_pages__parse_and_decide(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok("target: {model: /m, huge_pages: off}\n"
					 "draft: {huge_pages: on}\n", "h.yaml", 0);
	assert_int_equal(c->target_huge_pages, CFG_HUGE_OFF);
	assert_int_equal(c->draft_huge_pages, CFG_HUGE_ON);
	assert_false(cfg_huge_pages_wanted(c->target_huge_pages));
	assert_true(cfg_huge_pages_wanted(c->draft_huge_pages));
	assert_true(cfg_huge_pages_wanted(CFG_HUGE_AUTO) == specd_huge_pages_offered());
	cfg_destroy(c);
	enum cfg_huge_pages h = CFG_HUGE_ON;
	assert_false(cfg_huge_pages_parse("yes", &h));
	assert_int_equal(h, CFG_HUGE_ON);
	assert_true(cfg_huge_pages_parse("auto", &h));
	assert_int_equal(h, CFG_HUGE_AUTO);
}

/* ---- paths, environment, sizes ---- */

static void test_paths__relative_resolve_against_file_folder(void **state)
{
	(void)state;
	char sub[300], path[400], want[400];
	snprintf(sub, sizeof(sub), "%s/conf", g_dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_true(ts_write_file(sub, "c.yaml",
				  "target:\n  model: ../models/./t.gguf\n"
				  "speculation:\n  eagle:\n    heads: heads//e\n"
				  "  medusa:\n    heads: /abs/../m\n"
				  "server:\n  listen: unix:run/specd.sock\n",
				  path, sizeof(path)));
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	assert_int_equal(cfg_load_file(path, 0, &c, NULL, NULL, &err), SPECD_OK);
	assert_string_equal(c->source_dir, sub);
	snprintf(want, sizeof(want), "%s/models/t.gguf", g_dir);
	assert_string_equal(c->target_model, want);
	snprintf(want, sizeof(want), "%s/heads/e", sub);
	assert_string_equal(c->eagle_heads, want);
	assert_string_equal(c->medusa_heads, "/m");
	snprintf(want, sizeof(want), "unix:%s/run/specd.sock", sub);
	assert_string_equal(c->listen, want);
	cfg_destroy(c);

	/* no file name: the working directory */
	c = parse_ok("target:\n  model: m/x.gguf\n", "", 0);
	assert_string_equal(c->target_model, cwd_join("m/x.gguf"));
	assert_string_equal(c->source_path, "");
	cfg_destroy(c);
	/* a relative file name: its folder under the working directory */
	c = parse_ok("target:\n  model: x.gguf\n", "a/b/c.yaml", 0);
	assert_string_equal(c->target_model, cwd_join("a/b/x.gguf"));
	cfg_destroy(c);
}

static void test_env__vars_defaults_and_tilde_expand(void **state)
{
	(void)state;
	char want[600], home[600] = "";
	if (getenv("HOME"))
		snprintf(home, sizeof(home), "%s", getenv("HOME"));
	setenv("SPECD_TEST_MODELS", "/opt/models", 1);
	setenv("SPECD_TEST_EMPTY", "", 1);
	setenv("SPECD_TEST_TOKEN", "tok-123", 1);
	setenv("HOME", "/home/tester", 1);
	unsetenv("SPECD_TEST_UNSET");
	struct cfg_cluster *c = parse_ok(
		"cluster:\n  name: cost$5-${SPECD_TEST_UNSET:-x}\n"
		"server:\n  listen: 10.1.1.1:80\n  auth_token: ${SPECD_TEST_TOKEN}\n"
		"target:\n  model: ${SPECD_TEST_MODELS}/t.gguf\n"
		"speculation:\n"
		"  draft_model:\n    model: ${SPECD_TEST_UNSET:-~/.cache}/d.gguf\n"
		"  eagle:\n    heads: ${SPECD_TEST_EMPTY:-/fallback}/e\n"
		"  medusa:\n    heads: ~/m\n",
		"env.yaml", 0);
	assert_string_equal(c->name, "cost$5-x");
	assert_string_equal(c->auth_token, "tok-123");
	assert_string_equal(c->target_model, "/opt/models/t.gguf");
	assert_string_equal(c->draft_model, "/home/tester/.cache/d.gguf");
	assert_string_equal(c->eagle_heads, "/fallback/e");
	assert_string_equal(c->medusa_heads, "/home/tester/m");
	cfg_destroy(c);

	/* ${VAR} set but empty stays empty (only :- falls back) */
	c = parse_ok("target:\n  model: /a${SPECD_TEST_EMPTY}/b\n", "env.yaml", 0);
	snprintf(want, sizeof(want), "/a/b");
	assert_string_equal(c->target_model, want);
	cfg_destroy(c);
	if (*home)
		setenv("HOME", home, 1);
	else
		unsetenv("HOME");
}

static void test_sizes__units_and_plain_bytes(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		uint64_t bytes;
	} cases[] = {
		{"0", 0},
		{"512", 512},
		{"512B", 512},
		{"64KiB", 64ull << 10},
		{"4 MiB", 4ull << 20},
		{"3GiB", 3ull << 30},
		{"2TiB", 2ull << 40},
		{"5KB", 5000},
		{"7MB", 7000000},
		{"3GB", 3000000000ull},
		{"1TB", 1000000000000ull},
		{"1PiB", 1ull << 50}, /* the documented maximum, in its own unit */
		{"1 PB", 1000000000000000ull},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[200];
		snprintf(text, sizeof(text),
			 "target:\n  model: /m\nconstraints:\n  max_draft_memory: %s\n",
			 cases[i].text);
		struct cfg_cluster *c = parse_ok(text, "s.yaml", 0);
		if (c->max_draft_memory != cases[i].bytes)
			fail_msg("%s gave %llu", cases[i].text,
				 (unsigned long long)c->max_draft_memory);
		cfg_destroy(c);
	}
	char buf[32];
	cfg_size_format(4u << 20, buf, sizeof(buf));
	assert_string_equal(buf, "4MiB");
	cfg_size_format(1000, buf, sizeof(buf));
	assert_string_equal(buf, "1000B");
}

/* ---- errors ---- */

#define M "target:\n  model: /m.gguf\n"

struct bad_case {
	const char *yaml;
	const char *msg; /* exact */
};

static const struct bad_case bad_cases[] = {
	{"targt:\n  model: x\n", "bad.yaml:1: unknown key 'targt' (did you mean 'target'?)"},
	{M "speculation:\n  ngram:\n    promt_lookup_min: 3\n",
	 "bad.yaml:5: unknown key 'speculation.ngram.promt_lookup_min' (did you mean "
	 "'prompt_lookup_min'?)"},
	{M "server:\n  color: blue\n", "bad.yaml:4: unknown key 'server.color'"},
	{M "<<: {a: 1}\n", "bad.yaml:3: unknown key '<<'"},
	{"target:\n  model: /a\n  model: /b\n",
	 "bad.yaml:3: duplicate key 'target.model' (first on line 2)"},
	{M "target:\n  threads: 2\n", "bad.yaml:3: duplicate key 'target' (first on line 1)"},
	{M "  tensor_parallel:\n    x: 1\n",
	 "bad.yaml:3: 'target.tensor_parallel' expects an integer, not a mapping"},
	{"target:\n  model: [a, b]\n", "bad.yaml:2: 'target.model' expects a path, not a sequence"},
	{M "  device: {gpu: 1}\n",
	 "bad.yaml:3: 'target.device' expects one of cpu, cuda, emulated, not a mapping"},
	{M "draft: rank\n", "bad.yaml:3: 'draft' expects a mapping of keys, not a scalar"},
	{M "speculation:\n  ngram: [1, 2]\n",
	 "bad.yaml:4: 'speculation.ngram' expects a mapping of keys, not a sequence"},
	{M "  threads: abc\n", "bad.yaml:3: 'target.threads' expects auto or an integer, got 'abc'"},
	{M "  threads: 0x10\n", "bad.yaml:3: 'target.threads' expects auto or an integer, got '0x10'"},
	{M "  threads: 2.5\n", "bad.yaml:3: 'target.threads' expects auto or an integer, got '2.5'"},
	{M "speculation:\n  pipeline: yes?\n",
	 "bad.yaml:4: 'speculation.pipeline' expects true or false, got 'yes?'"},
	{M "constraints:\n  low_memory: yes\n",
	 "bad.yaml:4: 'constraints.low_memory' expects true or false, got 'yes'"},
	{M "  tensor_parallel: 65\n", "bad.yaml:3: 'target.tensor_parallel' is 65, outside 1..64"},
	{M "  tensor_parallel: -1\n", "bad.yaml:3: 'target.tensor_parallel' is -1, outside 1..64"},
	{M "  threads: 99999999999999999999999\n",
	 "bad.yaml:3: 'target.threads' is 99999999999999999999999, outside 1..256"},
	{M "constraints:\n  target_speedup: 101\n",
	 "bad.yaml:4: 'constraints.target_speedup' is 101, outside 0..100"},
	{M "constraints:\n  target_speedup: fast\n",
	 "bad.yaml:4: 'constraints.target_speedup' expects a number, got 'fast'"},
	{M "constraints:\n  target_speedup: .nan\n",
	 "bad.yaml:4: 'constraints.target_speedup' expects a number, got '.nan'"},
	{M "server:\n  limits:\n    frame_bytes: 4XB\n",
	 "bad.yaml:5: 'server.limits.frame_bytes' expects a size like 4096, 64KiB or 4MiB, "
	 "got '4XB'"},
	{M "server:\n  limits:\n    frame_bytes: 2GiB\n",
	 "bad.yaml:5: 'server.limits.frame_bytes' is 2GiB, outside 1KiB..1GiB"},
	{M "constraints:\n  max_draft_memory: 99999999999TiB\n",
	 "bad.yaml:4: 'constraints.max_draft_memory' is 99999999999TiB, outside 0B..1PiB"},
	{M "  device: gpu\n",
	 "bad.yaml:3: 'target.device' has unknown value 'gpu' (allowed: cpu, cuda, emulated)"},
	{M "  activations: int4\n",
	 "bad.yaml:3: 'target.activations' has unknown value 'int4' (allowed: f32, q8)"},
	{M "draft:\n  activations: Q8\n",
	 "bad.yaml:4: 'draft.activations' has unknown value 'Q8' (allowed: f32, q8)"},
	{M "  huge_pages: yes\n",
	 "bad.yaml:3: 'target.huge_pages' has unknown value 'yes' (allowed: auto, on, off)"},
	{M "cluster:\n  log_level: verbose\n",
	 "bad.yaml:4: 'cluster.log_level' has unknown value 'verbose' (allowed: error, warn, "
	 "info, debug)"},
	{M "speculation:\n  method: lookahead\n",
	 "bad.yaml:4: 'speculation.method' has unknown value 'lookahead' (allowed: auto, none, "
	 "ngram, draft_model, eagle, medusa)"},
	{M "speculation:\n  num_speculative_tokens: many\n",
	 "bad.yaml:4: 'speculation.num_speculative_tokens' expects auto or an integer, got "
	 "'many'"},
	{M "speculation:\n  num_speculative_tokens: 33\n",
	 "bad.yaml:4: 'speculation.num_speculative_tokens' is 33, outside 1..32"},
	{"cluster:\n  name: x\n", "bad.yaml:1: missing required key 'target.model'"},
	{"cluster:\n  name: x\ntarget:\n  threads: 2\n",
	 "bad.yaml:3: missing required key 'target.model'"},
	{"target:\n  model:\n", "bad.yaml:2: 'target.model' has no value"},
	{M "cluster:\n  name: \"\"\n", "bad.yaml:4: 'cluster.name' must not be empty"},
	{M "cluster:\n  name: \"a\\0b\"\n", "bad.yaml:4: 'cluster.name' contains a NUL character"},
	{"", "bad.yaml:1: empty cluster file (at least 'target.model' is required)"},
	{"# only a comment\n\n", "bad.yaml:1: empty cluster file (at least 'target.model' is "
				 "required)"},
	{"hello\n", "bad.yaml:1: the top level must be a mapping of sections, not a scalar"},
	{"- a\n- b\n", "bad.yaml:1: the top level must be a mapping of sections, not a sequence"},
	{"? [a, b]\n: 1\n", "bad.yaml:1: a key must be a scalar, not a sequence"},
	{"target: {model: x\n",
	 "bad.yaml:2: invalid YAML: did not find expected ',' or '}' (while parsing a flow "
	 "mapping)"},
	{"target:\n\tmodel: x\n",
	 "bad.yaml:2: invalid YAML: found character that cannot start any token (while "
	 "scanning for the next token)"},
	{M "cluster:\n  name: a\x01z\n",
	 "bad.yaml:4: invalid YAML: control characters are not allowed"},
	{M "cluster:\n  name: \xff\xfe\n",
	 "bad.yaml:4: invalid YAML: invalid leading UTF-8 octet"},
	{"target:\n  model: *nope\n",
	 "bad.yaml:2: invalid YAML: found undefined alias"},
	{"target:\n  model: /m\n  threads: &n 2\ndraft:\n  threads: *n\n",
	 "bad.yaml:5: 'draft.threads' uses a YAML alias; aliases are not supported"},
	{"base: &b {model: /m}\ntarget: *b\n", "bad.yaml:1: unknown key 'base'"},
	{"target: &t\n  model: /m\ndraft: *t\n",
	 "bad.yaml:3: 'draft' uses a YAML alias; aliases are not supported"},
	{M "---\ntarget:\n  model: /n\n",
	 "bad.yaml:3: a second YAML document; a cluster file holds exactly one"},
	{"target:\n  model: ${SPECD_TEST_UNSET}/m.gguf\n",
	 "bad.yaml:2: 'target.model' uses environment variable 'SPECD_TEST_UNSET', which is "
	 "not set"},
	{"target:\n  model: ${1X}/m\n",
	 "bad.yaml:2: 'target.model' has a bad variable reference '${1X}' (write ${NAME} or "
	 "${NAME:-default})"},
	{"target:\n  model: ${HOME/m\n", "bad.yaml:2: 'target.model' has an unterminated '${'"},
	{"target:\n  model: ~bob/m\n",
	 "bad.yaml:2: 'target.model' uses '~user', which is not supported"},
	{M "speculation:\n  ngram:\n    prompt_lookup_min: 6\n    prompt_lookup_max: 5\n",
	 "bad.yaml:5: 'speculation.ngram.prompt_lookup_min' (6) is greater than "
	 "'speculation.ngram.prompt_lookup_max' (5)"},
	{M "speculation:\n  ngram:\n    prompt_lookup_max: 1\n",
	 "bad.yaml:5: 'speculation.ngram.prompt_lookup_max' (1) is less than the default "
	 "'prompt_lookup_min' (2): set 'prompt_lookup_min' too"},
	{M "speculation:\n  method: draft_model\n",
	 "bad.yaml:4: 'speculation.method' is draft_model, which needs "
	 "'speculation.draft_model.model'"},
	{M "speculation:\n  method: eagle\n",
	 "bad.yaml:4: 'speculation.method' is eagle, which needs 'speculation.eagle.heads'"},
	{M "speculation:\n  method: medusa\n  medusa:\n    heads: ~\n",
	 "bad.yaml:4: 'speculation.method' is medusa, which needs 'speculation.medusa.heads'"},
	{M "speculation:\n  method: eagle\n  eagle:\n    heads: /h\n"
	   "constraints:\n  low_memory: true\n",
	 "bad.yaml:4: 'speculation.method' is eagle, which loads extra weights that "
	 "'constraints.low_memory' rules out"},
	{M "server:\n  listen: 0.0.0.0:7070\n",
	 "bad.yaml:4: 'server.listen' is 0.0.0.0:7070, which is not loopback: set "
	 "'server.auth_token'"},
	{M "server:\n  listen: 127.example.com:7070\n",
	 "bad.yaml:4: 'server.listen' is 127.example.com:7070, which is not loopback: set "
	 "'server.auth_token'"},
	{M "server:\n  listen: host\n",
	 "bad.yaml:4: 'server.listen' expects HOST:PORT or unix:PATH, got 'host'"},
	{M "server:\n  listen: \"localhost:\"\n",
	 "bad.yaml:4: 'server.listen' expects HOST:PORT or unix:PATH, got 'localhost:'"},
	{M "server:\n  listen: ::1:7070\n",
	 "bad.yaml:4: 'server.listen' expects HOST:PORT or unix:PATH, got '::1:7070'"},
	{M "server:\n  listen: 127.0.0.1:70000\n",
	 "bad.yaml:4: 'server.listen' port 70000 is outside 1..65535"},
	{M "server:\n  listen: localhost:0\n",
	 "bad.yaml:4: 'server.listen' port 0 is outside 1..65535"},
	/* keys written with dots would escape the duplicate check: refused */
	{M "cluster: {name: first}\ncluster.name: second\n",
	 "bad.yaml:4: dotted key 'cluster.name' is not supported: write it nested (cluster: "
	 "{name: ...})"},
	{M "speculation: {method: ngram}\nspeculation.method: none\n",
	 "bad.yaml:4: dotted key 'speculation.method' is not supported: write it nested "
	 "(speculation: {method: ...})"},
	{"target.model: /m\n",
	 "bad.yaml:1: dotted key 'target.model' is not supported: write it nested (target: "
	 "{model: ...})"},
	{M "speculation:\n  ngram.prompt_lookup_min: 3\n",
	 "bad.yaml:4: dotted key 'ngram.prompt_lookup_min' in 'speculation' is not supported: "
	 "write it nested (ngram: {prompt_lookup_min: ...})"},
	{M "server.limits:\n  jobs: 3\n",
	 "bad.yaml:3: dotted key 'server.limits' is not supported: write it nested (server: "
	 "{limits: ...})"},
	{M "cluster.color: x\n", "bad.yaml:3: unknown key 'cluster.color'"},
	/* a ${ inside a default, or a } left over, would give a wrong value silently */
	{M "cluster:\n  name: \"${SPECD_TEST_SET:-${SPECD_TEST_UNSET}}\"\n",
	 "bad.yaml:4: 'cluster.name' has '${' inside the default of "
	 "'${SPECD_TEST_SET:-${SPECD_TEST_UNSET}' (a default is literal text; nesting is not "
	 "supported)"},
	{M "cluster:\n  name: \"${SPECD_TEST_UNSET:-${SPECD_TEST_SET}}\"\n",
	 "bad.yaml:4: 'cluster.name' has '${' inside the default of "
	 "'${SPECD_TEST_UNSET:-${SPECD_TEST_SET}' (a default is literal text; nesting is not "
	 "supported)"},
	{M "cluster:\n  name: \"${SPECD_TEST_UNSET:-{x}}\"\n",
	 "bad.yaml:4: 'cluster.name' has a stray '}' right after '${SPECD_TEST_UNSET:-{x}' "
	 "(nesting is not supported)"},
	{"target:\n  model: /m/${SPECD_TEST_SET}}/t.gguf\n",
	 "bad.yaml:2: 'target.model' has a stray '}' right after '${SPECD_TEST_SET}' (nesting "
	 "is not supported)"},
	/* YAML tags: every explicit one, even those naming what the value is anyway */
	{M "server:\n  auth_token: !!binary aGVsbG8=\n",
	 "bad.yaml:4: 'server.auth_token' has the YAML tag '!!binary'; tags are not supported"},
	{M "  threads: !!null 4\n",
	 "bad.yaml:3: 'target.threads' has the YAML tag '!!null'; tags are not supported"},
	{"target:\n  model: !foo m.gguf\n",
	 "bad.yaml:2: 'target.model' has the YAML tag '!foo'; tags are not supported"},
	{M "speculation:\n  method: !!str ngram\n",
	 "bad.yaml:4: 'speculation.method' has the YAML tag '!!str'; tags are not supported"},
	{M "cluster:\n  name: ! x\n",
	 "bad.yaml:4: 'cluster.name' has the YAML tag '!'; tags are not supported"},
	{M "cluster:\n  name: !<tag:example.com,2000:x> y\n",
	 "bad.yaml:4: 'cluster.name' has the YAML tag '!<tag:example.com,2000:x>'; tags are "
	 "not supported"},
	{M "cluster:\n  !!str name: x\n",
	 "bad.yaml:4: 'cluster.name' has the YAML tag '!!str'; tags are not supported"},
	{M "draft: !!map {threads: 2}\n",
	 "bad.yaml:3: 'draft' has the YAML tag '!!map'; tags are not supported"},
	{"--- !!map\ntarget:\n  model: /m\n",
	 "bad.yaml:1: YAML tags such as '!!map' are not supported"},
	/* a static EAGLE tree must hold K */
	{M "speculation:\n  method: eagle\n  num_speculative_tokens: 20\n"
	   "  eagle: {heads: /h, tree: static, depth: 1}\n",
	 "bad.yaml:5: 'speculation.num_speculative_tokens' (20) does not fit the static EAGLE "
	 "tree of 'speculation.eagle.depth' 1 (at most 10 nodes): lower it or deepen the tree"},
	{M "speculation:\n  max_speculative_tokens: 11\n"
	   "  eagle:\n    heads: /h\n    tree: static\n    depth: 1\n",
	 "bad.yaml:4: 'speculation.max_speculative_tokens' (11) does not fit the static EAGLE "
	 "tree of 'speculation.eagle.depth' 1 (at most 10 nodes): lower it or deepen the tree"},
	/* loopback is decided on the address, not on how the text starts */
	{M "server:\n  listen: 127.999.999.999:80\n",
	 "bad.yaml:4: 'server.listen' is 127.999.999.999:80, which is not loopback: set "
	 "'server.auth_token'"},
	{M "server:\n  listen: 127.0.0.1.:80\n",
	 "bad.yaml:4: 'server.listen' is 127.0.0.1.:80, which is not loopback: set "
	 "'server.auth_token'"},
	{M "server:\n  listen: \"[::2]:80\"\n",
	 "bad.yaml:4: 'server.listen' is [::2]:80, which is not loopback: set "
	 "'server.auth_token'"},
	{M "constraints:\n  max_draft_memory: 1025PiB\n",
	 "bad.yaml:4: 'constraints.max_draft_memory' is 1025PiB, outside 0B..1PiB"},
	{M "constraints:\n  max_draft_memory: 16384PiB\n", /* 2^64: overflows */
	 "bad.yaml:4: 'constraints.max_draft_memory' is 16384PiB, outside 0B..1PiB"},
	{M "server:\n  listen: unix:/" /* 120 bytes of path */
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	 "bad.yaml:4: 'server.listen' socket path is 120 bytes, longer than 107"},
};

static void test_bad__each_names_file_line_and_key(void **state)
{
	(void)state;
	unsetenv("SPECD_TEST_UNSET");
	setenv("SPECD_TEST_SET", "val", 1);
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct cfg_cluster *c = (struct cfg_cluster *)&c; /* must stay untouched */
		struct cfg_cluster *const sentinel = c;
		struct specd_error err = {0};
		enum specd_status st = cfg_parse_buffer(bad_cases[i].yaml, strlen(bad_cases[i].yaml),
							"bad.yaml", 0, &c, &err);
		if (st != SPECD_CONFIG || strcmp(err.msg, bad_cases[i].msg) != 0)
			fail_msg("case %zu: got %s \"%s\"\n  want CONFIG \"%s\"", i,
				 specd_status_name(st), err.msg, bad_cases[i].msg);
		assert_ptr_equal(c, sentinel);
		assert_int_equal(err.code, SPECD_CONFIG);
	}
	assert_true(sizeof(bad_cases) / sizeof(bad_cases[0]) >= 25);
}

static void test_bad__listen_forms_that_pass(void **state)
{
	(void)state;
	static const char *const ok[] = {"127.0.0.1:1", "localhost:65535", "[::1]:7070",
					 "127.1.2.3:80", "127.255.255.254:80",
					 "[0:0:0:0:0:0:0:1]:7070", "LocalHost:80"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[200];
		snprintf(text, sizeof(text), M "server:\n  listen: \"%s\"\n", ok[i]);
		struct cfg_cluster *c = parse_ok(text, "l.yaml", 0);
		assert_string_equal(c->listen, ok[i]);
		cfg_destroy(c);
	}
	struct cfg_cluster *c = parse_ok(M "server:\n  listen: \"[2001:db8::1]:7070\"\n"
					   "  auth_token: t\n", "l.yaml", 0);
	assert_string_equal(c->listen, "[2001:db8::1]:7070");
	cfg_destroy(c);
}

static void test_bad__static_eagle_trees_that_pass(void **state)
{
	(void)state;
	static const char *const ok[] = {
		/* K = 10 fills depth 1 */
		"speculation:\n  method: eagle\n  num_speculative_tokens: 10\n"
		"  eagle: {heads: /h, tree: static, depth: 1}\n",
		/* the default max_speculative_tokens (8) under auto */
		"speculation:\n  eagle: {heads: /h, tree: static, depth: 1}\n",
		"speculation:\n  method: eagle\n  num_speculative_tokens: 32\n"
		"  eagle: {heads: /h, tree: static, depth: 2}\n",
		/* a dynamic tree, or EAGLE never run, builds no static tree */
		"speculation:\n  method: eagle\n  num_speculative_tokens: 20\n"
		"  eagle: {heads: /h, tree: dynamic, depth: 1}\n",
		"speculation:\n  method: ngram\n  num_speculative_tokens: 20\n"
		"  eagle: {heads: /h, tree: static, depth: 1}\n",
		"speculation:\n  max_speculative_tokens: 20\n  eagle: {tree: static, depth: 1}\n",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[400];
		snprintf(text, sizeof(text), M "%s", ok[i]);
		cfg_destroy(parse_ok(text, "e.yaml", 0));
	}
}

/* A UTF-16 file (libyaml reads its byte-order mark and converts it) is refused: the
 * format is UTF-8. */
static void test_bad__utf16_file_refused(void **state)
{
	(void)state;
	static const char utf8[] = "target: {model: /m}\n";
	char buf[2 * sizeof(utf8) + 2];
	size_t n = 0;
	buf[n++] = (char)0xff; /* UTF-16LE byte-order mark */
	buf[n++] = (char)0xfe;
	for (size_t i = 0; utf8[i]; i++) {
		buf[n++] = utf8[i];
		buf[n++] = '\0';
	}
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	assert_int_equal(cfg_parse_buffer(buf, n, "u.yaml", 0, &c, &err), SPECD_CONFIG);
	assert_null(c);
	assert_string_equal(err.msg, "u.yaml:1: the file is UTF-16 (it starts with a UTF-16 "
				     "byte-order mark); a cluster file is UTF-8");
	/* a UTF-8 byte-order mark is fine */
	c = parse_ok("\xef\xbb\xbftarget: {model: /m}\n", "u.yaml", 0);
	cfg_destroy(c);
}

static void test_check_paths__missing_model_named(void **state)
{
	(void)state;
	char path[400], want[900], model[400];
	assert_true(ts_write_file(g_dir, "p.yaml", "cluster:\n  name: p\ntarget:\n"
				  "  model: nothere.gguf\n", path, sizeof(path)));
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	assert_int_equal(cfg_load_file(path, CFG_CHECK_PATHS, &c, NULL, NULL, &err),
			 SPECD_CONFIG);
	assert_null(c);
	snprintf(want, sizeof(want),
		 "%s:4: 'target.model' names '%s/nothere.gguf', which cannot be accessed: "
		 "No such file or directory", path, g_dir);
	assert_string_equal(err.msg, want);
	/* without the flag the same file parses (other ranks' view) */
	assert_int_equal(cfg_load_file(path, 0, &c, NULL, NULL, &err), SPECD_OK);
	cfg_destroy(c);
	/* and with it, once the file exists */
	assert_true(ts_write_file(g_dir, "nothere.gguf", "x", model, sizeof(model)));
	c = NULL;
	assert_int_equal(cfg_load_file(path, CFG_CHECK_PATHS, &c, NULL, NULL, &err), SPECD_OK);
	assert_string_equal(c->target_model, model);
	cfg_destroy(c);
}

static void test_load__unreadable_file_says_why(void **state)
{
	(void)state;
	char want[600], path[400];
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	snprintf(path, sizeof(path), "%s/absent.yaml", g_dir);
	assert_int_equal(cfg_load_file(path, 0, &c, NULL, NULL, &err), SPECD_IO);
	snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
	assert_string_equal(err.msg, want);
	assert_int_equal(cfg_load_file(g_dir, 0, &c, NULL, NULL, &err), SPECD_IO);
	snprintf(want, sizeof(want), "%s: cannot read: Is a directory", g_dir);
	assert_string_equal(err.msg, want);
	assert_null(c);
	assert_int_equal(cfg_load_file(NULL, 0, &c, NULL, NULL, &err), SPECD_INVAL);
	assert_int_equal(cfg_parse_buffer(NULL, 3, "x", 0, &c, &err), SPECD_INVAL);
	assert_null(c);
}

/* ---- buffer == file, world size ---- */

static void assert_same_config(const struct cfg_cluster *a, const struct cfg_cluster *b)
{
	assert_string_equal(a->source_path, b->source_path);
	assert_string_equal(a->source_dir, b->source_dir);
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const struct cfg_key *k = &cfg_schema[i];
		const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
		size_t n = 0;
		switch (k->store) {
		case CFG_STORE_STR: {
			const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
			if (!sa || !sb)
				assert_ptr_equal(sa, sb);
			else
				assert_string_equal(sa, sb);
			continue;
		}
		case CFG_STORE_INT: n = sizeof(int); break;
		case CFG_STORE_U32: n = sizeof(uint32_t); break;
		case CFG_STORE_U64: n = sizeof(uint64_t); break;
		case CFG_STORE_DOUBLE: n = sizeof(double); break;
		case CFG_STORE_BOOL: n = sizeof(bool); break;
		}
		if (memcmp(fa, fb, n) != 0)
			fail_msg("%s differs", k->path);
	}
	assert_int_equal(a->method_auto, b->method_auto);
	assert_int_equal(a->spec_tokens_auto, b->spec_tokens_auto);
}

static void test_buffer__equals_file(void **state)
{
	(void)state;
	char path[400], *text = NULL;
	size_t len = 0;
	assert_true(ts_write_file(g_dir, "full.yaml", full_yaml, path, sizeof(path)));
	struct cfg_cluster *from_file = NULL, *from_buf = NULL;
	struct specd_error err = {0};
	assert_int_equal(cfg_load_file(path, 0, &from_file, &text, &len, &err), SPECD_OK);
	assert_int_equal(len, strlen(full_yaml));
	assert_memory_equal(text, full_yaml, len);
	assert_int_equal(text[len], '\0');
	assert_int_equal(cfg_parse_buffer(text, len, path, 0, &from_buf, &err), SPECD_OK);
	assert_same_config(from_file, from_buf);
	specd_free(text);
	cfg_destroy(from_file);
	cfg_destroy(from_buf);
}

static void test_world_size__counts_draft_rank(void **state)
{
	(void)state;
	struct cfg_cluster *c = parse_ok(M "  tensor_parallel: 2\n", "w.yaml", 0);
	assert_int_equal(c->draft_placement, CFG_PLACEMENT_RANK);
	assert_int_equal(cfg_world_size(c), 3);
	cfg_destroy(c);
	c = parse_ok(M "  tensor_parallel: 4\ndraft:\n  placement: leader\n", "w.yaml", 0);
	assert_int_equal(cfg_world_size(c), 4);
	cfg_destroy(c);
	assert_string_equal(cfg_placement_name(CFG_PLACEMENT_RANK), "rank");
	assert_string_equal(cfg_placement_name(CFG_PLACEMENT_LEADER), "leader");
	assert_string_equal(cfg_device_name(CFG_DEVICE_CPU), "cpu");
	assert_string_equal(cfg_device_name(CFG_DEVICE_CUDA), "cuda");
	assert_string_equal(cfg_device_name(CFG_DEVICE_EMULATED), "emulated");
	assert_string_equal(cfg_device_name((enum cfg_device)7), "?");
	enum cfg_device d = CFG_DEVICE_CPU;
	assert_true(cfg_device_parse("emulated", &d));
	assert_int_equal(d, CFG_DEVICE_EMULATED);
	assert_true(cfg_device_parse("cuda", &d));
	assert_int_equal(d, CFG_DEVICE_CUDA);
	assert_false(cfg_device_parse("gpu", &d));
	assert_false(cfg_device_parse(NULL, &d));
	assert_int_equal(d, CFG_DEVICE_CUDA); /* untouched on failure */
	assert_string_equal(cfg_dtype_name(CFG_DTYPE_BF16), "bf16");
}

/* ---- allocation failures ---- */

static void nomem_loop(const char *path, bool from_file)
{
	const char *text = full_yaml;
	long n;
	for (n = 1; n < 10000; n++) {
		struct cfg_cluster *c = NULL;
		struct specd_error err = {0};
		char *raw = NULL;
		size_t len = 0;
		specd_alloc_fail_after(n);
		enum specd_status st = from_file
			? cfg_load_file(path, 0, &c, &raw, &len, &err)
			: cfg_parse_buffer(text, strlen(text), path, 0, &c, &err);
		specd_alloc_fail_reset();
		if (st == SPECD_OK) {
			assert_non_null(c);
			cfg_destroy(c);
			specd_free(raw);
			break;
		}
		if (st != SPECD_NOMEM)
			fail_msg("n=%ld: %s %s", n, specd_status_name(st), err.msg);
		assert_null(c);
		assert_null(raw);
	}
	assert_true(n > 3 && n < 10000); /* it allocates, and it finally succeeded */
}

static void test_nomem__every_allocation_fails_cleanly(void **state)
{
	(void)state;
	char path[400];
	assert_true(ts_write_file(g_dir, "full.yaml", full_yaml, path, sizeof(path)));
	nomem_loop("full.yaml", false);
	nomem_loop(path, true);
}

/* ---- hostile input ---- */

static void expect_config_error(const char *text, size_t len, const char *prefix)
{
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	enum specd_status st = cfg_parse_buffer(text, len, "h.yaml", 0, &c, &err);
	if (st == SPECD_OK) {
		cfg_destroy(c);
		return;
	}
	if (st != SPECD_CONFIG)
		fail_msg("%s: %s", specd_status_name(st), err.msg);
	assert_null(c);
	if (prefix && strncmp(err.msg, prefix, strlen(prefix)) != 0)
		fail_msg("message \"%s\" does not start with \"%s\"", err.msg, prefix);
}

static void test_hostile__never_crashes(void **state)
{
	(void)state;
	size_t big = 900000;
	char *buf = malloc(CFG_MAX_FILE_BYTES + 16);
	assert_non_null(buf);

	/* deep nesting, flow and block */
	memset(buf, '[', big);
	expect_config_error(buf, big, "h.yaml:1: [ ] and { } nest deeper than 64 levels");
	memset(buf, '[', 64);
	memset(buf + 64, ']', 64);
	expect_config_error(buf, 128, "h.yaml:1: the top level must be a mapping of sections, "
				      "not a sequence");
	for (size_t i = 0; i < big / 3; i++)
		memcpy(buf + 3 * i, "{a:", 3);
	expect_config_error(buf, big / 3 * 3, "h.yaml:");
	size_t o = 0;
	for (int d = 0; d < 2000 && o + 4100 < big; d++) {
		memset(buf + o, ' ', (size_t)d);
		o += (size_t)d;
		memcpy(buf + o, "a:\n", 3);
		o += 3;
	}
	expect_config_error(buf, o, "h.yaml:1: unknown key 'a'");

	/* a huge scalar value and a huge key */
	o = (size_t)snprintf(buf, 64, M "cluster:\n  name: ");
	memset(buf + o, 'x', big);
	o += big;
	buf[o++] = '\n';
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	assert_int_equal(cfg_parse_buffer(buf, o, "h.yaml", 0, &c, &err), SPECD_OK);
	assert_int_equal(strlen(c->name), big);
	cfg_destroy(c);
	/* (YAML limits simple keys to 1024 characters; "? KEY" has no limit) */
	memcpy(buf, "? ", 2);
	memset(buf + 2, 'k', big);
	memcpy(buf + 2 + big, "\n: 1\n", 5);
	expect_config_error(buf, big + 7, "h.yaml:1: unknown key 'kkkkkkkk");
	assert_int_equal(cfg_parse_buffer(buf, big + 7, "h.yaml", 0, &c, &err), SPECD_CONFIG);
	assert_true(strlen(err.msg) < 100); /* the key is cut in the message */

	/* over the size cap */
	memset(buf, '#', CFG_MAX_FILE_BYTES + 1);
	assert_int_equal(cfg_parse_buffer(buf, CFG_MAX_FILE_BYTES + 1, "h.yaml", 0, &c, &err),
			 SPECD_CONFIG);
	assert_string_equal(err.msg, "h.yaml: too large (1048577 bytes; the limit is 1048576)");

	/* an alias cycle and many aliases of one anchor */
	expect_config_error("target: &a {model: *a}\n", 23, "h.yaml:1: 'target.model' uses a YAML");
	o = (size_t)snprintf(buf, 64, "a: &x [1, 2]\nb: [");
	for (int i = 0; i < 10000; i++)
		o += (size_t)snprintf(buf + o, 8, "*x, ");
	o += (size_t)snprintf(buf + o, 8, "*x]\n");
	expect_config_error(buf, o, "h.yaml:1: unknown key 'a'");

	/* binary garbage (fixed seed) */
	unsigned seed = 12345;
	for (int round = 0; round < 200; round++) {
		size_t n = (size_t)(rand_r(&seed) % 4096);
		for (size_t i = 0; i < n; i++)
			buf[i] = (char)(rand_r(&seed) & 0xff);
		expect_config_error(buf, n, "h.yaml");
	}
	/* byte flips of a valid file: OK or a config error, never anything else */
	size_t flen = strlen(full_yaml);
	for (int round = 0; round < 3000; round++) {
		memcpy(buf, full_yaml, flen);
		int flips = 1 + rand_r(&seed) % 4;
		for (int f = 0; f < flips; f++) {
			static const char pool[] = ":-[]{}&*!|>'\"%@`#,?\n \t\\0~$";
			size_t at = (size_t)rand_r(&seed) % flen;
			buf[at] = (rand_r(&seed) & 1) ? pool[rand_r(&seed) % (sizeof(pool) - 1)]
						      : (char)(rand_r(&seed) & 0xff);
		}
		expect_config_error(buf, flen, "h.yaml");
	}
	free(buf);
}

/* A quote inside a plain scalar, a block scalar or a comment opens nothing: the brackets
 * after it still count against the flow depth (libyaml's time is quadratic in it; a
 * pre-scan that took such a quote for a string let 1 MiB of them through). */
static void test_hostile__quote_in_plain_scalar_hides_no_brackets(void **state)
{
	(void)state;
	static const struct {
		const char *before, *after;
	} quoted[] = {
		{"x: don 't\ny: ", "\n"},   /* block: the "quote" ran to the end of the file */
		{"{x: don 't, y: ", "}\n"}, /* flow */
		{"x: |\n  '\ny: ", "\n"},   /* a quote starting a line of a block scalar */
		{"x: a\"b\ny: ", "\n"},     /* a double quote inside a plain scalar */
		{"# it's\ny: ", "\n"},      /* and inside a comment */
	};
	char *buf = malloc(9000);
	assert_non_null(buf);
	for (size_t q = 0; q < sizeof(quoted) / sizeof(quoted[0]); q++) {
		size_t o = (size_t)snprintf(buf, 64, "%s", quoted[q].before);
		memset(buf + o, '[', 4000);
		memset(buf + o + 4000, ']', 4000);
		o += 8000;
		o += (size_t)snprintf(buf + o, 8, "%s", quoted[q].after);
		int line = 1;
		for (const char *p = quoted[q].before; *p; p++)
			line += *p == '\n';
		char want[64];
		snprintf(want, sizeof(want), "h.yaml:%d: [ ] and { } nest deeper than 64 levels",
			 line);
		struct specd_error err = {0};
		struct cfg_cluster *c = NULL;
		assert_int_equal(cfg_parse_buffer(buf, o, "h.yaml", 0, &c, &err), SPECD_CONFIG);
		assert_null(c);
		if (strcmp(err.msg, want) != 0)
			fail_msg("case %zu: \"%s\", want \"%s\"", q, err.msg, want);
	}
	free(buf);
}

/* ---- schema, shipped files, generated docs ---- */

static void test_schema__consistent_with_enums_and_sections(void **state)
{
	(void)state;
	long m = cfg_schema_index("speculation.method");
	assert_true(m >= 0);
	for (int i = 0; i < DRAFT_METHOD_COUNT; i++)
		assert_string_equal(cfg_schema[m].names[i], draft_method_name((enum draft_method)i));
	assert_null(cfg_schema[m].names[DRAFT_METHOD_COUNT]);
	/* activations: the names are kern_act's, index for index, in both sections */
	const char *const acts[] = {"target.activations", "draft.activations"};
	for (size_t a = 0; a < 2; a++) {
		long i = cfg_schema_index(acts[a]);
		assert_true(i >= 0);
		for (int v = KERN_ACT_F32; v <= KERN_ACT_Q8; v++)
			assert_string_equal(cfg_schema[i].names[v], kern_act_name((enum kern_act)v));
		assert_null(cfg_schema[i].names[KERN_ACT_Q8 + 1]);
	}
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const struct cfg_key *k = &cfg_schema[i];
		bool found = false;
		for (size_t s = 0; s < cfg_section_count; s++) {
			size_t n = strlen(cfg_sections[s].name);
			found |= strncmp(k->path, cfg_sections[s].name, n) == 0 && k->path[n] == '.';
		}
		if (!found)
			fail_msg("%s has no section entry", k->path);
		assert_non_null(k->doc);
		assert_true(!(k->flags & CFG_KEY_REQUIRED) || !k->def);
		if (k->type == CFG_TYPE_ENUM)
			assert_non_null(k->names);
	}
}

static void test_examples__shipped_configs_parse(void **state)
{
	(void)state;
	char path[600], model[600];
	struct cfg_cluster *c = NULL;
	struct specd_error err = {0};
	if (!getenv("SPECD_MODELS")) {
		char models[600];
		snprintf(models, sizeof(models), "%s/../shared/models", ts_source_dir());
		setenv("SPECD_MODELS", models, 1);
	}
	snprintf(path, sizeof(path), "%s/configs/local.yaml", ts_source_dir());
	unsigned flags = ts_model_path("stories260K.gguf", model, sizeof(model)) ? CFG_CHECK_PATHS
										  : 0;
	if (cfg_load_file(path, flags, &c, NULL, NULL, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	assert_int_equal(c->tensor_parallel, 2);
	assert_int_equal(c->draft_placement, CFG_PLACEMENT_RANK);
	assert_int_equal(cfg_world_size(c), 3);
	assert_int_equal(c->method, DRAFT_METHOD_NGRAM);
	assert_false(c->method_auto);
	assert_true(strstr(c->target_model, "/stories260K.gguf") != NULL);
	cfg_destroy(c);

	setenv("SPECD_AUTH_TOKEN", "example-token", 0);
	snprintf(path, sizeof(path), "%s/configs/cluster-example.yaml", ts_source_dir());
	if (cfg_load_file(path, 0, &c, NULL, NULL, &err) != SPECD_OK)
		fail_msg("%s", err.msg);
	assert_int_equal(c->tensor_parallel, 4);
	assert_int_equal(c->target_device, CFG_DEVICE_CUDA);
	assert_int_equal(c->draft_device, CFG_DEVICE_CUDA);
	assert_int_equal(cfg_world_size(c), 5);
	assert_non_null(c->auth_token);
	assert_string_equal(c->listen, "0.0.0.0:7070");
	cfg_destroy(c);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap) {
			char *p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

static void test_doc__committed_reference_is_current(void **state)
{
	(void)state;
	const char *const argv[] = {SPECD_CONFIG_DOC_EXE, NULL};
	char *out = NULL, path[600];
	int rc = ts_run(argv, &out, 30);
	assert_int_equal(rc, 0);
	snprintf(path, sizeof(path), "%s/docs/config.md", ts_source_dir());
	char *committed = read_all(path);
	assert_non_null(committed);
	if (strcmp(out, committed) != 0)
		fail_msg("docs/config.md is stale: regenerate it with\n  %s > %s",
			 SPECD_CONFIG_DOC_EXE, path);
	free(out);
	free(committed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults__apply_when_sections_omitted),
		cmocka_unit_test(test_full__every_key_parsed),
		cmocka_unit_test(test_full__flow_style_and_quotes_parse_alike),
		cmocka_unit_test(test_null__means_default),
		cmocka_unit_test(test_activations__each_section_its_own),
		cmocka_unit_test(test_huge_pages__parse_and_decide),
		cmocka_unit_test(test_paths__relative_resolve_against_file_folder),
		cmocka_unit_test(test_env__vars_defaults_and_tilde_expand),
		cmocka_unit_test(test_sizes__units_and_plain_bytes),
		cmocka_unit_test(test_bad__each_names_file_line_and_key),
		cmocka_unit_test(test_bad__listen_forms_that_pass),
		cmocka_unit_test(test_bad__static_eagle_trees_that_pass),
		cmocka_unit_test(test_bad__utf16_file_refused),
		cmocka_unit_test(test_check_paths__missing_model_named),
		cmocka_unit_test(test_load__unreadable_file_says_why),
		cmocka_unit_test(test_buffer__equals_file),
		cmocka_unit_test(test_world_size__counts_draft_rank),
		cmocka_unit_test(test_nomem__every_allocation_fails_cleanly),
		cmocka_unit_test(test_hostile__never_crashes),
		cmocka_unit_test(test_hostile__quote_in_plain_scalar_hides_no_brackets),
		cmocka_unit_test(test_schema__consistent_with_enums_and_sections),
		cmocka_unit_test(test_examples__shipped_configs_parse),
		cmocka_unit_test(test_doc__committed_reference_is_current),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
