/* specd-gen-model: writes a random-weight Llama-family GGUF of any shape and type,
 * deterministic from a seed, for tests and benchmarks (DESIGN.md §8: no model file is
 * committed). Tensors are generated row by row and streamed to disk, so a model of
 * any size needs memory for one row, not one copy of the weights.
 *
 * Vocabulary: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF> (byte fallback
 * makes any text encodable), then "▁", the 94 printable ASCII characters, then
 * "▁"-prefixed lower-case words and bare words of growing length, with descending
 * scores. The minimum --vocab is 260 (specials, bytes and "▁"). Or, with --vocab-from
 * FILE.gguf, every tokenizer.* key of another model, so that the random model shares
 * its vocabulary (a draft model for a real target).
 *
 * With --layers-of FILE.gguf it writes no random weights: the first --layers blocks of
 * that model with its embedding, output norm and LM head, an early-exit draft of it
 * (self-speculative decoding without training) for a target that no smaller model at
 * hand shares a vocabulary with. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "kernels/dtype.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "model/tokenizer.h"

#include <jansson.h>

#define VOCAB_MIN 260
#define N_SPECIAL 3
#define N_BYTES 256

struct opts {
	const char *out;
	enum model_arch arch;
	uint64_t dim, layers, heads, kv_heads, ffn, vocab, ctx;
	enum kern_dtype type;
	bool tied;
	uint64_t seed;
	float rope_theta;
	uint32_t version;
	double params; /* 0: shape from the flags */
	const char *vocab_from; /* a GGUF whose tokenizer.* keys are copied */
	const char *layers_of;  /* a GGUF whose first `layers` blocks are copied, or NULL */
	const char *hf;         /* a Hugging Face folder to write too, or NULL */
	uint64_t hf_shards;
};

/* splitmix64: tiny, and the same everywhere (no libc rand). */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* Approximately standard normal: Irwin-Hall sum of four uniforms, scaled to unit
 * variance. Only additions and one multiply, so bit-identical on every libm. */
static float rng_normal(uint64_t *s)
{
	double sum = 0;
	for (int i = 0; i < 4; i++)
		sum += (double)(rng_next(s) >> 40) * 0x1p-24;
	return (float)((sum - 2.0) * 1.7320508075688772);
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3u;
	uint64_t s = seed ^ h;
	return rng_next(&s);
}

/* The k-th piece after the byte tokens, written into buf (at most 64 bytes). */
static void vocab_piece(uint64_t k, char *buf)
{
	static const char sp[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */
	if (k == 0) {
		strcpy(buf, sp);
		return;
	}
	if (k <= 94) {
		buf[0] = (char)(32 + k);
		buf[1] = '\0';
		return;
	}
	k -= 95;
	/* Words over a..z by length L: "▁" + w for every w, then bare w when L >= 2. */
	for (uint64_t len = 1, n = 26;; len++, n *= 26) {
		uint64_t in_len = len == 1 ? n : 2 * n;
		if (k >= in_len) {
			k -= in_len;
			continue;
		}
		char *p = buf;
		if (k < n) {
			memcpy(p, sp, 3);
			p += 3;
		} else {
			k -= n;
		}
		for (uint64_t i = len; i-- > 0; k /= 26)
			p[i] = (char)('a' + k % 26);
		p[len] = '\0';
		return;
	}
}

static enum specd_status add_vocab(struct gguf_writer *w, uint64_t vocab)
{
	enum specd_status st = SPECD_NOMEM;
	char **tokens = specd_calloc((size_t)vocab, sizeof(char *));
	float *scores = specd_malloc_array((size_t)vocab, sizeof(float));
	int32_t *types = specd_malloc_array((size_t)vocab, sizeof(int32_t));
	if (!tokens || !scores || !types)
		goto fail;
	for (uint64_t i = 0; i < vocab; i++) {
		char piece[64];
		if (i < N_SPECIAL) {
			static const char *const special[] = {"<unk>", "<s>", "</s>"};
			strcpy(piece, special[i]);
			types[i] = i == 0 ? 2 : 3; /* UNKNOWN, CONTROL */
			scores[i] = 0;
		} else if (i < N_SPECIAL + N_BYTES) {
			snprintf(piece, sizeof(piece), "<0x%02X>", (unsigned)(i - N_SPECIAL));
			types[i] = 6; /* BYTE */
			scores[i] = 0;
		} else {
			uint64_t k = i - N_SPECIAL - N_BYTES;
			vocab_piece(k, piece);
			types[i] = 1; /* NORMAL */
			scores[i] = -(float)k;
		}
		if (!(tokens[i] = specd_strdup(piece)))
			goto fail;
	}
	if ((st = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) != SPECD_OK ||
	    (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, vocab)) != SPECD_OK ||
	    (st = gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_F32, scores, vocab)) != SPECD_OK ||
	    (st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_I32, types, vocab)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) != SPECD_OK ||
	    (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true)) != SPECD_OK ||
	    (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false)) != SPECD_OK)
		goto fail;
fail:
	for (uint64_t i = 0; tokens && i < vocab; i++)
		specd_free(tokens[i]);
	specd_free(tokens);
	specd_free(scores);
	specd_free(types);
	return st;
}

/* --- byte-level BPE vocabulary (--hf) -------------------------------------------- */

#define BPE_N_SPECIAL 3
static const char *const bpe_special[BPE_N_SPECIAL] = {"<|endoftext|>", "<|im_start|>",
							"<|im_end|>"};
#define BPE_BOS 0 /* of bpe_special */
#define BPE_EOS 2
#define CHATML_TEMPLATE                                                                     \
	"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "         \
	"message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "   \
	"%}{{ '<|im_start|>assistant\n' }}{% endif %}"

struct bpe_vocab {
	char **tokens;  /* (n) */
	int32_t *types; /* (n) */
	char **merges;  /* (n_merges) "left right" */
	size_t n, n_merges;
};

static void bpe_vocab_free(struct bpe_vocab *v)
{
	for (size_t i = 0; v->tokens && i < v->n; i++)
		specd_free(v->tokens[i]);
	for (size_t i = 0; v->merges && i < v->n_merges; i++)
		specd_free(v->merges[i]);
	specd_free(v->tokens);
	specd_free(v->types);
	specd_free(v->merges);
}

