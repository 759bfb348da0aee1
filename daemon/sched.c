/* The compute thread's loop: commands in, engine steps, replies out; see sched.h.
 * Allocation happens per job (its prompt ids, its text) and per reply frame, never
 * inside the engine's step. */
#include "sched.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/version.h"
#include "drafters/engine.h"
#include "model/chat.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "request.h"
#include "server.h"
#include "textstream.h"

/* How long the loop sleeps waiting for work when no job runs: it bounds how late a
 * signal is noticed, and costs nothing while idle. */
#define SCHED_IDLE_WAIT_S 0.05

struct sjob {
	bool active;
	/* Not FINISH_UNSPECIFIED: the job ends at the next step with this reason (a
	 * Cancel, its client gone, a forced stop). */
	Specd__V1__FinishReason end_now;
	uint64_t conn_id, call_id;
	char request_id[REQ_MAX_ID_BYTES + 1];
	struct draft_job *dj;   /* the engine's job on this slot, made once */
	struct textstream text;
	uint32_t n_prompt;
	uint32_t sent;          /* output tokens already posted */
	uint64_t accepted_sent; /* metrics->accepted at the last post */
	int32_t prev;           /* the last token, for tok_token_text */
	uint64_t seed;
	double t_arrived; /* the call was read: time to first token counts the queue */
	double t_start;   /* it took its slot: tokens/s counts from here */
	double t_first;
};

struct sched {
	struct sched_config cfg;
	struct sjob *jobs;            /* (n_slots) */
	struct draft_job **step_jobs; /* (n_slots) scratch for draft_engine_step */
	struct adapt *adapt;          /* the online selector */
	struct mbox_item *queue_head, *queue_tail; /* Generate commands waiting for a slot */
	uint32_t n_queued;
	bool draining;
	bool stop_asked; /* a signal asked for a drain already */
	bool stop_now;   /* asked twice: the running jobs end at their next step, the queued
			  * ones at once, and none is admitted from then on */
	double t_created;
	bool chat_ok;       /* the model has a ChatML template: chat requests are served */
	char *chat_system;  /* its default system prompt; NULL: it has none */
	const char *chat_why; /* why chat is not available, when !chat_ok */

	/* What Status reports, written by the compute thread under the lock. */
	pthread_mutex_t lock;
	uint32_t st_running, st_queued;
	uint64_t st_tokens, st_jobs_done;
	uint64_t st_drafted, st_accepted, st_steps, st_emitted;
	double st_decode_s, st_draft_s, st_verify_s;
	struct adapt_report st_adapt;
};

enum specd_status sched_create(const struct sched_config *cfg, struct sched **out,
			       struct specd_error *err)
{
	struct sched *s = specd_calloc(1, sizeof(*s));
	if (!s)
		return specd_errorf(err, SPECD_NOMEM, "scheduler: out of memory");
	s->cfg = *cfg;
	s->t_created = specd_now();
	pthread_mutex_init(&s->lock, NULL);
	s->jobs = specd_calloc(cfg->n_slots, sizeof(*s->jobs));
	s->step_jobs = specd_calloc(cfg->n_slots, sizeof(*s->step_jobs));
	if (!s->jobs || !s->step_jobs) {
		sched_destroy(s);
		return specd_errorf(err, SPECD_NOMEM, "scheduler: out of memory");
	}
	struct adapt_config ac = cfg->adapt;
	ac.n_slots = cfg->n_slots;
	enum specd_status ast = adapt_create(&ac, &s->adapt, err);
	if (ast != SPECD_OK) {
		sched_destroy(s);
		return ast;
	}
	adapt_attach(s->adapt, cfg->engine);
	adapt_report(s->adapt, &s->st_adapt);
	if (!s->st_adapt.active)
		LOG_INFO("online selector off: %s", s->st_adapt.why_off);
	/* Chat requests need the model's ChatML template and its default system prompt. */
	struct specd_error cerr;
	s->chat_ok = cfg->file && chat_default_system(cfg->file, &s->chat_system, &cerr) ==
					  SPECD_OK;
	if (!s->chat_ok)
		s->chat_why = "this model has no ChatML chat template; send prompt";
	for (uint32_t i = 0; i < cfg->n_slots; i++) {
		enum specd_status st = draft_job_create(cfg->engine, i, &s->jobs[i].dj, err);
		if (st != SPECD_OK) {
			sched_destroy(s);
			return st;
		}
	}
	*out = s;
	return SPECD_OK;
}

void sched_destroy(struct sched *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; s->jobs && i < s->cfg.n_slots; i++) {
		draft_job_destroy(s->jobs[i].dj);
		if (s->jobs[i].active)
			textstream_fini(&s->jobs[i].text);
	}
	while (s->queue_head) {
		struct mbox_item *it = s->queue_head;
		s->queue_head = it->next;
		srv_cmd_free((struct srv_cmd *)it);
	}
	adapt_destroy(s->adapt);
	pthread_mutex_destroy(&s->lock);
	specd_free(s->chat_system);
	specd_free(s->jobs);
	specd_free(s->step_jobs);
	specd_free(s);
}

/* ---- replies ---- */

static void post(struct sched *s, uint64_t conn_id, uint64_t call_id, Specd__V1__Method m,
		 Specd__V1__Code code, const char *msg, const ProtobufCMessage *payload, bool end)
{
	struct srv_reply *r = srv_reply_new(conn_id, call_id, m, code, msg, payload, end);
	if (!r) {
		/* Without memory for even the reply, the call's end cannot be told; the
		 * server's count of open calls would drift, so say it loudly. */
		LOG_ERROR("out of memory for a reply to call %llu", (unsigned long long)call_id);
		return;
	}
	srv_post(s->cfg.srv, r);
}

