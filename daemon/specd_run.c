/* specd-run: one-shot generation in one process, plain or speculative (DESIGN.md §9).
 * In order: flags, model and tokenizer load, prompt encoding, the drafter (ngram, or a
 * draft model checked against the target's vocabulary), then the engine of
 * drafters/engine.h steps the job (propose, verify, commit) and the text is streamed
 * until EOS, max tokens or the context ends; or, with --perplexity, the mean NLL of a
 * text file. Text goes to stdout (the prompt, then tokens as they arrive, cut at UTF-8
 * boundaries); statistics, speculation metrics and errors go to stderr. */
#include <errno.h>
#include <mpi.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/parse_int.h"
#include "common/version.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "drafters/method.h"
#include "drafters/remote.h"
#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "model/chat.h"
#include "model/shard.h"
#include "parallel/census.h"
#include "runtime.h"

enum { EXIT_USAGE = 2 };

#define DEFAULT_SPEC_TOKENS 4

struct run_opts {
	const char *model;
	const char *prompt;
	const char *perplexity; /* a text file: perplexity mode */
	bool chat;              /* -p is a user message for the model's chat template */
	long max_tokens;
	struct sampler_params sp;
	bool seed_given;
	long threads;               /* --threads; 0: auto (auto_threads) */
	enum kern_act act;          /* --activations */
	enum cfg_huge_pages huge;   /* --huge-pages */
	enum cfg_device device;     /* --device */
	enum cfg_dtype dtype;       /* --dtype */
	long gpu;                   /* --gpu; -1: the rank's local index */
	enum draft_method method;
	long spec_tokens;
	const char *draft;
	const char *heads;
	struct draft_eagle_config eagle; /* --eagle DIR, --eagle-tree, -width, -depth */
	long tp;
	long lookup_min, lookup_max; /* 0: the drafter's defaults */
	bool draft_rank;       /* --placement rank: rank T drafts (mpirun -np T+1) */
	bool pipeline;         /* --pipeline: the draft rank drafts ahead (greedy) */
	double draft_deadline; /* --draft-deadline: seconds; 0: the default */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: specd-run -m MODEL [-p PROMPT] [options]\n"
		"       specd-run -m MODEL --perplexity FILE\n"
		"       specd-run --help | --version\n"
		"\n"
		"  -m, --model PATH       the model: a GGUF file or a Hugging Face folder\n"
		"                         (llama or qwen2)\n"
		"  -p, --prompt TEXT      the prompt (default: empty, generation starts at BOS)\n"
		"  -n, --max-tokens N     tokens to generate at most (default 128); generation\n"
		"                         also stops at the end-of-sequence token or when the\n"
		"                         model's context is full\n"
		"  --temperature T        0 (the default) is greedy; otherwise sampling\n"
		"  --top-k K              sample from the K most likely tokens (0: off)\n"
		"  --top-p P              sample from the smallest set of mass P (1: off)\n"
		"  --seed S               the sampling seed (default: from the clock, printed)\n"
		"  --threads N|auto       compute threads (default auto: the machine's cores,\n"
		"                         shared among the ranks on it under mpirun)\n"
		"  --activations A        how the CPU reads activations in matmuls on quantised\n"
		"                         weights: q8 (the default: 8 bits, scaled per 32\n"
		"                         or per 256 values as llama.cpp does; faster) or f32\n"
		"                         (exact to rounding).\n"
		"                         Float weights are unaffected, --device cuda\n"
		"                         ignores it; output is lossless either way\n"
		"  --huge-pages H         auto (the default), on or off: copy the weights\n"
		"                         into huge pages at load for faster decoding on the\n"
		"                         CPU (target.huge_pages); auto: when the kernel\n"
		"                         offers them\n"
		"  --device D             cpu (the default), cuda (one GPU per rank) or\n"
		"                         emulated (the CPU through the GPU's code path:\n"
		"                         memory kept apart, uploads and downloads; for tests)\n"
		"  --gpu N                with --device cuda: the GPU (default: the rank's\n"
		"                         index on its node, so ranks take one GPU each)\n"
		"  --dtype T              auto (the file's types, the default), f32, f16 or\n"
		"                         bf16: the type unquantised weights are held in\n"
		"  --method M             speculation method: none (the default: plain\n"
		"                         decoding), ngram (prompt lookup), draft_model or\n"
		"                         medusa (heads on the target's hidden state, a token\n"
		"                         tree of K nodes verified in one forward) or eagle (a\n"
		"                         draft layer on the target's hidden states, a tree)\n"
		"  --spec-tokens K        tokens drafted per step, 1 to 64 (default %d; medusa\n"
		"                         and eagle: the tree's nodes)\n"
		"  --draft MODEL          the draft model (--method draft_model): a smaller\n"
		"                         model with exactly the target's vocabulary\n"
		"  --prompt-lookup-min N  ngram: shortest n-gram matched (default 2)\n"
		"  --prompt-lookup-max N  ngram: longest n-gram matched (default 5)\n"
		"  --heads FILE           Medusa heads (--method medusa): safetensors with the\n"
		"                         Medusa repository's names (specd-gen-heads writes\n"
		"                         random ones, tools/train-heads trains them)\n"
		"  --eagle DIR            EAGLE checkpoint folder (--method eagle): config.json\n"
		"                         and model.safetensors in the EAGLE repository's layout\n"
		"                         (specd-gen-heads --eagle writes random ones,\n"
		"                         tools/train-eagle trains them)\n"
		"  --eagle-tree T         eagle: dynamic (the default: EAGLE-2's tree, grown\n"
		"                         from the draft's confidences) or static (a fixed shape)\n"
		"  --eagle-width W        eagle: candidates per expanded node, and nodes\n"
		"                         expanded per level, 1 to 10 (default 4)\n"
		"  --eagle-depth D        eagle: levels of the tree, 1 to 16 (default 5)\n"
		, DEFAULT_SPEC_TOKENS);
	fputs("  --tp T                 tensor-parallel shards: run under mpirun -np T; rank 0\n"
		"                         prints, the others hold their shard\n"
		"  --placement P          where the drafter runs: leader (the default: inside\n"
		"                         rank 0) or rank (a dedicated draft rank T: run under\n"
		"                         mpirun -np T+1, also with --tp 1)\n"
		"  --pipeline on|off      with --placement rank: the draft rank drafts step t+1\n"
		"                         while step t verifies (default on; greedy jobs only)\n"
		"  --draft-deadline S     with --placement rank: seconds the leader waits for\n"
		"                         the draft rank (default 30); past it the job goes on\n"
		"                         as plain decoding, and says so\n"
		"  --chat                 PROMPT is a user message: rendered with the model's ChatML\n"
		"                         template and default system prompt (instruct models)\n"
		"  --perplexity FILE      score FILE instead of generating: tokenized with BOS,\n"
		"                         in windows of the model's context; prints the mean\n"
		"                         negative log-likelihood and the perplexity over the\n"
		"                         predicted tokens\n"
		"  --help                 this text\n"
		"  --version              the version\n"
		"\n"
		"The prompt and the generated text go to stdout; load time, token counts,\n"
		"tokens/s and the speculation metrics (drafted, accepted, acceptance by\n"
		"position, system efficiency, time in draft and verify) to stderr. Output is\n"
		"the same for every method: identical at temperature 0, the same distribution\n"
		"when sampling. An option the run would not use is refused (exit 2): a method's\n"
		"own options with another method, --pipeline and --draft-deadline without\n"
		"--placement rank, --gpu without --device cuda, generation options with\n"
		"--perplexity; --draft, --heads, --eagle and --spec-tokens with a method that\n"
		"does not read them only draw a note. Log level:\n"
		"SPECD_LOG_LEVEL=error|warn|info|debug.\n", f);
}

