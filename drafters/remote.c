/* The leader's side of the dedicated draft rank (remote.h): the link over the
 * {leader, draft rank} pair, and a struct draft_ops whose calls are messages to the
 * draft rank's server (remote_server.c). The engine drives it like any drafter. */
#include "remote.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "parallel/mpi_check.h"
#include "remote_int.h"

#define RD_GROUP_TAG 0x5d1

const char *draft_q_transport_name(enum draft_q_transport t)
{
	switch (t) {
	case DRAFT_Q_FULL: return "full";
	case DRAFT_Q_TOPK: return "topk";
	case DRAFT_Q_COUNT: break;
	}
	return "?";
}

size_t draft_link_step_bytes(void)
{
	return 2 * sizeof(struct rd_req) + sizeof(struct rd_rep);
}

/* ---- the link ---- */

enum specd_status rd_check_build(uint32_t version, uint32_t req_bytes, uint32_t rep_bytes,
				 const char *peer, const char *self, struct specd_error *err)
{
	if (version == RD_VERSION && req_bytes == sizeof(struct rd_req) &&
	    rep_bytes == sizeof(struct rd_rep))
		return SPECD_OK;
	return specd_errorf(err, SPECD_PROTO, "%s speaks draft protocol %u (requests of %u "
			    "bytes, answers of %u), %s %u (%zu, %zu): run the same specd build "
			    "on every rank", peer, version, req_bytes, rep_bytes, self, RD_VERSION,
			    sizeof(struct rd_req), sizeof(struct rd_rep));
}

enum specd_status draft_link_create(MPI_Comm world, const struct draft_link_config *cfg,
				    struct draft_link **out, struct specd_error *err)
{
	struct draft_link *l = NULL;
	MPI_Group all = MPI_GROUP_NULL, two = MPI_GROUP_NULL;
	enum specd_status st;
	int me = -1;

	if (!cfg || cfg->leader < 0 || cfg->draft < 0 || cfg->leader == cfg->draft)
		return specd_errorf(err, SPECD_INVAL, "draft link: leader rank %d, draft rank %d",
				    cfg ? cfg->leader : -1, cfg ? cfg->draft : -1);
	if (cfg->hello_deadline_s < 0)
		return specd_errorf(err, SPECD_INVAL, "draft link: hello deadline %g s",
				    cfg->hello_deadline_s);
	MPI_Comm_rank(world, &me);
	if (me != cfg->leader && me != cfg->draft)
		return specd_errorf(err, SPECD_INVAL, "draft link: rank %d is neither the leader "
				    "(%d) nor the draft rank (%d)", me, cfg->leader, cfg->draft);
	if (!(l = specd_calloc(1, sizeof(*l))))
		return specd_errorf(err, SPECD_NOMEM, "draft link: out of memory");
	l->pair = MPI_COMM_NULL;
	l->leader = me == cfg->leader;
	l->draft_world = cfg->draft;
	int ranks[2] = {cfg->leader, cfg->draft}; /* the pair's order: RD_LEADER, RD_DRAFT */
	if (PAR_MPI(MPI_Comm_group(world, &all)) != SPECD_OK ||
	    PAR_MPI(MPI_Group_incl(all, 2, ranks, &two)) != SPECD_OK ||
	    PAR_MPI(MPI_Comm_create_group(world, two, RD_GROUP_TAG, &l->pair)) != SPECD_OK) {
		st = specd_errorf(err, SPECD_MPI, "draft link: cannot make the {%d, %d} "
				  "communicator", cfg->leader, cfg->draft);
		goto fail;
	}
	MPI_Comm_set_errhandler(l->pair, MPI_ERRORS_RETURN);
	struct par_comm_config pc = {.deadline_s = cfg->deadline_s};
	if ((st = par_comm_mpi_create(l->pair, &pc, &l->comm, err)) != SPECD_OK)
		goto fail;
	l->hello_deadline_s = cfg->hello_deadline_s > 0 ? cfg->hello_deadline_s
							: DRAFT_HELLO_DEADLINE_S;
	if (l->hello_deadline_s < l->comm->deadline_s)
		l->hello_deadline_s = l->comm->deadline_s;
	MPI_Group_free(&two);
	MPI_Group_free(&all);
	*out = l;
	return SPECD_OK;
fail:
	if (two != MPI_GROUP_NULL)
		MPI_Group_free(&two);
	if (all != MPI_GROUP_NULL)
		MPI_Group_free(&all);
	if (l->pair != MPI_COMM_NULL)
		MPI_Comm_free(&l->pair);
	specd_free(l);
	return st;
}

