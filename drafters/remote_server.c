/* The draft rank's loop (remote.h): wait for the leader's next request, run the real
 * drafter (ngram, draft_model) on the slot's own copy of the sequence, answer; with
 * pipelining, draft the next step right after answering, while the leader verifies.
 * Errors of one-way requests (reset, commit) stick to the slot and are the answer to
 * its next propose. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "remote_int.h"

/* Pipelining state of a slot. */
enum spec_state {
	SPEC_NONE,    /* nothing drafted ahead */
	SPEC_DRAFTED, /* drafted for "all accepted, bonus = guess"; the commit decides */
	SPEC_READY,   /* the commit matched: the next propose is answered from spec */
};

struct srv_slot {
	int32_t *hist;          /* (cap) the sequence; past n, the tail speculation assumed */
	uint32_t n;
	struct sampler *s;      /* the draft sampler: the engine's draft stream */
	bool started;
	enum specd_status st;   /* sticky: the next propose answers it */
	char msg[RD_MSG_BYTES];
	enum spec_state spec;
	uint32_t n_tail;        /* hist[n .. n + n_tail): proposal + guess */
	int32_t *spec_tok;      /* (k_srv) drafted ahead */
	uint32_t n_spec;
};

struct server {
	struct draft_link *link;
	const struct draft_server_config *sc;
	struct drafter *d;
	uint32_t n_slots, n_vocab, k_max, k_srv, cap;
	bool pipeline;
	struct srv_slot *slots;
	struct draft_proposal prop; /* tokens (k_srv), q (k_srv, n_vocab) host */
	int32_t *scratch;           /* (cap) a body that fits no slot */
	struct rd_req req;
	struct rd_rep rep;
};

static void slots_free(struct server *s)
{
	for (uint32_t i = 0; s->slots && i < s->n_slots; i++) {
		specd_free(s->slots[i].hist);
		specd_free(s->slots[i].spec_tok);
		sampler_destroy(s->slots[i].s);
	}
	specd_free(s->slots);
	specd_free(s->prop.tokens);
	specd_free(s->prop.q);
	specd_free(s->scratch);
	draft_destroy(s->d);
	s->slots = NULL;
	s->prop = (struct draft_proposal){0};
	s->scratch = NULL;
	s->d = NULL;
	s->n_slots = 0;
}

static void slot_fail(struct srv_slot *sl, enum specd_status st, const char *msg)
{
	if (sl->st != SPECD_OK)
		return; /* the first error is the one to report */
	sl->st = st;
	snprintf(sl->msg, sizeof(sl->msg), "%s", msg);
}

static enum specd_status reply(struct server *s, const float *q, uint32_t q_rows)
{
	struct specd_error err;
	s->rep.q_rows = q_rows;
	enum specd_status st = par_comm_send(s->link->comm, &s->rep, sizeof(s->rep), RD_LEADER,
					     RD_TAG_REPLY, &err);
	if (st == SPECD_OK && q_rows)
		st = par_comm_send(s->link->comm, q, (size_t)q_rows * s->n_vocab * sizeof(float),
				   RD_LEADER, RD_TAG_Q, &err);
	if (st != SPECD_OK)
		LOG_WARN("cannot answer the leader (it gave up on this rank?): %s", err.msg);
	return st;
}

static void reply_error(struct server *s, enum specd_status st, const char *msg)
{
	memset(&s->rep, 0, sizeof(s->rep));
	s->rep.status = st;
	snprintf(s->rep.msg, sizeof(s->rep.msg), "%s", msg);
	reply(s, NULL, 0);
}

static enum specd_status hello(struct server *s, struct specd_error *err)
{
	const struct rd_req *r = &s->req;
	enum draft_method m = (enum draft_method)r->method;
	enum specd_status st;