/* ---- flags ---- */

/* Digits only (common/parse_int.h): no sign, space, fraction or trailing junk. */
static bool parse_long(const char *text, long min, long max, long *out)
{
	int64_t v;
	if (specd_parse_i64(text, min, max, &v) != SPECD_OK)
		return false;
	*out = (long)v;
	return true;
}

static bool parse_float(const char *text, float *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end || !isfinite(v))
		return false;
	*out = (float)v;
	return true;
}

static bool parse_u64(const char *text, uint64_t *out)
{
	return specd_parse_u64(text, UINT64_MAX, out) == SPECD_OK;
}

/* --threads as a count (auto: par_auto_threads, as target.threads' auto). */
static uint32_t threads_of(const struct run_opts *o)
{
	return o->threads > 0 ? (uint32_t)o->threads : par_auto_threads();
}

/* The GPU of --device cuda: --gpu, or the rank's index on its node (one GPU a rank). */
static int gpu_of(const struct run_opts *o)
{
	return o->gpu >= 0 ? (int)o->gpu : par_local_rank();
}

static int bad_value(const char *flag, const char *value, const char *want)
{
	fprintf(stderr, "specd-run: %s '%s': expected %s\n", flag, value, want);
	return EXIT_USAGE;
}

/* The flags that take a value ("--flag VALUE" or "--flag=VALUE"). */
static const char *const value_flags[] = {
	"-m", "--model", "-p", "--prompt", "-n", "--max-tokens", "--temperature",
	"--top-k", "--top-p", "--seed", "--threads", "--method", "--spec-tokens",
	"--draft", "--heads", "--tp", "--perplexity", "--prompt-lookup-min",
	"--prompt-lookup-max", "--placement", "--pipeline", "--draft-deadline",
	"--eagle", "--eagle-tree", "--eagle-width", "--eagle-depth", "--device",
	"--gpu", "--dtype", "--activations", "--huge-pages"};

#define N_VALUE_FLAGS (sizeof(value_flags) / sizeof(value_flags[0]))

static int value_flag_index(const char *flag)
{
	for (size_t k = 0; k < N_VALUE_FLAGS; k++)
		if (strcmp(flag, value_flags[k]) == 0)
			return (int)k;
	return -1;
}

/* Whether the command line gave `flag` (spelled as in value_flags). */
static bool given(const bool *seen, const char *flag)
{
	int k = value_flag_index(flag);
	return k >= 0 && seen[k];
}

/* Refuses options the run would not use, each naming what it goes with, rather than
 * ignoring them: -1 to go on, or EXIT_USAGE. The drafters' files (--draft, --heads,
 * --eagle) and --spec-tokens only draw a note: scripts pass every file and choose with
 * --method (tests/daemon/test_tp_e2e_mpi.c), or keep K when they switch to none. */