static void post_error(struct sched *s, uint64_t conn_id, uint64_t call_id, Specd__V1__Code code,
		       const char *msg)
{
	Specd__V1__GenerateResponse resp = SPECD__V1__GENERATE_RESPONSE__INIT;
	resp.has_finish_reason = 1;
	resp.finish_reason = SPECD__V1__FINISH_REASON__ERROR;
	post(s, conn_id, call_id, SPECD__V1__METHOD__GENERATE, code, msg, &resp.base, true);
}

/* ---- the queue of waiting Generate calls ---- */

static void queue_push(struct sched *s, struct srv_cmd *c)
{
	c->link.next = NULL;
	if (s->queue_tail)
		s->queue_tail->next = &c->link;
	else
		s->queue_head = &c->link;
	s->queue_tail = &c->link;
	s->n_queued++;
}

/* Takes the queued call of the client (connection) with the fewest running jobs, the
 * oldest among equals: one client's burst cannot hold every slot while others wait. */
static struct srv_cmd *queue_pop_fair(struct sched *s)
{
	struct mbox_item **best = NULL, *prev_of_best = NULL, *prev = NULL;
	uint32_t best_running = UINT32_MAX;
	for (struct mbox_item **pp = &s->queue_head; *pp; prev = *pp, pp = &(*pp)->next) {
		uint64_t conn = ((struct srv_cmd *)*pp)->conn_id;
		uint32_t n = 0;
		for (uint32_t i = 0; i < s->cfg.n_slots; i++)
			n += s->jobs[i].active && s->jobs[i].conn_id == conn;
		if (n < best_running) {
			best_running = n;
			best = pp;
			prev_of_best = prev;
		}
		if (n == 0)
			break;
	}
	if (!best)
		return NULL;
	struct mbox_item *it = *best;
	*best = it->next;
	if (s->queue_tail == it)
		s->queue_tail = prev_of_best;
	s->n_queued--;
	return (struct srv_cmd *)it;
}

/* Removes queued calls that match (conn_id, and call_id unless 0, or request_id; every
 * one when conn_id is 0), each answered as finished for `why`. Returns how many. */
static uint32_t queue_cancel(struct sched *s, uint64_t conn_id, uint64_t call_id,
			     const char *request_id, Specd__V1__FinishReason why)
{
	uint32_t n = 0;
	struct mbox_item **pp = &s->queue_head, *last = NULL;
	while (*pp) {
		struct srv_cmd *c = (struct srv_cmd *)*pp;
		bool match = request_id ? (c->generate->request_id &&
					   strcmp(c->generate->request_id, request_id) == 0)
					: !conn_id || (c->conn_id == conn_id &&
						       (!call_id || c->call_id == call_id));
		if (!match) {
			last = *pp;
			pp = &(*pp)->next;
			continue;
		}
		*pp = (*pp)->next;
		s->n_queued--;
		Specd__V1__GenerateResponse resp = SPECD__V1__GENERATE_RESPONSE__INIT;
		resp.has_finish_reason = 1;
		resp.finish_reason = why;
		post(s, c->conn_id, c->call_id, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK,
		     NULL, &resp.base, true);
		srv_cmd_free(c);
		n++;
	}
	s->queue_tail = last;
	if (!s->queue_head)
		s->queue_tail = NULL;
	return n;
}

/* ---- starting a job ---- */

static uint64_t fresh_seed(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
}

/* The request's prompt as token ids (BOS first when the model wants one). *ids is
 * malloc'd. SPECD_INVAL or SPECD_UNSUPPORTED with a message for the client. */
static enum specd_status prompt_ids(struct sched *s, const Specd__V1__GenerateRequest *r,
				    int32_t **ids, uint32_t *n, struct specd_error *err)
{
	const struct tok *t = s->cfg.tok;
	if (r->n_messages) {
		if (!s->chat_ok)
			return specd_errorf(err, SPECD_UNSUPPORTED, "%s", s->chat_why);
		struct chat_msg *msgs = specd_calloc(r->n_messages, sizeof(*msgs));
		if (!msgs)
			return specd_errorf(err, SPECD_NOMEM, "out of memory");
		for (size_t i = 0; i < r->n_messages; i++) {
			msgs[i].role = r->messages[i]->role;
			msgs[i].content = r->messages[i]->content ? r->messages[i]->content : "";
		}
		size_t cap = chat_format_bound(msgs, r->n_messages, s->chat_system), got = 0;
		int32_t *v = specd_malloc_array(cap ? cap : 1, sizeof(int32_t));
		enum specd_status st = v ? chat_format(t, msgs, r->n_messages, s->chat_system, true,
						       v, cap, &got, err)
					 : specd_errorf(err, SPECD_NOMEM, "out of memory");
		specd_free(msgs);
		if (st != SPECD_OK) {
			specd_free(v);
			return st;
		}
		*ids = v;
		*n = (uint32_t)got;
		return SPECD_OK;
	}
	if (r->n_prompt_tokens) {
		int32_t *v = specd_malloc_array(r->n_prompt_tokens, sizeof(int32_t));
		if (!v)
			return specd_errorf(err, SPECD_NOMEM, "out of memory");
		for (size_t i = 0; i < r->n_prompt_tokens; i++) {
			if (r->prompt_tokens[i] >= (uint32_t)tok_vocab_size(t)) {
				specd_free(v);
				return specd_errorf(err, SPECD_INVAL,
						    "prompt_tokens[%zu] = %u is outside the "
						    "vocabulary (%d)", i, r->prompt_tokens[i],
						    tok_vocab_size(t));
			}
			v[i] = (int32_t)r->prompt_tokens[i];
		}
		*ids = v;
		*n = (uint32_t)r->n_prompt_tokens;
		return SPECD_OK;
	}
	const char *text = r->prompt ? r->prompt : "";
	size_t len = strlen(text);
	bool bos = tok_add_bos(t) && tok_bos(t) >= 0;
	size_t cap = tok_encode_bound(len, bos), got = 0;
	int32_t *v = specd_malloc_array(cap ? cap : 1, sizeof(int32_t));
	if (!v)
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	enum specd_status st = tok_encode(t, text, len, bos, v, cap, &got);
	if (st != SPECD_OK) {
		specd_free(v);
		return specd_errorf(err, st, "cannot tokenize the prompt: %s", specd_status_str(st));
	}
	if (got == 0) {
		specd_free(v);
		return specd_errorf(err, SPECD_INVAL, "the prompt is empty and this model has no "
				    "BOS token to start from");
	}
	*ids = v;
	*n = (uint32_t)got;
	return SPECD_OK;
}

