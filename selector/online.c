/* Online adaptation (online.h): acceptance per draft position as a decayed average,
 * the per-step plan of each sequence's K in the shared batch, and the cluster's K
 * re-decided with hysteresis. Pure arithmetic on the caller's structs. */
#include "online.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void sel_accept_observe(struct sel_accept *a, uint32_t n_drafted, uint32_t n_accepted,
			double decay)
{
	if (n_drafted > SEL_K_MAX)
		n_drafted = SEL_K_MAX;
	if (n_accepted > n_drafted)
		n_accepted = n_drafted;
	/* Positions 1..n_accepted were kept; the one after, if drafted, was rejected;
	 * those past it were never judged. */
	uint32_t judged = n_accepted < n_drafted ? n_accepted + 1 : n_drafted;
	/* Every position ages with each proposal, judged or not: a deep position that
	 * stops being reached must not keep an old workload's rate. */
	for (uint32_t i = 0; i < SEL_K_MAX; i++) {
		a->hits[i] *= decay;
		a->tries[i] *= decay;
	}
	for (uint32_t i = 0; i < judged; i++) {
		a->hits[i] += i < n_accepted ? 1.0 : 0.0;
		a->tries[i] += 1.0;
	}
}

double sel_accept_rate(const struct sel_accept *a, uint32_t i, double prior, double prior_weight)
{
	if (i > SEL_K_MAX)
		i = SEL_K_MAX;
	/* Position 1 shrinks towards the prior, each later one towards the one before:
	 * with little evidence deep down, a position is taken to be like its neighbour. */
	double r = prior;
	for (uint32_t p = 0; p < i; p++) {
		double den = a->tries[p] + prior_weight;
		if (den > 0)
			r = (a->hits[p] + prior_weight * r) / den;
	}
	return r;
}

double sel_accept_per_token(const struct sel_accept *a, double prior, double prior_weight)
{
	double hits = 0, tries = 0;
	for (uint32_t i = 0; i < SEL_K_MAX; i++) {
		hits += a->hits[i];
		tries += a->tries[i];
	}
	double den = tries + prior_weight;
	return den > 0 ? (hits + prior_weight * prior) / den : prior;
}

double sel_accept_evidence(const struct sel_accept *a)
{
	return a->tries[0];
}

/* ---- the batch plan ---- */

double sel_batch_step_time(const struct sel_inputs *in, enum draft_method m,
			   enum sel_transport t, const uint32_t *k, uint32_t n, double a)
{
	if (n == 1)
		return sel_step_time(in, m, k[0], t, a);
	uint32_t rows = 0, k_top = 0;
	double bytes = 0;
	for (uint32_t i = 0; i < n; i++) {
		rows += k[i] + 1;
		if (k[i] > k_top)
			k_top = k[i];
		bytes += sel_link_bytes(in, m, k[i], t, a);
	}
	double verify = sel_verify_time(in, rows);
	if (k_top == 0 || m == DRAFT_METHOD_NONE)
		return verify;
	/* The drafter steps every drafting sequence together, one pass per position (a
	 * draft model's forward over a few rows is memory-bound like the target's, so it
	 * is costed as one row's); the draft rank answers the whole batch in one round
	 * trip. Pipelining is the one-sequence schedule only. */
	const struct sel_method_in *mi = &in->methods[m];
	double draft = mi->t_draft_fixed_s + (double)k_top * mi->t_draft_token_s;
	double link = 0;
	if (sel_crosses_link(in, m)) {
		double bw = in->link.bandwidth > 0 ? in->link.bandwidth : INFINITY;
		link = 2.0 * in->link.latency_s + bytes / bw;
	}
	return draft + link + verify;
}

