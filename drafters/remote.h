/* The dedicated draft rank (DESIGN.md §3): the leader's engine drives a drafter whose
 * work runs on another rank. Three pieces:
 *   - struct draft_link: the leader <-> draft rank channel (a parallel/comm.h
 *     communicator over the pair, every call with a deadline);
 *   - the remote drafter (leader): a struct draft_ops whose reset/propose/commit (and
 *     propose_batch) are messages, so drafters/engine.c runs unchanged on top of it;
 *   - draft_serve (draft rank): runs the real drafter (ngram, draft_model, medusa) and
 *     answers.
 *
 * Messages (remote_int.h): reset carries the prompt and the draft sampler's parameters
 * and seed (the draft rank owns the draft sampler, so q and the tokens drawn from it
 * come from one distribution); propose carries K and gets back the tokens and, when
 * sampling with a draft model, q; propose batch (the engine's draft_propose_batch over
 * several jobs) carries every sequence's slot, K and new tokens in one request and gets
 * every proposal back in one reply, followed by the q rows of those that sample: the
 * draft rank answers it with one draft_propose_batch, so a draft model runs one forward
 * per drafted position for all of them; commit carries (n_accepted, next) and the
 * tokens the sequence gained. Each message carries only the tokens the draft rank has
 * not seen; it keeps every slot's history itself. Requests are handled in the order
 * sent, so a slot's commits are in before the propose that follows them. A drafter on
 * the target's hidden state (Medusa: wants_hidden) gets, with each propose, the
 * hidden row of every sequence that has one (model dim floats, in one message right
 * after the request); its token trees come back with their parents.
 *
 * Pipelining (greedy only): after answering propose(K), or a batch for each greedy
 * sequence in it, the draft rank drafts the next step at once, assuming all K are
 * accepted and the bonus is its own (K+1)-th token; a commit that matches makes the
 * next proposal ready before it is asked for, any other commit rolls that work back.
 * Output never depends on it: only speed does. Not for drafters on the hidden state,
 * whose next input exists only once the leader has verified.
 *
 * Failure: a draft rank that misses a deadline is taken for stalled. The remote
 * drafter logs "draft rank N stalled: falling back to plain decoding" once, proposes
 * nothing from then on (for no job of a batch either) and ignores commits, so every
 * job continues, exactly, as plain decoding. Any other failure of a message on the
 * link (an MPI error) and any reply the leader refuses (a token out of the vocabulary,
 * more tokens or q rows than asked for, a batch answer for other sequences) loses the
 * link the same way, logged as an error: what the draft rank sent after it (q rows)
 * may still be queued, and the leader never receives on the link again, so no later
 * proposal can take stale rows for its own. An error the draft rank answers itself
 * keeps the link: a malformed request (a count, slot or K out of range) is answered
 * with SPECD_PROTO or SPECD_INVAL and its message, which the propose returns; the draft
 * rank serves on.
 *
 * Versions: the hello carries the protocol's version and the leader's message sizes,
 * and its answer the draft rank's; a draft rank of another build is refused at start-up
 * with both versions named.
 *
 * Threads: the thread that owns MPI, on the leader and on the draft rank. */
#ifndef SPECD_DRAFTERS_REMOTE_H
#define SPECD_DRAFTERS_REMOTE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "drafters/drafter.h"

struct kern_ctx;
struct model;

/* What of q crosses the link when a drafter samples (greedy and prompt lookup ship
 * tokens only, whatever this says). */
enum draft_q_transport {
	DRAFT_Q_FULL = 0, /* whole rows: K x vocab floats (implemented) */
	DRAFT_Q_TOPK,     /* the top-k of each row, renormalised (not yet: refused) */
	DRAFT_Q_COUNT
};

/* "full", "topk"; "?" outside the enum. */
const char *draft_q_transport_name(enum draft_q_transport t);

/* Bytes one step sends on the link before any q rows: a propose request and a commit
 * (each a request) and the reply (for the selector's cost model). Any thread. */
size_t draft_link_step_bytes(void);

/* How long the leader waits for the hello's answer by default: the draft rank creates
 * its drafter first, which loads a draft model or EAGLE checkpoint (perhaps from a slow
 * disk) and copies it to a GPU. */
#define DRAFT_HELLO_DEADLINE_S 600.0