static char *concat(const char *a, const char *sep, const char *b)
{
	size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
	char *s = specd_malloc_array(la + ls + lb + 1, 1);
	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, sep, ls);
		memcpy(s + la + ls, b, lb + 1);
	}
	return s;
}

/* Pieces 256.. are base + letter for every base of the level before (level 1: "Ġ"
 * and the letters), each from the merge "base letter"; the specials end the list. */
static bool bpe_vocab_build(uint64_t vocab, struct bpe_vocab *v)
{
	size_t n = (size_t)vocab, n_base = 27, b0 = 0, k = 256;
	uint32_t *bases = specd_malloc_array(n + 27, sizeof(uint32_t));

	*v = (struct bpe_vocab){.n = n};
	v->tokens = specd_calloc(n, sizeof(char *));
	v->types = specd_malloc_array(n, sizeof(int32_t));
	v->merges = specd_calloc(n, sizeof(char *));
	if (!bases || !v->tokens || !v->types || !v->merges)
		goto fail;
	for (unsigned b = 0; b < 256; b++) {
		char u[3] = {0};
		tok_bpe_byte_piece((unsigned char)b, u);
		if (!(v->tokens[b] = specd_strdup(u)))
			goto fail;
		v->types[b] = 1; /* NORMAL */
	}
	bases[0] = ' ';
	for (uint32_t c = 0; c < 26; c++)
		bases[1 + c] = 'a' + c;
	while (k < n - BPE_N_SPECIAL) {
		size_t level0 = k;
		for (size_t i = b0; i < b0 + n_base && k < n - BPE_N_SPECIAL; i++) {
			for (uint32_t c = 0; c < 26 && k < n - BPE_N_SPECIAL; c++, k++) {
				const char *base = v->tokens[bases[i]], *letter = v->tokens['a' + c];
				if (!(v->tokens[k] = concat(base, "", letter)) ||
				    !(v->merges[v->n_merges++] = concat(base, " ", letter)))
					goto fail;
				v->types[k] = 1;
				bases[27 + k - 256] = (uint32_t)k;
			}
		}
		b0 = 27 + level0 - 256;
		n_base = k - level0;
	}
	for (size_t i = 0; i < BPE_N_SPECIAL; i++) {
		if (!(v->tokens[n - BPE_N_SPECIAL + i] = specd_strdup(bpe_special[i])))
			goto fail;
		v->types[n - BPE_N_SPECIAL + i] = 3; /* CONTROL */
	}
	specd_free(bases);
	return true;
fail:
	specd_free(bases);
	bpe_vocab_free(v);
	return false;
}

static enum specd_status add_bpe_vocab(struct gguf_writer *w, uint64_t vocab)
{
	struct bpe_vocab v;
	enum specd_status st;
	uint32_t first_special = (uint32_t)(vocab - BPE_N_SPECIAL);

	if (!bpe_vocab_build(vocab, &v))
		return SPECD_NOMEM;
	if ((st = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2")) != SPECD_OK ||
	    (st = gguf_writer_set_str(w, "tokenizer.ggml.pre", "smollm")) != SPECD_OK ||
	    (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, v.n)) != SPECD_OK ||
	    (st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_I32, v.types, v.n)) != SPECD_OK ||
	    (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges, v.n_merges)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", first_special + BPE_BOS)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", first_special + BPE_EOS)) != SPECD_OK ||
	    (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true)) != SPECD_OK ||
	    (st = gguf_writer_set_str(w, "tokenizer.chat_template", CHATML_TEMPLATE)) != SPECD_OK)
		goto out;
out:
	bpe_vocab_free(&v);
	return st;
}

/* One key of another file, any type, under the same name. */
static enum specd_status copy_key(struct gguf_writer *w, const struct gguf_file *f,
				  const char *key, enum gguf_value_type type)
{
	union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
		float f32; bool b; uint64_t u64; int64_t i64; double f64; } v;
	struct gguf_str s;
	const void *data;
	enum gguf_value_type elem;
	uint64_t n;

	switch (type) {
	case GGUF_TYPE_U32: return gguf_get_u32(f, key, &v.u32) ? gguf_writer_set_u32(w, key, v.u32) : SPECD_INVAL;
	case GGUF_TYPE_I32: return gguf_get_i32(f, key, &v.i32) ? gguf_writer_set_i32(w, key, v.i32) : SPECD_INVAL;
	case GGUF_TYPE_U64: return gguf_get_u64(f, key, &v.u64) ? gguf_writer_set_u64(w, key, v.u64) : SPECD_INVAL;
	case GGUF_TYPE_I64: return gguf_get_i64(f, key, &v.i64) ? gguf_writer_set_i64(w, key, v.i64) : SPECD_INVAL;
	case GGUF_TYPE_F32: return gguf_get_f32(f, key, &v.f32) ? gguf_writer_set_f32(w, key, v.f32) : SPECD_INVAL;
	case GGUF_TYPE_F64: return gguf_get_f64(f, key, &v.f64) ? gguf_writer_set_f64(w, key, v.f64) : SPECD_INVAL;
	case GGUF_TYPE_BOOL: return gguf_get_bool(f, key, &v.b) ? gguf_writer_set_bool(w, key, v.b) : SPECD_INVAL;
	case GGUF_TYPE_STRING:
		return gguf_get_str(f, key, &s) ? gguf_writer_set_strn(w, key, s.ptr, s.len) : SPECD_INVAL;
	case GGUF_TYPE_ARRAY:
		if (!gguf_get_arr(f, key, &elem, &n, &data))
			return SPECD_INVAL;
		if (elem != GGUF_TYPE_STRING)
			return gguf_writer_set_arr(w, key, elem, data, n);
		break;
	case GGUF_TYPE_U8: case GGUF_TYPE_I8: case GGUF_TYPE_U16: case GGUF_TYPE_I16:
		/* the narrow integers, widened on reading: written back at their width */
		if (!gguf_get_i64(f, key, &v.i64))
			return SPECD_INVAL;
		return type == GGUF_TYPE_U8    ? gguf_writer_set_u8(w, key, (uint8_t)v.i64)
		       : type == GGUF_TYPE_I8  ? gguf_writer_set_i8(w, key, (int8_t)v.i64)
		       : type == GGUF_TYPE_U16 ? gguf_writer_set_u16(w, key, (uint16_t)v.i64)
					       : gguf_writer_set_i16(w, key, (int16_t)v.i64);
	default:
		return SPECD_UNSUPPORTED;
	}
	enum specd_status st = SPECD_NOMEM;
	char **strs = specd_calloc(n ? (size_t)n : 1, sizeof(char *));
	for (uint64_t i = 0; strs && i < n; i++) {
		if (!gguf_get_arr_str(f, key, i, &s) || memchr(s.ptr, '\0', s.len)) {
			st = SPECD_UNSUPPORTED; /* a NUL inside a piece: the writer takes C strings */
			goto fail;
		}
		if (!(strs[i] = specd_malloc_array(s.len + 1, 1)))
			goto fail;
		memcpy(strs[i], s.ptr, s.len);
		strs[i][s.len] = '\0';
	}
	if (strs)
		st = gguf_writer_set_arr_str(w, key, (const char *const *)strs, n);
