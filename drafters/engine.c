/* The speculative step (engine.h): propose, one target forward over every job's
 * [last token, proposal], verify, commit, metrics. Nothing here allocates after
 * draft_engine_create / draft_job_create. */
#include "engine.h"

#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "kernels/kern.h"
#include "model/kv.h"
#include "model/llama.h"

/* The draft sampler's stream: the request's seed, moved to a stream of its own so the
 * verifier's draws never depend on how many the drafter made. */
#define DRAFT_SEED_MIX 0xd1b54a32d192ed03ull

_Static_assert(DRAFT_MAX_TOKENS + 1 <= MODEL_MAX_DRAW_ROWS, "a verify's rows fit one draw");

struct draft_engine {
	struct model *target;
	struct drafter *drafter;
	const struct draft_target_ops *ops; /* NULL: the local model */
	void *ops_user;
	uint32_t k;
	draft_verify_fn *verify;
	uint32_t n_vocab, n_ctx, n_slots;
	uint32_t max_rows;    /* verify tokens per forward */
	uint32_t batch_rows;  /* tokens per forward: verify and deferred prefill together */
	uint32_t *b_tok, *b_slot, *b_pos, *b_out; /* (batch_rows) host */
	int32_t *b_par;       /* (batch_rows) host: parents, for steps with a token tree */
	float *logits;        /* (max_rows, n_vocab) host */
	/* On a device, under the exact verifier, a job that wants no log-probabilities
	 * is verified without its logits rows leaving the device (job_rows_by): a greedy
	 * one from each row's argmax, a sampling one whose drafts are not samples from
	 * tokens drawn there. */
	uint32_t *ids;        /* (max_rows) host: each verify row's argmax */
	struct model_draw *draws;    /* (n_slots) host: one a drawn job */
	float *draw_u;               /* (max_rows) host: by verify row */
	uint32_t *draw_out;
	bool exact;           /* the verifier is draft_verify */
	bool device;          /* the target's logits live in device memory */
	bool want_hidden;     /* the drafter reads the target's final hidden states */
	uint32_t hid_rows;    /* rows a job keeps for it (draft_hidden_rows) */
	uint32_t dim;
	/* (batch_rows, dim) host, when want_hidden: each output's, verify rows first, then
	 * the hidden-only outputs of prompt rows prefilled in the step */
	float *hidden;
	float *work;          /* (2 * n_vocab) host: the verifier's */
	/* One step's drafting, (n_slots) each: the tokens planned per job, and the batched
	 * proposal's sequences, counts, outputs and jobs. */
	uint32_t *p_k, *p_kk, *p_slot;
	struct draft_seq *p_seq;
	struct draft_proposal **p_out;
	struct draft_job **p_job;
	draft_plan_fn *plan; /* NULL: each job drafts what job_plan allows */
	void *plan_user;
};

/* What a job's verdict is reached from: its logits rows on the host, or, on a device,
 * each row's argmax or a token drawn from each row (draft_verify_drawn). */
enum job_rows { JOB_ROWS_LOGITS, JOB_ROWS_IDS, JOB_ROWS_DRAWN };

struct draft_job {
	struct draft_engine *eng;
	uint32_t slot;
	bool started;
	enum draft_stop stop;
	int32_t *tokens;      /* (n_ctx + 1) host: prompt + output */
	uint32_t n_tokens, n_prompt;
	uint32_t n_out;       /* output tokens, after the cut at EOS / max tokens */
	uint32_t max_tokens;
	int32_t eos;
	const int32_t *extra_eos; /* (n_extra_eos) draft_job_params': outlives the job */
	uint32_t n_extra_eos;
	struct sampler *target_s, *draft_s;
	struct draft_proposal prop; /* tokens (k), q (k, n_vocab), parent (k) host */
	int32_t *acc;         /* (k) host: the accepted tokens, in order */
	uint32_t keep[DRAFT_MAX_TOKENS];     /* cache rows of a tree's accepted path */
	uint32_t rows[DRAFT_MAX_TOKENS + 1]; /* the logits row each emitted token was drawn at */
	uint32_t depth;       /* levels of this step's tree proposal */
	/* (hid_rows, dim) host: the target's hidden states at tokens[n - 1 - n_hidden ..
	 * n - 2] that the drafter has not been shown yet (draft_seq.hidden) */
	float *hidden;
	uint32_t n_hidden;
	struct draft_metrics m;
	uint32_t k;           /* drafted per step: 0 (plain) .. the engine's K */
	bool plain;           /* no drafter for this job */
	struct sampler_logprob *lp; /* (n_ctx + 1, lp_stride) host, or NULL */
	uint32_t lp_stride, lp_cap; /* entries per token (0: none wanted); rows allocated */
	uint32_t row0;        /* where this step's verify rows begin in the batch */
	uint32_t n_prefilled; /* prompt tokens in the target's cache (deferred prefill) */
	uint32_t pf_rows;     /* prompt tokens this step prefills */
	uint32_t pf_out;      /* their first hidden-only output, when the drafter keeps any */
	bool in_step;
	enum job_rows rows_by; /* how this step's verdict is reached */
	uint32_t last_drafted, last_accepted; /* the last verify step (a tree: its depth) */
};

