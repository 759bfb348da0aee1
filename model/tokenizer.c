/* Tokenizer vocabulary and decoding: builds struct tok from plain arrays (the GGUF
 * glue in tokenizer_gguf.c and tests feed it), answers id lookups, splits out special
 * tokens, and turns ids back into text for the streamer. Encoding lives in
 * tokenizer_encode.c (SPM) and tokenizer_bpe.c (byte-level BPE). */
#include "tokenizer_int.h"

#include <string.h>

#include "common/alloc.h"

#define TOK_PIECE_MAX (1u << 20)

/* What llama.cpp prints for an unknown token: U+2585 "▅". */
static const char unk_text[] = "\xe2\x96\x85";

static uint64_t tok_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static bool tok_mergeable(uint8_t type)
{
	return type == TOK_TYPE_NORMAL || type == TOK_TYPE_USER_DEFINED ||
	       type == TOK_TYPE_UNDEFINED;
}

int32_t tok_lookup(const struct tok *t, const char *s, size_t len)
{
	size_t i = (size_t)tok_hash(s, len) & t->slot_mask;

	for (;;) {
		int32_t id = t->slots[i];

		if (id < 0)
			return -1;
		if (t->piece_len[id] == len && memcmp(t->arena + t->piece_off[id], s, len) == 0)
			return id;
		i = (i + 1) & t->slot_mask;
	}
}

size_t tok_utf8_char_len(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return 1;
	}
	if (len < n || s[1] < lo || s[1] > hi)
		return 1;
	for (size_t i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 1;
	return n;
}

/* "<0xNN>" -> NN, or -1. */
static int tok_parse_byte_piece(const char *p, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *hi, *lo;

	if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
		return -1;
	hi = memchr(hex, p[3], 16);
	lo = memchr(hex, p[4], 16);
	if (!hi || !lo || !p[3] || !p[4])
		return -1;
	return (int)((hi - hex) * 16 + (lo - hex));
}

/* Decoded text of one piece into dst (NULL: only measure); returns its length. */
static size_t tok_piece_text(uint8_t type, const char *p, size_t len, bool bpe, char *dst)
{
	size_t n = 0;
	int b;

	switch (type) {
	case TOK_TYPE_CONTROL:
	case TOK_TYPE_UNUSED:
		return 0;
	case TOK_TYPE_UNKNOWN:
		if (dst)
			memcpy(dst, unk_text, sizeof(unk_text) - 1);
		return sizeof(unk_text) - 1;
	case TOK_TYPE_BYTE:
		b = tok_parse_byte_piece(p, len);
		if (b >= 0) {
			if (dst)
				dst[0] = (char)b;
			return 1;
		}
		break; /* a malformed byte piece reads as text */
	case TOK_TYPE_NORMAL:
	case TOK_TYPE_UNDEFINED:
		if (bpe)
			return tok_bpe_piece_text(p, len, dst);
		break;
	default:
		break;
	}
	for (size_t i = 0; i < len; i++) {
		if (!bpe && i + TOK_SPACE_MARK_LEN <= len &&
		    memcmp(p + i, TOK_SPACE_MARK, TOK_SPACE_MARK_LEN) == 0) {
			if (dst)
				dst[n] = ' ';
			i += TOK_SPACE_MARK_LEN - 1;
		} else if (dst) {
			dst[n] = p[i];
		}
		n++;
	}
	return n;
}

static enum specd_status tok_check_vocab(const struct tok_spm_vocab *v, size_t *arena_size,
					 struct specd_error *err)
{
	size_t total = 0;

	if (!v || v->n == 0 || v->n > INT32_MAX || !v->pieces)
		return specd_errorf(err, SPECD_INVAL, "tokenizer: vocabulary of %zu pieces",
				    v ? v->n : 0);
	for (size_t i = 0; i < v->n; i++) {
		size_t len;

		if (!v->pieces[i] && !(v->piece_lens && v->piece_lens[i] == 0))
			return specd_errorf(err, SPECD_INVAL, "tokenizer: piece %zu is NULL", i);
		if (v->types && (v->types[i] < 0 || v->types[i] >= TOK_TYPE_COUNT))
			return specd_errorf(err, SPECD_INVAL, "tokenizer: piece %zu has type %d",
					    i, (int)v->types[i]);
		len = v->piece_lens ? v->piece_lens[i] : strnlen(v->pieces[i], TOK_PIECE_MAX + 1);
		if (len > TOK_PIECE_MAX)
			return specd_errorf(err, SPECD_INVAL,
					    "tokenizer: piece %zu is longer than %u bytes", i,
					    TOK_PIECE_MAX);
		/* piece, NUL, text (never longer than the piece or unk_text), NUL */
		total += 2 * len + sizeof(unk_text) + 2;
	}
	if (v->bos < 0 || (size_t)v->bos >= v->n || v->eos < 0 || (size_t)v->eos >= v->n ||
	    v->unk < 0 || (size_t)v->unk >= v->n)
		return specd_errorf(err, SPECD_INVAL,
				    "tokenizer: bos %d, eos %d or unk %d outside 0..%zu",
				    (int)v->bos, (int)v->eos, (int)v->unk, v->n - 1);
	*arena_size = total;
	return SPECD_OK;
}