struct draft_link_config {
	int leader;        /* world rank of the leader (0) */
	int draft;         /* world rank of the draft rank (T) */
	double deadline_s; /* per message on the leader; 0: PAR_COMM_DEFAULT_DEADLINE_S */
	/* the hello (draft_remote_create); 0: DRAFT_HELLO_DEADLINE_S; never shorter than
	 * deadline_s */
	double hello_deadline_s;
};

/* What the leader has seen of the draft rank, for reports and tests. */
struct draft_link_stats {
	uint64_t proposals;     /* proposals received, one per sequence */
	uint64_t pipelined;     /* of them, drafted ahead by pipelining */
	uint64_t requests;      /* propose requests sent: one per propose or per batch */
	uint64_t batches;       /* of them, batches (several sequences in one request) */
	double t_wait;          /* seconds the leader waited for proposals */
	bool dead;              /* the draft rank stalled: plain decoding since */
};

struct draft_link;

/* Collective over the leader and the draft rank only (the other ranks of world do not
 * call it). Errors: SPECD_INVAL (equal or negative ranks, this rank is neither),
 * SPECD_MPI, SPECD_NOMEM. *out only on success. */
enum specd_status draft_link_create(MPI_Comm world, const struct draft_link_config *cfg,
				    struct draft_link **out, struct specd_error *err);

/* On the leader: tells the draft rank to stop serving (also when it never got a
 * drafter, or after it stalled: a stopped rank that is continued later finds the word
 * and exits), then frees. On the draft rank: frees. NULL is a no-op. Not collective. */
void draft_link_destroy(struct draft_link *l);

void draft_link_get_stats(const struct draft_link *l, struct draft_link_stats *out);

struct draft_remote_config {
	struct draft_link *link;  /* borrowed, the leader's side; outlives the drafter */
	bool pipeline;            /* draft ahead on the draft rank (greedy jobs only) */
	/* After each answer the draft rank brings the held methods that are not proposing
	 * up to date (draft_warm), so a switch or probe costs no catch-up. Meant for a
	 * draft rank with a machine of its own: on a shared one its memory traffic competes
	 * with the target's. */
	bool warm;
	enum draft_q_transport transport;
	/* Prompt lookup proposes in the leader, not on the draft rank: it needs no weights,
	 * so asking the draft rank would only add a round trip a step. The draft rank still
	 * hears every commit (its other methods keep up). */
	bool local_ngram;
};

/* Leader only: a drafter of cfg->method running on the draft rank, with cfg's K,
 * slots and context. The draft rank creates the real drafter and checks it against
 * its own view of the target; its answer is this call's. Errors: SPECD_UNSUPPORTED (a
 * transport other than full), the draft rank's (SPECD_INVAL for a draft model that
 * does not fit the target, ..., with its message), SPECD_PROTO (a draft rank of another
 * protocol version or build), SPECD_TIMEOUT / SPECD_MPI (the link; the answer may take
 * the link's hello_deadline_s). *out only on success; destroy it with draft_destroy. */
enum specd_status draft_remote_create(const struct draft_remote_config *rc,
				      const struct draft_config *cfg, struct drafter **out,
				      struct specd_error *err);

struct draft_server_config {
	/* The target, borrowed: what supports() checks against (a draft model's
	 * vocabulary). It needs no KV rows: a model loaded with one slot of one row. */
	const struct model *target;
	const char *draft_path;  /* draft_model: the file, as this rank sees it */
	const char *heads_path;  /* medusa: the heads' safetensors file, as this rank sees it;
				  * a shared LM head is read from target */
	struct draft_eagle_config eagle; /* eagle: the checkpoint folder as this rank sees
					  * it, and the tree (the cluster file's) */
	struct kern_ctx *kern;   /* the draft model's backend, borrowed; NULL: its own */
	size_t huge_pages_max;   /* the draft model's, as draft_config's */
	/* Not SPECD_OK: this rank could not get ready (its target file is missing, ...);
	 * every hello is refused with this status and `broken_msg`, so the leader fails
	 * with the reason instead of waiting. target may then be NULL. */
	enum specd_status broken;
	const char *broken_msg;
};

/* Draft rank only: answers the leader until it destroys its link. Errors: `broken`,
 * the first failure to create the drafter the leader asked for (the leader fails with the same
 * message, so both ranks exit non-zero), SPECD_MPI, SPECD_NOMEM. A leader that stops
 * answering never makes this return: it ends the job or continues it. */
enum specd_status draft_serve(struct draft_link *link, const struct draft_server_config *sc,
			      struct specd_error *err);

#endif