/* Leader: one request; its hidden rows (hidden_bytes, when req->n_hidden) in a second
 * message, its tokens past RD_INLINE in the next. */
static enum specd_status link_send(struct draft_link *l, struct rd_req *req,
				   const float *hidden, size_t hidden_bytes,
				   const int32_t *tokens, struct specd_error *err)
{
	bool inl = req->n_new <= RD_INLINE;
	if (inl && req->n_new)
		memcpy(req->tokens, tokens, req->n_new * sizeof(*tokens));
	enum specd_status st = par_comm_bcast(l->comm, req, sizeof(*req), RD_LEADER, err);
	if (st == SPECD_OK && req->n_hidden && req->dim)
		st = par_comm_bcast(l->comm, (void *)(uintptr_t)hidden, hidden_bytes, RD_LEADER,
				    err);
	if (st == SPECD_OK && !inl)
		st = par_comm_bcast(l->comm, (void *)(uintptr_t)tokens,
				    (size_t)req->n_new * sizeof(*tokens), RD_LEADER, err);
	return st;
}

void draft_link_destroy(struct draft_link *l)
{
	if (!l)
		return;
	if (l->leader) {
		/* Also to a stalled draft rank: continued later, it finds the word and exits
		 * instead of waiting for ever. */
		struct rd_req req = {.op = RD_STOP};
		struct specd_error err;
		if (link_send(l, &req, NULL, 0, NULL, &err) != SPECD_OK)
			LOG_WARN("draft rank %d: cannot tell it to stop: %s", l->draft_world, err.msg);
	}
	par_comm_destroy(l->comm);
	if (l->pair != MPI_COMM_NULL)
		MPI_Comm_free(&l->pair);
	specd_free(l);
}

void draft_link_get_stats(const struct draft_link *l, struct draft_link_stats *out)
{
	*out = l->stats;
}

/* ---- the remote drafter ---- */

struct remote {
	struct draft_link *link;
	uint32_t n_slots, n_vocab, k_max;
	uint32_t mask;          /* the methods the draft rank holds */
	enum draft_method active; /* the one its proposals come from */
	uint32_t dim;           /* hidden size shipped with proposes (Medusa); 0: none */
	uint32_t hid_rows;      /* rows per sequence at most (draft_ops_hidden_rows) */
	float *hid;             /* (n_slots, hid_rows, dim) host: a batch's hidden rows */
	uint64_t memory_bytes;  /* the draft rank's drafter */
	struct drafter *local;  /* prompt lookup in the leader (local_ngram), or NULL */
	uint32_t *told;         /* (n_slots) tokens of each slot the draft rank holds */
	/* A batched propose's body, (body_cap) words host: n_slots struct rd_batch_seq and
	 * the new tokens of sequences as long as the draft rank can hold; and its reply,
	 * (rbuf_bytes) host: struct rd_rep and room for n_slots proposals of k_max. */
	int32_t *body;
	uint32_t body_cap;
	unsigned char *rbuf;
	size_t rbuf_bytes;
	struct rd_req req;
	struct rd_rep rep;
};

/* The rows of seq to ship with a propose: the last of them, as many as the held
 * method that wants most takes (EAGLE takes them in while another method proposes). */
static uint32_t rows_to_ship(const struct remote *r, const struct draft_seq *seq,
			     const float **first)
{
	uint32_t want = r->dim && seq->hidden ? r->hid_rows : 0;
	uint32_t n = seq->n_hidden < want ? seq->n_hidden : want;

	*first = n ? seq->hidden + (size_t)(seq->n_hidden - n) * r->dim : NULL;
	return n;
}

/* draft_create_ops hands ops->create only the struct draft_config; the remote part
 * waits here for the one create in progress (creation runs on the MPI thread). */
static _Thread_local const struct draft_remote_config *pending;

