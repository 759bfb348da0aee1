/* The Llama-family model (llama, qwen2): weights used in place from a GGUF mapping,
 * the KV cache pool, and one forward pass over a batch of tokens from one or more
 * sequences (DESIGN.md §5). The target ranks verify drafts with it; draft models and
 * specd-run decode with it.
 *
 * Exactness: the forward is batch-invariant. A token's logits are bitwise the same
 * whether it runs alone, with other sequences' tokens, as part of a longer causal run,
 * or as a node of a token tree (with the same ancestors), and after kv_truncate and
 * re-decoding, because every kernel computes a row with one fixed reduction order
 * (kernels/kern.h) and attention visits a token's rows in position order.
 *
 * Threads: a struct model is used by one thread at a time (the compute thread). */
#ifndef SPECD_MODEL_LLAMA_H
#define SPECD_MODEL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "kernels/dtype.h"
#include "kernels/kern.h"
#include "model/arch.h"
#include "model/comm.h"
#include "model/kv.h"

#define MODEL_DEFAULT_MAX_BATCH 64 /* tokens per forward when the config says 0 */
#define MODEL_MAX_LAYERS 512

/* Hyper-parameters, read from `<arch>.*` keys; n_vocab is the rows of token_embd. */
struct model_hparams {
	enum model_arch arch;
	uint32_t n_vocab;
	uint32_t dim;         /* embedding_length */
	uint32_t n_layers;    /* block_count */
	uint32_t n_heads;     /* attention.head_count */
	uint32_t n_kv_heads;  /* attention.head_count_kv (default: n_heads) */
	uint32_t head_dim;    /* attention.key_length, default dim / n_heads */
	uint32_t ffn_dim;     /* feed_forward_length */
	uint32_t n_ctx_train; /* context_length */
	float rms_eps;        /* attention.layer_norm_rms_epsilon */
	float rope_base;      /* rope.freq_base (default 10000) */
	bool tied_output;     /* no output.weight: the LM head is token_embd */
	enum kern_dtype wtype; /* the type of blk.0.attn_q.weight, for reports */
};

struct model_config {
	uint32_t n_slots;   /* KV slots (sequences held at once); 0: 1 */
	uint32_t n_ctx;     /* KV rows per slot; 0: n_ctx_train */
	uint32_t max_batch; /* tokens per forward, activations sized for it; 0: the default */
	/* The backend to run on, borrowed (must outlive the model); NULL: the model
	 * creates and owns a CPU backend. */
	struct kern_ctx *kern;
	/* Tensor-parallel hook, borrowed; NULL (or size 1) runs the model whole. With
	 * size T > 1 this rank loads shard `rank` of T (model/shard.h: heads, FFN columns
	 * and vocabulary rows split, the rest replicated). */
	const struct model_comm *comm;
	/* With convert, the unquantised weight matrices (f32, f16, bf16) are held as
	 * weight_type (one of those three), converted once at load (target.dtype);
	 * quantised matrices and the f32 norms stay as the file has them. */
	bool convert;
	enum kern_dtype weight_type;
	/* Not 0: on a host backend, copy the shard's weight matrices once at load into one
	 * block of transparent huge pages (specd_huge_alloc) rather than reading them from
	 * the file's mapping: faster decoding for a copy of the weights at load, in memory
	 * private to the process (target.huge_pages; docs/performance.md); but only when
	 * the copy takes at most this many bytes (SIZE_MAX: any), else the weights stay in
	 * the mapping and the log warns: the copy is worth running out of memory for. 0:
	 * no copy. A device backend copies the weights to the device anyway and ignores it. */
	size_t huge_pages_max;
};

struct gguf_file;
struct gguf_tensor;
struct model;

/* Opens a GGUF file and loads the model from it; the model owns the file. Errors:
 * everything gguf_open and model_load_gguf return. *out is written only on success. */
