/* The tensor-parallel target (DESIGN.md §3, §5): T ranks each load shard r of T of the
 * model (model/shard.h) with a communication hook over a parallel/comm.h communicator,
 * and run every forward together. Two ways to drive them:
 *   - leader-driven (specd's target group, specd-run --tp): rank 0 runs the decoding
 *     loop and calls par_tp_step / par_tp_truncate / par_tp_compact, which broadcast
 *     each operation to the other shards; ranks 1..T-1 sit in par_tp_follow until
 *     par_tp_stop.
 *   - lockstep: every rank calls model_forward on par_tp_model_get() with the same
 *     batch, then par_tp_argmax or par_tp_gather_logits.
 * Greedy needs no gathered logits: each shard's local argmax meets the others' in one
 * max-loc reduction. Whole rows are gathered to the leader only when sampling.
 *
 * A stalled shard (SIGSTOP, a hung device) makes every call here return SPECD_TIMEOUT
 * on the others within the deadline, the message naming it; the job cannot continue
 * after that (a collective is half done): log the message and call par_tp_abort.
 *
 * Threads: the thread that owns MPI, on every rank of the target group. */
#ifndef SPECD_PARALLEL_TP_H
#define SPECD_PARALLEL_TP_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "model/llama.h"
#include "model/shard.h"
#include "parallel/comm.h"

struct gguf_file;

struct par_tp_config {
	double deadline_s; /* per communicator operation; 0: PAR_COMM_DEFAULT_DEADLINE_S */
	/* With a device backend (model_config.kern): the forward's all-reduces run over
	 * NCCL on the device's buffers, on GPU `device` (the backend's), instead of
	 * through host memory over MPI. A build without NCCL says so in the log and keeps
	 * MPI. Control messages, max-loc and the logits' gather stay on MPI (they travel
	 * in host memory). */
	bool nccl;
	int device;
};

struct par_tp_model;

/* Collective over comm, whose ranks are the shards (T = its size; T = 1 loads the whole
 * model with no hook). Opens path on every rank and loads this rank's shard with cfg
 * (cfg->comm must be NULL: the hook is made here). Every rank returns the same status:
 * when one rank fails the others return SPECD_INVAL naming it (its own log says why).
 * Errors: model_load's, SPECD_MPI, SPECD_NOMEM, SPECD_TIMEOUT. *out only on success. */
enum specd_status par_tp_model_load(MPI_Comm comm, const char *path,
				    const struct model_config *cfg,
				    const struct par_tp_config *tcfg,
				    struct par_tp_model **out, struct specd_error *err);

/* As par_tp_model_load from an open file, which must outlive the result. */
enum specd_status par_tp_model_load_gguf(MPI_Comm comm, const struct gguf_file *f,
					 const struct model_config *cfg,
					 const struct par_tp_config *tcfg,
					 struct par_tp_model **out, struct specd_error *err);

/* For a rank that failed before it could load (its file, tokenizer or backend): takes
 * the part in par_tp_model_load_gguf's collective set-up and vote that a failed load
 * takes, so that the other ranks fail naming this one rather than wait for it. Collective
 * over comm; returns why's status, with why's message in err. */
enum specd_status par_tp_model_load_failed(MPI_Comm comm, const struct par_tp_config *tcfg,
					   const struct specd_error *why, struct specd_error *err);

/* True once a step, truncate or compact failed after the followers heard of it (a
 * communicator's failure, or the leader's own forward failing mid-way), or on a shard
 * once par_tp_follow failed: the shards are out of step for good and par_tp_abort is
 * all that is left. A call refused before (bad arguments, SPECD_INVAL) does not count. */
bool par_tp_broken(const struct par_tp_model *tp);

/* Frees the shard, its communicator and its file when it opened it. NULL is a no-op.
 * Not collective. */
void par_tp_model_destroy(struct par_tp_model *tp);

/* The shard's model: hparams are the whole model's; model_shard() says which part. */
struct model *par_tp_model_get(struct par_tp_model *tp);
struct par_comm *par_tp_comm(struct par_tp_model *tp);
int par_tp_rank(const struct par_tp_model *tp);
int par_tp_size(const struct par_tp_model *tp);
/* Floats per row of the logits model_forward writes on this shard. */
uint32_t par_tp_local_vocab(const struct par_tp_model *tp);

/* Lockstep: greedy ids (whole vocabulary) of rows logit rows on every shard; see
 * model_shard_argmax. Collective. */
enum specd_status par_tp_argmax(struct par_tp_model *tp, const float *logits, uint32_t rows,
				uint32_t *out, struct specd_error *err);

/* Lockstep: whole logit rows (rows, n_vocab) on rank 0 (full may be NULL elsewhere);
 * see model_shard_gather_logits. Collective. */
enum specd_status par_tp_gather_logits(struct par_tp_model *tp, const float *logits,
				       uint32_t rows, float *full, struct specd_error *err);

/* ---- leader-driven ---- */

enum par_tp_want {
	PAR_TP_WANT_NONE,   /* only the KV cache (prefill) and hidden states */
	PAR_TP_WANT_ARGMAX, /* ids: (n_out) greedy ids, no logits travel */
	PAR_TP_WANT_LOGITS, /* b->logits: (n_out, n_vocab) whole rows, gathered */
};

/* Leader (rank 0) only: runs batch b on every shard. b is as for model_forward except
 * that b->logits, when set with PAR_TP_WANT_LOGITS, receives whole-vocabulary rows;
 * hidden and layer_hidden are filled as by model_forward (they are the same on every
 * shard). With PAR_TP_WANT_ARGMAX, ids (n_out entries) receives the greedy ids.
 * Errors: model_forward's (SPECD_INVAL for a bad batch, checked on the leader before
 * anything is sent), the communicator's. */
enum specd_status par_tp_step(struct par_tp_model *tp, const struct model_batch *b,
			      enum par_tp_want want, uint32_t *ids, struct specd_error *err);

/* Leader only: kv_truncate / kv_compact on every shard's cache. Errors: kv's (checked
 * on the leader first), the communicator's. */
enum specd_status par_tp_truncate(struct par_tp_model *tp, uint32_t slot, uint32_t len,
				  struct specd_error *err);
enum specd_status par_tp_compact(struct par_tp_model *tp, uint32_t slot, uint32_t base,
				 const uint32_t *rows, uint32_t n, struct specd_error *err);

/* Leader only: ends the followers' par_tp_follow. */
enum specd_status par_tp_stop(struct par_tp_model *tp, struct specd_error *err);

/* Ranks 1..T-1: serves the leader's operations until par_tp_stop (SPECD_OK). Waiting
 * between operations sleeps (DESIGN.md §10) and has no deadline; inside one, the
 * deadline holds. Errors: SPECD_TIMEOUT (a stalled rank, named), SPECD_MPI, and a
 * forward's error that the leader did not foresee (then every shard fails the step). */
enum specd_status par_tp_follow(struct par_tp_model *tp, struct specd_error *err);

/* Ends the whole job (par_comm_abort) after a communicator error the caller has
 * logged. Does not return. */
void par_tp_abort(struct par_tp_model *tp, int code);

#endif
