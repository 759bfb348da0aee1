/* The draft rank's loop (remote.h): wait for the leader's next request, run the real
 * drafter (ngram, draft_model, medusa on the hidden rows the leader ships) on the
 * slots' own copies of the sequences, answer; with pipelining, draft the next step
 * right after answering, while the leader verifies.
 * Errors of one-way requests (reset, commit) stick to the slot and are the answer to
 * its next propose, single or batched. */
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
	/* The slot's proposal: tokens (k_srv), q (k_srv, n_vocab) host, q for a drafter
	 * that samples only; one per slot so a batch drafts every slot at once. */
	struct draft_proposal prop;
	bool asked;             /* named by the batch being parsed */
};

/* One slot's part of the propose being answered. */
struct srv_ask {
	uint32_t slot, k;
	bool ahead;             /* draft ahead after answering (greedy, pipelining on) */
	bool from_spec;         /* answered from what was drafted ahead */
	const float *hidden;    /* the target's hidden states the leader shipped, or NULL */
	uint32_t n_hidden;
	const int32_t *tok;     /* the proposal: the slot's prop.tokens or spec_tok */
	uint32_t avail, n_sent;
};

struct server {
	struct draft_link *link;
	const struct draft_server_config *sc;
	struct drafter *d;
	uint32_t n_slots, n_vocab, k_max, k_srv, cap;
	uint32_t dim;               /* hidden size of the rows the leader ships; 0: none */
	uint32_t hid_rows;          /* rows per sequence the drafter takes (draft_hidden_rows) */
	enum draft_method active;   /* the method proposing now (draft_select) */
	bool pipeline;
	bool warm;                  /* warm the held methods not proposing (RD_HELLO_WARM) */
	/* The current request's hidden rows (n_hidden of them, dim floats each); room for
	 * n_slots x hid_rows, made at hello for a drafter that wants them. */
	float *hid;
	uint32_t n_hidden;
	struct srv_slot *slots;
	int32_t *scratch;           /* (cap) a body that fits no slot */
	/* One propose's work, (n_slots) each: the asks, and the sequences, counts and
	 * outputs handed to the drafter (ahead: proposals into spec_tok). */
	struct srv_ask *asks;
	struct draft_seq *g_seq;
	uint32_t *g_k;
	struct draft_proposal **g_out;
	struct draft_proposal *g_ahead;
	int32_t *body;              /* (body_cap) words: a batch's request body */
	uint32_t body_cap;
	unsigned char *rbuf;        /* (rbuf_bytes) a batch's reply */
	size_t rbuf_bytes;
	struct rd_req req;
	struct rd_rep rep;
};

