/* The cluster file (YAML, libyaml): what the cluster is, where it listens, which model
 * the target runs on how many ranks, where the drafter lives, how to speculate and
 * under which constraints. One schema table (config_schema.c) drives parsing,
 * defaults, validation and docs/config.md, so they cannot drift.
 *
 * Who calls: rank 0 reads the file (cfg_load_file) and broadcasts its bytes; every
 * rank parses the same bytes (cfg_parse_buffer) so all ranks hold one configuration.
 * Errors name the file, line and key: "FILE:LINE: unknown key 'KEY'". */
#ifndef SPECD_DAEMON_CONFIG_H
#define SPECD_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "drafters/method.h"
#include "kernels/kern.h"

/* Where a rank computes (target.device, draft.device; daemon/runtime.h opens it). */
enum cfg_device {
	CFG_DEVICE_CPU = 0,
	/* a GPU: weights, KV cache and activations in its memory */
	CFG_DEVICE_CUDA,
	/* the CPU computing through the device code path (kern_emu_create: memory kept
	 * apart as a GPU's, uploads and downloads), bitwise the CPU's results: for testing
	 * that path on machines without a GPU */
	CFG_DEVICE_EMULATED,
};

enum cfg_placement {
	CFG_PLACEMENT_RANK = 0, /* a dedicated draft rank: world size = T + 1 */
	CFG_PLACEMENT_LEADER,   /* the drafter runs inside the leader: world size = T */
};

enum cfg_dtype {
	CFG_DTYPE_AUTO = 0, /* the file's own types */
	CFG_DTYPE_F32,
	CFG_DTYPE_F16,
	CFG_DTYPE_BF16,
};

/* target.huge_pages, draft.huge_pages: the weights copied into huge pages at load
 * (model_config.huge_pages_max; within a budget of free memory, runtime.c). */
enum cfg_huge_pages {
	CFG_HUGE_AUTO = 0, /* on when the kernel offers them (specd_huge_pages_offered) */
	CFG_HUGE_ON,
	CFG_HUGE_OFF,
};

struct cfg_limits {
	uint64_t frame_bytes;   /* largest frame accepted from a client */
	uint32_t prompt_tokens; /* longest prompt, in tokens */
	uint32_t max_tokens;    /* largest max_tokens a request may ask for */
	uint32_t jobs;          /* concurrent jobs */
	uint32_t jobs_per_connection; /* of them, one connection's at most; 0: jobs */
	uint32_t connections;   /* concurrent client connections */
	double idle_seconds;    /* a connection owing and owed nothing, or not reading
				 * its replies, is closed after this long; 0: never */
	double frame_seconds;   /* a frame must arrive whole this long after its first
				 * byte; 0: no limit */
};

struct cfg_cluster {
	char *source_path; /* the file as given; "" when parsed from a buffer with no name */
	char *source_dir;  /* its folder: relative paths resolve against it */

	char *name;
	char *log_level; /* error|warn|info|debug */

	/* server */
	char *listen;     /* "HOST:PORT" or "unix:PATH" */
	char *auth_token; /* NULL when unset; required for non-loopback TCP */
	struct cfg_limits limits;

	/* target */
	char *target_model; /* absolute after resolution */
	int tensor_parallel;
	enum cfg_device target_device;
	enum cfg_dtype target_dtype;
	bool target_threads_auto; /* target.threads: auto (threads_of in leader.c) */
	int target_threads;       /* 0 when auto */
	enum kern_act target_activations; /* quantised matmuls' activations (cpu, emulated) */
	enum cfg_huge_pages target_huge_pages;
	int target_slots;   /* sequences in the KV cache at once */
	int target_context; /* KV rows per sequence; 0: the model's own context */
	int target_batch_tokens; /* tokens per target forward at most; 0: slots x (K + 1) */

	/* draft */
	enum cfg_placement draft_placement;
	enum cfg_device draft_device;
	bool draft_threads_auto;
	int draft_threads;        /* 0 when auto */
	enum kern_act draft_activations;  /* as target_activations, on the draft rank */
	enum cfg_huge_pages draft_huge_pages; /* as target_huge_pages, for a draft model */

