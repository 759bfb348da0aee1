/* The leader's online selector (selector/online.h, DESIGN.md §6): the scheduler's
 * side of adaptation. It keeps each slot's acceptance and the cluster's per method,
 * plans every step's K per sequence (the engine's planner, drafters/engine.h),
 * re-decides the cluster's method (among those the drafter holds) and K every
 * `speculation.adapt_interval` steps, switches the drafter (draft_select) before the
 * step that drafts with another method (a switch, or a probe of a held method), and
 * logs each change with its reason; Status shows where it stands.
 *
 * It is active when there is something to adapt and a cost model to adapt with: a
 * method other than none, K not fixed by `speculation.num_speculative_tokens`,
 * `speculation.adapt` true and the start-up measurements made (`speculation.measure`).
 * Otherwise every step drafts the start-up K (as the batch allows) and Status says why.
 *
 * Threads: the compute thread only (sched.c copies adapt_report under its lock). */
#ifndef SPECD_DAEMON_ADAPT_H
#define SPECD_DAEMON_ADAPT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "selector/selector.h"

struct draft_engine;
struct drafter;

struct adapt_config {
	const struct sel_inputs *in;  /* borrowed: the start-up inputs; outlives the adapt */
	enum draft_method method;     /* what the engine starts with */
	/* The methods the online selector may switch between besides (bit 1u << m each:
	 * those the drafter holds, draft_methods), and the engine's drafter it switches
	 * (borrowed; NULL: the caller drafts with adapt_report's method itself). */
	uint32_t methods;
	struct drafter *drafter;
	uint32_t k;                   /* the engine's K: the most the cluster's K can be */
	uint32_t k_start;             /* the start-up decision's K (<= k) */
	bool k_fixed;                 /* speculation.num_speculative_tokens is set */
	bool enabled;                 /* speculation.adapt */
	uint32_t interval;            /* speculation.adapt_interval */
	double hysteresis;            /* speculation.adapt_hysteresis */
	uint32_t n_slots;
};

/* What Status shows. */
struct adapt_report {
	bool active;
	char why_off[SEL_TEXT_MAX];     /* when not active */
	enum draft_method method;       /* the cluster's method now */
	uint32_t k;                     /* the cluster's K now */
	double acceptance;              /* per token, at the last re-decision; 0: none yet */
	double evidence;                /* recent proposals it rests on (decayed) */
	double predicted;               /* tokens/s predicted for K then */
	uint64_t decisions, changes, probes;
	uint64_t planned_steps;         /* steps whose Ks were planned */
	uint64_t lowered;               /* sequences drafting fewer than allowed, summed */
	bool probing;                   /* the next step is a probe, drafting probe_k with */
	enum draft_method probe_method; /* this method */
	uint32_t probe_k;
	uint32_t methods;               /* the methods it may switch between (bit 1u << m) */
	char last_change[SEL_TEXT_MAX]; /* empty: K never moved */
};

struct adapt;

/* Errors: SPECD_NOMEM; SPECD_INVAL (a config out of range). *out only on success; an
 * inactive one is made all the same (it reports why). */
enum specd_status adapt_create(const struct adapt_config *cfg, struct adapt **out,
			       struct specd_error *err);
/* NULL is a no-op; detaches from the engine first. */
void adapt_destroy(struct adapt *a);

/* Makes the engine call adapt's planner each step (when active); e NULL detaches from
 * the engine it was attached to. */
void adapt_attach(struct adapt *a, struct draft_engine *e);

/* A new sequence on `slot`: its own acceptance starts from the cluster's. */
void adapt_job_start(struct adapt *a, uint32_t slot);
/* What the sequence on `slot` drafted and kept in the step just made (both 0 when it
 * drafted nothing), with the method the step drafted with (adapt_report's probe_method
 * on a probe step, its method otherwise). */
void adapt_observe(struct adapt *a, uint32_t slot, uint32_t drafted, uint32_t accepted);
/* After each step that verified something: counts it, re-decides when due and logs a
 * change of K. */
void adapt_step_done(struct adapt *a);

void adapt_report(const struct adapt *a, struct adapt_report *out);

#endif