static void slots_free(struct server *s)
{
	for (uint32_t i = 0; s->slots && i < s->n_slots; i++) {
		specd_free(s->slots[i].hist);
		specd_free(s->slots[i].spec_tok);
		specd_free(s->slots[i].prop.tokens);
		specd_free(s->slots[i].prop.q);
		specd_free(s->slots[i].prop.parent);
		sampler_destroy(s->slots[i].s);
	}
	specd_free(s->slots);
	specd_free(s->scratch);
	specd_free(s->asks);
	specd_free(s->g_seq);
	specd_free(s->g_k);
	specd_free(s->g_out);
	specd_free(s->g_ahead);
	specd_free(s->body);
	specd_free(s->rbuf);
	specd_free(s->hid);
	draft_destroy(s->d);
	s->slots = NULL;
	s->scratch = NULL;
	s->asks = NULL;
	s->g_seq = NULL;
	s->g_k = NULL;
	s->g_out = NULL;
	s->g_ahead = NULL;
	s->body = NULL;
	s->body_cap = 0;
	s->rbuf = NULL;
	s->rbuf_bytes = 0;
	s->hid = NULL;
	s->dim = 0;
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

/* q rows after a reply, from the proposal's own buffer. */
static enum specd_status send_q(struct server *s, const float *q, uint32_t q_rows,
				struct specd_error *err)
{
	return par_comm_send(s->link->comm, q, (size_t)q_rows * s->n_vocab * sizeof(float),
			     RD_LEADER, RD_TAG_Q, err);
}

/* s->rep, its first `bytes` (all of it but for a hello's refusal), then q_rows q rows
 * from q. */
static enum specd_status reply(struct server *s, size_t bytes, const float *q, uint32_t q_rows)
{
	struct specd_error err;
	s->rep.q_rows = q_rows;
	enum specd_status st = par_comm_send(s->link->comm, &s->rep, bytes, RD_LEADER,
					     RD_TAG_REPLY, &err);
	if (st == SPECD_OK && q_rows)
		st = send_q(s, q, q_rows, &err);
	if (st != SPECD_OK)
		LOG_WARN("cannot answer the leader (it gave up on this rank?): %s", err.msg);
	return st;
}

/* Also a batch's error answer: the struct rd_rep alone. */
static void reply_error(struct server *s, enum specd_status st, const char *msg)
{
	memset(&s->rep, 0, sizeof(s->rep));
	s->rep.status = st;
	snprintf(s->rep.msg, sizeof(s->rep.msg), "%s", msg);
	reply(s, sizeof(s->rep), NULL, 0);
}

static enum specd_status hello(struct server *s, struct specd_error *err)
{
	const struct rd_req *r = &s->req;
	enum draft_method m = (enum draft_method)r->method;
	enum specd_status st;

	slots_free(s);
	/* First: nothing else in a request of another layout is where this build looks. */
	if ((st = rd_check_build(r->version, r->req_bytes, r->rep_bytes, "the leader",
				 "this rank", err)) != SPECD_OK)
		return st;
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
	uint32_t tdim = model_hparams(s->sc->target)->dim;
	if (r->n_vocab != tv)
		return specd_errorf(err, SPECD_INVAL, "the leader's target has %u tokens, this "
				    "rank's %u: not the same model", r->n_vocab, tv);
	/* The method's range first: it comes off the wire, and a shift by 32 or more is
	 * undefined. */
	if ((unsigned)m >= DRAFT_METHOD_COUNT || r->also >> DRAFT_METHOD_COUNT)
		return specd_errorf(err, SPECD_INVAL, "method %d and 0x%x to hold", (int)m,
				    r->also);
	uint32_t mask = r->also | 1u << (unsigned)m;
	bool hidden = false;
	for (int i = 0; i < DRAFT_METHOD_COUNT; i++) {
		const struct draft_ops *ops = draft_ops_for((enum draft_method)i);
		hidden |= mask & 1u << i && ops && ops->wants_hidden;
	}
	if (hidden && r->dim != tdim)
		return specd_errorf(err, SPECD_INVAL, "the leader ships hidden states of size %u, "
				    "this rank's target has %u: not the same model", r->dim, tdim);
	/* No drafting ahead on the hidden state: the next step's is known only once the
	 * leader has verified this one. */
	s->pipeline = (r->flags & RD_HELLO_PIPELINE) != 0 && !hidden;
	s->warm = (r->flags & RD_HELLO_WARM) != 0;
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
		.huge_pages_max = s->sc->huge_pages_max,
		.kern = s->sc->kern,
		.heads_path = s->sc->heads_path,
		.eagle = s->sc->eagle,
		.also = r->also,
	};
	if ((st = draft_create(&dc, &s->d, err)) != SPECD_OK)
		return st;
	s->dim = hidden ? tdim : 0;
	s->hid_rows = hidden ? draft_hidden_rows(s->d) : 0;
	s->active = m;
	s->n_slots = r->n_slots;
	s->slots = specd_calloc(s->n_slots, sizeof(*s->slots));
	s->scratch = specd_malloc_array(s->cap, sizeof(int32_t));
	s->asks = specd_malloc_array(s->n_slots, sizeof(*s->asks));
	s->g_seq = specd_malloc_array(s->n_slots, sizeof(*s->g_seq));
	s->g_k = specd_malloc_array(s->n_slots, sizeof(*s->g_k));
	s->g_out = specd_malloc_array(s->n_slots, sizeof(*s->g_out));
	s->g_ahead = specd_malloc_array(s->n_slots, sizeof(*s->g_ahead));
	/* A batch names every slot at most once, each with at most all its tokens new. */
	uint64_t words = (uint64_t)s->n_slots * (RD_BATCH_SEQ_WORDS + s->cap);
	s->body_cap = words <= UINT32_MAX / 2 ? (uint32_t)words : 0;
	s->body = s->body_cap ? specd_malloc_array(s->body_cap, sizeof(int32_t)) : NULL;
	s->rbuf_bytes = sizeof(struct rd_rep) + s->n_slots * (sizeof(struct rd_batch_prop) +
							      2 * s->k_max * sizeof(int32_t));
	s->rbuf = specd_malloc_array(s->rbuf_bytes, 1);
	if (s->dim)
		s->hid = specd_malloc_array((size_t)s->n_slots * s->hid_rows * s->dim,
					    sizeof(float));
	if (!s->slots || !s->scratch || !s->asks || !s->g_seq || !s->g_k || !s->g_out ||
	    !s->g_ahead || !s->body || !s->rbuf || (s->dim && !s->hid))
		goto nomem;
	struct sampler_params sp = {.temperature = 0.0f, .top_p = 1.0f};
	for (uint32_t i = 0; i < s->n_slots; i++) {
		struct srv_slot *sl = &s->slots[i];
		sl->hist = specd_malloc_array(s->cap, sizeof(int32_t));
		sl->spec_tok = specd_malloc_array(s->k_srv, sizeof(int32_t));
		sl->prop.tokens = specd_malloc_array(s->k_srv, sizeof(int32_t));
		sl->prop.parent = specd_malloc_array(s->k_srv, sizeof(int32_t));
		/* Only a drafter that samples fills q; prompt lookup never does. */
		bool q = mask != 1u << DRAFT_METHOD_NGRAM;
		if (q)
			sl->prop.q = specd_malloc_array((size_t)s->k_srv * tv, sizeof(float));
		if (!sl->hist || !sl->spec_tok || !sl->prop.tokens || !sl->prop.parent ||
		    (q && !sl->prop.q) ||
		    sampler_create((int32_t)tv, &sp, &sl->s, NULL) != SPECD_OK)
			goto nomem;
	}
	return SPECD_OK;
nomem:
	slots_free(s);
	return specd_errorf(err, SPECD_NOMEM, "out of memory for %u slots of %u tokens",
			    r->n_slots, r->n_ctx);
}

