/* Model load: hyper-parameters from the GGUF keys, every tensor found by llama.cpp's
 * name and checked against them (an error names the tensor, the shape found and the
 * one expected), weights used in place from the mapping, cut to this shard's part
 * when a tensor-parallel hook is given (llama_shard.c), then the KV pool and the
 * activations allocated once for max_batch tokens. A key or tensor asking for what
 * the forward pass does not compute (RoPE scaling, partial rotary, a tensor nothing
 * reads) is refused by name: such a file would load and quietly write other text. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "llama_int.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "model/safetensors.h"

#define MAX_BATCH_LIMIT 4096

struct loader {
	const struct gguf_file *f;
	const char *arch; /* key prefix */
	uint8_t *used;    /* (gguf_tensor_count) 1 once tensor() has handed it out */
	struct specd_error *err;
};

static enum specd_status key_u32(const struct loader *ld, const char *suffix, bool required,
				 uint32_t *out)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
	if (gguf_get_u32(ld->f, key, out))
		return SPECD_OK;
	if (!required && !gguf_has_key(ld->f, key))
		return SPECD_OK;
	return specd_errorf(ld->err, SPECD_INVAL, "%s: %s", key,
			    gguf_has_key(ld->f, key) ? "not an unsigned 32-bit integer"
						    : "missing");
}

static enum specd_status key_f32(const struct loader *ld, const char *suffix, bool required,
				 float *out)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
	if (gguf_get_f32(ld->f, key, out))
		return SPECD_OK;
	if (!required && !gguf_has_key(ld->f, key))
		return SPECD_OK;
	return specd_errorf(ld->err, SPECD_INVAL, "%s: %s", key,
			    gguf_has_key(ld->f, key) ? "not a float" : "missing");
}

/* The tensor `name`, which must have shape [ne0, ne1] (ne1 = 1 for a vector). */
static enum specd_status tensor(const struct loader *ld, const char *name, uint64_t ne0,
				uint64_t ne1, bool required, const struct gguf_tensor **out)
{
	const struct gguf_tensor *t = gguf_find_tensor(ld->f, name);
	if (!t) {
		if (!required) {
			*out = NULL;
			return SPECD_OK;
		}
		return specd_errorf(ld->err, SPECD_INVAL, "tensor %s: missing", name);
	}
	ld->used[gguf_tensor_index(ld->f, t)] = 1;
	if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
		char found[96];
		if (t->ne[2] != 1 || t->ne[3] != 1)
			snprintf(found, sizeof(found), "[%" PRIu64 ", %" PRIu64 ", %" PRIu64
				 ", %" PRIu64 "]", t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
		else
			snprintf(found, sizeof(found), "[%" PRIu64 ", %" PRIu64 "]", t->ne[0],
				 t->ne[1]);
		return specd_errorf(ld->err, SPECD_INVAL,
				    "tensor %s: shape %s, expected [%" PRIu64 ", %" PRIu64 "]",
				    name, found, ne0, ne1);
	}
	*out = t;
	return SPECD_OK;
}

static enum specd_status vec_f32(const struct loader *ld, const char *name, uint64_t n,
				 bool required, const float **out)
{
	const struct gguf_tensor *t = NULL;
	enum specd_status st = tensor(ld, name, n, 1, required, &t);
	if (st != SPECD_OK)
		return st;
	if (!t) {
		*out = NULL;
		return SPECD_OK;
	}
	if (t->type != KERN_F32)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED, "tensor %s: type %s, expected f32",
				    name, kern_dtype_name(t->type));
	*out = t->data;
	return SPECD_OK;
}

/* A weight matrix of n_out rows of n_in, in any type the kernels take. */
static enum specd_status mat(const struct loader *ld, const char *name, uint64_t n_in,
			     uint64_t n_out, bool required, struct kern_mat *out, bool *found)
{
	const struct gguf_tensor *t = NULL;
	enum specd_status st = tensor(ld, name, n_in, n_out, required, &t);
	if (st != SPECD_OK)
		return st;
	if (found)
		*found = t != NULL;
	if (!t)
		return SPECD_OK;
	struct kern_mat m = kern_mat_packed(t->type, n_in, n_out, t->data);
	if (m.row_bytes == 0)
		return specd_errorf(ld->err, SPECD_INVAL,
				    "tensor %s: rows of %" PRIu64 " are not whole %s blocks", name,
				    n_in, kern_dtype_name(t->type));
	*out = m;
	return SPECD_OK;
}

/* A Hugging Face view says its RoPE pairing in MODEL_KEY_ROPE_LAYOUT (model_file.h);
 * a GGUF file has no such key and keeps its architecture's layout. */
static enum specd_status read_rope_layout(const struct gguf_file *f,
					  enum kern_rope_layout *layout, struct specd_error *err)
{
	struct gguf_str s;
	if (!gguf_has_key(f, MODEL_KEY_ROPE_LAYOUT))
		return SPECD_OK;
	if (!gguf_get_str(f, MODEL_KEY_ROPE_LAYOUT, &s))
		return specd_errorf(err, SPECD_INVAL, "%s: not a string", MODEL_KEY_ROPE_LAYOUT);
	if (s.len == 6 && memcmp(s.ptr, "halves", 6) == 0)
		*layout = KERN_ROPE_HALVES;
	else if (s.len == 8 && memcmp(s.ptr, "adjacent", 8) == 0)
		*layout = KERN_ROPE_ADJACENT;
	else
		return specd_errorf(err, SPECD_INVAL, "%s: '%.*s' (halves or adjacent expected)",
				    MODEL_KEY_ROPE_LAYOUT, (int)(s.len > 32 ? 32 : s.len), s.ptr);
	return SPECD_OK;
}

