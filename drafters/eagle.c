/* The EAGLE drafter (eagle.h): catches its layer's KV cache up on the target's hidden
 * states, then grows a token tree level by level. Each level is one forward of the
 * layer over every node expanded so far (a tree batch, so each sees only its
 * ancestors; the forward is batch-invariant, so earlier nodes come out as before) and
 * the target's LM head on the nodes being expanded. */
#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "drafter_int.h"
#include "eagle.h"
#include "medusa.h"
#include "model/eagle.h"
#include "model/kv.h"
#include "model/llama.h"

#define EAGLE_BATCH 128 /* the layer's rows per forward: catch-up chunks and trees */

_Static_assert(EAGLE_MAX_WIDTH <= KERN_TOPK_MAX, "a node's candidates are one topk");

struct eagle_slot {
	uint32_t base;   /* token position of the slot's first entry (its KV row 0) */
	uint32_t n_done; /* entries built from the target's own states */
	bool live;       /* base and n_done hold; false: the next propose starts over */
};

struct eagle_node {
	int32_t token;
	int32_t parent;  /* pool index; -1: a child of the last history token */
	uint32_t depth;
	float score;     /* log-probability of the path under the draft (dynamic trees) */
	int32_t exp;     /* its row among the expanded nodes, or -1 */
};

struct eagle {
	struct model *layer;
	uint32_t k_max, dim, n_vocab, width, depth;
	bool dynamic;
	/* The static tree of k_max nodes (a smaller k takes its first k). */
	int32_t s_parent[DRAFT_MAX_TOKENS];
	uint32_t s_depth[DRAFT_MAX_TOKENS], s_rank[DRAFT_MAX_TOKENS];
	struct eagle_slot *slots;
	/* One forward of the layer: */
	uint32_t *b_tok, *b_slot, *b_pos, *b_out;
	int32_t *b_par;
	float *b_feat;          /* (EAGLE_BATCH, dim) the state each entry follows */
	uint32_t max_out;       /* outputs of one forward, at most */
	/* (max_out, n_vocab) on a host backend, which computes the rows there; NULL on a
	 * device, where the rows stay (model_batch.top_k picks the candidates) */
	float *logits;
	/* Each output's n_cand best candidates, their logits and its log-normaliser,
	 * picked where the logits are: (max_out, EAGLE_MAX_WIDTH), the same, (max_out). */
	uint32_t n_cand;        /* this propose's: what any node of its tree takes */
	int32_t *cand;
	float *cand_val, *cand_lse;
	float *out_feat;        /* (max_out, dim) the states the layer predicts */
	/* One tree: */
	struct eagle_node *pool;
	uint32_t pool_cap, n_pool;
	uint32_t *exp_node;     /* (EAGLE_BATCH) the pool index of each expanded node */
	float *exp_feat;        /* (EAGLE_BATCH, dim) each expanded node's predicted state */
	uint32_t n_exp;
	float *root_feat;       /* (dim) the state predicted at the last history token */
	uint32_t *order;        /* (pool_cap) scratch for choosing the kept nodes */
	int32_t *out_of;        /* (pool_cap) a kept node's index in the proposal */
};

static void eagle_destroy(void *state)
{
	struct eagle *e = state;

	if (!e)
		return;
	model_destroy(e->layer);
	specd_free(e->slots);
	specd_free(e->b_tok);
	specd_free(e->b_slot);
	specd_free(e->b_pos);
	specd_free(e->b_out);
	specd_free(e->b_par);
	specd_free(e->b_feat);
	specd_free(e->logits);
	specd_free(e->cand);
	specd_free(e->cand_val);
	specd_free(e->cand_lse);
	specd_free(e->out_feat);
	specd_free(e->pool);
	specd_free(e->exp_node);
	specd_free(e->exp_feat);
	specd_free(e->root_feat);
	specd_free(e->order);
	specd_free(e->out_of);
	specd_free(e);
}

static enum specd_status eagle_create(const struct draft_config *cfg, void **state,
				      struct specd_error *err)
{
	const struct model_hparams *t = model_hparams(cfg->target);
	struct eagle *e = specd_calloc(1, sizeof(*e));
	enum specd_status st;

