/* specd-gen-heads: random heads for the drafters fed the target's hidden state, so tests
 * and benches run without trained weights (DESIGN.md §8). Medusa heads as one safetensors
 * file; with --eagle an EAGLE-1/2 checkpoint folder (config.json, model.safetensors as in
 * SafeAILab/EAGLE cnets1.py) sized for a target, optionally with one fault for loader tests. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/error.h"
#include "kernels/dtype.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/model_file.h"

#define MAX_LAYERS 64

/* --bad: the one wrong thing an EAGLE checkpoint is written with. */
enum eagle_bad {
	BAD_NONE,
	BAD_FC_SHAPE,    /* fc.weight (hidden, hidden) instead of (hidden, 2 * hidden) */
	BAD_MISSING_MLP, /* no layers.0.mlp.down_proj.weight */
	BAD_VOCAB,       /* config.json's vocab_size one past the target's */
	BAD_HIDDEN,      /* hidden_size 8 past the target's, every tensor sized to it */
	BAD_DTYPE,       /* fc.weight stored as I8 */
	BAD_COUNT
};

static const char *const bad_names[BAD_COUNT] = {
	[BAD_FC_SHAPE] = "fc-shape", [BAD_MISSING_MLP] = "missing-mlp", [BAD_VOCAB] = "vocab",
	[BAD_HIDDEN] = "hidden",     [BAD_DTYPE] = "dtype",
};

struct opts {
	const char *out, *model;
	unsigned long dim, vocab, heads, layers;
	bool shared, bare;
	double scale;
	unsigned long long seed;
	enum kern_dtype type;
	/* --eagle only: */
	bool eagle, force, fc_bias, with_embed;
	int qkv_bias; /* 1 on, 0 off, -1: as the target's architecture (qwen2 has them) */
	enum eagle_bad bad;
};

enum plan_fill {
	FILL_UNIFORM, /* U(-amp, amp) */
	FILL_ONES,    /* RMSNorm weights: the identity scale */
	FILL_I8,      /* random bytes, declared I8 (--bad dtype) */
};

/* One tensor of the file: its name, shape and what fills it. */
struct plan {
	char name[96];
	unsigned long rows, cols; /* cols 0: a vector of rows entries */
	double amp;
	enum plan_fill fill;
};

/* A 64-bit LCG (Knuth's MMIX constants); the top 24 bits make a uniform float. */
static float uniform_pm1(unsigned long long *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 40) / (double)(1u << 24) * 2.0 - 1.0);
}

/* An EAGLE tensor's stream depends on its name only, so the variants of one seed
 * (--bad, --no-fc-bias, --with-embed) share the values of every tensor they share. */
static unsigned long long name_stream(unsigned long long seed, const char *name)
{
	unsigned long long h = 0xcbf29ce484222325ull; /* FNV-1a */
	while (*name)
		h = (h ^ (unsigned char)*name++) * 0x100000001b3ull;
	return (seed + 1) * 0x9e3779b97f4a7c15ull ^ h;
}