static enum specd_status read_hparams(const struct loader *ld, struct model_hparams *hp)
{
	enum specd_status st;
	hp->rope_base = 10000.0f;
	if ((st = key_u32(ld, "embedding_length", true, &hp->dim)) != SPECD_OK ||
	    (st = key_u32(ld, "block_count", true, &hp->n_layers)) != SPECD_OK ||
	    (st = key_u32(ld, "feed_forward_length", true, &hp->ffn_dim)) != SPECD_OK ||
	    (st = key_u32(ld, "attention.head_count", true, &hp->n_heads)) != SPECD_OK ||
	    (st = key_u32(ld, "context_length", true, &hp->n_ctx_train)) != SPECD_OK ||
	    (st = key_f32(ld, "attention.layer_norm_rms_epsilon", true, &hp->rms_eps)) != SPECD_OK ||
	    (st = key_f32(ld, "rope.freq_base", false, &hp->rope_base)) != SPECD_OK)
		return st;
	hp->n_kv_heads = hp->n_heads;
	if ((st = key_u32(ld, "attention.head_count_kv", false, &hp->n_kv_heads)) != SPECD_OK)
		return st;
	if (hp->dim == 0 || hp->n_layers == 0 || hp->ffn_dim == 0 || hp->n_heads == 0 ||
	    hp->n_kv_heads == 0 || hp->n_ctx_train == 0)
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s: embedding_length %u, block_count %u, feed_forward_length "
				    "%u, head_count %u, head_count_kv %u, context_length %u: none may be 0",
				    ld->arch, hp->dim, hp->n_layers, hp->ffn_dim, hp->n_heads,
				    hp->n_kv_heads, hp->n_ctx_train);
	if (hp->n_heads > 65536)
		return specd_errorf(ld->err, SPECD_INVAL, "%s.attention.head_count: %u heads",
				    ld->arch, hp->n_heads);
	if (hp->n_layers > MODEL_MAX_LAYERS)
		return specd_errorf(ld->err, SPECD_INVAL, "%s.block_count: %u layers, at most %d",
				    ld->arch, hp->n_layers, MODEL_MAX_LAYERS);
	char key_length[128];
	snprintf(key_length, sizeof(key_length), "%s.attention.key_length", ld->arch);
	if (gguf_has_key(ld->f, key_length)) {
		if ((st = key_u32(ld, "attention.key_length", true, &hp->head_dim)) != SPECD_OK)
			return st;
	} else if (hp->dim % hp->n_heads) {
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s.embedding_length %u is not a multiple of head_count %u",
				    ld->arch, hp->dim, hp->n_heads);
	} else {
		hp->head_dim = hp->dim / hp->n_heads;
	}
	if (hp->head_dim == 0 || hp->head_dim % 2 || hp->head_dim > KERN_MAX_HEAD_DIM)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s: head size %u (must be even and at most %d)", ld->arch,
				    hp->head_dim, KERN_MAX_HEAD_DIM);
	if (hp->n_heads % hp->n_kv_heads)
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s: head_count %u is not a multiple of head_count_kv %u",
				    ld->arch, hp->n_heads, hp->n_kv_heads);
	if (!(hp->rms_eps >= 0.0f) || !(hp->rope_base > 0.0f))
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s: layer_norm_rms_epsilon %g and rope.freq_base %g must be "
				    "non-negative and positive", ld->arch, (double)hp->rms_eps,
				    (double)hp->rope_base);
	return SPECD_OK;
}

/* `<arch>.suffix` into key[0..cap), for messages and lookups. */
static const char *arch_key(const struct loader *ld, const char *suffix, char *key, size_t cap)
{
	snprintf(key, cap, "%s.%s", ld->arch, suffix);
	return key;
}

/* RoPE as the kernels compute it: over the whole head, angle pos * base^(-2i/d),
 * nothing scaled. llama.cpp reads the scaling as the type (linear when the key is
 * absent) and a factor from rope.scaling.factor, else rope.scale_linear, where 0 and
 * 1 scale nothing, and type "none" never scales; so do we, and refuse the rest. */
static enum specd_status check_rope_scaling(const struct loader *ld)
{
	char type_key[128], factor_key[128], linear_key[128];
	const char *factor_from = NULL;
	struct gguf_str type = {.ptr = "linear", .len = 6};
	float factor = 0.0f;

