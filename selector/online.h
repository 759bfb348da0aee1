/* Online adaptation (DESIGN.md §6): what the selector learns while the cluster serves.
 * The start-up decision (selector.h) rests on priors and a calibration; from then on
 * the running method's acceptance is measured per draft position, per sequence and
 * cluster-wide, and two decisions follow it:
 *   - per step, each sequence's K in the shared batch (sel_plan_batch): the Ks that
 *     maximise the batch's expected tokens per second under the cost model, so a
 *     sequence that drafts badly, or a batch large enough that verify rows cost real
 *     compute, drafts less or nothing;
 *   - every `interval` steps, the cluster's method and K (sel_online_step): among the
 *     methods the engine holds (drafters/drafter.h draft_config.also), the (method, K)
 *     the cost model rates best on each one's measured acceptance, moved to only when
 *     predicted to beat the current one by the hysteresis margin, so noise does not
 *     flap it; now and then a probe step drafts with a held method that is not running
 *     (at every re-decision until it has cfg.min_evidence proposals of its own), or with
 *     K at 0 with the one that is, so every estimate stays fresh.
 * Exactness does not depend on any of this: every K verifies losslessly.
 *
 * Pure (no clock, no MPI, no allocation); every struct here belongs to its caller. In
 * the daemon the compute thread owns them (daemon/adapt.h). */
#ifndef SPECD_SELECTOR_ONLINE_H
#define SPECD_SELECTOR_ONLINE_H

#include <stdbool.h>
#include <stdint.h>

#include "selector/selector.h"

/* Acceptance per draft position as a decayed average: position i's rate is
 * P(draft i accepted | drafts 1..i-1 accepted). Positions after the first rejection
 * were never judged, so they add no evidence. Zeroed = no evidence. */
struct sel_accept {
	double hits[SEL_K_MAX];  /* decayed count of position i+1 accepted */
	double tries[SEL_K_MAX]; /* decayed count of position i+1 judged */
};

/* One verified proposal of n_drafted tokens of which the first n_accepted were kept
 * (for a tree: its depth, and the accepted path's length). All older evidence, of
 * every position, is weighted by `decay` (0 < decay <= 1; 1: a plain count). */
void sel_accept_observe(struct sel_accept *a, uint32_t n_drafted, uint32_t n_accepted,
			double decay);
/* Position i's rate (1-based), shrunk as if `prior_weight` more judgements had been
 * seen: (hits + w * r) / (tries + w), where r is `prior` for position 1 and position
 * i - 1's rate after it (an unjudged position is taken to be like the one before). */
double sel_accept_rate(const struct sel_accept *a, uint32_t i, double prior, double prior_weight);
/* One per-token acceptance for the whole (the geometric fit sel_decide takes): all
 * hits over all judgements, shrunk as above. */
double sel_accept_per_token(const struct sel_accept *a, double prior, double prior_weight);
/* Judgements of position 1: how many proposals the estimate rests on (decayed). */
double sel_accept_evidence(const struct sel_accept *a);

/* ---- per step: each sequence's K in a shared batch ---- */

#define SEL_PLAN_MAX_JOBS 256 /* sequences one plan covers; a larger batch keeps its caps */

struct sel_plan_job {
	uint32_t cap;             /* the most it may draft this step (0: it does not) */
	double rate[SEL_K_MAX];   /* its acceptance at positions 1..cap */
};

/* Predicted seconds of one step in which sequence i drafts k[i] tokens (0: plain for
 * it): the drafter's pass (one per drafted position for all of them), the link when
 * the draft rank is remote, and one target forward over sum(k[i] + 1) rows. With one
 * sequence it is sel_step_time. Needs in->calibrated. */
double sel_batch_step_time(const struct sel_inputs *in, enum draft_method m,
			   enum sel_transport t, const uint32_t *k, uint32_t n, double a);

/* Writes k[i] in 0..jobs[i].cap maximising sum_i E_i / sel_batch_step_time, E_i = 1 +
 * the sum over drafted positions of the product of rates up to it: adds one draft at a
 * time where it gains most, while the batch's tokens per second rise. Uncalibrated
 * inputs (or more than SEL_PLAN_MAX_JOBS sequences): k[i] = cap. Any thread. */