static void plan_add(struct plan *p, size_t *n, unsigned long rows, unsigned long cols,
		     double amp, enum plan_fill fill, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static void plan_add(struct plan *p, size_t *n, unsigned long rows, unsigned long cols,
		     double amp, enum plan_fill fill, const char *fmt, ...)
{
	va_list ap;
	p[*n] = (struct plan){.rows = rows, .cols = cols, .amp = amp, .fill = fill};
	va_start(ap, fmt);
	vsnprintf(p[*n].name, sizeof(p->name), fmt, ap);
	va_end(ap);
	(*n)++;
}

static size_t plan_heads(const struct opts *o, struct plan *p)
{
	const char *pre = o->bare ? "" : "medusa_head.";
	double a = o->scale / sqrt((double)o->dim);
	size_t n = 0;

	for (unsigned long i = 0; i < o->heads; i++) {
		for (unsigned long j = 0; j < o->layers; j++) {
			plan_add(p, &n, o->dim, o->dim, a, FILL_UNIFORM, "%s%lu.%lu.linear.weight",
				 pre, i, j);
			plan_add(p, &n, o->dim, 0, 0.1 * o->scale, FILL_UNIFORM,
				 "%s%lu.%lu.linear.bias", pre, i, j);
		}
		if (!o->shared)
			plan_add(p, &n, o->vocab, o->dim, 1.0 / sqrt((double)o->dim), FILL_UNIFORM,
				 "%s%lu.%lu.weight", pre, i, o->layers);
	}
	return n;
}

/* The checkpoint's hidden size: the target's, unless --bad hidden. */
static unsigned long eagle_hidden(const struct opts *o, const struct model_hparams *hp)
{
	return hp->dim + (o->bad == BAD_HIDDEN ? 8u : 0u);
}

static bool eagle_qkv_bias(const struct opts *o, const struct model_hparams *hp)
{
	return o->qkv_bias < 0 ? model_arch_qkv_bias(hp->arch) : o->qkv_bias != 0;
}

/* Every matrix is U(-s/sqrt(fan_in), s/sqrt(fan_in)): each output keeps about the
 * input's RMS / sqrt(3), so a draft pass through --layers layers and the target's LM
 * head stays finite; norms are 1 and biases small. */
static size_t plan_eagle(const struct opts *o, const struct model_hparams *hp, struct plan *p)
{
	unsigned long h = eagle_hidden(o, hp), ffn = hp->ffn_dim;
	unsigned long q_dim = (unsigned long)hp->n_heads * hp->head_dim;
	unsigned long kv_dim = (unsigned long)hp->n_kv_heads * hp->head_dim;
	unsigned long fc_in = o->bad == BAD_FC_SHAPE ? h : 2 * h;
	double s = o->scale, b = 0.1 * o->scale;
	bool qkv_bias = eagle_qkv_bias(o, hp);
	size_t n = 0;

	plan_add(p, &n, h, fc_in, s / sqrt((double)fc_in),
		 o->bad == BAD_DTYPE ? FILL_I8 : FILL_UNIFORM, "fc.weight");
	if (o->fc_bias)
		plan_add(p, &n, h, 0, b, FILL_UNIFORM, "fc.bias");
	for (unsigned long l = 0; l < o->layers; l++) {
		static const char *const qkv[3] = {"q", "k", "v"};
		for (int i = 0; i < 3; i++) {
			unsigned long rows = i == 0 ? q_dim : kv_dim;
			plan_add(p, &n, rows, h, s / sqrt((double)h), FILL_UNIFORM,
				 "layers.%lu.self_attn.%s_proj.weight", l, qkv[i]);
			if (qkv_bias)
				plan_add(p, &n, rows, 0, b, FILL_UNIFORM,
					 "layers.%lu.self_attn.%s_proj.bias", l, qkv[i]);
		}
		plan_add(p, &n, h, q_dim, s / sqrt((double)q_dim), FILL_UNIFORM,
			 "layers.%lu.self_attn.o_proj.weight", l);
		plan_add(p, &n, ffn, h, s / sqrt((double)h), FILL_UNIFORM,
			 "layers.%lu.mlp.gate_proj.weight", l);
		plan_add(p, &n, ffn, h, s / sqrt((double)h), FILL_UNIFORM,
			 "layers.%lu.mlp.up_proj.weight", l);
		if (!(o->bad == BAD_MISSING_MLP && l == 0))
			plan_add(p, &n, h, ffn, s / sqrt((double)ffn), FILL_UNIFORM,
				 "layers.%lu.mlp.down_proj.weight", l);
		plan_add(p, &n, h, 0, 1.0, FILL_ONES, "layers.%lu.post_attention_layernorm.weight",
			 l);
		/* EAGLE's layer 0 reads fc's output unnormalised. */
		if (l > 0)
			plan_add(p, &n, h, 0, 1.0, FILL_ONES,
				 "layers.%lu.input_layernorm.weight", l);
	}
	if (o->with_embed)
		plan_add(p, &n, hp->n_vocab, h, s, FILL_UNIFORM, "embed_tokens.weight");
	return n;
}

static unsigned long plan_width(const struct plan *p)
{
	return p->cols ? p->cols : p->rows;
}

static size_t plan_row_bytes(enum kern_dtype type, const struct plan *p)
{
	return p->fill == FILL_I8 ? plan_width(p) : kern_dtype_row_bytes(type, plan_width(p));
}

static size_t plan_bytes(enum kern_dtype type, const struct plan *p)
{
	return plan_row_bytes(type, p) * (p->cols ? p->rows : 1);
}

/* The next row of p's values, packed as the file stores them; row is scratch. */
static void plan_row(const struct plan *p, enum kern_dtype type, unsigned long long *rng,
		     float *row, uint8_t *packed)
{
	unsigned long width = plan_width(p);
	for (unsigned long c = 0; c < width; c++) {
		if (p->fill == FILL_I8)
			packed[c] = (uint8_t)(int8_t)(uniform_pm1(rng) * 127.0f);
		else
			row[c] = p->fill == FILL_ONES ? 1.0f : (float)(p->amp * uniform_pm1(rng));
	}
	if (p->fill != FILL_I8)
		kern_quant_row(type, row, packed, width);
}

static const char *st_dtype(enum kern_dtype type, const struct plan *p)
{
	if (p->fill == FILL_I8)
		return "I8";
	return type == KERN_F16 ? "F16" : type == KERN_BF16 ? "BF16" : "F32";
}

/* The JSON header, padded with spaces to a multiple of 8 as safetensors writers do. */
static enum specd_status st_header(enum kern_dtype type, const struct plan *p, size_t n,
				   char **out, size_t *len)
{
	json_t *root = json_object();
	size_t off = 0;

	if (!root)
		return SPECD_NOMEM;
	json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
	for (size_t i = 0; i < n; i++) {
		size_t b = plan_bytes(type, &p[i]);
		json_t *shape = p[i].cols ? json_pack("[I,I]", (json_int_t)p[i].rows,
						      (json_int_t)p[i].cols)
					  : json_pack("[I]", (json_int_t)p[i].rows);
		json_object_set_new(root, p[i].name,
				    json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype(type, &p[i]),
					      "shape", shape, "data_offsets", (json_int_t)off,
					      (json_int_t)(off + b)));
		off += b;
	}
	char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (!text)
		return SPECD_NOMEM;
	size_t tl = strlen(text), padded = (tl + 7) / 8 * 8;
	char *h = specd_malloc_array(padded + 1, 1);
	if (h) {
		memcpy(h, text, tl);
		memset(h + tl, ' ', padded - tl);
		*out = h;
		*len = padded;
	}
	free(text);
	return h ? SPECD_OK : SPECD_NOMEM;
}

