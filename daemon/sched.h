/* The leader's scheduler: the compute thread's loop. It takes the server's commands
 * (Generate, Cancel, a client gone, Shutdown), keeps one job per KV slot and queues the
 * rest, advances every running job by one engine step at a time (their verify tokens
 * in one target forward: drafters/engine.h), turns tokens into streamed text
 * (textstream.h: UTF-8 boundaries, stop strings) and posts the replies.
 *
 * A job's life: queued -> started (prompt tokenized and checked against the context,
 * prefilled) -> steps, each posting a GenerateResponse -> a last response with the
 * finish reason and Stats, `end` set. Every Generate call gets exactly one last reply,
 * whatever happens (cancel, error, a client gone), so the server's job count is exact.
 *
 * Threads: sched_run on the compute thread (the one that owns the model and MPI);
 * sched_status on the loop thread (it takes the scheduler's lock). */
#ifndef SPECD_DAEMON_SCHED_H
#define SPECD_DAEMON_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "adapt.h"
#include "config.h"

struct srv;
struct tok;
struct gguf_file;
struct model;
struct draft_engine;
struct cluster;

struct sched_config {
	struct srv *srv;              /* commands in, replies out */
	struct model *target;         /* borrowed: the model the engine runs */
	const struct tok *tok;        /* borrowed */
	const struct gguf_file *file; /* borrowed: the target's file (its chat template) */
	struct draft_engine *engine;  /* borrowed */
	uint32_t n_slots;             /* jobs running at once (the target's KV slots) */
	struct cfg_limits limits;
	const char *method;           /* the method the engine runs, for stats and status */
	uint32_t spec_tokens;         /* its K (0 for none) */
	const struct cluster *cluster; /* borrowed, for Status: census and configuration */
	struct adapt_config adapt;    /* online adaptation; its n_slots is set from n_slots */
};

struct sched;

/* Errors: SPECD_NOMEM, the engine's job creation errors. */
enum specd_status sched_create(const struct sched_config *cfg, struct sched **out,
			       struct specd_error *err);
void sched_destroy(struct sched *s);

/* Callback polled between steps: true when the process was asked to stop (a signal). */
typedef bool sched_stop_fn(void *user);

/* Runs until a drain has finished: a Shutdown call, or `stop` returning true (which
 * asks the server for the same drain: srv_begin_drain), makes the server refuse new
 * jobs and post SRV_CMD_DRAIN behind every call it passed on; every job taken before
 * that command finishes; then it returns SPECD_OK. Compute thread only. */
enum specd_status sched_run(struct sched *s, sched_stop_fn *stop, void *user);

/* srv_status_fn: packs the StatusResponse (cluster, ranks, the decision and its
 * reasons, live counters). Loop thread. */
enum specd_status sched_status(void *self, struct specd_buf *out);

#endif
