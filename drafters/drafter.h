/* The drafter interface: what proposes the K tokens the target then verifies in one
 * forward (DESIGN.md §2, §5). Every method is one struct draft_ops in one file
 * (ngram.c, draft_model.c, ...) and one entry of the table in drafter.c; the engine
 * (drafters/engine.h) and later the draft rank drive them only through this header.
 *
 * A drafter instance serves several sequences at once, one per slot (as the target's
 * KV slots). The engine owns each sequence's history (prompt + output) and shows it to
 * the drafter on every call; a drafter keeps per-slot state of its own only where it
 * must (a draft model's KV cache).
 *
 * Exactness rests on one promise: a proposal that reports q (q_onehot false) sampled
 * each token from exactly that q, with the sequence's draft sampler; one that reports
 * q_onehot proposes a token deterministically (q is the one-hot on it).
 *
 * Threads: a drafter is used by one thread at a time (the compute thread). */
#ifndef SPECD_DRAFTERS_DRAFTER_H
#define SPECD_DRAFTERS_DRAFTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "drafters/method.h"

#define DRAFT_MAX_TOKENS 64 /* the largest K any drafter is asked for */

struct kern_ctx;
struct model;
struct sampler;

/* EAGLE's settings (drafters/eagle.h). */
struct draft_eagle_config {
	const char *path;  /* the checkpoint folder (model/eagle.h); borrowed for create */
	/* false: the dynamic tree of EAGLE-2, grown from the draft's confidences; true: a
	 * fixed tree of k_max nodes */
	bool static_tree;
	/* candidates per expanded node and nodes expanded per level (width), and levels
	 * of the tree (depth); 0: EAGLE_DEFAULT_WIDTH, EAGLE_DEFAULT_DEPTH */
	uint32_t width, depth;
};

/* Prompt lookup's n-gram lengths when none are given. */
#define DRAFT_NGRAM_MIN 2
#define DRAFT_NGRAM_MAX 5

struct draft_config {
	enum draft_method method;
	uint32_t k_max;      /* most tokens one propose returns: 1 .. DRAFT_MAX_TOKENS */
	uint32_t n_slots;    /* sequences held at once (the target's KV slots), >= 1 */
	uint32_t n_ctx;      /* tokens a sequence can reach (the target's slot rows); 0: any */
	/* The target, borrowed: supports() compares against it; it must outlive the
	 * drafter. */
	const struct model *target;
	/* ngram: the n-gram lengths tried, longest first; 0: the defaults
	 * DRAFT_NGRAM_MIN and DRAFT_NGRAM_MAX, or the minimum when only it is given and
	 * larger (the cluster file's speculation.ngram.*). */
	uint32_t prompt_lookup_min, prompt_lookup_max;
	/* draft_model: the GGUF file, and the backend to run it on (borrowed; NULL: the
	 * draft model creates its own CPU backend). */
	const char *draft_path;
	struct kern_ctx *kern;
	size_t huge_pages_max; /* the draft model's model_config.huge_pages_max (0: none) */
	/* medusa: the heads' safetensors file (drafters/medusa.h; borrowed for create). */
	const char *heads_path;
	struct draft_eagle_config eagle;
	/* More methods to hold beside `method`, bit (1u << m) each (not none): one drafter
	 * each, made from this same config, so the online selector can switch between them
	 * (draft_select); proposals come from `method` until then. 0: `method` only. */
	uint32_t also;
};

/* One sequence as the engine shows it to a drafter. tokens[0 .. n_tokens) is the
 * prompt followed by every committed output token; the last of them is not yet in the
 * target's KV cache (it opens the next verify batch). */
struct draft_seq {
	uint32_t slot;           /* < n_slots */
	const int32_t *tokens;
	uint32_t n_tokens;       /* >= 1 */
	/* The sequence's draft sampler: the request's transform (temperature, top-k,
	 * top-p) with a PRNG stream of its own. Drafters that sample draw only from it. */
	struct sampler *sampler;
	/* For drafters with wants_hidden: the target's final hidden states (after the
	 * output norm; n_hidden rows of model_dim floats, host, oldest first) at positions
	 * tokens[n_tokens - 1 - n_hidden .. n_tokens - 2]: the last is the state whose
	 * logits chose the last token (all Medusa reads). A drafter with wants_history
	 * (EAGLE) gets every row since it last proposed for the sequence (the prompt's
	 * last DRAFT_HIDDEN_ROWS at first, then each step's accepted path); one that
	 * finds a gap, or fewer rows than it wanted, starts over from the rows it has.
	 * NULL (n_hidden 0) when the engine has none yet (a one-token prompt): the drafter
	 * then proposes nothing. */
	const float *hidden;
	uint32_t n_hidden;
};

