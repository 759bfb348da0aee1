/* The one schema of the cluster file: every key with its type, default, range, field
 * and meaning. config_parse.c walks YAML against it, config_values.c converts values
 * by it, config_doc.c prints docs/config.md from it; nothing else lists keys. */
#include "common/alloc.h"
#include "config_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define OFF(field) offsetof(struct cfg_cluster, field)

static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
/* Indexes match enum cfg_device, cfg_dtype, kern_act, cfg_placement, cfg_huge_pages and
 * draft_method. */
static const char *const device_names[] = {"cpu", "cuda", "emulated", NULL};
static const char *const dtype_names[] = {"auto", "f32", "f16", "bf16", NULL};
static const char *const act_names[] = {"f32", "q8", NULL};
static const char *const placement_names[] = {"rank", "leader", NULL};
static const char *const huge_names[] = {"auto", "on", "off", NULL};
static const char *const method_names[] = {"none",  "ngram",  "draft_model",
					   "eagle", "medusa", NULL};
static const char *const eagle_tree_names[] = {"dynamic", "static", NULL};

_Static_assert(sizeof(enum cfg_device) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum cfg_dtype) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum cfg_huge_pages) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum kern_act) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum cfg_placement) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum draft_method) == sizeof(int), "enums are stored as int");

#define KIB INT64_C(1024)
#define GIB (KIB * KIB * KIB)

const struct cfg_section cfg_sections[] = {
	{"cluster", "What this cluster is called and how much it logs."},
	{"server", "The leader's client socket and the limits every call is held to."},
	{"target", "The model being served and how it is split across ranks."},
	{"draft", "Where the drafter runs."},
	{"speculation", "How tokens are proposed before the target verifies them."},
	{"constraints", "What the method selector must respect when it chooses."},
};
const size_t cfg_section_count = sizeof(cfg_sections) / sizeof(cfg_sections[0]);