/* The link is lost: a message on it missed its deadline (the draft rank is stalled or
 * gone), failed in MPI, or came back in a shape the leader refuses. Either way the
 * leader no longer knows which of the draft rank's messages are still on their way (q
 * rows after a refused reply, the rest of a batch's after a failed one), and a later
 * receive could take them for its own: a sampled step would then test p/q against
 * another step's q. So the leader never receives on the link again, rather than guess
 * what to drain: from here on every proposal is empty and every commit ignored, so
 * the engine decodes plainly, which is exact whatever the drafter did before. The
 * draft rank's unanswered sends end at its own deadline; draft_link_destroy's stop
 * still reaches it. Returns SPECD_OK: the step goes on without the drafter. */
static enum specd_status link_lost(struct remote *r, enum specd_status st,
				   const struct specd_error *why, struct specd_error *err)
{
	if (!r->link->stats.dead && st == SPECD_TIMEOUT)
		LOG_WARN("draft rank %d stalled: falling back to plain decoding (%s)",
			 r->link->draft_world, why->msg);
	else if (!r->link->stats.dead)
		LOG_ERROR("draft rank %d: %s (%s): the link is out of step: falling back to "
			  "plain decoding", r->link->draft_world, why->msg, specd_status_str(st));
	r->link->stats.dead = true;
	specd_error_clear(err);
	return SPECD_OK;
}

static enum specd_status rd_reply(struct remote *r, struct specd_error *err)
{
	enum specd_status st = par_comm_recv(r->link->comm, &r->rep, sizeof(r->rep), RD_DRAFT,
					     RD_TAG_REPLY, err);
	if (st != SPECD_OK)
		return st;
	r->rep.msg[RD_MSG_BYTES - 1] = '\0';
	return SPECD_OK;
}

/* The hello's answer: a draft rank of this protocol and build (checked first: another
 * build's status and message may not be where this one looks), and its drafter made. */
static enum specd_status hello_check(const struct remote *r, struct specd_error *err)
{
	const struct rd_rep *rep = &r->rep;
	char peer[32];

	snprintf(peer, sizeof(peer), "draft rank %d", r->link->draft_world);
	if (rd_check_build(rep->version, rep->req_bytes, rep->rep_bytes, peer, "this leader",
			   err) != SPECD_OK)
		return SPECD_PROTO;
	if (rep->status != SPECD_OK)
		return specd_errorf(err, (enum specd_status)rep->status, "draft rank %d: %s",
				    r->link->draft_world, rep->msg);
	return SPECD_OK;
}

static void rd_destroy(void *state)
{
	struct remote *r = state;
	if (!r)
		return;
	specd_free(r->told);
	specd_free(r->body);
	specd_free(r->rbuf);
	specd_free(r->hid);
	draft_destroy(r->local);
	specd_free(r);
}

static enum specd_status rd_create(const struct draft_config *cfg, void **state,
				   struct specd_error *err)
{
	const struct draft_remote_config *rc = pending;
	struct remote *r = NULL;
	struct specd_error e;
	enum specd_status st;

