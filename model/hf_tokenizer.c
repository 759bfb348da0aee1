/* tokenizer.json -> the tokenizer.* keys of a byte-level BPE GGUF, as llama.cpp's
 * converter writes them, for a Hugging Face folder's view (hf_open.c): the vocabulary
 * with added tokens at their ids, token types, merges in either of the two forms
 * tokenizers writes, special ids and the chat template from tokenizer_config.json,
 * the pre-tokenizer's regexes (MODEL_KEY_PRE_REGEX) taken from the file itself, the
 * BPE model's ignore_merges (MODEL_KEY_IGNORE_MERGES), and the BOS a TemplateProcessing
 * post_processor puts before the text (Llama 3) where tokenizer_config.json says
 * nothing of add_bos_token. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "hf_int.h"
#include "model/model_file.h"
#include "model/tokenizer.h"
#include "tokenizer_int.h"

struct hf_tok {
	const char *path;     /* tokenizer.json, for messages */
	json_t *vocab;        /* model.vocab */
	const json_t *added;  /* added_tokens, or NULL */
	const char **tokens;  /* (n) into the JSON or pads */
	int32_t *types;       /* (n) enum tok_type */
	char *pads;           /* "[PADi]" pieces, 24 bytes each */
	size_t n;
	char **merges;        /* (n_merges) "left right", owned */
	size_t n_merges;
	char *re[TOK_BPE_MAX_RE];
	size_t n_re;
	bool byte_level;
	struct specd_error *err;
};

/* --- pre-tokenizer --------------------------------------------------------------- */

static enum specd_status push_re(struct hf_tok *t, const char *re, size_t len)
{
	if (t->n_re == TOK_BPE_MAX_RE)
		return specd_errorf(t->err, SPECD_UNSUPPORTED,
				    "%s: pre_tokenizer has more than %d regex steps", t->path,
				    TOK_BPE_MAX_RE);
	char *s = specd_malloc_array(len + 1, 1);
	if (!s)
		return specd_errorf(t->err, SPECD_NOMEM, "%s: no memory", t->path);
	memcpy(s, re, len);
	s[len] = '\0';
	t->re[t->n_re++] = s;
	return SPECD_OK;
}

/* A Split pattern's literal String, as a regex matching it (\Q...\E when it can be). */
static enum specd_status push_literal(struct hf_tok *t, const char *lit)
{
	char buf[256];
	if (strstr(lit, "\\E") || strlen(lit) + 5 > sizeof(buf))
		return specd_errorf(t->err, SPECD_UNSUPPORTED,
				    "%s: pre_tokenizer Split pattern String '%.40s' is not supported",
				    t->path, lit);
	int n = snprintf(buf, sizeof(buf), "\\Q%s\\E", lit);
	return push_re(t, buf, (size_t)n);
}

static enum specd_status pre_split(struct hf_tok *t, const json_t *pt)
{
	const json_t *pat = json_object_get(pt, "pattern");
	const char *behavior = json_string_value(json_object_get(pt, "behavior"));
	const char *re = json_string_value(json_object_get(pat, "Regex"));
	const char *lit = json_string_value(json_object_get(pat, "String"));

	/* Isolated (matches and the text between them all become pieces) is what the BPE
	 * splitter does; the other behaviours would need another splitter. */
	if (!behavior || strcmp(behavior, "Isolated") != 0 ||
	    json_is_true(json_object_get(pt, "invert")))
		return specd_errorf(t->err, SPECD_UNSUPPORTED,
				    "%s: pre_tokenizer Split with behavior '%.20s'%s is not supported (Isolated is)",
				    t->path, behavior ? behavior : "?",
				    json_is_true(json_object_get(pt, "invert")) ? " and invert" : "");
	if (re)
		return push_re(t, re, strlen(re));
	if (lit)
		return push_literal(t, lit);
	return specd_errorf(t->err, SPECD_INVAL,
			    "%s: pre_tokenizer Split has no pattern.Regex or pattern.String", t->path);
}

/* One pre-tokenizer (recursing into Sequence) as regexes, in order. */
static enum specd_status pre_regexes(struct hf_tok *t, const json_t *pt, int depth)
{
	const char *type = json_string_value(json_object_get(pt, "type"));
	enum specd_status st = SPECD_OK;