	arch_key(ld, "rope.scaling.type", type_key, sizeof(type_key));
	arch_key(ld, "rope.scaling.factor", factor_key, sizeof(factor_key));
	arch_key(ld, "rope.scale_linear", linear_key, sizeof(linear_key));
	if (gguf_has_key(ld->f, type_key) && !gguf_get_str(ld->f, type_key, &type))
		return specd_errorf(ld->err, SPECD_INVAL, "%s: not a string", type_key);
	if (gguf_has_key(ld->f, factor_key))
		factor_from = factor_key;
	else if (gguf_has_key(ld->f, linear_key))
		factor_from = linear_key;
	if (factor_from && !gguf_get_f32(ld->f, factor_from, &factor))
		return specd_errorf(ld->err, SPECD_INVAL, "%s: not a float", factor_from);
	if ((type.len == 4 && memcmp(type.ptr, "none", 4) == 0) || factor == 0.0f ||
	    factor == 1.0f)
		return SPECD_OK;
	return specd_errorf(ld->err, SPECD_UNSUPPORTED,
			    "rope scaling '%.*s' by %g (%s%s%s) is not supported (only unscaled "
			    "RoPE is: type none, or factor 1)",
			    (int)(type.len > 32 ? 32 : type.len), type.ptr, (double)factor,
			    gguf_has_key(ld->f, type_key) ? type_key : "",
			    gguf_has_key(ld->f, type_key) ? ", " : "", factor_from);
}

/* Keys that would change the output of the llama and qwen2 graphs beyond what
 * read_hparams takes: partial rotary, a value head of another size, experts, scaled
 * RoPE; and the tensor of RoPE frequency factors (Llama 3.1's scaling), accepted only
 * when every factor is exactly 1: it then divides each frequency by 1, nothing. */
static enum specd_status check_features(const struct loader *ld, const struct model_hparams *hp)
{
	char key[128];
	/* Absent keys leave what the graphs compute: RoPE over the whole head, values
	 * the size of keys, no experts. */
	uint32_t rope_dim = hp->head_dim, value_len = hp->head_dim, experts = 0;
	enum specd_status st;

	if ((st = key_u32(ld, "rope.dimension_count", false, &rope_dim)) != SPECD_OK ||
	    (st = key_u32(ld, "attention.value_length", false, &value_len)) != SPECD_OK ||
	    (st = key_u32(ld, "expert_count", false, &experts)) != SPECD_OK)
		return st;
	if (rope_dim != hp->head_dim)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s %u with a head size of %u: partial rotary embedding is not "
				    "supported (RoPE over the whole head is)",
				    arch_key(ld, "rope.dimension_count", key, sizeof(key)), rope_dim,
				    hp->head_dim);
	if (value_len != hp->head_dim)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s %u with a key head size of %u: value heads of another size "
				    "are not supported",
				    arch_key(ld, "attention.value_length", key, sizeof(key)),
				    value_len, hp->head_dim);
	if (experts > 0)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s %u: mixture-of-experts models are not supported",
				    arch_key(ld, "expert_count", key, sizeof(key)), experts);
	if ((st = check_rope_scaling(ld)) != SPECD_OK)
		return st;

	const float *factors = NULL;
	if ((st = vec_f32(ld, "rope_freqs.weight", hp->head_dim / 2, false, &factors)) != SPECD_OK)
		return st;
	for (uint32_t i = 0; factors && i < hp->head_dim / 2; i++)
		if (factors[i] != 1.0f)
			return specd_errorf(ld->err, SPECD_UNSUPPORTED,
					    "tensor rope_freqs.weight: RoPE frequency factors (Llama "
					    "3.1-style rope scaling) are not supported; factor %u is %g "
					    "(only all 1, which changes nothing, is accepted)", i,
					    (double)factors[i]);
	return SPECD_OK;
}

/* Every tensor of the file must have been taken by the loader: one nothing reads
 * (an output bias, a norm's bias, a new architecture's extra weight) means a
 * feature the forward pass lacks, so the file is refused, naming the first in file
 * order, as llama.cpp refuses a wrong number of tensors. */
static enum specd_status check_all_used(const struct loader *ld)
{
	uint64_t n = gguf_tensor_count(ld->f), unused = 0, first = 0;

	for (uint64_t i = n; i-- > 0;) {
		if (!ld->used[i]) {
			unused++;
			first = i;
		}
	}
	if (unused == 0)
		return SPECD_OK;
	return specd_errorf(ld->err, SPECD_UNSUPPORTED,
			    "tensor %s: not supported: nothing in a %s model reads it (%" PRIu64
			    " of the file's %" PRIu64 " tensors unused)",
			    gguf_tensor_at(ld->f, first)->name, ld->arch, unused, n);
}