const char *draft_stop_name(enum draft_stop s)
{
	switch (s) {
	case DRAFT_STOP_NONE: return "running";
	case DRAFT_STOP_EOS: return "end of sequence";
	case DRAFT_STOP_MAX_TOKENS: return "max tokens";
	case DRAFT_STOP_CONTEXT: return "context full";
	}
	return "?";
}

void draft_engine_destroy(struct draft_engine *e)
{
	if (!e)
		return;
	specd_free(e->b_tok);
	specd_free(e->b_slot);
	specd_free(e->b_pos);
	specd_free(e->b_out);
	specd_free(e->b_par);
	specd_free(e->hidden);
	specd_free(e->ids);
	specd_free(e->draws);
	specd_free(e->draw_u);
	specd_free(e->draw_out);
	specd_free(e->logits);
	specd_free(e->work);
	specd_free(e->p_k);
	specd_free(e->p_kk);
	specd_free(e->p_slot);
	specd_free(e->p_seq);
	specd_free(e->p_out);
	specd_free(e->p_job);
	specd_free(e);
}

enum specd_status draft_engine_create(const struct draft_engine_config *cfg,
				      struct draft_engine **out, struct specd_error *err)
{
	struct draft_engine *e;
	uint32_t k = 0, mb;

	if (!cfg || !cfg->target)
		return specd_errorf(err, SPECD_INVAL, "engine: no target model");
	mb = model_max_batch(cfg->target);
	if (cfg->drafter) {
		k = cfg->spec_tokens;
		if (k < 1 || k > draft_k_max(cfg->drafter))
			return specd_errorf(err, SPECD_INVAL, "engine: %u speculative tokens; the "
					    "drafter takes 1 to %u", k, draft_k_max(cfg->drafter));
		if (k + 1 > mb)
			return specd_errorf(err, SPECD_INVAL, "engine: %u speculative tokens need "
					    "a batch of %u; the target's is %u", k, k + 1, mb);
	}
	if (!(e = specd_calloc(1, sizeof(*e))))
		return specd_errorf(err, SPECD_NOMEM, "engine: out of memory");
	e->target = cfg->target;
	e->ops = cfg->target_ops;
	e->ops_user = cfg->target_user;
	e->drafter = cfg->drafter;
	e->k = k;
	e->verify = cfg->verify ? cfg->verify : draft_verify;
	e->exact = !cfg->verify;
	e->device = !kern_host_memory(model_kern(cfg->target));
	/* A whole target on a device draws its sampling jobs' tokens where the logits
	 * are (plan_rows). */
	if (e->device && e->exact && !e->ops) {
		enum specd_status st = model_reserve_draws(cfg->target, err);
		if (st != SPECD_OK) {
			draft_engine_destroy(e);
			return st;
		}
	}
	e->n_vocab = model_hparams(cfg->target)->n_vocab;
	e->n_ctx = kv_n_ctx(model_kv(cfg->target));
	e->n_slots = kv_n_slots(model_kv(cfg->target));
	uint64_t rows = (uint64_t)e->n_slots * (k + 1);
	e->max_rows = rows < mb ? (uint32_t)rows : mb;
	e->batch_rows = mb;
	e->b_tok = specd_malloc_array(mb, sizeof(uint32_t));
	e->b_slot = specd_malloc_array(mb, sizeof(uint32_t));
	e->b_pos = specd_malloc_array(mb, sizeof(uint32_t));
	e->b_out = specd_malloc_array(mb, sizeof(uint32_t));
	e->b_par = specd_malloc_array(mb, sizeof(int32_t));
	e->hid_rows = cfg->drafter ? draft_hidden_rows(cfg->drafter) : 0;
	e->want_hidden = e->hid_rows > 0;
	e->dim = model_hparams(cfg->target)->dim;
	if (e->want_hidden)
		e->hidden = specd_malloc_array((size_t)mb * e->dim, sizeof(float));
	e->logits = specd_malloc_array((size_t)e->max_rows * e->n_vocab, sizeof(float));
	e->ids = specd_malloc_array(e->max_rows, sizeof(uint32_t));
	e->draws = specd_malloc_array(e->n_slots, sizeof(*e->draws));
	e->draw_u = specd_malloc_array(e->max_rows, sizeof(float));
	e->draw_out = specd_malloc_array(e->max_rows, sizeof(uint32_t));
	e->work = specd_malloc_array(2 * (size_t)e->n_vocab, sizeof(float));
	e->p_k = specd_malloc_array(e->n_slots, sizeof(*e->p_k));
	e->p_kk = specd_malloc_array(e->n_slots, sizeof(*e->p_kk));
	e->p_slot = specd_malloc_array(e->n_slots, sizeof(*e->p_slot));
	e->p_seq = specd_malloc_array(e->n_slots, sizeof(*e->p_seq));
	e->p_out = specd_malloc_array(e->n_slots, sizeof(*e->p_out));
	e->p_job = specd_malloc_array(e->n_slots, sizeof(*e->p_job));
	if (!e->b_tok || !e->b_slot || !e->b_pos || !e->b_out || !e->b_par ||
	    (e->want_hidden && !e->hidden) || !e->logits || !e->ids || !e->work ||
	    !e->draws || !e->draw_u || !e->draw_out ||
	    !e->p_k || !e->p_kk || !e->p_slot || !e->p_seq || !e->p_out || !e->p_job) {
		draft_engine_destroy(e);
		return specd_errorf(err, SPECD_NOMEM, "engine: out of memory for %u verify rows "
				    "of %u logits", rows < mb ? (uint32_t)rows : mb, model_hparams(cfg->target)->n_vocab);
	}
	*out = e;
	return SPECD_OK;
}