	if (!type || depth > 4)
		return specd_errorf(t->err, SPECD_INVAL, "%s: pre_tokenizer without a type", t->path);
	if (strcmp(type, "Sequence") == 0) {
		const json_t *list = json_object_get(pt, "pretokenizers");
		if (!json_is_array(list))
			return specd_errorf(t->err, SPECD_INVAL,
					    "%s: pre_tokenizer Sequence has no pretokenizers array", t->path);
		for (size_t i = 0; i < json_array_size(list) && st == SPECD_OK; i++)
			st = pre_regexes(t, json_array_get(list, i), depth + 1);
		return st;
	}
	if (strcmp(type, "Split") == 0)
		return pre_split(t, pt);
	if (strcmp(type, "Digits") == 0) {
		bool one = json_is_true(json_object_get(pt, "individual_digits"));
		return push_re(t, one ? "\\p{N}" : "\\p{N}+", one ? 5 : 6);
	}
	if (strcmp(type, "ByteLevel") == 0) {
		const json_t *use_regex = json_object_get(pt, "use_regex");
		t->byte_level = true;
		if (json_is_true(json_object_get(pt, "add_prefix_space")))
			return specd_errorf(t->err, SPECD_UNSUPPORTED,
					    "%s: pre_tokenizer ByteLevel with add_prefix_space is not supported",
					    t->path);
		if (!use_regex || json_is_true(use_regex))
			return push_re(t, TOK_RE_GPT2, strlen(TOK_RE_GPT2));
		return SPECD_OK;
	}
	return specd_errorf(t->err, SPECD_UNSUPPORTED,
			    "%s: pre_tokenizer type '%.32s' is not supported (only byte-level BPE: "
			    "Sequence, Split, Digits, ByteLevel)", t->path, type);
}

/* --- vocabulary ------------------------------------------------------------------ */

static bool token_id(const json_t *v, size_t bound, size_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) >= bound)
		return false;
	*out = (size_t)json_integer_value(v);
	return true;
}

/* How many ids there are: past the largest one used, and at least vocab_size. */
static enum specd_status vocab_count(struct hf_tok *t, uint32_t vocab_size)
{
	size_t entries = json_object_size(t->vocab) + json_array_size(t->added), id = 0;
	size_t bound = entries > vocab_size ? entries : vocab_size;
	const char *key;
	json_t *v;

	t->n = vocab_size;
	json_object_foreach(t->vocab, key, v) {
		if (!token_id(v, bound, &id))
			return specd_errorf(t->err, SPECD_INVAL,
					    "%s: model.vocab['%.40s'] is not a token id below %zu",
					    t->path, key, bound);
		t->n = id + 1 > t->n ? id + 1 : t->n;
	}
	for (size_t i = 0; i < json_array_size(t->added); i++) {
		const json_t *a = json_array_get(t->added, i);
		if (!token_id(json_object_get(a, "id"), bound, &id) ||
		    !json_is_string(json_object_get(a, "content")))
			return specd_errorf(t->err, SPECD_INVAL,
					    "%s: added_tokens[%zu] has no id below %zu or no content",
					    t->path, i, bound);
		t->n = id + 1 > t->n ? id + 1 : t->n;
	}
	if (t->n == 0 || t->n > INT32_MAX)
		return specd_errorf(t->err, SPECD_INVAL, "%s: model.vocab is empty", t->path);
	return SPECD_OK;
}

static enum specd_status vocab_fill(struct hf_tok *t)
{
	const char *key;
	json_t *v;
	size_t id = 0;

	t->tokens = specd_calloc(t->n, sizeof(*t->tokens));
	t->types = specd_malloc_array(t->n, sizeof(*t->types));
	t->pads = specd_malloc_array(t->n, 24);
	if (!t->tokens || !t->types || !t->pads)
		return specd_errorf(t->err, SPECD_NOMEM, "%s: no memory for %zu tokens", t->path, t->n);
	json_object_foreach(t->vocab, key, v) {
		token_id(v, t->n, &id);
		if (t->tokens[id])
			return specd_errorf(t->err, SPECD_INVAL,
					    "%s: model.vocab gives id %zu to both '%.40s' and '%.40s'",
					    t->path, id, t->tokens[id], key);
		t->tokens[id] = key;
		t->types[id] = TOK_TYPE_NORMAL;
	}
	/* Added tokens win at their ids (some files list them in the vocabulary too). */
	for (size_t i = 0; i < json_array_size(t->added); i++) {
		const json_t *a = json_array_get(t->added, i);
		token_id(json_object_get(a, "id"), t->n, &id);
		t->tokens[id] = json_string_value(json_object_get(a, "content"));
		t->types[id] = json_is_true(json_object_get(a, "special")) ? TOK_TYPE_CONTROL
									    : TOK_TYPE_USER_DEFINED;
	}
	for (size_t i = 0; i < t->n; i++) {
		if (t->tokens[i])
			continue;
		snprintf(t->pads + 24 * i, 24, "[PAD%u]", (unsigned)i);
		t->tokens[i] = t->pads + 24 * i;
		t->types[i] = TOK_TYPE_UNUSED;
	}
	return SPECD_OK;
}