static Specd__V1__Code code_of(enum specd_status st)
{
	switch (st) {
	case SPECD_INVAL: return SPECD__V1__CODE__INVALID_ARGUMENT;
	case SPECD_UNSUPPORTED: return SPECD__V1__CODE__UNIMPLEMENTED;
	case SPECD_NOMEM: return SPECD__V1__CODE__RESOURCE_EXHAUSTED;
	default: return SPECD__V1__CODE__INTERNAL;
	}
}

/* Checks what needs the tokenizer and the context, then starts the engine's job. */
static enum specd_status job_start(struct sched *s, struct sjob *j, const struct srv_cmd *c,
				   struct specd_error *err)
{
	const Specd__V1__GenerateRequest *r = c->generate;
	const int32_t *extra_eos = NULL;
	uint32_t n_extra_eos = tok_end_ids(s->cfg.tok, &extra_eos);
	struct draft_job_params p = {
		.sampling = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
		.eos = tok_eos(s->cfg.tok),
		.extra_eos = extra_eos,
		.n_extra_eos = n_extra_eos,
		.logprobs = r->has_logprobs,
		.defer_prefill = true,
		.top_logprobs = r->has_logprobs ? r->logprobs : 0,
	};
	const Specd__V1__Speculation *over = r->speculation;
	if (over && over->method && strcmp(over->method, "none") != 0 &&
	    strcmp(over->method, s->cfg.method) != 0)
		return specd_errorf(err, SPECD_UNSUPPORTED, "speculation.method %s: this cluster "
				    "runs %s, so a request may ask for %s or none", over->method,
				    s->cfg.method, s->cfg.method);
	if (over && over->has_spec_tokens && over->spec_tokens > s->cfg.spec_tokens)
		return specd_errorf(err, SPECD_INVAL, "speculation.spec_tokens %u: this cluster "
				    "drafts at most %u per step", over->spec_tokens,
				    s->cfg.spec_tokens);
	p.plain = over && over->method && strcmp(over->method, "none") == 0;
	p.spec_tokens = over && over->has_spec_tokens ? over->spec_tokens : 0;
	int32_t *ids = NULL;
	uint32_t n = 0;
	enum specd_status st = prompt_ids(s, r, &ids, &n, err);
	if (st != SPECD_OK)
		return st;
	uint32_t max_tokens = req_max_tokens(r, &s->cfg.limits);
	uint32_t n_ctx = kv_n_ctx(model_kv(s->cfg.target));
	if (n > s->cfg.limits.prompt_tokens)
		st = specd_errorf(err, SPECD_INVAL, "the prompt is %u tokens, over the limit of %u",
				  n, s->cfg.limits.prompt_tokens);
	else if ((uint64_t)n + max_tokens > n_ctx)
		st = specd_errorf(err, SPECD_INVAL,
				  "the prompt (%u tokens) plus max_tokens (%u) exceeds the context "
				  "of %u tokens", n, max_tokens, n_ctx);
	p.max_tokens = max_tokens;
	const Specd__V1__Sampling *sp = r->sampling;
	if (sp) {
		if (sp->has_temperature)
			p.sampling.temperature = sp->temperature;
		if (sp->has_top_k)
			p.sampling.top_k = (int32_t)sp->top_k;
		if (sp->has_top_p)
			p.sampling.top_p = sp->top_p;
		if (sp->has_min_p)
			p.sampling.min_p = sp->min_p;
	}
	p.sampling.seed = sp && sp->has_seed ? sp->seed : fresh_seed();
	if (st == SPECD_OK)
		st = draft_job_start(j->dj, ids, n, &p, err);
	if (st == SPECD_OK)
		adapt_job_start(s->adapt, (uint32_t)(j - s->jobs));
	int32_t last = ids[n - 1];
	specd_free(ids);
	if (st != SPECD_OK)
		return st;
	const char *const *stops = (const char *const *)r->stop;
	if ((st = textstream_init(&j->text, stops, r->n_stop)) != SPECD_OK)
		return specd_errorf(err, st, "out of memory");
	j->active = true;
	j->end_now = SPECD__V1__FINISH_REASON__FINISH_UNSPECIFIED;
	j->conn_id = c->conn_id;
	j->call_id = c->call_id;
	snprintf(j->request_id, sizeof(j->request_id), "%s", r->request_id ? r->request_id : "");
	j->n_prompt = n;
	j->sent = 0;
	j->accepted_sent = 0;
	j->prev = last; /* the first output token's text follows the prompt's last */
	j->seed = p.sampling.seed;
	j->t_start = specd_now();
	j->t_arrived = c->t_arrived > 0 && c->t_arrived <= j->t_start ? c->t_arrived : j->t_start;
	j->t_first = 0;
	return SPECD_OK;
}

