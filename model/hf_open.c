/* A Hugging Face folder as a gguf_file view (model_file.h): config.json becomes the
 * `<arch>.*` keys, hf_tokenizer.c the tokenizer keys, and every safetensors tensor is
 * renamed as llama.cpp names it and pointed into its shard's read-only mapping, so
 * the loader, the tensor-parallel shards and the tokenizer read it as a GGUF file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gguf_int.h"
#include "hf_int.h"
#include "model/arch.h"
#include "model/model_file.h"

#define HF_INDEX "model.safetensors.index.json"
#define HF_SINGLE "model.safetensors"

/* --- names ----------------------------------------------------------------------- */

static const struct {
	const char *hf, *gguf;
} whole_names[] = {
	{"model.embed_tokens.weight", "token_embd.weight"},
	{"model.norm.weight", "output_norm.weight"},
	{"lm_head.weight", "output.weight"},
};

/* Parts of layer N: model.layers.N.<hf>.{weight,bias} <-> blk.N.<gguf>.{weight,bias}. */
static const struct {
	const char *hf, *gguf;
} layer_names[] = {
	{"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"},
	{"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"},
	{"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},
	{"mlp.down_proj", "ffn_down"},    {"input_layernorm", "attn_norm"},
	{"post_attention_layernorm", "ffn_norm"},
};

static bool map_name(const char *in, bool to_gguf, char *buf, size_t cap)
{
	const char *from = to_gguf ? "model.layers." : "blk.";
	const char *to = to_gguf ? "blk." : "model.layers.";
	size_t fl = strlen(from), digits = 0;

	for (size_t i = 0; i < sizeof(whole_names) / sizeof(whole_names[0]); i++)
		if (strcmp(in, to_gguf ? whole_names[i].hf : whole_names[i].gguf) == 0)
			return (size_t)snprintf(buf, cap, "%s",
						to_gguf ? whole_names[i].gguf : whole_names[i].hf) < cap;
	if (strncmp(in, from, fl) != 0)
		return false;
	while (in[fl + digits] >= '0' && in[fl + digits] <= '9' && digits < 9)
		digits++;
	if (digits == 0 || in[fl + digits] != '.')
		return false;
	const char *part = in + fl + digits + 1;
	const char *suffix = strrchr(part, '.');
	if (!suffix || (strcmp(suffix, ".weight") != 0 && strcmp(suffix, ".bias") != 0))
		return false;
	for (size_t i = 0; i < sizeof(layer_names) / sizeof(layer_names[0]); i++) {
		const char *a = to_gguf ? layer_names[i].hf : layer_names[i].gguf;
		const char *b = to_gguf ? layer_names[i].gguf : layer_names[i].hf;
		if (strlen(a) == (size_t)(suffix - part) && strncmp(part, a, strlen(a)) == 0)
			return (size_t)snprintf(buf, cap, "%s%.*s.%s%s", to, (int)digits, in + fl, b,
						suffix) < cap;
	}
	return false;
}

bool model_file_hf_name(const char *gguf_name, char *buf, size_t cap)
{
	return gguf_name && buf && map_name(gguf_name, false, buf, cap);
}

bool model_file_gguf_name(const char *hf_name, char *buf, size_t cap)
{
	return hf_name && buf && map_name(hf_name, true, buf, cap);
}

/* --- JSON helpers (hf_int.h) ----------------------------------------------------- */

enum specd_status hf_json_load(const char *dir, const char *name, size_t flags, char *path,
			       size_t cap, json_t **out, struct specd_error *err)
{
	json_error_t jerr;
	snprintf(path, cap, "%s/%s", dir, name);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return specd_errorf(err, SPECD_IO, "%s: cannot open: %s", path, strerror(errno));
	json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES | flags, &jerr);
	fclose(fp);
	if (!root)
		return specd_errorf(err, SPECD_INVAL, "%s: not JSON: %s (line %d, column %d)", path,
				    jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root)) {
		json_decref(root);
		return specd_errorf(err, SPECD_INVAL, "%s: not a JSON object", path);
	}
	*out = root;
	return SPECD_OK;
}