static enum specd_status load_layer(const struct loader *ld, const struct model *m,
				    uint32_t l, struct llama_layer *ly)
{
	const struct model_hparams *hp = &m->hp;
	bool bias = model_arch_qkv_bias(hp->arch);
	char name[96];
	enum specd_status st;
#define NAME(part) (snprintf(name, sizeof(name), "blk.%u." part, l), name)
	if ((st = vec_f32(ld, NAME("attn_norm.weight"), hp->dim, true, &ly->attn_norm)) ||
	    (st = mat(ld, NAME("attn_q.weight"), hp->dim, m->q_dim, true, &ly->wq, NULL)) ||
	    (st = mat(ld, NAME("attn_k.weight"), hp->dim, m->kv_dim, true, &ly->wk, NULL)) ||
	    (st = mat(ld, NAME("attn_v.weight"), hp->dim, m->kv_dim, true, &ly->wv, NULL)) ||
	    (st = mat(ld, NAME("attn_output.weight"), m->q_dim, hp->dim, true, &ly->wo, NULL)) ||
	    (st = vec_f32(ld, NAME("ffn_norm.weight"), hp->dim, true, &ly->ffn_norm)) ||
	    (st = mat(ld, NAME("ffn_gate.weight"), hp->dim, hp->ffn_dim, true, &ly->w_gate, NULL)) ||
	    (st = mat(ld, NAME("ffn_up.weight"), hp->dim, hp->ffn_dim, true, &ly->w_up, NULL)) ||
	    (st = mat(ld, NAME("ffn_down.weight"), hp->ffn_dim, hp->dim, true, &ly->w_down, NULL)))
		return st;
	/* qwen2 files carry Q/K/V biases; a llama file may too (some fine-tunes do). */
	if ((st = vec_f32(ld, NAME("attn_q.bias"), m->q_dim, bias, &ly->bq)) ||
	    (st = vec_f32(ld, NAME("attn_k.bias"), m->kv_dim, bias, &ly->bk)) ||
	    (st = vec_f32(ld, NAME("attn_v.bias"), m->kv_dim, bias, &ly->bv)))
		return st;
#undef NAME
	return SPECD_OK;
}

/* rows x cols floats of the backend's memory, zeroed; NULL when it cannot be had. */
static float *alloc_floats(struct kern_ctx *k, size_t rows, size_t cols)
{
	void *p = NULL;
	if (cols && rows > SIZE_MAX / sizeof(float) / cols)
		return NULL;
	if (kern_alloc(k, rows * cols * sizeof(float), &p) != SPECD_OK)
		return NULL;
	return p;
}

static enum specd_status alloc_acts(struct model *m, uint32_t n_slots)
{
	struct llama_acts *a = &m->a;
	struct kern_ctx *k = m->kern;
	size_t b = m->max_batch;
	uint32_t size = m->shard.size;
	bool device = !kern_host_memory(k);
	a->tree_words = (b + 63) / 64;
	a->x = alloc_floats(k, b, m->hp.dim);
	a->xb = alloc_floats(k, b, m->hp.dim);
	a->qkv = alloc_floats(k, b, m->q_dim + 2 * (size_t)m->kv_dim);
	if (a->qkv) {
		a->q = a->qkv;
		a->k = a->q + m->q_dim;
		a->v = a->k + m->kv_dim;
	}
	/* Zeroed: the padding columns are read by the O projection, never written. */
	a->att = alloc_floats(k, b, m->att_ld);
	a->hb = alloc_floats(k, b, m->n_ffn);
	a->hb2 = alloc_floats(k, b, m->n_ffn);
	a->out = alloc_floats(k, b, m->hp.dim);
	a->zeros = alloc_floats(k, 1, m->hp.dim);
	if (m->fc.data) {
		a->cat = alloc_floats(k, b, 2 * (size_t)m->hp.dim);
		a->iota = specd_malloc_array(b, sizeof(uint32_t));
		for (uint32_t i = 0; a->iota && i < b; i++)
			a->iota[i] = i;
	}
	if (device)
		a->logits = alloc_floats(k, b, m->n_vocab);
	if (device && size > 1)
		a->stage = specd_malloc_array(b * m->hp.dim, sizeof(float));
	a->row = specd_malloc_array(b, sizeof(uint32_t));
	a->kv_row = specd_malloc_array(b, sizeof(uint32_t));
	a->n_prefix = specd_malloc_array(b, sizeof(uint32_t));
	a->tree = specd_malloc_array(b * a->tree_words, sizeof(uint64_t));
	a->len = specd_malloc_array(n_slots, sizeof(uint32_t));
	a->base = specd_malloc_array(n_slots, sizeof(uint32_t));
	a->amax_val = specd_malloc_array(b, sizeof(float));
	a->amax_idx = specd_malloc_array(b, sizeof(int32_t));
	a->amax_loc = specd_malloc_array(b, sizeof(uint32_t));
	a->counts = specd_malloc_array(size, sizeof(size_t));
	a->displs = specd_malloc_array(size, sizeof(size_t));
	if (!a->x || !a->xb || !a->qkv || !a->att || !a->hb || !a->hb2 ||
	    !a->out || !a->zeros || (device && !a->logits) || (device && size > 1 && !a->stage) ||
	    !a->row || !a->kv_row || !a->n_prefix || !a->tree || !a->len || !a->base ||
	    !a->amax_val || !a->amax_idx || !a->amax_loc || !a->counts || !a->displs ||
	    (m->fc.data && (!a->cat || !a->iota)))
		return SPECD_NOMEM;
	for (uint32_t r = 0; r < size; r++) {
		uint64_t v0 = (uint64_t)m->hp.n_vocab * r / size;
		uint64_t v1 = (uint64_t)m->hp.n_vocab * (r + 1) / size;
		a->displs[r] = (size_t)v0;
		a->counts[r] = (size_t)(v1 - v0);
	}
	return SPECD_OK;
}