void sel_plan_batch(const struct sel_inputs *in, enum draft_method m, enum sel_transport t,
		    const struct sel_plan_job *jobs, uint32_t n, uint32_t *k)
{
	for (uint32_t i = 0; i < n; i++)
		k[i] = in->calibrated && m != DRAFT_METHOD_NONE ? 0 : jobs[i].cap;
	if (!in->calibrated || m == DRAFT_METHOD_NONE || n == 0)
		return;
	/* The per-token rate the link model weighs hidden-state bytes with: the batch's
	 * first-position mean is close enough for bytes. */
	double a = 0;
	for (uint32_t i = 0; i < n; i++)
		a += jobs[i].cap ? jobs[i].rate[0] : 0;
	a /= n;

	/* Walk the greedy path (each time the draft that adds most expected tokens) to
	 * the end and keep its best prefix: a drafter's fixed cost can make the first
	 * draft lose and a few together win, so stopping at the first loss would be
	 * wrong. Each sequence's marginal gains fall with position, so the path is the
	 * best way to spend any number of drafts. */
	uint32_t trial[SEL_PLAN_MAX_JOBS];
	if (n > SEL_PLAN_MAX_JOBS) {
		for (uint32_t i = 0; i < n; i++)
			k[i] = jobs[i].cap;
		return;
	}
	memset(trial, 0, n * sizeof(*trial));
	double best = (double)n / sel_batch_step_time(in, m, t, trial, n, a);
	double tokens = (double)n;
	for (;;) {
		uint32_t pick = n;
		double gain = -1;
		for (uint32_t i = 0; i < n; i++) {
			if (trial[i] >= jobs[i].cap || trial[i] >= SEL_K_MAX)
				continue;
			double g = 1.0;
			for (uint32_t p = 0; p <= trial[i]; p++)
				g *= jobs[i].rate[p];
			if (g > gain) {
				gain = g;
				pick = i;
			}
		}
		if (pick == n)
			break;
		trial[pick]++;
		tokens += gain;
		double rate = tokens / sel_batch_step_time(in, m, t, trial, n, a);
		if (rate > best * (1.0 + 1e-12)) {
			best = rate;
			memcpy(k, trial, n * sizeof(*k));
		}
	}
}

/* ---- the cluster's method and K ---- */

static uint32_t held(const struct sel_online_config *cfg)
{
	return cfg->methods | 1u << cfg->method;
}

enum specd_status sel_online_init(struct sel_online *o, const struct sel_online_config *cfg,
				  struct specd_error *err)
{
	if (cfg->method == DRAFT_METHOD_NONE || (unsigned)cfg->method >= DRAFT_METHOD_COUNT)
		return specd_errorf(err, SPECD_INVAL, "online selector: no method to adapt");
	if (held(cfg) >> DRAFT_METHOD_COUNT || held(cfg) & 1u << DRAFT_METHOD_NONE)
		return specd_errorf(err, SPECD_INVAL, "online selector: methods 0x%x to switch "
				    "between", cfg->methods);
	if (cfg->k_max < 1 || cfg->k_max > SEL_K_MAX || cfg->k_start > cfg->k_max)
		return specd_errorf(err, SPECD_INVAL, "online selector: K %u of at most %u (1 to %d)",
				    cfg->k_start, cfg->k_max, SEL_K_MAX);
	if (cfg->interval < 1 || cfg->probe_every < 1)
		return specd_errorf(err, SPECD_INVAL, "online selector: interval %u and probe "
				    "interval %u must be at least 1", cfg->interval, cfg->probe_every);
	if (!(cfg->hysteresis >= 0 && cfg->hysteresis < 1) || !(cfg->decay > 0 && cfg->decay <= 1) ||
	    !(cfg->prior_weight >= 0) || !(cfg->job_prior_weight >= 0) || !(cfg->min_evidence >= 0))
		return specd_errorf(err, SPECD_INVAL, "online selector: hysteresis %g (0 to 1), "
				    "decay %g (0 to 1], prior weights %g and %g and evidence %g (>= 0)",
				    cfg->hysteresis, cfg->decay, cfg->prior_weight, cfg->job_prior_weight,
				    cfg->min_evidence);
	memset(o, 0, sizeof(*o));
	o->cfg = *cfg;
	o->method = cfg->method;
	o->k = cfg->k_start;
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
		o->k_last[m] = cfg->k_start ? cfg->k_start : 1;
	o->probe_method = o->method;
	o->k_probe = o->k_last[o->method];
	return SPECD_OK;
}

void sel_online_observe(struct sel_online *o, enum draft_method m, uint32_t n_drafted,
			uint32_t n_accepted)
{
	if (n_drafted && (unsigned)m < DRAFT_METHOD_COUNT && held(&o->cfg) & 1u << m)
		sel_accept_observe(&o->cluster[m], n_drafted, n_accepted, o->cfg.decay);
}