bool hf_json_id(const json_t *config, const char *key, int32_t *out)
{
	const json_t *v = json_object_get(config, key);
	if (json_is_array(v))
		v = json_array_get(v, 0);
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
		return false;
	*out = (int32_t)json_integer_value(v);
	return true;
}

/* --- config.json ----------------------------------------------------------------- */

struct hf_cfg {
	const char *path; /* for messages */
	const json_t *root;
	const char *arch;
	struct gguf_writer *w;
	struct specd_error *err;
};

/* Key `hf` as <arch>.<gguf>: an integer in 1..UINT32_MAX (is_int) or a number. Absent
 * (or null) is an error only when required. */
static enum specd_status cfg_num(const struct hf_cfg *c, const char *hf, const char *gguf,
				 bool required, bool is_int, uint32_t *got)
{
	const json_t *v = json_object_get(c->root, hf);
	char key[96];
	if (!v || json_is_null(v))
		return required ? specd_errorf(c->err, SPECD_INVAL, "%s: key '%s' is missing",
					       c->path, hf)
				: SPECD_OK;
	snprintf(key, sizeof(key), "%s.%s", c->arch, gguf);
	if (!is_int) {
		if (!json_is_number(v))
			return specd_errorf(c->err, SPECD_INVAL, "%s: key '%s' is not a number",
					    c->path, hf);
		return gguf_writer_set_f32(c->w, key, (float)json_number_value(v));
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX)
		return specd_errorf(c->err, SPECD_INVAL, "%s: key '%s' is not a positive integer",
				    c->path, hf);
	if (got)
		*got = (uint32_t)json_integer_value(v);
	return gguf_writer_set_u32(c->w, key, (uint32_t)json_integer_value(v));
}

static enum specd_status cfg_u32(const struct hf_cfg *c, const char *hf, const char *gguf,
				 bool required, uint32_t *got)
{
	return cfg_num(c, hf, gguf, required, true, got);
}

static enum specd_status cfg_f32(const struct hf_cfg *c, const char *hf, const char *gguf,
				 bool required)
{
	return cfg_num(c, hf, gguf, required, false, NULL);
}

/* general.architecture from model_type, else from architectures[0]. */
enum specd_status hf_json_arch(const json_t *config, const char *path, enum model_arch *out,
			      struct specd_error *err)
{
	static const struct {
		const char *model_type, *class_name;
		enum model_arch arch;
	} archs[] = {
		{"llama", "LlamaForCausalLM", MODEL_ARCH_LLAMA},
		{"qwen2", "Qwen2ForCausalLM", MODEL_ARCH_QWEN2},
	};
	const char *mt = json_string_value(json_object_get(config, "model_type"));
	const char *cls = json_string_value(json_array_get(json_object_get(config, "architectures"), 0));
	for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++) {
		if ((mt && strcmp(mt, archs[i].model_type) == 0) ||
		    (!mt && cls && strcmp(cls, archs[i].class_name) == 0)) {
			*out = archs[i].arch;
			return SPECD_OK;
		}
	}
	if (!mt && !cls)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: key 'model_type' (or 'architectures') is missing", path);
	return specd_errorf(err, SPECD_UNSUPPORTED,
			    "%s: model_type '%.40s' is not supported (llama and qwen2 are)", path,
			    mt ? mt : cls);
}

static enum specd_status cfg_arch(struct hf_cfg *c)
{
	enum model_arch arch;
	enum specd_status st = hf_json_arch(c->root, c->path, &arch, c->err);
	if (st != SPECD_OK)
		return st;
	c->arch = model_arch_name(arch);
	return gguf_writer_set_str(c->w, "general.architecture", c->arch);
}

/* What config.json says beyond the hyper-parameters, for the tensors and tokenizer. */
struct hf_model_info {
	bool tied;
	uint32_t vocab_size; /* 0 when config.json has none */
};

/* transformers' default RoPE (rope_parameters in transformers 5) reads
 * partial_rotary_factor from any config; the kernels rotate the whole head. */