void draft_job_destroy(struct draft_job *j)
{
	if (!j)
		return;
	sampler_destroy(j->target_s);
	sampler_destroy(j->draft_s);
	specd_free(j->tokens);
	specd_free(j->prop.tokens);
	specd_free(j->prop.q);
	specd_free(j->prop.parent);
	specd_free(j->acc);
	specd_free(j->hidden);
	specd_free(j->lp);
	specd_free(j);
}

enum specd_status draft_job_create(struct draft_engine *e, uint32_t slot,
				   struct draft_job **out, struct specd_error *err)
{
	struct sampler_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
	struct draft_job *j;

	if (!e || slot >= e->n_slots)
		return specd_errorf(err, SPECD_INVAL, "engine: slot %u of %u", slot,
				    e ? e->n_slots : 0);
	if (!(j = specd_calloc(1, sizeof(*j))))
		return specd_errorf(err, SPECD_NOMEM, "engine: out of memory");
	j->eng = e;
	j->slot = slot;
	j->tokens = specd_malloc_array((size_t)e->n_ctx + 1, sizeof(int32_t));
	if (!j->tokens ||
	    sampler_create((int32_t)e->n_vocab, &sp, &j->target_s, NULL) != SPECD_OK ||
	    sampler_create((int32_t)e->n_vocab, &sp, &j->draft_s, NULL) != SPECD_OK)
		goto nomem;
	if (e->drafter) {
		j->prop.tokens = specd_malloc_array(e->k, sizeof(int32_t));
		j->prop.q = specd_malloc_array((size_t)e->k * e->n_vocab, sizeof(float));
		j->prop.parent = specd_malloc_array(e->k, sizeof(int32_t));
		j->acc = specd_malloc_array(e->k, sizeof(int32_t));
		if (!j->prop.tokens || !j->prop.q || !j->prop.parent || !j->acc)
			goto nomem;
		if (e->want_hidden &&
		    !(j->hidden = specd_malloc_array((size_t)e->hid_rows * e->dim, sizeof(float))))
			goto nomem;
	}
	j->k = e->k;
	j->plain = !e->drafter;
	draft_metrics_init(&j->m, e->k);
	*out = j;
	return SPECD_OK;
nomem:
	draft_job_destroy(j);
	return specd_errorf(err, SPECD_NOMEM, "engine: out of memory for a job of %u tokens",
			    e->n_ctx);
}

static struct draft_seq job_seq(struct draft_job *j)
{
	struct draft_seq s = {
		.slot = j->slot, .tokens = j->tokens, .n_tokens = j->n_tokens,
		.sampler = j->draft_s, .hidden = j->n_hidden ? j->hidden : NULL,
		.n_hidden = j->n_hidden,
	};
	return s;
}

/* The target's forward, truncation and compaction, local or through the caller's ops. */
static enum specd_status target_forward(struct draft_engine *e, const struct model_batch *b,
					struct specd_error *err)
{
	if (e->ops)
		return e->ops->forward(e->ops_user, b, err);
	return model_forward(e->target, b, err);
}

static enum specd_status target_truncate(struct draft_engine *e, uint32_t slot, uint32_t len,
					 struct specd_error *err)
{
	if (e->ops)
		return e->ops->truncate(e->ops_user, slot, len, err);
	enum specd_status st = kv_truncate(model_kv(e->target), slot, len);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "engine: slot %u", slot);
	return SPECD_OK;
}

static enum specd_status target_compact(struct draft_engine *e, uint32_t slot, uint32_t base,
					const uint32_t *rows, uint32_t n, struct specd_error *err)
{
	if (e->ops && !e->ops->compact)
		return specd_errorf(err, SPECD_UNSUPPORTED, "engine: this target cannot keep a "
				    "token tree's path (no compact)");
	if (e->ops)
		return e->ops->compact(e->ops_user, slot, base, rows, n, err);
	enum specd_status st = kv_compact(model_kv(e->target), slot, base, rows, n);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "engine: compacting slot %u", slot);
	return SPECD_OK;
}

/* Target prefill of tokens[0..n) in batches; hidden (n_keep rows of dim floats, or
 * NULL) receives the final hidden states of the last n_keep tokens. */
