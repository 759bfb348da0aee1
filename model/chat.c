/* ChatML prompts: the conversation -> ids step before prefill, and the default system
 * prompt read from the GGUF template (see chat.h). The template itself is Jinja; rather
 * than run it, this file renders the ChatML shape both supported families share. */
#include "chat.h"

#include <string.h>

#include "common/alloc.h"
#include "model/gguf.h"
#include "tokenizer.h"

#define CHAT_START "<|im_start|>"
#define CHAT_END "<|im_end|>"

/* The first occurrence of needle in hay[0..len), or NULL. */
static const char *chat_find(const char *hay, size_t len, const char *needle, size_t nl)
{
	for (size_t i = 0; nl <= len && i <= len - nl; i++)
		if (memcmp(hay + i, needle, nl) == 0)
			return hay + i;
	return NULL;
}

/* Copies a Jinja string literal's text s[0..len) into out (NULL: measure), undoing
 * \n, \t, \\, \' and \" escapes. */
static size_t chat_unescape(const char *s, size_t len, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '\\' && i + 1 < len) {
			c = s[++i];
			c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
		}
		if (out)
			out[n] = c;
		n++;
	}
	return n;
}

enum specd_status chat_default_system(const struct gguf_file *f, char **out,
				      struct specd_error *err)
{
	static const char head[] = CHAT_START "system";
	struct gguf_str tpl;
	const char *p, *end;

	*out = NULL;

	if (!gguf_get_str(f, "tokenizer.chat_template", &tpl))
		return specd_errorf(err, SPECD_UNSUPPORTED, "chat: the file has no chat template");
	p = tpl.ptr;
	end = tpl.ptr + tpl.len;
	if (!chat_find(p, tpl.len, CHAT_END, strlen(CHAT_END)))
		return specd_errorf(err, SPECD_UNSUPPORTED, "chat: the template is not ChatML");
	/* The default is a Jinja string literal that opens with "<|im_start|>system\n" and
	 * holds the whole turn up to <|im_end|>; where the literal closes first, an
	 * expression follows (' + messages[0]...): that is the explicit-system branch. The
	 * text may hold the other quote character and escapes ("You're ..."). */
	while ((p = chat_find(p, (size_t)(end - p), head, sizeof(head) - 1)) != NULL) {
		const char *s = p + sizeof(head) - 1, *e, *close = NULL;
		char q = p > tpl.ptr ? p[-1] : 0;

		p = s;
		if (q != '\'' && q != '"')
			continue;
		if (s < end && *s == '\n')
			s++;
		else if (end - s >= 2 && s[0] == '\\' && s[1] == 'n')
			s += 2;
		else
			continue;
		for (const char *c = s; c < end && !close; c++) {
			if (*c == '\\')
				c++; /* an escaped character never closes the literal */
			else if (*c == q)
				close = c;
		}
		e = close ? chat_find(s, (size_t)(close - s), CHAT_END, strlen(CHAT_END)) : NULL;
		if (!e)
			continue;
		size_t need = chat_unescape(s, (size_t)(e - s), NULL);
		if (!(*out = specd_malloc_array(need + 1, 1)))
			return specd_errorf(err, SPECD_NOMEM, "chat: out of memory");
		chat_unescape(s, (size_t)(e - s), *out);
		(*out)[need] = '\0';
		return SPECD_OK;
	}
	return SPECD_OK; /* a ChatML template without a default system prompt */
}

enum specd_status chat_user_prompt(const struct tok *t, const struct gguf_file *f,
				   const char *content, int32_t **ids, size_t *n,
				   struct specd_error *err)
{
	char *sys = NULL;
	enum specd_status st = chat_default_system(f, &sys, err);
	struct chat_msg m = {.role = "user", .content = content};
	size_t cap = chat_format_bound(&m, 1, sys);

	*ids = NULL;
	if (st != SPECD_OK)
		return st;
	if (!(*ids = specd_malloc_array(cap ? cap : 1, sizeof(int32_t)))) {
		specd_free(sys);
		return specd_errorf(err, SPECD_NOMEM, "chat: out of memory");
	}
	st = chat_format(t, &m, 1, sys, true, *ids, cap, n, err);
	specd_free(sys);
	if (st != SPECD_OK) {
		specd_free(*ids);
		*ids = NULL;
	}
	return st;
}