static int check_combinations(const struct run_opts *o, const bool *seen)
{
	char method[64], placement[64], device[64];
	snprintf(method, sizeof(method), "--method %s", draft_method_name(o->method));
	snprintf(placement, sizeof(placement), "--placement %s", o->draft_rank ? "rank" : "leader");
	snprintf(device, sizeof(device), "--device %s", cfg_device_name(o->device));
	const struct {
		const char *flag;
		bool applies;
		const char *goes_with, *here;
	} only[] = {
		{"--eagle-tree", o->method == DRAFT_METHOD_EAGLE, "--method eagle", method},
		{"--eagle-width", o->method == DRAFT_METHOD_EAGLE, "--method eagle", method},
		{"--eagle-depth", o->method == DRAFT_METHOD_EAGLE, "--method eagle", method},
		{"--prompt-lookup-min", o->method == DRAFT_METHOD_NGRAM, "--method ngram", method},
		{"--prompt-lookup-max", o->method == DRAFT_METHOD_NGRAM, "--method ngram", method},
		{"--pipeline", o->draft_rank, "--placement rank", placement},
		{"--draft-deadline", o->draft_rank, "--placement rank", placement},
		{"--gpu", o->device == CFG_DEVICE_CUDA, "--device cuda", device},
	};
	for (size_t i = 0; i < sizeof(only) / sizeof(only[0]); i++) {
		if (given(seen, only[i].flag) && !only[i].applies) {
			fprintf(stderr, "specd-run: %s goes with %s, not %s\n", only[i].flag,
				only[i].goes_with, only[i].here);
			return EXIT_USAGE;
		}
	}
	if (o->draft_rank && o->method == DRAFT_METHOD_NONE) {
		fprintf(stderr, "specd-run: --placement rank needs a speculation method: "
				"--method none drafts nothing\n");
		return EXIT_USAGE;
	}
	if (o->perplexity) {
		/* Scoring a file generates nothing: no sampling, no drafter (and no prompt,
		 * refused before). */
		const char *gen[] = {"-n", "--max-tokens", "--temperature", "--top-k", "--top-p",
				     "--seed", "--spec-tokens"};
		const char *bad = o->chat ? "--chat" : NULL;
		for (size_t i = 0; !bad && i < sizeof(gen) / sizeof(gen[0]); i++)
			if (given(seen, gen[i]))
				bad = gen[i];
		if (!bad && o->method != DRAFT_METHOD_NONE)
			bad = method;
		if (bad) {
			fprintf(stderr, "specd-run: %s does not go with --perplexity (it scores a "
					"file and generates nothing)\n", bad);
			return EXIT_USAGE;
		}
	}
	/* The ngram drafter's lengths, as drafters/ngram.c takes them: 2 and 5 by default,
	 * a larger minimum alone raising the maximum with it. Checked here rather than
	 * once the model is loaded. */
	long lo = o->lookup_min ? o->lookup_min : 2;
	long hi = o->lookup_max ? o->lookup_max : (lo > 5 ? lo : 5);
	if (lo > hi) {
		if (o->lookup_min)
			fprintf(stderr, "specd-run: --prompt-lookup-min %ld is greater than "
					"--prompt-lookup-max %ld\n", lo, hi);
		else
			fprintf(stderr, "specd-run: --prompt-lookup-max %ld is less than the "
					"default --prompt-lookup-min 2\n", hi);
		return EXIT_USAGE;
	}
	const struct {
		const char *flag;
		bool used;
	} files[] = {
		{"--draft", o->method == DRAFT_METHOD_DRAFT_MODEL},
		{"--heads", o->method == DRAFT_METHOD_MEDUSA},
		{"--eagle", o->method == DRAFT_METHOD_EAGLE},
		{"--spec-tokens", o->method != DRAFT_METHOD_NONE},
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (given(seen, files[i].flag) && !files[i].used)
			fprintf(stderr, "specd-run: note: %s has no effect with %s\n",
				files[i].flag, method);
	return -1;
}

/* Returns -1 to go on, or the exit status (0 after --help/--version). */
static int parse_args(int argc, char **argv, struct run_opts *o)
{
	bool seen[N_VALUE_FLAGS] = {false};
	*o = (struct run_opts){
		.max_tokens = 128,
		.sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
		.threads = 0,
		.act = KERN_ACT_Q8,
		.gpu = -1,
		.method = DRAFT_METHOD_NONE,
		.tp = 1,
		.pipeline = true,
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return EXIT_SUCCESS;
		}
		if (strcmp(a, "--version") == 0) {
			printf("specd-run %s\n", SPECD_VERSION);
			return EXIT_SUCCESS;
		}
		if (strcmp(a, "--chat") == 0) {
			o->chat = true;
			continue;
		}
		/* Every other flag takes one value: "--flag VALUE" or "--flag=VALUE". */
		char flag[32];
		const char *v = NULL;
		const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		if (eq && (size_t)(eq - a) < sizeof(flag)) {
			memcpy(flag, a, (size_t)(eq - a));
			flag[eq - a] = '\0';
			v = eq + 1;
		} else {
			snprintf(flag, sizeof(flag), "%s", a);
		}
		int known = value_flag_index(flag);
		if (known < 0) {
			fprintf(stderr, "specd-run: unknown argument '%s' (see --help)\n", a);
			return EXIT_USAGE;
		}
		seen[known] = true;
		if (!v) {
			if (i + 1 >= argc) {
				fprintf(stderr, "specd-run: %s needs a value\n", flag);
				return EXIT_USAGE;
			}
			v = argv[++i];
		}
		if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) {
			o->model = v;
		} else if (!strcmp(flag, "-p") || !strcmp(flag, "--prompt")) {
			o->prompt = v;
		} else if (!strcmp(flag, "--perplexity")) {
			o->perplexity = v;
		} else if (!strcmp(flag, "-n") || !strcmp(flag, "--max-tokens")) {
			if (!parse_long(v, 0, INT32_MAX, &o->max_tokens))
				return bad_value(flag, v, "a count >= 0");
		} else if (!strcmp(flag, "--temperature")) {
			if (!parse_float(v, &o->sp.temperature) || o->sp.temperature < 0)
				return bad_value(flag, v, "a number >= 0");
		} else if (!strcmp(flag, "--top-k")) {
			long k;
			if (!parse_long(v, 0, INT32_MAX, &k))
				return bad_value(flag, v, "a count >= 0");
			o->sp.top_k = (int32_t)k;
		} else if (!strcmp(flag, "--top-p")) {
			if (!parse_float(v, &o->sp.top_p) || !(o->sp.top_p > 0) || o->sp.top_p > 1)
				return bad_value(flag, v, "a number in (0, 1]");
		} else if (!strcmp(flag, "--seed")) {
			if (!parse_u64(v, &o->sp.seed))
				return bad_value(flag, v, "an unsigned integer");
			o->seed_given = true;
		} else if (!strcmp(flag, "--threads")) {
			if (strcmp(v, "auto") == 0)
				o->threads = 0;
			else if (!parse_long(v, 1, 1024, &o->threads))
				return bad_value(flag, v, "auto or a count from 1 to 1024");
		} else if (!strcmp(flag, "--activations")) {
			if (kern_act_parse(v, &o->act) != SPECD_OK)
				return bad_value(flag, v, "f32 or q8");
		} else if (!strcmp(flag, "--huge-pages")) {
			if (!cfg_huge_pages_parse(v, &o->huge))
				return bad_value(flag, v, "auto, on or off");
		} else if (!strcmp(flag, "--device")) {
			if (!cfg_device_parse(v, &o->device))
				return bad_value(flag, v, "cpu, cuda or emulated");
		} else if (!strcmp(flag, "--dtype")) {
			if (!cfg_dtype_parse(v, &o->dtype))
				return bad_value(flag, v, "auto, f32, f16 or bf16");
		} else if (!strcmp(flag, "--gpu")) {
			if (!parse_long(v, 0, 1023, &o->gpu))
				return bad_value(flag, v, "a GPU index from 0 to 1023");
		} else if (!strcmp(flag, "--method")) {
			if (!draft_method_parse(v, &o->method))
				return bad_value(flag, v, "none, ngram, draft_model, eagle or medusa");
		} else if (!strcmp(flag, "--spec-tokens")) {
			if (!parse_long(v, 1, 64, &o->spec_tokens))
				return bad_value(flag, v, "a count from 1 to 64");
		} else if (!strcmp(flag, "--draft")) {
			o->draft = v;
		} else if (!strcmp(flag, "--heads")) {
			o->heads = v;
		} else if (!strcmp(flag, "--eagle")) {
			o->eagle.path = v;
		} else if (!strcmp(flag, "--eagle-tree")) {
			if (strcmp(v, "dynamic") && strcmp(v, "static"))
				return bad_value(flag, v, "dynamic or static");
			o->eagle.static_tree = strcmp(v, "static") == 0;
		} else if (!strcmp(flag, "--eagle-width") || !strcmp(flag, "--eagle-depth")) {
			bool w = !strcmp(flag, "--eagle-width");
			long n;
			if (!parse_long(v, 1, w ? 10 : 16, &n))
				return bad_value(flag, v, w ? "a count from 1 to 10" : "a count from 1 to 16");
			*(w ? &o->eagle.width : &o->eagle.depth) = (uint32_t)n;
		} else if (!strcmp(flag, "--prompt-lookup-min")) {
			if (!parse_long(v, 1, 32, &o->lookup_min))
				return bad_value(flag, v, "a length from 1 to 32");
		} else if (!strcmp(flag, "--prompt-lookup-max")) {
			if (!parse_long(v, 1, 32, &o->lookup_max))
				return bad_value(flag, v, "a length from 1 to 32");
		} else if (!strcmp(flag, "--placement")) {
			if (strcmp(v, "rank") && strcmp(v, "leader"))
				return bad_value(flag, v, "rank or leader");
			o->draft_rank = strcmp(v, "rank") == 0;
		} else if (!strcmp(flag, "--pipeline")) {
			if (strcmp(v, "on") && strcmp(v, "off"))
				return bad_value(flag, v, "on or off");
			o->pipeline = strcmp(v, "on") == 0;
		} else if (!strcmp(flag, "--draft-deadline")) {
			float d;
			if (!parse_float(v, &d) || !(d > 0))
				return bad_value(flag, v, "a number of seconds > 0");
			o->draft_deadline = d;
		} else if (!strcmp(flag, "--tp")) {
			if (!parse_long(v, 1, 1024, &o->tp))
				return bad_value(flag, v, "a shard count >= 1");
		}
	}
	if (!o->model) {
		fprintf(stderr, "specd-run: no model (-m MODEL.gguf); see --help\n");
		return EXIT_USAGE;
	}
	if (o->method == DRAFT_METHOD_DRAFT_MODEL && !o->draft) {
		fprintf(stderr, "specd-run: --method draft_model needs --draft MODEL.gguf\n");
		return EXIT_USAGE;
	}
	if (o->method == DRAFT_METHOD_MEDUSA && !o->heads) {
		fprintf(stderr, "specd-run: --method medusa needs --heads FILE.safetensors\n");
		return EXIT_USAGE;
	}
	if (o->method == DRAFT_METHOD_EAGLE && !o->eagle.path) {
		fprintf(stderr, "specd-run: --method eagle needs --eagle DIR (a checkpoint "
				"folder)\n");
		return EXIT_USAGE;
	}
	if ((o->tp != 1 || o->draft_rank) && o->perplexity) {
		fprintf(stderr, "specd-run: --perplexity runs in one process (no --tp, no "
				"--placement rank)\n");
		return EXIT_USAGE;
	}
	if (o->perplexity && o->prompt) {
		fprintf(stderr, "specd-run: --perplexity and --prompt exclude each other\n");
		return EXIT_USAGE;
	}
	int rc = check_combinations(o, seen);
	if (rc >= 0)
		return rc;
	if (!o->spec_tokens)
		o->spec_tokens = DEFAULT_SPEC_TOKENS;
	return -1;
}