/* ---- finishing and stepping jobs ---- */

static Specd__V1__FinishReason finish_of(enum draft_stop st)
{
	switch (st) {
	case DRAFT_STOP_EOS: return SPECD__V1__FINISH_REASON__EOS;
	case DRAFT_STOP_MAX_TOKENS:
	case DRAFT_STOP_CONTEXT: return SPECD__V1__FINISH_REASON__LENGTH;
	case DRAFT_STOP_NONE: break;
	}
	return SPECD__V1__FINISH_REASON__FINISH_UNSPECIFIED;
}

/* The K a job reports: its own, or, with the online selector on, the cluster's K in
 * force now when that is lower (the stack is sized for the largest K; what the job may
 * draft is the adaptive bound). */
static uint32_t bound_k(const struct sched *s, uint32_t k)
{
	struct adapt_report ar;
	adapt_report(s->adapt, &ar);
	return ar.active && ar.k < k ? ar.k : k;
}

/* The method drafting now: the start-up one, or the online selector's choice. */
static const char *method_now(const struct sched *s)
{
	struct adapt_report ar;
	adapt_report(s->adapt, &ar);
	return ar.active ? draft_method_name(ar.method) : s->cfg.method;
}

/* Posts the job's last reply (what text is left, the finish reason, its stats) and
 * frees its slot. */
static void job_finish(struct sched *s, struct sjob *j, Specd__V1__FinishReason why)
{
	const struct draft_metrics *m = draft_job_metrics(j->dj);
	Specd__V1__Stats st = SPECD__V1__STATS__INIT;
	st.has_prompt_tokens = st.has_generated_tokens = st.has_spec_tokens = 1;
	st.prompt_tokens = j->n_prompt;
	st.generated_tokens = j->sent;
	st.spec_tokens = bound_k(s, draft_job_spec_tokens(j->dj));
	st.method = (char *)(uintptr_t)(st.spec_tokens ? method_now(s) : "none");
	st.has_drafted = st.has_accepted = st.has_mean_accepted_length = 1;
	st.drafted = m->drafted;
	st.accepted = m->accepted;
	st.mean_accepted_length = draft_metrics_mean_accept_len(m);
	double per_pos[DRAFT_MAX_TOKENS];
	uint32_t k = m->k < DRAFT_MAX_TOKENS ? m->k : DRAFT_MAX_TOKENS;
	for (uint32_t i = 0; i < k; i++)
		per_pos[i] = draft_metrics_position_rate(m, i + 1);
	st.n_acceptance_per_position = k;
	st.acceptance_per_position = per_pos;
	double now = specd_now();
	st.has_tokens_per_second = st.has_time_to_first_token_s = 1;
	st.tokens_per_second = now > j->t_start ? j->sent / (now - j->t_start) : 0;
	st.time_to_first_token_s = j->t_first ? j->t_first - j->t_arrived : 0;
	st.has_draft_seconds = st.has_verify_seconds = st.has_seed = 1;
	st.draft_seconds = m->t_draft;
	st.verify_seconds = m->t_verify;
	st.seed = j->seed;

	Specd__V1__GenerateResponse resp = SPECD__V1__GENERATE_RESPONSE__INIT;
	size_t len = 0;
	if (why != SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT &&
	    textstream_take(&j->text, true, &len) == SPECD_OK && len)
		resp.text = (char *)j->text.out.data;
	resp.has_finish_reason = 1;
	resp.finish_reason = why;
	resp.stats = &st;
	post(s, j->conn_id, j->call_id, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK, NULL,
	     &resp.base, true);

	pthread_mutex_lock(&s->lock);
	s->st_tokens += j->sent;
	s->st_jobs_done++;
	s->st_drafted += m->drafted;
	s->st_accepted += m->accepted;
	s->st_steps += m->steps;
	s->st_emitted += m->emitted;
	s->st_decode_s += m->t_decode;
	s->st_draft_s += m->t_draft;
	s->st_verify_s += m->t_verify;
	pthread_mutex_unlock(&s->lock);

	log_set_request(0);
	LOG_INFO("job %s (call %llu): %u prompt + %u generated tokens, %s, %.1f tokens/s, "
		 "%.2f tokens/step", j->request_id[0] ? j->request_id : "-",
		 (unsigned long long)j->call_id, j->n_prompt, j->sent,
		 protobuf_c_enum_descriptor_get_value(&specd__v1__finish_reason__descriptor, why)
			 ->name, st.tokens_per_second, st.mean_accepted_length);
	textstream_fini(&j->text);
	j->active = false;
}

/* Posts what one step produced: its new tokens, their text, the drafts accepted. Ends
 * the job when the engine stopped it or a stop string matched. */