fail:
	for (uint64_t i = 0; strs && i < n; i++)
		specd_free(strs[i]);
	specd_free(strs);
	return st;
}

/* Every tokenizer.* key of `path`; *vocab gets the number of pieces. */
static bool copy_vocab(struct gguf_writer *w, const char *path, uint64_t *vocab)
{
	struct gguf_file *f = NULL;
	struct specd_error err = {0};
	enum gguf_value_type type, elem;
	struct gguf_str key;
	char name[256];
	bool ok = false;

	if (gguf_open(path, &f, &err) != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: --vocab-from: %s\n", err.msg);
		return false;
	}
	if (!gguf_get_arr(f, "tokenizer.ggml.tokens", &elem, vocab, NULL) ||
	    elem != GGUF_TYPE_STRING) {
		fprintf(stderr, "specd-gen-model: --vocab-from %s: no tokenizer.ggml.tokens\n", path);
		goto out;
	}
	for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
		if (!gguf_key_at(f, i, &key, &type) || key.len >= sizeof(name) ||
		    key.len < 10 || memcmp(key.ptr, "tokenizer.", 10) != 0)
			continue;
		memcpy(name, key.ptr, key.len);
		name[key.len] = '\0';
		enum specd_status st = copy_key(w, f, name, type);
		if (st != SPECD_OK) {
			fprintf(stderr, "specd-gen-model: --vocab-from %s: cannot copy %s: %s\n", path,
				name, specd_status_str(st));
			goto out;
		}
	}
	ok = true;
out:
	gguf_close(f);
	return ok;
}

/* --layers-of: every key of the model (its block count lowered to o->layers) and every
 * tensor but those of blocks o->layers and up, written to o->out. */
static int write_layers_of(const struct opts *o)
{
	struct gguf_file *f = NULL;
	struct gguf_writer *w = NULL;
	struct specd_error err = {0};
	enum gguf_value_type type;
	struct gguf_str key, arch;
	char name[256], count_key[160];
	uint32_t blocks = 0;
	enum specd_status st;
	int rc = 1;

	if (gguf_open(o->layers_of, &f, &err) != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: --layers-of: %s\n", err.msg);
		return 1;
	}
	if (!gguf_get_str(f, "general.architecture", &arch) || arch.len > 64) {
		fprintf(stderr, "specd-gen-model: --layers-of %s: no general.architecture\n",
			o->layers_of);
		goto out;
	}
	snprintf(count_key, sizeof(count_key), "%.*s.block_count", (int)arch.len, arch.ptr);
	if (!gguf_get_u32(f, count_key, &blocks) || o->layers > blocks) {
		fprintf(stderr, "specd-gen-model: --layers-of %s: %llu layers asked, the model has "
			"%u\n", o->layers_of, (unsigned long long)o->layers, blocks);
		goto out;
	}
	if (gguf_writer_create(&w) != SPECD_OK)
		goto out;
	for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
		if (!gguf_key_at(f, i, &key, &type) || key.len >= sizeof(name))
			continue;
		memcpy(name, key.ptr, key.len);
		name[key.len] = '\0';
		st = strcmp(name, count_key) == 0 ? gguf_writer_set_u32(w, name, (uint32_t)o->layers)
						  : copy_key(w, f, name, type);
		if (st != SPECD_OK) {
			fprintf(stderr, "specd-gen-model: --layers-of %s: cannot copy %s: %s\n",
				o->layers_of, name, specd_status_str(st));
			goto out;
		}
	}
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		unsigned long blk;
		if (sscanf(t->name, "blk.%lu.", &blk) == 1 && blk >= o->layers)
			continue;
		if ((st = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data)) !=
		    SPECD_OK) {
			fprintf(stderr, "specd-gen-model: --layers-of %s: tensor %s: %s\n",
				o->layers_of, t->name, specd_status_str(st));
			goto out;
		}
	}
	if (gguf_writer_write(w, o->out, gguf_version(f) >= 3 ? 3 : 2, &err) != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: %s\n", err.msg);
		goto out;
	}
	printf("specd-gen-model: %s: the first %llu of %u layers of %s\n", o->out,
	       (unsigned long long)o->layers, blocks, o->layers_of);
	rc = 0;
out:
	gguf_writer_destroy(w);
	gguf_close(f);
	return rc;
}

/* The number of pieces in path's vocabulary (for the shapes, before anything is
 * written); false with a message when there is none. */
static bool vocab_from_size(const char *path, uint64_t *n)
{
	struct gguf_file *f = NULL;
	struct specd_error err = {0};
	enum gguf_value_type elem;
	bool ok;

	if (gguf_open(path, &f, &err) != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: --vocab-from: %s\n", err.msg);
		return false;
	}
	ok = gguf_get_arr(f, "tokenizer.ggml.tokens", &elem, n, NULL) && elem == GGUF_TYPE_STRING;
	if (!ok)
		fprintf(stderr, "specd-gen-model: --vocab-from %s: no tokenizer.ggml.tokens\n", path);
	gguf_close(f);
	return ok;
}