	if (!rc || !rc->link || !rc->link->leader)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: no link to a draft rank "
				    "from the leader");
	if (rc->transport != DRAFT_Q_FULL)
		return specd_errorf(err, SPECD_UNSUPPORTED, "remote drafter: q transport '%s' is "
				    "not implemented yet (only 'full')",
				    draft_q_transport_name(rc->transport));
	if (!cfg->n_ctx)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: the context length is "
				    "needed to size the draft rank's histories");
	if (rc->link->stats.dead)
		return specd_errorf(err, SPECD_TIMEOUT, "remote drafter: the link to draft rank "
				    "%d was lost earlier", rc->link->draft_world);
	/* A sequence the draft rank can hold has at most n_ctx + k_max + 2 tokens (its
	 * room, remote_server.c); every one of a batch may be new. */
	uint64_t words = (uint64_t)cfg->n_slots *
			 (RD_BATCH_SEQ_WORDS + cfg->n_ctx + cfg->k_max + 2);
	if (words > UINT32_MAX / 2)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: %u slots of %u tokens "
				    "are too many for one batch", cfg->n_slots, cfg->n_ctx);
	/* Per sequence: its proposal's counts, tokens and parents. */
	size_t rbytes = sizeof(struct rd_rep) + cfg->n_slots * (sizeof(struct rd_batch_prop) +
							       2 * cfg->k_max * sizeof(int32_t));
	uint32_t mask = cfg->also | 1u << cfg->method;
	if (mask >> DRAFT_METHOD_COUNT || mask & 1u << DRAFT_METHOD_NONE)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: methods 0x%x to hold beside "
				    "%s", cfg->also, draft_method_name(cfg->method));
	uint32_t hid_rows = 0;
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		uint32_t rows = mask & 1u << m ? draft_ops_hidden_rows(draft_ops_for((enum draft_method)m))
						: 0;
		hid_rows = rows > hid_rows ? rows : hid_rows;
	}
	uint32_t dim = hid_rows ? model_hparams(cfg->target)->dim : 0;
	if (!(r = specd_calloc(1, sizeof(*r))) ||
	    (dim && !(r->hid = specd_malloc_array((size_t)cfg->n_slots * hid_rows * dim,
						  sizeof(float)))) ||
	    !(r->told = specd_calloc(cfg->n_slots, sizeof(uint32_t))) ||
	    !(r->body = specd_malloc_array(words, sizeof(int32_t))) ||
	    !(r->rbuf = specd_malloc_array(rbytes, 1))) {
		rd_destroy(r);
		return specd_errorf(err, SPECD_NOMEM, "remote drafter: out of memory");
	}
	r->body_cap = (uint32_t)words;
	r->rbuf_bytes = rbytes;
	r->link = rc->link;
	r->n_slots = cfg->n_slots;
	r->n_vocab = model_hparams(cfg->target)->n_vocab;
	r->k_max = cfg->k_max;
	r->mask = mask;
	r->active = cfg->method;
	r->dim = dim;
	r->hid_rows = hid_rows;
	r->req = (struct rd_req){
		.op = RD_HELLO,
		.version = RD_VERSION,
		.req_bytes = sizeof(struct rd_req),
		.rep_bytes = sizeof(struct rd_rep),
		.flags = (rc->pipeline ? RD_HELLO_PIPELINE : 0) | (rc->warm ? RD_HELLO_WARM : 0),
		.method = (int32_t)cfg->method,
		.also = cfg->also,
		.k_max = cfg->k_max,
		.n_slots = cfg->n_slots,
		.n_ctx = cfg->n_ctx,
		.n_vocab = r->n_vocab,
		.lookup_min = cfg->prompt_lookup_min,
		.lookup_max = cfg->prompt_lookup_max,
		.transport = (int32_t)rc->transport,
		.dim = dim,
	};
	specd_error_clear(&e);
	/* The answer comes once the draft rank has made its drafter: a draft model or an
	 * EAGLE checkpoint read from disk and copied to its device takes longer than any
	 * message. */
	double per_message = r->link->comm->deadline_s;
	par_comm_set_deadline(r->link->comm, r->link->hello_deadline_s);
	st = link_send(r->link, &r->req, NULL, 0, NULL, &e);
	if (st == SPECD_OK)
		st = rd_reply(r, &e);
	par_comm_set_deadline(r->link->comm, per_message);
	if (st != SPECD_OK) {
		/* MPI refuses an answer longer than ours: another build's, most likely. */
		specd_errorf(err, st, "draft rank %d: %s%s", r->link->draft_world, e.msg,
			     st == SPECD_MPI ? " (a draft rank of another specd build?)" : "");
		goto fail;
	}
	if ((st = hello_check(r, err)) != SPECD_OK)
		goto fail;
	r->memory_bytes = r->rep.memory_bytes;
	if (rc->local_ngram && mask & 1u << DRAFT_METHOD_NGRAM) {
		struct draft_config one = *cfg;
		one.method = DRAFT_METHOD_NGRAM;
		one.also = 0;
		if ((st = draft_create(&one, &r->local, err)) != SPECD_OK)
			goto fail;
	}
	*state = r;
	return SPECD_OK;
fail:
	rd_destroy(r);
	return st;
}

