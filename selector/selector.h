/* The selector (DESIGN.md §6): which speculation method, how many tokens K and what of
 * q crosses the leader <-> draft link. The leader fills struct sel_inputs at start-up
 * from the census, the link probes (parallel/probe.h) and calibration (calibrate.c),
 * calls sel_decide, and broadcasts the choice; `specctl status` shows inputs and table.
 *
 * sel_decide is pure (no clock, no MPI, no allocation): every figure it uses is in its
 * inputs, so tests inject whole clusters. It maximises expected tokens/s =
 * E(a, K) / step_time(K), E(a, K) = (1 - a^(K+1)) / (1 - a), over the methods that are
 * allowed and fit and K = 0..k_max (K = 0 is plain decoding). Before anything is
 * measured (calibrated false) the origin rule table (rule_table.h) decides instead. */
#ifndef SPECD_SELECTOR_SELECTOR_H
#define SPECD_SELECTOR_SELECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "drafters/method.h"

#define SEL_K_MAX 32          /* the largest K considered (the cluster file's limit) */
#define SEL_TEXT_MAX 200      /* one reason or exclusion, NUL included */
#define SEL_MAX_REASONS 8
#define SEL_MAX_CANDIDATES 24
#define SEL_TOPK_ENTRIES 16   /* entries (id, probability) per row of transport topk */

/* What crosses the link per drafted token when the workload samples. Greedy jobs and
 * prompt lookup ship token ids only, whatever the transport. */
enum sel_transport {
	SEL_TRANSPORT_GREEDY = 0, /* token ids only: the drafter drafts greedily, q one-hot */
	SEL_TRANSPORT_TOPK,       /* the top SEL_TOPK_ENTRIES of each q row */
	SEL_TRANSPORT_FULL,       /* whole q rows: K x vocab floats */
	SEL_TRANSPORT_COUNT
};

/* "greedy", "topk", "full"; "?" outside the enum. */
const char *sel_transport_name(enum sel_transport t);

/* A measured link: one-way latency of a small message and bandwidth of large ones. */
struct sel_link {
	bool measured;
	double latency_s;
	double bandwidth;  /* bytes/s; > 0 when measured */
};

/* One method as the leader found it. */
struct sel_method_in {
	bool configured;   /* its weights are named in the cluster file (ngram: always) */
	bool built;        /* this build has a drafter for it */
	char incompatible[SEL_TEXT_MAX]; /* empty: compatible with the target; else why not */
	uint64_t memory_bytes;  /* what it needs where the drafter lives */
	bool timed;             /* t_draft_* measured (else estimated from the target) */
	double t_draft_fixed_s; /* per propose call */
	double t_draft_token_s; /* per drafted token */
	double acceptance;      /* per-token acceptance a; 0: the method's prior */
};

struct sel_inputs {
	/* constraints (the cluster file) */
	bool method_forced;         /* speculation.method is not auto */
	enum draft_method method;   /* the forced method */
	uint32_t k_forced;          /* speculation.num_speculative_tokens; 0: auto */
	uint32_t k_max;             /* K considered when auto: 1 .. SEL_K_MAX */
	double target_speedup;      /* floor; 0: none */
	bool low_memory;            /* rules out methods with extra weights */
	uint64_t max_draft_memory;  /* cap on the drafter's memory; 0: none */
	/* placement and scheduling */
	bool dedicated_draft;       /* the drafter runs on its own rank (else in the leader) */
	/* Prompt lookup runs in the leader even beside a draft rank (it needs no weights:
	 * asking the draft rank would only add a round trip): no link for ngram. */
	bool ngram_in_leader;
	bool pipeline;              /* speculation.pipeline (dedicated rank, greedy jobs) */
	bool sampling;              /* plan for sampling jobs: q must cross the link */
	bool transport_built[SEL_TRANSPORT_COUNT]; /* what the runtime can ship today */
	uint64_t draft_memory_free; /* free memory where the drafter lives; 0: unknown */
	uint32_t n_vocab, dim;      /* the target's */
	struct sel_link link;       /* leader <-> draft rank (dedicated_draft only) */
	/* calibration: t_verify_s[n] is one target forward over n tokens, n = 1..k_max+1
	 * (index 0 unused) */
	bool calibrated;
	double t_verify_s[SEL_K_MAX + 2];
	struct sel_method_in methods[DRAFT_METHOD_COUNT];
};

/* One row of the table: a method with its best K for one transport, or a method that
 * was ruled out (excluded non-empty, no prediction). */
struct sel_candidate {
	enum draft_method method;
	uint32_t k;
	enum sel_transport transport;
	double acceptance;        /* a used */
	double step_s;            /* predicted seconds per target step */
	double tokens_per_s;      /* predicted; 0 when excluded or not measured */
	double speedup;           /* over plain decoding */
	char excluded[SEL_TEXT_MAX];
};