static enum specd_status add_hparams(struct gguf_writer *w, const struct opts *o)
{
	const char *arch = model_arch_name(o->arch);
	char key[128], name[64];
	enum specd_status st;
	snprintf(name, sizeof(name), "specd-random-%s", arch);
#define SET(fn, suffix, v)                                              \
	do {                                                            \
		snprintf(key, sizeof(key), "%s.%s", arch, suffix);      \
		if ((st = fn(w, key, v)) != SPECD_OK)                   \
			return st;                                      \
	} while (0)
	if ((st = gguf_writer_set_str(w, "general.architecture", arch)) != SPECD_OK ||
	    (st = gguf_writer_set_str(w, "general.name", name)) != SPECD_OK ||
	    (st = gguf_writer_set_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT)) != SPECD_OK ||
	    (st = gguf_writer_set_u64(w, "general.specd.seed", o->seed)) != SPECD_OK)
		return st;
	SET(gguf_writer_set_u32, "context_length", (uint32_t)o->ctx);
	SET(gguf_writer_set_u32, "embedding_length", (uint32_t)o->dim);
	SET(gguf_writer_set_u32, "block_count", (uint32_t)o->layers);
	SET(gguf_writer_set_u32, "feed_forward_length", (uint32_t)o->ffn);
	SET(gguf_writer_set_u32, "attention.head_count", (uint32_t)o->heads);
	SET(gguf_writer_set_u32, "attention.head_count_kv", (uint32_t)o->kv_heads);
	SET(gguf_writer_set_f32, "attention.layer_norm_rms_epsilon",
	    o->arch == MODEL_ARCH_QWEN2 ? 1e-6f : 1e-5f);
	SET(gguf_writer_set_f32, "rope.freq_base", o->rope_theta);
	SET(gguf_writer_set_u32, "rope.dimension_count", (uint32_t)(o->dim / o->heads));
	SET(gguf_writer_set_u32, "vocab_size", (uint32_t)o->vocab);
#undef SET
	if (o->vocab_from) {
		uint64_t n = 0;
		if (!copy_vocab(w, o->vocab_from, &n))
			return SPECD_INVAL;
		return n == o->vocab ? SPECD_OK : SPECD_INVAL; /* the file changed under us */
	}
	return o->hf ? add_bpe_vocab(w, o->vocab) : add_vocab(w, o->vocab);
}

enum init { INIT_MATRIX, INIT_NORM, INIT_BIAS };

struct tensor_plan {
	char name[64];
	enum kern_dtype type;
	uint32_t n_dims;
	uint64_t ne[2];
	enum init init;
};

/* The tensors of the model, in llama.cpp's names and order; returns how many. */
static size_t plan_tensors(const struct opts *o, struct tensor_plan *p)
{
	uint64_t hd = o->dim / o->heads, q = o->heads * hd, kv = o->kv_heads * hd;
	size_t n = 0;
#define T(init_, type_, nd, a, b, ...)                                             \
	do {                                                                       \
		if (p) {                                                           \
			snprintf(p[n].name, sizeof(p[n].name), __VA_ARGS__);      \
			p[n].type = type_, p[n].n_dims = nd, p[n].ne[0] = a;       \
			p[n].ne[1] = b, p[n].init = init_;                         \
		}                                                                  \
		n++;                                                               \
	} while (0)
	T(INIT_MATRIX, o->type, 2, o->dim, o->vocab, "token_embd.weight");
	for (uint64_t l = 0; l < o->layers; l++) {
		unsigned long long b = (unsigned long long)l;
		T(INIT_NORM, KERN_F32, 1, o->dim, 1, "blk.%llu.attn_norm.weight", b);
		T(INIT_MATRIX, o->type, 2, o->dim, q, "blk.%llu.attn_q.weight", b);
		T(INIT_MATRIX, o->type, 2, o->dim, kv, "blk.%llu.attn_k.weight", b);
		T(INIT_MATRIX, o->type, 2, o->dim, kv, "blk.%llu.attn_v.weight", b);
		if (o->arch == MODEL_ARCH_QWEN2) {
			T(INIT_BIAS, KERN_F32, 1, q, 1, "blk.%llu.attn_q.bias", b);
			T(INIT_BIAS, KERN_F32, 1, kv, 1, "blk.%llu.attn_k.bias", b);
			T(INIT_BIAS, KERN_F32, 1, kv, 1, "blk.%llu.attn_v.bias", b);
		}
		T(INIT_MATRIX, o->type, 2, q, o->dim, "blk.%llu.attn_output.weight", b);
		T(INIT_NORM, KERN_F32, 1, o->dim, 1, "blk.%llu.ffn_norm.weight", b);
		T(INIT_MATRIX, o->type, 2, o->dim, o->ffn, "blk.%llu.ffn_gate.weight", b);
		T(INIT_MATRIX, o->type, 2, o->ffn, o->dim, "blk.%llu.ffn_down.weight", b);
		T(INIT_MATRIX, o->type, 2, o->dim, o->ffn, "blk.%llu.ffn_up.weight", b);
	}
	T(INIT_NORM, KERN_F32, 1, o->dim, 1, "output_norm.weight");
	if (!o->tied)
		T(INIT_MATRIX, o->type, 2, o->dim, o->vocab, "output.weight");
#undef T
	return n;
}

static uint64_t model_params(const struct opts *o)
{
	uint64_t hd = o->dim / o->heads, q = o->heads * hd, kv = o->kv_heads * hd;
	uint64_t layer = 2 * o->dim + o->dim * (q + 2 * kv) + q * o->dim + 3 * o->dim * o->ffn;
	if (o->arch == MODEL_ARCH_QWEN2)
		layer += q + 2 * kv;
	return o->dim * o->vocab * (o->tied ? 1 : 2) + o->layers * layer + o->dim;
}

/* --params: head_dim 64, ffn about 8/3 dim (a multiple of 64), GQA 4:1 where heads
 * allow, and as many layers as bring the count nearest the target. dim and ffn are
 * multiples of 256 for the K-quants (their block). */
static void shape_for_params(struct opts *o)
{
	double best = -1;
	struct opts keep = *o;
	uint64_t step = kern_dtype_block(o->type) > 64 ? kern_dtype_block(o->type) : 64;
	for (uint64_t dim = step; dim <= 16384; dim += step) {
		struct opts t = *o;
		t.dim = dim;
		t.heads = dim / 64;
		t.kv_heads = t.heads % 4 == 0 ? t.heads / 4 : t.heads;
		t.ffn = (dim * 8 / 3 + step - 1) / step * step;
		uint64_t max_layers = dim / 32 < 2 ? 2 : dim / 32;
		t.layers = 1;
		double base = (double)model_params(&t);
		t.layers = 2;
		double per = (double)model_params(&t) - base;
		double want = (o->params - (base - per)) / per;
		t.layers = want < 1 ? 1 : want >= (double)max_layers ? max_layers : (uint64_t)(want + 0.5);
		double err = fabs((double)model_params(&t) - o->params);
		if (best < 0 || err < best) {
			best = err;
			keep = t;
		}
	}
	*o = keep;
}