/* ---- loading ---- */

/* The file is opened once: the tokenizer reads it first, so the prompt's length can
 * size the KV slot before the model is loaded from the same mapping. */
/* The generation stack (daemon/runtime.h) and the one job specd-run runs. */
struct run {
	struct runtime rt;
	const struct model_hparams *hp;
	struct draft_job *job;
	bool mpi;  /* MPI initialised (--tp, --placement rank) */
	int rank;  /* in the world; 0 without MPI */
	MPI_Comm target_comm;     /* ranks 0..T-1; MPI_COMM_NULL on the draft rank */
	struct draft_link *link;  /* --placement rank: on rank 0 and rank T */
};

static void run_fini(struct run *r)
{
	draft_job_destroy(r->job);
	runtime_close(&r->rt); /* with --tp, rank 0 releases the other shards first */
	draft_link_destroy(r->link); /* then the draft rank */
	r->link = NULL;
}

/* Opens the stack with a slot of at most max_ctx rows. */
static enum specd_status run_open(struct run *r, const struct run_opts *o, uint32_t max_ctx)
{
	struct specd_error err;
	specd_error_clear(&err);
	struct runtime_config rc = {
		.model_path = o->model,
		.device = o->device,
		.device_index = gpu_of(o),
		.dtype = o->dtype,
		.threads = threads_of(o),
		.act = o->act,
		.huge_pages = cfg_huge_pages_wanted(o->huge),
		.n_slots = 1,
		.max_ctx = max_ctx,
		.method = o->method,
		.spec_tokens = (uint32_t)o->spec_tokens,
		.prompt_lookup_min = (uint32_t)o->lookup_min,
		.prompt_lookup_max = (uint32_t)o->lookup_max,
		.draft_path = o->draft,
		.heads_path = o->heads,
		.eagle = o->eagle,
		.tp = r->mpi,
		.tp_comm = r->target_comm,
		.draft_link = r->link,
		.pipeline = o->pipeline,
	};
	enum specd_status st = runtime_open(&rc, &r->rt, &err);
	if (st != SPECD_OK) {
		fprintf(stderr, "specd-run: %s: %s\n", o->model, err.msg);
		return st;
	}
	r->hp = model_hparams(r->rt.model);
	if (r->rt.drafter)
		fprintf(stderr, "specd-run: method %s, K=%ld, drafter memory %.1f MiB%s\n",
			draft_method_name(o->method), o->spec_tokens,
			(double)draft_memory_bytes(r->rt.drafter) / (1024.0 * 1024.0),
			!r->link ? "" : o->pipeline && !draft_wants_hidden(r->rt.drafter)
						? " on the draft rank, pipelined"
						: " on the draft rank");
	return SPECD_OK;
}

