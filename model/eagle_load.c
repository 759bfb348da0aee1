/* Loading an EAGLE layer (eagle.h): config.json gives the sizes, checked against the
 * target; model.safetensors is mapped and its tensors become a struct model's layers,
 * which then run through llama_forward.c like any model's. The embedding and the LM
 * head are the target's, taken from its file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/log.h"
#include "hf_int.h"
#include "llama_int.h"
#include "model/arch.h"
#include "model/eagle.h"
#include "model/gguf.h"

struct eagle_loader {
	const char *path; /* config.json, for messages */
	const json_t *cfg;
	struct model *m;
	struct specd_error *err;
};

/* Key `key` of config.json as a positive integer; absent: `def` (0: required). */
static enum specd_status cfg_u32(const struct eagle_loader *ld, const char *key, uint32_t def,
				 uint32_t *out)
{
	const json_t *v = json_object_get(ld->cfg, key);

	if (!v || json_is_null(v)) {
		if (!def)
			return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: key '%s' is missing",
					    ld->path, key);
		*out = def;
		return SPECD_OK;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
	    json_integer_value(v) > UINT32_MAX)
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: key '%s' is not a positive "
				    "integer", ld->path, key);
	*out = (uint32_t)json_integer_value(v);
	return SPECD_OK;
}

static enum specd_status cfg_f32(const struct eagle_loader *ld, const char *key, float def,
				 float *out)
{
	const json_t *v = json_object_get(ld->cfg, key);

	if (!v || json_is_null(v)) {
		*out = def;
		return SPECD_OK;
	}
	if (!json_is_number(v) || !(json_number_value(v) > 0))
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: key '%s' is not a positive "
				    "number", ld->path, key);
	*out = (float)json_number_value(v);
	return SPECD_OK;
}

/* config.json's sizes, each checked against the target where it must match. */
static enum specd_status read_config(const struct eagle_loader *ld,
				     const struct model_hparams *t)
{
	struct model_hparams *hp = &ld->m->hp;
	uint32_t vocab;
	enum specd_status st;
	const json_t *v = json_object_get(ld->cfg, "rope_scaling");

	if (v && !json_is_null(v))
		return specd_errorf(ld->err, SPECD_UNSUPPORTED, "eagle: %s: key 'rope_scaling' is "
				    "set; RoPE scaling is not supported", ld->path);
	if ((st = hf_json_arch(ld->cfg, ld->path, &hp->arch, ld->err)) ||
	    (st = cfg_u32(ld, "hidden_size", 0, &hp->dim)) ||
	    (st = cfg_u32(ld, "vocab_size", 0, &vocab)) ||
	    (st = cfg_u32(ld, "num_hidden_layers", 0, &hp->n_layers)) ||
	    (st = cfg_u32(ld, "intermediate_size", 0, &hp->ffn_dim)) ||
	    (st = cfg_u32(ld, "num_attention_heads", 0, &hp->n_heads)) ||
	    (st = cfg_u32(ld, "num_key_value_heads", hp->n_heads, &hp->n_kv_heads)) ||
	    (st = cfg_u32(ld, "max_position_embeddings", t->n_ctx_train, &hp->n_ctx_train)) ||
	    (st = cfg_f32(ld, "rms_norm_eps", 1e-6f, &hp->rms_eps)) ||
	    (st = cfg_f32(ld, "rope_theta", 10000.0f, &hp->rope_base)))
		return st;
	if (hp->dim != t->dim || vocab != t->n_vocab)
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: the layer is for hidden size "
				    "%u and %u tokens; the target has %u and %u", ld->path, hp->dim,
				    vocab, t->dim, t->n_vocab);
	if (hp->n_layers > EAGLE_MAX_LAYERS)
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: %u layers, at most %d",
				    ld->path, hp->n_layers, EAGLE_MAX_LAYERS);
	if (hp->dim % hp->n_heads && !json_object_get(ld->cfg, "head_dim"))
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: hidden_size %u is not a "
				    "multiple of num_attention_heads %u", ld->path, hp->dim,
				    hp->n_heads);
	if ((st = cfg_u32(ld, "head_dim", hp->dim / hp->n_heads ? hp->dim / hp->n_heads : 1,
			  &hp->head_dim)))
		return st;
	if (hp->head_dim % 2 || hp->head_dim > KERN_MAX_HEAD_DIM || hp->n_heads % hp->n_kv_heads)
		return specd_errorf(ld->err, SPECD_UNSUPPORTED, "eagle: %s: %u heads of %u over %u "
				    "KV heads (a head must be even and at most %d, and the KV heads "
				    "divide the heads)", ld->path, hp->n_heads, hp->head_dim,
				    hp->n_kv_heads, KERN_MAX_HEAD_DIM);
	hp->n_vocab = t->n_vocab;
	return SPECD_OK;
}