static void job_emit(struct sched *s, struct sjob *j)
{
	uint32_t n_out = 0;
	const int32_t *out = draft_job_output(j->dj, &n_out);
	const struct draft_metrics *m = draft_job_metrics(j->dj);
	/* A step may bring several tokens; the one whose text completes a stop string is
	 * the last sent, so what a client gets does not depend on the method or K. */
	for (uint32_t i = j->sent; i < n_out && !j->text.stopped; i++) {
		const char *piece = NULL;
		size_t plen = 0;
		if (tok_token_text(s->cfg.tok, j->prev, out[i], &piece, &plen) == SPECD_OK)
			textstream_push(&j->text, piece, plen);
		j->prev = out[i];
		if (textstream_stop_pending(&j->text))
			n_out = i + 1;
	}
	uint32_t fresh = n_out - j->sent;
	size_t len = 0;
	bool have_text = textstream_take(&j->text, false, &len) == SPECD_OK && len;
	Specd__V1__GenerateResponse resp = SPECD__V1__GENERATE_RESPONSE__INIT;
	uint32_t tokens[DRAFT_MAX_TOKENS + 1];
	size_t nt = 0;
	for (uint32_t i = j->sent; i < n_out && nt < DRAFT_MAX_TOKENS + 1; i++)
		tokens[nt++] = (uint32_t)out[i];
	resp.n_tokens = nt;
	resp.tokens = tokens;
	/* Each token's log-probabilities point into the job's table: nothing to free. */
	uint32_t stride = 0;
	const struct sampler_logprob *lp = draft_job_logprobs(j->dj, &stride);
	Specd__V1__Logprobs lps[DRAFT_MAX_TOKENS + 1], *lpp[DRAFT_MAX_TOKENS + 1];
	Specd__V1__TokenLogprob tops[(DRAFT_MAX_TOKENS + 1) * SAMPLER_MAX_TOP_LOGPROBS];
	Specd__V1__TokenLogprob *topp[(DRAFT_MAX_TOKENS + 1) * SAMPLER_MAX_TOP_LOGPROBS];
	if (lp) {
		for (size_t i = 0; i < nt; i++) {
			const struct sampler_logprob *row = lp + (size_t)(j->sent + i) * stride;
			size_t base = i * SAMPLER_MAX_TOP_LOGPROBS, n_top = 0;
			specd__v1__logprobs__init(&lps[i]);
			lps[i].has_logprob = 1;
			lps[i].logprob = row[0].logprob;
			for (uint32_t t = 1; t < stride && row[t].token >= 0; t++, n_top++) {
				Specd__V1__TokenLogprob *tl = &tops[base + n_top];
				specd__v1__token_logprob__init(tl);
				tl->has_token = tl->has_logprob = 1;
				tl->token = (uint32_t)row[t].token;
				tl->logprob = row[t].logprob;
				topp[base + n_top] = tl;
			}
			lps[i].n_top = n_top;
			lps[i].top = topp + base;
			lpp[i] = &lps[i];
		}
		resp.n_logprobs = nt;
		resp.logprobs = lpp;
	}
	if (have_text)
		resp.text = (char *)j->text.out.data;
	/* Drafted tokens come before the step's bonus: of nt tokens sent, at most nt were
	 * drafts (fewer after a stop string cut the step). */
	uint64_t accepted = m->accepted - j->accepted_sent;
	resp.has_accepted = 1;
	resp.accepted = (uint32_t)(accepted < nt ? accepted : nt);
	j->accepted_sent = m->accepted;
	j->sent = n_out;
	if (fresh && !j->t_first)
		j->t_first = specd_now();
	if (fresh || have_text)
		post(s, j->conn_id, j->call_id, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK,
		     NULL, &resp.base, false);
	if (j->text.stopped)
		job_finish(s, j, SPECD__V1__FINISH_REASON__STOP);
	else if (draft_job_stop(j->dj) != DRAFT_STOP_NONE)
		job_finish(s, j, finish_of(draft_job_stop(j->dj)));
}

/* Moves queued calls into free slots. */
static void admit(struct sched *s)
{
	for (uint32_t i = 0; i < s->cfg.n_slots && s->queue_head; i++) {
		struct sjob *j = &s->jobs[i];
		if (j->active)
			continue;
		struct srv_cmd *c = queue_pop_fair(s);
		struct specd_error err;
		specd_error_clear(&err);
		enum specd_status st = job_start(s, j, c, &err);
		if (st != SPECD_OK) {
			LOG_INFO("call %llu refused: %s", (unsigned long long)c->call_id, err.msg);
			post_error(s, c->conn_id, c->call_id, code_of(st), err.msg);
		}
		srv_cmd_free(c);
	}
}

/* One engine step over every running job. */
static void step(struct sched *s)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->cfg.n_slots; i++) {
		struct sjob *j = &s->jobs[i];
		if (!j->active)
			continue;
		if (j->end_now) {
			job_finish(s, j, j->end_now);
			continue;
		}
		s->step_jobs[n++] = j->dj;
	}
	if (n == 0)
		return;
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = draft_engine_step(s->cfg.engine, s->step_jobs, n, &err);
	for (uint32_t i = 0; i < s->cfg.n_slots; i++) {
		struct sjob *j = &s->jobs[i];
		if (!j->active)
			continue;
		if (st == SPECD_OK) {
			uint32_t drafted, kept;
			if (draft_job_last_step(j->dj, &drafted, &kept))
				adapt_observe(s->adapt, i, drafted, kept);
			job_emit(s, j);
			continue;
		}
		/* The engine's state is undefined after a failed step: every job it ran
		 * ends with the error, and their slots start afresh. */
		LOG_ERROR("engine step failed: %s", err.msg);
		post_error(s, j->conn_id, j->call_id, SPECD__V1__CODE__INTERNAL, err.msg);
		textstream_fini(&j->text);
		j->active = false;
	}
	if (st == SPECD_OK)
		adapt_step_done(s->adapt);
}