size_t chat_format_bound(const struct chat_msg *msgs, size_t n, const char *default_system)
{
	size_t bytes = default_system ? strlen(default_system) + CHAT_TURN_BYTES : 0;

	for (size_t i = 0; i < n; i++)
		bytes += (msgs[i].role ? strlen(msgs[i].role) : 0) +
			 (msgs[i].content ? strlen(msgs[i].content) : 0) + CHAT_TURN_BYTES;
	bytes += CHAT_TURN_BYTES; /* the assistant header */
	return tok_encode_bound(bytes, false);
}

/* Appends <|im_start|>, the encoding of "role\ncontent", <|im_end|>, "\n". */
static enum specd_status chat_turn(const struct tok *t, int32_t start, int32_t stop,
				   const char *role, const char *content, char *scratch,
				   int32_t *ids, size_t cap, size_t *n)
{
	size_t rl = strlen(role), cl = content ? strlen(content) : 0, got = 0;
	enum specd_status st;

	if (*n < cap)
		ids[*n] = start;
	(*n)++;
	memcpy(scratch, role, rl);
	scratch[rl] = '\n';
	if (content)
		memcpy(scratch + rl + 1, content, cl);
	st = tok_encode(t, scratch, rl + 1 + cl, false, *n < cap ? ids + *n : NULL,
			*n < cap ? cap - *n : 0, &got);
	if (st != SPECD_OK && !(st == SPECD_INVAL && got > (*n < cap ? cap - *n : 0)))
		return st;
	*n += got;
	if (!content) /* the assistant header: the reply follows */
		return SPECD_OK;
	if (*n < cap)
		ids[*n] = stop;
	(*n)++;
	st = tok_encode(t, "\n", 1, false, *n < cap ? ids + *n : NULL, *n < cap ? cap - *n : 0,
			&got);
	if (st != SPECD_OK && !(st == SPECD_INVAL && got > (*n < cap ? cap - *n : 0)))
		return st;
	*n += got;
	return SPECD_OK;
}

enum specd_status chat_format(const struct tok *t, const struct chat_msg *msgs, size_t n,
			      const char *default_system, bool add_assistant, int32_t *ids,
			      size_t cap, size_t *n_out, struct specd_error *err)
{
	int32_t start = tok_special_id(t, CHAT_START), stop = tok_special_id(t, CHAT_END);
	size_t longest = 16, count = 0;
	char *scratch;
	enum specd_status st = SPECD_OK;

	if (start < 0 || stop < 0)
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "chat: the vocabulary has no %s / %s tokens", CHAT_START,
				    CHAT_END);
	if ((n > 0 && !msgs) || (cap > 0 && !ids))
		return specd_errorf(err, SPECD_INVAL, "chat: no messages or no output");
	for (size_t i = 0; i < n; i++) {
		if (!msgs[i].role || !msgs[i].content)
			return specd_errorf(err, SPECD_INVAL, "chat: message %zu has no %s", i,
					    msgs[i].role ? "content" : "role");
		size_t l = strlen(msgs[i].role) + strlen(msgs[i].content) + 2;
		longest = l > longest ? l : longest;
	}
	if (default_system && strlen(default_system) + 8 > longest)
		longest = strlen(default_system) + 8;
	scratch = specd_malloc_array(longest, 1);
	if (!scratch)
		return specd_errorf(err, SPECD_NOMEM, "chat: out of memory");
	if (default_system && (n == 0 || strcmp(msgs[0].role, "system") != 0))
		st = chat_turn(t, start, stop, "system", default_system, scratch, ids, cap, &count);
	for (size_t i = 0; st == SPECD_OK && i < n; i++)
		st = chat_turn(t, start, stop, msgs[i].role, msgs[i].content, scratch, ids, cap,
			       &count);
	if (st == SPECD_OK && add_assistant)
		st = chat_turn(t, start, stop, "assistant", NULL, scratch, ids, cap, &count);
	specd_free(scratch);
	if (st != SPECD_OK)
		return specd_errorf(err, st, "chat: cannot encode the conversation");
	*n_out = count;
	if (count > cap)
		return specd_errorf(err, SPECD_INVAL, "chat: %zu ids do not fit in %zu", count,
				    cap);
	return SPECD_OK;
}