static void fill_row(const struct tensor_plan *t, uint64_t *rng, float *row)
{
	float scale = 1.0f / sqrtf((float)t->ne[0]);
	for (uint64_t i = 0; i < t->ne[0]; i++) {
		float z = rng_normal(rng);
		row[i] = t->init == INIT_MATRIX ? z * scale
			 : t->init == INIT_NORM ? 1.0f + 0.05f * z
						: 0.02f * z;
	}
}

/* --- the Hugging Face folder (--hf) ---------------------------------------------- */

struct hf_out {
	FILE **fp;        /* (shards) */
	uint64_t *data0;  /* (tensors) where each tensor's data starts in its shard */
	uint32_t *shard;  /* (tensors) */
	void *row;        /* one row in o->type */
};

static const char *hf_dtype(enum kern_dtype t)
{
	return t == KERN_F16 ? "F16" : t == KERN_BF16 ? "BF16" : "F32";
}

static bool hf_dump(json_t *root, const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	bool ok = root && json_dump_file(root, path, JSON_INDENT(2) | JSON_ENSURE_ASCII) == 0;
	if (!ok)
		fprintf(stderr, "specd-gen-model: cannot write %s\n", path);
	json_decref(root);
	return ok;
}

static bool hf_config(const struct opts *o)
{
	bool qwen = o->arch == MODEL_ARCH_QWEN2;
	uint64_t first_special = o->vocab - BPE_N_SPECIAL;
	json_t *c = json_pack("{s:[s],s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:b,s:s,s:I,s:I,s:s,s:n}",
			      "architectures", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM",
			      "model_type", model_arch_name(o->arch),
			      "hidden_size", (json_int_t)o->dim,
			      "intermediate_size", (json_int_t)o->ffn,
			      "num_hidden_layers", (json_int_t)o->layers,
			      "num_attention_heads", (json_int_t)o->heads,
			      "num_key_value_heads", (json_int_t)o->kv_heads,
			      "max_position_embeddings", (json_int_t)o->ctx,
			      "rms_norm_eps", (double)(qwen ? 1e-6f : 1e-5f),
			      "rope_theta", (double)o->rope_theta,
			      "vocab_size", (json_int_t)o->vocab,
			      "tie_word_embeddings", o->tied,
			      "torch_dtype", o->type == KERN_F16 ? "float16" : o->type == KERN_BF16 ? "bfloat16" : "float32",
			      "bos_token_id", (json_int_t)(first_special + BPE_BOS),
			      "eos_token_id", (json_int_t)(first_special + BPE_EOS),
			      "hidden_act", "silu",
			      "rope_scaling");
	return hf_dump(c, o->hf, "config.json");
}

static bool hf_tokenizer(const struct opts *o)
{
	struct bpe_vocab v;
	json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
	bool ok = vocab && merges && added && bpe_vocab_build(o->vocab, &v);

	if (!ok) {
		json_decref(vocab), json_decref(merges), json_decref(added);
		return false;
	}
	for (size_t i = 0; ok && i < v.n - BPE_N_SPECIAL; i++)
		ok = json_object_set_new(vocab, v.tokens[i], json_integer((json_int_t)i)) == 0;
	for (size_t i = 0; ok && i < v.n_merges; i++)
		ok = json_array_append_new(merges, json_string(v.merges[i])) == 0;
	for (size_t i = 0; ok && i < BPE_N_SPECIAL; i++)
		ok = json_array_append_new(added, json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}",
			"id", (json_int_t)(v.n - BPE_N_SPECIAL + i), "content", bpe_special[i],
			"single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1)) == 0;
	bpe_vocab_free(&v);
	/* SmolLM2's pre-tokenizer: single digits, then GPT-2's regex (GGUF pre "smollm"). */
	json_t *t = json_pack("{s:s,s:n,s:n,s:o,s:n,s:{s:s,s:[{s:s,s:b},{s:s,s:b,s:b,s:b}]},"
			      "s:n,s:{s:s,s:b,s:b,s:b},s:{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:o,s:o}}",
			      "version", "1.0", "truncation", "padding", "added_tokens", added,
			      "normalizer",
			      "pre_tokenizer", "type", "Sequence", "pretokenizers",
			      "type", "Digits", "individual_digits", 1,
			      "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1,
			      "post_processor",
			      "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
			      "use_regex", 1,
			      "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
			      "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "vocab", vocab,
			      "merges", merges);
	if (!ok || !t) {
		json_decref(t);
		return false;
	}
	json_t *tc = json_pack("{s:b,s:b,s:s,s:s,s:s,s:I}", "add_bos_token", 1, "add_eos_token", 0,
			       "bos_token", bpe_special[BPE_BOS], "eos_token", bpe_special[BPE_EOS],
			       "chat_template", CHATML_TEMPLATE, "model_max_length", (json_int_t)o->ctx);
	return hf_dump(t, o->hf, "tokenizer.json") && hf_dump(tc, o->hf, "tokenizer_config.json");
}

static void hf_shard_name(const struct opts *o, uint32_t s, char *buf, size_t cap)
{
	if (o->hf_shards == 1)
		snprintf(buf, cap, "model.safetensors");
	else
		snprintf(buf, cap, "model-%05u-of-%05u.safetensors", s + 1, (unsigned)o->hf_shards);
}

static uint64_t hf_bytes(const struct opts *o, const struct tensor_plan *t)
{
	return kern_dtype_row_bytes(o->type, (size_t)t->ne[0]) * t->ne[1];
}

