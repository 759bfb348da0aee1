/* Folder-private layout of struct model, shared by the loader (llama_load.c), which
 * fills it, and the forward pass (llama_forward.c), which reads it. Nothing outside
 * model/ includes this. */
#ifndef SPECD_MODEL_LLAMA_INT_H
#define SPECD_MODEL_LLAMA_INT_H

#include "llama.h"
#include "shard.h"

struct safetensors_file;

struct llama_layer {
	const float *attn_norm; /* (dim); NULL: none (an EAGLE layer 0 reads its input as is) */
	struct kern_mat wq;     /* (q_dim rows of dim) */
	struct kern_mat wk;     /* (kv_dim rows of dim) */
	struct kern_mat wv;     /* (kv_dim rows of dim) */
	const float *bq;        /* (q_dim) or NULL: qwen2 only */
	const float *bk;        /* (kv_dim) or NULL */
	const float *bv;        /* (kv_dim) or NULL */
	/* On a device backend, wq, wk and wv uploaded as one matrix, their rows one after
	 * another (and the biases as one vector), so Q, K and V come from one matmul (one
	 * launch, the GPU's warps over all their rows); wq, wk, wv, bq, bk and bv are then
	 * views into it. data NULL: three matrices (a host backend, or types that differ). */
	struct kern_mat wqkv;
	const float *bqkv;
	struct kern_mat wo;     /* (dim rows of q_dim) */
	const float *ffn_norm;  /* (dim) */
	struct kern_mat w_gate; /* (ffn rows of dim) */
	struct kern_mat w_up;   /* (ffn rows of dim) */
	struct kern_mat w_down; /* (dim rows of ffn) */
};

/* Activations and per-batch bookkeeping for max_batch tokens, allocated at load so
 * the forward never allocates. The float buffers up to `logits` are the backend's
 * memory (kern_alloc: the device's for CUDA); the rest is host memory. */
struct llama_acts {
	float *x;        /* (max_batch, dim) the residual stream */
	float *xb;       /* (max_batch, dim) normed input / projection output */
	/* (max_batch, q_dim + 2 kv_dim): each token's query, key and value side by side,
	 * as one projection writes them; q, k and v point at its three column blocks
	 * (row stride q_dim + 2 kv_dim) */
	float *qkv;
	float *q, *k, *v;
	float *att;      /* (max_batch, att_ld) attention output at column att_pad; the
			  * columns around it stay zero (model.att_pad) */
	float *hb;       /* (max_batch, ffn) gate, then silu(gate) * up */
	float *hb2;      /* (max_batch, ffn) up */
	float *out;      /* (max_batch, dim) rows chosen for output, final-normed */
	float *zeros;    /* (dim) embedding rows of ids outside this shard's vocabulary */
	float *cat;      /* (max_batch, 2 dim) EAGLE layers only: [embedding, feature] */
	uint32_t *iota;  /* (max_batch) host, EAGLE layers only: 0, 1, 2, ...: the rows of
			  * cat the batch's features go to (kern_set_rows) */
	float *logits;   /* (max_batch, n_vocab) device backends only: the LM head's
			  * output before it is downloaded; NULL on a host backend */
	void *sample_work; /* kern_sample_work_bytes(MODEL_MAX_DRAW_ROWS, n_vocab) of
			    * device memory after model_reserve_draws, else NULL:
			    * model_draw's scratch */
	float *stage;    /* (max_batch, dim) host, device backends with a hook only: the
			  * all-reduce's buffer (the hook takes host memory) */
	uint32_t *row;      /* (max_batch) cache row each token writes */
	uint32_t *kv_row;   /* (max_batch) the same as a row of the layer's whole cache:
			     * slot x n_ctx + row (kv_create keeps that below 2^32) */
	uint32_t *n_prefix; /* (max_batch) committed rows each token sees */
	uint64_t *tree;     /* (max_batch, tree_words) ancestor-and-self bits, tree batches */
	size_t tree_words;
	uint32_t *len;      /* (n_slots) slot lengths as the batch advances them */
	uint32_t *base;     /* (n_slots) slot lengths before the batch */
	float *amax_val;    /* (max_batch) model_shard_argmax: local maxima */
	int32_t *amax_idx;  /* (max_batch) and their whole-vocabulary ids */
	uint32_t *amax_loc; /* (max_batch) local argmax */
	size_t *counts;     /* (size) model_shard_gather_logits: vocab rows per shard */
	size_t *displs;     /* (size) and their first row */
};

/* The KV heads of this shard, as groups of consecutive query heads reading one KV
 * head: with uneven replicated splits a shard's groups may differ in size, and the
 * attention op needs uniform groups, so the forward runs it once per group then. */
struct llama_kv_group {
	uint32_t q0, n_q; /* local query heads */
};

