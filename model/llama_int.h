/* Folder-private layout of struct model, shared by the loader (llama_load.c), which
 * fills it, and the forward pass (llama_forward.c), which reads it. Nothing outside
 * model/ includes this. */
#ifndef SPECD_MODEL_LLAMA_INT_H
#define SPECD_MODEL_LLAMA_INT_H

#include "llama.h"

struct llama_layer {
	const float *attn_norm; /* (dim) */
	struct kern_mat wq;     /* (q_dim rows of dim) */
	struct kern_mat wk;     /* (kv_dim rows of dim) */
	struct kern_mat wv;     /* (kv_dim rows of dim) */
	const float *bq;        /* (q_dim) or NULL: qwen2 only */
	const float *bk;        /* (kv_dim) or NULL */
	const float *bv;        /* (kv_dim) or NULL */
	struct kern_mat wo;     /* (dim rows of q_dim) */
	const float *ffn_norm;  /* (dim) */
	struct kern_mat w_gate; /* (ffn rows of dim) */
	struct kern_mat w_up;   /* (ffn rows of dim) */
	struct kern_mat w_down; /* (dim rows of ffn) */
};

/* Activations and per-batch bookkeeping for max_batch tokens, allocated at load so
 * the forward never allocates. All host memory (the CPU backend's). */
struct llama_acts {
	float *x;        /* (max_batch, dim) the residual stream */
	float *xb;       /* (max_batch, dim) normed input / projection output */
	float *q;        /* (max_batch, q_dim) */
	float *k;        /* (max_batch, kv_dim) */
	float *v;        /* (max_batch, kv_dim) */
	float *att;      /* (max_batch, q_dim) attention output */
	float *hb;       /* (max_batch, ffn) gate, then silu(gate) * up */
	float *hb2;      /* (max_batch, ffn) up */
	float *out;      /* (max_batch, dim) rows chosen for output, final-normed */
	uint32_t *row;      /* (max_batch) cache row each token writes */
	uint32_t *n_prefix; /* (max_batch) committed rows each token sees */
	uint64_t *tree;     /* (max_batch, tree_words) ancestor-and-self bits, tree batches */
	size_t tree_words;
	uint32_t *len;      /* (n_slots) slot lengths as the batch advances them */
	uint32_t *base;     /* (n_slots) slot lengths before the batch */
};

struct model {
	struct model_hparams hp;
	uint32_t q_dim;  /* n_heads * head_dim */
	uint32_t kv_dim; /* n_kv_heads * head_dim */
	uint32_t max_batch;
	enum kern_rope_layout rope_layout;

	struct gguf_file *owned_file; /* set when model_load opened it */
	const struct gguf_file *file;
	struct kern_ctx *owned_kern;  /* set when the model created its backend */
	struct kern_ctx *kern;
	const struct model_comm *comm; /* NULL or size 1 today */

	struct kern_mat tok_embd; /* (n_vocab rows of dim) */
	const float *output_norm; /* (dim) */
	struct kern_mat output;   /* (n_vocab rows of dim); token_embd when tied */
	struct llama_layer *layers; /* (n_layers) */

	struct kv_cache *kv;
	struct llama_acts a;
};

#endif