static enum specd_status cfg_partial_rotary(const struct hf_cfg *c, const json_t *obj,
					    const char *key)
{
	const json_t *v = json_object_get(obj, "partial_rotary_factor");

	if (!v || json_is_null(v))
		return SPECD_OK;
	if (!json_is_number(v))
		return specd_errorf(c->err, SPECD_INVAL, "%s: key '%s' is not a number", c->path, key);
	if (json_number_value(v) != 1.0)
		return specd_errorf(c->err, SPECD_UNSUPPORTED,
				    "%s: key '%s' is %g; partial rotary embedding is not supported",
				    c->path, key, json_number_value(v));
	return SPECD_OK;
}

/* Keys that change what the model computes beyond the hyper-parameters. transformers
 * reads attention_bias and mlp_bias for llama only (Qwen2 has q/k/v biases and
 * nothing else whatever its config says); the loader takes q/k/v biases, not o_proj's
 * (which attention_bias adds) nor the MLP's. */
static enum specd_status cfg_features(const struct hf_cfg *c)
{
	const json_t *v;
	enum specd_status st;
	bool llama = strcmp(c->arch, model_arch_name(MODEL_ARCH_LLAMA)) == 0;

	if (llama && json_is_true(json_object_get(c->root, "attention_bias")))
		return specd_errorf(c->err, SPECD_UNSUPPORTED,
				    "%s: key 'attention_bias' is true; a bias on the attention "
				    "output (o_proj) is not supported", c->path);
	if (llama && json_is_true(json_object_get(c->root, "mlp_bias")))
		return specd_errorf(c->err, SPECD_UNSUPPORTED,
				    "%s: key 'mlp_bias' is true; MLP biases are not supported", c->path);
	/* swish is transformers' other name for silu (ACT2FN). */
	v = json_object_get(c->root, "hidden_act");
	if (v && !json_is_null(v)) {
		const char *act = json_string_value(v);
		if (!act)
			return specd_errorf(c->err, SPECD_INVAL, "%s: key 'hidden_act' is not a string",
					    c->path);
		if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
			return specd_errorf(c->err, SPECD_UNSUPPORTED,
					    "%s: key 'hidden_act' is '%.32s'; activations other than "
					    "silu are not supported", c->path, act);
	}
	if ((st = cfg_partial_rotary(c, c->root, "partial_rotary_factor")) != SPECD_OK)
		return st;
	v = json_object_get(c->root, "rope_parameters");
	if (json_is_object(v))
		return cfg_partial_rotary(c, v, "rope_parameters.partial_rotary_factor");
	return SPECD_OK;
}

static enum specd_status cfg_keys(struct hf_cfg *c, struct hf_model_info *info)
{
	const json_t *v;
	enum specd_status st;

	if ((st = cfg_arch(c)) != SPECD_OK)
		return st;
	v = json_object_get(c->root, "rope_scaling");
	if (v && !json_is_null(v))
		return specd_errorf(c->err, SPECD_UNSUPPORTED,
				    "%s: key 'rope_scaling' is set; RoPE scaling is not supported", c->path);
	if (json_is_true(json_object_get(c->root, "use_sliding_window")))
		return specd_errorf(c->err, SPECD_UNSUPPORTED,
				    "%s: key 'use_sliding_window' is true; sliding-window attention is not supported",
				    c->path);
	if ((st = cfg_features(c)) != SPECD_OK)
		return st;
	v = json_object_get(c->root, "tie_word_embeddings");
	if (v && !json_is_boolean(v))
		return specd_errorf(c->err, SPECD_INVAL, "%s: key 'tie_word_embeddings' is not a bool",
				    c->path);
	info->tied = json_is_true(v);
	if ((st = cfg_u32(c, "hidden_size", "embedding_length", true, NULL)) ||
	    (st = cfg_u32(c, "num_hidden_layers", "block_count", true, NULL)) ||
	    (st = cfg_u32(c, "intermediate_size", "feed_forward_length", true, NULL)) ||
	    (st = cfg_u32(c, "num_attention_heads", "attention.head_count", true, NULL)) ||
	    (st = cfg_u32(c, "num_key_value_heads", "attention.head_count_kv", false, NULL)) ||
	    (st = cfg_u32(c, "max_position_embeddings", "context_length", true, NULL)) ||
	    (st = cfg_u32(c, "head_dim", "attention.key_length", false, NULL)) ||
	    (st = cfg_u32(c, "head_dim", "attention.value_length", false, NULL)) ||
	    (st = cfg_u32(c, "vocab_size", "vocab_size", false, &info->vocab_size)) ||
	    (st = cfg_f32(c, "rms_norm_eps", "attention.layer_norm_rms_epsilon", true)) ||
	    (st = cfg_f32(c, "rope_theta", "rope.freq_base", false)))
		return st;
	/* transformers 5 writes rope_parameters {rope_theta, rope_type} instead. */
	v = json_object_get(c->root, "rope_parameters");
	if (v && !json_is_null(v)) {
		const char *type = json_string_value(json_object_get(v, "rope_type"));
		if (type && strcmp(type, "default") != 0)
			return specd_errorf(c->err, SPECD_UNSUPPORTED,
					    "%s: rope_parameters.rope_type '%.32s' is not supported (default is)",
					    c->path, type);
		struct hf_cfg inner = *c;
		inner.root = v;
		if ((st = cfg_f32(&inner, "rope_theta", "rope.freq_base", false)) != SPECD_OK)
			return st;
	}
	/* Hugging Face's rotate_half pairs dimension i with i + d/2 whatever the model. */
	return gguf_writer_set_str(c->w, MODEL_KEY_ROPE_LAYOUT, "halves");
}