/* ---- commands ---- */

static void handle_cancel(struct sched *s, struct srv_cmd *c)
{
	const Specd__V1__CancelRequest *r = c->cancel;
	const char *rid = r->request_id && r->request_id[0] ? r->request_id : NULL;
	uint64_t call = r->has_call_id ? r->call_id : 0;
	uint32_t n = 0;
	if (rid || call) {
		n += queue_cancel(s, c->conn_id, call, rid,
				  SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT);
		for (uint32_t i = 0; i < s->cfg.n_slots; i++) {
			struct sjob *j = &s->jobs[i];
			bool match = rid ? strcmp(j->request_id, rid) == 0
					 : j->conn_id == c->conn_id && j->call_id == call;
			if (j->active && !j->end_now && match) {
				j->end_now = SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT;
				n++;
			}
		}
	}
	Specd__V1__CancelResponse resp = SPECD__V1__CANCEL_RESPONSE__INIT;
	resp.has_cancelled = 1;
	resp.cancelled = n;
	if (!rid && !call)
		post(s, c->conn_id, c->call_id, SPECD__V1__METHOD__CANCEL,
		     SPECD__V1__CODE__INVALID_ARGUMENT, "give call_id or request_id", NULL, true);
	else if (n == 0)
		post(s, c->conn_id, c->call_id, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__NOT_FOUND,
		     "no such running or queued job", &resp.base, true);
	else
		post(s, c->conn_id, c->call_id, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__OK, NULL,
		     &resp.base, true);
}

static uint32_t running(const struct sched *s)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->cfg.n_slots; i++)
		n += s->jobs[i].active;
	return n;
}

static void handle(struct sched *s, struct srv_cmd *c)
{
	switch (c->kind) {
	case SRV_CMD_GENERATE:
		queue_push(s, c);
		return; /* the queue owns it now */
	case SRV_CMD_CANCEL:
		handle_cancel(s, c);
		break;
	case SRV_CMD_CONN_CLOSED:
		queue_cancel(s, c->conn_id, 0, NULL, SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT);
		for (uint32_t i = 0; i < s->cfg.n_slots; i++) {
			struct sjob *j = &s->jobs[i];
			if (j->active && j->conn_id == c->conn_id && !j->end_now)
				j->end_now = SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT;
		}
		break;
	case SRV_CMD_DRAIN:
		/* Every call the loop passed on came before this command, so the queue
		 * already holds each job the drain must finish. */
		LOG_INFO("stopping: no new jobs; finishing %u running and %u queued",
			 running(s), s->n_queued);
		s->draining = true;
		break;
	}
	srv_cmd_free(c);
}

enum specd_status sched_run(struct sched *s, sched_stop_fn *stop, void *user)
{
	struct mbox *in = srv_commands(s->cfg.srv);
	for (;;) {
		bool idle = running(s) == 0 && !s->queue_head;
		struct mbox_item *it = idle ? mbox_wait(in, SCHED_IDLE_WAIT_S) : mbox_take(in);
		while (it) {
			handle(s, (struct srv_cmd *)it);
			it = mbox_take(in);
		}
		/* A signal drains through the loop, as a Shutdown call does: stopping here
		 * could leave behind a Generate the loop is passing on right now. The loop
		 * answers with SRV_CMD_DRAIN behind it. A second signal (or one during a
		 * Shutdown's drain) does not wait for max_tokens: every job ends now. */
		if (stop && stop(user)) {
			if ((s->stop_asked || s->draining) && !s->stop_now) {
				LOG_WARN("stopping now: ending %u running and %u queued job(s) "
					 "unfinished", running(s), s->n_queued);
				s->stop_now = true;
				for (uint32_t i = 0; i < s->cfg.n_slots; i++)
					if (s->jobs[i].active && !s->jobs[i].end_now)
						s->jobs[i].end_now =
							SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN;
			}
			if (!s->stop_asked && !s->draining)
				srv_begin_drain(s->cfg.srv);
			s->stop_asked = true;
		}
		if (s->stop_now && s->n_queued) /* also calls passed on before the drain */
			queue_cancel(s, 0, 0, NULL, SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN);
		admit(s);
		step(s);
		struct adapt_report ar;
		adapt_report(s->adapt, &ar);
		pthread_mutex_lock(&s->lock);
		s->st_running = running(s);
		s->st_queued = s->n_queued;
		s->st_adapt = ar;
		pthread_mutex_unlock(&s->lock);
		if (s->draining && running(s) == 0 && !s->queue_head)
			return SPECD_OK;
	}
}

/* ---- Status ---- */

/* Storage for the Decision and Links of a StatusResponse, on the loop thread's stack. */
struct status_selection {
	Specd__V1__Candidate cand[SEL_MAX_CANDIDATES];
	Specd__V1__Candidate *cand_ptrs[SEL_MAX_CANDIDATES];
	Specd__V1__DrafterCalibration cal[DRAFT_METHOD_COUNT];
	Specd__V1__DrafterCalibration *cal_ptrs[DRAFT_METHOD_COUNT];
	char *reasons[SEL_MAX_REASONS];
	double verify[SEL_K_MAX + 1];
	Specd__V1__Link links[2];
	Specd__V1__Link *link_ptrs[2];
	uint64_t link_bytes[2][PAR_PROBE_SIZES];
	double link_seconds[2][PAR_PROBE_SIZES];
};

