/* Byte-level BPE (GPT-2 style: SmolLM2, Qwen2.5): the pre-tokenizer's regular
 * expressions (PCRE2) split a prompt, each split's bytes become symbols of GPT-2's
 * printable byte alphabet, and merges apply by rank. Builds on the vocabulary of
 * tokenizer.c; tok_encode and tok_load_gguf reach this file through tokenizer_int.h. */
#define _GNU_SOURCE /* memmem */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "tokenizer_int.h"


/* The pre-tokenizers of llama.cpp and Hugging Face's tokenizer.json files for the
 * names GGUF's tokenizer.ggml.pre uses; each regex splits every piece the previous
 * one left, matches and the text between them alike becoming pieces. */
#define RE_QWEN2_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_QWEN2_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const struct bpe_pre {
	const char *name;
	const char *re[3];
	bool llama3; /* llama.cpp's Llama 3 type: BOS by default, ignore_merges */
} bpe_pres[] = {
	{"gpt2", {TOK_RE_GPT2}, false},
	{"default", {TOK_RE_GPT2}, false},
	/* SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel's GPT-2 regex. */
	{"smollm", {"\\p{N}", TOK_RE_GPT2}, false},
	{"qwen2", {RE_QWEN2_HEAD "\\p{N}" RE_QWEN2_TAIL}, false},
	{"llama-bpe", {RE_QWEN2_HEAD "\\p{N}{1,3}" RE_QWEN2_TAIL}, true},
	{"llama3", {RE_QWEN2_HEAD "\\p{N}{1,3}" RE_QWEN2_TAIL}, true},
};

bool tok_bpe_pre_llama3(const char *name)
{
	for (size_t i = 0; i < sizeof(bpe_pres) / sizeof(bpe_pres[0]); i++)
		if (strcmp(name, bpe_pres[i].name) == 0)
			return bpe_pres[i].llama3;
	return false;
}

struct bpe_merge {
	uint64_t key; /* (left + 1) << 32 | (right + 1); 0: empty slot */
	int32_t rank;
	int32_t id;   /* the merged piece */
};

struct tok_bpe {
	char pre[32];
	pcre2_code *re[TOK_BPE_MAX_RE];
	int n_re;
	struct bpe_merge *merges; /* open addressing, mask + 1 slots */
	size_t mask;
	int32_t byte_sym[256];    /* byte -> the id of its one-character piece, -1 if none */
	bool ignore_merges;
	char byte_piece[256][2];  /* byte -> its character of the alphabet, in UTF-8 */
	uint8_t byte_piece_len[256];
};

struct bpe_range {
	uint32_t start, len;
};

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the other 68
 * (controls, space, DEL, NBSP, soft hyphen...) for U+0100 onwards in byte order. */
static bool bpe_byte_printable(unsigned b)
{
	return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

static uint32_t bpe_byte_to_cp(unsigned b)
{
	unsigned k = 0;

	if (bpe_byte_printable(b))
		return b;
	for (unsigned c = 0; c < b; c++)
		k += !bpe_byte_printable(c);
	return 256 + k;
}

/* The byte a code point of the alphabet stands for, or -1. */
static int bpe_cp_to_byte(uint32_t cp)
{
	if (cp < 256)
		return bpe_byte_printable(cp) ? (int)cp : -1;
	if (cp >= 256 + 68)
		return -1;
	for (unsigned b = 0, k = 0; b < 256; b++) {
		if (!bpe_byte_printable(b) && k++ == cp - 256)
			return (int)b;
	}
	return -1;
}

static size_t bpe_utf8_put(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xc0 | cp >> 6);
	out[1] = (char)(0x80 | (cp & 0x3f));
	return 2; /* the alphabet stays below U+0800 */
}

size_t tok_bpe_byte_piece(unsigned char b, char out[2])
{
	return bpe_utf8_put(bpe_byte_to_cp(b), out);
}

size_t tok_bpe_piece_text(const char *p, size_t len, char *dst)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t n = 0;

	for (size_t i = 0; i < len;) {
		size_t cl = tok_utf8_char_len(s + i, len - i);
		uint32_t cp = s[i];
		int b;

		if (cl == 2)
			cp = (uint32_t)(s[i] & 0x1f) << 6 | (s[i + 1] & 0x3f);
		b = cl <= 2 ? bpe_cp_to_byte(cp) : -1;
		if (b >= 0) {
			if (dst)
				dst[n] = (char)b;
			n++;
		} else { /* not of the alphabet: the piece's own bytes */
			if (dst)
				memcpy(dst + n, p + i, cl);
			n += cl;
		}
		i += cl;
	}
	return n;
}

