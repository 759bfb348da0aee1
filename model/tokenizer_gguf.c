/* GGUF -> struct tok: reads the tokenizer.ggml.* keys of a weight file at model load
 * and hands them to tok_create_spm or tok_create_bpe as plain arrays. */
#include "tokenizer.h"

#include <string.h>

#include "common/alloc.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "tokenizer_int.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_PRE "tokenizer.ggml.pre"

/* An optional id key; the llama defaults when absent. */
static enum specd_status tok_gguf_id(const struct gguf_file *f, const char *key, int32_t def,
				     int32_t *out, struct specd_error *err)
{
	uint32_t v;

	if (!gguf_has_key(f, key)) {
		*out = def;
		return SPECD_OK;
	}
	if (!gguf_get_u32(f, key, &v) || v > INT32_MAX)
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not a token id", key);
	*out = (int32_t)v;
	return SPECD_OK;
}

static enum specd_status tok_gguf_flag(const struct gguf_file *f, const char *key, bool *out,
				       struct specd_error *err)
{
	if (gguf_has_key(f, key) && !gguf_get_bool(f, key, out))
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not a bool", key);
	return SPECD_OK;
}

/* A numeric array of exactly n elements of type `want` (4-byte), copied out because
 * the mapping may hold it unaligned. NULL *out when the key is absent. */
static enum specd_status tok_gguf_arr(const struct gguf_file *f, const char *key,
				      enum gguf_value_type want, uint64_t n, void **out,
				      struct specd_error *err)
{
	enum gguf_value_type elem;
	uint64_t count;
	const void *data;
	void *copy;

	*out = NULL;
	if (!gguf_has_key(f, key))
		return SPECD_OK;
	if (!gguf_get_arr(f, key, &elem, &count, &data) || !data ||
	    !(elem == want || (want == GGUF_TYPE_I32 && elem == GGUF_TYPE_U32)))
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not an array of %s", key,
				    gguf_type_name(want));
	if (count != n)
		return specd_errorf(err, SPECD_INVAL,
				    "tokenizer: %s has %llu entries for %llu tokens", key,
				    (unsigned long long)count, (unsigned long long)n);
	copy = specd_malloc_array(n, 4);
	if (!copy)
		return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory for %s", key);
	memcpy(copy, data, n * 4);
	*out = copy;
	return SPECD_OK;
}

/* A string array's elements as pointers into the mapping (not NUL-terminated). */
static enum specd_status tok_gguf_strs(const struct gguf_file *f, const char *key,
				       const char ***pieces, size_t **lens, uint64_t *n_out,
				       struct specd_error *err)
{
	enum gguf_value_type elem;
	struct gguf_str s;
	uint64_t n;

	if (!gguf_get_arr(f, key, &elem, &n, NULL) || elem != GGUF_TYPE_STRING || n > INT32_MAX)
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not a string array", key);
	*pieces = specd_malloc_array(n ? n : 1, sizeof(**pieces));
	*lens = specd_malloc_array(n ? n : 1, sizeof(**lens));
	if (!*pieces || !*lens)
		return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory for %s", key);
	for (uint64_t i = 0; i < n; i++) {
		if (!gguf_get_arr_str(f, key, i, &s) || s.len > SIZE_MAX)
			return specd_errorf(err, SPECD_INVAL, "tokenizer: %s[%llu] unreadable", key,
					    (unsigned long long)i);
		(*pieces)[i] = s.ptr;
		(*lens)[i] = (size_t)s.len;
	}
	*n_out = n;
	return SPECD_OK;
}

static enum specd_status tok_load_bpe(const struct gguf_file *f, uint64_t n, struct tok **out,
				      struct specd_error *err)
{
	struct tok_bpe_vocab v = {.n = (size_t)n};
	const char **pieces = NULL, **merges = NULL, **res = NULL;
	size_t *lens = NULL, *merge_lens = NULL, *re_lens = NULL;
	uint64_t n_re = 0;
	void *types = NULL;
	uint64_t n_merges = 0, got;
	struct gguf_str pre;
	char pre_name[64] = "gpt2";
	enum specd_status st;

