/* The speculative generation engine: one step is "propose K -> one target forward over
 * [last token, d1..dK] -> verify -> commit: truncate the target's and the drafter's KV
 * to what was kept -> metrics". specd-run drives it in one process; the daemon's
 * scheduler will drive the same engine with many jobs (DESIGN.md §3).
 *
 * A struct draft_job is one sequence: its KV slot, its history (prompt + output), its
 * samplers and its metrics. draft_engine_step advances several jobs with one target
 * forward (each job's verify tokens side by side in the batch, the forward being
 * batch-invariant); with one job that is plain speculative decoding.
 *
 * Exactness: with method none the engine is plain decoding (one token per forward,
 * the same sampler draws as sampler_sample). With a drafter, greedy output is
 * bit-identical to that, and sampled output follows the same distribution (verify.h).
 * KV invariant between steps: the target's slot holds every history token but the
 * last, which opens the next verify batch.
 *
 * On a device target (and the exact verifier) the logits rows leave the device only
 * for a job that needs them: greedy jobs are verified from each row's argmax
 * (model_batch.ids), sampling ones from a token drawn where each row is
 * (model_batch.draws, verify.h draft_verify_drawn), both giving the same tokens as
 * the rows would. Jobs that want log-probabilities and a sampling draft model's
 * proposals (full q) read the rows on the host.
 *
 * Token trees: a drafter may propose a tree (drafter.h) of up to K nodes; the engine
 * verifies all nodes in the same one forward under the tree mask (model_batch.parent)
 * and keeps the accepted path with kv_compact. For drafters that read the target's
 * hidden state (draft_wants_hidden), the verify rows also return the final hidden
 * states, and the one at the position that chose the last token is shown to the next
 * propose (draft_seq.hidden); a job whose prompt is prefilled inside the steps
 * (defer_prefill) or is one token long has none for its first step, which is then
 * plain decoding.
 *
 * Threads: the compute thread only (it runs the model). */
#ifndef SPECD_DRAFTERS_ENGINE_H
#define SPECD_DRAFTERS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "drafters/drafter.h"
#include "drafters/metrics.h"
#include "drafters/verify.h"
#include "model/sampler.h"

struct model;
struct model_batch;

/* How the engine reaches the target when it is not one local model: a tensor-parallel
 * group driven from rank 0 (parallel/tp.h) runs each forward and KV truncation on every
 * shard. With no ops the engine calls model_forward and kv_truncate on `target`. */
struct draft_target_ops {
	/* As model_forward, but b->logits receives whole-vocabulary rows, and b->ids the
	 * whole vocabulary's argmax of each (b->logits NULL then: the rows need not
	 * travel). The engine never asks such a target for draws (b->n_draws is 0): its
	 * shards each hold part of a row. */
	enum specd_status (*forward)(void *user, const struct model_batch *b,
				     struct specd_error *err);
	/* As kv_truncate on every copy of the target's cache. */
	enum specd_status (*truncate)(void *user, uint32_t slot, uint32_t len,
				      struct specd_error *err);
	/* As kv_compact on every copy (keeps a token tree's accepted path). NULL: the
	 * target takes no tree proposals (a step with one fails with SPECD_UNSUPPORTED). */
	enum specd_status (*compact)(void *user, uint32_t slot, uint32_t base,
				     const uint32_t *rows, uint32_t n, struct specd_error *err);
};

struct draft_engine_config {
	/* borrowed; must outlive the engine. With target_ops, the leader's shard: its
	 * hyper-parameters and KV lengths are the whole target's. */
	struct model *target;
	const struct draft_target_ops *target_ops; /* NULL: the local model */
	void *target_user;                         /* passed to target_ops */
	struct drafter *drafter;   /* borrowed; NULL: plain decoding (method none) */
	uint32_t spec_tokens;      /* K: 1 .. draft_k_max(drafter), and K + 1 must fit
				      model_max_batch; ignored without a drafter */
	draft_verify_fn *verify;   /* NULL: draft_verify (the exact one); any other reads
				      every job's logits rows on the host */
};

struct draft_engine;

/* Errors: SPECD_INVAL (no target, K out of range), SPECD_NOMEM. *out only on success. */
enum specd_status draft_engine_create(const struct draft_engine_config *cfg,
				      struct draft_engine **out, struct specd_error *err);
/* NULL is a no-op. Destroy the jobs first. */
void draft_engine_destroy(struct draft_engine *e);

enum draft_stop {
	DRAFT_STOP_NONE = 0,     /* still generating */
	DRAFT_STOP_EOS,          /* the end-of-sequence token (not part of the output) */
	DRAFT_STOP_MAX_TOKENS,
	DRAFT_STOP_CONTEXT,      /* the slot is full */
};

/* "running", "end of sequence", "max tokens", "context full". */
const char *draft_stop_name(enum draft_stop s);