void sel_online_next(const struct sel_online *o, enum draft_method *m, uint32_t *k)
{
	*m = o->probe_now ? o->probe_method : o->method;
	*k = o->probe_now ? o->k_probe : o->k;
}

/* The acceptance to shrink method m's towards: what start-up measured or assumed. */
static double method_prior(const struct sel_inputs *in, enum draft_method m)
{
	double a = in->methods[m].acceptance;
	return a > 0 ? a : sel_acceptance_prior(m);
}

double sel_online_rate(const struct sel_online *o, const struct sel_inputs *in, uint32_t i)
{
	return sel_accept_rate(&o->cluster[o->method], i, method_prior(in, o->method),
			       o->cfg.prior_weight);
}

void sel_online_job_rates(const struct sel_online *o, const struct sel_inputs *in,
			  const struct sel_accept *job, uint32_t n, double *rates)
{
	const struct sel_accept *c = &o->cluster[o->method];
	double w = o->cfg.job_prior_weight, cw = o->cfg.prior_weight;
	double cluster = method_prior(in, o->method);
	for (uint32_t p = 0; p < n && p < SEL_K_MAX; p++) {
		/* sel_online_rate(o, in, p + 1), carried from position p rather than redone
		 * from position 1: this runs for every sequence every step. */
		double cden = c->tries[p] + cw;
		if (cden > 0)
			cluster = (c->hits[p] + cw * cluster) / cden;
		double den = job->tries[p] + w;
		rates[p] = den > 0 ? (job->hits[p] + w * cluster) / den : cluster;
	}
}

/* One standard error of method m's per-token estimate a: the judgements it rests on,
 * the prior's weight among them. */
static double std_error(const struct sel_online *o, enum draft_method m, double a)
{
	double n = o->cfg.prior_weight;
	for (uint32_t i = 0; i < SEL_K_MAX; i++)
		n += o->cluster[m].tries[i];
	return n > 0 ? sqrt(a * (1.0 - a) / n) : 0.5;
}

static double clamp_rate(double a)
{
	return a < 1e-9 ? 1e-9 : a > 1.0 ? 1.0 : a;
}

/* Whether method m may be probed now: held, and not the one running unless its K is 0;
 * with `unsure`, only while it has fewer than cfg.min_evidence judgements of its own. */
static bool probe_candidate(const struct sel_online *o, int m, bool unsure)
{
	if (!(held(&o->cfg) & 1u << m) || (m == (int)o->method && o->k > 0))
		return false;
	return !unsure || (m != (int)o->method &&
			   sel_accept_evidence(&o->cluster[m]) < o->cfg.min_evidence);
}

/* The next method to probe, in turn among the candidates (only the unsure ones when
 * `unsure`); false when there is none. */
static bool pick_probe(struct sel_online *o, bool unsure)
{
	for (int i = 1; i <= DRAFT_METHOD_COUNT; i++) {
		int m = (int)(o->probe_turn + (uint32_t)i) % DRAFT_METHOD_COUNT;
		if (!probe_candidate(o, m, unsure))
			continue;
		o->probe_turn = (uint32_t)m;
		o->probe_method = (enum draft_method)m;
		o->k_probe = o->k_last[m];
		return true;
	}
	return false;
}

/* Method m drafting K as the runtime would run it (its own transport). */
static double tokens_per_s(const struct sel_inputs *in, enum draft_method m, uint32_t k)
{
	return sel_predict(in, m, k, sel_method_transport(in, m)).tokens_per_s;
}