	slots_free(s);
	if (s->sc->broken != SPECD_OK)
		return specd_errorf(err, s->sc->broken, "%s",
				    s->sc->broken_msg ? s->sc->broken_msg : "not ready");
	if ((unsigned)r->transport >= DRAFT_Q_COUNT || r->transport != DRAFT_Q_FULL)
		return specd_errorf(err, SPECD_UNSUPPORTED, "q transport '%s' is not implemented "
				    "yet (only 'full')",
				    draft_q_transport_name((enum draft_q_transport)r->transport));
	if (r->k_max < 1 || r->k_max > DRAFT_MAX_TOKENS || r->n_slots < 1 || r->n_ctx < 1)
		return specd_errorf(err, SPECD_INVAL, "a drafter of K %u, %u slots, %u rows",
				    r->k_max, r->n_slots, r->n_ctx);
	uint32_t tv = model_hparams(s->sc->target)->n_vocab;
	if (r->n_vocab != tv)
		return specd_errorf(err, SPECD_INVAL, "the leader's target has %u tokens, this "
				    "rank's %u: not the same model", r->n_vocab, tv);
	s->pipeline = (r->flags & RD_HELLO_PIPELINE) != 0;
	s->k_max = r->k_max;
	/* Pipelining drafts one token more than it sends: the guess at the bonus. */
	s->k_srv = s->pipeline && r->k_max < DRAFT_MAX_TOKENS ? r->k_max + 1 : r->k_max;
	s->n_vocab = tv;
	s->cap = r->n_ctx + 2 * (s->k_srv + 1);
	struct draft_config dc = {
		.method = m,
		.k_max = s->k_srv,
		.n_slots = r->n_slots,
		.n_ctx = r->n_ctx,
		.target = s->sc->target,
		.prompt_lookup_min = r->lookup_min,
		.prompt_lookup_max = r->lookup_max,
		.draft_path = s->sc->draft_path,
		.kern = s->sc->kern,
	};
	if ((st = draft_create(&dc, &s->d, err)) != SPECD_OK)
		return st;
	s->n_slots = r->n_slots;
	s->slots = specd_calloc(s->n_slots, sizeof(*s->slots));
	s->prop.tokens = specd_malloc_array(s->k_srv, sizeof(int32_t));
	/* Only a drafter that samples fills q; prompt lookup never does. */
	if (m != DRAFT_METHOD_NGRAM)
		s->prop.q = specd_malloc_array((size_t)s->k_srv * tv, sizeof(float));
	s->scratch = specd_malloc_array(s->cap, sizeof(int32_t));
	if (!s->slots || !s->prop.tokens || (m != DRAFT_METHOD_NGRAM && !s->prop.q) || !s->scratch)
		goto nomem;
	struct sampler_params sp = {.temperature = 0.0f, .top_p = 1.0f};
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct srv_slot *sl = &s->slots[i];
		sl->hist = specd_malloc_array(s->cap, sizeof(int32_t));
		sl->spec_tok = specd_malloc_array(s->k_srv, sizeof(int32_t));
		if (!sl->hist || !sl->spec_tok ||
		    sampler_create((int32_t)tv, &sp, &sl->s, NULL) != SPECD_OK)
			goto nomem;
	}
	return SPECD_OK;
nomem:
	slots_free(s);
	return specd_errorf(err, SPECD_NOMEM, "out of memory for %u slots of %u tokens",
			    r->n_slots, r->n_ctx);
}

/* Takes in the request's new tokens: into the slot's history when they fit it, else
 * (a broken request) into scratch, so the message stream stays in step either way.
 * Returns the slot, or NULL when the request is not for a usable slot. */
static struct srv_slot *take_tokens(struct server *s, int32_t **toks)
{
	const struct rd_req *r = &s->req;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	uint32_t at = r->op == RD_RESET ? 0 : sl ? sl->n : 0;
	bool fits = sl && r->n_total == at + r->n_new && r->n_total <= s->cap - (s->k_srv + 1);
	int32_t *dst = NULL;

	if (fits)
		dst = sl->hist + at;
	else if (r->n_new <= s->cap && s->scratch)
		dst = s->scratch;
	if (r->n_new <= RD_INLINE) {
		if (dst)
			memcpy(dst, r->tokens, r->n_new * sizeof(int32_t));
	} else {
		int32_t *tmp = dst ? NULL : specd_malloc_array(r->n_new, sizeof(int32_t));
		struct specd_error err;
		/* The leader sends the body right after the request: a short wait. */
		if (par_comm_bcast(s->link->comm, dst ? dst : tmp, (size_t)r->n_new * 4, RD_LEADER,
				   &err) != SPECD_OK)
			LOG_WARN("the leader's tokens did not arrive: %s", err.msg);
		specd_free(tmp);
	}
	*toks = dst;
	if (!sl)
		return NULL;
	if (!fits) {
		char msg[RD_MSG_BYTES];
		snprintf(msg, sizeof(msg), "slot %u: out of step with the leader (%u + %u tokens, "
			 "the leader says %u; room for %u)", r->slot, at, r->n_new, r->n_total,
			 s->cap - (s->k_srv + 1));
		slot_fail(sl, SPECD_PROTO, msg);
		return NULL;
	}
	return sl;
}