const struct cfg_key cfg_schema[] = {
	{.path = "cluster.name", .type = CFG_TYPE_STRING, .store = CFG_STORE_STR,
	 .offset = OFF(name), .def = "specd",
	 .doc = "Name shown in logs and by `specctl status`."},
	{.path = "cluster.log_level", .type = CFG_TYPE_ENUM, .store = CFG_STORE_STR,
	 .offset = OFF(log_level), .def = "info", .names = log_level_names,
	 .doc = "Least severe log record written."},

	{.path = "server.listen", .type = CFG_TYPE_STRING, .store = CFG_STORE_STR,
	 .offset = OFF(listen), .def = "127.0.0.1:7070",
	 .allowed = "`HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`",
	 .doc = "Where the leader accepts clients; `unix:PATH` resolves like other paths."},
	{.path = "server.auth_token", .type = CFG_TYPE_STRING, .store = CFG_STORE_STR,
	 .offset = OFF(auth_token),
	 .doc = "Shared secret clients must present; required when `listen` is TCP on a "
		"host other than 127.x.x.x, ::1 or localhost. Use `${VAR}` to keep it out "
		"of the file."},
	{.path = "server.limits.frame_bytes", .type = CFG_TYPE_SIZE, .store = CFG_STORE_U64,
	 .offset = OFF(limits.frame_bytes), .def = "4MiB", .imin = KIB, .imax = GIB,
	 .doc = "Largest frame accepted from a client."},
	{.path = "server.limits.prompt_tokens", .type = CFG_TYPE_INT, .store = CFG_STORE_U32,
	 .offset = OFF(limits.prompt_tokens), .def = "8192", .imin = 1, .imax = 1 << 20,
	 .doc = "Longest prompt, in tokens."},
	{.path = "server.limits.max_tokens", .type = CFG_TYPE_INT, .store = CFG_STORE_U32,
	 .offset = OFF(limits.max_tokens), .def = "4096", .imin = 1, .imax = 1 << 20,
	 .doc = "Largest `max_tokens` one request may ask for."},
	{.path = "server.limits.jobs", .type = CFG_TYPE_INT, .store = CFG_STORE_U32,
	 .offset = OFF(limits.jobs), .def = "64", .imin = 1, .imax = 65536,
	 .doc = "Jobs queued or running at once; past it a call gets a busy error."},
	{.path = "server.limits.jobs_per_connection", .type = CFG_TYPE_INT,
	 .store = CFG_STORE_U32, .offset = OFF(limits.jobs_per_connection), .def = "0",
	 .imin = 0, .imax = 65536,
	 .doc = "Jobs one client connection may have queued or running at once, so that one "
		"client cannot take every place in `jobs`; past it that connection's call "
		"gets a busy error. 0: `jobs`."},
	{.path = "server.limits.connections", .type = CFG_TYPE_INT, .store = CFG_STORE_U32,
	 .offset = OFF(limits.connections), .def = "128", .imin = 1, .imax = 65536,
	 .doc = "Client connections open at once."},
	{.path = "server.limits.idle_seconds", .type = CFG_TYPE_FLOAT,
	 .store = CFG_STORE_DOUBLE, .offset = OFF(limits.idle_seconds), .def = "300",
	 .fmin = 0, .fmax = 1e6,
	 .doc = "A connection is closed after this many seconds in which nothing passed "
		"either way while it had no call open, so idle clients do not hold the places "
		"in `connections`; or in which it read none of the replies waiting for it "
		"(its jobs are then cancelled). A job that is queued or streams slowly keeps "
		"its connection open. 0: never."},
	{.path = "server.limits.frame_seconds", .type = CFG_TYPE_FLOAT,
	 .store = CFG_STORE_DOUBLE, .offset = OFF(limits.frame_seconds), .def = "60",
	 .fmin = 0, .fmax = 1e6,
	 .doc = "A frame must arrive whole within this many seconds of its first byte; a "
		"slower one gets `DEADLINE_EXCEEDED` and the connection is closed. Raise it "
		"with `frame_bytes` for large prompts over slow links. 0: no limit."},

	{.path = "target.model", .type = CFG_TYPE_PATH, .store = CFG_STORE_STR,
	 .offset = OFF(target_model), .flags = CFG_KEY_REQUIRED,
	 .doc = "The target model: a GGUF file, or a folder holding a checkpoint."},
	{.path = "target.tensor_parallel", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(tensor_parallel), .def = "1", .imin = 1, .imax = 64,
	 .doc = "Target shards T (ranks 0..T-1, Megatron-style tensor parallelism)."},
	{.path = "target.device", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(target_device), .def = "cpu", .names = device_names,
	 .doc = "Where each target shard computes: `cpu`; `cuda`: one GPU per rank (the "
		"node's ranks take its GPUs in local-rank order); `emulated`: the CPU "
		"through the GPU's code path (weights, cache and activations in memory "
		"kept apart, uploads and downloads), for testing that path without a GPU."},
	{.path = "target.dtype", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(target_dtype), .def = "auto", .names = dtype_names,
	 .doc = "Type the unquantised weight matrices are held in: `f32`, `f16` or `bf16` "
		"converts them once at load, each rank its own shard (quantised matrices and "
		"norms stay as the file has them; output is lossless with respect to the model "
		"as held); `auto` keeps the file's types."},
	{.path = "target.threads", .type = CFG_TYPE_INT_AUTO, .store = CFG_STORE_INT,
	 .offset = OFF(target_threads), .auto_offset = OFF(target_threads_auto),
	 .flags = CFG_KEY_AUTO, .def = "auto", .imin = 1, .imax = 256,
	 .doc = "CPU threads per target rank; `auto`: the machine's online cores shared "
		"evenly among the ranks on it (at least 1), as the launcher counts them "
		"(Open MPI, MPICH or Slurm; one rank when none says). The extra rows of a "
		"verify step are compute, which more threads divide (docs/performance.md)."},
	{.path = "target.activations", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(target_activations), .def = "q8", .names = act_names,
	 .doc = "How each target rank's matmuls on quantised weights (Q8_0, Q4_x, Q5_x, "
		"K-quants) read their activations: `q8` quantises each row to 8 bits (one scale "
		"per 32 values, or per 256 for K-quants; each activation moves by at most 1/254 "
		"of the largest it shares a scale with) and multiplies in integers, as llama.cpp "
		"does, for faster decoding (docs/performance.md); `f32` keeps them f32, exact to "
		"rounding. For `cpu` and `emulated` (which computes on the CPU); "
		"float weights (f32, f16, bf16) are unaffected and `cuda` ignores it. Output is "
		"lossless either way: every row is computed the same way whatever the batch, so "
		"greedy speculative output equals plain decoding with the same setting."},
	{.path = "target.huge_pages", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(target_huge_pages), .def = "auto", .names = huge_names,
	 .doc = "`on`: each CPU rank copies its shard's weight matrices once at load into "
		"transparent huge pages (2 MiB) and reads them there: decoding reads every "
		"weight once a token, and from the file's 4 KiB pages that costs a TLB miss "
		"per page (docs/performance.md measures the gain). The copy "
		"takes a read of the weights at load and is private to the process, where the "
		"file's pages are shared with the page cache, so a rank copies only when the "
		"copy fits in half its share of the machine's available memory (MemAvailable "
		"and its cgroup's limit, over the ranks on the machine); else the log warns "
		"and it reads the file in place. `off`: read the file in place. "
		"`auto`: `on` when the kernel offers huge pages "
		"(/sys/kernel/mm/transparent_hugepage/enabled is `always` or `madvise`). "
		"`cuda` copies the weights to the GPU and ignores it."},
	{.path = "target.slots", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(target_slots), .def = "4", .imin = 1, .imax = 1024,
	 .doc = "Sequences held in the KV cache at once: jobs that run together; the rest "
		"queue. The cache is allocated at load, slots x context rows per layer."},
	{.path = "target.batch_tokens", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(target_batch_tokens), .def = "0", .imin = 0, .imax = 65536,
	 .doc = "Tokens one target forward carries at most: the verify tokens (K + 1) of "
		"every running sequence together. When they do not fit, each sequence drafts "
		"fewer tokens (down to plain decoding) for that step. 0: slots x (K + 1), so "
		"speculation is never cut; raised to K + 1 when lower."},
	{.path = "target.context", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(target_context), .def = "4096", .imin = 0, .imax = 1 << 20,
	 .doc = "KV rows per sequence (prompt plus output), at most the model's own "
		"context; 0: the model's own context."},

	{.path = "draft.placement", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(draft_placement), .def = "rank", .names = placement_names,
	 .doc = "`rank`: a dedicated draft rank T (world size T+1); `leader`: the drafter "
		"runs inside rank 0 (world size T)."},
	{.path = "draft.device", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(draft_device), .def = "cpu", .names = device_names,
	 .doc = "Where the draft rank's drafters compute (`cpu`, `cuda`, `emulated`, as "
		"target.device); Medusa heads and EAGLE layers are copied to that device too."},
	{.path = "draft.threads", .type = CFG_TYPE_INT_AUTO, .store = CFG_STORE_INT,
	 .offset = OFF(draft_threads), .auto_offset = OFF(draft_threads_auto),
	 .flags = CFG_KEY_AUTO, .def = "auto", .imin = 1, .imax = 256,
	 .doc = "CPU threads of the drafter; `auto` as `target.threads`."},
	{.path = "draft.activations", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(draft_activations), .def = "q8", .names = act_names,
	 .doc = "As `target.activations` (`q8`: llama.cpp's speed; `f32`: exact), for the draft "
		"rank's drafters; with `placement: leader` the drafter computes on the leader's "
		"target backend, so `target.activations` applies."},
	{.path = "draft.huge_pages", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(draft_huge_pages), .def = "auto", .names = huge_names,
	 .doc = "As `target.huge_pages`, for the draft model (`draft_model`) on a CPU."},

	{.path = "speculation.method", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(method), .auto_offset = OFF(method_auto), .flags = CFG_KEY_AUTO,
	 .def = "auto", .names = method_names,
	 .doc = "Speculation method; `auto` lets the selector choose among those configured."},
	{.path = "speculation.num_speculative_tokens", .type = CFG_TYPE_INT_AUTO,
	 .store = CFG_STORE_INT, .offset = OFF(num_speculative_tokens),
	 .auto_offset = OFF(spec_tokens_auto), .flags = CFG_KEY_AUTO, .def = "auto",
	 .imin = 1, .imax = 32,
	 .doc = "Tokens K drafted per step (`--spec-tokens`); `auto`: the selector picks K."},
	{.path = "speculation.max_speculative_tokens", .type = CFG_TYPE_INT,
	 .store = CFG_STORE_INT, .offset = OFF(max_speculative_tokens), .def = "8", .imin = 1,
	 .imax = 32,
	 .doc = "The largest K the selector considers when `num_speculative_tokens` is `auto`."},
	{.path = "speculation.measure", .type = CFG_TYPE_BOOL, .store = CFG_STORE_BOOL,
	 .offset = OFF(measure), .def = "true",
	 .doc = "Probe the links and time the target and the drafters at start-up, and let "
		"the selector's cost model decide; `false`: the origin rule table decides."},
	{.path = "speculation.adapt", .type = CFG_TYPE_BOOL, .store = CFG_STORE_BOOL,
	 .offset = OFF(adapt), .def = "true",
	 .doc = "Keep choosing while serving, from the acceptance measured: each step, each "
		"sequence's K in the shared batch (drafting less where drafts are rejected or "
		"the batch is large); every `adapt_interval` steps, the cluster's K, the bound "
		"on all of them, and with `method: auto` its method among those the start-up "
		"decision left open (all loaded, the others probed now and then). Needs "
		"`measure`; off when `num_speculative_tokens` fixes K."},
	{.path = "speculation.adapt_interval", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(adapt_interval), .def = "64", .imin = 1, .imax = 1000000,
	 .doc = "Steps between re-decisions of the cluster's method and K."},
	{.path = "speculation.adapt_hysteresis", .type = CFG_TYPE_FLOAT,
	 .store = CFG_STORE_DOUBLE, .offset = OFF(adapt_hysteresis), .def = "0.05", .fmin = 0,
	 .fmax = 0.9,
	 .doc = "How much faster (0.05: 5%) a new method or K must be predicted than the "
		"current one before the cluster's choice moves: measurement noise does not "
		"flap it."},
	{.path = "speculation.expect_sampling", .type = CFG_TYPE_BOOL, .store = CFG_STORE_BOOL,
	 .offset = OFF(expect_sampling), .def = "false",
	 .doc = "Plan for sampling requests (temperature > 0): a draft model's q then crosses "
		"the link to the leader, which the selector counts; greedy requests ship tokens only."},
	{.path = "speculation.pipeline", .type = CFG_TYPE_BOOL, .store = CFG_STORE_BOOL,
	 .offset = OFF(pipeline), .def = "true",
	 .doc = "Draft step t+1 while step t verifies (needs `draft.placement: rank`; "
		"ignored otherwise). Greedy jobs only: sampling jobs are drafted on request."},
	{.path = "speculation.ngram.prompt_lookup_min", .type = CFG_TYPE_INT_AUTO,
	 .store = CFG_STORE_INT, .offset = OFF(prompt_lookup_min),
	 .auto_offset = OFF(lookup_min_auto), .flags = CFG_KEY_AUTO, .def = "auto", .imin = 1,
	 .imax = 32,
	 .doc = "Shortest n-gram matched against the context; `auto`: 2, or what the origin "
		"rule table says when it decides (nothing is measured: `measure: false`, or "
		"`method` and `num_speculative_tokens` both given) and would run prompt lookup "
		"too."},
	{.path = "speculation.ngram.prompt_lookup_max", .type = CFG_TYPE_INT_AUTO,
	 .store = CFG_STORE_INT, .offset = OFF(prompt_lookup_max),
	 .auto_offset = OFF(lookup_max_auto), .flags = CFG_KEY_AUTO, .def = "auto", .imin = 1,
	 .imax = 32,
	 .doc = "Longest n-gram matched (at least `prompt_lookup_min`); `auto`: 5 (or "
		"`prompt_lookup_min` when that is more), or what the origin rule table says "
		"when it decides, as for `prompt_lookup_min` (4 by its default rule)."},
	{.path = "speculation.draft_model.model", .type = CFG_TYPE_PATH,
	 .store = CFG_STORE_STR, .offset = OFF(draft_model),
	 .doc = "Draft model sharing the target's vocabulary; needed by `method: draft_model`."},
	{.path = "speculation.eagle.heads", .type = CFG_TYPE_PATH, .store = CFG_STORE_STR,
	 .offset = OFF(eagle_heads),
	 .doc = "EAGLE checkpoint folder (config.json and model.safetensors in the EAGLE "
		"repository's layout); needed by `method: eagle`."},
	{.path = "speculation.eagle.tree", .type = CFG_TYPE_ENUM, .store = CFG_STORE_INT,
	 .offset = OFF(eagle_tree), .def = "dynamic", .names = eagle_tree_names,
	 .doc = "`dynamic`: EAGLE-2's tree, grown from the draft's confidences; `static`: "
		"a fixed shape of K nodes."},
	{.path = "speculation.eagle.width", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(eagle_width), .def = "4", .imin = 1, .imax = 10,
	 .doc = "Candidates per expanded node, and nodes expanded per level."},
	{.path = "speculation.eagle.depth", .type = CFG_TYPE_INT, .store = CFG_STORE_INT,
	 .offset = OFF(eagle_depth), .def = "5", .imin = 1, .imax = 16,
	 .doc = "Levels of the EAGLE tree (each one forward of the draft layer)."},
	{.path = "speculation.medusa.heads", .type = CFG_TYPE_PATH, .store = CFG_STORE_STR,
	 .offset = OFF(medusa_heads),
	 .doc = "Medusa heads checkpoint; needed by `method: medusa`."},

	{.path = "constraints.target_speedup", .type = CFG_TYPE_FLOAT,
	 .store = CFG_STORE_DOUBLE, .offset = OFF(target_speedup), .def = "0", .fmin = 0,
	 .fmax = 100,
	 .doc = "Speed-up over plain decoding the selector aims for; 0: no floor."},
	{.path = "constraints.low_memory", .type = CFG_TYPE_BOOL, .store = CFG_STORE_BOOL,
	 .offset = OFF(low_memory), .def = "false",
	 .doc = "Rule out methods that load extra weights (draft_model, eagle, medusa)."},
	{.path = "constraints.max_draft_memory", .type = CFG_TYPE_SIZE,
	 .store = CFG_STORE_U64, .offset = OFF(max_draft_memory), .def = "0", .imin = 0,
	 .imax = GIB * KIB * KIB, .doc = "Memory the drafter may use; 0: no cap."},
};
const size_t cfg_schema_count = sizeof(cfg_schema) / sizeof(cfg_schema[0]);