static void free_acts(struct kern_ctx *k, struct llama_acts *a)
{
	float *dev[] = {a->x, a->xb, a->qkv, a->att, a->hb, a->hb2, a->out,
			a->zeros, a->cat, a->logits};
	for (size_t i = 0; k && i < sizeof(dev) / sizeof(dev[0]); i++)
		kern_free(k, dev[i]);
	if (k)
		kern_free(k, a->sample_work);
	specd_free(a->stage);
	specd_free(a->iota);
	specd_free(a->row);
	specd_free(a->kv_row);
	specd_free(a->n_prefix);
	specd_free(a->tree);
	specd_free(a->len);
	specd_free(a->base);
	specd_free(a->amax_val);
	specd_free(a->amax_idx);
	specd_free(a->amax_loc);
	specd_free(a->counts);
	specd_free(a->displs);
}

/* Weights on a device backend: each matrix and vector copied once into the backend's
 * memory (quantised types as the backend keeps them, kern_upload_mat) and the model's
 * pointers moved to the copies; the mapping is not read again. A host backend uses
 * the mapping in place and nothing happens here. */
#define WEIGHTS_PER_LAYER 12 /* 7 matrices, 2 norms, 3 biases; and 5 outside the blocks */

struct weight_upload {
	struct model *m;
	int layer; /* for messages; -1 outside the blocks */
	struct specd_error *err;
};

static enum specd_status upload_failed(const struct weight_upload *u, enum specd_status st,
				       const char *what)
{
	if (u->layer < 0)
		return specd_errorf(u->err, st, "model: cannot upload %s to %s: %s", what,
				    kern_name(u->m->kern), specd_status_str(st));
	return specd_errorf(u->err, st, "model: cannot upload blk.%d.%s to %s: %s", u->layer,
			    what, kern_name(u->m->kern), specd_status_str(st));
}

static enum specd_status upload_mat(struct weight_upload *u, struct kern_mat *w,
				    const char *what)
{
	struct model *m = u->m;
	struct kern_mat d;
	enum specd_status st = kern_upload_mat(m->kern, w, &d);
	if (st != SPECD_OK)
		return upload_failed(u, st, what);
	m->dev_weights[m->n_dev_weights++] = (void *)(uintptr_t)d.data;
	*w = d;
	return SPECD_OK;
}

static enum specd_status upload_vec(struct weight_upload *u, const float **v, size_t n,
				    const char *what)
{
	struct model *m = u->m;
	void *d = NULL;
	if (!*v)
		return SPECD_OK;
	enum specd_status st = kern_alloc(m->kern, n * sizeof(float), &d);
	if (st == SPECD_OK && (st = kern_upload(m->kern, d, *v, n * sizeof(float))) != SPECD_OK)
		kern_free(m->kern, d);
	if (st != SPECD_OK)
		return upload_failed(u, st, what);
	m->dev_weights[m->n_dev_weights++] = d;
	*v = d;
	return SPECD_OK;
}

enum specd_status model_reserve_draws(struct model *m, struct specd_error *err)
{
	size_t bytes = kern_sample_work_bytes(MODEL_MAX_DRAW_ROWS, m->n_vocab);
	if (m->a.sample_work || kern_host_memory(m->kern))
		return SPECD_OK;
	if (kern_alloc(m->kern, bytes, &m->a.sample_work) != SPECD_OK)
		return specd_errorf(err, SPECD_NOMEM, "model: no %zu bytes of %s memory for "
				    "drawing from the logits", bytes, kern_name(m->kern));
	return SPECD_OK;
}

/* Three weights of dev_weights joined into one new block of the backend's (*out): n[i]
 * bytes of src[i] one after another. On success the three are freed and the new block
 * takes their place in dev_weights; on failure nothing changes. */
static enum specd_status join_weights(struct model *m, const void *const src[3],
				      const size_t n[3], void **out)
{
	struct kern_ctx *k = m->kern;
	enum specd_status st = kern_alloc(k, n[0] + n[1] + n[2], out);
	for (size_t i = 0, at = 0; st == SPECD_OK && i < 3; at += n[i++])
		st = kern_copy(k, (unsigned char *)*out + at, src[i], n[i]);
	if (st == SPECD_OK)
		st = kern_sync(k); /* the copies read what is freed next */
	if (st != SPECD_OK) {
		kern_free(k, *out);
		*out = NULL;
		return st;
	}
	for (int i = 0; i < 3; i++) {
		for (size_t j = m->n_dev_weights; j-- > 0;) {
			if (m->dev_weights[j] == src[i]) {
				m->dev_weights[j] = m->dev_weights[--m->n_dev_weights];
				break;
			}
		}
		kern_free(k, (void *)(uintptr_t)src[i]);
	}
	m->dev_weights[m->n_dev_weights++] = *out;
	return SPECD_OK;
}

/* wq, wk and wv as one device matrix (llama_layer.wqkv). Each is uploaded as the
 * backend keeps it; when the three copies then share a type, width and row pitch (the
 * backend's form decides: a Q4_K attn_q and a Q6_K attn_v agree once CUDA dequantises
 * both to f32 at load) and carry biases on all or none, they are joined in the
 * backend's memory, and the biases with them. Otherwise each stays on its own. */