/* Fixed size, so it travels between ranks as bytes. */
struct sel_decision {
	enum draft_method method;
	uint32_t k;                 /* 0 for none */
	enum sel_transport transport;
	bool measured;              /* false: the origin rule table decided */
	/* ngram's n-gram lengths the rule table asks for (0: none; the cluster file's,
	 * when it gives them, win) */
	uint32_t lookup_min, lookup_max;
	double tokens_per_s;        /* predicted for the choice (0 when not measured) */
	double plain_tokens_per_s;  /* predicted plain decoding */
	double speedup;
	uint32_t n_reasons;
	char reasons[SEL_MAX_REASONS][SEL_TEXT_MAX];
	uint32_t n_candidates;
	struct sel_candidate candidates[SEL_MAX_CANDIDATES];
};

/* Prompt lookup's n-gram lengths for the drafter (0: its default): those given
 * (given_min, given_max; 0 when the cluster file leaves them auto), else the decision's
 * (the rule table's). A length taken from the decision never contradicts one given: the
 * given one wins, as it does over the drafter's own defaults. Any thread. */
void sel_lookup_lengths(const struct sel_decision *d, uint32_t given_min, uint32_t given_max,
			uint32_t *min, uint32_t *max);

/* The prior per-token acceptance of a method before any is measured (the origin
 * document's ranges, low end): ngram 0.5, draft_model 0.7, eagle 0.8, medusa 0.6. */
double sel_acceptance_prior(enum draft_method m);

/* True for methods whose drafts are samples from a q of their own (draft_model);
 * prompt lookup, Medusa and EAGLE (their trees' top candidates) propose
 * deterministically, so their q is one-hot and never ships. */
bool sel_method_samples_q(enum draft_method m);

/* True for methods that draft from the target's hidden states (EAGLE, Medusa): the
 * next step's input is known only once the leader has verified this one, so the draft
 * rank never drafts ahead with them (drafters/remote_server.c), nor with any method
 * while one of them is held beside it. */
bool sel_method_wants_hidden(enum draft_method m);

/* The transport method m runs with: whole q rows when it samples q, the workload
 * samples and the runtime ships them; else token ids. The start-up decision costs its
 * other rows with other transports; the online selector costs every method with this. */
enum sel_transport sel_method_transport(const struct sel_inputs *in, enum draft_method m);

/* E(a, K) = (1 - a^(K+1)) / (1 - a): tokens a step emits on average (K + 1 at a = 1). */
double sel_expected_tokens(double a, uint32_t k);

/* Whether method m's proposals cross the leader <-> draft rank link. */
bool sel_crosses_link(const struct sel_inputs *in, enum draft_method m);

/* Bytes crossing the link for one step of K drafted tokens (requests, reply, commit,
 * q rows of the transport, hidden states for eagle/medusa). 0 without a dedicated
 * draft rank. */
double sel_link_bytes(const struct sel_inputs *in, enum draft_method m, uint32_t k,
		      enum sel_transport t, double a);

/* Predicted seconds per target step for method m drafting K tokens with acceptance a,
 * as the runtime schedules it: plain decoding for K = 0; draft, link and verify in
 * sequence; or, pipelined on a dedicated rank (greedy jobs), drafting the next step
 * while this one verifies. Needs in->calibrated. */
double sel_step_time(const struct sel_inputs *in, enum draft_method m, uint32_t k,
		     enum sel_transport t, double a);

/* The target forward over n tokens, from t_verify_s (linear between measured sizes,
 * extrapolated past the last). */
double sel_verify_time(const struct sel_inputs *in, uint32_t n);

/* Rescales a whole-model calibration (t_verify_s measured on one rank) to a target of
 * `tp` shards: compute / tp plus two all-reduces per layer of n x dim floats over the
 * target group's link. No-op for tp <= 1 or an unmeasured link. */
void sel_scale_for_tp(struct sel_inputs *in, uint32_t tp, uint32_t n_layers,
		      const struct sel_link *allreduce);

/* One row as sel_decide predicts it: method m drafting K tokens over transport t with
 * the method's acceptance (in->methods[m].acceptance, else its prior; a transport that
 * truncates q loses a little). Needs in->calibrated. Pure; any thread. */
struct sel_candidate sel_predict(const struct sel_inputs *in, enum draft_method m, uint32_t k,
				 enum sel_transport t);

/* Fills *out. Errors: SPECD_INVAL (k_max or k_forced out of range, an unmeasured
 * input used as measured: err says which); *out is then untouched. Pure; any thread. */
enum specd_status sel_decide(const struct sel_inputs *in, struct sel_decision *out,
			     struct specd_error *err);

/* Writes the decision as log lines (INFO): the choice, its reasons and the table. */
void sel_decision_log(const struct sel_decision *d);

#endif