/* model.merges: "left right" strings, or [left, right] pairs (tokenizers >= 0.20). */
static enum specd_status merges_read(struct hf_tok *t, const json_t *model)
{
	const json_t *list = json_object_get(model, "merges");
	size_t n = json_array_size(list);

	if (!list)
		return SPECD_OK;
	if (!json_is_array(list))
		return specd_errorf(t->err, SPECD_INVAL, "%s: model.merges is not an array", t->path);
	if (n && !(t->merges = specd_calloc(n, sizeof(*t->merges))))
		return specd_errorf(t->err, SPECD_NOMEM, "%s: no memory for %zu merges", t->path, n);
	for (size_t i = 0; i < n; i++) {
		const json_t *m = json_array_get(list, i);
		const char *l = json_string_value(json_array_get(m, 0));
		const char *r = json_string_value(json_array_get(m, 1));
		size_t len;

		if (json_is_string(m)) {
			l = json_string_value(m);
			r = NULL;
		} else if (json_array_size(m) != 2 || !l || !r) {
			return specd_errorf(t->err, SPECD_INVAL,
					    "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
					    t->path, i);
		}
		len = strlen(l) + (r ? strlen(r) + 1 : 0);
		if (!(t->merges[i] = specd_malloc_array(len + 1, 1)))
			return specd_errorf(t->err, SPECD_NOMEM, "%s: no memory for merges", t->path);
		t->n_merges = i + 1;
		snprintf(t->merges[i], len + 1, r ? "%s %s" : "%s", l, r);
	}
	return SPECD_OK;
}

/* The id of the token spelled `text`: an added token, else a vocabulary piece. */
static bool lookup(const struct hf_tok *t, const char *text, int32_t *out)
{
	for (size_t i = 0; i < json_array_size(t->added); i++) {
		const json_t *a = json_array_get(t->added, i);
		if (strcmp(json_string_value(json_object_get(a, "content")), text) == 0) {
			*out = (int32_t)json_integer_value(json_object_get(a, "id"));
			return true;
		}
	}
	const json_t *v = json_object_get(t->vocab, text);
	if (!v)
		return false;
	*out = (int32_t)json_integer_value(v);
	return true;
}

/* tokenizer_config.json's <what>_token (a string or {"content": ...}), else config.json's
 * <what>_token_id; the key is left out when neither names one. */
static enum specd_status special_id(struct hf_tok *t, const json_t *tcfg, const char *tcfg_path,
				    const json_t *config, const char *what, const char *gguf_key,
				    struct gguf_writer *w)
{
	char key[32];
	int32_t id = -1;

	snprintf(key, sizeof(key), "%s_token", what);
	const json_t *v = json_object_get(tcfg, key);
	if (json_is_object(v))
		v = json_object_get(v, "content");
	if (json_is_string(v) && !lookup(t, json_string_value(v), &id))
		return specd_errorf(t->err, SPECD_INVAL, "%s: %s '%.40s' is not a token of %s",
				    tcfg_path, key, json_string_value(v), t->path);
	snprintf(key, sizeof(key), "%s_token_id", what);
	if (id < 0 && !hf_json_id(config, key, &id))
		return SPECD_OK;
	if ((size_t)id >= t->n)
		return specd_errorf(t->err, SPECD_INVAL, "config.json: %s %d is not below the %zu tokens",
				    key, id, t->n);
	return gguf_writer_set_u32(w, gguf_key, (uint32_t)id);
}

/* The chat template: tokenizer_config.json's chat_template (a string, or a list of
 * named ones of which "default"), else the folder's chat_template.jinja. */
static enum specd_status chat_template(const char *dir, const json_t *tcfg, struct gguf_writer *w)
{
	const json_t *v = json_object_get(tcfg, "chat_template");
	char path[4096];
	struct stat sb;

