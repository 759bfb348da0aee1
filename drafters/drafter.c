/* The drafter table and the checked wrappers every caller goes through: the engine
 * (engine.c) and the draft rank (remote_server.c). Adding a method is one ops file and
 * one entry in methods[] below. A drafter of several methods (draft_config.also) is
 * one drafter each behind the same wrappers, the active one proposing. */
#include "drafter.h"

#include "common/alloc.h"
#include "drafter_int.h"

struct drafter {
	const struct draft_ops *ops;  /* NULL: a drafter of several methods, in held[] */
	void *state;
	struct draft_config cfg;
	struct drafter *held[DRAFT_METHOD_COUNT];
	uint32_t mask;                /* the methods it can propose with */
	enum draft_method active;     /* the one proposing */
};

static const struct draft_ops *const methods[DRAFT_METHOD_COUNT] = {
	[DRAFT_METHOD_NGRAM] = &draft_ngram_ops,
	[DRAFT_METHOD_DRAFT_MODEL] = &draft_model_ops,
	[DRAFT_METHOD_EAGLE] = &draft_eagle_ops,
	[DRAFT_METHOD_MEDUSA] = &draft_medusa_ops,
};

const struct draft_ops *draft_ops_for(enum draft_method m)
{
	if ((unsigned)m >= DRAFT_METHOD_COUNT)
		return NULL;
	return methods[m];
}

enum specd_status draft_create_ops(const struct draft_ops *ops, const struct draft_config *cfg,
				   struct drafter **out, struct specd_error *err)
{
	struct drafter *d = NULL;
	enum specd_status st;

	if (!ops || !cfg)
		return specd_errorf(err, SPECD_INVAL, "drafter: no method or no config");
	if (cfg->k_max < 1 || cfg->k_max > DRAFT_MAX_TOKENS)
		return specd_errorf(err, SPECD_INVAL, "drafter: %u speculative tokens; the range "
				    "is 1 to %d", cfg->k_max, DRAFT_MAX_TOKENS);
	if (cfg->n_slots < 1)
		return specd_errorf(err, SPECD_INVAL, "drafter: no sequence slots");
	if (!cfg->target)
		return specd_errorf(err, SPECD_INVAL, "drafter: no target model");
	if (!(d = specd_calloc(1, sizeof(*d))))
		return specd_errorf(err, SPECD_NOMEM, "drafter: out of memory");
	d->ops = ops;
	d->cfg = *cfg;
	d->cfg.method = ops->method;
	d->cfg.draft_path = NULL; /* borrowed for create only */
	d->cfg.heads_path = NULL;
	d->cfg.eagle.path = NULL;
	d->active = ops->method;
	if ((st = ops->create(cfg, &d->state, err)) != SPECD_OK)
		goto fail;
	if ((st = ops->supports(d->state, cfg->target, err)) != SPECD_OK)
		goto fail;
	d->mask = ops->methods ? ops->methods(d->state) : 1u << ops->method;
	*out = d;
	return SPECD_OK;
fail:
	draft_destroy(d);
	return st;
}

/* One drafter for each of cfg->method and cfg->also behind one wrapper. */
static enum specd_status create_several(const struct draft_config *cfg, struct drafter **out,
					struct specd_error *err)
{
	uint32_t mask = cfg->also | 1u << cfg->method;
	struct drafter *d;
	enum specd_status st = SPECD_OK;

	if (mask >> DRAFT_METHOD_COUNT || mask & 1u << DRAFT_METHOD_NONE)
		return specd_errorf(err, SPECD_INVAL, "drafter: methods 0x%x to hold beside %s",
				    cfg->also, draft_method_name(cfg->method));
	if (!(d = specd_calloc(1, sizeof(*d))))
		return specd_errorf(err, SPECD_NOMEM, "drafter: out of memory");
	d->cfg = *cfg;
	d->cfg.draft_path = NULL;
	d->cfg.heads_path = NULL;
	d->cfg.eagle.path = NULL;
	d->mask = mask;
	d->active = cfg->method;
	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++) {
		struct draft_config one = *cfg;
		one.method = (enum draft_method)m;
		one.also = 0;
		if (mask & 1u << m)
			st = draft_create(&one, &d->held[m], err);
	}
	if (st != SPECD_OK) {
		draft_destroy(d);
		return st;
	}
	*out = d;
	return SPECD_OK;
}

enum specd_status draft_create(const struct draft_config *cfg, struct drafter **out,
			       struct specd_error *err)
{
	const struct draft_ops *ops;