const char *cfg_device_name(enum cfg_device d)
{
	if ((unsigned)d >= sizeof(device_names) / sizeof(device_names[0]) - 1)
		return "?";
	return device_names[d];
}

/* The index of name in a NULL-ended names table; -1 when it is not there. */
static int name_index(const char *const *names, const char *name)
{
	for (int i = 0; name && names[i]; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

bool cfg_device_parse(const char *name, enum cfg_device *out)
{
	int i = name_index(device_names, name);
	if (i >= 0)
		*out = (enum cfg_device)i;
	return i >= 0;
}

bool cfg_dtype_parse(const char *name, enum cfg_dtype *out)
{
	int i = name_index(dtype_names, name);
	if (i >= 0)
		*out = (enum cfg_dtype)i;
	return i >= 0;
}

const char *cfg_placement_name(enum cfg_placement p)
{
	if ((unsigned)p >= sizeof(placement_names) / sizeof(placement_names[0]) - 1)
		return "?";
	return placement_names[p];
}

bool cfg_huge_pages_parse(const char *name, enum cfg_huge_pages *out)
{
	int i = name_index(huge_names, name);
	if (i >= 0)
		*out = (enum cfg_huge_pages)i;
	return i >= 0;
}

bool cfg_huge_pages_wanted(enum cfg_huge_pages h)
{
	return h == CFG_HUGE_ON || (h == CFG_HUGE_AUTO && specd_huge_pages_offered());
}

const char *cfg_dtype_name(enum cfg_dtype t)
{
	if ((unsigned)t >= sizeof(dtype_names) / sizeof(dtype_names[0]) - 1)
		return "?";
	return dtype_names[t];
}

int cfg_world_size(const struct cfg_cluster *cfg)
{
	return cfg->tensor_parallel + (cfg->draft_placement == CFG_PLACEMENT_RANK ? 1 : 0);
}

long cfg_schema_index(const char *path)
{
	for (size_t i = 0; i < cfg_schema_count; i++)
		if (strcmp(cfg_schema[i].path, path) == 0)
			return (long)i;
	return -1;
}

/* When key path p lies under prefix, the start of its next component; else NULL. */
static const char *below(const char *p, const char *prefix)
{
	size_t n = strlen(prefix);
	if (n == 0)
		return p;
	if (strncmp(p, prefix, n) != 0 || p[n] != '.')
		return NULL;
	return p + n + 1;
}

long cfg_schema_find(const char *prefix, const char *name, size_t len, bool *is_section)
{
	*is_section = false;
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const char *c = below(cfg_schema[i].path, prefix);
		if (!c || strncmp(c, name, len) != 0 || memchr(name, '\0', len))
			continue;
		if (c[len] == '\0')
			return (long)i;
		if (c[len] == '.')
			*is_section = true;
	}
	return -1;
}

static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb)
{
	size_t row[64 + 1];
	for (size_t j = 0; j <= nb; j++)
		row[j] = j;
	for (size_t i = 1; i <= na; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[nb];
}

const char *cfg_schema_suggest(const char *prefix, const char *name, size_t len,
			       size_t *out_len)
{
	const char *best = NULL;
	size_t best_len = 0, best_d = SIZE_MAX;
	if (len > 64)
		return NULL;
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const char *c = below(cfg_schema[i].path, prefix);
		if (!c)
			continue;
		size_t n = strcspn(c, ".");
		if (n > 64)
			continue;
		size_t d = edit_distance(name, len, c, n);
		/* close enough to be a typo: two edits, or a third of the word */
		if ((d <= 2 || d * 3 <= n) && d < best_d) {
			best = c;
			best_len = n;
			best_d = d;
		}
	}
	*out_len = best_len;
	return best;
}