static enum specd_status upload_qkv(struct weight_upload *u, struct llama_layer *ly)
{
	struct kern_mat *w[3] = {&ly->wq, &ly->wk, &ly->wv};
	const float **b[3] = {&ly->bq, &ly->bk, &ly->bv};
	static const char *const names[3] = {"attn_q", "attn_k", "attn_v"};
	static const char *const bias_names[3] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
	enum specd_status st;
	for (int i = 0; i < 3; i++)
		if ((st = upload_vec(u, b[i], w[i]->n_out, bias_names[i])) ||
		    (st = upload_mat(u, w[i], names[i])))
			return st;
	bool one = true;
	for (int i = 1; i < 3; i++)
		one &= w[i]->type == w[0]->type && w[i]->n_in == w[0]->n_in &&
		       w[i]->row_bytes == w[0]->row_bytes && !*b[i] == !*b[0];
	if (!one)
		return SPECD_OK;
	const void *mats[3] = {w[0]->data, w[1]->data, w[2]->data};
	const void *vecs[3] = {*b[0], *b[1], *b[2]};
	size_t mat_bytes[3], vec_bytes[3], rows = 0;
	for (int i = 0; i < 3; i++) {
		mat_bytes[i] = w[i]->n_out * w[i]->row_bytes;
		vec_bytes[i] = w[i]->n_out * sizeof(float);
		rows += w[i]->n_out;
	}
	void *cat = NULL, *bias = NULL;
	if ((st = join_weights(u->m, mats, mat_bytes, &cat)) != SPECD_OK)
		return upload_failed(u, st, "attn_qkv");
	for (size_t i = 0, at = 0; i < 3; at += w[i++]->n_out)
		w[i]->data = (const unsigned char *)cat + at * w[0]->row_bytes;
	ly->wqkv = *w[0];
	ly->wqkv.n_out = rows;
	ly->wqkv.data = cat;
	if (!vecs[0])
		return SPECD_OK;
	if ((st = join_weights(u->m, vecs, vec_bytes, &bias)) != SPECD_OK)
		return upload_failed(u, st, "attn_qkv.bias");
	ly->bqkv = bias;
	for (size_t i = 0, at = 0; i < 3; at += w[i++]->n_out)
		*b[i] = ly->bqkv + at;
	return SPECD_OK;
}

enum specd_status llama_upload_weights(struct model *m, bool embeddings, struct specd_error *err)
{
	struct weight_upload u = {.m = m, .layer = -1, .err = err};
	size_t dim = m->hp.dim;
	bool tied = m->output.data == m->tok_embd.data && m->output.n_out == m->tok_embd.n_out;
	enum specd_status st;
	m->dev_weights = specd_malloc_array(5 + (size_t)WEIGHTS_PER_LAYER * m->hp.n_layers,
					    sizeof(void *));
	if (!m->dev_weights)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	if (embeddings) {
		if ((st = upload_mat(&u, &m->tok_embd, "token_embd")))
			return st;
		if (tied)
			m->output = m->tok_embd;
		else if ((st = upload_mat(&u, &m->output, "output")))
			return st;
	}
	if ((st = upload_vec(&u, &m->output_norm, dim, "output_norm")))
		return st;
	if (m->fc.data && ((st = upload_mat(&u, &m->fc, "fc")) ||
			   (st = upload_vec(&u, &m->fc_bias, dim, "fc.bias"))))
		return st;
	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		struct llama_layer *ly = &m->layers[l];
		u.layer = (int)l;
		if ((st = upload_vec(&u, &ly->attn_norm, dim, "attn_norm")) ||
		    (st = upload_vec(&u, &ly->ffn_norm, dim, "ffn_norm")) ||
		    (st = upload_qkv(&u, ly)) ||
		    (st = upload_mat(&u, &ly->wo, "attn_output")) ||
		    (st = upload_mat(&u, &ly->w_gate, "ffn_gate")) ||
		    (st = upload_mat(&u, &ly->w_up, "ffn_up")) ||
		    (st = upload_mat(&u, &ly->w_down, "ffn_down")))
			return st;
	}
	/* The shard's column copies now live on the device. */
	specd_free(m->copies);
	m->copies = NULL;
	if ((st = kern_sync(m->kern)) != SPECD_OK)
		return specd_errorf(err, st, "model: weight upload to %s: %s", kern_name(m->kern),
				    specd_status_str(st));
	return SPECD_OK;
}