	if (!e)
		return specd_errorf(err, SPECD_NOMEM, "eagle: out of memory");
	e->k_max = cfg->k_max;
	e->dim = t->dim;
	e->n_vocab = t->n_vocab;
	e->dynamic = !cfg->eagle.static_tree;
	e->width = cfg->eagle.width ? cfg->eagle.width : EAGLE_DEFAULT_WIDTH;
	e->depth = cfg->eagle.depth ? cfg->eagle.depth : EAGLE_DEFAULT_DEPTH;
	if (e->width > EAGLE_MAX_WIDTH || e->depth > EAGLE_MAX_DEPTH) {
		st = specd_errorf(err, SPECD_INVAL, "eagle: a tree %u wide and %u deep; at most %d "
				  "and %d", e->width, e->depth, EAGLE_MAX_WIDTH, EAGLE_MAX_DEPTH);
		goto fail;
	}
	if (!e->dynamic && (st = draft_medusa_tree(e->k_max, e->depth, e->s_parent, e->s_depth,
						   e->s_rank)) != SPECD_OK) {
		specd_errorf(err, st, "eagle: no static tree of %u nodes over %u levels (a node "
			     "has at most %d children)", e->k_max, e->depth, MEDUSA_MAX_RANK);
		goto fail;
	}
	uint32_t n_ctx = cfg->n_ctx ? cfg->n_ctx : t->n_ctx_train;
	struct model_config mc = {
		.n_slots = cfg->n_slots,
		.n_ctx = n_ctx + EAGLE_BATCH, /* the tree's rows after the history's */
		.max_batch = EAGLE_BATCH,
		.kern = cfg->kern,
	};
	if ((st = model_load_eagle(cfg->eagle.path, cfg->target, &mc, &e->layer, err)))
		goto fail;
	/* Outputs per forward: the expanded nodes of one level (the root's: one). */
	e->max_out = e->dynamic ? e->width : e->k_max;
	e->pool_cap = e->dynamic ? e->width + (e->depth - 1) * e->width * e->width : e->k_max;
	e->slots = specd_calloc(cfg->n_slots, sizeof(*e->slots));
	e->b_tok = specd_malloc_array(EAGLE_BATCH, sizeof(uint32_t));
	e->b_slot = specd_malloc_array(EAGLE_BATCH, sizeof(uint32_t));
	e->b_pos = specd_malloc_array(EAGLE_BATCH, sizeof(uint32_t));
	e->b_out = specd_malloc_array(EAGLE_BATCH, sizeof(uint32_t));
	e->b_par = specd_malloc_array(EAGLE_BATCH, sizeof(int32_t));
	e->b_feat = specd_malloc_array((size_t)EAGLE_BATCH * e->dim, sizeof(float));
	if (kern_host_memory(model_kern(e->layer)))
		e->logits = specd_malloc_array((size_t)e->max_out * e->n_vocab, sizeof(float));
	e->cand = specd_malloc_array((size_t)e->max_out * EAGLE_MAX_WIDTH, sizeof(int32_t));
	e->cand_val = specd_malloc_array((size_t)e->max_out * EAGLE_MAX_WIDTH, sizeof(float));
	e->cand_lse = specd_malloc_array(e->max_out, sizeof(float));
	e->out_feat = specd_malloc_array((size_t)e->max_out * e->dim, sizeof(float));
	e->pool = specd_malloc_array(e->pool_cap, sizeof(*e->pool));
	e->exp_node = specd_malloc_array(EAGLE_BATCH, sizeof(uint32_t));
	e->exp_feat = specd_malloc_array((size_t)EAGLE_BATCH * e->dim, sizeof(float));
	e->root_feat = specd_malloc_array(e->dim, sizeof(float));
	e->order = specd_malloc_array(e->pool_cap, sizeof(uint32_t));
	e->out_of = specd_malloc_array(e->pool_cap, sizeof(int32_t));
	if (!e->slots || !e->b_tok || !e->b_slot || !e->b_pos || !e->b_out || !e->b_par ||
	    !e->b_feat || (!e->logits && kern_host_memory(model_kern(e->layer))) || !e->cand ||
	    !e->cand_val || !e->cand_lse || !e->out_feat || !e->pool || !e->exp_node ||
	    !e->exp_feat || !e->root_feat || !e->order || !e->out_of) {
		st = specd_errorf(err, SPECD_NOMEM, "eagle: out of memory");
		goto fail;
	}
	*state = e;
	return SPECD_OK;
fail:
	eagle_destroy(e);
	return st;
}

static enum specd_status eagle_supports(const void *state, const struct model *target,
					struct specd_error *err)
{
	const struct eagle *e = state;
	const struct model_hparams *hp = model_hparams(target);

	if (hp->dim != e->dim || hp->n_vocab != e->n_vocab)
		return specd_errorf(err, SPECD_INVAL, "eagle: the layer is for hidden size %u and "
				    "%u tokens; the target has %u and %u", e->dim, e->n_vocab,
				    hp->dim, hp->n_vocab);
	return SPECD_OK;
}