static uint64_t bpe_mix(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

static const struct bpe_merge *bpe_find(const struct tok_bpe *b, int32_t l, int32_t r)
{
	uint64_t key = (uint64_t)(uint32_t)(l + 1) << 32 | (uint32_t)(r + 1);
	size_t i = (size_t)bpe_mix(key) & b->mask;

	for (;; i = (i + 1) & b->mask) {
		if (b->merges[i].key == key)
			return &b->merges[i];
		if (b->merges[i].key == 0)
			return NULL;
	}
}

static enum specd_status bpe_add_merges(struct tok *t, struct tok_bpe *b,
					const struct tok_bpe_vocab *v, struct specd_error *err)
{
	size_t slots = 1, longest = 0;
	char *cat = NULL;

	while (slots < 2 * v->n_merges + 2)
		slots *= 2;
	b->merges = specd_calloc(slots, sizeof(*b->merges));
	if (!b->merges)
		return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory for %zu merges",
				    v->n_merges);
	b->mask = slots - 1;
	for (int32_t i = 0; i < t->n; i++)
		longest = t->piece_len[i] > longest ? t->piece_len[i] : longest;
	cat = specd_malloc_array(2 * longest + 1, 1);
	if (!cat)
		return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory");
	for (size_t k = 0; k < v->n_merges; k++) {
		const char *m = v->merges[k];
		size_t len = v->merge_lens ? v->merge_lens[k] : (m ? strlen(m) : 0);
		const char *sp = m ? memchr(m, ' ', len) : NULL;
		int32_t l, r, id;

		if (!sp) {
			specd_free(cat);
			return specd_errorf(err, SPECD_INVAL, "tokenizer: merge %zu has no space",
					    k);
		}
		l = tok_lookup(t, m, (size_t)(sp - m));
		r = tok_lookup(t, sp + 1, len - (size_t)(sp - m) - 1);
		if (l < 0 || r < 0 || len - 1 > 2 * longest)
			continue;
		memcpy(cat, m, (size_t)(sp - m));
		memcpy(cat + (sp - m), sp + 1, len - (size_t)(sp - m) - 1);
		id = tok_lookup(t, cat, len - 1);
		if (id < 0 || bpe_find(b, l, r))
			continue; /* no such piece, or a later duplicate of a merge */
		uint64_t key = (uint64_t)(uint32_t)(l + 1) << 32 | (uint32_t)(r + 1);
		size_t s = (size_t)bpe_mix(key) & b->mask;

		while (b->merges[s].key)
			s = (s + 1) & b->mask;
		b->merges[s] = (struct bpe_merge){.key = key, .rank = (int32_t)k, .id = id};
	}
	specd_free(cat);
	return SPECD_OK;
}

/* Unicode's White_Space: what Hugging Face's tokenizers (Oniguruma), Rust's regex and
 * llama.cpp mean by \s. PCRE2 (10.42) under PCRE2_UCP adds U+180E MONGOLIAN VOWEL
 * SEPARATOR, kept in its \h for Perl's sake though it left White_Space in Unicode 6.3,
 * so a pattern's \s and \S are spelt out with these items before it is compiled. */
#define RE_SPACE_ITEMS "\\t-\\r\\x{85}\\p{Z}"