bool sel_online_step(struct sel_online *o, const struct sel_inputs *in)
{
	o->probe_now = false; /* a probe step, if this was one, is done */
	if (++o->steps % o->cfg.interval != 0 || !in->calibrated)
		return false;
	o->decisions++;

	/* Every held method at its measured acceptance (its prior while it has none). */
	struct sel_inputs now = *in;
	double acc[DRAFT_METHOD_COUNT] = {0};
	uint32_t mask = held(&o->cfg);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		if (!(mask & 1u << m))
			continue;
		enum draft_method dm = (enum draft_method)m;
		acc[m] = sel_accept_per_token(&o->cluster[m], method_prior(in, dm),
					      o->cfg.prior_weight);
		/* 0 there means "use the prior": a measured nothing-accepted is a tiny rate. */
		now.methods[m].acceptance = acc[m] > 1e-9 ? acc[m] : 1e-9;
	}
	o->acceptance = acc[o->method];

	/* The best (method, K); K 0 is plain decoding whatever the method, so it keeps
	 * the running one. A held method not running competes only once its probes have
	 * brought min_evidence proposals: its prior alone cannot win it the cluster. */
	enum draft_method best_m = o->method;
	uint32_t best_k = 0;
	double best = tokens_per_s(&now, o->method, 0);
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		if (!(mask & 1u << m))
			continue;
		bool eligible = m == (int)o->method ||
				sel_accept_evidence(&o->cluster[m]) >= o->cfg.min_evidence;
		double top = 0;
		for (uint32_t k = 1; k <= o->cfg.k_max; k++) {
			double tps = tokens_per_s(&now, (enum draft_method)m, k);
			if (tps > top) {
				top = tps;
				if (m != (int)o->method)
					o->k_last[m] = k; /* what a probe of it would draft */
			}
			if (eligible && tps > best) {
				best = tps;
				best_m = (enum draft_method)m;
				best_k = k;
			}
		}
	}
	double cur = tokens_per_s(&now, o->method, o->k);
	double evidence = sel_accept_evidence(&o->cluster[o->method]);
	bool moved = false;
	/* Too little evidence keeps a running choice; a stopped method has nothing new to
	 * learn from but its probes, so their evidence is enough. */
	bool enough = evidence >= o->cfg.min_evidence || o->k == 0;
	bool differs = best_m != o->method || best_k != o->k;
	bool wins = best > cur * (1.0 + o->cfg.hysteresis);
	if (wins && best_m != o->method) {
		/* Two methods' estimates rest on different evidence (the one not running on
		 * its probes and its past), so each one's noise could fake a lead: the new
		 * method must still win with its acceptance one standard error lower and the
		 * running one's one higher. */
		struct sel_inputs cautious = now;
		cautious.methods[best_m].acceptance =
			clamp_rate(acc[best_m] - std_error(o, best_m, acc[best_m]));
		cautious.methods[o->method].acceptance =
			clamp_rate(acc[o->method] + std_error(o, o->method, acc[o->method]));
		double lo = tokens_per_s(&cautious, best_m, best_k);
		double hi = tokens_per_s(&cautious, o->method, o->k);
		wins = lo > hi * (1.0 + o->cfg.hysteresis);
	}
	if (enough && differs && wins) {
		/* "ngram K 1 -> 5 after ...", or with a new method "ngram K 5 -> draft_model
		 * K 3 after ...: acceptance 0.31 over 40 recent proposals, draft_model 0.80
		 * over 12; ..." */
		char to[48], why[SEL_TEXT_MAX / 2] = "";
		if (best_m != o->method) {
			snprintf(to, sizeof(to), "%s K %u", draft_method_name(best_m), best_k);
			snprintf(why, sizeof(why), ", %s %.2f over %.0f", draft_method_name(best_m),
				 acc[best_m], sel_accept_evidence(&o->cluster[best_m]));
		} else {
			snprintf(to, sizeof(to), "%u", best_k);
		}
		int len = snprintf(o->last_change, sizeof(o->last_change),
				   "%s K %u -> %s after step %llu: acceptance %.2f over %.0f "
				   "recent proposals%s; %.1f vs %.1f tokens/s predicted",
				   draft_method_name(o->method), o->k, to,
				   (unsigned long long)o->steps, acc[o->method], evidence, why,
				   best, cur);
		if (len >= (int)sizeof(o->last_change)) /* cut: say so */
			memcpy(o->last_change + sizeof(o->last_change) - 4, "...", 4);
		o->method = best_m;
		o->k = best_k;
		o->changes++;
		o->since_probe = 0;
		moved = true;
		cur = best;
	}
	if (o->k)
		o->k_last[o->method] = o->k;
	/* A held method not running whose estimate rests on too little evidence is
	 * probed at every re-decision until it has enough (its prior alone can neither
	 * win it the cluster nor rule it out); after that, every probe_every. */
	if (!moved && pick_probe(o, true)) {
		o->probe_now = true;
	} else if (!moved && ++o->since_probe >= o->cfg.probe_every && pick_probe(o, false)) {
		o->probe_now = true;
		o->since_probe = 0;
	}
	o->predicted = cur;
	return moved;
}