static size_t eagle_memory_bytes(const void *state)
{
	const struct eagle *e = state;

	return model_eagle_weight_bytes(e->layer) + kv_bytes(model_kv(e->layer));
}

static enum specd_status eagle_reset(void *state, const struct draft_seq *seq,
				     struct specd_error *err)
{
	struct eagle *e = state;
	enum specd_status st = kv_truncate(model_kv(e->layer), seq->slot, 0);

	e->slots[seq->slot].live = false;
	if (st != SPECD_OK)
		return specd_errorf(err, st, "eagle: slot %u", seq->slot);
	return SPECD_OK;
}

/* The batch's outputs each bring back their n_cand candidates (and, on a host
 * backend, the logits rows they are picked from). */
static void want_candidates(const struct eagle *e, struct model_batch *b)
{
	b->logits = e->logits;
	b->top_k = e->n_cand;
	b->top_ids = e->cand;
	b->top_vals = e->cand_val;
	b->top_lse = e->cand_lse;
}

/* Feeds the slot's cache the entries it lacks, positions base + n_done .. n - 1, from
 * the hidden rows; with `root`, the last entry's output (the root of the tree) brings
 * candidates row 0 and root_feat. False in *ok when there is nothing to build on. */
static enum specd_status catch_up(struct eagle *e, const struct draft_seq *seq, bool root,
				  bool *ok, struct specd_error *err)
{
	struct eagle_slot *s = &e->slots[seq->slot];
	struct kv_cache *kv = model_kv(e->layer);
	uint32_t n = seq->n_tokens, h = seq->n_hidden;
	enum specd_status st;

	*ok = false;
	if (h == 0 || !seq->hidden || h >= n)
		return SPECD_OK;
	/* Rows are the states at n - 1 - h .. n - 2: entry p (token p after state p - 1)
	 * can be built for p >= n - h. A gap, or no cache yet: start over from them. */
	uint32_t first = n - h;
	if (!s->live || s->base + s->n_done < first || s->base + s->n_done > n - 1) {
		s->base = first;
		s->n_done = 0;
		s->live = true;
	}
	if ((st = kv_truncate(kv, seq->slot, s->n_done)) != SPECD_OK)
		return specd_errorf(err, st, "eagle: slot %u", seq->slot);
	for (uint32_t p = s->base + s->n_done; p < n;) {
		uint32_t c = n - p < EAGLE_BATCH ? n - p : EAGLE_BATCH;
		for (uint32_t i = 0; i < c; i++) {
			e->b_tok[i] = (uint32_t)seq->tokens[p + i];
			e->b_slot[i] = seq->slot;
			e->b_pos[i] = p + i - s->base;
			memcpy(e->b_feat + (size_t)i * e->dim,
			       seq->hidden + (size_t)(p + i - 1 - (n - 1 - h)) * e->dim,
			       e->dim * sizeof(float));
		}
		e->b_out[0] = c - 1;
		bool last = root && p + c == n;
		struct model_batch b = {
			.n_tokens = c, .tokens = e->b_tok, .slots = e->b_slot, .pos = e->b_pos,
			.features = e->b_feat, .n_out = last, .out_idx = e->b_out,
			.hidden = last ? e->root_feat : NULL,
		};
		if (last)
			want_candidates(e, &b);
		if ((st = model_forward(e->layer, &b, err)) != SPECD_OK) {
			s->live = false;
			return st;
		}
		p += c;
	}
	s->n_done = n - s->base;
	*ok = true;
	return SPECD_OK;
}

static void add_node(struct eagle *e, int32_t token, int32_t parent, uint32_t depth, float score)
{
	e->pool[e->n_pool++] = (struct eagle_node){
		.token = token, .parent = parent, .depth = depth, .score = score, .exp = -1,
	};
}

/* Children of the node whose candidates are output `row` of the last forward (pool
 * index parent, -1 the root). The draft's log-probability of a candidate is its
 * logit minus the row's log-normaliser. */
static void grow(struct eagle *e, uint32_t row, int32_t parent, uint32_t k)
{
	uint32_t depth = parent < 0 ? 0 : e->pool[parent].depth + 1;
	const int32_t *top = e->cand + (size_t)row * e->n_cand;
	const float *val = e->cand_val + (size_t)row * e->n_cand;

	if (e->dynamic) {
		uint32_t w = e->width < k ? e->width : k;
		float base = parent < 0 ? 0.0f : e->pool[parent].score, z = e->cand_lse[row];
		for (uint32_t r = 0; r < w && top[r] >= 0 && e->n_pool < e->pool_cap; r++)
			add_node(e, top[r], parent, depth, base + val[r] - z);
		return;
	}
	/* Static: pool index = tree index; the children of `parent` take their ranks. */
	for (uint32_t i = 0; i < k; i++)
		if (e->s_parent[i] == parent)
			e->pool[i] = (struct eagle_node){.token = top[e->s_rank[i]],
							 .parent = parent, .depth = depth, .exp = -1};
}