static bool tok_is_special_type(uint8_t type)
{
	return type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED;
}

/* The control tokens besides eos that end a generation (tok_end_ids). */
static void tok_collect_end_ids(struct tok *t)
{
	static const char *const ends[] = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>",
					   "<|eom_id|>", "<|end_of_text|>", "<end_of_turn>",
					   "<|end|>"};
	for (int32_t k = 0; k < t->n_special && t->n_end_ids < TOK_MAX_END_IDS; k++) {
		int32_t id = t->special[k];
		const char *piece = t->arena + t->piece_off[id];
		if (id == t->eos || t->types[id] != TOK_TYPE_CONTROL)
			continue;
		for (size_t e = 0; e < sizeof(ends) / sizeof(ends[0]); e++) {
			size_t len = strlen(ends[e]);
			if (t->piece_len[id] == len && memcmp(piece, ends[e], len) == 0) {
				t->end_ids[t->n_end_ids++] = id;
				break;
			}
		}
	}
}

/* Lists the special pieces longest first (insertion sort: there are few). */
static enum specd_status tok_collect_special(struct tok *t)
{
	int32_t n = 0;

	for (int32_t i = 0; i < t->n; i++)
		n += tok_is_special_type(t->types[i]) && t->piece_len[i] > 0;
	if (n == 0)
		return SPECD_OK;
	t->special = specd_malloc_array((size_t)n, sizeof(*t->special));
	t->user_defined = specd_malloc_array((size_t)n, sizeof(*t->user_defined));
	if (!t->special || !t->user_defined)
		return SPECD_NOMEM;
	for (int32_t i = 0; i < t->n; i++) {
		int32_t k;

		if (!tok_is_special_type(t->types[i]) || t->piece_len[i] == 0)
			continue;
		k = t->n_special++;
		while (k > 0 && t->piece_len[t->special[k - 1]] < t->piece_len[i]) {
			t->special[k] = t->special[k - 1];
			k--;
		}
		t->special[k] = i;
		unsigned char c = (unsigned char)t->arena[t->piece_off[i]];
		t->special_first[c / 8] |= (uint8_t)(1u << (c % 8));
	}
	/* The USER_DEFINED ones apart, in the same order, so that a prompt's scan never
	 * walks control pieces (Llama 3 has 256 of them, all starting with '<'). */
	for (int32_t k = 0; k < n; k++) {
		int32_t id = t->special[k];
		if (t->types[id] != TOK_TYPE_USER_DEFINED)
			continue;
		t->user_defined[t->n_user_defined++] = id;
		unsigned char c = (unsigned char)t->arena[t->piece_off[id]];
		t->user_defined_first[c / 8] |= (uint8_t)(1u << (c % 8));
	}
	return SPECD_OK;
}

enum specd_status tok_create_spm(const struct tok_spm_vocab *v, struct tok **out,
				 struct specd_error *err)
{
	return tok_build(v, false, out, err);
}

enum specd_status tok_build(const struct tok_spm_vocab *v, bool bpe, struct tok **out,
			    struct specd_error *err)
{
	struct tok *t = NULL;
	size_t arena_size = 0, pos = 0, n_slots = 1;
	enum specd_status st;

	st = tok_check_vocab(v, &arena_size, err);
	if (st != SPECD_OK)
		return st;
	while (n_slots < 2 * v->n)
		n_slots *= 2;

	t = specd_calloc(1, sizeof(*t));
	if (!t)
		goto nomem;
	t->n = (int32_t)v->n;
	t->arena = specd_malloc_array(arena_size, 1);
	t->piece_off = specd_malloc_array(v->n, sizeof(*t->piece_off));
	t->piece_len = specd_malloc_array(v->n, sizeof(*t->piece_len));
	t->text_off = specd_malloc_array(v->n, sizeof(*t->text_off));
	t->text_len = specd_malloc_array(v->n, sizeof(*t->text_len));
	t->scores = specd_malloc_array(v->n, sizeof(*t->scores));
	t->types = specd_malloc_array(v->n, sizeof(*t->types));
	t->slots = specd_malloc_array(n_slots, sizeof(*t->slots));
	if (!t->arena || !t->piece_off || !t->piece_len || !t->text_off || !t->text_len ||
	    !t->scores || !t->types || !t->slots)
		goto nomem;
	t->slot_mask = n_slots - 1;
	memset(t->slots, 0xff, n_slots * sizeof(*t->slots));
	for (int i = 0; i < 256; i++)
		t->byte_id[i] = -1;
	t->bos = v->bos;
	t->eos = v->eos;
	t->unk = v->unk;
	t->add_bos = v->add_bos;
	t->add_space_prefix = v->add_space_prefix;