/* Writes the planned tensors to `path` as safetensors. Medusa heads draw every tensor
 * from one stream in plan order (the values earlier versions wrote); EAGLE ones from a
 * stream per name. */
static enum specd_status st_write(const struct opts *o, const struct plan *p, size_t n,
				  const char *path, struct specd_error *err)
{
	unsigned long width = 1;
	for (size_t t = 0; t < n; t++)
		width = plan_width(&p[t]) > width ? plan_width(&p[t]) : width;
	float *row = specd_malloc_array(width, sizeof(float));
	uint8_t *packed = specd_malloc_array(width, 4);
	char *hdr = NULL;
	size_t hlen = 0;
	enum specd_status st = SPECD_NOMEM;
	FILE *f = NULL;

	if (!row || !packed || (st = st_header(o->type, p, n, &hdr, &hlen)) != SPECD_OK) {
		st = specd_errorf(err, st, "%s: out of memory", path);
		goto fail;
	}
	if (!(f = fopen(path, "wb"))) {
		st = specd_errorf(err, SPECD_IO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((unsigned long long)hlen >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(hdr, 1, hlen, f);
	unsigned long long rng = o->seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t t = 0; t < n; t++) {
		unsigned long rows = p[t].cols ? p[t].rows : 1;
		if (o->eagle)
			rng = name_stream(o->seed, p[t].name);
		for (unsigned long r = 0; r < rows; r++) {
			plan_row(&p[t], o->type, &rng, row, packed);
			fwrite(packed, 1, plan_row_bytes(o->type, &p[t]), f);
		}
	}
	bool bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		f = NULL;
		st = specd_errorf(err, SPECD_IO, "%s: cannot write: %s", path, strerror(errno));
		goto fail;
	}
	f = NULL;
	st = SPECD_OK;
fail:
	if (f)
		fclose(f);
	specd_free(hdr);
	specd_free(row);
	specd_free(packed);
	return st;
}

static enum specd_status write_heads(const struct opts *o, struct specd_error *err)
{
	struct plan *p = specd_malloc_array(o->heads * (2 * o->layers + 1), sizeof(*p));
	if (!p)
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	enum specd_status st = st_write(o, p, plan_heads(o, p), o->out, err);
	specd_free(p);
	return st;
}

/* --dim and --vocab from a model's token embedding. */
static enum specd_status sizes_from_model(struct opts *o, struct specd_error *err)
{
	struct gguf_file *g;
	enum specd_status st = model_file_open(o->model, &g, err);
	if (st != SPECD_OK)
		return st;
	const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
	if (t) {
		o->dim = (unsigned long)t->ne[0];
		o->vocab = (unsigned long)t->ne[1];
	} else {
		st = specd_errorf(err, SPECD_INVAL, "%s has no token_embd.weight", o->model);
	}
	gguf_close(g);
	return st;
}

/* The target's hyper-parameters as the loader reads and checks them; a model of one
 * KV row, since only its shape is wanted. */
static enum specd_status target_hparams(const char *path, struct model_hparams *out,
					struct specd_error *err)
{
	struct model_config cfg = {.n_slots = 1, .n_ctx = 1, .max_batch = 1};
	struct model *m;
	enum specd_status st = model_load(path, &cfg, &m, err);
	if (st != SPECD_OK)
		return st;
	*out = *model_hparams(m);
	model_destroy(m);
	return SPECD_OK;
}

/* A float hyper-parameter as the shortest decimal that reads back to it (1e-05, not
 * 9.99999975e-06), as Hugging Face configs spell them. */
static json_t *json_float(float v)
{
	char buf[32];
	for (int prec = 1; prec < 10; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, (double)v);
		if (strtof(buf, NULL) == v)
			break;
	}
	return json_real(strtod(buf, NULL));
}