/* The most hidden rows a sequence carries to a drafter with wants_history at once: a
 * prompt's last rows (a longer prompt's earlier states are not kept). */
#define DRAFT_HIDDEN_ROWS 512

/* The row of seq->hidden that chose the last token, or NULL. */
static inline const float *draft_seq_last_hidden(const struct draft_seq *seq, uint32_t dim)
{
	return seq->hidden && seq->n_hidden ? seq->hidden + (size_t)(seq->n_hidden - 1) * dim
					    : NULL;
}

/* A proposal, in caller-owned buffers sized for k_max tokens. */
struct draft_proposal {
	uint32_t n;          /* tokens proposed, 0 .. k; 0: this step is plain decoding */
	int32_t *tokens;     /* (k_max) */
	/* (k_max, n_vocab) host: row i is the distribution tokens[i] was drawn from,
	 * after the request's transform. Written only when q_onehot is false. */
	float *q;
	bool q_onehot;       /* q is the one-hot on each token (greedy, prompt lookup) */
	/* A token tree instead of a chain (drafters that propose trees set tree and fill
	 * parent): parent[i] < i is the index of token i's parent, -1 for a child of the
	 * last history token. Siblings are tried in index order (verify.h); they must be
	 * distinct tokens when q_onehot, or drawn independently from the same q row
	 * otherwise. A chain is parent[i] = i - 1. */
	bool tree;
	int32_t *parent;     /* (k_max) host, caller-owned; NULL: the caller takes chains only */
};

/* One method. Every function gets the state its create returned. Status codes as the
 * wrappers below document. */
struct draft_ops {
	enum draft_method method;
	/* The drafter reads draft_seq.hidden: the engine then asks the target for its final
	 * hidden states (Medusa). */
	bool wants_hidden;
	/* With wants_hidden: the drafter reads the states of every position, not only the
	 * last (draft_seq.hidden; EAGLE keeps them in its own KV cache). */
	bool wants_history;
	enum specd_status (*create)(const struct draft_config *cfg, void **state,
				    struct specd_error *err);
	void (*destroy)(void *state);
	/* SPECD_OK when the drafter can draft for this target; otherwise SPECD_INVAL with
	 * the reason (a draft model's vocabulary differs, ...). */
	enum specd_status (*supports)(const void *state, const struct model *target,
				      struct specd_error *err);
	/* Bytes the drafter holds beyond the target: weights mapped and caches. */
	size_t (*memory_bytes)(const void *state);
	/* A new sequence in seq->slot: forget the slot's old one, take in the prompt.
	 * NULL: the drafter keeps no per-slot state (as for commit). */
	enum specd_status (*reset)(void *state, const struct draft_seq *seq,
				   struct specd_error *err);
	/* Up to k (<= k_max) tokens to follow seq->tokens; fewer, or none, is allowed. */
	enum specd_status (*propose)(void *state, const struct draft_seq *seq, uint32_t k,
				     struct draft_proposal *out, struct specd_error *err);
	/* Optional: propose for n sequences (distinct slots) at once, k[i] (<= k_max,
	 * >= 1) tokens for seqs[i], with exactly the proposals n propose calls in that order
	 * would make (a draft model runs one forward per drafted position for all of
	 * them). NULL: the wrapper calls propose for each. */
	enum specd_status (*propose_batch)(void *state, const struct draft_seq *seqs,
					   const uint32_t *k, struct draft_proposal *const *outs,
					   uint32_t n, struct specd_error *err);
	/* The verifier's verdict on the last proposal: seq now ends with the first
	 * n_accepted proposed tokens and then `next` (the target's correction or bonus).
	 * Also called, with n_accepted 0, after a step that proposed nothing. For a tree,
	 * the accepted tokens are a root path of it (seq shows them). NULL: nothing to do. */
	enum specd_status (*commit)(void *state, const struct draft_seq *seq,
				    uint32_t n_accepted, int32_t next, struct specd_error *err);
	/* Optional, for a drafter that holds several methods itself (the remote drafter:
	 * draft_config.also goes with it to the draft rank): the methods it can propose
	 * with (bit 1u << m each), and proposing with m from the next propose on. NULL:
	 * ops->method only. */
	uint32_t (*methods)(const void *state);
	enum specd_status (*select)(void *state, enum draft_method m, struct specd_error *err);
	/* Optional: take in seq as it stands now, while not proposing, so that proposing
	 * later costs no catch-up (a draft model feeds what its KV lacks). NULL: nothing
	 * to take in. */
	enum specd_status (*warm)(void *state, const struct draft_seq *seq,
				  struct specd_error *err);
};