struct draft_job_params {
	struct sampler_params sampling;
	uint32_t max_tokens;     /* 0: nothing is generated */
	int32_t eos;             /* the end-of-sequence id; < 0: none */
	/* More ids that end the sequence as eos does (tok_end_ids: a chat model's
	 * <|endoftext|> beside its <|im_end|>); read during the job, so they must outlive
	 * it (the tokenizer's do). */
	const int32_t *extra_eos;
	uint32_t n_extra_eos;
	/* Speculation for this job: plain decoding (the drafter is neither told nor
	 * asked), or spec_tokens drafted per step, 1 .. the engine's K (0: the engine's K).
	 * Neither changes the output (greedy: bitwise; sampling: in distribution). */
	bool plain;
	uint32_t spec_tokens;
	/* Log-probabilities of each output token (sampler_logprobs: the chosen token and
	 * the top_logprobs most likely, top_logprobs <= SAMPLER_MAX_TOP_LOGPROBS). */
	bool logprobs;
	uint32_t top_logprobs;
	/* Prefill the prompt inside draft_engine_step, in the rows the other jobs' verify
	 * tokens leave free, rather than all at once in draft_job_start: a long prompt
	 * then does not stall the running jobs (the daemon). The job emits nothing until
	 * its prompt is in. The drafter's own prefill stays in draft_job_start. */
	bool defer_prefill;
};

struct draft_job;

/* A job on KV slot `slot` of the target (and of the drafter), with its buffers sized
 * for the slot's context. Errors: SPECD_INVAL (slot out of range), SPECD_NOMEM. */
enum specd_status draft_job_create(struct draft_engine *e, uint32_t slot,
				   struct draft_job **out, struct specd_error *err);
/* NULL is a no-op. */
void draft_job_destroy(struct draft_job *j);

/* Starts a sequence: resets the samplers and both KV slots, prefills all but the last
 * prompt token into the target and the drafter. Errors: SPECD_INVAL (an empty prompt, a
 * prompt longer than the slot, an id outside the vocabulary, bad sampling parameters),
 * and the forward's errors; the job is then stopped. */
enum specd_status draft_job_start(struct draft_job *j, const int32_t *prompt, uint32_t n_prompt,
				  const struct draft_job_params *p, struct specd_error *err);

/* One step for each job not yet stopped (at most one job per slot): every job past its
 * prompt emits at least one token; a job still prefilling (defer_prefill) advances its
 * prompt by as many tokens as the batch has room for after the verify rows. The batch
 * (model_max_batch rows) is shared evenly: a job drafts at most share - 1 tokens,
 * share = max(1, rows / running jobs, prefilling ones included), so under load every
 * job drafts less instead of some waiting, and a prompt gets room to advance; only
 * when there are more running jobs than rows do the last wait for the next step.
 * Errors: SPECD_INVAL (two jobs on one slot, a job not started), the forward's,
 * drafter's and verifier's errors; the jobs' state is then undefined: restart them. */
enum specd_status draft_engine_step(struct draft_engine *e, struct draft_job *const *jobs,
				    uint32_t n_jobs, struct specd_error *err);
/* A per-step policy for each job's K (the daemon's online selector, selector/online.h):
 * called once in every step that verifies, with the slots of the jobs verifying; k[i]
 * holds the most job i may draft (its own K, its share of the batch, its slot's and its
 * output's room; 0 for a plain job) and the planner may lower it (a higher value is
 * ignored). Output does not depend on it: any K verifies exactly. */
typedef void draft_plan_fn(void *user, const uint32_t *slots, uint32_t *k, uint32_t n);
/* fn NULL: no planner. Between steps only. */
void draft_engine_set_planner(struct draft_engine *e, draft_plan_fn *fn, void *user);

/* draft_engine_step on this job alone. */
enum specd_status draft_job_step(struct draft_job *j, struct specd_error *err);

enum draft_stop draft_job_stop(const struct draft_job *j);
/* The tokens generated so far (without the end-of-sequence token), owned by the job
 * and valid until its next step or start. */
const int32_t *draft_job_output(const struct draft_job *j, uint32_t *n);
const struct draft_metrics *draft_job_metrics(const struct draft_job *j);
/* With params.logprobs: 1 + top_logprobs entries per output token (as draft_job_output
 * counts them), in *stride; NULL without. Owned by the job, valid as the output is. */
const struct sampler_logprob *draft_job_logprobs(const struct draft_job *j, uint32_t *stride);
/* Whether the job verified in the last step; then what it drafted (for a tree: its
 * depth) and how many of those were kept, as the online selector observes them. */
bool draft_job_last_step(const struct draft_job *j, uint32_t *drafted, uint32_t *accepted);
/* The tokens this job drafts per step (0 for plain decoding). */
uint32_t draft_job_spec_tokens(const struct draft_job *j);

#endif