/* Fills d (and r's links) from the cluster's selector record; nothing without one. */
static void status_selection_fill(struct status_selection *ss, const struct cluster *cl,
				  Specd__V1__Decision *d, Specd__V1__StatusResponse *r)
{
	if (!cl)
		return;
	const struct sel_decision *sd = &cl->decision;
	const struct sel_inputs *in = &cl->sel_in;
	d->method = (char *)(uintptr_t)draft_method_name(sd->method);
	d->transport = (char *)(uintptr_t)sel_transport_name(sd->transport);
	d->has_spec_tokens = d->has_measured = 1;
	d->spec_tokens = sd->k;
	d->measured = sd->measured;
	d->has_predicted_tokens_per_second = d->has_plain_tokens_per_second =
		d->has_predicted_speedup = sd->measured;
	d->predicted_tokens_per_second = sd->tokens_per_s;
	d->plain_tokens_per_second = sd->plain_tokens_per_s;
	d->predicted_speedup = sd->speedup;
	for (uint32_t i = 0; i < sd->n_reasons && i < SEL_MAX_REASONS; i++)
		ss->reasons[i] = (char *)(uintptr_t)sd->reasons[i];
	d->n_reasons = sd->n_reasons;
	d->reasons = ss->reasons;
	for (uint32_t i = 0; i < sd->n_candidates && i < SEL_MAX_CANDIDATES; i++) {
		const struct sel_candidate *c = &sd->candidates[i];
		Specd__V1__Candidate *o = &ss->cand[i];
		specd__v1__candidate__init(o);
		o->method = (char *)(uintptr_t)draft_method_name(c->method);
		o->has_spec_tokens = 1;
		o->spec_tokens = c->k;
		o->transport = (char *)(uintptr_t)sel_transport_name(c->transport);
		o->excluded_because = (char *)(uintptr_t)c->excluded;
		bool predicted = sd->measured && !c->excluded[0];
		o->has_predicted_tokens_per_second = o->has_predicted_speedup = predicted;
		o->predicted_tokens_per_second = c->tokens_per_s;
		o->predicted_speedup = c->speedup;
		o->has_acceptance = c->method != DRAFT_METHOD_NONE && !c->excluded[0];
		o->acceptance = c->acceptance;
		ss->cand_ptrs[i] = o;
	}
	d->n_candidates = sd->n_candidates;
	d->candidates = ss->cand_ptrs;
	if (in->calibrated) {
		for (uint32_t n = 1; n <= in->k_max + 1 && n <= SEL_K_MAX + 1; n++)
			ss->verify[n - 1] = sel_verify_time(in, n);
		d->n_verify_seconds = in->k_max + 1;
		d->verify_seconds = ss->verify;
	}
	size_t nc = 0;
	for (int m = DRAFT_METHOD_NGRAM; in->calibrated && m < DRAFT_METHOD_COUNT; m++) {
		const struct sel_method_in *mi = &in->methods[m];
		if (!mi->configured || !mi->built)
			continue;
		Specd__V1__DrafterCalibration *o = &ss->cal[nc];
		specd__v1__drafter_calibration__init(o);
		o->method = (char *)(uintptr_t)draft_method_name((enum draft_method)m);
		o->has_measured = o->has_draft_seconds_fixed = o->has_draft_seconds_per_token = 1;
		o->has_memory_bytes = 1;
		o->measured = mi->timed;
		o->draft_seconds_fixed = mi->t_draft_fixed_s;
		o->draft_seconds_per_token = mi->t_draft_token_s;
		o->memory_bytes = mi->memory_bytes;
		o->incompatible = mi->incompatible[0] ? (char *)(uintptr_t)mi->incompatible : NULL;
		ss->cal_ptrs[nc++] = o;
	}
	d->n_drafters = nc;
	d->drafters = ss->cal_ptrs;

	const struct par_link_probe *probes[2] = {&cl->draft_probe, &cl->tp_probe};
	static const char *const names[2] = {"leader<->draft", "tp allreduce"};
	size_t nl = 0;
	for (int i = 0; i < 2; i++) {
		const struct par_link_probe *p = probes[i];
		if (!p->measured)
			continue;
		Specd__V1__Link *o = &ss->links[nl];
		specd__v1__link__init(o);
		o->name = (char *)(uintptr_t)names[i];
		o->has_latency_s = o->has_bandwidth_bytes_per_s = 1;
		o->latency_s = p->latency_s;
		o->bandwidth_bytes_per_s = p->bandwidth;
		for (uint32_t j = 0; j < p->n && j < PAR_PROBE_SIZES; j++) {
			ss->link_bytes[nl][j] = p->bytes[j];
			ss->link_seconds[nl][j] = p->seconds[j];
		}
		o->n_sample_bytes = o->n_sample_seconds = p->n;
		o->sample_bytes = ss->link_bytes[nl];
		o->sample_seconds = ss->link_seconds[nl];
		ss->link_ptrs[nl++] = o;
	}
	r->n_links = nl;
	r->links = ss->link_ptrs;
}