/* Opens shard s and writes its header: tensors [t0, t1) of the plan. */
static bool hf_shard_begin(const struct opts *o, const struct tensor_plan *plan, size_t t0,
			   size_t t1, uint32_t s, struct hf_out *h, json_t *weight_map)
{
	char name[64], path[4096], hfname[128];
	json_t *hdr = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
	uint64_t off = 0;
	bool ok = hdr != NULL;

	hf_shard_name(o, s, name, sizeof(name));
	for (size_t i = t0; ok && i < t1; i++) {
		const struct tensor_plan *t = &plan[i];
		uint64_t nb = hf_bytes(o, t);
		json_t *shape = t->n_dims == 1 ? json_pack("[I]", (json_int_t)t->ne[0])
					       : json_pack("[I,I]", (json_int_t)t->ne[1], (json_int_t)t->ne[0]);
		ok = model_file_hf_name(t->name, hfname, sizeof(hfname)) &&
		     json_object_set_new(hdr, hfname, json_pack("{s:s,s:o,s:[I,I]}", "dtype",
				hf_dtype(o->type), "shape", shape, "data_offsets",
				(json_int_t)off, (json_int_t)(off + nb))) == 0 &&
		     json_object_set_new(weight_map, hfname, json_string(name)) == 0;
		h->data0[i] = off;
		h->shard[i] = s;
		off += nb;
	}
	char *text = ok ? json_dumps(hdr, JSON_COMPACT) : NULL;
	json_decref(hdr);
	if (!text)
		return false;
	size_t len = strlen(text), padded = (len + 7) / 8 * 8;
	uint8_t n8[8];
	for (int i = 0; i < 8; i++)
		n8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
	snprintf(path, sizeof(path), "%s/%s", o->hf, name);
	h->fp[s] = fopen(path, "wb");
	ok = h->fp[s] && fwrite(n8, 1, 8, h->fp[s]) == 8 && fwrite(text, 1, len, h->fp[s]) == len &&
	     fprintf(h->fp[s], "%*s", (int)(padded - len), "") == (int)(padded - len);
	free(text);
	for (size_t i = t0; i < t1; i++)
		h->data0[i] += 8 + padded;
	if (!ok)
		fprintf(stderr, "specd-gen-model: cannot write %s\n", path);
	return ok;
}

/* config.json, the tokenizer files, the shards' headers (and the index). */
static bool hf_begin(const struct opts *o, const struct tensor_plan *plan, size_t n,
		     uint64_t max_row, struct hf_out *h)
{
	uint32_t shards = (uint32_t)o->hf_shards;
	json_t *weight_map = json_object();
	uint64_t total = 0;
	bool ok = weight_map != NULL;

	h->fp = specd_calloc(shards, sizeof(FILE *));
	h->data0 = specd_calloc(n, sizeof(uint64_t));
	h->shard = specd_calloc(n, sizeof(uint32_t));
	h->row = specd_malloc_array((size_t)max_row, sizeof(float));
	if (!h->fp || !h->data0 || !h->shard || !h->row || !ok) {
		json_decref(weight_map);
		return false;
	}
	ok = hf_config(o) && hf_tokenizer(o);
	for (uint32_t s = 0; ok && s < shards; s++)
		ok = hf_shard_begin(o, plan, n * s / shards, n * (s + 1) / shards, s, h, weight_map);
	for (size_t i = 0; i < n; i++)
		total += hf_bytes(o, &plan[i]);
	if (ok && shards > 1)
		return hf_dump(json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total,
					 "weight_map", weight_map), o->hf, "model.safetensors.index.json");
	json_decref(weight_map);
	return ok;
}

/* Row r of plan tensor i (values in `row`, already rounded to o->type for vectors):
 * where Hugging Face keeps it. llama.cpp's converter permutes q and k so that GGUF's
 * adjacent RoPE pairs (2i, 2i+1) are Hugging Face's (i, i + d/2): GGUF row h*d + 2i + j
 * is Hugging Face row h*d + j*d/2 + i. */
static bool hf_row(const struct opts *o, const struct tensor_plan *t, size_t i, uint64_t r,
		   const float *row, struct hf_out *h)
{
	uint64_t hd = o->dim / o->heads, hf_r = r;
	const char *dot = strchr(t->name, '.');
	bool qk = o->arch == MODEL_ARCH_LLAMA && t->n_dims == 2 && dot &&
		  (strstr(dot, ".attn_q.weight") || strstr(dot, ".attn_k.weight"));
	if (qk)
		hf_r = r / hd * hd + (r % hd % 2) * (hd / 2) + r % hd / 2;
	size_t rb = kern_dtype_row_bytes(o->type, (size_t)t->ne[0]);
	FILE *fp = h->fp[h->shard[i]];
	kern_quant_row(o->type, row, h->row, (size_t)t->ne[0]);
	return fseek(fp, (long)(h->data0[i] + hf_r * rb), SEEK_SET) == 0 &&
	       fwrite(h->row, 1, rb, fp) == rb;
}

/* Closes the shards and frees h (again: a no-op); false when a close failed. */
static bool hf_finish(const struct opts *o, struct hf_out *h)
{
	bool ok = true;
	for (uint64_t s = 0; h->fp && s < o->hf_shards; s++)
		if (h->fp[s] && fclose(h->fp[s]) != 0)
			ok = false;
	specd_free(h->fp);
	specd_free(h->data0);
	specd_free(h->shard);
	specd_free(h->row);
	*h = (struct hf_out){0};
	return ok;
}

/* A vector as f16/bf16 safetensors hold it and the GGUF twin's f32 copy must equal. */
static void round_to(enum kern_dtype type, float *row, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		if (type == KERN_F16)
			row[i] = kern_f16_to_f32(kern_f32_to_f16(row[i]));
		else if (type == KERN_BF16)
			row[i] = kern_bf16_to_f32(kern_f32_to_bf16(row[i]));
	}
}