struct model {
	struct model_hparams hp;
	/* This shard's sizes (the whole model's without a hook): */
	uint32_t n_heads;    /* query heads */
	uint32_t n_kv_heads; /* KV heads */
	uint32_t q_dim;      /* n_heads * head_dim */
	uint32_t kv_dim;     /* n_kv_heads * head_dim */
	uint32_t n_ffn;      /* FFN columns */
	uint32_t n_vocab;    /* vocabulary rows of tok_embd and output */
	struct model_shard shard;
	struct llama_kv_group *groups; /* (n_kv_heads) */
	bool uniform_groups; /* every group the same size: one attention call */
	/* The O projection's input: a shard whose heads start or end inside a
	 * quantisation block keeps whole blocks of O's columns, and its attention
	 * output sits att_pad columns into rows of att_ld, zeros around it. */
	uint32_t att_pad, att_ld;
	uint32_t max_batch;
	enum kern_rope_layout rope_layout;

	struct gguf_file *owned_file; /* set when model_load opened it */
	const struct gguf_file *file;
	struct kern_ctx *owned_kern;  /* set when the model created its backend */
	struct kern_ctx *kern;
	const struct model_comm *comm; /* NULL or borrowed; size 1 runs whole */
	void *copies; /* the shard's own weight buffer (O and down column slices) */
	void *converted; /* the matrices held in model_config.weight_type (llama_convert.c) */
	size_t converted_bytes;
	void *huge;       /* the matrices in huge pages (llama_huge.c), huge_bytes long */
	size_t huge_bytes;
	/* A device backend's copies of every weight (kern_upload_mat / kern_upload),
	 * made once at load; the matrices and vectors below then point into them. */
	void **dev_weights;
	size_t n_dev_weights;

	struct kern_mat tok_embd; /* (n_vocab rows of dim), this shard's rows */
	const float *output_norm; /* (dim); NULL: none (an EAGLE layer) */
	struct kern_mat output;   /* (n_vocab rows of dim); token_embd when tied */
	struct llama_layer *layers; /* (n_layers) */

	/* An EAGLE layer (eagle_load.c): the input projection of [embedding, feature]
	 * (dim rows of 2 dim) and its bias (or NULL), and the heads file they live in.
	 * tok_embd and output are then the target's, borrowed from its file. */
	struct kern_mat fc;
	const float *fc_bias;
	struct safetensors_file *st;

	struct kv_cache *kv;
	struct llama_acts a;
};

/* llama_load.c, for eagle_load.c: the KV cache and activations of a model whose
 * weights and sizes are set, on m->kern. Errors: those of kv_create, SPECD_NOMEM. */
enum specd_status llama_alloc_state(struct model *m, const struct model_config *cfg,
				    struct specd_error *err);

/* llama_load.c, for eagle_load.c too: on a device backend, copies every weight to it
 * once and points the model at the copies (kern_upload_mat, kern_upload), recorded in
 * dev_weights for model_destroy; embeddings false leaves tok_embd and output as they
 * are (an EAGLE layer's, borrowed from a target already on the device). Errors: the
 * backend's (SPECD_NOMEM, SPECD_INVAL, SPECD_CUDA), named. */
enum specd_status llama_upload_weights(struct model *m, bool embeddings, struct specd_error *err);

/* llama_convert.c: holds every unquantised weight matrix (f32, f16, bf16) of the
 * shard as `to` (one of those three) in m->converted; quantised ones are left as they
 * are. Updates hp.wtype and the shard's resident bytes. SPECD_INVAL for another `to`,
 * SPECD_NOMEM. */
enum specd_status llama_convert_weights(struct model *m, enum kern_dtype to,
					struct specd_error *err);

/* llama_convert.c, for llama_huge.c too, the two places that move weight matrices into
 * a block of their own:
 * - llama_matrices: every weight matrix of the model into out
 *   (LLAMA_MAX_MATRICES(n_layers) of room), the tied LM head once (it is tok_embd);
 *   returns how many.
 * - llama_packed_bytes: the room one n_out x n_in matrix of type t takes in such a
 *   block, packed rows, rounded up so that the next starts on a cache line.
 * - llama_free_unread: frees the shard's column copies and the converted matrices once
 *   none of the n matrices reads from them. */
#define LLAMA_MAX_MATRICES(n_layers) (2 + 7 * (size_t)(n_layers))
size_t llama_matrices(struct model *m, struct kern_mat **out);
size_t llama_packed_bytes(enum kern_dtype t, size_t n_in, size_t n_out);
void llama_free_unread(struct model *m, struct kern_mat *const *w, size_t n);

/* llama_huge.c: copies the shard's weight matrices once into one block of huge pages
 * (model_config.huge_pages_max) and points the model at it, when the copy takes at
 * most max bytes (else nothing changes but a warning in the log); the shard's column
 * copies and converted matrices are freed once nothing reads them. An untied
 * embedding table stays where it is (a token reads one row of it). Host backends
 * only. SPECD_NOMEM, named, with the way out. */
enum specd_status llama_weights_to_huge_pages(struct model *m, size_t max,
					      struct specd_error *err);

/* llama_shard.c: cuts the whole-model matrices the loader found down to shard `rank`
 * of `size` (size 1: the whole model, nothing copied) and fills m->shard and the
 * shard's sizes. SPECD_UNSUPPORTED when a shard would get no heads, FFN columns or
 * vocabulary rows; SPECD_NOMEM. */
enum specd_status llama_shard_apply(struct model *m, uint32_t rank, uint32_t size,
				    struct specd_error *err);

#endif