/* --- tensors --------------------------------------------------------------------- */

struct hf_load {
	const char *dir;
	struct gguf_file *f;
	json_t *weight_map;       /* the index's name -> file, or NULL for one file */
	bool tied;
	size_t skipped;
	struct specd_error *err;
};

/* Maps dir/name read-only; the view owns the mapping from then on. */
static enum specd_status map_shard(struct hf_load *ld, const char *name, const uint8_t **base,
				   size_t *size)
{
	char path[4096];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/%s", ld->dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return specd_errorf(ld->err, SPECD_IO, "%s: cannot open: %s%s", path, strerror(errno),
				    ld->weight_map ? " (listed in " HF_INDEX ")" : "");
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
		close(fd);
		return specd_errorf(ld->err, SPECD_INVAL, "%s: not a safetensors file (empty or not a regular file)",
				    path);
	}
	void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (m == MAP_FAILED)
		return specd_errorf(ld->err, SPECD_IO, "%s: cannot map: %s", path, strerror(e));
	if (gguf_view_own(ld->f, m, (size_t)sb.st_size) != SPECD_OK)
		return specd_errorf(ld->err, SPECD_NOMEM, "%s: no memory", path);
	*base = m;
	*size = (size_t)sb.st_size;
	return SPECD_OK;
}

/* The data of t as the loader takes it: in place when it can be, else a copy the view
 * owns. The loader reads norms and biases (1-D) only as f32, and every element must
 * sit at an address aligned for its type. */
static enum specd_status tensor_data(struct hf_load *ld, const struct safetensors_tensor *t,
				     const uint8_t *src, const void **out, enum kern_dtype *type)
{
	size_t es = t->type == KERN_F32 ? 4 : 2;
	uint64_t n = t->nbytes / es;
	if (t->n_dims == 1 && t->type != KERN_F32) {
		float *dst = specd_malloc_array((size_t)n, sizeof(float));
		if (!dst)
			return SPECD_NOMEM;
		for (uint64_t i = 0; i < n; i++) {
			uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
			dst[i] = t->type == KERN_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
		}
		*out = dst;
		*type = KERN_F32;
		return gguf_view_own(ld->f, dst, 0);
	}
	*type = t->type;
	if ((uintptr_t)src % es == 0) {
		*out = src;
		return SPECD_OK;
	}
	void *copy = specd_aligned_alloc(64, (size_t)t->nbytes);
	if (!copy)
		return SPECD_NOMEM;
	memcpy(copy, src, (size_t)t->nbytes);
	*out = copy;
	return gguf_view_own(ld->f, copy, 0);
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), k = strlen(tail);
	return n >= k && strcmp(s + n - k, tail) == 0;
}