/* Whether node i (of depth d) is expanded at the next level. */
static bool picked(const struct eagle *e, uint32_t i, uint32_t d, uint32_t k)
{
	const struct eagle_node *n = &e->pool[i];

	if (n->depth != d || n->token < 0)
		return false;
	if (!e->dynamic) {
		for (uint32_t c = i + 1; c < k; c++)
			if (e->s_parent[c] == (int32_t)i)
				return true;
		return false;
	}
	/* The width best of its level (ties to the earlier node). */
	uint32_t better = 0;
	for (uint32_t j = 0; j < e->n_pool; j++) {
		const struct eagle_node *o = &e->pool[j];
		better += o->depth == d && (o->score > n->score || (o->score == n->score && j < i));
	}
	return better < e->width;
}

/* One level: expands the picked nodes of depth d (with every node expanded before, so
 * that each sees its ancestors), and grows their children. False in *grew when none
 * was picked. */
static enum specd_status expand(struct eagle *e, const struct draft_seq *seq, uint32_t d,
				uint32_t k, bool *grew, struct specd_error *err)
{
	uint32_t first = e->n_exp, n_done = e->slots[seq->slot].n_done, n_pool = e->n_pool;
	enum specd_status st;

	for (uint32_t i = 0; i < (e->dynamic ? n_pool : k); i++) {
		if (e->n_exp < EAGLE_BATCH && e->n_exp - first < e->max_out && picked(e, i, d, k)) {
			e->pool[i].exp = (int32_t)e->n_exp;
			e->exp_node[e->n_exp++] = i;
		}
	}
	*grew = e->n_exp > first;
	if (!*grew)
		return SPECD_OK;
	for (uint32_t r = 0; r < e->n_exp; r++) {
		const struct eagle_node *n = &e->pool[e->exp_node[r]];
		const float *feat = n->parent < 0 ? e->root_feat
						  : e->exp_feat + (size_t)e->pool[n->parent].exp * e->dim;
		e->b_tok[r] = (uint32_t)n->token;
		e->b_slot[r] = seq->slot;
		e->b_pos[r] = n_done + n->depth;
		e->b_par[r] = n->parent < 0 ? -1 : e->pool[n->parent].exp;
		memcpy(e->b_feat + (size_t)r * e->dim, feat, e->dim * sizeof(float));
	}
	for (uint32_t r = first; r < e->n_exp; r++)
		e->b_out[r - first] = r;
	struct model_batch b = {
		.n_tokens = e->n_exp, .tokens = e->b_tok, .slots = e->b_slot, .pos = e->b_pos,
		.parent = e->b_par, .features = e->b_feat, .n_out = e->n_exp - first,
		.out_idx = e->b_out, .hidden = e->out_feat,
	};
	want_candidates(e, &b);
	if ((st = kv_truncate(model_kv(e->layer), seq->slot, n_done)) != SPECD_OK)
		return specd_errorf(err, st, "eagle: slot %u", seq->slot);
	if ((st = model_forward(e->layer, &b, err)) != SPECD_OK)
		return st;
	memcpy(e->exp_feat + (size_t)first * e->dim, e->out_feat,
	       (size_t)(e->n_exp - first) * e->dim * sizeof(float));
	for (uint32_t r = first; r < e->n_exp; r++)
		grow(e, r - first, (int32_t)e->exp_node[r], k);
	return SPECD_OK;
}

/* The dynamic tree's k best nodes, in pool order (parents first, siblings by rank). */
static uint32_t keep_best(struct eagle *e, uint32_t k)
{
	uint32_t n = e->n_pool < k ? e->n_pool : k;

	for (uint32_t i = 0; i < e->n_pool; i++)
		e->order[i] = i;
	/* Selection of the n best (score, then the earlier node): a child never scores
	 * above its parent, so the n form a tree. */
	for (uint32_t a = 0; a < n; a++) {
		uint32_t best = a;
		for (uint32_t b = a + 1; b < e->n_pool; b++) {
			const struct eagle_node *x = &e->pool[e->order[b]], *y = &e->pool[e->order[best]];
			if (x->score > y->score || (x->score == y->score && e->order[b] < e->order[best]))
				best = b;
		}
		uint32_t t = e->order[a];
		e->order[a] = e->order[best];
		e->order[best] = t;
	}
	for (uint32_t i = 0; i < e->n_pool; i++)
		e->out_of[i] = -1;
	for (uint32_t a = 0; a < n; a++)
		e->out_of[e->order[a]] = 0;
	return n;
}