/* The 32-bit words (tokens, or hidden floats) of a request that follow it as a further
 * message (the leader sends them right after it: a short wait), into dst, or with dst
 * NULL into a temporary buffer and dropped, so the message stream stays in step. */
static enum specd_status recv_body(struct server *s, void *dst, uint64_t words)
{
	void *buf = dst ? dst : specd_malloc_array(words, sizeof(int32_t));
	struct specd_error err;
	enum specd_status st = SPECD_NOMEM;

	if (!buf)
		LOG_ERROR("%llu words from the leader cannot be taken in: out of step with it",
			  (unsigned long long)words);
	else if ((st = par_comm_bcast(s->link->comm, buf, (size_t)words * sizeof(int32_t),
				      RD_LEADER, &err)) != SPECD_OK)
		LOG_WARN("the leader's words did not arrive: %s", err.msg);
	if (buf != dst)
		specd_free(buf);
	return st;
}

/* Takes in the request's new tokens: into the slot's history when they fit it, else
 * (a broken request) into scratch, so the message stream stays in step either way.
 * Returns the slot, or NULL when the request is not for a usable slot. */
static struct srv_slot *take_tokens(struct server *s, int32_t **toks)
{
	const struct rd_req *r = &s->req;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	uint32_t at = r->op == RD_RESET ? 0 : sl ? sl->n : 0;
	bool fits = sl && r->n_total == (uint64_t)at + r->n_new &&
		    r->n_total <= s->cap - (s->k_srv + 1);
	int32_t *dst = NULL;

