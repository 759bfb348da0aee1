/* The scheduler's online selector (adapt.h): per-slot acceptance, the engine's
 * per-step planner, and the cluster's K re-decided and logged. The arithmetic is
 * selector/online.c's; this file keeps the state and says what happened. */
#include "adapt.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "selector/online.h"

/* Recent evidence: a proposal's weight halves after about 70 more (0.99^69 = 0.5), so
 * the estimate follows a change of workload within a few hundred steps. */
#define ADAPT_DECAY 0.99
/* The start-up acceptance counts as 8 proposals' worth cluster-wide; the cluster's
 * rate counts as 2 of a sequence's own (a prose request on a cluster busy with code
 * must stop drafting within a few steps: measured on the regret bench, 8 kept a story
 * drafting 33 tokens for 2 kept); K moves once 16 recent proposals are in; a held
 * method that is not running (or a stopped one) is probed every 4th re-decision. */
#define ADAPT_PRIOR_WEIGHT 8.0
#define ADAPT_JOB_PRIOR_WEIGHT 2.0
#define ADAPT_MIN_EVIDENCE 16.0
#define ADAPT_PROBE_EVERY 4

struct adapt {
	struct adapt_config cfg;
	bool active;
	char why_off[SEL_TEXT_MAX];
	struct sel_online online;
	struct sel_accept *slot_acc;   /* (n_slots) */
	struct sel_plan_job *plan;     /* (n_slots) scratch */
	uint32_t *plan_k;              /* (n_slots) scratch */
	struct draft_engine *engine;   /* attached to; NULL: none */
	bool probing;                  /* this step is a probe step */
	enum draft_method step_method; /* what this step drafts with (sel_online_next) */
	uint64_t probes, planned_steps, lowered;
};

static void why_off(struct adapt *a, const struct adapt_config *cfg)
{
	if (cfg->method == DRAFT_METHOD_NONE || cfg->k == 0)
		snprintf(a->why_off, sizeof(a->why_off), "the cluster runs plain decoding");
	else if (!cfg->enabled)
		snprintf(a->why_off, sizeof(a->why_off), "speculation.adapt is false");
	else if (cfg->k_fixed)
		snprintf(a->why_off, sizeof(a->why_off),
			 "speculation.num_speculative_tokens fixes K at %u", cfg->k);
	else if (!cfg->in || !cfg->in->calibrated)
		snprintf(a->why_off, sizeof(a->why_off), "nothing was measured at start-up "
			 "(speculation.measure is false): no cost model to adapt with");
	else
		return;
	a->active = false;
}

enum specd_status adapt_create(const struct adapt_config *cfg, struct adapt **out,
			       struct specd_error *err)
{
	struct adapt *a = specd_calloc(1, sizeof(*a));
	if (!a)
		return specd_errorf(err, SPECD_NOMEM, "adaptation: out of memory");
	a->cfg = *cfg;
	a->active = true;
	why_off(a, cfg);
	if (a->active) {
		struct sel_online_config oc = {
			.method = cfg->method, .k_max = cfg->k,
			.methods = cfg->methods,
			.k_start = cfg->k_start <= cfg->k ? cfg->k_start : cfg->k,
			.interval = cfg->interval, .hysteresis = cfg->hysteresis,
			.decay = ADAPT_DECAY, .prior_weight = ADAPT_PRIOR_WEIGHT,
			.job_prior_weight = ADAPT_JOB_PRIOR_WEIGHT,
			.min_evidence = ADAPT_MIN_EVIDENCE, .probe_every = ADAPT_PROBE_EVERY,
		};
		enum specd_status st = sel_online_init(&a->online, &oc, err);
		if (st != SPECD_OK) {
			specd_free(a);
			return st;
		}
		a->slot_acc = specd_calloc(cfg->n_slots ? cfg->n_slots : 1, sizeof(*a->slot_acc));
		a->plan = specd_calloc(cfg->n_slots ? cfg->n_slots : 1, sizeof(*a->plan));
		a->plan_k = specd_calloc(cfg->n_slots ? cfg->n_slots : 1, sizeof(*a->plan_k));
		if (!a->slot_acc || !a->plan || !a->plan_k) {
			adapt_destroy(a);
			return specd_errorf(err, SPECD_NOMEM, "adaptation: out of memory");
		}
	}
	a->step_method = cfg->method;
	*out = a;
	return SPECD_OK;
}

void adapt_destroy(struct adapt *a)
{
	if (!a)
		return;
	adapt_attach(a, NULL);
	specd_free(a->slot_acc);
	specd_free(a->plan);
	specd_free(a->plan_k);
	specd_free(a);
}