static enum specd_status rd_supports(const void *state, const struct model *target,
				     struct specd_error *err)
{
	(void)state;
	(void)target;
	(void)err;
	return SPECD_OK; /* the draft rank checked its drafter against the target at hello */
}

static size_t rd_memory_bytes(const void *state)
{
	const struct remote *r = state;
	return (size_t)r->memory_bytes;
}

/* A request for seq's slot with the tokens the draft rank has not seen yet (and
 * r->req.n_hidden hidden rows from `hidden`). A failed send loses the link: SPECD_OK
 * then, with the link dead (callers check). */
static enum specd_status rd_send(struct remote *r, enum rd_op op, const struct draft_seq *seq,
				 const float *hidden, struct specd_error *err)
{
	struct specd_error e;
	uint32_t from = r->told[seq->slot];
	if (from > seq->n_tokens)
		return specd_errorf(err, SPECD_INTERNAL, "remote drafter: slot %u shrank from %u "
				    "to %u tokens without a reset", seq->slot, from, seq->n_tokens);
	r->req.op = op;
	r->req.slot = seq->slot;
	r->req.n_total = seq->n_tokens;
	r->req.n_new = seq->n_tokens - from;
	specd_error_clear(&e);
	enum specd_status st = link_send(r->link, &r->req, hidden,
					 (size_t)r->req.n_hidden * r->dim * sizeof(float),
					 seq->tokens + from, &e);
	if (st != SPECD_OK)
		return link_lost(r, st, &e, err);
	r->told[seq->slot] = seq->n_tokens;
	return SPECD_OK;
}

static enum specd_status rd_reset(void *state, const struct draft_seq *seq,
				  struct specd_error *err)
{
	struct remote *r = state;
	static const struct sampler_params greedy = {.temperature = 0.0f, .top_p = 1.0f};
	const struct sampler_params *sp = seq->sampler ? sampler_get_params(seq->sampler) : &greedy;

	if (r->link->stats.dead)
		return SPECD_OK;
	r->told[seq->slot] = 0;
	memset(&r->req, 0, sizeof(r->req));
	r->req.temperature = sp->temperature;
	r->req.top_k = sp->top_k;
	r->req.top_p = sp->top_p;
	r->req.min_p = sp->min_p;
	r->req.seed = sp->seed;
	return rd_send(r, RD_RESET, seq, NULL, err);
}

/* Checks one answered proposal of at most k tokens (a tree's parents, or NULL for a
 * chain) before it reaches the engine. A refusal loses the link (link_lost, which names
 * the draft rank). */
static enum specd_status prop_check(const struct remote *r, uint32_t n, uint32_t q_rows,
				    uint32_t k, const int32_t *tokens, const int32_t *parent,
				    const struct draft_proposal *out, struct specd_error *err)
{
	if (n > k || (q_rows && q_rows != n))
		return specd_errorf(err, SPECD_PROTO, "%u tokens and %u q rows for a proposal "
				    "of at most %u", n, q_rows, k);
	for (uint32_t i = 0; i < n; i++)
		if (tokens[i] < 0 || (uint32_t)tokens[i] >= r->n_vocab)
			return specd_errorf(err, SPECD_PROTO, "proposed id %d; the vocabulary "
					    "has %u", (int)tokens[i], r->n_vocab);
	if (q_rows && !out->q)
		return specd_errorf(err, SPECD_INVAL, "q rows came for a proposal without a q "
				    "buffer");
	if (parent && !out->parent)
		return specd_errorf(err, SPECD_INVAL, "a token tree came for a proposal without a "
				    "parent buffer");
	for (uint32_t i = 0; parent && i < n; i++)
		if (parent[i] < -1 || parent[i] >= (int32_t)i)
			return specd_errorf(err, SPECD_PROTO, "node %u of a tree has parent %d",
					    i, (int)parent[i]);
	return SPECD_OK;
}

/* A checked proposal into the engine's buffers (q rows, when any, are received
 * straight into out->q). */
static void prop_take(struct draft_proposal *out, uint32_t n, uint32_t q_rows,
		      const int32_t *tokens, const int32_t *parent)
{
	memcpy(out->tokens, tokens, n * sizeof(int32_t));
	out->n = n;
	out->q_onehot = q_rows == 0;
	out->tree = parent != NULL;
	if (parent)
		memcpy(out->parent, parent, n * sizeof(int32_t));
}