enum specd_status llama_alloc_state(struct model *m, const struct model_config *cfg,
				    struct specd_error *err)
{
	uint32_t n_slots = cfg->n_slots ? cfg->n_slots : 1;
	m->max_batch = cfg->max_batch ? cfg->max_batch : MODEL_DEFAULT_MAX_BATCH;
	struct kv_config kvc = {
		.n_layers = m->hp.n_layers,
		.n_slots = n_slots,
		.n_ctx = cfg->n_ctx ? cfg->n_ctx : m->hp.n_ctx_train,
		.row_floats = m->kv_dim,
		.kern = m->kern,
	};
	enum specd_status st = kv_create(&kvc, &m->kv, err);
	if (st != SPECD_OK)
		return st;
	if ((st = alloc_acts(m, n_slots)) != SPECD_OK)
		return specd_errorf(err, st, "model: cannot allocate activations for %u tokens",
				    m->max_batch);
	/* What the backend's matmuls need for a whole batch (kern_reserve), so that no
	 * forward allocates: the widest input any matrix takes. */
	struct kern_mat **w = specd_malloc_array(LLAMA_MAX_MATRICES(m->hp.n_layers), sizeof(*w));
	if (!w)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	size_t n = llama_matrices(m, w), widest = m->fc.n_in;
	for (size_t i = 0; i < n; i++)
		widest = w[i]->n_in > widest ? w[i]->n_in : widest;
	specd_free(w);
	if ((st = kern_reserve(m->kern, m->max_batch, widest)) != SPECD_OK)
		return specd_errorf(err, st, "model: %s cannot reserve its matmuls' memory for "
				    "%u tokens of %zu values", kern_name(m->kern), m->max_batch,
				    widest);
	return SPECD_OK;
}

static enum specd_status check_config(const struct model_config *cfg, struct specd_error *err)
{
	const struct model_comm *c = cfg->comm;
	if (cfg->max_batch > MAX_BATCH_LIMIT)
		return specd_errorf(err, SPECD_INVAL, "max batch %u: at most %d tokens",
				    cfg->max_batch, MAX_BATCH_LIMIT);
	if (!c)
		return SPECD_OK;
	if (!c->allreduce_sum || c->size == 0 || c->rank >= c->size ||
	    (c->size > 1 && (!c->maxloc || !c->gather)))
		return specd_errorf(err, SPECD_INVAL,
				    "communication hook: rank %u of %u, allreduce %s, maxloc %s, "
				    "gather %s", c->rank, c->size,
				    c->allreduce_sum ? "set" : "missing",
				    c->maxloc ? "set" : "missing", c->gather ? "set" : "missing");
	return SPECD_OK;
}

enum specd_status model_load_gguf(const struct gguf_file *f, const struct model_config *cfg,
				  struct model **out, struct specd_error *err)
{
	static const struct model_config defaults;
	if (!cfg)
		cfg = &defaults;
	enum specd_status st = check_config(cfg, err);
	if (st != SPECD_OK)
		return st;