static const char *torch_dtype(enum kern_dtype t)
{
	return t == KERN_F16 ? "float16" : t == KERN_BF16 ? "bfloat16" : "float32";
}

static enum specd_status eagle_config_write(const struct opts *o, const struct model_hparams *hp,
					    const char *path, struct specd_error *err)
{
	bool qwen = hp->arch == MODEL_ARCH_QWEN2;
	json_t *c = json_pack(
		"{s:[s],s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:I,s:I,s:b,s:b,s:s,s:b,s:s}",
		"architectures", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM", "model_type",
		model_arch_name(hp->arch), "hidden_size", (json_int_t)eagle_hidden(o, hp),
		"intermediate_size", (json_int_t)hp->ffn_dim, "num_attention_heads",
		(json_int_t)hp->n_heads, "num_key_value_heads", (json_int_t)hp->n_kv_heads,
		"num_hidden_layers", (json_int_t)o->layers, "head_dim", (json_int_t)hp->head_dim,
		"rms_norm_eps", json_float(hp->rms_eps), "rope_theta", json_float(hp->rope_base),
		"vocab_size", (json_int_t)hp->n_vocab + (o->bad == BAD_VOCAB),
		"max_position_embeddings", (json_int_t)hp->n_ctx_train, "bias", o->fc_bias,
		"attention_bias", eagle_qkv_bias(o, hp), "hidden_act", "silu",
		"tie_word_embeddings", false, "torch_dtype", torch_dtype(o->type));
	if (!c)
		return specd_errorf(err, SPECD_NOMEM, "%s: out of memory", path);
	int rc = json_dump_file(c, path, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
	json_decref(c);
	if (rc != 0)
		return specd_errorf(err, SPECD_IO, "%s: cannot write: %s", path, strerror(errno));
	return SPECD_OK;
}

/* Removes a folder of files. It checks for sub-folders before removing anything: a
 * checkpoint has none, so one means `path` is not what --force was meant to replace. */
static enum specd_status dir_remove(const char *path, struct specd_error *err)
{
	DIR *d = opendir(path);
	enum specd_status st = SPECD_OK;
	if (!d)
		return specd_errorf(err, SPECD_IO, "%s: %s", path, strerror(errno));
	for (int pass = 0; pass < 2 && st == SPECD_OK; pass++) {
		struct dirent *e;
		rewinddir(d);
		while (st == SPECD_OK && (e = readdir(d)) != NULL) {
			struct stat sb;
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
			    (pass == 1 && unlinkat(dirfd(d), e->d_name, 0) != 0))
				st = specd_errorf(err, SPECD_IO, "%s/%s: %s", path, e->d_name,
						  strerror(errno));
			else if (S_ISDIR(sb.st_mode))
				st = specd_errorf(err, SPECD_INVAL,
						  "%s/%s is a folder: not removing %s", path,
						  e->d_name, path);
		}
	}
	closedir(d);
	if (st == SPECD_OK && rmdir(path) != 0)
		st = specd_errorf(err, SPECD_IO, "%s: %s", path, strerror(errno));
	return st;
}