static enum specd_status need(const struct eagle_loader *ld, const char *name,
			      const struct safetensors_tensor **out)
{
	if ((*out = safetensors_file_find(ld->m->st, name)))
		return SPECD_OK;
	return specd_errorf(ld->err, SPECD_INVAL, "eagle: %s: tensor %s is missing",
			    ld->m->st->path, name);
}

static enum specd_status matrix(const struct eagle_loader *ld, const char *name, uint64_t rows,
				uint64_t cols, struct kern_mat *out)
{
	const struct safetensors_tensor *t;
	char what[96];
	enum specd_status st = need(ld, name, &t);

	if (st != SPECD_OK)
		return st;
	snprintf(what, sizeof(what), "config.json");
	return safetensors_file_matrix(ld->m->st, t, rows, cols, what, out, ld->err);
}

/* A vector of n floats; an optional one absent stays NULL. */
static enum specd_status vector(const struct eagle_loader *ld, const char *name, uint64_t n,
				bool required, const float **out)
{
	const struct safetensors_tensor *t = safetensors_file_find(ld->m->st, name);
	float *v;
	enum specd_status st;

	*out = NULL;
	if (!t && !required)
		return SPECD_OK;
	if (!t)
		return need(ld, name, &t);
	if ((st = safetensors_file_vector(ld->m->st, t, n, "config.json", &v, ld->err)))
		return st;
	*out = v;
	return SPECD_OK;
}

static enum specd_status load_layer(const struct eagle_loader *ld, uint32_t l)
{
	struct model *m = ld->m;
	struct llama_layer *ly = &m->layers[l];
	uint32_t dim = m->hp.dim, ffn = m->hp.ffn_dim;
	char n[12][96];
	enum specd_status st;
	static const char *const parts[12] = {
		"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
		"self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
		"mlp.down_proj.weight", "post_attention_layernorm.weight",
		"input_layernorm.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
		"self_attn.v_proj.bias",
	};

	for (int i = 0; i < 12; i++)
		snprintf(n[i], sizeof(n[i]), "layers.%u.%s", l, parts[i]);
	if ((st = matrix(ld, n[0], m->q_dim, dim, &ly->wq)) ||
	    (st = matrix(ld, n[1], m->kv_dim, dim, &ly->wk)) ||
	    (st = matrix(ld, n[2], m->kv_dim, dim, &ly->wv)) ||
	    (st = matrix(ld, n[3], dim, m->q_dim, &ly->wo)) ||
	    (st = matrix(ld, n[4], ffn, dim, &ly->w_gate)) ||
	    (st = matrix(ld, n[5], ffn, dim, &ly->w_up)) ||
	    (st = matrix(ld, n[6], dim, ffn, &ly->w_down)) ||
	    (st = vector(ld, n[7], dim, true, &ly->ffn_norm)) ||
	    /* The first layer reads fc's output as is (the reference has no norm there). */
	    (st = vector(ld, n[8], dim, l > 0, &ly->attn_norm)) ||
	    (st = vector(ld, n[9], m->q_dim, false, &ly->bq)) ||
	    (st = vector(ld, n[10], m->kv_dim, false, &ly->bk)) ||
	    (st = vector(ld, n[11], m->kv_dim, false, &ly->bv)))
		return st;
	if (l == 0 && ly->attn_norm) {
		LOG_WARN("eagle: %s: layers.0.input_layernorm.weight is ignored (the first layer "
			 "has no input norm)", m->st->path);
		ly->attn_norm = NULL;
	}
	return SPECD_OK;
}

/* The target's embedding and LM head, from its file (whole, also on a TP shard). */
static enum specd_status borrow_target(const struct eagle_loader *ld, const struct model *target)
{
	struct model *m = ld->m;
	const struct gguf_file *f = model_gguf(target);
	const struct gguf_tensor *e = gguf_find_tensor(f, "token_embd.weight");
	const struct gguf_tensor *o = model_lm_head(target);
	uint32_t dim = m->hp.dim, nv = m->hp.n_vocab;

	if (!e || !o || e->ne[0] != dim || e->ne[1] != nv || o->ne[0] != dim || o->ne[1] != nv)
		return specd_errorf(ld->err, SPECD_INVAL, "eagle: the target has no embedding and "
				    "LM head of %u x %u to share", nv, dim);
	m->tok_embd = kern_mat_packed(e->type, dim, nv, e->data);
	m->output = kern_mat_packed(o->type, dim, nv, o->data);
	m->hp.tied_output = e == o;
	return SPECD_OK;
}

/* The folder, before anything is read from it: a published checkpoint that ships
 * pytorch_model.bin is told to convert it first. */
static enum specd_status check_folder(const char *dir, struct specd_error *err)
{
	char path[4096];
	struct stat sb;