enum specd_status sched_status(void *self, struct specd_buf *out)
{
	struct sched *s = self;
	const struct cluster *cl = s->cfg.cluster;
	Specd__V1__StatusResponse r = SPECD__V1__STATUS_RESPONSE__INIT;
	r.cluster = cl ? cl->cfg->name : NULL;
	r.version = (char *)(uintptr_t)SPECD_VERSION;

	int n_ranks = cl && cl->ranks ? cl->world_size : 0;
	Specd__V1__RankStatus *ranks = specd_calloc((size_t)n_ranks + 1, sizeof(*ranks));
	Specd__V1__RankStatus **rank_ptrs = specd_calloc((size_t)n_ranks + 1, sizeof(*rank_ptrs));
	if (!ranks || !rank_ptrs) {
		specd_free(ranks);
		specd_free(rank_ptrs);
		return SPECD_NOMEM;
	}
	for (int i = 0; i < n_ranks; i++) {
		const struct par_rank_info *in = &cl->ranks[i];
		Specd__V1__RankStatus *o = &ranks[i];
		specd__v1__rank_status__init(o);
		o->has_rank = o->has_pid = o->has_host_memory_total = o->has_host_memory_free = 1;
		o->rank = (uint32_t)in->rank;
		o->node = (char *)(uintptr_t)in->node;
		o->pid = in->pid;
		o->role = (char *)(uintptr_t)in->role;
		o->device = (char *)(uintptr_t)in->device;
		o->host_memory_total = in->host_mem_total;
		o->host_memory_free = in->host_mem_free;
		o->has_device_memory_total = o->has_device_memory_free = in->device_mem_total > 0;
		o->device_memory_total = in->device_mem_total;
		o->device_memory_free = in->device_mem_free;
		o->has_resident_weight_bytes = in->resident_weights > 0;
		o->resident_weight_bytes = in->resident_weights;
		rank_ptrs[i] = o;
	}
	r.n_ranks = (size_t)n_ranks;
	r.ranks = rank_ptrs;

	/* The selector's inputs and choice (daemon/leader.c); fixed after start-up, so
	 * read without the lock. Strings point into the cluster. */
	struct status_selection sel;
	Specd__V1__Decision d = SPECD__V1__DECISION__INIT;
	status_selection_fill(&sel, cl, &d, &r);
	if (!cl) {
		d.method = (char *)(uintptr_t)s->cfg.method;
		d.has_spec_tokens = 1;
		d.spec_tokens = s->cfg.spec_tokens;
	}
	r.decision = &d;

	Specd__V1__Stats recent = SPECD__V1__STATS__INIT;
	pthread_mutex_lock(&s->lock);
	r.has_jobs_running = r.has_jobs_queued = r.has_tokens_generated = r.has_uptime_s = 1;
	r.jobs_running = s->st_running;
	r.jobs_queued = s->st_queued;
	r.tokens_generated = s->st_tokens;
	r.uptime_s = specd_now() - s->t_created;
	recent.has_drafted = recent.has_accepted = recent.has_mean_accepted_length = 1;
	recent.has_tokens_per_second = recent.has_draft_seconds = recent.has_verify_seconds = 1;
	recent.drafted = s->st_drafted;
	recent.accepted = s->st_accepted;
	recent.mean_accepted_length = s->st_steps ? (double)s->st_emitted / (double)s->st_steps : 0;
	recent.tokens_per_second = s->st_decode_s > 0 ? (double)s->st_tokens / s->st_decode_s : 0;
	recent.draft_seconds = s->st_draft_s;
	recent.verify_seconds = s->st_verify_s;
	struct adapt_report ar = s->st_adapt;
	pthread_mutex_unlock(&s->lock);
	Specd__V1__Adaptation ad = SPECD__V1__ADAPTATION__INIT;
	char *held[DRAFT_METHOD_COUNT];
	ad.has_active = ad.has_spec_tokens = 1;
	ad.active = ar.active;
	ad.spec_tokens = ar.k;
	ad.method = (char *)(uintptr_t)draft_method_name(ar.method);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
		if (ar.methods & 1u << m)
			held[ad.n_held++] =
				(char *)(uintptr_t)draft_method_name((enum draft_method)m);
	ad.held = held;
	if (!ar.active) {
		ad.why_off = ar.why_off;
	} else {
		ad.has_acceptance = ad.has_evidence = ad.has_predicted_tokens_per_second = 1;
		ad.has_decisions = ad.has_changes = ad.has_probes = 1;
		ad.has_planned_steps = ad.has_lowered = 1;
		ad.acceptance = ar.acceptance;
		ad.evidence = ar.evidence;
		ad.predicted_tokens_per_second = ar.predicted;
		ad.decisions = ar.decisions;
		ad.changes = ar.changes;
		ad.probes = ar.probes;
		ad.planned_steps = ar.planned_steps;
		ad.lowered = ar.lowered;
		ad.last_change = ar.last_change;
	}
	r.adaptation = &ad;
	recent.method = (char *)(uintptr_t)(ar.active ? draft_method_name(ar.method)
						       : s->cfg.method);
	recent.has_spec_tokens = 1;
	recent.spec_tokens = ar.active ? ar.k : s->cfg.spec_tokens;
	r.recent = &recent;

	size_t n = specd__v1__status_response__get_packed_size(&r);
	enum specd_status st = specd_buf_reserve(out, n);
	if (st == SPECD_OK) {
		specd__v1__status_response__pack(&r, out->data + out->len);
		out->len += n;
	}
	specd_free(ranks);
	specd_free(rank_ptrs);
	return st;
}
