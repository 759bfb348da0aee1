/* Everything one process needs to generate: the target's GGUF file, its tokenizer,
 * a backend (the CPU, a GPU, or the CPU through the device code path), the model with
 * its KV slots, the drafter of the chosen method and the speculative engine over them.
 * The daemon's leader and specd-run open the same stack through this one function, so
 * they cannot drift apart.
 *
 * Threads: open and close from the thread that will run the model (compute thread). */
#ifndef SPECD_DAEMON_RUNTIME_H
#define SPECD_DAEMON_RUNTIME_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config.h"
#include "drafters/drafter.h"
#include "drafters/method.h"
#include "kernels/kern.h"

struct gguf_file;
struct tok;
struct kern_ctx;
struct model;
struct drafter;
struct draft_engine;
struct par_tp_model;
struct draft_link;

struct runtime_config {
	const char *model_path;
	/* The backend (cpu, cuda or emulated: config.h). On a GPU, Medusa heads and EAGLE
	 * layers run there too. */
	enum cfg_device device;
	int device_index;          /* CFG_DEVICE_CUDA: which GPU */
	enum cfg_dtype dtype;      /* the target's unquantised weights held as; auto: the file's */
	uint32_t threads;          /* CPU threads of the backend; 0: 1 */
	/* cpu and emulated: how matmuls on quantised weights read activations
	 * (kern_cpu_config.act); cuda ignores it. 0: KERN_ACT_F32. */
	enum kern_act act;
	/* Host backends: the target's (and a draft model's) weight matrices copied into
	 * huge pages at load (decided by cfg_huge_pages_wanted), within this rank's share
	 * of the machine's free memory (model_config.huge_pages_max). */
	bool huge_pages;
	uint32_t n_slots;          /* sequences at once; 0: 1 */
	uint32_t max_ctx;          /* KV rows per slot at most; 0: the model's context */
	uint32_t batch_tokens;     /* tokens per forward at most (raised to K + 1); 0: n_slots x (K + 1) */
	enum draft_method method;  /* none: plain decoding */
	uint32_t spec_tokens;      /* K (ignored for none) */
	uint32_t prompt_lookup_min, prompt_lookup_max; /* ngram; 0: defaults */
	const char *draft_path;    /* draft_model */
	const char *heads_path;    /* medusa: the heads' safetensors file */
	struct draft_eagle_config eagle; /* eagle: the checkpoint folder and its tree */
	uint32_t also;             /* methods the drafter holds beside (draft_config.also) */
	/* Tensor parallelism when tp is set: tp_comm is the target group (ranks 0..T-1;
	 * every one of them calls runtime_open with the same config; a group of one loads
	 * the whole model). Rank 0 of the group gets the whole stack and drives the
	 * others; the others get only their shard and serve it with runtime_follow. */
	bool tp;
	MPI_Comm tp_comm;
	double tp_deadline_s;      /* per collective; 0: the communicator's default */
	/* The dedicated draft rank (placement "rank"; borrowed, the leader's side of the
	 * link): the drafter runs there (drafters/remote.h) instead of in this process.
	 * NULL: the drafter lives here. */
	struct draft_link *draft_link;
	bool pipeline;             /* with draft_link: draft step t+1 while t verifies */
	bool draft_warm;           /* with draft_link: draft_remote_config.warm */
	bool local_ngram;          /* with draft_link: draft_remote_config.local_ngram */
};

struct runtime {
	struct gguf_file *file;
	struct tok *tok;
	struct kern_ctx *kern;
	struct model *model;
	struct drafter *drafter;   /* NULL for method none */
	struct draft_engine *engine;  /* NULL on tensor-parallel followers */
	struct par_tp_model *tp;      /* NULL without tensor parallelism */
	bool follower;                /* a shard other than 0: call runtime_follow */
	double load_s;                /* seconds to open everything */
};

/* Opens the whole stack. On failure everything opened is closed again, *rt is zeroed
 * and err says which part failed and why (the file, the tokenizer, a tensor, the
 * drafter's compatibility). Errors: those of the parts (SPECD_IO, SPECD_INVAL,
 * SPECD_UNSUPPORTED, SPECD_NOMEM). */
enum specd_status runtime_open(const struct runtime_config *cfg, struct runtime *rt,
			       struct specd_error *err);
/* Tensor-parallel followers: serves the leader's forwards until it closes its runtime
 * (SPECD_OK). A stalled or failed shard ends the whole job (logged, then aborted). */
enum specd_status runtime_follow(struct runtime *rt, struct specd_error *err);

/* The dedicated draft rank: opens what checking a drafter against the target needs
 * (the target's file and a model over it without KV rows on the CPU: its pages are
 * mapped, not read, whatever the device) and the drafters' backend (cfg->device,
 * device_index, threads, act), then serves the leader's drafting requests (draft_serve)
 * until it destroys its link. Uses cfg->model_path, device, device_index, threads, act,
 * draft_path, heads_path and eagle. Errors: opening the target's, and
 * draft_serve's (the leader's drafter could not be made here: both ranks fail). */
enum specd_status runtime_serve_draft(const struct runtime_config *cfg, struct draft_link *link,
				      struct specd_error *err);

/* Creates the backend cfg asks for (device, device_index, threads, act) into *out. Errors:
 * SPECD_UNSUPPORTED (cuda in a build without CUDA, or no GPU: err says which),
 * SPECD_INVAL (no such GPU, or act out of range), SPECD_CUDA, SPECD_NOMEM,
 * SPECD_INTERNAL; err says which backend failed. */
enum specd_status runtime_backend_create(const struct runtime_config *cfg, struct kern_ctx **out,
					 struct specd_error *err);

/* Closes what runtime_open opened, in the right order; on a tensor-parallel leader it
 * first releases the followers. Idempotent. */
void runtime_close(struct runtime *rt);

#endif