static enum specd_status add_tensor(struct hf_load *ld, const char *file,
				    const struct safetensors_tensor *t, const uint8_t *base)
{
	char name[128];
	uint64_t ne[GGUF_MAX_DIMS];
	const void *data;
	enum kern_dtype type;
	enum specd_status st;

	if (!model_file_gguf_name(t->name, name, sizeof(name))) {
		/* A buffer transformers recomputes from rope_theta; anything else is a
		 * weight of a feature the loader lacks, which must not be dropped quietly. */
		if (ends_with(t->name, ".rotary_emb.inv_freq")) {
			ld->skipped++;
			return SPECD_OK;
		}
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s/%s: tensor '%s' is not supported (not a weight of the llama "
				    "or qwen2 architecture)", ld->dir, file, t->name);
	}
	if (ld->tied && strcmp(name, "output.weight") == 0) {
		ld->skipped++; /* a tied lm_head: the loader reads the embedding */
		return SPECD_OK;
	}
	if (ends_with(name, ".bias") && !ends_with(name, ".attn_q.bias") &&
	    !ends_with(name, ".attn_k.bias") && !ends_with(name, ".attn_v.bias"))
		return specd_errorf(ld->err, SPECD_UNSUPPORTED,
				    "%s/%s: tensor '%s': a bias there is not supported (q_proj, "
				    "k_proj and v_proj take biases)", ld->dir, file, t->name);
	for (uint32_t d = 0; d < t->n_dims; d++)
		ne[d] = t->shape[t->n_dims - 1 - d];
	if ((st = tensor_data(ld, t, base + t->offset, &data, &type)) != SPECD_OK)
		return specd_errorf(ld->err, st, "%s/%s: tensor '%s': no memory", ld->dir, file, t->name);
	if ((st = gguf_view_add_tensor(ld->f, name, type, t->n_dims, ne, data)) != SPECD_OK)
		return specd_errorf(ld->err, st, "%s/%s: tensor '%s': cannot add it", ld->dir, file,
				    t->name);
	return SPECD_OK;
}

/* Every tensor of shard `file` that the index places there (all of them without an
 * index); the index's names must all be found. */
static enum specd_status load_shard(struct hf_load *ld, const char *file)
{
	struct safetensors_header h = {0};
	const uint8_t *base = NULL;
	size_t size = 0;
	char src[4096];
	const char *key;
	json_t *v;
	enum specd_status st;

	snprintf(src, sizeof(src), "%s/%s", ld->dir, file);
	if ((st = map_shard(ld, file, &base, &size)) != SPECD_OK ||
	    (st = safetensors_parse(src, base, size, &h, ld->err)) != SPECD_OK)
		return st;
	for (size_t i = 0; i < h.n && st == SPECD_OK; i++) {
		const char *where = ld->weight_map ? json_string_value(json_object_get(ld->weight_map, h.t[i].name)) : file;
		if (where && strcmp(where, file) == 0)
			st = add_tensor(ld, file, &h.t[i], base);
	}
	json_object_foreach(ld->weight_map, key, v) {
		if (st != SPECD_OK || strcmp(json_string_value(v), file) != 0)
			continue;
		bool found = false;
		for (size_t i = 0; i < h.n && !found; i++)
			found = strcmp(h.t[i].name, key) == 0;
		if (!found)
			st = specd_errorf(ld->err, SPECD_INVAL,
					  "%s/%s: tensor '%s' is in %s by the index, but that file has no such tensor",
					  ld->dir, HF_INDEX, key, file);
	}
	safetensors_free(&h);
	return st;
}