static void describe(const struct run *r, const struct run_opts *o)
{
	const struct model_hparams *hp = r->hp;
	fprintf(stderr, "specd-run: %s: %s, %u layers, dim %u, %u/%u heads, vocab %u, %s; "
			"loaded in %.3f s on %s",
		o->model, model_arch_name(hp->arch), hp->n_layers, hp->dim, hp->n_heads,
		hp->n_kv_heads, hp->n_vocab, kern_dtype_name(hp->wtype), r->rt.load_s,
		cfg_device_name(o->device));
	const char *act = kern_cpu_act_of(r->rt.kern);
	if (o->device == CFG_DEVICE_CUDA)
		fprintf(stderr, " (GPU %d)", gpu_of(o));
	else if (act) /* as the backend reports it */
		fprintf(stderr, " (%s activations%s, %u thread%s)", act,
			model_huge_bytes(r->rt.model) ? ", weights in huge pages" : "", threads_of(o),
			threads_of(o) == 1 ? "" : "s");
	if (o->tp > 1)
		fprintf(stderr, "; %ld shards, %.1f MiB of weights on this one", o->tp,
			(double)model_resident_bytes(r->rt.model) / (1024.0 * 1024.0));
	fputc('\n', stderr);
}

static enum specd_status encode(const struct tok *t, const char *text, size_t len, bool bos,
				int32_t **ids, size_t *n)
{
	size_t cap = tok_encode_bound(len, bos);
	*ids = specd_malloc_array(cap ? cap : 1, sizeof(int32_t));
	if (!*ids)
		return SPECD_NOMEM;
	enum specd_status st = tok_encode(t, text, len, bos, *ids, cap, n);
	if (st != SPECD_OK) {
		specd_free(*ids);
		*ids = NULL;
	}
	return st;
}

/* Runs tokens[0..n) of slot 0 from position pos0 in batches of the model's maximum;
 * logits for every token when all is set (out: n rows), else for the last only. */