	struct gguf_str s;
	char arch_name[32];
	if (!gguf_get_str(f, "general.architecture", &s))
		return specd_errorf(err, SPECD_INVAL, "general.architecture: missing");
	if (s.len >= sizeof(arch_name))
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "general.architecture: unsupported (too long)");
	memcpy(arch_name, s.ptr, s.len);
	arch_name[s.len] = '\0';
	enum model_arch arch;
	if (!model_arch_parse(arch_name, &arch))
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "general.architecture '%s': unsupported (llama and qwen2 are)",
				    arch_name);

	struct model *m = specd_calloc(1, sizeof(*m));
	if (!m)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	struct loader ld = {.f = f, .arch = arch_name, .err = err};
	/* One more than needed, so that a file without tensors still gets a buffer. */
	ld.used = specd_calloc(gguf_tensor_count(f) + 1, 1);
	if (!ld.used) {
		st = specd_errorf(err, SPECD_NOMEM, "model: out of memory");
		goto fail;
	}
	m->file = f;
	m->comm = cfg->comm;
	m->hp.arch = arch;
	m->rope_layout = model_arch_rope_layout(arch) == MODEL_ROPE_HALVES ? KERN_ROPE_HALVES
									   : KERN_ROPE_ADJACENT;
	if ((st = read_rope_layout(f, &m->rope_layout, err)) != SPECD_OK)
		goto fail;
	if ((st = read_hparams(&ld, &m->hp)) != SPECD_OK ||
	    (st = check_features(&ld, &m->hp)) != SPECD_OK)
		goto fail;
	struct model_hparams *hp = &m->hp;
	m->q_dim = hp->n_heads * hp->head_dim;
	m->kv_dim = hp->n_kv_heads * hp->head_dim;

	const struct gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
	if (!embd) {
		st = specd_errorf(err, SPECD_INVAL, "tensor token_embd.weight: missing");
		goto fail;
	}
	if (embd->ne[1] == 0 || embd->ne[1] > INT32_MAX) {
		st = specd_errorf(err, SPECD_INVAL, "tensor token_embd.weight: %" PRIu64
				  " rows is no vocabulary size", embd->ne[1]);
		goto fail;
	}
	hp->n_vocab = (uint32_t)embd->ne[1];
	bool has_output = false;
	if ((st = mat(&ld, "token_embd.weight", hp->dim, hp->n_vocab, true, &m->tok_embd, NULL)) ||
	    (st = vec_f32(&ld, "output_norm.weight", hp->dim, true, &m->output_norm)) ||
	    (st = mat(&ld, "output.weight", hp->dim, hp->n_vocab, false, &m->output, &has_output)))
		goto fail;
	hp->tied_output = !has_output;
	if (hp->tied_output)
		m->output = m->tok_embd;

	m->layers = specd_calloc(hp->n_layers, sizeof(*m->layers));
	if (!m->layers) {
		st = specd_errorf(err, SPECD_NOMEM, "model: out of memory");
		goto fail;
	}
	for (uint32_t l = 0; l < hp->n_layers; l++) {
		if ((st = load_layer(&ld, m, l, &m->layers[l])) != SPECD_OK)
			goto fail;
	}
	if ((st = check_all_used(&ld)) != SPECD_OK)
		goto fail;
	specd_free(ld.used);
	ld.used = NULL;
	hp->wtype = m->layers[0].wq.type;
	m->n_heads = hp->n_heads;
	m->n_kv_heads = hp->n_kv_heads;
	m->n_ffn = hp->ffn_dim;
	m->n_vocab = hp->n_vocab;
	if ((st = llama_shard_apply(m, cfg->comm ? cfg->comm->rank : 0,
				    cfg->comm ? cfg->comm->size : 1, err)) != SPECD_OK)
		goto fail;
	if (cfg->convert && (st = llama_convert_weights(m, cfg->weight_type, err)) != SPECD_OK)
		goto fail;

	if (cfg->kern) {
		m->kern = cfg->kern;
	} else {
		if ((st = kern_cpu_create(NULL, &m->owned_kern)) != SPECD_OK) {
			specd_errorf(err, st, "model: cannot create the CPU backend");
			goto fail;
		}
		m->kern = m->owned_kern;
	}

	if (!kern_host_memory(m->kern)) {
		if ((st = llama_upload_weights(m, true, err)) != SPECD_OK)
			goto fail;
		/* The device holds its copies now: the converted host ones are not read. */
		specd_free(m->converted);
		m->converted = NULL;
	} else if (cfg->huge_pages_max &&
		   (st = llama_weights_to_huge_pages(m, cfg->huge_pages_max, err)) != SPECD_OK) {
		goto fail;
	}

	if ((st = llama_alloc_state(m, cfg, err)) != SPECD_OK)
		goto fail;
	LOG_DEBUG("model %s: dim %u, %u layers, %u/%u heads of %u, ffn %u, vocab %u, %s%s; "
		  "kv %u slots x %u rows (%zu bytes)",
		  arch_name, hp->dim, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->head_dim,
		  hp->ffn_dim, hp->n_vocab, kern_dtype_name(hp->wtype),
		  hp->tied_output ? ", tied output" : "", kv_n_slots(m->kv), kv_n_ctx(m->kv),
		  kv_bytes(m->kv));
	if (m->shard.size > 1)
		LOG_INFO("model shard %u of %u: query heads %u..%u, kv heads %u..%u, ffn %u..%u, "
			 "vocab %u..%u; resident weights %zu of %zu bytes (%zu copied)",
			 m->shard.rank, m->shard.size, m->shard.head0,
			 m->shard.head0 + m->shard.n_heads - 1, m->shard.kv_head0,
			 m->shard.kv_head0 + m->shard.n_kv_heads - 1, m->shard.ffn0,
			 m->shard.ffn0 + m->shard.n_ffn - 1, m->shard.vocab0,
			 m->shard.vocab0 + m->shard.n_vocab - 1, m->shard.resident_bytes,
			 m->shard.weight_bytes, m->shard.copied_bytes);
	*out = m;
	return SPECD_OK;
fail:
	specd_free(ld.used);
	model_destroy(m);
	return st;
}

enum specd_status model_load(const char *path, const struct model_config *cfg,
			     struct model **out, struct specd_error *err)
{
	struct gguf_file *f = NULL;
	enum specd_status st = model_file_open(path, &f, err);
	if (st != SPECD_OK)
		return st;
	struct model *m = NULL;
	struct specd_error inner;
	specd_error_clear(&inner);
	st = model_load_gguf(f, cfg, &m, &inner);
	if (st != SPECD_OK) {
		gguf_close(f);
		return specd_errorf(err, st, "%s: %s", path, inner.msg);
	}
	m->owned_file = f;
	*out = m;
	return SPECD_OK;
}

void model_destroy(struct model *m)
{
	if (!m)
		return;
	free_acts(m->kern, &m->a);
	kv_destroy(m->kv);
	for (size_t i = 0; i < m->n_dev_weights; i++)
		kern_free(m->kern, m->dev_weights[i]);
	specd_free(m->dev_weights);
	specd_free(m->layers);
	specd_free(m->groups);
	specd_free(m->copies);
	specd_free(m->converted);
	specd_huge_free(m->huge, m->huge_bytes);
	kern_destroy(m->owned_kern);
	gguf_close(m->owned_file);
	safetensors_file_close(m->st);
	specd_free(m);
}

const struct model_hparams *model_hparams(const struct model *m)
{
	return &m->hp;
}

const struct gguf_file *model_gguf(const struct model *m)
{
	return m->file;
}

const struct gguf_tensor *model_lm_head(const struct model *m)
{
	return gguf_find_tensor(m->file, m->hp.tied_output ? "token_embd.weight" : "output.weight");
}

struct kv_cache *model_kv(struct model *m)
{
	return m->kv;
}

const struct kern_mat *model_output_on(const struct model *m, const struct kern_ctx *k)
{
	return m->kern == k && m->shard.size == 1 ? &m->output : NULL;
}

struct kern_ctx *model_kern(struct model *m)
{
	return m->kern;
}

uint32_t model_max_batch(const struct model *m)
{
	return m->max_batch;
}