static struct draft_seq slot_seq(struct server *s, uint32_t slot, uint32_t n)
{
	struct srv_slot *sl = &s->slots[slot];
	return (struct draft_seq){.slot = slot, .tokens = sl->hist, .n_tokens = n, .sampler = sl->s};
}

static void on_reset(struct server *s)
{
	const struct rd_req *r = &s->req;
	int32_t *toks;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	struct specd_error err;
	enum specd_status st;

	specd_error_clear(&err);
	if (sl) {
		sl->st = SPECD_OK;
		sl->started = false;
		sl->spec = SPEC_NONE;
	}
	if (!(sl = take_tokens(s, &toks)))
		return;
	sl->n = r->n_total;
	struct sampler_params sp = {.temperature = r->temperature, .top_k = r->top_k,
				    .top_p = r->top_p, .seed = r->seed};
	struct draft_seq seq = slot_seq(s, r->slot, sl->n);
	if ((st = sampler_reset(sl->s, &sp, &err)) != SPECD_OK ||
	    (st = draft_reset(s->d, &seq, &err)) != SPECD_OK) {
		slot_fail(sl, st, err.msg);
		return;
	}
	sl->started = true;
}

static void on_commit(struct server *s)
{
	const struct rd_req *r = &s->req;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	struct specd_error err;
	enum specd_status st;
	int32_t *toks;
	/* Compare with the speculation's tail before the new tokens overwrite it. */
	bool hit = sl && sl->spec == SPEC_DRAFTED && r->n_new == sl->n_tail &&
		   r->n_total == sl->n + r->n_new && r->n_accepted + 1 == r->n_new;
	if (hit && r->n_new <= RD_INLINE)
		hit = memcmp(sl->hist + sl->n, r->tokens, r->n_new * sizeof(int32_t)) == 0;
	else
		hit = false;
	if (!(sl = take_tokens(s, &toks)) || !sl->started || sl->st != SPECD_OK)
		return;
	sl->n = r->n_total;
	if (hit) {
		/* The drafter already took this commit in, and drafted on from it. */
		sl->spec = SPEC_READY;
		return;
	}
	sl->spec = SPEC_NONE;
	struct draft_seq seq = slot_seq(s, r->slot, sl->n);
	specd_error_clear(&err);
	if ((st = draft_commit(s->d, &seq, r->n_accepted, r->next, &err)) != SPECD_OK)
		slot_fail(sl, st, err.msg);
}

/* After answering: draft the next step as if all n_sent tokens and the guess
 * (the drafter's next token) were committed. Only where the output cannot depend on
 * it: greedy, whose proposals are one-hot. */
static void draft_ahead(struct server *s, uint32_t slot, const int32_t *sent, uint32_t n_sent,
			int32_t guess, uint32_t k)
{
	struct srv_slot *sl = &s->slots[slot];
	struct specd_error err;
	uint32_t n = sl->n + n_sent + 1;

	specd_error_clear(&err);
	sl->spec = SPEC_NONE;
	if (n > s->cap - (s->k_srv + 1))
		return;
	memmove(sl->hist + sl->n, sent, n_sent * sizeof(int32_t));
	sl->hist[sl->n + n_sent] = guess;
	struct draft_seq seq = slot_seq(s, slot, n);
	uint32_t kk = k + 1 < s->k_srv ? k + 1 : s->k_srv;
	struct draft_proposal p = {.tokens = sl->spec_tok, .q = NULL};
	if (draft_commit(s->d, &seq, n_sent, guess, &err) != SPECD_OK ||
	    draft_propose(s->d, &seq, kk, &p, &err) != SPECD_OK || !p.q_onehot) {
		LOG_DEBUG("slot %u: no drafting ahead: %s", slot, err.msg);
		return; /* the real commit rolls the drafter back */
	}
	sl->n_tail = n_sent + 1;
	sl->n_spec = p.n;
	sl->spec = SPEC_DRAFTED;
}