	if (stat(dir, &sb) != 0)
		return specd_errorf(err, SPECD_IO, "eagle: %s is not a checkpoint folder "
				    "(config.json and model.safetensors): %s", dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return specd_errorf(err, SPECD_IO, "eagle: %s is not a checkpoint folder "
				    "(config.json and model.safetensors)", dir);
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (stat(path, &sb) == 0)
		return SPECD_OK;
	snprintf(path, sizeof(path), "%s/pytorch_model.bin", dir);
	if (stat(path, &sb) == 0)
		return specd_errorf(err, SPECD_IO, "eagle: %s holds pytorch_model.bin and no "
				    "model.safetensors; convert it with tools/convert-eagle", dir);
	return SPECD_OK; /* config.json, then the tensors, say what is missing */
}

enum specd_status model_load_eagle(const char *dir, const struct model *target,
				   const struct model_config *cfg, struct model **out,
				   struct specd_error *err)
{
	static const struct model_config defaults;
	char path[4096];
	json_t *config = NULL;
	struct model *m;
	enum specd_status st;

	if (!cfg)
		cfg = &defaults;
	if (!dir || !*dir)
		return specd_errorf(err, SPECD_INVAL, "eagle: no checkpoint folder "
				    "(speculation.eagle.path)");
	if (cfg->comm && cfg->comm->size > 1)
		return specd_errorf(err, SPECD_UNSUPPORTED, "eagle: the layer runs whole, not in "
				    "tensor-parallel shards");
	if (!(m = specd_calloc(1, sizeof(*m))))
		return specd_errorf(err, SPECD_NOMEM, "eagle: out of memory");
	if ((st = check_folder(dir, err)))
		goto fail;
	struct specd_error why;
	if ((st = hf_json_load(dir, "config.json", 0, path, sizeof(path), &config, &why))) {
		specd_errorf(err, st, "eagle: %s", why.msg);
		goto fail;
	}
	struct eagle_loader ld = {.path = path, .cfg = config, .m = m, .err = err};
	if ((st = read_config(&ld, model_hparams(target))))
		goto fail;
	struct model_hparams *hp = &m->hp;
	m->file = model_gguf(target);
	m->rope_layout = KERN_ROPE_HALVES;
	m->q_dim = hp->n_heads * hp->head_dim;
	m->kv_dim = hp->n_kv_heads * hp->head_dim;
	m->n_heads = hp->n_heads;
	m->n_kv_heads = hp->n_kv_heads;
	m->n_ffn = hp->ffn_dim;
	m->n_vocab = hp->n_vocab;
	char st_path[4096];
	snprintf(st_path, sizeof(st_path), "%s/model.safetensors", dir);
	if ((st = safetensors_file_open(st_path, "eagle", &m->st, err)) ||
	    (st = borrow_target(&ld, target)))
		goto fail;
	if ((st = matrix(&ld, "fc.weight", hp->dim, 2 * (uint64_t)hp->dim, &m->fc)) ||
	    (st = vector(&ld, "fc.bias", hp->dim, false, &m->fc_bias)))
		goto fail;
	if (!(m->layers = specd_calloc(hp->n_layers, sizeof(*m->layers)))) {
		st = specd_errorf(err, SPECD_NOMEM, "eagle: out of memory");
		goto fail;
	}
	for (uint32_t l = 0; l < hp->n_layers; l++)
		if ((st = load_layer(&ld, l)))
			goto fail;
	hp->wtype = m->layers[0].wq.type;
	if ((st = llama_shard_apply(m, 0, 1, err)))
		goto fail;
	if (cfg->kern) {
		m->kern = cfg->kern;
	} else if ((st = kern_cpu_create(NULL, &m->owned_kern))) {
		specd_errorf(err, st, "eagle: cannot create the CPU backend");
		goto fail;
	} else {
		m->kern = m->owned_kern;
	}
	/* On a device: the layer's weights go there; the embedding and LM head are the
	 * target's own copies when it is whole on the same backend, else the file's,
	 * uploaded (a draft rank keeps its view of the target on the CPU). */
	if (!kern_host_memory(m->kern)) {
		const struct kern_mat *head = model_output_on(target, m->kern);
		bool borrow = head != NULL;
		if (borrow) {
			m->tok_embd = target->tok_embd;
			m->output = *head;
		}
		if ((st = llama_upload_weights(m, !borrow, err)))
			goto fail;
	}
	if ((st = llama_alloc_state(m, cfg, err)))
		goto fail;
	LOG_DEBUG("eagle %s: %u layer(s), %u/%u heads of %u, ffn %u, %s, %zu bytes beyond the "
		  "target", dir, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->head_dim,
		  hp->ffn_dim, kern_dtype_name(hp->wtype), m->st->bytes);
	json_decref(config);
	*out = m;
	return SPECD_OK;
fail:
	json_decref(config);
	model_destroy(m);
	return st;
}

size_t model_eagle_weight_bytes(const struct model *m)
{
	return m->st ? m->st->bytes : 0;
}