/* A shard's file name from the index: a plain name inside the folder. */
static bool plain_file_name(const char *s)
{
	return s && *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static enum specd_status load_indexed(struct hf_load *ld, json_t *index, const char *path)
{
	json_t *map = json_object_get(index, "weight_map"), *v;
	const char *key;
	enum specd_status st = SPECD_OK;

	if (!json_is_object(map) || json_object_size(map) == 0)
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s: key 'weight_map' is missing or not a non-empty object", path);
	json_object_foreach(map, key, v) {
		if (!plain_file_name(json_string_value(v)))
			return specd_errorf(ld->err, SPECD_INVAL,
					    "%s: weight_map['%s'] is not a file name in the folder",
					    path, key);
	}
	ld->weight_map = map;
	/* Each file once, in the order the index first names it. */
	json_object_foreach(map, key, v) {
		const char *file = json_string_value(v), *k2;
		json_t *v2;
		bool seen = false;
		json_object_foreach(map, k2, v2) {
			if (k2 == key)
				break;
			if (strcmp(json_string_value(v2), file) == 0) {
				seen = true;
				break;
			}
		}
		if (!seen && (st = load_shard(ld, file)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

static enum specd_status load_tensors(struct hf_load *ld)
{
	char path[4096];
	json_t *index = NULL;
	struct stat sb;
	enum specd_status st;

	snprintf(path, sizeof(path), "%s/%s", ld->dir, HF_INDEX);
	if (stat(path, &sb) == 0) {
		if ((st = hf_json_load(ld->dir, HF_INDEX, 0, path, sizeof(path), &index, ld->err)) == SPECD_OK)
			st = load_indexed(ld, index, path);
		json_decref(index);
		ld->weight_map = NULL;
	} else {
		snprintf(path, sizeof(path), "%s/%s", ld->dir, HF_SINGLE);
		if (stat(path, &sb) != 0)
			return specd_errorf(ld->err, SPECD_IO, "%s: neither %s nor %s: %s", ld->dir,
					    HF_SINGLE, HF_INDEX, strerror(errno));
		st = load_shard(ld, HF_SINGLE);
	}
	if (st != SPECD_OK)
		return st;
	if (ld->skipped)
		LOG_DEBUG("%s: %zu tensors not used (rotary_emb.inv_freq, a tied lm_head)", ld->dir,
			  ld->skipped);
	if (!ld->tied && !gguf_find_tensor(ld->f, "output.weight") &&
	    gguf_find_tensor(ld->f, "token_embd.weight"))
		return specd_errorf(ld->err, SPECD_INVAL,
				    "%s: tensor 'lm_head.weight' is missing and config.json's tie_word_embeddings is not true",
				    ld->dir);
	return SPECD_OK;
}

/* --- the view -------------------------------------------------------------------- */

/* config.json and the tokenizer files as a GGUF metadata image. */
static enum specd_status build_meta(const char *dir, struct hf_model_info *info, void **image,
				    size_t *size, struct specd_error *err)
{
	char path[4096];
	json_t *config = NULL;
	struct gguf_writer *w = NULL;
	struct specd_error e;
	enum specd_status st;

	specd_error_clear(&e);
	if ((st = hf_json_load(dir, "config.json", 0, path, sizeof(path), &config, &e)) == SPECD_OK &&
	    (st = gguf_writer_create(&w)) == SPECD_OK) {
		struct hf_cfg c = {.path = path, .root = config, .w = w, .err = &e};
		if ((st = cfg_keys(&c, info)) == SPECD_OK &&
		    (st = hf_tokenizer_keys(dir, config, info->vocab_size, w, &e)) == SPECD_OK)
			st = gguf_writer_image(w, 3, image, size);
	}
	gguf_writer_destroy(w);
	json_decref(config);
	if (st == SPECD_OK)
		return SPECD_OK;
	/* Writer calls fail without a message: only for want of memory. */
	if (!e.msg[0])
		return specd_errorf(err, st, "%s: cannot build the metadata: %s", dir,
				    specd_status_str(st));
	return specd_errorf(err, st, "%s", e.msg);
}

enum specd_status hf_open(const char *dir, struct gguf_file **out, struct specd_error *err)
{
	struct hf_model_info info = {0};
	struct gguf_file *f = NULL;
	void *image = NULL;
	size_t size = 0;
	enum specd_status st;

	if ((st = build_meta(dir, &info, &image, &size, err)) != SPECD_OK ||
	    (st = gguf_view_open(image, size, dir, &f, err)) != SPECD_OK)
		return st;
	struct hf_load ld = {.dir = dir, .f = f, .tied = info.tied, .err = err};
	if ((st = load_tensors(&ld)) != SPECD_OK || (st = gguf_view_index(f, dir, err)) != SPECD_OK) {
		gguf_close(f);
		return st;
	}
	*out = f;
	return SPECD_OK;
}