	if (!cfg)
		return specd_errorf(err, SPECD_INVAL, "drafter: no config");
	if (cfg->also & ~(1u << cfg->method) && cfg->method != DRAFT_METHOD_NONE &&
	    draft_ops_for(cfg->method))
		return create_several(cfg, out, err);
	if (!(ops = draft_ops_for(cfg->method)))
		return specd_errorf(err, SPECD_UNSUPPORTED, "drafter: method '%s' has no drafter%s",
				    draft_method_name(cfg->method),
				    cfg->method == DRAFT_METHOD_NONE ? "" : " yet");
	return draft_create_ops(ops, cfg, out, err);
}

void draft_destroy(struct drafter *d)
{
	if (!d)
		return;
	if (d->state)
		d->ops->destroy(d->state);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
		draft_destroy(d->held[m]);
	specd_free(d);
}

enum draft_method draft_method_of(const struct drafter *d)
{
	return d->active;
}

uint32_t draft_methods(const struct drafter *d)
{
	return d->mask;
}

enum specd_status draft_select(struct drafter *d, enum draft_method m, struct specd_error *err)
{
	enum specd_status st = SPECD_OK;

	if ((unsigned)m >= DRAFT_METHOD_COUNT || !(d->mask & 1u << m))
		return specd_errorf(err, SPECD_INVAL, "drafter: method %s is not held (0x%x)",
				    draft_method_name(m), d->mask);
	if (d->ops && d->ops->select)
		st = d->ops->select(d->state, m, err);
	if (st == SPECD_OK)
		d->active = m;
	return st;
}

uint32_t draft_ops_hidden_rows(const struct draft_ops *o)
{
	return !o || !o->wants_hidden ? 0 : o->wants_history ? DRAFT_HIDDEN_ROWS : 1;
}

uint32_t draft_hidden_rows(const struct drafter *d)
{
	uint32_t rows = draft_ops_hidden_rows(d->ops);

	/* A remote drafter's methods are judged by their own ops (the draft rank's). */
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		uint32_t r = d->held[m] ? draft_hidden_rows(d->held[m])
			     : d->mask & 1u << m ? draft_ops_hidden_rows(draft_ops_for((enum draft_method)m))
						 : 0;
		if (r > rows)
			rows = r;
	}
	return rows;
}

bool draft_wants_hidden(const struct drafter *d)
{
	return draft_hidden_rows(d) > 0;
}

uint32_t draft_k_max(const struct drafter *d)
{
	return d->cfg.k_max;
}

size_t draft_memory_bytes(const struct drafter *d)
{
	size_t sum = d->ops ? d->ops->memory_bytes(d->state) : 0;
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
		sum += d->held[m] ? draft_memory_bytes(d->held[m]) : 0;
	return sum;
}

enum specd_status draft_supports(const struct drafter *d, const struct model *target,
				 struct specd_error *err)
{
	enum specd_status st = d->ops ? d->ops->supports(d->state, target, err) : SPECD_OK;
	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++)
		if (d->held[m])
			st = draft_supports(d->held[m], target, err);
	return st;
}

static enum specd_status seq_check(const struct drafter *d, const struct draft_seq *seq,
				   struct specd_error *err)
{
	if (!seq || !seq->tokens || seq->n_tokens < 1)
		return specd_errorf(err, SPECD_INVAL, "drafter: an empty sequence");
	if (seq->slot >= d->cfg.n_slots)
		return specd_errorf(err, SPECD_INVAL, "drafter: slot %u of %u", seq->slot,
				    d->cfg.n_slots);
	return SPECD_OK;
}

enum specd_status draft_reset(struct drafter *d, const struct draft_seq *seq,
			      struct specd_error *err)
{
	enum specd_status st = seq_check(d, seq, err);

	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++)
		if (d->held[m])
			st = draft_reset(d->held[m], seq, err);
	if (st != SPECD_OK || !d->ops || !d->ops->reset)
		return st;
	return d->ops->reset(d->state, seq, err);
}

/* A tree the verifier can walk: every parent before its child. A method's bug, not
 * the caller's input, when it fails. */
static enum specd_status proposal_check(const struct drafter *d, const struct draft_proposal *p,
					struct specd_error *err)
{
	if (!p->tree)
		return SPECD_OK;
	if (!p->parent)
		return specd_errorf(err, SPECD_INTERNAL, "drafter %s: a tree proposal and no "
				    "parent array", draft_method_name(d->active));
	for (uint32_t i = 0; i < p->n; i++)
		if (p->parent[i] < -1 || p->parent[i] >= (int32_t)i)
			return specd_errorf(err, SPECD_INTERNAL, "drafter %s: tree node %u has "
					    "parent %d", draft_method_name(d->active), i,
					    (int)p->parent[i]);
	return SPECD_OK;
}

static void proposal_clear(struct draft_proposal *p)
{
	p->n = 0;
	p->q_onehot = true;
	p->tree = false;
}