char *tok_bpe_pattern(const char *re, size_t n, size_t *out_len)
{
	static const char items[] = RE_SPACE_ITEMS;
	size_t cap = n * (sizeof(items) + 3) + 1, o = 0;
	char *out = n < SIZE_MAX / (sizeof(items) + 4) ? specd_malloc_array(cap, 1) : NULL;
	bool in_class = false;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char c = re[i];
		if (c == '\\' && i + 1 < n && re[i + 1] == 'Q') {
			/* \Q...\E: quoted text, copied as it is */
			size_t j = i + 2;
			while (j < n && !(re[j] == '\\' && j + 1 < n && re[j + 1] == 'E'))
				j++;
			j = j < n ? j + 2 : n;
			memcpy(out + o, re + i, j - i);
			o += j - i;
			i = j - 1;
		} else if (c == '\\' && i + 1 < n && (re[i + 1] == 's' ||
							(re[i + 1] == 'S' && !in_class))) {
			/* inside a class the items join it; \S there stays (it cannot be
			 * spelt as items, and no tokenizer's pattern uses it) */
			const char *open = in_class ? "" : re[i + 1] == 's' ? "[" : "[^";
			o += (size_t)sprintf(out + o, "%s%s%s", open, items, in_class ? "" : "]");
			i++;
		} else if (c == '\\' && i + 1 < n) {
			out[o++] = c;
			out[o++] = re[++i];
			if (re[i] == 'c' && i + 1 < n)
				out[o++] = re[++i]; /* \cX: X is the escape's, even a '[' */
		} else if (!in_class && c == '(' && i + 2 < n && re[i + 1] == '?' &&
			   re[i + 2] == '#') {
			/* a comment, (?#...): copied as it is, up to its ')' */
			const char *end = memchr(re + i, ')', n - i);
			size_t j = end ? (size_t)(end - re) + 1 : n;
			memcpy(out + o, re + i, j - i);
			o += j - i;
			i = j - 1;
		} else if (c == '[' && !in_class) {
			in_class = true;
			out[o++] = c;
			if (i + 1 < n && re[i + 1] == '^')
				out[o++] = re[++i];
			if (i + 1 < n && re[i + 1] == ']')
				out[o++] = re[++i]; /* a ']' first is a member */
		} else if (c == '[' && in_class && i + 1 < n && re[i + 1] == ':') {
			/* a POSIX class, [:alpha:], inside a class */
			const char *end = memmem(re + i + 2, n - i - 2, ":]", 2);
			size_t j = end ? (size_t)(end - re) + 2 : n;
			memcpy(out + o, re + i, j - i);
			o += j - i;
			i = j - 1;
		} else {
			if (c == ']' && in_class)
				in_class = false;
			out[o++] = c;
		}
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}

static enum specd_status bpe_compile(struct tok_bpe *b, const char *const *re,
				     const size_t *lens, size_t n, struct specd_error *err)
{
	for (size_t i = 0; i < n && re[i]; i++) {
		int code;
		PCRE2_SIZE off;
		PCRE2_UCHAR msg[160];
		size_t len = 0;
		char *pat = tok_bpe_pattern(re[i], lens ? lens[i] : strlen(re[i]), &len);

		if (!pat)
			return specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory");
		b->re[i] = pcre2_compile((PCRE2_SPTR)pat, len,
					 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code,
					 &off, NULL);
		specd_free(pat);
		if (!b->re[i]) {
			pcre2_get_error_message(code, msg, sizeof(msg));
			return specd_errorf(err, SPECD_INVAL,
					    "tokenizer: pre-tokenizer %s regex %zu: %s at %zu (of "
					    "the regex with \\s spelt out)",
					    b->pre, i, (const char *)msg, (size_t)off);
		}
		b->n_re = (int)i + 1;
		/* JIT is only speed: without it (some platforms) matching is the same. */
		(void)pcre2_jit_compile(b->re[i], PCRE2_JIT_COMPLETE);
	}
	return SPECD_OK;
}

enum specd_status tok_create_bpe(const struct tok_bpe_vocab *v, struct tok **out,
				 struct specd_error *err)
{
	const char *pre_name = v && v->pre ? v->pre : "gpt2";
	const struct bpe_pre *pre = NULL;
	struct tok *t = NULL;
	struct tok_bpe *b;
	enum specd_status st;

	if (!v || (v->n_merges > 0 && !v->merges) || (v->n_pre_regex && !v->pre_regex))
		return specd_errorf(err, SPECD_INVAL, "tokenizer: no vocabulary");
	if (v->n_pre_regex > TOK_BPE_MAX_RE)
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "tokenizer: %zu pre-tokenizer regexes (at most %d)", v->n_pre_regex,
				    TOK_BPE_MAX_RE);
	if (v->n_pre_regex)
		pre_name = v->pre ? v->pre : "custom";
	for (size_t i = 0; i < sizeof(bpe_pres) / sizeof(bpe_pres[0]) && !v->n_pre_regex; i++)
		if (strcmp(pre_name, bpe_pres[i].name) == 0)
			pre = &bpe_pres[i];
	if (!pre && !v->n_pre_regex)
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "tokenizer: pre-tokenizer \"%.40s\" is not supported (qwen2, "
				    "smollm, gpt2, llama-bpe are)", pre_name);

	struct tok_spm_vocab sv = {
		.n = v->n, .pieces = v->pieces, .piece_lens = v->piece_lens, .types = v->types,
		.bos = v->bos, .eos = v->eos, .unk = v->unk, .add_bos = v->add_bos,
	};
	st = tok_build(&sv, true, &t, err);
	if (st != SPECD_OK)
		return st;
	b = specd_calloc(1, sizeof(*b));
	if (!b) {
		st = specd_errorf(err, SPECD_NOMEM, "tokenizer: out of memory");
		goto fail;
	}
	t->bpe = b;
	snprintf(b->pre, sizeof(b->pre), "%s", pre_name);
	b->ignore_merges = v->ignore_merges;
	for (unsigned c = 0; c < 256; c++) {
		b->byte_piece_len[c] = (uint8_t)tok_bpe_byte_piece((unsigned char)c,
								   b->byte_piece[c]);
		b->byte_sym[c] = tok_lookup(t, b->byte_piece[c], b->byte_piece_len[c]);
	}
	if ((st = v->n_pre_regex ? bpe_compile(b, v->pre_regex, v->pre_regex_lens,
						 v->n_pre_regex, err)
				 : bpe_compile(b, pre->re, NULL, 3, err)) != SPECD_OK ||
	    (st = bpe_add_merges(t, b, v, err)) != SPECD_OK)
		goto fail;
	*out = t;
	return SPECD_OK;