static enum specd_status prefill(struct draft_engine *e, uint32_t slot, const int32_t *tokens,
				 uint32_t n, float *hidden, uint32_t n_keep,
				 struct specd_error *err)
{
	for (uint32_t s = 0; s < n; s += e->batch_rows) {
		uint32_t c = n - s < e->batch_rows ? n - s : e->batch_rows;
		struct model_batch b = {
			.n_tokens = c, .tokens = e->b_tok, .slots = e->b_slot, .pos = e->b_pos,
			.out_idx = e->b_out,
		};

		for (uint32_t i = 0; i < c; i++) {
			e->b_tok[i] = (uint32_t)tokens[s + i];
			e->b_slot[i] = slot;
			e->b_pos[i] = s + i;
			if (hidden && s + i >= n - n_keep)
				e->b_out[b.n_out++] = i;
		}
		if (b.n_out)
			b.hidden = hidden + (size_t)(s + e->b_out[0] - (n - n_keep)) * e->dim;
		enum specd_status st = target_forward(e, &b, err);
		if (st != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* Room for the job's log-probabilities: one row of lp_stride per output token. */
static enum specd_status job_logprobs_reserve(struct draft_job *j, const struct draft_job_params *p)
{
	uint32_t stride = p->logprobs ? 1 + p->top_logprobs : 0;
	uint32_t rows = p->max_tokens < j->eng->n_ctx ? p->max_tokens : j->eng->n_ctx;

	j->lp_stride = stride;
	if (!stride || (j->lp && (uint64_t)rows * stride <= j->lp_cap))
		return SPECD_OK;
	specd_free(j->lp);
	j->lp_cap = 0;
	if (!(j->lp = specd_malloc_array((size_t)rows * stride + 1, sizeof(*j->lp))))
		return SPECD_NOMEM;
	j->lp_cap = rows * stride + 1;
	return SPECD_OK;
}

enum specd_status draft_job_start(struct draft_job *j, const int32_t *prompt, uint32_t n_prompt,
				  const struct draft_job_params *p, struct specd_error *err)
{
	struct draft_engine *e = j->eng;
	struct sampler_params dsp;
	enum specd_status st;
	double t0 = specd_now();

	j->started = false;
	j->stop = DRAFT_STOP_NONE;
	j->n_out = 0;
	draft_metrics_init(&j->m, e->k);
	if (!p || !prompt || n_prompt < 1)
		return specd_errorf(err, SPECD_INVAL, "engine: an empty prompt");
	if (n_prompt > e->n_ctx)
		return specd_errorf(err, SPECD_INVAL, "engine: a prompt of %u tokens; the slot "
				    "holds %u", n_prompt, e->n_ctx);
	for (uint32_t i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || (uint32_t)prompt[i] >= e->n_vocab)
			return specd_errorf(err, SPECD_INVAL, "engine: prompt token %u is id %d; "
					    "the vocabulary has %u", i, (int)prompt[i], e->n_vocab);
	if (p->spec_tokens > e->k)
		return specd_errorf(err, SPECD_INVAL, "engine: %u speculative tokens for a job; "
				    "this engine drafts at most %u", p->spec_tokens, e->k);
	if (p->logprobs && p->top_logprobs > SAMPLER_MAX_TOP_LOGPROBS)
		return specd_errorf(err, SPECD_INVAL, "engine: %u top log-probabilities, at most %d",
				    p->top_logprobs, SAMPLER_MAX_TOP_LOGPROBS);
	if ((st = job_logprobs_reserve(j, p)) != SPECD_OK)
		return specd_errorf(err, st, "engine: out of memory for log-probabilities");
	j->plain = p->plain || !e->drafter;
	j->k = j->plain ? 0 : p->spec_tokens ? p->spec_tokens : e->k;
	draft_metrics_init(&j->m, j->k);
	dsp = p->sampling;
	dsp.seed ^= DRAFT_SEED_MIX;
	if ((st = sampler_reset(j->target_s, &p->sampling, err)) != SPECD_OK ||
	    (st = sampler_reset(j->draft_s, &dsp, err)) != SPECD_OK)
		return st;
	memcpy(j->tokens, prompt, n_prompt * sizeof(*prompt));
	j->n_tokens = j->n_prompt = n_prompt;
	j->max_tokens = p->max_tokens;
	j->eos = p->eos;
	j->extra_eos = p->n_extra_eos ? p->extra_eos : NULL;
	j->n_extra_eos = j->extra_eos ? p->n_extra_eos : 0;
	j->m.n_prompt = n_prompt;
	if ((st = target_truncate(e, j->slot, 0, err)) != SPECD_OK)
		return st;
	j->n_prefilled = 0;
	j->in_step = false;
	j->last_drafted = j->last_accepted = 0;
	j->n_hidden = 0;
	if (!p->defer_prefill) {
		uint32_t keep = !j->plain && j->hidden ? n_prompt - 1 : 0;
		if (keep > e->hid_rows)
			keep = e->hid_rows;
		if ((st = prefill(e, j->slot, prompt, n_prompt - 1, j->hidden, keep, err)))
			return st;
		j->n_prefilled = n_prompt - 1;
		j->n_hidden = keep;
	}
	if (!j->plain) {
		struct draft_seq seq = job_seq(j);
		if ((st = draft_reset(e->drafter, &seq, err)) != SPECD_OK)
			return st;
	}
	j->m.t_prefill = specd_now() - t0;
	j->started = true;
	if (j->max_tokens == 0)
		j->stop = DRAFT_STOP_MAX_TOKENS;
	return SPECD_OK;
}

static bool job_ends_with(const struct draft_job *j, int32_t t)
{
	for (uint32_t i = 0; i < j->n_extra_eos; i++)
		if (t == j->extra_eos[i])
			return true;
	return t == j->eos;
}

/* Appends the step's accepted tokens and `next` to the history and cuts the output at
 * EOS or max tokens; token i was drawn against logits row rows[i]. */
static void job_emit(struct draft_job *j, const int32_t *acc, uint32_t n_acc, int32_t next,
		     const float *logits, const uint32_t *rows)
{
	const uint32_t n_vocab = j->eng->n_vocab;

	for (uint32_t i = 0; i <= n_acc; i++) {
		int32_t t = i < n_acc ? acc[i] : next;

		j->tokens[j->n_tokens++] = t;
		if (j->stop != DRAFT_STOP_NONE)
			continue; /* past the cut: kept in the history only, for the KV bookkeeping */
		if (job_ends_with(j, t)) {
			j->stop = DRAFT_STOP_EOS;
			continue;
		}
		/* Row i of the verify logits is the distribution token i was drawn against;
		 * its logits are finite (the verifier drew from them), so this cannot fail. */
		if (j->lp_stride)
			sampler_logprobs(logits + (size_t)rows[i] * n_vocab, (int32_t)n_vocab, t,
					 j->lp_stride - 1, j->lp + (size_t)j->n_out * j->lp_stride);
		if (++j->n_out == j->max_tokens)
			j->stop = DRAFT_STOP_MAX_TOKENS;
	}
	if (j->stop == DRAFT_STOP_NONE && j->n_tokens - 1 == j->eng->n_ctx)
		j->stop = DRAFT_STOP_CONTEXT;
}

/* Whether the job's prompt is still being prefilled inside the steps. */
static bool job_prefilling(const struct draft_job *j)
{
	return j->n_prefilled + 1 < j->n_prompt;
}

/* How many tokens the job drafts this step within `budget` batch rows: capped so that
 * no more than the remaining output is drafted and the verify tokens fit the slot (it
 * holds n - 1 rows and gains k + 1). Returns false when the job gets no row (it waits). */
static bool job_plan(struct draft_job *j, uint32_t budget, uint32_t *k_out)
{
	struct draft_engine *e = j->eng;
	uint32_t n = j->n_tokens, k = j->k, left = j->max_tokens - j->n_out;

	j->prop.n = 0;
	j->prop.q_onehot = true;
	j->prop.tree = false;
	if (budget == 0)
		return false;
	if (k > budget - 1)
		k = budget - 1;
	if (k > left - 1)
		k = left - 1;
	if (k > e->n_ctx - n)
		k = e->n_ctx - n;
	*k_out = j->plain ? 0 : k;
	return true;
}

/* The planner's say, when there is one: it sees every job in the step (plain ones
 * with cap 0, as they take a row each) and may only lower what job_plan allowed. */
static void plan_ks(struct draft_engine *e, struct draft_job *const *jobs, uint32_t n_jobs)
{
	uint32_t n = 0;
	if (!e->plan)
		return;
	for (uint32_t i = 0; i < n_jobs; i++) {
		if (!jobs[i]->in_step)
			continue;
		e->p_slot[n] = jobs[i]->slot;
		e->p_kk[n++] = e->p_k[i];
	}
	if (n == 0)
		return;
	e->plan(e->plan_user, e->p_slot, e->p_kk, n);
	n = 0;
	for (uint32_t i = 0; i < n_jobs; i++) {
		if (!jobs[i]->in_step)
			continue;
		if (e->p_kk[n] < e->p_k[i])
			e->p_k[i] = e->p_kk[n];
		n++;
	}
}

/* One drafter pass for the planned jobs (the draft model steps them together); the
 * time is shared evenly among them. */
static enum specd_status propose_all(struct draft_engine *e, struct draft_job *const *jobs,
				     uint32_t n_jobs, struct specd_error *err)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < n_jobs; i++) {
		if (!jobs[i]->in_step || e->p_k[i] == 0)
			continue;
		e->p_seq[n] = job_seq(jobs[i]);
		e->p_kk[n] = e->p_k[i];
		e->p_out[n] = &jobs[i]->prop;
		e->p_job[n++] = jobs[i];
	}
	if (n == 0)
		return SPECD_OK;
	double t0 = specd_now();
	enum specd_status st = draft_propose_batch(e->drafter, e->p_seq, e->p_kk, e->p_out, n, err);
	double share = (specd_now() - t0) / n;
	for (uint32_t i = 0; i < n; i++) {
		e->p_job[i]->m.t_draft += share;
		e->p_job[i]->n_hidden = 0; /* shown: the next rows start where these end */
	}
	return st;
}

/* The verdict's accepted tokens in j->acc and the logits row of each emitted token in
 * j->rows; for a tree, the cache rows of the path in j->keep (the tree's node i sits at
 * row n + i of the slot, after the last history token's at n - 1). Checks that the path
 * is one: each node a child of the one before. */
static enum specd_status job_path(struct draft_job *j, const struct draft_verdict *v,
				  struct specd_error *err)
{
	const struct draft_proposal *p = &j->prop;
	int32_t up = -1;