static enum specd_status forward_span(struct model *m, const int32_t *tokens, uint32_t n,
				      uint32_t pos0, bool all, float *out)
{
	uint32_t mb = model_max_batch(m), V = model_hparams(m)->n_vocab;
	uint32_t tok[MODEL_DEFAULT_MAX_BATCH], slot[MODEL_DEFAULT_MAX_BATCH] = {0};
	uint32_t pos[MODEL_DEFAULT_MAX_BATCH], idx[MODEL_DEFAULT_MAX_BATCH];
	if (mb > MODEL_DEFAULT_MAX_BATCH)
		mb = MODEL_DEFAULT_MAX_BATCH;
	for (uint32_t s = 0; s < n; s += mb) {
		uint32_t c = n - s < mb ? n - s : mb;
		for (uint32_t i = 0; i < c; i++) {
			tok[i] = (uint32_t)tokens[s + i];
			pos[i] = pos0 + s + i;
			idx[i] = i;
		}
		bool last = s + c == n;
		struct model_batch b = {
			.n_tokens = c, .tokens = tok, .slots = slot, .pos = pos,
			.n_out = all ? c : (last ? 1 : 0),
			.out_idx = all ? idx : &idx[c - 1],
			.logits = all ? out + (size_t)s * V : out,
		};
		struct specd_error err;
		enum specd_status st = model_forward(m, &b, &err);
		if (st != SPECD_OK) {
			fprintf(stderr, "specd-run: %s\n", err.msg);
			return st;
		}
	}
	return SPECD_OK;
}

/* ---- generation ---- */

/* Token text held back until it ends on a UTF-8 character boundary. */
struct stream {
	char *buf;
	size_t len, cap;
};

static enum specd_status stream_put(struct stream *s, const char *text, size_t len)
{
	if (s->len + len > s->cap) {
		size_t cap = (s->len + len) * 2;
		char *p = specd_realloc_array(s->buf, cap, 1);
		if (!p)
			return SPECD_NOMEM;
		s->buf = p;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, text, len);
	s->len += len;
	size_t ready = tok_utf8_complete(s->buf, s->len);
	fwrite(s->buf, 1, ready, stdout);
	fflush(stdout);
	memmove(s->buf, s->buf + ready, s->len - ready);
	s->len -= ready;
	return SPECD_OK;
}

static double per_s(double n, double s)
{
	return s > 0 ? n / s : 0.0;
}

/* The engine's one job on slot 0; it starts with the prompt's prefill. */
static enum specd_status run_start_job(struct run *r, const struct run_opts *o,
				       const int32_t *ids, uint32_t n, const struct sampler_params *sp)
{
	struct specd_error err;
	const int32_t *extra_eos = NULL;
	uint32_t n_extra_eos = tok_end_ids(r->rt.tok, &extra_eos);
	struct draft_job_params jp = {
		.sampling = *sp, .max_tokens = (uint32_t)o->max_tokens, .eos = tok_eos(r->rt.tok),
		.extra_eos = extra_eos, .n_extra_eos = n_extra_eos,
	};
	enum specd_status st;
	if ((st = draft_job_create(r->rt.engine, 0, &r->job, &err)) != SPECD_OK ||
	    (st = draft_job_start(r->job, ids, n, &jp, &err)) != SPECD_OK)
		fprintf(stderr, "specd-run: %s\n", err.msg);
	return st;
}

/* --chat: the prompt as one user message in the model's ChatML template, with the
 * file's default system prompt and the assistant header, so the model writes the reply
 * (which ends at <|im_end|>, the EOS of the instruct files). */
static enum specd_status chat_ids(struct run *r, const char *prompt, int32_t **ids, size_t *n)
{
	struct specd_error err;
	enum specd_status st = chat_user_prompt(r->rt.tok, r->rt.file, prompt, ids, n, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "specd-run: --chat: %s\n", err.msg);
	return st;
}