static enum specd_status rd_propose(void *state, const struct draft_seq *seq, uint32_t k,
				    struct draft_proposal *out, struct specd_error *err)
{
	struct remote *r = state;
	struct specd_error e;
	enum specd_status st;
	double t0 = specd_now();

	if (r->local && r->active == DRAFT_METHOD_NGRAM)
		return draft_propose(r->local, seq, k, out, err);
	out->n = 0;
	out->q_onehot = true;
	if (r->link->stats.dead)
		return SPECD_OK;
	memset(&r->req, 0, sizeof(r->req));
	r->req.k = k;
	r->req.method = (int32_t)r->active;
	const float *hidden;
	r->req.n_hidden = rows_to_ship(r, seq, &hidden);
	r->req.dim = r->dim;
	if ((st = rd_send(r, RD_PROPOSE, seq, hidden, err)) != SPECD_OK || r->link->stats.dead)
		return st;
	r->link->stats.requests++;
	specd_error_clear(&e);
	if ((st = rd_reply(r, &e)) != SPECD_OK)
		return link_lost(r, st, &e, err);
	const struct rd_rep *rep = &r->rep;
	/* The draft rank's own error comes alone, so the stream stays in step. */
	if (rep->status != SPECD_OK && rep->q_rows == 0)
		return specd_errorf(err, (enum specd_status)rep->status, "draft rank %d: %s",
				    r->link->draft_world, rep->msg);
	const int32_t *parent = rep->flags & RD_REP_TREE ? rep->parent : NULL;
	if (rep->status != SPECD_OK)
		st = specd_errorf(&e, SPECD_PROTO, "an error answer announcing %u q rows",
				  rep->q_rows);
	else
		st = prop_check(r, rep->n, rep->q_rows, k, rep->tokens, parent, out, &e);
	if (st == SPECD_OK && rep->q_rows)
		st = par_comm_recv(r->link->comm, out->q,
				   (size_t)rep->q_rows * r->n_vocab * sizeof(float), RD_DRAFT,
				   RD_TAG_Q, &e);
	if (st != SPECD_OK)
		return link_lost(r, st, &e, err);
	prop_take(out, rep->n, rep->q_rows, rep->tokens, parent);
	r->link->stats.proposals++;
	if (rep->flags & RD_REP_PIPELINED)
		r->link->stats.pipelined++;
	r->link->stats.t_wait += specd_now() - t0;
	return SPECD_OK;
}

/* The batch request's body in r->body: one struct rd_batch_seq per sequence, then the
 * tokens the draft rank has not seen of each; the hidden rows of those that have one
 * in r->hid. *words, *room and *n_hidden: the body's length, the sum of the k and the
 * hidden rows. */
static enum specd_status batch_body(struct remote *r, const struct draft_seq *seqs,
				    const uint32_t *k, uint32_t n, uint32_t *words,
				    uint32_t *room, uint32_t *n_hidden, struct specd_error *err)
{
	struct rd_batch_seq *ent = (struct rd_batch_seq *)(void *)r->body;
	uint32_t w = n * RD_BATCH_SEQ_WORDS, sum_k = 0, n_hid = 0;

	if (n > r->n_slots)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: a batch of %u sequences; "
				    "there are %u slots", n, r->n_slots);
	for (uint32_t i = 0; i < n; i++) {
		const struct draft_seq *sq = &seqs[i];
		uint32_t from = r->told[sq->slot];
		for (uint32_t j = 0; j < i; j++)
			if (seqs[j].slot == sq->slot)
				return specd_errorf(err, SPECD_INVAL, "remote drafter: slot %u twice "
						    "in one batch", sq->slot);
		if (from > sq->n_tokens)
			return specd_errorf(err, SPECD_INTERNAL, "remote drafter: slot %u shrank "
					    "from %u to %u tokens without a reset", sq->slot, from,
					    sq->n_tokens);
		if (k[i] > r->k_max)
			return specd_errorf(err, SPECD_INVAL, "remote drafter: K %u of %u", k[i],
					    r->k_max);
		uint32_t n_new = sq->n_tokens - from;
		if (n_new > r->body_cap - w)
			return specd_errorf(err, SPECD_INVAL, "remote drafter: slot %u has %u "
					    "tokens, more than the draft rank holds", sq->slot,
					    sq->n_tokens);
		const float *hidden;
		uint32_t rows = rows_to_ship(r, sq, &hidden);
		ent[i] = (struct rd_batch_seq){
			.slot = sq->slot, .n_total = sq->n_tokens, .n_new = n_new, .k = k[i],
			.hidden = rows,
		};
		memcpy(r->body + w, sq->tokens + from, n_new * sizeof(int32_t));
		if (rows)
			memcpy(r->hid + (size_t)n_hid * r->dim, hidden,
			       (size_t)rows * r->dim * sizeof(float));
		n_hid += rows;
		w += n_new;
		sum_k += k[i];
	}
	*words = w;
	*room = sum_k;
	*n_hidden = n_hid;
	return SPECD_OK;
}