static void on_propose(struct server *s)
{
	const struct rd_req *r = &s->req;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	struct specd_error err;
	int32_t *toks;
	char msg[RD_MSG_BYTES];

	if (!s->d) {
		reply_error(s, SPECD_PROTO, "a proposal asked for before any drafter was made");
		return;
	}
	if (!sl) {
		take_tokens(s, &toks);
		snprintf(msg, sizeof(msg), "slot %u of %u", r->slot, s->n_slots);
		reply_error(s, SPECD_INVAL, msg);
		return;
	}
	if (r->n_new && !take_tokens(s, &toks)) {
		reply_error(s, sl->st, sl->msg);
		return;
	}
	if (r->n_new)
		sl->n = r->n_total;
	if (!sl->started || sl->st != SPECD_OK || r->n_total != sl->n || r->k > s->k_max) {
		if (sl->st == SPECD_OK)
			snprintf(sl->msg, sizeof(sl->msg), "slot %u: %s (%u tokens here, %u on the "
				 "leader; K %u of %u)", r->slot,
				 sl->started ? "out of step with the leader" : "no sequence",
				 sl->n, r->n_total, r->k, s->k_max);
		reply_error(s, sl->st != SPECD_OK ? sl->st : SPECD_PROTO, sl->msg);
		return;
	}
	bool ahead = s->pipeline && sampler_is_greedy(sl->s);
	const int32_t *tok;
	uint32_t avail;
	memset(&s->rep, 0, sizeof(s->rep));
	if (sl->spec == SPEC_READY) {
		tok = sl->spec_tok;
		avail = sl->n_spec;
		s->rep.flags = RD_REP_PIPELINED;
		s->prop.q_onehot = true;
	} else {
		struct draft_seq seq = slot_seq(s, r->slot, sl->n);
		uint32_t kk = ahead && r->k < s->k_srv ? r->k + 1 : r->k;
		enum specd_status st;
		specd_error_clear(&err);
		if ((st = draft_propose(s->d, &seq, kk, &s->prop, &err)) != SPECD_OK) {
			slot_fail(sl, st, err.msg);
			reply_error(s, sl->st, sl->msg);
			return;
		}
		tok = s->prop.tokens;
		avail = s->prop.n;
	}
	sl->spec = SPEC_NONE;
	uint32_t n_sent = avail < r->k ? avail : r->k;
	memcpy(s->rep.tokens, tok, n_sent * sizeof(int32_t));
	s->rep.n = n_sent;
	bool q = !s->prop.q_onehot && n_sent > 0;
	if (reply(s, q ? s->prop.q : NULL, q ? n_sent : 0) != SPECD_OK)
		return;
	if (ahead && avail > n_sent)
		draft_ahead(s, r->slot, tok, n_sent, tok[n_sent], r->k);
}

enum specd_status draft_serve(struct draft_link *link, const struct draft_server_config *sc,
			      struct specd_error *err)
{
	struct server s = {.link = link, .sc = sc};
	enum specd_status first = SPECD_OK, st;
	struct specd_error e;
	char first_msg[sizeof(e.msg)] = "";

	if (!link || link->leader || !sc || (!sc->target && sc->broken == SPECD_OK))
		return specd_errorf(err, SPECD_INVAL, "draft server: not the draft rank's link, "
				    "or no target");
	for (;;) {
		specd_error_clear(&e);
		if ((st = par_comm_bcast_idle(link->comm, &s.req, sizeof(s.req), RD_LEADER, &e)) !=
		    SPECD_OK) {
			specd_errorf(err, st, "draft server: %s", e.msg);
			break;
		}
		switch (s.req.op) {
		case RD_STOP:
			st = first;
			if (st != SPECD_OK)
				specd_errorf(err, st, "%s", first_msg);
			goto done;
		case RD_HELLO:
			st = hello(&s, &e);
			memset(&s.rep, 0, sizeof(s.rep));
			s.rep.status = st;
			if (st != SPECD_OK) {
				LOG_ERROR("cannot make the drafter the leader asked for: %s", e.msg);
				snprintf(s.rep.msg, sizeof(s.rep.msg), "%s", e.msg);
				if (first == SPECD_OK) {
					first = st;
					snprintf(first_msg, sizeof(first_msg), "%s", e.msg);
				}
			} else {
				s.rep.memory_bytes = draft_memory_bytes(s.d);
				LOG_INFO("drafting %s for the leader: K %u, %u slot%s%s",
					 draft_method_name(draft_method_of(s.d)), s.k_max, s.n_slots,
					 s.n_slots == 1 ? "" : "s", s.pipeline ? ", pipelined" : "");
			}
			reply(&s, NULL, 0);
			break;
		case RD_RESET:
			on_reset(&s);
			break;
		case RD_COMMIT:
			on_commit(&s);
			break;
		case RD_PROPOSE:
			on_propose(&s);
			break;
		default:
			LOG_WARN("unknown request %d from the leader ignored", (int)s.req.op);
			break;
		}
	}
done:
	slots_free(&s);
	return st;
}
