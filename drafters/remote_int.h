/* drafters/ private: the messages between the leader's remote drafter (remote.c) and
 * the draft rank's server (remote_server.c), and the link both sides hold. Requests
 * travel leader -> draft rank as broadcasts over the pair (the draft rank waits for the
 * next one idle: no deadline, no spinning); replies travel back point to point, under
 * the leader's deadline. Fixed-size structs, sent as bytes between ranks of one build:
 * the hello checks that they are (RD_VERSION). */
#ifndef SPECD_DRAFTERS_REMOTE_INT_H
#define SPECD_DRAFTERS_REMOTE_INT_H

#include <stdint.h>

#include "drafter.h"
#include "parallel/comm.h"
#include "remote.h"

/* The draft protocol's version: bumped whenever a message's layout or meaning changes.
 * The hello carries it with the leader's sizeof(struct rd_req) and sizeof(struct
 * rd_rep), its answer the draft rank's, so ranks of different builds refuse each other
 * with a message saying so instead of misreading each other's bytes. */
#define RD_VERSION 2

#define RD_INLINE 72      /* new tokens carried in the request itself; more follow it */
#define RD_MSG_BYTES SPECD_ERROR_MSG_MAX /* an error message in a reply */

enum rd_op {
	RD_HELLO = 1, /* create the drafter: method, K, slots, context; replied */
	RD_RESET,     /* a new sequence in a slot: prompt and draft sampling; one-way */
	RD_PROPOSE,   /* up to k tokens; replied (tokens, then q rows when sampling) */
	RD_COMMIT,    /* the verifier's verdict and the tokens the slot gained; one-way */
	RD_STOP,      /* stop serving */
	/* Several sequences at once (struct rd_batch_seq, then their new tokens); replied
	 * (struct rd_rep, struct rd_batch_prop each, their tokens; then q rows). */
	RD_PROPOSE_BATCH,
};

enum {                                   /* rd_req.flags of a hello */
	RD_HELLO_PIPELINE = 1u << 0,
	RD_HELLO_WARM = 1u << 1,             /* draft_remote_config.warm */
};
enum {
	RD_REP_PIPELINED = 1u << 0,           /* rd_rep.flags: drafted ahead */
	RD_REP_TREE = 1u << 1,                /* a token tree: the parents came along */
};

enum { RD_TAG_REPLY = 11, RD_TAG_Q = 12 }; /* point-to-point tags of replies */

struct rd_req {
	int32_t op;          /* enum rd_op */
	/* hello: RD_VERSION and the leader's struct sizes; first, so that a rank of another
	 * layout still finds them */
	uint32_t version;
	uint32_t req_bytes, rep_bytes;
	uint32_t slot;
	uint32_t n_total;    /* the slot's sequence length once the new tokens are in */
	uint32_t n_new;      /* new tokens: in tokens[] up to RD_INLINE, else a second message;
			      * propose batch: the body's words, carried the same way */
	uint32_t k;          /* propose; propose batch: the sum of the k (the reply's room) */
	uint32_t n_accepted; /* commit */
	int32_t next;        /* commit */
	uint32_t flags;
	/* hello: the method first proposing; propose, propose batch: the one to propose
	 * with (one of those the hello held) */
	int32_t method;      /* enum draft_method */
	uint32_t also;       /* hello: more methods to hold (draft_config.also) */
	uint32_t k_max, n_slots, n_ctx, n_vocab, lookup_min, lookup_max;
	int32_t transport;   /* enum draft_q_transport */
	/* reset: the draft sampler (the engine's draft stream, seed included) */
	float temperature;
	int32_t top_k;
	float top_p;
	float min_p;
	uint32_t n_seqs;     /* propose batch: sequences, on distinct slots */
	/* hello: the hidden size the leader ships with proposes (a drafter on the target's
	 * hidden states: Medusa, EAGLE), 0 for none. Propose, propose batch: n_hidden rows
	 * of dim floats in one message right after this request, before its tokens (per
	 * sequence at most 1 for Medusa, DRAFT_HIDDEN_ROWS for EAGLE, oldest first). */
	uint32_t dim;
	uint32_t n_hidden;
	uint64_t seed;
	int32_t tokens[RD_INLINE];
};

struct rd_rep {
	int32_t status;      /* enum specd_status of the request on the draft rank */
	/* hello: the draft rank's RD_VERSION and struct sizes, as rd_req's; they and the
	 * message come first, so that a refusal reaches a leader of another layout */
	uint32_t version;
	uint32_t req_bytes, rep_bytes;
	char msg[RD_MSG_BYTES];
	uint32_t n;          /* proposed tokens; propose batch: sequences that follow */
	uint32_t q_rows;     /* q rows that follow (RD_TAG_Q); 0: one-hot */
	uint32_t flags;
	uint64_t memory_bytes; /* hello: the drafter's */
	int32_t tokens[DRAFT_MAX_TOKENS];
	int32_t parent[DRAFT_MAX_TOKENS]; /* with RD_REP_TREE (draft_proposal.parent) */
};

/* A batched propose's body, as 32-bit words: n_seqs of these, then each sequence's
 * n_new tokens in the same order. */
struct rd_batch_seq {
	uint32_t slot;
	uint32_t n_total;    /* as rd_req's, per sequence */
	uint32_t n_new;
	uint32_t k;          /* 0 .. k_max */
	uint32_t hidden;     /* its hidden rows: the next this many of the request's */
};

/* A batched propose's reply, one message: struct rd_rep (status and message; on error
 * it is all that comes), then n_seqs of these, then the tokens, sequence i's at the sum
 * of the k before it (room for k each), then the parents of tree proposals in the same
 * places (room for k each again). Then, for each sequence with q rows, in order, one
 * RD_TAG_Q message of them, straight into that proposal's own q buffer. */
struct rd_batch_prop {
	uint32_t n;          /* proposed tokens, <= the sequence's k */
	uint32_t q_rows;     /* 0: one-hot; else n */
	uint32_t flags;      /* RD_REP_PIPELINED, RD_REP_TREE */
	uint32_t pad;
};

/* Words of a batch body before the tokens. */
#define RD_BATCH_SEQ_WORDS (sizeof(struct rd_batch_seq) / sizeof(int32_t))

/* A hello's (or its answer's) version and struct sizes against this build's: SPECD_OK,
 * or SPECD_PROTO with err naming both sides (`peer` and `self`: "the leader", "this
 * rank", ...). Both sides, remote.c. */
enum specd_status rd_check_build(uint32_t version, uint32_t req_bytes, uint32_t rep_bytes,
				 const char *peer, const char *self, struct specd_error *err);

/* The pair's ranks: the leader is 0, the draft rank 1. */
enum { RD_LEADER = 0, RD_DRAFT = 1 };

struct draft_link {
	MPI_Comm pair;          /* {leader, draft rank}, ours */
	struct par_comm *comm;  /* over pair, with the deadline */
	bool leader;            /* this side */
	int draft_world;        /* for messages */
	double hello_deadline_s; /* the hello's answer: the draft rank loads its drafter */
	struct draft_link_stats stats;
};

#endif