	for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++) {
		const json_t *e = json_array_get(v, i);
		const char *name = json_string_value(json_object_get(e, "name"));
		if (name && strcmp(name, "default") == 0)
			v = json_object_get(e, "template");
	}
	if (json_is_string(v))
		return gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(v));
	snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
	FILE *fp = stat(path, &sb) == 0 && sb.st_size < (1 << 20) ? fopen(path, "rb") : NULL;
	if (!fp)
		return SPECD_OK;
	char *text = specd_malloc_array((size_t)sb.st_size + 1, 1);
	enum specd_status st = SPECD_NOMEM;
	if (text && fread(text, 1, (size_t)sb.st_size, fp) == (size_t)sb.st_size) {
		text[sb.st_size] = '\0';
		st = gguf_writer_set_str(w, "tokenizer.chat_template", text);
	}
	fclose(fp);
	specd_free(text);
	return st;
}

/* The token a TemplateProcessing post_processor (alone, or in a Sequence as Llama 3's
 * is) puts before a single text, in *id (-1: none). What a template appends after the
 * text (an EOS) is left out: a prompt is text to continue, not a finished one. */
static enum specd_status template_bos(struct hf_tok *t, const json_t *pp, int depth,
				      int32_t *id)
{
	const char *type = json_string_value(json_object_get(pp, "type"));
	enum specd_status st = SPECD_OK;

	if (type && strcmp(type, "Sequence") == 0 && depth < 4) {
		const json_t *list = json_object_get(pp, "processors");
		for (size_t i = 0; i < json_array_size(list) && st == SPECD_OK && *id < 0; i++)
			st = template_bos(t, json_array_get(list, i), depth + 1, id);
		return st;
	}
	if (!type || strcmp(type, "TemplateProcessing") != 0)
		return SPECD_OK;
	const json_t *first = json_array_get(json_object_get(pp, "single"), 0);
	const char *name = json_string_value(
		json_object_get(json_object_get(first, "SpecialToken"), "id"));
	if (!name)
		return SPECD_OK; /* the text comes first */
	const json_t *ids = json_object_get(
		json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
	size_t v;
	if (json_array_size(ids) != 1 || !token_id(json_array_get(ids, 0), t->n, &v))
		return specd_errorf(t->err, SPECD_UNSUPPORTED,
				    "%s: post_processor puts '%.40s' before the text, which is not "
				    "one token id below %zu in its special_tokens", t->path, name,
				    t->n);
	*id = (int32_t)v;
	return SPECD_OK;
}

static enum specd_status write_keys(struct hf_tok *t, const char *dir, const json_t *config,
				    const json_t *root, struct gguf_writer *w)
{
	char tcfg_path[4096];
	json_t *tcfg = NULL;
	struct specd_error e;
	enum specd_status st;
	int32_t bos = -1;

	/* tokenizer_config.json is optional; a malformed one is still an error. Its
	 * numbers are never ids, and model_max_length is often 1e30 written as an
	 * integer, beyond jansson's integers. */
	specd_error_clear(&e);
	st = hf_json_load(dir, "tokenizer_config.json", JSON_DECODE_INT_AS_REAL, tcfg_path,
			  sizeof(tcfg_path), &tcfg, &e);
	if (st == SPECD_INVAL)
		return specd_errorf(t->err, st, "%s", e.msg);
	if ((st = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2")) ||
	    (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", t->tokens, t->n)) ||
	    (st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_I32, t->types, t->n)) ||
	    (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges",
					  (const char *const *)t->merges, t->n_merges)) ||
	    (st = gguf_writer_set_arr_str(w, MODEL_KEY_PRE_REGEX, (const char *const *)t->re,
					  t->n_re)) ||
	    (st = special_id(t, tcfg, tcfg_path, config, "bos", "tokenizer.ggml.bos_token_id", w)) ||
	    (st = special_id(t, tcfg, tcfg_path, config, "eos", "tokenizer.ggml.eos_token_id", w)) ||
	    (st = special_id(t, tcfg, tcfg_path, config, "unk", "tokenizer.ggml.unknown_token_id", w)) ||
	    (st = chat_template(dir, tcfg, w)))
		goto out;
	/* tokenizer_config.json's add_bos_token wins, as transformers' Llama tokenizers
	 * rebuild the post_processor from it; else the template decides. */
	const json_t *add_bos = json_object_get(tcfg, "add_bos_token");
	if (json_is_boolean(add_bos))
		st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(add_bos));
	else
		st = template_bos(t, json_object_get(root, "post_processor"), 0, &bos);
	if (st == SPECD_OK && bos >= 0 &&
	    (st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos)) == SPECD_OK)
		st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
	if (st == SPECD_OK && json_is_true(json_object_get(json_object_get(root, "model"),
							   "ignore_merges")))
		st = gguf_writer_set_bool(w, MODEL_KEY_IGNORE_MERGES, true);