	for (size_t i = 0; i < v->n; i++) {
		const char *p = v->pieces[i];
		size_t len = v->piece_lens ? v->piece_lens[i] : strlen(p);
		uint8_t type = v->types ? (uint8_t)v->types[i] : TOK_TYPE_NORMAL;
		int b;

		t->types[i] = type;
		t->scores[i] = v->scores ? v->scores[i] : 0.0f;
		t->piece_off[i] = pos;
		t->piece_len[i] = (uint32_t)len;
		if (len > 0)
			memcpy(t->arena + pos, p, len);
		t->arena[pos + len] = '\0';
		pos += len + 1;
		t->text_off[i] = pos;
		t->text_len[i] = (uint32_t)tok_piece_text(type, p, len, bpe, t->arena + pos);
		pos += t->text_len[i];
		t->arena[pos++] = '\0';

		b = type == TOK_TYPE_BYTE ? tok_parse_byte_piece(p, len) : -1;
		if (b >= 0 && t->byte_id[b] < 0)
			t->byte_id[b] = (int32_t)i;
		/* The first of duplicate pieces wins, as a lookup from text must be unique. */
		if (tok_mergeable(type) && len > 0 && tok_lookup(t, p, len) < 0) {
			size_t s = (size_t)tok_hash(p, len) & t->slot_mask;

			while (t->slots[s] >= 0)
				s = (s + 1) & t->slot_mask;
			t->slots[s] = (int32_t)i;
		}
	}
	if (tok_collect_special(t) != SPECD_OK)
		goto nomem;
	tok_collect_end_ids(t);
	*out = t;
	return SPECD_OK;
nomem:
	tok_destroy(t);
	return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory for %zu pieces", v->n);
}

void tok_destroy(struct tok *t)
{
	if (!t)
		return;
	specd_free(t->arena);
	specd_free(t->piece_off);
	specd_free(t->piece_len);
	specd_free(t->text_off);
	specd_free(t->text_len);
	specd_free(t->scores);
	specd_free(t->types);
	specd_free(t->slots);
	specd_free(t->special);
	specd_free(t->user_defined);
	tok_bpe_destroy(t->bpe);
	specd_free(t);
}

int32_t tok_vocab_size(const struct tok *t)
{
	return t->n;
}

int32_t tok_bos(const struct tok *t)
{
	return t->bos;
}

int32_t tok_eos(const struct tok *t)
{
	return t->eos;
}

uint32_t tok_end_ids(const struct tok *t, const int32_t **ids)
{
	if (ids)
		*ids = t->end_ids;
	return t->n_end_ids;
}

bool tok_is_end(const struct tok *t, int32_t id)
{
	for (uint32_t i = 0; i < t->n_end_ids; i++)
		if (id == t->end_ids[i])
			return true;
	return id == t->eos;
}

int32_t tok_unk(const struct tok *t)
{
	return t->unk;
}

bool tok_add_bos(const struct tok *t)
{
	return t->add_bos;
}

bool tok_is_bpe(const struct tok *t)
{
	return t->bpe != NULL;
}

const char *tok_pre_name(const struct tok *t)
{
	return t->bpe ? tok_bpe_pre_name(t->bpe) : "";
}

int32_t tok_special_id(const struct tok *t, const char *text)
{
	size_t len = text ? strlen(text) : 0;

	for (int32_t k = 0; k < t->n_special; k++) {
		int32_t id = t->special[k];

		if (t->piece_len[id] == len && memcmp(t->arena + t->piece_off[id], text, len) == 0)
			return id;
	}
	return -1;
}

/* The longest special piece starting at s[0..len), or -1: CONTROL and USER_DEFINED
 * ones when control, else USER_DEFINED ones only. */
static int32_t tok_special_at(const struct tok *t, const char *s, size_t len, bool control)
{
	unsigned char c = (unsigned char)s[0];
	const uint8_t *first = control ? t->special_first : t->user_defined_first;
	const int32_t *list = control ? t->special : t->user_defined;
	int32_t n = control ? t->n_special : t->n_user_defined;

	if (!(first[c / 8] & (1u << (c % 8))))
		return -1;
	for (int32_t k = 0; k < n; k++) {
		int32_t id = list[k];
		size_t pl = t->piece_len[id];

		if (pl <= len && memcmp(t->arena + t->piece_off[id], s, pl) == 0)
			return id;
	}
	return -1;
}