static enum specd_status eagle_propose(void *state, const struct draft_seq *seq, uint32_t k,
				       struct draft_proposal *out, struct specd_error *err)
{
	struct eagle *e = state;
	enum specd_status st;
	bool ok, grew = true;

	out->n = 0;
	out->q_onehot = true;
	if (k > e->k_max)
		k = e->k_max;
	/* A dynamic node takes up to width children, a static one its tree's ranks. */
	e->n_cand = e->width < k ? e->width : k;
	for (uint32_t i = 0; !e->dynamic && i < k; i++)
		e->n_cand = i == 0 || e->s_rank[i] + 1 > e->n_cand ? e->s_rank[i] + 1 : e->n_cand;
	if (e->n_cand == 0)
		e->n_cand = 1;
	if ((st = catch_up(e, seq, true, &ok, err)) != SPECD_OK || !ok || k == 0)
		return st;
	if (!out->parent)
		return specd_errorf(err, SPECD_INTERNAL, "eagle: the caller takes no trees");
	e->n_pool = e->dynamic ? 0 : k;
	e->n_exp = 0;
	for (uint32_t i = 0; i < e->n_pool; i++) /* static: grown level by level */
		e->pool[i] = (struct eagle_node){.token = -1, .parent = e->s_parent[i],
						 .depth = e->s_depth[i], .exp = -1};
	grow(e, 0, -1, k);
	/* K nodes reach K levels at most: deeper expansions could never be kept. */
	uint32_t levels = e->depth < k ? e->depth : k;
	for (uint32_t d = 0; grew && d + 1 < levels; d++)
		if ((st = expand(e, seq, d, k, &grew, err)) != SPECD_OK)
			return st;
	/* The tree's rows are drafts: the cache keeps the history's entries only. */
	if ((st = kv_truncate(model_kv(e->layer), seq->slot, e->slots[seq->slot].n_done)))
		return specd_errorf(err, st, "eagle: slot %u", seq->slot);
	uint32_t n = 0;
	if (e->dynamic) {
		keep_best(e, k);
	} else {
		for (uint32_t i = 0; i < k; i++)
			e->out_of[i] = 0;
	}
	for (uint32_t i = 0; i < e->n_pool; i++) {
		const struct eagle_node *nd = &e->pool[i];
		/* A static node whose parent's logits gave no candidate (NaN) is left out. */
		if (e->out_of[i] < 0 || nd->token < 0 || (nd->parent >= 0 && e->out_of[nd->parent] < 0)) {
			e->out_of[i] = -1;
			continue;
		}
		e->out_of[i] = (int32_t)n;
		out->tokens[n] = nd->token;
		out->parent[n++] = nd->parent < 0 ? -1 : e->out_of[nd->parent];
	}
	out->n = n;
	out->tree = true;
	return SPECD_OK;
}

/* Another method proposes: take the rows in all the same (one layer over them, no LM
 * head), so the cache has no gap when this one proposes again. */
static enum specd_status eagle_warm(void *state, const struct draft_seq *seq,
				    struct specd_error *err)
{
	bool ok;
	return catch_up(state, seq, false, &ok, err);
}

static enum specd_status eagle_commit(void *state, const struct draft_seq *seq,
				      uint32_t n_accepted, int32_t next, struct specd_error *err)
{
	struct eagle *e = state;
	struct eagle_slot *s = &e->slots[seq->slot];
	enum specd_status st;

	(void)n_accepted;
	(void)next;
	/* The accepted tokens' entries wait for the target's own states, which come with
	 * the next propose. */
	if (s->live && (st = kv_truncate(model_kv(e->layer), seq->slot, s->n_done)))
		return specd_errorf(err, st, "eagle: slot %u", seq->slot);
	return SPECD_OK;
}

const struct draft_ops draft_eagle_ops = {
	.method = DRAFT_METHOD_EAGLE,
	.wants_hidden = true,
	.wants_history = true,
	.create = eagle_create,
	.destroy = eagle_destroy,
	.supports = eagle_supports,
	.memory_bytes = eagle_memory_bytes,
	.reset = eagle_reset,
	.propose = eagle_propose,
	.commit = eagle_commit,
	.warm = eagle_warm,
};