/* Several sequences in one request and one reply (RD_PROPOSE_BATCH): the draft rank
 * runs one draft_propose_batch for them. One sequence goes as a single propose, as it
 * always did (pipelining included). */
static enum specd_status rd_propose_batch(void *state, const struct draft_seq *seqs,
					  const uint32_t *k, struct draft_proposal *const *outs,
					  uint32_t n, struct specd_error *err)
{
	struct remote *r = state;
	struct specd_error e;
	enum specd_status st;
	uint32_t words = 0, room = 0, n_hid = 0;
	double t0 = specd_now();

	if (n == 1)
		return rd_propose(state, &seqs[0], k[0], outs[0], err);
	if (r->local && r->active == DRAFT_METHOD_NGRAM)
		return draft_propose_batch(r->local, seqs, k, outs, n, err);
	for (uint32_t i = 0; i < n; i++) {
		outs[i]->n = 0;
		outs[i]->q_onehot = true;
	}
	if (r->link->stats.dead || n == 0)
		return SPECD_OK;
	if ((st = batch_body(r, seqs, k, n, &words, &room, &n_hid, err)) != SPECD_OK)
		return st;
	memset(&r->req, 0, sizeof(r->req));
	r->req.op = RD_PROPOSE_BATCH;
	r->req.method = (int32_t)r->active;
	r->req.n_seqs = n;
	r->req.n_new = words;
	r->req.k = room;
	r->req.n_hidden = n_hid;
	r->req.dim = r->dim;
	specd_error_clear(&e);
	if ((st = link_send(r->link, &r->req, r->hid, (size_t)n_hid * r->dim * sizeof(float),
			    r->body, &e)) != SPECD_OK)
		return link_lost(r, st, &e, err);
	for (uint32_t i = 0; i < n; i++)
		r->told[seqs[i].slot] = seqs[i].n_tokens;
	r->link->stats.requests++;
	r->link->stats.batches++;
	/* An error comes as the struct rd_rep alone: shorter than the room, which MPI
	 * allows (par_comm_recv does not say how much came: the header's counts are all
	 * there is to check). */
	size_t bytes = sizeof(struct rd_rep) + n * sizeof(struct rd_batch_prop) +
		       2 * (size_t)room * sizeof(int32_t);
	assert(bytes <= r->rbuf_bytes);
	if ((st = par_comm_recv(r->link->comm, r->rbuf, bytes, RD_DRAFT, RD_TAG_REPLY, &e)) !=
	    SPECD_OK)
		return link_lost(r, st, &e, err);
	struct rd_rep *head = (struct rd_rep *)(void *)r->rbuf;
	const struct rd_batch_prop *bp = (const struct rd_batch_prop *)(void *)(head + 1);
	const int32_t *tok = (const int32_t *)(const void *)(bp + n), *par = tok + room;
	head->msg[RD_MSG_BYTES - 1] = '\0';
	/* The draft rank's own error comes alone, so the stream stays in step. */
	if (head->status != SPECD_OK)
		return specd_errorf(err, (enum specd_status)head->status, "draft rank %d: %s",
				    r->link->draft_world, head->msg);
	if (head->n != n)
		st = specd_errorf(&e, SPECD_PROTO, "%u proposals for a batch of %u", head->n, n);
	for (uint32_t i = 0, at = 0; i < n && st == SPECD_OK; at += k[i++])
		st = prop_check(r, bp[i].n, bp[i].q_rows, k[i], tok + at,
				bp[i].flags & RD_REP_TREE ? par + at : NULL, outs[i], &e);
	for (uint32_t i = 0; i < n && st == SPECD_OK; i++)
		if (bp[i].q_rows)
			st = par_comm_recv(r->link->comm, outs[i]->q,
					   (size_t)bp[i].q_rows * r->n_vocab * sizeof(float),
					   RD_DRAFT, RD_TAG_Q, &e);
	if (st != SPECD_OK)
		return link_lost(r, st, &e, err);
	for (uint32_t i = 0, at = 0; i < n; at += k[i++]) {
		prop_take(outs[i], bp[i].n, bp[i].q_rows, tok + at,
			  bp[i].flags & RD_REP_TREE ? par + at : NULL);
		if (bp[i].flags & RD_REP_PIPELINED)
			r->link->stats.pipelined++;
	}
	r->link->stats.proposals += n;
	r->link->stats.t_wait += specd_now() - t0;
	return SPECD_OK;
}