enum specd_status tok_encode_special(const struct tok *t, const char *text, size_t len,
				     bool add_bos, int32_t *ids, size_t cap, size_t *n_out)
{
	return tok_encode_parts(t, text, len, add_bos, true, ids, cap, n_out);
}

enum specd_status tok_encode_parts(const struct tok *t, const char *text, size_t len,
				   bool add_bos, bool control, int32_t *ids, size_t cap,
				   size_t *n_out)
{
	size_t n = 0, start = 0, got;
	enum specd_status st;

	if ((len > 0 && !text) || (cap > 0 && !ids))
		return SPECD_INVAL;
	if (len > ((size_t)1 << 30))
		return SPECD_INVAL; /* as tok_encode_text, before scanning a gigabyte */
	if (add_bos) {
		if (cap > 0)
			ids[0] = t->bos;
		n = 1;
	}
	for (size_t i = 0; i <= len; i++) {
		int32_t id = i < len ? tok_special_at(t, text + i, len - i, control) : -1;

		if (id < 0 && i < len)
			continue;
		if (i > start) {
			/* tok_encode reports the count it needs when ids run out; keep counting
			 * past the end so the caller learns the total. */
			got = 0;
			st = tok_encode_text(t, text + start, i - start, false,
					     n < cap ? ids + n : NULL, n < cap ? cap - n : 0, &got);
			if (st != SPECD_OK && !(st == SPECD_INVAL && got > (n < cap ? cap - n : 0)))
				return st;
			n += got;
		}
		if (id >= 0) {
			if (n < cap)
				ids[n] = id;
			n++;
			i += t->piece_len[id] - 1;
			start = i + 1;
		}
	}
	*n_out = n;
	return n <= cap ? SPECD_OK : SPECD_INVAL;
}

enum tok_type tok_token_type(const struct tok *t, int32_t id)
{
	if (id < 0 || id >= t->n)
		return TOK_TYPE_COUNT;
	return (enum tok_type)t->types[id];
}

float tok_score(const struct tok *t, int32_t id)
{
	return id < 0 || id >= t->n ? 0.0f : t->scores[id];
}

const char *tok_piece(const struct tok *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n)
		return NULL;
	if (len)
		*len = t->piece_len[id];
	return t->arena + t->piece_off[id];
}

enum specd_status tok_token_text(const struct tok *t, int32_t prev, int32_t id,
				 const char **text, size_t *len)
{
	const char *s;
	size_t n;

	if (id < 0 || id >= t->n)
		return SPECD_INVAL;
	s = t->arena + t->text_off[id];
	n = t->text_len[id];
	/* Undo the space encode prefixed: only at the start, and never for a byte token,
	 * whose space is the text's own. */
	if (t->add_space_prefix && (prev == TOK_NONE || prev == t->bos) && n > 0 &&
	    s[0] == ' ' && t->types[id] != TOK_TYPE_BYTE) {
		s++;
		n--;
	}
	*text = s;
	*len = n;
	return SPECD_OK;
}

enum specd_status tok_decode(const struct tok *t, const int32_t *ids, size_t n, char *buf,
			     size_t cap, size_t *len_out)
{
	size_t total = 0;
	const char *s;
	size_t len;

	if (n > 0 && !ids)
		return SPECD_INVAL;
	for (size_t i = 0; i < n; i++) {
		if (tok_token_text(t, i ? ids[i - 1] : TOK_NONE, ids[i], &s, &len) != SPECD_OK)
			return SPECD_INVAL;
		total += len;
	}
	if (!buf || total >= cap) {
		*len_out = total;
		return SPECD_INVAL;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		tok_token_text(t, i ? ids[i - 1] : TOK_NONE, ids[i], &s, &len);
		memcpy(buf + total, s, len);
		total += len;
	}
	buf[total] = '\0';
	*len_out = total;
	return SPECD_OK;
}

size_t tok_utf8_complete(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *)buf;
	size_t i = len, start, need;

	while (i > 0 && len - i < 3 && (s[i - 1] & 0xc0) == 0x80)
		i--;
	if (i == 0)
		return len;
	start = i - 1;
	if (s[start] >= 0xc2 && s[start] <= 0xdf)
		need = 2;
	else if (s[start] >= 0xe0 && s[start] <= 0xef)
		need = 3;
	else if (s[start] >= 0xf0 && s[start] <= 0xf4)
		need = 4;
	else
		return len;
	if (len - start >= need)
		return len;
	/* Hold back only what could still become a valid character. */
	if (len - start >= 2) {
		unsigned char c = s[start], c1 = s[start + 1];

		if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) ||
		    (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
			return len;
	}
	return start;
}