/* Held methods that keep every position's hidden state (EAGLE), other than the one
 * proposing, take the rows shown with a propose: the engine shows them once. */
static enum specd_status take_history(const struct drafter *d, const struct draft_seq *seqs,
				      uint32_t n, struct specd_error *err)
{
	enum specd_status st = SPECD_OK;

	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++) {
		const struct drafter *h = d->held[m];
		if (!h || m == (int)d->active || !h->ops || !h->ops->wants_history || !h->ops->warm)
			continue;
		for (uint32_t i = 0; i < n && st == SPECD_OK; i++)
			if (seqs[i].n_hidden)
				st = h->ops->warm(h->state, &seqs[i], err);
	}
	return st;
}

enum specd_status draft_propose(struct drafter *d, const struct draft_seq *seq, uint32_t k,
				struct draft_proposal *out, struct specd_error *err)
{
	enum specd_status st = seq_check(d, seq, err);

	proposal_clear(out);
	if (st != SPECD_OK)
		return st;
	if (!d->ops) {
		if ((st = take_history(d, seq, 1, err)) != SPECD_OK)
			return st;
		return draft_propose(d->held[d->active], seq, k, out, err);
	}
	if (k > d->cfg.k_max)
		k = d->cfg.k_max;
	if (k == 0)
		return SPECD_OK;
	st = d->ops->propose(d->state, seq, k, out, err);
	if (st == SPECD_OK)
		st = proposal_check(d, out, err);
	if (st != SPECD_OK)
		out->n = 0;
	return st;
}

/* Sequences handed to a method's propose_batch at once: bounds the wrapper's stack. */
#define DRAFT_BATCH_MAX 64

enum specd_status draft_propose_batch(struct drafter *d, const struct draft_seq *seqs,
				      const uint32_t *k, struct draft_proposal *const *outs,
				      uint32_t n, struct specd_error *err)
{
	struct draft_seq group[DRAFT_BATCH_MAX];
	struct draft_proposal *group_out[DRAFT_BATCH_MAX];
	uint32_t group_k[DRAFT_BATCH_MAX], m = 0;
	enum specd_status st = SPECD_OK;

	if (!d->ops) {
		for (uint32_t i = 0; i < n; i++)
			proposal_clear(outs[i]);
		if ((st = take_history(d, seqs, n, err)) != SPECD_OK)
			return st;
		return draft_propose_batch(d->held[d->active], seqs, k, outs, n, err);
	}
	for (uint32_t i = 0; i < n; i++)
		proposal_clear(outs[i]);
	for (uint32_t i = 0; i < n && st == SPECD_OK; i++) {
		uint32_t ki = k[i] < d->cfg.k_max ? k[i] : d->cfg.k_max;
		if ((st = seq_check(d, &seqs[i], err)) != SPECD_OK || ki == 0)
			continue;
		if (!d->ops->propose_batch) {
			st = d->ops->propose(d->state, &seqs[i], ki, outs[i], err);
			continue;
		}
		group[m] = seqs[i];
		group_k[m] = ki;
		group_out[m] = outs[i];
		if (++m == DRAFT_BATCH_MAX) {
			st = d->ops->propose_batch(d->state, group, group_k, group_out, m, err);
			m = 0;
		}
	}
	if (st == SPECD_OK && m)
		st = d->ops->propose_batch(d->state, group, group_k, group_out, m, err);
	for (uint32_t i = 0; i < n && st == SPECD_OK; i++)
		st = proposal_check(d, outs[i], err);
	if (st != SPECD_OK)
		for (uint32_t i = 0; i < n; i++)
			outs[i]->n = 0;
	return st;
}

enum specd_status draft_warm(struct drafter *d, const struct draft_seq *seq,
			     struct specd_error *err)
{
	enum specd_status st = seq_check(d, seq, err);

	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++) {
		const struct drafter *h = d->held[m];
		if (h && m != (int)d->active && h->ops && h->ops->warm)
			st = h->ops->warm(h->state, seq, err);
	}
	return st;
}

enum specd_status draft_commit(struct drafter *d, const struct draft_seq *seq,
			       uint32_t n_accepted, int32_t next, struct specd_error *err)
{
	enum specd_status st = seq_check(d, seq, err);

	for (int m = 0; m < DRAFT_METHOD_COUNT && st == SPECD_OK; m++)
		if (d->held[m])
			st = draft_commit(d->held[m], seq, m == (int)d->active ? n_accepted : 0,
					  next, err);
	if (st != SPECD_OK || !d->ops || !d->ops->commit)
		return st;
	return d->ops->commit(d->state, seq, n_accepted, next, err);
}