const char *cfg_type_name(enum cfg_type t)
{
	switch (t) {
	case CFG_TYPE_STRING: return "string";
	case CFG_TYPE_PATH: return "path";
	case CFG_TYPE_INT: return "integer";
	case CFG_TYPE_INT_AUTO: return "integer or auto";
	case CFG_TYPE_SIZE: return "size";
	case CFG_TYPE_FLOAT: return "number";
	case CFG_TYPE_BOOL: return "bool";
	case CFG_TYPE_ENUM: return "enum";
	}
	return "?";
}

const char *cfg_type_describe(const struct cfg_key *k, char *buf, size_t size)
{
	const char *text = "?";
	switch (k->type) {
	case CFG_TYPE_STRING: text = "a string"; break;
	case CFG_TYPE_PATH: text = "a path"; break;
	case CFG_TYPE_INT: text = "an integer"; break;
	case CFG_TYPE_INT_AUTO: text = "auto or an integer"; break;
	case CFG_TYPE_SIZE: text = "a size like 4096, 64KiB or 4MiB"; break;
	case CFG_TYPE_FLOAT: text = "a number"; break;
	case CFG_TYPE_BOOL: text = "true or false"; break;
	case CFG_TYPE_ENUM: {
		size_t o = (size_t)snprintf(buf, size, "one of %s",
					    (k->flags & CFG_KEY_AUTO) ? "auto" : "");
		for (int i = 0; k->names[i] && o < size; i++)
			o += (size_t)snprintf(buf + o, size - o, "%s%s",
					      (i > 0 || (k->flags & CFG_KEY_AUTO)) ? ", " : "",
					      k->names[i]);
		return buf;
	}
	}
	snprintf(buf, size, "%s", text);
	return buf;
}

void cfg_size_format(uint64_t n, char *buf, size_t size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	size_t u = 0;
	while (n != 0 && n % 1024 == 0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		n /= 1024;
		u++;
	}
	snprintf(buf, size, "%" PRIu64 "%s", n, units[u]);
}

void cfg_show(const char *text, size_t len, char *buf, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 4 < size; i++) {
		if (i == 48) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		unsigned char c = (unsigned char)text[i];
		buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	buf[o] = '\0';
}