static int generate(const struct opts *o)
{
	struct gguf_writer *w = NULL;
	struct specd_error err = {0};
	struct tensor_plan *plan = NULL;
	float *row = NULL;
	void *qrow = NULL;
	struct hf_out hf = {0};
	int rc = 1;
	size_t n = plan_tensors(o, NULL);
	uint64_t params = model_params(o), done = 0, next_report = 0;
	bool report = params >= 20000000;

	if (!(plan = specd_calloc(n, sizeof(*plan))) || gguf_writer_create(&w) != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: out of memory\n");
		goto fail;
	}
	plan_tensors(o, plan);
	uint64_t max_row = 0;
	for (size_t i = 0; i < n; i++)
		max_row = plan[i].ne[0] > max_row ? plan[i].ne[0] : max_row;
	if (!(row = specd_malloc_array((size_t)max_row, sizeof(float))) ||
	    !(qrow = specd_malloc_array((size_t)max_row, sizeof(float)))) {
		fprintf(stderr, "specd-gen-model: out of memory\n");
		goto fail;
	}
	enum specd_status st = add_hparams(w, o);
	for (size_t i = 0; i < n && st == SPECD_OK; i++)
		st = gguf_writer_add_tensor(w, plan[i].name, plan[i].type, plan[i].n_dims, plan[i].ne, NULL);
	if (st != SPECD_OK) {
		fprintf(stderr, "specd-gen-model: cannot build the model: %s\n", specd_status_str(st));
		goto fail;
	}
	if (o->hf && (mkdir(o->hf, 0755) != 0 && errno != EEXIST)) {
		fprintf(stderr, "specd-gen-model: cannot create %s: %s\n", o->hf, strerror(errno));
		goto fail;
	}
	if (o->hf && !hf_begin(o, plan, n, max_row, &hf))
		goto fail;
	if (gguf_writer_begin(w, o->out, o->version, &err) != SPECD_OK)
		goto io_fail;
	for (size_t i = 0; i < n; i++) {
		const struct tensor_plan *t = &plan[i];
		uint64_t rng = name_seed(o->seed, t->name);
		size_t rb = kern_dtype_row_bytes(t->type, (size_t)t->ne[0]);
		for (uint64_t r = 0; r < t->ne[1]; r++) {
			fill_row(t, &rng, row);
			if (o->hf && t->n_dims == 1)
				round_to(o->type, row, t->ne[0]);
			if (o->hf && !hf_row(o, t, i, r, row, &hf)) {
				fprintf(stderr, "specd-gen-model: cannot write %s's shards\n", o->hf);
				goto fail;
			}
			kern_quant_row(t->type, row, qrow, (size_t)t->ne[0]);
			if (gguf_writer_stream(w, qrow, rb, &err) != SPECD_OK)
				goto io_fail;
		}
		done += t->ne[0] * t->ne[1];
		if (report && done >= next_report) {
			fprintf(stderr, "specd-gen-model: %3.0f%% %s\n", 100.0 * (double)done / (double)params,
				t->name);
			next_report = done + params / 10;
		}
	}
	if (gguf_writer_finish(w, &err) != SPECD_OK)
		goto io_fail;
	if (o->hf && !hf_finish(o, &hf)) {
		fprintf(stderr, "specd-gen-model: cannot write %s's shards\n", o->hf);
		goto fail;
	}
	FILE *fp = fopen(o->out, "rb");
	long bytes = -1;
	if (fp && fseek(fp, 0, SEEK_END) == 0)
		bytes = ftell(fp);
	if (fp)
		fclose(fp);
	fprintf(stderr,
		"specd-gen-model: %s: %s dim %llu layers %llu heads %llu/%llu ffn %llu vocab %llu %s%s, "
		"%llu params, %ld bytes\n",
		o->out, model_arch_name(o->arch), (unsigned long long)o->dim,
		(unsigned long long)o->layers, (unsigned long long)o->heads,
		(unsigned long long)o->kv_heads, (unsigned long long)o->ffn,
		(unsigned long long)o->vocab, kern_dtype_name(o->type), o->tied ? " tied" : "",
		(unsigned long long)params, bytes);
	if (o->hf)
		fprintf(stderr, "specd-gen-model: %s: the same model as a Hugging Face folder (%llu shard%s)\n",
			o->hf, (unsigned long long)o->hf_shards, o->hf_shards > 1 ? "s" : "");
	rc = 0;
	goto fail;
io_fail:
	fprintf(stderr, "specd-gen-model: %s\n", err.msg);
fail:
	hf_finish(o, &hf);
	gguf_writer_destroy(w);
	specd_free(plan);
	specd_free(row);
	specd_free(qrow);
	return rc;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: specd-gen-model -o OUT.gguf [--arch llama|qwen2] [--dim 64] [--layers 2]\n"
		"         [--heads 4] [--kv-heads 2] [--ffn 128] [--vocab 512] [--ctx 256]\n"
		"         [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k] [--tied] [--seed 1]\n"
		"         [--rope-theta 10000] [--gguf-version 3] [--params 50M]\n"
		"         [--vocab-from MODEL.gguf] [--hf DIR [--hf-shards 1]]\n"
		"       specd-gen-model -o OUT.gguf --layers-of MODEL.gguf --layers N\n"
		"Writes a random-weight model, identical bytes for identical flags.\n"
		"--vocab is at least %d (<unk> <s> </s>, 256 byte tokens, \"\\u2581\").\n"
		"--params N[K|M|B] picks dim, layers, heads and ffn for about N parameters;\n"
		"explicit --dim/--layers/--heads/--kv-heads/--ffn given with it win.\n"
		"--vocab-from copies every tokenizer.* key of MODEL.gguf (and its vocabulary\n"
		"size), so the model can draft for MODEL.\n"
		"--hf DIR also writes the model as a Hugging Face folder (config.json, safetensors\n"
		"split in --hf-shards files, tokenizer.json); both get a byte-level BPE vocabulary\n"
		"and OUT.gguf is the folder's exact twin (--type f32, f16 or bf16).\n"
		"--layers-of writes no random weights: the first N blocks of MODEL.gguf with its\n"
		"embedding, output norm and LM head, a draft that exits early (self-speculative\n"
		"decoding without training) for a model no smaller one shares a vocabulary with.\n",
		VOCAB_MIN);
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end)
		return false;
	*out = v;
	return true;
}

static bool parse_count(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	double mul = 1;
	if (end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': mul = 1e3, end++; break;
	case 'm': case 'M': mul = 1e6, end++; break;
	case 'b': case 'B': case 'g': case 'G': mul = 1e9, end++; break;
	default: break;
	}
	if (*end || !(v > 0) || !isfinite(v * mul))
		return false;
	*out = v * mul;
	return true;
}