enum specd_status model_load(const char *path, const struct model_config *cfg,
			     struct model **out, struct specd_error *err);

/* Loads from an open file, which the model borrows: it must outlive the model, whose
 * weights point into its mapping. cfg may be NULL (all defaults). Errors:
 * SPECD_UNSUPPORTED (general.architecture is not one of model/arch.h; a tensor type
 * the ops cannot use, such as a non-f32 norm), SPECD_INVAL (a key missing or
 * impossible, a tensor missing or of the wrong shape; the message names the key or
 * tensor, with the shape found and the one expected), SPECD_NOMEM. */
enum specd_status model_load_gguf(const struct gguf_file *f, const struct model_config *cfg,
				  struct model **out, struct specd_error *err);

/* Frees the model, its KV cache and activations, its own backend and file if it owns
 * them. NULL is a no-op. */
void model_destroy(struct model *m);

const struct model_hparams *model_hparams(const struct model *m);
/* The file the weights come from (e.g. for tok_load_gguf). */
const struct gguf_file *model_gguf(const struct model *m);
/* The LM head in the file: output.weight, or token_embd.weight when tied; the whole
 * (n_vocab, dim) matrix, also on a shard. NULL when the file has no such tensor. */
const struct gguf_tensor *model_lm_head(const struct model *m);
/* The LM head as backend k holds it for this model (its device copy on a device
 * backend), for a drafter on k to share instead of copying; NULL when the model runs
 * on another backend or is a shard (it holds a slice of the vocabulary). */
const struct kern_mat *model_output_on(const struct model *m, const struct kern_ctx *k);
/* The model's KV cache pool: kv_len, kv_truncate, kv_compact. */
struct kv_cache *model_kv(struct model *m);
struct kern_ctx *model_kern(struct model *m);
uint32_t model_max_batch(const struct model *m);

/* One batch of tokens and the outputs wanted from it. Arrays are caller-owned.
 *
 * Causal batch (parent == NULL): token i is appended to its slot: pos[i] must equal
 * the slot's length at that point (kv_len plus the slot's earlier tokens in this
 * batch), its K/V goes to row pos[i], and it sees rows 0..pos[i].
 *
 * Tree batch (parent != NULL): parent[i] is the batch index (< i, same slot) of token
 * i's parent, or -1 for a root, which follows the slot's committed rows. pos[i] must be
 * kv_len(slot) for a root and pos[parent] + 1 otherwise. A token sees the committed rows
 * and its ancestors and itself. The tree tokens of a slot are written to rows
 * kv_len, kv_len + 1, ... in batch order and the slot's length grows by their number;
 * the caller then keeps the accepted branch with kv_compact (or drops all with
 * kv_truncate). A chain (each parent the previous token) is the causal case.
 *
 * Outputs are for the batch tokens out_idx[0..n_out): logits (n_out, n_vocab), the final
 * hidden state after the output norm (n_out, dim; an EAGLE layer, which has no output
 * norm, gives its last layer's output, the feature it predicts), and the residual
 * stream after each layer layers[j] (0-based) at layer_hidden + (j * n_out + k) * dim.
 * Any output pointer may be NULL when not wanted.
 *
 * An EAGLE layer (model/eagle.h) also takes `features`: row i is the target's hidden
 * state that token i follows, joined to the token's embedding at the input. Other
 * models refuse it. */
/* A draw from rows of the batch's logits, taken where they are (kern_sample), so a
 * sampling caller on a device backend need not download them: logits rows
 * [row, row + rows) (indices among the outputs with logits) through the sampler's
 * transform with `params`; row i's token into out[i], drawn with uniform u[i] (host
 * arrays of `rows`). The op refuses the whole draw when one of its rows has no logit
 * above -inf (a broken model), after the batch has run. */