out:
	json_decref(tcfg);
	return st;
}

static void hf_tok_fini(struct hf_tok *t)
{
	specd_free(t->tokens);
	specd_free(t->types);
	specd_free(t->pads);
	for (size_t i = 0; i < t->n_merges; i++)
		specd_free(t->merges[i]);
	specd_free(t->merges);
	for (size_t i = 0; i < t->n_re; i++)
		specd_free(t->re[i]);
}

enum specd_status hf_tokenizer_keys(const char *dir, const json_t *config, uint32_t vocab_size,
				    struct gguf_writer *w, struct specd_error *err)
{
	char path[4096];
	json_t *root = NULL;
	struct hf_tok t = {.path = path, .err = err};
	enum specd_status st;

	if ((st = hf_json_load(dir, "tokenizer.json", 0, path, sizeof(path), &root, err)) != SPECD_OK)
		return st;
	const json_t *model = json_object_get(root, "model");
	const json_t *norm = json_object_get(root, "normalizer");
	const char *type = json_string_value(json_object_get(model, "type"));
	const char *norm_type = json_string_value(json_object_get(norm, "type"));
	t.vocab = json_object_get(model, "vocab");
	t.added = json_object_get(root, "added_tokens");
	if (!type || strcmp(type, "BPE") != 0) {
		st = specd_errorf(err, SPECD_UNSUPPORTED,
				  "%s: model.type '%.20s' is not supported (byte-level BPE is)", path,
				  type ? type : "?");
		goto out;
	}
	/* NFC is not applied, as for GGUF files (tokenizer.h); anything else changes text. */
	if (norm && !json_is_null(norm) && (!norm_type || strcmp(norm_type, "NFC") != 0)) {
		st = specd_errorf(err, SPECD_UNSUPPORTED,
				  "%s: normalizer '%.20s' is not supported (none or NFC)", path,
				  norm_type ? norm_type : "?");
		goto out;
	}
	if (!json_is_object(t.vocab) || (t.added && !json_is_array(t.added))) {
		st = specd_errorf(err, SPECD_INVAL,
				  "%s: model.vocab is not an object or added_tokens not an array", path);
		goto out;
	}
	const json_t *pre = json_object_get(root, "pre_tokenizer");
	if (pre && !json_is_null(pre) && (st = pre_regexes(&t, pre, 0)) != SPECD_OK)
		goto out;
	if (!t.byte_level) {
		st = specd_errorf(err, SPECD_UNSUPPORTED,
				  "%s: the pre_tokenizer has no ByteLevel step: only byte-level BPE "
				  "(GPT-2 style) tokenizers are supported, not SentencePiece-style "
				  "(Metaspace) ones; convert the model to GGUF", path);
		goto out;
	}
	/* Options of the BPE model that change ids and that no byte-level model sets (after
	 * the ByteLevel check: SentencePiece-style files set byte_fallback, and are refused
	 * for what they are). */
	const char *opt = json_is_true(json_object_get(model, "byte_fallback")) ? "byte_fallback"
			  : json_number_value(json_object_get(model, "dropout")) > 0 ? "dropout"
			  : json_string_length(json_object_get(model, "continuing_subword_prefix"))
				  ? "continuing_subword_prefix"
			  : json_string_length(json_object_get(model, "end_of_word_suffix"))
				  ? "end_of_word_suffix"
				  : NULL;
	if (opt) {
		st = specd_errorf(err, SPECD_UNSUPPORTED,
				  "%s: the BPE model sets '%s', which is not supported (byte-level "
				  "BPE without it is)", path, opt);
		goto out;
	}
	if ((st = vocab_count(&t, vocab_size)) == SPECD_OK && (st = vocab_fill(&t)) == SPECD_OK &&
	    (st = merges_read(&t, model)) == SPECD_OK)
		st = write_keys(&t, dir, config, root, w);
out:
	hf_tok_fini(&t);
	json_decref(root);
	return st;
}