	if (fits)
		dst = sl->hist + at;
	else if (r->n_new <= s->cap && s->scratch)
		dst = s->scratch;
	if (r->n_new <= RD_INLINE) {
		if (dst)
			memcpy(dst, r->tokens, r->n_new * sizeof(int32_t));
	} else {
		recv_body(s, dst, r->n_new);
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

/* A propose's hidden rows (n_hidden of r->dim floats), which come right after the
 * request: into s->hid when this rank's drafter takes rows of that size and they fit,
 * else drained, so the stream stays in step (the propose then fails: s->n_hidden is
 * what was taken in). */
static void take_hidden(struct server *s)
{
	const struct rd_req *r = &s->req;
	uint64_t words = (uint64_t)r->n_hidden * r->dim;
	bool fits = s->hid && r->dim == s->dim &&
		    (uint64_t)r->n_hidden <= (uint64_t)s->n_slots * s->hid_rows;

	s->n_hidden = 0;
	if (words && recv_body(s, fits ? s->hid : NULL, words) == SPECD_OK && fits)
		s->n_hidden = r->n_hidden;
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
				    .top_p = r->top_p, .min_p = r->min_p, .seed = r->seed};
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

/* One pass of the drafter over seqs: draft_propose for one sequence (as a single
 * propose always did), draft_propose_batch for several. */
static enum specd_status draft_group(struct server *s, uint32_t n, struct specd_error *err)
{
	if (n == 1)
		return draft_propose(s->d, &s->g_seq[0], s->g_k[0], s->g_out[0], err);
	return draft_propose_batch(s->d, s->g_seq, s->g_k, s->g_out, n, err);
}

/* After answering: for every ask that drafts ahead, draft the next step as if all
 * n_sent tokens and the guess (the drafter's next token) were committed, in one pass
 * for all of them. Only where the output cannot depend on it: greedy, whose proposals
 * are one-hot. */
static void draft_ahead(struct server *s, uint32_t n_asks)
{
	struct specd_error err;
	uint32_t m = 0;

	specd_error_clear(&err);
	for (uint32_t i = 0; i < n_asks; i++) {
		struct srv_ask *a = &s->asks[i];
		struct srv_slot *sl = &s->slots[a->slot];
		uint32_t n_sent = a->n_sent, n = sl->n + n_sent + 1;

		sl->spec = SPEC_NONE;
		if (!a->ahead || a->avail <= n_sent || n > s->cap - (s->k_srv + 1))
			continue;
		int32_t guess = a->tok[n_sent];
		memmove(sl->hist + sl->n, a->tok, n_sent * sizeof(int32_t));
		sl->hist[sl->n + n_sent] = guess;
		struct draft_seq seq = slot_seq(s, a->slot, n);
		if (draft_commit(s->d, &seq, n_sent, guess, &err) != SPECD_OK) {
			LOG_DEBUG("slot %u: no drafting ahead: %s", a->slot, err.msg);
			continue; /* the real commit rolls the drafter back */
		}
		sl->n_tail = n_sent + 1;
		s->g_seq[m] = seq;
		s->g_k[m] = a->k + 1 < s->k_srv ? a->k + 1 : s->k_srv;
		s->g_ahead[m] = (struct draft_proposal){.tokens = sl->spec_tok, .q = NULL};
		s->g_out[m] = &s->g_ahead[m];
		m++;
	}
	if (m == 0)
		return;
	if (draft_group(s, m, &err) != SPECD_OK) {
		LOG_DEBUG("no drafting ahead for %u slot%s: %s", m, m == 1 ? "" : "s", err.msg);
		return;
	}
	for (uint32_t g = 0; g < m; g++)
		if (!s->g_ahead[g].q_onehot)
			return; /* not greedy after all: nothing drafted ahead is used */
	for (uint32_t g = 0; g < m; g++) {
		struct srv_slot *sl = &s->slots[s->g_seq[g].slot];
		sl->n_spec = s->g_ahead[g].n;
		sl->spec = SPEC_DRAFTED;
	}
}

/* The proposals for asks[0 .. n_asks): from what was drafted ahead where the commit
 * matched, the rest in one drafter pass (one more token where it drafts ahead: the
 * guess at the bonus). Errors: the drafter's, stuck to every slot it drafted for. */
static enum specd_status draft_asks(struct server *s, uint32_t n_asks, struct specd_error *err)
{
	uint32_t m = 0;
	enum specd_status st;

	for (uint32_t i = 0; i < n_asks; i++) {
		struct srv_ask *a = &s->asks[i];
		struct srv_slot *sl = &s->slots[a->slot];

		a->ahead = s->pipeline && sampler_is_greedy(sl->s);
		a->from_spec = sl->spec == SPEC_READY;
		if (a->from_spec)
			continue;
		s->g_seq[m] = slot_seq(s, a->slot, sl->n);
		s->g_seq[m].hidden = a->hidden;
		s->g_seq[m].n_hidden = a->n_hidden;
		s->g_k[m] = a->ahead && a->k < s->k_srv ? a->k + 1 : a->k;
		s->g_out[m++] = &sl->prop;
	}
	if (m && (st = draft_group(s, m, err)) != SPECD_OK) {
		for (uint32_t g = 0; g < m; g++)
			slot_fail(&s->slots[s->g_seq[g].slot], st, err->msg);
		return st;
	}
	for (uint32_t i = 0; i < n_asks; i++) {
		struct srv_ask *a = &s->asks[i];
		struct srv_slot *sl = &s->slots[a->slot];

		a->tok = a->from_spec ? sl->spec_tok : sl->prop.tokens;
		a->avail = a->from_spec ? sl->n_spec : sl->prop.n;
		a->n_sent = a->avail < a->k ? a->avail : a->k;
		sl->spec = SPEC_NONE;
	}
	return SPECD_OK;
}

/* Proposes with the request's method from now on: a switch (the online selector's, on
 * the leader) drops what was drafted ahead with the other. false, msg saying why, when
 * this rank's drafter does not hold it. */
static bool use_method(struct server *s, char *msg, size_t cap)
{
	enum draft_method m = (enum draft_method)s->req.method;
	struct specd_error err;

	if (m == s->active)
		return true;
	if (draft_select(s->d, m, &err) != SPECD_OK) {
		snprintf(msg, cap, "%s", err.msg);
		return false;
	}
	s->active = m;
	for (uint32_t i = 0; i < s->n_slots; i++)
		s->slots[i].spec = SPEC_NONE;
	return true;
}

/* After answering, while the leader verifies: the held methods that are not proposing
 * take in each asked slot's sequence, so that switching to one (or probing it) costs
 * the leader no catch-up. Only what is committed: the slot as the leader sent it. */
static void warm_held(struct server *s, uint32_t n_asks)
{
	struct specd_error err;
	if (!s->warm || !(draft_methods(s->d) & ~(1u << s->active)))
		return;
	for (uint32_t i = 0; i < n_asks; i++) {
		struct srv_slot *sl = &s->slots[s->asks[i].slot];
		struct draft_seq seq = slot_seq(s, s->asks[i].slot, sl->n);
		if (sl->st == SPECD_OK && draft_warm(s->d, &seq, &err) != SPECD_OK)
			LOG_DEBUG("slot %u: the held methods not drafting stay behind: %s",
				  s->asks[i].slot, err.msg);
	}
}

/* Whether the slot can be proposed for: started, no sticky error, in step with the
 * leader's n_total, K in range. Otherwise the slot's message says why (a sticky error's
 * own, else a new one) and *st_out the status to answer. */
static bool ask_ok(struct server *s, uint32_t slot, uint32_t n_total, uint32_t k,
		   enum specd_status *st_out)
{
	struct srv_slot *sl = &s->slots[slot];

	if (sl->started && sl->st == SPECD_OK && n_total == sl->n && k <= s->k_max)
		return true;
	if (sl->st == SPECD_OK && k > s->k_max)
		snprintf(sl->msg, sizeof(sl->msg), "slot %u: K %u of %u", slot, k, s->k_max);
	else if (sl->st == SPECD_OK)
		snprintf(sl->msg, sizeof(sl->msg), "slot %u: %s (%u tokens here, %u on the "
			 "leader)", slot, sl->started ? "out of step with the leader" :
			 "no sequence", sl->n, n_total);
	*st_out = sl->st != SPECD_OK ? sl->st : SPECD_PROTO;
	return false;
}

static void on_propose(struct server *s)
{
	const struct rd_req *r = &s->req;
	struct srv_slot *sl = s->slots && r->slot < s->n_slots ? &s->slots[r->slot] : NULL;
	struct specd_error err;
	enum specd_status st;
	int32_t *toks;
	char msg[RD_MSG_BYTES];

	if (!s->d) {
		take_tokens(s, &toks);
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
	if (!ask_ok(s, r->slot, r->n_total, r->k, &st)) {
		reply_error(s, st, sl->msg);
		return;
	}
	if (!use_method(s, msg, sizeof(msg))) {
		reply_error(s, SPECD_INVAL, msg);
		return;
	}
	if (r->n_hidden != s->n_hidden || r->n_hidden > s->hid_rows) {
		snprintf(msg, sizeof(msg), "slot %u: %u hidden rows of size %u for one sequence; "
			 "this rank's drafter takes %s%u", r->slot, r->n_hidden, r->dim,
			 s->hid_rows ? "at most " : "none, ", s->hid_rows);
		reply_error(s, SPECD_PROTO, msg);
		return;
	}
	s->asks[0] = (struct srv_ask){.slot = r->slot, .k = r->k,
				      .hidden = s->n_hidden ? s->hid : NULL,
				      .n_hidden = s->n_hidden};
	specd_error_clear(&err);
	if (draft_asks(s, 1, &err) != SPECD_OK) {
		reply_error(s, sl->st, sl->msg);
		return;
	}
	const struct srv_ask *a = &s->asks[0];
	memset(&s->rep, 0, sizeof(s->rep));
	memcpy(s->rep.tokens, a->tok, a->n_sent * sizeof(int32_t));
	s->rep.n = a->n_sent;
	s->rep.flags = a->from_spec ? RD_REP_PIPELINED : 0;
	if (!a->from_spec && sl->prop.tree) {
		s->rep.flags |= RD_REP_TREE;
		memcpy(s->rep.parent, sl->prop.parent, a->n_sent * sizeof(int32_t));
	}
	bool q = !a->from_spec && !sl->prop.q_onehot && a->n_sent > 0;
	if (reply(s, sizeof(s->rep), q ? sl->prop.q : NULL, q ? a->n_sent : 0) != SPECD_OK)
		return;
	draft_ahead(s, 1);
	warm_held(s, 1);
}

/* Takes in a batch's body (inline, or the message right after the request) into
 * s->body. false when it cannot be held (none made yet, or longer than any batch): it
 * is then drained, so the message stream stays in step. */
static bool take_body(struct server *s)
{
	const struct rd_req *r = &s->req;
	uint32_t words = r->n_new;
	bool fits = s->body && words <= s->body_cap;

	if (words > RD_INLINE)
		return recv_body(s, fits ? s->body : NULL, words) == SPECD_OK && fits;
	if (fits)
		memcpy(s->body, r->tokens, words * sizeof(int32_t));
	return fits;
}

/* Checks a batch's shape against this rank's drafter: counts, slots (in range, each
 * once), K, and that the body's words and the reply's room add up. Marks the slots
 * asked. Returns 0 or the status to answer, msg saying why. */
static enum specd_status batch_check(struct server *s, char *msg, size_t cap)
{
	const struct rd_req *r = &s->req;
	const struct rd_batch_seq *ent = (const struct rd_batch_seq *)(const void *)s->body;
	uint32_t n = r->n_seqs, n_hid = 0;
	uint64_t words = (uint64_t)n * RD_BATCH_SEQ_WORDS, room = 0;
	enum specd_status st = SPECD_OK;

	if (n < 1 || n > s->n_slots || words > r->n_new) {
		snprintf(msg, cap, "a batch of %u sequences in %u words; there are %u slots", n,
			 r->n_new, s->n_slots);
		return SPECD_PROTO;
	}
	for (uint32_t i = 0; i < s->n_slots; i++)
		s->slots[i].asked = false;
	for (uint32_t i = 0; i < n && st == SPECD_OK; i++) {
		if (ent[i].slot >= s->n_slots) {
			snprintf(msg, cap, "batch entry %u: slot %u of %u", i, ent[i].slot,
				 s->n_slots);
			st = SPECD_INVAL;
		} else if (s->slots[ent[i].slot].asked) {
			snprintf(msg, cap, "batch entry %u: slot %u twice", i, ent[i].slot);
			st = SPECD_PROTO;
		} else if (ent[i].k > s->k_max) {
			snprintf(msg, cap, "batch entry %u: slot %u: K %u of %u", i, ent[i].slot,
				 ent[i].k, s->k_max);
			st = SPECD_INVAL;
		} else if (ent[i].hidden > s->hid_rows) {
			snprintf(msg, cap, "batch entry %u: %u hidden rows; this rank's drafter "
				 "takes %s%u", i, ent[i].hidden, s->hid_rows ? "at most " : "none, ",
				 s->hid_rows);
			st = SPECD_PROTO;
		} else {
			s->slots[ent[i].slot].asked = true;
			words += ent[i].n_new;
			room += ent[i].k;
			n_hid += ent[i].hidden;
		}
	}
	if (st == SPECD_OK && (n_hid != r->n_hidden || n_hid != s->n_hidden)) {
		snprintf(msg, cap, "a batch of %u sequences with %u hidden rows; the request "
			 "says %u of size %u, and this rank's drafter takes %s", n, n_hid,
			 r->n_hidden, r->dim, s->dim ? "them" : "none");
		st = SPECD_PROTO;
	}
	if (st == SPECD_OK && (words != r->n_new || room != r->k)) {
		snprintf(msg, cap, "a batch of %u sequences: %llu words and room for %llu tokens; "
			 "the request says %u and %u", n, (unsigned long long)words,
			 (unsigned long long)room, r->n_new, r->k);
		st = SPECD_PROTO;
	}
	return st;
}

/* RD_PROPOSE_BATCH: every sequence's new tokens in, one drafter pass for all, one
 * reply with every proposal, then the q rows of those that sample. Any sequence that
 * cannot be proposed for fails the batch with its reason, as its single propose
 * would (the engine's step fails for all its jobs either way). */
static void on_propose_batch(struct server *s)
{
	const struct rd_req *r = &s->req;
	const struct rd_batch_seq *ent = (const struct rd_batch_seq *)(const void *)s->body;
	char msg[RD_MSG_BYTES];
	struct specd_error err;
	enum specd_status st;

	if (!take_body(s) || !s->d) {
		snprintf(msg, sizeof(msg), "%s", s->d ? "a batch longer than any the drafter "
			 "can take" : "a proposal asked for before any drafter was made");
		LOG_WARN("malformed batch from the leader: %s", msg);
		reply_error(s, SPECD_PROTO, msg);
		return;
	}
	if ((st = batch_check(s, msg, sizeof(msg))) != SPECD_OK) {
		LOG_WARN("malformed batch from the leader: %s", msg);
		reply_error(s, st, msg);
		return;
	}
	if (!use_method(s, msg, sizeof(msg))) {
		reply_error(s, SPECD_INVAL, msg);
		return;
	}
	const int32_t *tok = s->body + r->n_seqs * RD_BATCH_SEQ_WORDS;
	for (uint32_t i = 0; i < r->n_seqs; tok += ent[i++].n_new) {
		struct srv_slot *sl = &s->slots[ent[i].slot];
		if (!ent[i].n_new)
			continue;
		if (ent[i].n_total != (uint64_t)sl->n + ent[i].n_new ||
		    ent[i].n_total > s->cap - (s->k_srv + 1)) {
			snprintf(msg, sizeof(msg), "slot %u: out of step with the leader (%u + %u "
				 "tokens, the leader says %u; room for %u)", ent[i].slot, sl->n,
				 ent[i].n_new, ent[i].n_total, s->cap - (s->k_srv + 1));
			slot_fail(sl, SPECD_PROTO, msg);
			continue;
		}
		memcpy(sl->hist + sl->n, tok, ent[i].n_new * sizeof(int32_t));
		sl->n = ent[i].n_total;
	}
	for (uint32_t i = 0, h = 0; i < r->n_seqs; i++) {
		if (!ask_ok(s, ent[i].slot, ent[i].n_total, ent[i].k, &st)) {
			reply_error(s, st, s->slots[ent[i].slot].msg);
			return;
		}
		s->asks[i] = (struct srv_ask){
			.slot = ent[i].slot, .k = ent[i].k,
			.hidden = ent[i].hidden ? s->hid + (size_t)h * s->dim : NULL,
			.n_hidden = ent[i].hidden,
		};
		h += ent[i].hidden;
	}
	specd_error_clear(&err);
	if ((st = draft_asks(s, r->n_seqs, &err)) != SPECD_OK) {
		reply_error(s, st, err.msg);
		return;
	}
	struct rd_rep *head = (struct rd_rep *)(void *)s->rbuf;
	struct rd_batch_prop *bp = (struct rd_batch_prop *)(void *)(head + 1);
	int32_t *out = (int32_t *)(void *)(bp + r->n_seqs), *par = out + r->k;
	memset(head, 0, sizeof(*head));
	head->status = SPECD_OK;
	head->n = r->n_seqs;
	for (uint32_t i = 0, at = 0; i < r->n_seqs; at += s->asks[i++].k) {
		const struct srv_ask *a = &s->asks[i];
		const struct draft_proposal *prop = &s->slots[a->slot].prop;
		bool q = !a->from_spec && !prop->q_onehot && a->n_sent > 0;
		bool tree = !a->from_spec && prop->tree;
		bp[i] = (struct rd_batch_prop){
			.n = a->n_sent, .q_rows = q ? a->n_sent : 0,
			.flags = (a->from_spec ? RD_REP_PIPELINED : 0) | (tree ? RD_REP_TREE : 0),
		};
		memcpy(out + at, a->tok, a->n_sent * sizeof(int32_t));
		if (tree)
			memcpy(par + at, prop->parent, a->n_sent * sizeof(int32_t));
	}
	size_t bytes = sizeof(*head) + r->n_seqs * sizeof(*bp) +
		       2 * (size_t)r->k * sizeof(int32_t);
	st = par_comm_send(s->link->comm, s->rbuf, bytes, RD_LEADER, RD_TAG_REPLY, &err);
	for (uint32_t i = 0; i < r->n_seqs && st == SPECD_OK; i++)
		if (bp[i].q_rows)
			st = send_q(s, s->slots[s->asks[i].slot].prop.q, bp[i].q_rows, &err);
	if (st != SPECD_OK) {
		LOG_WARN("cannot answer the leader (it gave up on this rank?): %s", err.msg);
		return;
	}
	draft_ahead(s, r->n_seqs);
	warm_held(s, r->n_seqs);
}

enum specd_status draft_serve(struct draft_link *link, const struct draft_server_config *sc,
			      struct specd_error *err)
{
	struct server s = {.link = link, .sc = sc};
	enum specd_status first = SPECD_OK, st;
	struct specd_error e;
	char first_msg[sizeof(e.msg)] = "";
	size_t hello_bytes;

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
		if (s.req.op == RD_PROPOSE || s.req.op == RD_PROPOSE_BATCH)
			take_hidden(&s);
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
			s.rep.version = RD_VERSION;
			s.rep.req_bytes = sizeof(struct rd_req);
			s.rep.rep_bytes = sizeof(struct rd_rep);
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
			/* A leader of another layout gets no more than its answer holds:
			 * MPI would refuse the refusal as too long (and Open MPI 4.1 write
			 * it past the leader's buffer first). */
			hello_bytes = s.req.rep_bytes;
			if (!hello_bytes || hello_bytes > sizeof(s.rep))
				hello_bytes = sizeof(s.rep);
			reply(&s, hello_bytes, NULL, 0);
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
		case RD_PROPOSE_BATCH:
			on_propose_batch(&s);
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