/* Checks the shape; prints why it is impossible. */
static bool validate(const struct opts *o)
{
	const char *why = NULL;
	uint64_t block = kern_dtype_block(o->type);
	if (!o->out)
		why = "-o OUT.gguf is required";
	else if (!o->dim || !o->layers || !o->heads || !o->kv_heads || !o->ffn || !o->ctx)
		why = "dim, layers, heads, kv-heads, ffn and ctx must be positive";
	else if (o->dim > 65536 || o->ffn > 262144 || o->layers > 1024 || o->ctx > UINT32_MAX ||
		 o->vocab > (1u << 24))
		why = "shape too large (dim <= 65536, ffn <= 262144, layers <= 1024, vocab <= 2^24)";
	else if (o->vocab < VOCAB_MIN && !o->vocab_from)
		why = "vocab must be at least 260 (specials, 256 byte tokens and \"\\u2581\")";
	else if (o->dim % o->heads)
		why = "dim must be a multiple of heads";
	else if (o->heads % o->kv_heads)
		why = "heads must be a multiple of kv-heads";
	else if ((o->dim / o->heads) % 2)
		why = "head dimension (dim / heads) must be even for RoPE";
	else if (o->dim % block || o->ffn % block)
		why = "dim and ffn must be multiples of the quantisation block (32; 256 for the K-quants)";
	else if (o->version != 2 && o->version != 3)
		why = "--gguf-version must be 2 or 3";
	else if (o->hf && ((o->type != KERN_F32 && o->type != KERN_F16 && o->type != KERN_BF16) ||
			   o->vocab_from))
		why = "--hf needs --type f32, f16 or bf16 and no --vocab-from";
	else if (o->hf_shards < 1 || o->hf_shards > 99999)
		why = "--hf-shards must be 1..99999";
	if (why)
		fprintf(stderr, "specd-gen-model: %s\n", why);
	return !why;
}

int main(int argc, char **argv)
{
	struct opts o = {.arch = MODEL_ARCH_LLAMA, .dim = 64, .layers = 2, .heads = 4, .kv_heads = 2,
			 .ffn = 128, .vocab = 512, .ctx = 256, .type = KERN_F32, .seed = 1,
			 .rope_theta = 10000.0f, .version = 3, .hf_shards = 1};
	enum { O_ARCH = 256, O_DIM, O_LAYERS, O_HEADS, O_KV, O_FFN, O_VOCAB, O_CTX, O_TYPE, O_TIED,
	       O_SEED, O_THETA, O_VERSION, O_VOCAB_FROM, O_HF, O_HF_SHARDS, O_LAYERS_OF,
	       O_PARAMS };
	static const struct option longs[] = {
		{"out", required_argument, NULL, 'o'}, {"arch", required_argument, NULL, O_ARCH},
		{"dim", required_argument, NULL, O_DIM}, {"layers", required_argument, NULL, O_LAYERS},
		{"heads", required_argument, NULL, O_HEADS}, {"kv-heads", required_argument, NULL, O_KV},
		{"ffn", required_argument, NULL, O_FFN}, {"vocab", required_argument, NULL, O_VOCAB},
		{"ctx", required_argument, NULL, O_CTX}, {"type", required_argument, NULL, O_TYPE},
		{"tied", no_argument, NULL, O_TIED}, {"seed", required_argument, NULL, O_SEED},
		{"rope-theta", required_argument, NULL, O_THETA},
		{"gguf-version", required_argument, NULL, O_VERSION},
		{"vocab-from", required_argument, NULL, O_VOCAB_FROM},
		{"hf", required_argument, NULL, O_HF},
		{"hf-shards", required_argument, NULL, O_HF_SHARDS},
		{"layers-of", required_argument, NULL, O_LAYERS_OF},
		{"params", required_argument, NULL, O_PARAMS}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool set[O_PARAMS + 1] = {0};
	uint64_t v = 0, dim = 0, layers = 0, heads = 0, kv = 0, ffn = 0;
	double d = 0;
	int c;
	while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1) {
		bool ok = true;
		if (c >= O_ARCH && c <= O_PARAMS)
			set[c] = true;
		switch (c) {
		case 'o': o.out = optarg; break;
		case 'h': usage(stdout); return 0;
		case O_ARCH: ok = model_arch_parse(optarg, &o.arch); break;
		case O_DIM: ok = parse_u64(optarg, &dim); break;
		case O_LAYERS: ok = parse_u64(optarg, &layers); break;
		case O_HEADS: ok = parse_u64(optarg, &heads); break;
		case O_KV: ok = parse_u64(optarg, &kv); break;
		case O_FFN: ok = parse_u64(optarg, &ffn); break;
		case O_VOCAB: ok = parse_u64(optarg, &o.vocab); break;
		case O_CTX: ok = parse_u64(optarg, &o.ctx); break;
		case O_TYPE: ok = kern_dtype_parse(optarg, &o.type); break;
		case O_TIED: o.tied = true; break;
		case O_SEED: ok = parse_u64(optarg, &o.seed); break;
		case O_THETA: ok = parse_count(optarg, &d), o.rope_theta = (float)d; break;
		case O_VERSION: ok = parse_u64(optarg, &v) && v <= 3, o.version = (uint32_t)v; break;
		case O_VOCAB_FROM: o.vocab_from = optarg; break;
		case O_HF: o.hf = optarg; break;
		case O_HF_SHARDS: ok = parse_u64(optarg, &o.hf_shards); break;
		case O_LAYERS_OF: o.layers_of = optarg; break;
		case O_PARAMS: ok = parse_count(optarg, &o.params); break;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			const char *opt = "?";
			for (const struct option *l = longs; l->name; l++)
				if (l->val == c)
					opt = l->name;
			fprintf(stderr, "specd-gen-model: bad value '%s' for --%s\n", optarg, opt);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "specd-gen-model: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (o.layers_of) {
		if (!o.out || !set[O_LAYERS] || !layers) {
			fprintf(stderr, "specd-gen-model: --layers-of needs -o OUT.gguf and --layers "
				"N (N >= 1)\n");
			return 2;
		}
		o.layers = layers;
		return write_layers_of(&o);
	}
	if (o.vocab_from) {
		uint64_t n = 0;
		if (!vocab_from_size(o.vocab_from, &n))
			return 2;
		if (set[O_VOCAB] && o.vocab != n) {
			fprintf(stderr, "specd-gen-model: --vocab %llu, but %s has %llu tokens\n",
				(unsigned long long)o.vocab, o.vocab_from, (unsigned long long)n);
			return 2;
		}
		o.vocab = n;
	}
	if (o.params > 0)
		shape_for_params(&o);
	if (set[O_DIM])
		o.dim = dim;
	if (set[O_LAYERS])
		o.layers = layers;
	if (set[O_HEADS])
		o.heads = heads;
	if (set[O_KV])
		o.kv_heads = kv;
	if (set[O_FFN])
		o.ffn = ffn;
	if (!validate(&o))
		return 2;
	return generate(&o);
}