	if (gguf_has_key(f, KEY_PRE)) {
		if (!gguf_get_str(f, KEY_PRE, &pre) || pre.len >= sizeof(pre_name))
			return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not a short string",
					    KEY_PRE);
		memcpy(pre_name, pre.ptr, pre.len);
		pre_name[pre.len] = '\0';
	}
	v.pre = pre_name;
	v.add_bos = v.ignore_merges = tok_bpe_pre_llama3(pre_name);
	st = tok_gguf_id(f, "tokenizer.ggml.bos_token_id", 1, &v.bos, err);
	if (st == SPECD_OK)
		st = tok_gguf_id(f, "tokenizer.ggml.eos_token_id", 2, &v.eos, err);
	if (st == SPECD_OK)
		st = tok_gguf_id(f, "tokenizer.ggml.unknown_token_id", 0, &v.unk, err);
	if (st == SPECD_OK)
		st = tok_gguf_flag(f, "tokenizer.ggml.add_bos_token", &v.add_bos, err);
	if (st == SPECD_OK)
		st = tok_gguf_flag(f, MODEL_KEY_IGNORE_MERGES, &v.ignore_merges, err);
	if (st == SPECD_OK)
		st = tok_gguf_arr(f, KEY_TYPES, GGUF_TYPE_I32, n, &types, err);
	if (st == SPECD_OK)
		st = tok_gguf_strs(f, KEY_TOKENS, &pieces, &lens, &got, err);
	if (st == SPECD_OK && gguf_has_key(f, KEY_MERGES))
		st = tok_gguf_strs(f, KEY_MERGES, &merges, &merge_lens, &n_merges, err);
	if (st == SPECD_OK && gguf_has_key(f, MODEL_KEY_PRE_REGEX)) {
		st = tok_gguf_strs(f, MODEL_KEY_PRE_REGEX, &res, &re_lens, &n_re, err);
		v.pre = "tokenizer.json";
	}
	if (st != SPECD_OK)
		goto fail;
	v.pre_regex = res;
	v.pre_regex_lens = re_lens;
	v.n_pre_regex = (size_t)n_re;
	v.pieces = pieces;
	v.piece_lens = lens;
	v.types = types;
	v.merges = merges;
	v.merge_lens = merge_lens;
	v.n_merges = (size_t)n_merges;
	st = tok_create_bpe(&v, out, err);
fail:
	specd_free(pieces);
	specd_free(lens);
	specd_free(merges);
	specd_free(merge_lens);
	specd_free(res);
	specd_free(re_lens);
	specd_free(types);
	return st;
}

enum specd_status tok_load_gguf(const struct gguf_file *f, struct tok **out,
				struct specd_error *err)
{
	struct tok_spm_vocab v = { .add_bos = true, .add_space_prefix = true };
	struct gguf_str model, s;
	enum gguf_value_type elem;
	uint64_t n = 0;
	const char **pieces = NULL;
	size_t *lens = NULL;
	void *scores = NULL, *types = NULL;
	enum specd_status st;

	bool bpe;

	if (!gguf_get_str(f, KEY_MODEL, &model))
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s missing", KEY_MODEL);
	bpe = model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0;
	if (!bpe && (model.len != 5 || memcmp(model.ptr, "llama", 5) != 0))
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "tokenizer: %s \"%.*s\" (\"llama\" and \"gpt2\" are supported)",
				    KEY_MODEL, (int)(model.len > 64 ? 64 : model.len), model.ptr);
	if (!gguf_get_arr(f, KEY_TOKENS, &elem, &n, NULL) || elem != GGUF_TYPE_STRING ||
	    n == 0 || n > INT32_MAX)
		return specd_errorf(err, SPECD_INVAL, "tokenizer: %s is not a non-empty string "
				    "array", KEY_TOKENS);
	if (bpe)
		return tok_load_bpe(f, n, out, err);

	st = tok_gguf_id(f, "tokenizer.ggml.bos_token_id", 1, &v.bos, err);
	if (st == SPECD_OK)
		st = tok_gguf_id(f, "tokenizer.ggml.eos_token_id", 2, &v.eos, err);
	if (st == SPECD_OK)
		st = tok_gguf_id(f, "tokenizer.ggml.unknown_token_id", 0, &v.unk, err);
	if (st == SPECD_OK)
		st = tok_gguf_flag(f, "tokenizer.ggml.add_bos_token", &v.add_bos, err);
	if (st == SPECD_OK)
		st = tok_gguf_flag(f, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix, err);
	if (st == SPECD_OK)
		st = tok_gguf_arr(f, KEY_SCORES, GGUF_TYPE_F32, n, &scores, err);
	if (st == SPECD_OK)
		st = tok_gguf_arr(f, KEY_TYPES, GGUF_TYPE_I32, n, &types, err);
	if (st != SPECD_OK)
		goto fail;

	pieces = specd_malloc_array(n, sizeof(*pieces));
	lens = specd_malloc_array(n, sizeof(*lens));
	if (!pieces || !lens) {
		st = specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory for %llu pieces",
				  (unsigned long long)n);
		goto fail;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (!gguf_get_arr_str(f, KEY_TOKENS, i, &s) || s.len > SIZE_MAX) {
			st = specd_errorf(err, SPECD_INVAL, "tokenizer: %s[%llu] unreadable",
					  KEY_TOKENS, (unsigned long long)i);
			goto fail;
		}
		pieces[i] = s.ptr;
		lens[i] = (size_t)s.len;
	}
	v.n = (size_t)n;
	v.pieces = pieces;
	v.piece_lens = lens;
	v.scores = scores;
	v.types = types;
	st = tok_create_spm(&v, out, err);
fail:
	specd_free(pieces);
	specd_free(lens);
	specd_free(scores);
	specd_free(types);
	return st;
}