#define MODEL_MAX_DRAW_ROWS 65 /* rows of one draw: a verify of DRAFT_MAX_TOKENS + 1 */
struct model_draw {
	uint32_t row;
	uint32_t rows; /* 1 .. MODEL_MAX_DRAW_ROWS */
	struct kern_sample_params params;
	const float *u;
	uint32_t *out;
};

struct model_batch {
	uint32_t n_tokens;       /* 1 .. model_max_batch */
	const uint32_t *tokens;  /* (n_tokens) ids < n_vocab */
	const uint32_t *slots;   /* (n_tokens) < n_slots */
	const uint32_t *pos;     /* (n_tokens) */
	const int32_t *parent;   /* (n_tokens) or NULL for causal */

	uint32_t n_out;          /* 0 .. n_tokens */
	const uint32_t *out_idx; /* (n_out) batch indices */
	float *logits;           /* (n_out, n_vocab) or NULL; a shard writes its vocabulary
				    slice (n_out, model_shard(m)->n_vocab) */
	/* (n_out - n_hidden_only) host, or NULL: each logits row's argmax (the lowest id
	 * on ties, never a NaN), taken where the logits are, so a greedy caller on a
	 * device backend need not download them: logits may then be NULL. A host backend
	 * still needs logits (it computes into them); a shard refuses ids (its argmax is
	 * model_shard_argmax's, across shards). */
	uint32_t *ids;
	float *hidden;           /* (n_out, dim) or NULL */
	uint32_t n_layers_out;
	const uint32_t *layers;  /* (n_layers_out) layer indices < n_layers */
	float *layer_hidden;     /* (n_layers_out, n_out, dim) or NULL when n_layers_out is 0 */
	const float *features;   /* (n_tokens, dim) host: EAGLE layers only, else NULL */
	/* The last n_hidden_only outputs get the hidden state (and layer outputs) but no
	 * logits: prompt rows whose states a drafter keeps (EAGLE), for which the LM head
	 * would be wasted. logits is then (n_out - n_hidden_only, n_vocab). */
	uint32_t n_hidden_only;
	/* Each logits row's top_k best ids, best first (kern.h struct kern_topk_rows:
	 * top_ids (n_out - n_hidden_only, top_k) host; top_vals the same, or NULL: their
	 * logits; top_lse (n_out - n_hidden_only) or NULL: log(sum(exp(row)))), taken
	 * where the logits are, so a tree drafter on a device backend need not download
	 * them. top_k 0: none; at most KERN_TOPK_MAX. A host backend needs logits to
	 * compute into, and a shard refuses them, as for ids. */
	uint32_t top_k;
	int32_t *top_ids;
	float *top_vals;
	float *top_lse;
	/* Draws from the logits rows (struct model_draw), on a device backend after
	 * model_reserve_draws (a host caller samples the rows it has); a shard refuses
	 * them, as it refuses ids. */
	uint32_t n_draws;
	const struct model_draw *draws;
};

/* Runs the batch: writes its tokens' K/V into the cache, advances the slots' lengths
 * and fills the requested outputs. Makes no allocation. The batch is checked before
 * anything is written: on SPECD_INVAL (a token, slot, position, parent or index out of
 * range, a slot whose context is full; the message says which token and why) the
 * cache is unchanged. A communication hook's error is passed up; the slots' lengths
 * are then unchanged but rows past them may have been rewritten (harmless: they are
 * never read before being written again). Compute thread only. */
enum specd_status model_forward(struct model *m, const struct model_batch *b,
				struct specd_error *err);

/* Reserves the device scratch model_batch.draws needs (kern_sample_work_bytes for
 * MODEL_MAX_DRAW_ROWS rows), for a target whose verifier draws where the logits are;
 * models that never draw (draft models, EAGLE layers) are spared it. Nothing to do
 * on a host backend or when done before. Errors: SPECD_NOMEM. Compute thread, not
 * during a forward. */
enum specd_status model_reserve_draws(struct model *m, struct specd_error *err);

#endif