fail:
	tok_destroy(t);
	return st;
}

void tok_bpe_destroy(struct tok_bpe *b)
{
	if (!b)
		return;
	for (int i = 0; i < b->n_re; i++)
		pcre2_code_free(b->re[i]);
	specd_free(b->merges);
	specd_free(b);
}

const char *tok_bpe_pre_name(const struct tok_bpe *b)
{
	return b->pre;
}

/* Splits text[r.start, +r.len) by re into out (matches and the gaps between them). */
static enum specd_status bpe_split(const pcre2_code *re, pcre2_match_data *md,
				   const char *text, struct bpe_range r, struct bpe_range *out,
				   size_t *n_out)
{
	PCRE2_SPTR s = (PCRE2_SPTR)(text + r.start);
	size_t off = 0, gap = 0;

	while (off < r.len) {
		int rc = pcre2_match(re, s, r.len, off, 0, md, NULL);
		PCRE2_SIZE *ov;

		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0)
			return SPECD_INTERNAL;
		ov = pcre2_get_ovector_pointer(md);
		if (ov[1] <= ov[0]) { /* an empty match splits nothing: step one character */
			off = ov[0] + tok_utf8_char_len(s + ov[0], r.len - ov[0]);
			continue;
		}
		if (ov[0] > gap)
			out[(*n_out)++] = (struct bpe_range){r.start + (uint32_t)gap,
							     (uint32_t)(ov[0] - gap)};
		out[(*n_out)++] = (struct bpe_range){r.start + (uint32_t)ov[0],
						     (uint32_t)(ov[1] - ov[0])};
		off = gap = ov[1];
	}
	if (gap < r.len)
		out[(*n_out)++] = (struct bpe_range){r.start + (uint32_t)gap,
						     r.len - (uint32_t)gap};
	return SPECD_OK;
}

static void bpe_emit(int32_t *ids, size_t cap, size_t *n, int32_t id)
{
	if (*n < cap)
		ids[*n] = id;
	(*n)++;
}

/* One candidate merge: the pair starting at symbol `left`, valid while both sides
 * still hold the ids it was made from. */
struct bpe_cand {
	int32_t rank;
	int32_t left;
	int32_t lid, rid;
};

/* Whether a leaves the heap before b: lower rank, then the leftmost. */
static bool bpe_cand_before(const struct bpe_cand *a, const struct bpe_cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bpe_push(struct bpe_cand *heap, size_t *n, struct bpe_cand c)
{
	size_t i = (*n)++;

	while (i > 0 && bpe_cand_before(&c, &heap[(i - 1) / 2])) {
		heap[i] = heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	heap[i] = c;
}

static struct bpe_cand bpe_pop(struct bpe_cand *heap, size_t *n)
{
	struct bpe_cand top = heap[0], last = heap[--(*n)];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= *n)
			break;
		if (c + 1 < *n && bpe_cand_before(&heap[c + 1], &heap[c]))
			c++;
		if (!bpe_cand_before(&heap[c], &last))
			break;
		heap[i] = heap[c];
		i = c;
	}
	heap[i] = last;
	return top;
}

struct bpe_ws {
	int32_t *sym, *next, *prev; /* (len) symbol ids and the list of live symbols */
	struct bpe_cand *heap;      /* (3 len): the first pairs, then two per merge */
	char *spelt;                /* (2 len) a split in the byte alphabet (ignore_merges) */
};

static void bpe_try(const struct tok_bpe *b, const struct bpe_ws *w, int32_t l, size_t *nh)
{
	int32_t r = l >= 0 ? w->next[l] : -1;
	const struct bpe_merge *m;

	if (l < 0 || r < 0 || w->sym[l] < 0 || w->sym[r] < 0)
		return;
	m = bpe_find(b, w->sym[l], w->sym[r]);
	if (m)
		bpe_push(w->heap, nh, (struct bpe_cand){m->rank, l, w->sym[l], w->sym[r]});
}