void sel_plan_batch(const struct sel_inputs *in, enum draft_method m, enum sel_transport t,
		    const struct sel_plan_job *jobs, uint32_t n, uint32_t *k);

/* ---- every `interval` steps: the cluster's K ---- */

struct sel_online_config {
	enum draft_method method;   /* the method the engine starts with (not none) */
	uint32_t methods;           /* the methods it holds and may switch between (bit
				       1u << m each; `method` is added); 0: `method` only */
	uint32_t k_max;             /* the engine's K: the most the cluster's K can be */
	uint32_t k_start;           /* the start-up decision's K */
	uint32_t interval;          /* steps between re-decisions; >= 1 */
	double hysteresis;          /* a new K must be predicted this much faster (0.05: 5%) */
	double decay;               /* per observation, as sel_accept_observe */
	double prior_weight;        /* judgements the prior is worth, cluster-wide */
	double job_prior_weight;    /* judgements the cluster's rate is worth to a sequence:
				       small, since sequences differ (code vs prose) */
	double min_evidence;        /* judgements of position 1 before K may change */
	uint32_t probe_every;       /* re-decisions between probe steps (when there is
				       something to probe: a held method not running, or
				       the running one with K at 0) */
};

struct sel_online {
	struct sel_online_config cfg;
	/* Each held method's proposals, from every sequence. */
	struct sel_accept cluster[DRAFT_METHOD_COUNT];
	enum draft_method method;   /* the method running now */
	uint32_t k;                 /* the cluster's K now: the bound on each sequence's */
	enum draft_method probe_method; /* what a probe step drafts with, */
	uint32_t k_probe;           /* and how many (that method's k_last) */
	/* Per held method, the K a probe drafts: the last K above 0 it ran with, or for
	 * one that has not run, the best the cost model predicts for it. */
	uint32_t k_last[DRAFT_METHOD_COUNT];
	uint32_t probe_turn;        /* rotation over the methods to probe */
	uint64_t steps;             /* steps observed */
	uint64_t decisions;         /* re-decisions made (whether K moved or not) */
	uint64_t changes;           /* times the method or K moved */
	uint32_t since_probe;       /* re-decisions since K went to 0 or the last probe */
	bool probe_now;             /* the next step is a probe step */
	double acceptance;          /* per-token of the running method, at the last re-decision */
	double predicted;           /* tokens/s predicted then for the choice kept */
	char last_change[SEL_TEXT_MAX]; /* the last move and why; empty: none yet */
};

/* Errors: SPECD_INVAL (a config field out of range: err says which). */
enum specd_status sel_online_init(struct sel_online *o, const struct sel_online_config *cfg,
				  struct specd_error *err);
/* A proposal of method m, verified (as sel_accept_observe), from any sequence. Methods
 * not held are ignored. */
void sel_online_observe(struct sel_online *o, enum draft_method m, uint32_t n_drafted,
			uint32_t n_accepted);
/* What the next step drafts with: the running method and the cluster's K, or on a probe
 * step (o->probe_now) the probed method and its K. */
void sel_online_next(const struct sel_online *o, enum draft_method *m, uint32_t *k);
/* The prior-shrunk rate of position i (1-based) cluster-wide, of the running method:
 * the prior for each sequence's own estimate. */
double sel_online_rate(const struct sel_online *o, const struct sel_inputs *in, uint32_t i);
/* A sequence's own rates at positions 1..n (n <= SEL_K_MAX), each shrunk towards the
 * cluster's rate at that position (sel_online_rate) by cfg.job_prior_weight: a new
 * sequence starts from what the cluster sees and moves to its own as it drafts. */
void sel_online_job_rates(const struct sel_online *o, const struct sel_inputs *in,
			  const struct sel_accept *job, uint32_t n, double *rates);
/* Counts a step; every cfg.interval steps re-decides the method and K from each held
 * method's measured acceptance (its prior while it has none) and the cost model in `in`
 * (calibrated), with the hysteresis margin; a method that is running keeps its K until
 * cfg.min_evidence of its proposals are in. Returns true when the method or K moved
 * (o->last_change says from what, to what and why: log it; a new method makes the
 * sequences' own estimates stale). Sets o->probe_now for the step after a
 * re-decision that is due to probe. */
bool sel_online_step(struct sel_online *o, const struct sel_inputs *in);

#endif