static int generate(const struct run_opts *o, struct run *r)
{
	struct stream out = {0};
	int32_t *ids = NULL;
	struct specd_error err;
	int rc = EXIT_FAILURE;
	enum specd_status st;

	/* The slot holds the prompt (at most a token per byte, plus BOS) and what may
	 * follow, within the model's context. */
	const char *prompt = o->prompt ? o->prompt : "";
	/* A chat template adds its markers and the default system prompt. */
	uint64_t want = (uint64_t)strlen(prompt) + 2 + (uint64_t)o->max_tokens + (o->chat ? 1024 : 0);
	if (run_open(r, o, want > UINT32_MAX ? UINT32_MAX : (uint32_t)want) != SPECD_OK)
		goto out;
	if (r->rt.follower) {
		/* Shards 1..T-1 serve rank 0's forwards until it is done. */
		if ((st = runtime_follow(&r->rt, &err)) != SPECD_OK)
			fprintf(stderr, "specd-run: shard %d: %s\n", r->rank, err.msg);
		rc = st == SPECD_OK ? EXIT_SUCCESS : EXIT_FAILURE;
		goto out;
	}
	size_t n_prompt = 0;
	if (o->chat) {
		if (chat_ids(r, prompt, &ids, &n_prompt) != SPECD_OK) {
			rc = EXIT_USAGE;
			goto out;
		}
	} else if ((st = encode(r->rt.tok, prompt, strlen(prompt), tok_add_bos(r->rt.tok), &ids,
				&n_prompt))) {
		fprintf(stderr, "specd-run: cannot encode the prompt: %s\n", specd_status_str(st));
		goto out;
	}
	if (n_prompt == 0) {
		fprintf(stderr, "specd-run: the prompt is empty and the model adds no BOS: "
				"nothing to start from\n");
		rc = EXIT_USAGE;
		goto out;
	}
	uint32_t ctx = kv_n_ctx(model_kv(r->rt.model));
	if (n_prompt > ctx) {
		fprintf(stderr, "specd-run: the prompt is %zu tokens; the model's context is %u\n",
			n_prompt, ctx);
		rc = EXIT_USAGE;
		goto out;
	}
	describe(r, o);

	struct sampler_params sp = o->sp;
	if (!o->seed_given)
		sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (!o->seed_given && !(sp.temperature == 0.0f || sp.top_k == 1))
		fprintf(stderr, "specd-run: seed %llu\n", (unsigned long long)sp.seed);

	fputs(prompt, stdout);
	if (o->chat)
		fputc('\n', stdout); /* the user's message, then the reply on its own line */
	fflush(stdout);
	if (run_start_job(r, o, ids, (uint32_t)n_prompt, &sp) != SPECD_OK)
		goto out;

	/* Step until the job stops, streaming each step's new tokens. */
	int32_t prev = ids[n_prompt - 1];
	uint32_t printed = 0, n_gen = 0;
	while (draft_job_stop(r->job) == DRAFT_STOP_NONE) {
		if ((st = draft_job_step(r->job, &err)) != SPECD_OK) {
			fprintf(stderr, "specd-run: %s\n", err.msg);
			goto out;
		}
		const int32_t *gen = draft_job_output(r->job, &n_gen);
		for (; printed < n_gen; printed++) {
			const char *text;
			size_t len;
			int32_t tok = gen[printed];
			if (tok_token_text(r->rt.tok, prev, tok, &text, &len) != SPECD_OK ||
			    stream_put(&out, text, len) != SPECD_OK) {
				fprintf(stderr, "specd-run: cannot print token %d\n", tok);
				goto out;
			}
			prev = tok;
		}
	}
	fwrite(out.buf, 1, out.len, stdout); /* bytes that never completed a character */
	fputc('\n', stdout);
	fflush(stdout);

	const struct draft_metrics *m = draft_job_metrics(r->job);
	char report[2048];
	fprintf(stderr, "specd-run: prompt %zu tokens in %.3f s (%.1f tokens/s)\n", n_prompt,
		m->t_prefill, per_s((double)n_prompt, m->t_prefill));
	fprintf(stderr, "specd-run: generated %u tokens in %.3f s (%.1f tokens/s); stopped: %s\n",
		n_gen, m->t_decode, draft_metrics_tokens_per_s(m),
		draft_stop_name(draft_job_stop(r->job)));
	draft_metrics_format(m, "specd-run: ", report, sizeof(report));
	fputs(report, stderr);
	if (r->link && r->rt.drafter) {
		struct draft_link_stats ls;
		draft_link_get_stats(r->link, &ls);
		fprintf(stderr, "specd-run: draft rank: %llu proposals, %llu drafted ahead "
				"(pipelining), %.3f s waited for them%s\n",
			(unsigned long long)ls.proposals, (unsigned long long)ls.pipelined,
			ls.t_wait, ls.dead ? "; it stalled: plain decoding since" : "");
	}
	rc = EXIT_SUCCESS;
out:
	specd_free(out.buf);
	specd_free(ids);
	run_fini(r);
	return rc;
}

/* The dedicated draft rank: drafts for rank 0 until it is done. */
static int serve_draft(const struct run_opts *o, struct run *r)
{
	struct runtime_config rc = {
		.model_path = o->model,
		.device = o->device,
		.device_index = gpu_of(o),
		.dtype = o->dtype,
		.threads = threads_of(o),
		.act = o->act,
		.huge_pages = cfg_huge_pages_wanted(o->huge),
		.draft_path = o->draft,
		.heads_path = o->heads,
		.eagle = o->eagle,
	};
	struct specd_error err;
	specd_error_clear(&err);
	/* The pid lets a harness stop this rank (tests/drafters/test_draft_rank_stall.c). */
	fprintf(stderr, "specd-run: draft rank %d (pid %d) drafting for rank 0\n", r->rank,
		(int)getpid());
	enum specd_status st = runtime_serve_draft(&rc, r->link, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "specd-run: draft rank %d: %s\n", r->rank, err.msg);
	draft_link_destroy(r->link);
	r->link = NULL;
	return st == SPECD_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- perplexity ---- */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			char *p = specd_realloc_array(buf, cap, 1);
			if (!p) {
				specd_free(buf);
				fclose(f);
				errno = ENOMEM;
				return NULL;
			}
			buf = p;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		specd_free(buf);
		errno = EIO;
		return NULL;
	}
	*len = n;
	return buf;
}