	j->rows[0] = 0;
	for (uint32_t i = 0; i < v->n_accepted; i++) {
		uint32_t node = p->tree ? v->path[i] : i;
		if (node >= p->n || (p->tree && p->parent[node] != up))
			return specd_errorf(err, SPECD_INTERNAL, "engine: the verifier's path "
					    "leaves the tree at step %u (node %u)", i, node);
		j->acc[i] = p->tokens[node];
		j->keep[i] = j->n_tokens + node;
		j->rows[i + 1] = node + 1;
		up = (int32_t)node;
	}
	return SPECD_OK;
}

/* Room at the end of j->hidden for n more rows (n <= hid_rows: callers keep only the
 * last hid_rows), the oldest rows dropped when it is full; j->n_hidden counts them in
 * already. */
static float *job_hidden_room(struct draft_job *j, uint32_t n)
{
	const struct draft_engine *e = j->eng;
	size_t row = e->dim;

	if (j->n_hidden + n > e->hid_rows) {
		uint32_t drop = j->n_hidden + n - e->hid_rows;
		drop = drop < j->n_hidden ? drop : j->n_hidden;
		memmove(j->hidden, j->hidden + drop * row, (j->n_hidden - drop) * row * sizeof(float));
		j->n_hidden -= drop;
	}
	j->n_hidden += n;
	return j->hidden + (j->n_hidden - n) * row;
}

/* The verdict from what j->rows_by says the step brought back for its rows. */
static enum specd_status job_verdict(struct draft_job *j, struct draft_verdict *v)
{
	struct draft_engine *e = j->eng;
	uint32_t r = j->row0;
	struct draft_rows choices = {.ids = e->ids + r, .n_vocab = e->n_vocab};