static enum specd_status path_remove(const char *path, struct specd_error *err)
{
	struct stat sb;
	if (lstat(path, &sb) != 0) {
		if (errno == ENOENT)
			return SPECD_OK;
		return specd_errorf(err, SPECD_IO, "%s: %s", path, strerror(errno));
	}
	if (S_ISDIR(sb.st_mode))
		return dir_remove(path, err);
	if (unlink(path) != 0)
		return specd_errorf(err, SPECD_IO, "%s: %s", path, strerror(errno));
	return SPECD_OK;
}

/* The checkpoint is written whole into DIR.tmp and renamed, so DIR is never a
 * half-written checkpoint that a loader test could mistake for a --bad one. */
static enum specd_status write_eagle(const struct opts *o, const struct model_hparams *hp,
				     struct specd_error *err)
{
	struct plan *p = specd_malloc_array(3 + 13 * o->layers, sizeof(*p));
	size_t dlen = strlen(o->out), flen = dlen + sizeof("/model.safetensors") + 4;
	char *dir = NULL, *tmp = NULL, *file = NULL;
	bool tmp_made = false;
	enum specd_status st;
	struct stat sb;

	while (dlen > 1 && o->out[dlen - 1] == '/')
		dlen--;
	if (!p || !(dir = specd_malloc_array(dlen + 1, 1)) ||
	    !(tmp = specd_malloc_array(dlen + 5, 1)) || !(file = specd_malloc_array(flen, 1))) {
		st = specd_errorf(err, SPECD_NOMEM, "out of memory");
		goto fail;
	}
	memcpy(dir, o->out, dlen);
	dir[dlen] = '\0';
	snprintf(tmp, dlen + 5, "%s.tmp", dir);
	if (lstat(dir, &sb) == 0 && !o->force) {
		st = specd_errorf(err, SPECD_INVAL, "%s exists (--force replaces it)", dir);
		goto fail;
	}
	if ((st = path_remove(tmp, err)) != SPECD_OK)
		goto fail;
	if (mkdir(tmp, 0755) != 0) {
		st = specd_errorf(err, SPECD_IO, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	tmp_made = true;
	snprintf(file, flen, "%s/config.json", tmp);
	if ((st = eagle_config_write(o, hp, file, err)) != SPECD_OK)
		goto fail;
	snprintf(file, flen, "%s/model.safetensors", tmp);
	if ((st = st_write(o, p, plan_eagle(o, hp, p), file, err)) != SPECD_OK ||
	    (st = path_remove(dir, err)) != SPECD_OK)
		goto fail;
	if (rename(tmp, dir) != 0)
		st = specd_errorf(err, SPECD_IO, "rename %s to %s: %s", tmp, dir, strerror(errno));
fail:
	if (st != SPECD_OK && tmp_made)
		path_remove(tmp, NULL);
	specd_free(p);
	specd_free(dir);
	specd_free(tmp);
	specd_free(file);
	return st;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: specd-gen-heads -o FILE.safetensors (-m MODEL | --dim D --vocab V)\n"
		"         [--heads 3] [--layers 1] [--shared] [--scale 1] [--seed 1]\n"
		"         [--dtype f32|f16|bf16] [--bare]\n"
		"       specd-gen-heads --eagle -o DIR -m MODEL [--layers 1]\n"
		"         [--dtype f32|f16|bf16] [--scale 1] [--seed 1] [--no-fc-bias]\n"
		"         [--qkv-bias|--no-qkv-bias] [--with-embed] [--force]\n"
		"         [--bad fc-shape|missing-mlp|vocab|hidden|dtype]\n"
		"Writes random Medusa heads: per head, --layers residual blocks\n"
		"(medusa_head.I.J.linear.weight and .bias) and an LM head\n"
		"(medusa_head.I.L.weight) unless --shared (the heads then use the target's LM\n"
		"head). --scale multiplies the blocks' weights (small: each head stays close to\n"
		"the target's own prediction). --bare leaves out the medusa_head. prefix, as\n"
		"Medusa's saved head files do.\n"
		"With --eagle: an EAGLE-1/2 checkpoint folder DIR (config.json,\n"
		"model.safetensors) sized for MODEL (a GGUF file or Hugging Face folder):\n"
		"fc.weight (hidden, 2*hidden) and fc.bias (unless --no-fc-bias), then --layers\n"
		"decoder layers (layer 0 without input_layernorm); Q/K/V biases by default for\n"
		"qwen2 targets only; --with-embed adds embed_tokens.weight. Matrices are\n"
		"U(-a, a), a = scale/sqrt(fan_in); norms 1. DIR is written as DIR.tmp (a stale\n"
		"one is removed) and renamed; an existing DIR is replaced only with --force.\n"
		"--bad writes one fault for loader tests: fc-shape (fc.weight (hidden, hidden)),\n"
		"missing-mlp (no layers.0.mlp.down_proj.weight), vocab (vocab_size + 1),\n"
		"hidden (hidden_size + 8, tensors to match), dtype (fc.weight as I8).\n"
		"--type is another name for --dtype.\n");
}

static bool parse_ul(const char *s, unsigned long lo, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo)
		return false;
	*out = v;
	return true;
}