static int perplexity(const struct run_opts *o)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	int32_t *ids = NULL;
	float *logits = NULL;
	char *text = NULL;
	int rc = EXIT_FAILURE;
	size_t len = 0, n = 0;

	if (!(text = read_file(o->perplexity, &len))) {
		fprintf(stderr, "specd-run: %s: %s\n", o->perplexity, strerror(errno));
		goto out;
	}
	/* At most a token per byte, plus BOS: the window need not exceed that. */
	if (run_open(&r, o, len + 2 > UINT32_MAX ? UINT32_MAX : (uint32_t)(len + 2)) != SPECD_OK)
		goto out;
	if (encode(r.rt.tok, text, len, true, &ids, &n) != SPECD_OK) {
		fprintf(stderr, "specd-run: %s: cannot tokenize\n", o->perplexity);
		goto out;
	}
	if (n < 2) {
		fprintf(stderr, "specd-run: %s: %zu tokens, nothing to predict\n", o->perplexity, n);
		rc = EXIT_USAGE;
		goto out;
	}
	uint32_t ctx = kv_n_ctx(model_kv(r.rt.model));
	uint32_t window = n > ctx ? ctx : (uint32_t)n;
	describe(&r, o);
	uint32_t V = r.hp->n_vocab, mb = model_max_batch(r.rt.model);
	if (mb > MODEL_DEFAULT_MAX_BATCH)
		mb = MODEL_DEFAULT_MAX_BATCH;
	logits = specd_malloc_array((size_t)mb * V, sizeof(float));
	if (!logits)
		goto out;

	/* Windows of the context's length, each scored from its second token on (the
	 * first has no prefix in the window); the cache restarts per window. */
	double nll = 0, t0 = specd_now();
	size_t predicted = 0;
	for (size_t w = 0; w + 1 < n; w += window) {
		uint32_t wn = n - w < window ? (uint32_t)(n - w) : window;
		if (kv_truncate(model_kv(r.rt.model), 0, 0) != SPECD_OK)
			goto out;
		for (uint32_t s = 0; s + 1 < wn; s += mb) {
			uint32_t c = wn - 1 - s < mb ? wn - 1 - s : mb;
			if (forward_span(r.rt.model, ids + w + s, c, s, true, logits) != SPECD_OK)
				goto out;
			for (uint32_t i = 0; i < c; i++) {
				const float *l = logits + (size_t)i * V;
				double max = -INFINITY, sum = 0;
				for (uint32_t j = 0; j < V; j++)
					max = fmax(max, l[j]);
				for (uint32_t j = 0; j < V; j++)
					sum += exp((double)l[j] - max);
				nll -= (double)l[ids[w + s + i + 1]] - max - log(sum);
				predicted++;
			}
		}
	}
	double dt = specd_now() - t0;
	double mean = nll / (double)predicted;
	printf("perplexity: %zu tokens, %zu predicted, mean NLL %.6f, perplexity %.4f\n", n,
	       predicted, mean, exp(mean));
	fprintf(stderr, "specd-run: scored %zu tokens in %.3f s (%.1f tokens/s)\n", n, dt,
		per_s((double)n, dt));
	rc = EXIT_SUCCESS;
out:
	specd_free(text);
	specd_free(ids);
	specd_free(logits);
	run_fini(&r);
	return rc;
}

int main(int argc, char **argv)
{
	log_init_from_env();
	struct run_opts o;
	int rc = parse_args(argc, argv, &o);
	if (rc >= 0)
		return rc;
	struct specd_error err;
	if (sampler_params_check(&o.sp, &err) != SPECD_OK) {
		fprintf(stderr, "specd-run: %s\n", err.msg);
		return EXIT_USAGE;
	}
	if (o.perplexity)
		return perplexity(&o);
	struct run r;
	memset(&r, 0, sizeof(r));
	r.target_comm = MPI_COMM_NULL;
	if (o.tp > 1 || o.draft_rank) {
		/* --tp T: one process per shard under mpirun -np T; rank 0 prints. With
		 * --placement rank one more process, rank T, drafts. */
		int provided = 0, size = 0;
		long want = o.tp + (o.draft_rank ? 1 : 0);
		if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS ||
		    provided < MPI_THREAD_FUNNELED) {
			fprintf(stderr, "specd-run: --tp and --placement rank need MPI with "
					"MPI_THREAD_FUNNELED\n");
			return EXIT_FAILURE;
		}
		MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
		MPI_Comm_rank(MPI_COMM_WORLD, &r.rank);
		MPI_Comm_size(MPI_COMM_WORLD, &size);
		bool drafts = o.draft_rank && r.rank == o.tp;
		log_set_identity(r.rank, drafts ? "draft" : r.rank ? "shard" : "leader");
		if (size != want) {
			if (r.rank == 0 && !o.draft_rank)
				fprintf(stderr, "specd-run: --tp %ld but mpirun started %d rank%s; run "
						"mpirun -np %ld specd-run ...\n", o.tp, size,
					size == 1 ? "" : "s", o.tp);
			else if (r.rank == 0)
				fprintf(stderr, "specd-run: --tp %ld with --placement rank needs %ld "
						"ranks (T shards + 1 draft rank) but mpirun started %d; "
						"run mpirun -np %ld specd-run ...\n", o.tp, want, size,
					want);
			MPI_Finalize();
			return EXIT_USAGE;
		}
		r.mpi = true;
		/* Every rank takes part in the split; the draft rank is in no target group. */
		if (MPI_Comm_split(MPI_COMM_WORLD, drafts ? MPI_UNDEFINED : 0, r.rank,
				   &r.target_comm) != MPI_SUCCESS) {
			fprintf(stderr, "specd-run: rank %d: cannot make the target group\n", r.rank);
			MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE);
		}
		if (o.draft_rank && (r.rank == 0 || drafts)) {
			struct draft_link_config lc = {
				.leader = 0, .draft = (int)o.tp, .deadline_s = o.draft_deadline,
			};
			if (draft_link_create(MPI_COMM_WORLD, &lc, &r.link, &err) != SPECD_OK) {
				fprintf(stderr, "specd-run: rank %d: %s\n", r.rank, err.msg);
				MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE);
			}
		}
		rc = drafts ? serve_draft(&o, &r) : generate(&o, &r);
	} else {
		rc = generate(&o, &r);
	}
	if (r.target_comm != MPI_COMM_NULL)
		MPI_Comm_free(&r.target_comm);
	if (r.mpi)
		MPI_Finalize();
	return rc;
}