	switch (j->rows_by) {
	case JOB_ROWS_IDS:
		return draft_verify_rows(&choices, &j->prop, v);
	case JOB_ROWS_DRAWN:
		return draft_verify_drawn(j->target_s, &j->prop, e->draw_out + r, v);
	case JOB_ROWS_LOGITS:
		break;
	}
	return e->verify(j->target_s, e->logits + (size_t)r * e->n_vocab, e->n_vocab, &j->prop,
			 e->work, v);
}

/* The step's verdict for j (job_verdict), then its commit to the caches, the output,
 * the metrics and the drafter. */
static enum specd_status job_commit(struct draft_job *j, struct specd_error *err)
{
	struct draft_engine *e = j->eng;
	struct draft_verdict v;
	uint32_t n = j->n_tokens;
	double t0 = specd_now();
	const float *logits = e->logits + (size_t)j->row0 * e->n_vocab;
	enum specd_status st = job_verdict(j, &v);

	if (st != SPECD_OK)
		return specd_errorf(err, st, "engine: verification failed (slot %u)", j->slot);
	if (v.n_accepted > j->prop.n || v.next < 0 || (uint32_t)v.next >= e->n_vocab)
		return specd_errorf(err, SPECD_INTERNAL, "engine: the verifier kept %u of %u "
				    "and chose id %d", v.n_accepted, j->prop.n, (int)v.next);
	if ((st = job_path(j, &v, err)) != SPECD_OK)
		return st;
	/* Keep the old history and the accepted tokens; `next` is fed by the next step. */
	if (j->prop.tree)
		st = target_compact(e, j->slot, n, j->keep, v.n_accepted, err);
	else
		st = target_truncate(e, j->slot, n + v.n_accepted, err);
	if (st != SPECD_OK)
		return st;
	if (e->want_hidden && j->hidden) {
		/* The states at n - 1 .. n - 1 + n_accepted, the last of which chose `next`:
		 * what the drafter builds on next. */
		uint32_t rows = v.n_accepted + 1;
		uint32_t skip = rows > e->hid_rows ? rows - e->hid_rows : 0;
		float *dst = job_hidden_room(j, rows - skip);
		for (uint32_t i = skip; i < rows; i++)
			memcpy(dst + (size_t)(i - skip) * e->dim,
			       e->hidden + (size_t)(j->row0 + j->rows[i]) * e->dim,
			       e->dim * sizeof(float));
	}
	j->m.t_verify += specd_now() - t0;
	job_emit(j, j->acc, v.n_accepted, v.next, logits, j->rows);
	if (j->prop.tree)
		draft_metrics_add_tree(&j->m, j->prop.n, j->depth, v.n_accepted);
	else
		draft_metrics_add_step(&j->m, j->prop.n, v.n_accepted);
	j->last_drafted = j->prop.tree ? j->depth : j->prop.n;
	j->last_accepted = v.n_accepted;
	j->m.generated = j->n_out;
	if (!j->plain) {
		struct draft_seq seq = job_seq(j);

		t0 = specd_now();
		st = draft_commit(e->drafter, &seq, v.n_accepted, v.next, err);
		j->m.t_draft += specd_now() - t0;
	}
	return st;
}

static enum job_rows job_rows_by(const struct draft_engine *e, const struct draft_job *j)
{
	if (!e->device || !e->exact || j->lp_stride)
		return JOB_ROWS_LOGITS;
	if (sampler_is_greedy(j->target_s))
		return JOB_ROWS_IDS;
	/* A tensor-parallel target's shards each hold part of a row: no draws there. A
	 * sampling draft model's proposal (full q) takes the residual rule on the rows. */
	return !e->ops && draft_verify_can_draw(j->target_s, &j->prop) ? JOB_ROWS_DRAWN
								     : JOB_ROWS_LOGITS;
}

/* What the step's forward brings back for its verify rows: the logits rows only when
 * some job needs them. On a device the others stay there: a greedy job's verdict
 * needs each row's argmax, a sampling job's (drafts that are not samples) a token
 * drawn from each row, both taken where the logits are. (A CPU writes its rows
 * anyway; there every job reads them.) A tensor-parallel target gives ids or logits,
 * not both: one job that needs logits has every job read them. */
static void plan_rows(struct draft_engine *e, struct draft_job *const *jobs, uint32_t n_jobs,
		      struct model_batch *b)
{
	bool logits = false, ids = false;