static bool parse_bad(const char *s, enum eagle_bad *out)
{
	for (int i = BAD_NONE + 1; i < BAD_COUNT; i++) {
		if (!strcmp(s, bad_names[i])) {
			*out = (enum eagle_bad)i;
			return true;
		}
	}
	return false;
}

/* Which options each mode takes: the other mode's are refused, not ignored. */
static const char *mode_conflict(const struct opts *o, bool medusa_only, bool eagle_only)
{
	if (o->eagle && medusa_only)
		return "--dim, --vocab, --heads, --shared and --bare are for Medusa heads, "
		       "not --eagle";
	if (!o->eagle && eagle_only)
		return "--force, --no-fc-bias, --qkv-bias, --no-qkv-bias, --with-embed and --bad "
		       "need --eagle";
	if (o->eagle && !o->model)
		return "--eagle needs -m MODEL";
	return NULL;
}

int main(int argc, char **argv)
{
	struct opts o = {.heads = 3, .layers = 1, .scale = 1.0, .seed = 1, .type = KERN_F32,
			 .fc_bias = true, .qkv_bias = -1};
	enum { O_DIM = 256, O_VOCAB, O_HEADS, O_LAYERS, O_SHARED, O_SCALE, O_SEED, O_TYPE, O_BARE,
	       O_EAGLE, O_FORCE, O_NO_FC_BIAS, O_QKV_BIAS, O_NO_QKV_BIAS, O_WITH_EMBED, O_BAD };
	static const struct option lo[] = {
		/* both modes */
		{"out", required_argument, NULL, 'o'},
		{"model", required_argument, NULL, 'm'},
		{"layers", required_argument, NULL, O_LAYERS},
		{"help", no_argument, NULL, 'h'},
		{"scale", required_argument, NULL, O_SCALE},
		{"seed", required_argument, NULL, O_SEED},
		{"type", required_argument, NULL, O_TYPE},
		{"dtype", required_argument, NULL, O_TYPE},
		/* Medusa */
		{"dim", required_argument, NULL, O_DIM},
		{"heads", required_argument, NULL, O_HEADS},
		{"vocab", required_argument, NULL, O_VOCAB},
		{"bare", no_argument, NULL, O_BARE},
		{"shared", no_argument, NULL, O_SHARED},
		/* EAGLE */
		{"eagle", no_argument, NULL, O_EAGLE},
		{"force", no_argument, NULL, O_FORCE},
		{"no-fc-bias", no_argument, NULL, O_NO_FC_BIAS},
		{"qkv-bias", no_argument, NULL, O_QKV_BIAS},
		{"no-qkv-bias", no_argument, NULL, O_NO_QKV_BIAS},
		{"with-embed", no_argument, NULL, O_WITH_EMBED},
		{"bad", required_argument, NULL, O_BAD},
		{NULL, 0, NULL, 0},
	};
	bool medusa_only = false, eagle_only = false;
	int c;
	while ((c = getopt_long(argc, argv, "o:m:h", lo, NULL)) != -1) {
		bool ok = true;
		unsigned long v = 0;
		char *end;
		medusa_only |= c == O_DIM || c == O_VOCAB || c == O_HEADS || c == O_SHARED ||
			       c == O_BARE;
		eagle_only |= c == O_FORCE || c == O_NO_FC_BIAS || c == O_QKV_BIAS ||
			      c == O_NO_QKV_BIAS || c == O_WITH_EMBED || c == O_BAD;
		switch (c) {
		case 'o': o.out = optarg; break;
		case 'm': o.model = optarg; break;
		case O_DIM: ok = parse_ul(optarg, 1, &o.dim); break;
		case O_VOCAB: ok = parse_ul(optarg, 1, &o.vocab); break;
		case O_HEADS: ok = parse_ul(optarg, 1, &o.heads) && o.heads <= 64; break;
		case O_LAYERS: ok = parse_ul(optarg, 1, &o.layers) && o.layers <= MAX_LAYERS; break;
		case O_SHARED: o.shared = true; break;
		case O_BARE: o.bare = true; break;
		case O_SCALE:
			o.scale = strtod(optarg, &end);
			ok = end != optarg && !*end && isfinite(o.scale);
			break;
		case O_SEED: ok = parse_ul(optarg, 0, &v); o.seed = v; break;
		case O_TYPE:
			ok = kern_dtype_parse(optarg, &o.type) &&
			     (o.type == KERN_F32 || o.type == KERN_F16 || o.type == KERN_BF16);
			break;
		case O_EAGLE: o.eagle = true; break;
		case O_FORCE: o.force = true; break;
		case O_NO_FC_BIAS: o.fc_bias = false; break;
		case O_QKV_BIAS: o.qkv_bias = 1; break;
		case O_NO_QKV_BIAS: o.qkv_bias = 0; break;
		case O_WITH_EMBED: o.with_embed = true; break;
		case O_BAD: ok = o.bad == BAD_NONE && parse_bad(optarg, &o.bad); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "specd-gen-heads: bad value '%s'%s\n", optarg,
				c == O_BAD && o.bad ? " (one --bad at a time)" : "");
			return 2;
		}
	}
	const char *conflict = mode_conflict(&o, medusa_only, eagle_only);
	if (conflict) {
		fprintf(stderr, "specd-gen-heads: %s\n", conflict);
		return 2;
	}
	if (!o.out || optind != argc || (!o.model && (!o.dim || !o.vocab))) {
		usage(stderr);
		return 2;
	}
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st;
	struct model_hparams hp = {0};
	if (o.eagle) {
		if ((st = target_hparams(o.model, &hp, &err)) == SPECD_OK)
			st = write_eagle(&o, &hp, &err);
	} else if ((st = o.model ? sizes_from_model(&o, &err) : SPECD_OK) == SPECD_OK) {
		st = write_heads(&o, &err);
	}
	if (st != SPECD_OK) {
		fprintf(stderr, "specd-gen-heads: %s\n", err.msg);
		return 1;
	}
	if (o.eagle)
		fprintf(stderr,
			"specd-gen-heads: %s: EAGLE for %s, hidden %lu, %lu layer%s, heads %u/%u, "
			"ffn %u, vocab %u, %s%s%s%s%s%s\n",
			o.out, model_arch_name(hp.arch), eagle_hidden(&o, &hp), o.layers,
			o.layers > 1 ? "s" : "", hp.n_heads, hp.n_kv_heads, hp.ffn_dim, hp.n_vocab,
			kern_dtype_name(o.type), o.fc_bias ? ", fc bias" : "",
			eagle_qkv_bias(&o, &hp) ? ", qkv bias" : "", o.with_embed ? ", embed" : "",
			o.bad ? ", bad " : "", o.bad ? bad_names[o.bad] : "");
	return 0;
}