/* Merges the bytes of one split, lowest rank first (leftmost on ties), in O(n log n). */
static void bpe_word(const struct tok *t, const unsigned char *s, size_t len,
		     const struct bpe_ws *w, int32_t *ids, size_t cap, size_t *n)
{
	const struct tok_bpe *b = t->bpe;
	int32_t m = (int32_t)len;
	size_t nh = 0;

	if (b->ignore_merges) {
		size_t sl = 0;
		for (size_t i = 0; i < len; i++) {
			memcpy(w->spelt + sl, b->byte_piece[s[i]], b->byte_piece_len[s[i]]);
			sl += b->byte_piece_len[s[i]];
		}
		int32_t id = tok_lookup(t, w->spelt, sl);
		if (id >= 0 && t->types[id] == TOK_TYPE_NORMAL) {
			bpe_emit(ids, cap, n, id);
			return;
		}
	}
	for (int32_t i = 0; i < m; i++) {
		w->sym[i] = b->byte_sym[s[i]];
		w->prev[i] = i - 1;
		w->next[i] = i + 1 < m ? i + 1 : -1;
	}
	for (int32_t i = 0; i + 1 < m; i++)
		bpe_try(b, w, i, &nh);
	while (nh > 0) {
		struct bpe_cand c = bpe_pop(w->heap, &nh);
		int32_t l = c.left, r = w->next[l];

		/* Stale: the left symbol was merged away (-2) or either side changed. */
		if (w->sym[l] != c.lid || r < 0 || w->sym[r] != c.rid)
			continue;
		w->sym[l] = bpe_find(b, c.lid, c.rid)->id;
		w->sym[r] = -2;
		w->next[l] = w->next[r];
		if (w->next[l] >= 0)
			w->prev[w->next[l]] = l;
		bpe_try(b, w, w->prev[l], &nh);
		bpe_try(b, w, l, &nh);
	}
	/* A byte the vocabulary has no symbol for is dropped, as Hugging Face's BPE without
	 * an unknown token and llama.cpp do; only a real UNKNOWN token stands in for it.
	 * (SmolLM2 lacks bytes such as 0x04 and 0xf1, and its unknown id is the control
	 * token <|endoftext|>, which text must never produce.) */
	bool unk_ok = t->unk >= 0 && t->unk < t->n && t->types[t->unk] == TOK_TYPE_UNKNOWN;
	for (int32_t i = 0; i >= 0 && i < m; i = w->next[i])
		if (w->sym[i] >= 0 || unk_ok)
			bpe_emit(ids, cap, n, w->sym[i] >= 0 ? w->sym[i] : t->unk);
}

enum specd_status tok_bpe_encode(const struct tok *t, const char *text, size_t len,
				 int32_t *ids, size_t cap, size_t *n)
{
	const struct tok_bpe *b = t->bpe;
	struct bpe_range *cur, *nxt, *swap;
	size_t n_cur = 1, n_nxt;
	pcre2_match_data *md;
	struct bpe_ws w;
	void *ws;
	enum specd_status st = SPECD_OK;

	/* Every split holds at least one byte, so len ranges per list suffice; a split's
	 * merge heap holds its first pairs plus two per merge; a byte spells one or two. */
	ws = specd_malloc_array(len, 2 * sizeof(struct bpe_range) + 3 * sizeof(int32_t) +
					     3 * sizeof(struct bpe_cand) + 2);
	md = pcre2_match_data_create(1, NULL);
	if (!ws || !md) {
		st = SPECD_NOMEM;
		goto out;
	}
	w.heap = ws; /* first: the most strictly aligned */
	cur = (struct bpe_range *)(w.heap + 3 * len);
	nxt = cur + len;
	w.sym = (int32_t *)(nxt + len);
	w.next = w.sym + len;
	w.prev = w.next + len;
	w.spelt = (char *)(w.prev + len);
	cur[0] = (struct bpe_range){0, (uint32_t)len};
	for (int k = 0; k < b->n_re; k++) {
		n_nxt = 0;
		for (size_t i = 0; i < n_cur; i++) {
			st = bpe_split(b->re[k], md, text, cur[i], nxt, &n_nxt);
			if (st != SPECD_OK)
				goto out;
		}
		swap = cur;
		cur = nxt;
		nxt = swap;
		n_cur = n_nxt;
	}
	for (size_t i = 0; i < n_cur; i++)
		bpe_word(t, (const unsigned char *)text + cur[i].start, cur[i].len, &w, ids, cap, n);
out:
	pcre2_match_data_free(md);
	specd_free(ws);
	return st;
}