static uint32_t rd_methods(const void *state)
{
	const struct remote *r = state;
	return r->mask;
}

/* No message: the next propose names the method. */
static enum specd_status rd_select(void *state, enum draft_method m, struct specd_error *err)
{
	struct remote *r = state;
	if (!(r->mask & 1u << m))
		return specd_errorf(err, SPECD_INVAL, "remote drafter: method %s is not held",
				    draft_method_name(m));
	r->active = m;
	return SPECD_OK;
}

static enum specd_status rd_commit(void *state, const struct draft_seq *seq,
				   uint32_t n_accepted, int32_t next, struct specd_error *err)
{
	struct remote *r = state;

	if (r->link->stats.dead)
		return SPECD_OK;
	memset(&r->req, 0, sizeof(r->req));
	r->req.n_accepted = n_accepted;
	r->req.next = next;
	return rd_send(r, RD_COMMIT, seq, NULL, err);
}

/* wants_hidden as the method's own drafter: the leader then ships the target's hidden
 * state with every propose. */
#define REMOTE_OPS(m, hidden)                                                           \
	{                                                                                \
		.method = (m), .wants_hidden = (hidden), .create = rd_create,           \
		.destroy = rd_destroy,                                                   \
		.supports = rd_supports, .memory_bytes = rd_memory_bytes,                \
		.reset = rd_reset, .propose = rd_propose,                                \
		.propose_batch = rd_propose_batch, .commit = rd_commit,                  \
		.methods = rd_methods, .select = rd_select,                              \
	}

/* One table per method so draft_method_of() names the method the draft rank runs;
 * the draft rank refuses those it has no drafter for. */
static const struct draft_ops remote_ops[DRAFT_METHOD_COUNT] = {
	[DRAFT_METHOD_NGRAM] = REMOTE_OPS(DRAFT_METHOD_NGRAM, false),
	[DRAFT_METHOD_DRAFT_MODEL] = REMOTE_OPS(DRAFT_METHOD_DRAFT_MODEL, false),
	[DRAFT_METHOD_EAGLE] = REMOTE_OPS(DRAFT_METHOD_EAGLE, true),
	[DRAFT_METHOD_MEDUSA] = REMOTE_OPS(DRAFT_METHOD_MEDUSA, true),
};

enum specd_status draft_remote_create(const struct draft_remote_config *rc,
				      const struct draft_config *cfg, struct drafter **out,
				      struct specd_error *err)
{
	if (!rc || !cfg)
		return specd_errorf(err, SPECD_INVAL, "remote drafter: no config");
	if ((unsigned)cfg->method >= DRAFT_METHOD_COUNT || cfg->method == DRAFT_METHOD_NONE)
		return specd_errorf(err, SPECD_UNSUPPORTED, "remote drafter: method '%s' has no "
				    "drafter", draft_method_name(cfg->method));
	pending = rc;
	enum specd_status st = draft_create_ops(&remote_ops[cfg->method], cfg, out, err);
	pending = NULL;
	return st;
}