struct drafter;

/* The ops of a method, or NULL for DRAFT_METHOD_NONE and methods not built yet. */
const struct draft_ops *draft_ops_for(enum draft_method m);

/* Creates the drafter of cfg->method (and of each method in cfg->also) and checks it
 * supports cfg->target. Errors:
 * SPECD_UNSUPPORTED (a method without a drafter: none), SPECD_INVAL (a
 * config field out of range, a draft model that does not fit the target: the message
 * says why), SPECD_IO / SPECD_NOMEM / the model loader's errors. *out only on success. */
enum specd_status draft_create(const struct draft_config *cfg, struct drafter **out,
			       struct specd_error *err);
/* As draft_create with a caller's ops table (tests; methods outside the table). */
enum specd_status draft_create_ops(const struct draft_ops *ops, const struct draft_config *cfg,
				   struct drafter **out, struct specd_error *err);
/* NULL is a no-op. */
void draft_destroy(struct drafter *d);

/* The method proposals come from now (cfg->method until draft_select). */
enum draft_method draft_method_of(const struct drafter *d);
/* The methods it holds (bit 1u << m each): cfg->method and cfg->also. */
uint32_t draft_methods(const struct drafter *d);
/* Proposals come from method m from the next propose on (a held method: online method
 * switching). Every held method saw every reset and commit, so it drafts on from the
 * sequences as they are. Errors: SPECD_INVAL (m is not held). */
enum specd_status draft_select(struct drafter *d, enum draft_method m, struct specd_error *err);
/* Whether the drafter reads draft_seq.hidden: some method it holds does (Medusa,
 * EAGLE). */
bool draft_wants_hidden(const struct drafter *d);
/* Rows of hidden state a sequence must carry to it: DRAFT_HIDDEN_ROWS when a method it
 * holds has wants_history, 1 when one only wants_hidden, else 0. */
uint32_t draft_hidden_rows(const struct drafter *d);
/* The same for one method's ops (NULL: 0). */
uint32_t draft_ops_hidden_rows(const struct draft_ops *ops);
uint32_t draft_k_max(const struct drafter *d);
size_t draft_memory_bytes(const struct drafter *d);
enum specd_status draft_supports(const struct drafter *d, const struct model *target,
				 struct specd_error *err);

/* Errors: SPECD_INVAL (slot out of range, an empty sequence), and what the method
 * reports (a draft model's forward errors). */
enum specd_status draft_reset(struct drafter *d, const struct draft_seq *seq,
			      struct specd_error *err);
/* k is clamped to k_max; out->n <= k on success. On error out->n is 0. A tree
 * proposal without out->parent, or with a parent out of order, is SPECD_INTERNAL. */
enum specd_status draft_propose(struct drafter *d, const struct draft_seq *seq, uint32_t k,
				struct draft_proposal *out, struct specd_error *err);
/* draft_propose for n sequences on distinct slots, k[i] for seqs[i] (clamped to k_max;
 * 0: none for that one); the same proposals as n draft_propose calls in order, in one
 * pass where the method can. On error every outs[i].n is 0. */
enum specd_status draft_propose_batch(struct drafter *d, const struct draft_seq *seqs,
				      const uint32_t *k, struct draft_proposal *const *outs,
				      uint32_t n, struct specd_error *err);
/* A drafter holding several methods: those not proposing take seq in as it stands (a
 * draft model feeds what its KV lacks), so switching to one, or probing it, costs a
 * step and no catch-up. Work for a rank that has the time (the draft rank, while the
 * target verifies); a drafter of one method does nothing. Errors: the method's. */
enum specd_status draft_warm(struct drafter *d, const struct draft_seq *seq,
			     struct specd_error *err);
/* Every held method takes the verdict in: the one that proposed with n_accepted, the
 * others as after a step in which they proposed nothing (n_accepted 0). */
enum specd_status draft_commit(struct drafter *d, const struct draft_seq *seq,
			       uint32_t n_accepted, int32_t next, struct specd_error *err);

#endif