	/* speculation */
	bool method_auto; /* method: auto (the selector decides) */
	enum draft_method method; /* meaningful when !method_auto (NONE when auto) */
	bool spec_tokens_auto;    /* num_speculative_tokens: auto */
	int num_speculative_tokens; /* 1..32; 0 when auto */
	int max_speculative_tokens; /* the largest K the selector considers when auto */
	bool pipeline;            /* draft step t+1 while step t verifies */
	bool measure;             /* probe links and calibrate at start-up (the selector) */
	bool expect_sampling;     /* plan for sampling requests: q crosses the link */
	bool adapt;               /* re-decide K while serving (daemon/adapt.h) */
	int adapt_interval;       /* steps between re-decisions of the cluster's K */
	double adapt_hysteresis;  /* how much faster a new K must be predicted */
	/* ngram's n-gram lengths; 0 with the _auto flag: the drafter's defaults (2 and 5),
	 * or the origin rule table's when it decides */
	int prompt_lookup_min, prompt_lookup_max;
	bool lookup_min_auto, lookup_max_auto;
	char *draft_model;   /* NULL when not configured */
	char *eagle_heads;   /* the EAGLE checkpoint folder; NULL when not configured */
	int eagle_tree;      /* 0: dynamic (EAGLE-2), 1: static */
	int eagle_width, eagle_depth;
	char *medusa_heads;  /* NULL when not configured */

	/* constraints */
	double target_speedup;     /* 0: no floor */
	bool low_memory;
	uint64_t max_draft_memory; /* bytes; 0: no cap */
};

enum cfg_flags {
	/* Check that every path names an existing file (rank 0 does; other ranks parse
	 * the broadcast bytes without it, since their file systems may differ). */
	CFG_CHECK_PATHS = 1u << 0,
};

/* Reads and parses `path`. On success *out is a new config (free with cfg_destroy);
 * on failure *out is untouched and err says "PATH:LINE: ..." (the file as given, a
 * 1-based line, the key). SPECD_CONFIG for content errors (also a file over 1 MiB),
 * SPECD_IO for an unreadable file ("PATH: cannot read: <strerror>"), SPECD_NOMEM,
 * SPECD_INVAL for a NULL path or out. Also returns the raw bytes in *text and *len
 * when text is non-NULL (NUL-terminated, free with specd_free; for broadcasting).
 * Any thread. */
enum specd_status cfg_load_file(const char *path, unsigned flags, struct cfg_cluster **out,
				char **text, size_t *len, struct specd_error *err);

/* Parses YAML text as if read from `path` (used for messages and to resolve relative
 * paths; may be "" or NULL for no file: messages then say "<config>" and relative
 * paths resolve against the working directory). Same errors as cfg_load_file, plus
 * SPECD_INVAL for bad arguments. The text need not be NUL-terminated. Any thread;
 * reads the environment (${VAR}, HOME) and, with CFG_CHECK_PATHS, the file system. */
enum specd_status cfg_parse_buffer(const char *text, size_t len, const char *path,
				   unsigned flags, struct cfg_cluster **out,
				   struct specd_error *err);

/* Frees a config; NULL is a no-op. */
void cfg_destroy(struct cfg_cluster *cfg);

/* The world size this file asks for: tensor_parallel, plus one for a dedicated draft
 * rank. */
int cfg_world_size(const struct cfg_cluster *cfg);

/* "cpu", "cuda" / "rank", "leader" / "auto", "f32", ...: the cluster file's names;
 * "?" outside the enum. */
const char *cfg_device_name(enum cfg_device d);
/* The device a name stands for (the cluster file's names); false for any other. */
bool cfg_device_parse(const char *name, enum cfg_device *out);
const char *cfg_placement_name(enum cfg_placement p);
/* Whether weights go into huge pages under h (auto: whether the kernel offers them). */
bool cfg_huge_pages_wanted(enum cfg_huge_pages h);
/* auto, on, off; false (nothing written) otherwise. */
bool cfg_huge_pages_parse(const char *name, enum cfg_huge_pages *out);
const char *cfg_dtype_name(enum cfg_dtype t);
/* The type a name stands for ("auto", "f32", "f16", "bf16"); false for any other. */
bool cfg_dtype_parse(const char *name, enum cfg_dtype *out);

/* Writes docs/config.md's contents (Markdown generated from the schema table) to f.
 * Returns SPECD_IO when writing fails. */
enum specd_status cfg_write_reference(FILE *f);

#endif