	for (uint32_t i = 0; i < n_jobs; i++) {
		struct draft_job *j = jobs[i];
		if (!j->in_step)
			continue;
		j->rows_by = job_rows_by(e, j);
		logits |= j->rows_by == JOB_ROWS_LOGITS;
		ids |= j->rows_by == JOB_ROWS_IDS;
	}
	if (logits && e->ops) {
		ids = false;
		for (uint32_t i = 0; i < n_jobs; i++)
			jobs[i]->rows_by = JOB_ROWS_LOGITS;
	}
	b->logits = logits ? e->logits : NULL;
	b->ids = ids ? e->ids : NULL;
	b->n_draws = 0;
	for (uint32_t i = 0; i < n_jobs; i++) {
		struct draft_job *j = jobs[i];
		if (!j->in_step || j->rows_by != JOB_ROWS_DRAWN)
			continue;
		uint32_t r = j->row0;
		draft_draw_prepare(j->target_s, &j->prop, e->draw_u + r);
		e->draws[b->n_draws++] = (struct model_draw){
			.row = r, .rows = j->prop.n + 1,
			.params = sampler_kern_params(j->target_s),
			.u = e->draw_u + r, .out = e->draw_out + r,
		};
	}
}

enum specd_status draft_engine_step(struct draft_engine *e, struct draft_job *const *jobs,
				    uint32_t n_jobs, struct specd_error *err)
{
	uint32_t used = 0;
	enum specd_status st;
	double t_start = specd_now();

	for (uint32_t i = 0; i < n_jobs; i++) {
		if (jobs[i]->eng != e || !jobs[i]->started)
			return specd_errorf(err, SPECD_INVAL, "engine: job %u was not started on "
					    "this engine", i);
		for (uint32_t k = 0; k < i; k++)
			if (jobs[k]->slot == jobs[i]->slot)
				return specd_errorf(err, SPECD_INVAL, "engine: jobs %u and %u share "
						    "slot %u", k, i, jobs[i]->slot);
	}
	/* Each running job's fair share of the batch: when the drafts of all do not fit,
	 * every job drafts fewer tokens (down to none) rather than some waiting a step,
	 * and a prompt being prefilled gets at least its share too. */
	uint32_t live = 0;
	for (uint32_t i = 0; i < n_jobs; i++)
		live += jobs[i]->stop == DRAFT_STOP_NONE; /* a prompt being prefilled counts too */
	uint32_t share = live && e->max_rows / live > 1 ? e->max_rows / live : 1;
	uint32_t planned = 0;
	for (uint32_t i = 0; i < n_jobs; i++) {
		struct draft_job *j = jobs[i];
		uint32_t left = e->max_rows - planned;

		j->in_step = false;
		j->pf_rows = 0;
		e->p_k[i] = 0;
		if (j->stop != DRAFT_STOP_NONE || job_prefilling(j) ||
		    !job_plan(j, share < left ? share : left, &e->p_k[i]))
			continue;
		j->in_step = true;
		planned += e->p_k[i] + 1;
	}
	plan_ks(e, jobs, n_jobs);
	if ((st = propose_all(e, jobs, n_jobs, err)) != SPECD_OK)
		return st;
	bool tree = false;
	for (uint32_t i = 0; i < n_jobs; i++) {
		struct draft_job *j = jobs[i];
		uint32_t rows = j->prop.n + 1;

		if (!j->in_step)
			continue;
		/* [last history token, d1 .. dn] at positions n-1 .. n-1+n; a tree's node at
		 * its parent's position + 1. Parents are kept for every row in case the
		 * batch holds a tree: a chain's parent is the row before it. */
		e->b_tok[used] = (uint32_t)j->tokens[j->n_tokens - 1];
		e->b_par[used] = -1;
		j->depth = 0;
		for (uint32_t t = 1; t < rows; t++) {
			int32_t up = j->prop.tree ? j->prop.parent[t - 1] + 1 : (int32_t)t - 1;
			e->b_tok[used + t] = (uint32_t)j->prop.tokens[t - 1];
			e->b_par[used + t] = (int32_t)used + up;
		}
		for (uint32_t t = 0; t < rows; t++) {
			e->b_slot[used + t] = j->slot;
			e->b_out[used + t] = used + t;
		}
		e->b_pos[used] = j->n_tokens - 1;
		for (uint32_t t = 1; t < rows; t++) {
			uint32_t up = (uint32_t)(e->b_par[used + t] - (int32_t)used);
			e->b_pos[used + t] = e->b_pos[used + up] + 1;
			if (e->b_pos[used + t] - e->b_pos[used] > j->depth)
				j->depth = e->b_pos[used + t] - e->b_pos[used];
		}
		tree |= j->prop.tree;
		j->row0 = used;
		used += rows;
	}
	/* Deferred prompts fill the rest of the batch, after the verify rows (whose
	 * logits rows are then their batch indices), a chunk at a time. A drafter that
	 * keeps the prompt's states gets its last rows as hidden-only outputs. */
	uint32_t n_verify = used, n_out = used;
	for (uint32_t i = 0; i < n_jobs && used < e->batch_rows; i++) {
		struct draft_job *j = jobs[i];
		if (j->stop != DRAFT_STOP_NONE || !job_prefilling(j))
			continue;
		uint32_t want = j->n_prompt - 1 - j->n_prefilled, room = e->batch_rows - used;
		uint32_t from = j->n_prompt - 1 > e->hid_rows ? j->n_prompt - 1 - e->hid_rows : 0;
		bool keep = !j->plain && j->hidden;
		j->pf_rows = want < room ? want : room;
		j->pf_out = n_out;
		for (uint32_t t = 0; t < j->pf_rows; t++) {
			uint32_t pos = j->n_prefilled + t;
			e->b_tok[used + t] = (uint32_t)j->tokens[pos];
			e->b_slot[used + t] = j->slot;
			e->b_pos[used + t] = pos;
			e->b_par[used + t] = t ? (int32_t)(used + t - 1) : -1;
			if (keep && pos >= from)
				e->b_out[n_out++] = used + t;
		}
		used += j->pf_rows;
	}
	if (used == 0)
		return SPECD_OK;
	struct model_batch b = {
		.n_tokens = used, .tokens = e->b_tok, .slots = e->b_slot, .pos = e->b_pos,
		.parent = tree ? e->b_par : NULL,
		.n_out = n_out, .out_idx = e->b_out,
		.hidden = e->want_hidden ? e->hidden : NULL,
		.n_hidden_only = n_out - n_verify,
		.draws = e->draws,
	};
	plan_rows(e, jobs, n_jobs, &b);
	double t0 = specd_now();
	if ((st = target_forward(e, &b, err)) != SPECD_OK)
		return st;
	double t_fwd = specd_now() - t0;
	for (uint32_t i = 0; i < n_jobs; i++) {
		struct draft_job *j = jobs[i];

		if (j->pf_rows) {
			uint32_t n_kept = 0;
			while (j->pf_out + n_kept < n_out &&
			       e->b_slot[e->b_out[j->pf_out + n_kept]] == j->slot)
				n_kept++;
			if (n_kept)
				memcpy(job_hidden_room(j, n_kept), e->hidden + (size_t)j->pf_out * e->dim,
				       (size_t)n_kept * e->dim * sizeof(float));
			j->n_prefilled += j->pf_rows;
			j->m.t_prefill += t_fwd;
		}
		if (!j->in_step)
			continue;
		j->m.t_verify += t_fwd;
		if ((st = job_commit(j, err)) != SPECD_OK)
			return st;
	}
	double t_step = specd_now() - t_start;
	for (uint32_t i = 0; i < n_jobs; i++)
		if (jobs[i]->in_step)
			jobs[i]->m.t_decode += t_step;
	return SPECD_OK;
}

enum specd_status draft_job_step(struct draft_job *j, struct specd_error *err)
{
	return draft_engine_step(j->eng, &j, 1, err);
}

enum draft_stop draft_job_stop(const struct draft_job *j)
{
	return j->stop;
}

const int32_t *draft_job_output(const struct draft_job *j, uint32_t *n)
{
	*n = j->n_out;
	return j->tokens + j->n_prompt;
}

const struct draft_metrics *draft_job_metrics(const struct draft_job *j)
{
	return &j->m;
}

const struct sampler_logprob *draft_job_logprobs(const struct draft_job *j, uint32_t *stride)
{
	*stride = j->lp_stride;
	return j->lp_stride ? j->lp : NULL;
}

void draft_engine_set_planner(struct draft_engine *e, draft_plan_fn *fn, void *user)
{
	e->plan = fn;
	e->plan_user = user;
}

bool draft_job_last_step(const struct draft_job *j, uint32_t *drafted, uint32_t *accepted)
{
	*drafted = j->last_drafted;
	*accepted = j->last_accepted;
	return j->in_step;
}

uint32_t draft_job_spec_tokens(const struct draft_job *j)
{
	return j->k;
}