/* The drafter proposes with m this step; false (logged) when it cannot. */
static bool use_method(struct adapt *a, enum draft_method m)
{
	struct specd_error err;
	if (!a->cfg.drafter || draft_method_of(a->cfg.drafter) == m)
		return true;
	if (draft_select(a->cfg.drafter, m, &err) == SPECD_OK)
		return true;
	LOG_WARN("online selector: cannot draft with %s: %s", draft_method_name(m), err.msg);
	return false;
}

/* draft_plan_fn: the step's method (a probe's, or the cluster's), each sequence bound
 * by its K, then the cost model spreading the drafts over the batch. A probe step
 * drafts the probed method's K instead. */
static void plan(void *self, const uint32_t *slots, uint32_t *k, uint32_t n)
{
	struct adapt *a = self;
	const struct sel_online *o = &a->online;
	enum draft_method m;
	uint32_t bound;
	sel_online_next(o, &m, &bound);
	if (!use_method(a, m))
		bound = 0;
	bool any = false;
	for (uint32_t i = 0; i < n; i++) {
		if (k[i] > bound)
			k[i] = bound;
		any |= k[i] > 0;
	}
	if (a->probing || !any || n > a->cfg.n_slots)
		return;
	for (uint32_t i = 0; i < n; i++) {
		a->plan[i].cap = k[i];
		sel_online_job_rates(o, a->cfg.in, &a->slot_acc[slots[i]], k[i], a->plan[i].rate);
	}
	sel_plan_batch(a->cfg.in, m, sel_method_transport(a->cfg.in, m), a->plan, n, a->plan_k);
	for (uint32_t i = 0; i < n; i++) {
		if (a->plan_k[i] < k[i])
			a->lowered++;
		k[i] = a->plan_k[i];
	}
	a->planned_steps++;
}

void adapt_attach(struct adapt *a, struct draft_engine *e)
{
	if (!a->active)
		return;
	if (a->engine)
		draft_engine_set_planner(a->engine, NULL, NULL);
	a->engine = e;
	if (e)
		draft_engine_set_planner(e, plan, a);
}

void adapt_job_start(struct adapt *a, uint32_t slot)
{
	if (a->active && slot < a->cfg.n_slots)
		memset(&a->slot_acc[slot], 0, sizeof(a->slot_acc[slot]));
}

void adapt_observe(struct adapt *a, uint32_t slot, uint32_t drafted, uint32_t accepted)
{
	if (!a->active || slot >= a->cfg.n_slots || drafted == 0)
		return;
	/* A sequence's own estimate is of the running method; a probe's proposals tell
	 * the cluster's estimate of the method probed. */
	if (a->step_method == a->online.method)
		sel_accept_observe(&a->slot_acc[slot], drafted, accepted, ADAPT_DECAY);
	sel_online_observe(&a->online, a->step_method, drafted, accepted);
}

void adapt_step_done(struct adapt *a)
{
	if (!a->active)
		return;
	if (a->probing)
		a->probes++;
	enum draft_method was = a->online.method;
	if (sel_online_step(&a->online, a->cfg.in)) {
		LOG_INFO("online selector: %s", a->online.last_change);
		/* The sequences' own estimates were of the other method. */
		if (a->online.method != was)
			memset(a->slot_acc, 0, a->cfg.n_slots * sizeof(*a->slot_acc));
	}
	a->probing = a->online.probe_now;
	uint32_t k;
	sel_online_next(&a->online, &a->step_method, &k);
}

void adapt_report(const struct adapt *a, struct adapt_report *out)
{
	memset(out, 0, sizeof(*out));
	out->active = a->active;
	snprintf(out->why_off, sizeof(out->why_off), "%s", a->why_off);
	out->k = a->active ? a->online.k : a->cfg.k_start;
	out->method = a->active ? a->online.method : a->cfg.method;
	if (!a->active)
		return;
	out->methods = a->online.cfg.methods | 1u << a->online.cfg.method;
	out->acceptance = a->online.decisions ? a->online.acceptance : 0;
	out->evidence = sel_accept_evidence(&a->online.cluster[a->online.method]);
	out->predicted = a->online.predicted;
	out->decisions = a->online.decisions;
	out->changes = a->online.changes;
	out->probes = a->probes;
	out->planned_steps = a->planned_steps;
	out->lowered = a->lowered;
	out->probing = a->probing;
	out->probe_k = a->online.k_probe;
	out->probe_method = a->online.probe_method;
	snprintf(out->last_change, sizeof(out->last_change), "%s", a->online.last_change);
}
