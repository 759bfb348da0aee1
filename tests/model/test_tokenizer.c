/* model/tokenizer: merges, ties, byte fallback and BOS on an in-memory vocabulary; the
 * heap encoder against a naive one; round trips; streaming text; and stories260K's
 * vocabulary against the ids of the independent Python reference
 * (tests/fixtures/stories260K.json, made by tools/reference/llama_reference.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "test_fixture.h"
#include "test_support.h"

#define SP "\xe2\x96\x81" /* "▁" */

/* ---- an in-memory vocabulary: <unk> <s> </s>, optionally 256 byte tokens, then
 * the given normal pieces with their scores ---- */

struct tiny_piece {
	const char *piece;
	float score;
};

struct tiny_vocab {
	const char *pieces[600];
	float scores[600];
	int32_t types[600];
	char byte_names[256][8];
	size_t n;
	int32_t first_normal;
};

static struct tok *tiny_create(struct tiny_vocab *v, const struct tiny_piece *p, size_t np,
			       bool bytes, bool space_prefix)
{
	struct tok_spm_vocab sv = { 0 };
	struct tok *t = NULL;
	struct specd_error err;
	static const char *const specials[3] = { "<unk>", "<s>", "</s>" };
	static const int32_t special_types[3] = { TOK_TYPE_UNKNOWN, TOK_TYPE_CONTROL,
						  TOK_TYPE_CONTROL };

	memset(v, 0, sizeof(*v));
	for (int i = 0; i < 3; i++) {
		v->pieces[v->n] = specials[i];
		v->types[v->n++] = special_types[i];
	}
	for (int b = 0; bytes && b < 256; b++) {
		snprintf(v->byte_names[b], sizeof(v->byte_names[b]), "<0x%02X>", b);
		v->pieces[v->n] = v->byte_names[b];
		v->types[v->n++] = TOK_TYPE_BYTE;
	}
	v->first_normal = (int32_t)v->n;
	for (size_t i = 0; i < np; i++) {
		v->pieces[v->n] = p[i].piece;
		v->scores[v->n] = p[i].score;
		v->types[v->n++] = TOK_TYPE_NORMAL;
	}
	sv.n = v->n;
	sv.pieces = v->pieces;
	sv.scores = v->scores;
	sv.types = v->types;
	sv.bos = 1;
	sv.eos = 2;
	sv.unk = 0;
	sv.add_bos = true;
	sv.add_space_prefix = space_prefix;
	assert_int_equal(tok_create_spm(&sv, &t, &err), SPECD_OK);
	return t;
}

/* Encodes text and returns the ids as a string of pieces joined by '|'. */
static const char *pieces_of(const struct tok *t, const char *text, bool bos)
{
	static char out[4096];
	int32_t ids[512];
	size_t n = 0, o = 0;

	assert_int_equal(tok_encode(t, text, strlen(text), bos, ids, 512, &n), SPECD_OK);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const char *p = tok_piece(t, ids[i], &len);

		assert_non_null(p);
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? "|" : "", p);
	}
	return out;
}

static void test_tok_tiny__merges_highest_score_first(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece bc_first[] = { { "a", 0 }, { "b", 0 }, { "c", 0 }, { "ab", -2 },
					 { "bc", -1 } };
	struct tiny_piece ab_first[] = { { "a", 0 }, { "b", 0 }, { "c", 0 }, { "ab", -1 },
					 { "bc", -2 } };
	struct tiny_piece chain[] = { { "a", 0 }, { "b", 0 }, { "c", 0 }, { "ab", -3 },
				      { "bc", -1 }, { "abc", -5 } };
	struct tok *t;

	(void)state;
	t = tiny_create(&v, bc_first, 5, true, false);
	assert_string_equal(pieces_of(t, "abc", false), "a|bc");
	tok_destroy(t);
	t = tiny_create(&v, ab_first, 5, true, false);
	assert_string_equal(pieces_of(t, "abc", false), "ab|c");
	tok_destroy(t);
	/* "abc" is reachable only through "a" + "bc", whatever its own score. */
	t = tiny_create(&v, chain, 6, true, false);
	assert_string_equal(pieces_of(t, "abc", false), "abc");
	assert_string_equal(pieces_of(t, "abcabc", false), "abc|abc");
	tok_destroy(t);
}

static void test_tok_tiny__ties_merge_leftmost(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 }, { "aa", -1 } };
	struct tok *t;

	(void)state;
	t = tiny_create(&v, p, 2, true, false);
	assert_string_equal(pieces_of(t, "aaa", false), "aa|a");
	assert_string_equal(pieces_of(t, "aaaaa", false), "aa|aa|a");
	tok_destroy(t);
}

static void test_tok_tiny__unknown_text_falls_back_to_bytes(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 }, { SP, 0 } };
	struct tok *t;
	int32_t ids[16];
	size_t n;

	(void)state;
	t = tiny_create(&v, p, 2, true, false);
	/* "é" is C3 A9; a lone 0xFF is invalid UTF-8 and is its own byte. */
	assert_int_equal(tok_encode(t, "a\xc3\xa9\xff" "a", 5, false, ids, 16, &n), SPECD_OK);
	assert_int_equal(n, 5);
	assert_int_equal(ids[0], v.first_normal);
	assert_int_equal(ids[1], 3 + 0xc3);
	assert_int_equal(ids[2], 3 + 0xa9);
	assert_int_equal(ids[3], 3 + 0xff);
	assert_int_equal(ids[4], v.first_normal);
	assert_int_equal(tok_token_type(t, ids[1]), TOK_TYPE_BYTE);
	/* Text spelling a byte or control token stays text. */
	assert_string_equal(pieces_of(t, "<s>", false), "<0x3C>|<0x73>|<0x3E>");
	tok_destroy(t);
}

static void test_tok_tiny__no_byte_tokens_gives_unk(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 } };
	struct tok *t;
	int32_t ids[8];
	size_t n;

	(void)state;
	t = tiny_create(&v, p, 1, false, false);
	assert_int_equal(tok_encode(t, "aza", 3, false, ids, 8, &n), SPECD_OK);
	assert_int_equal(n, 3);
	assert_int_equal(ids[1], tok_unk(t));
	tok_destroy(t);
}

static void test_tok_tiny__bos_and_space_prefix(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 }, { "b", 0 }, { SP, -3 }, { SP "a", -1 } };
	struct tok *t;
	int32_t ids[16];
	size_t n;
	char buf[64];

	(void)state;
	t = tiny_create(&v, p, 4, true, true);
	assert_string_equal(pieces_of(t, "a b", true), "<s>|" SP "a|" SP "|b");
	assert_string_equal(pieces_of(t, "", true), "<s>");
	assert_string_equal(pieces_of(t, "", false), "");
	assert_string_equal(pieces_of(t, " a", false), SP "|" SP "a");
	/* BOS and EOS decode to nothing; the prefixed space is dropped after BOS only. */
	assert_int_equal(tok_encode(t, "a b", 3, true, ids, 16, &n), SPECD_OK);
	ids[n++] = tok_eos(t);
	assert_int_equal(tok_decode(t, ids, n, buf, sizeof(buf), &n), SPECD_OK);
	assert_string_equal(buf, "a b");
	ids[0] = v.first_normal + 3; /* "▁a" */
	ids[1] = v.first_normal + 3;
	assert_int_equal(tok_decode(t, ids, 2, buf, sizeof(buf), &n), SPECD_OK);
	assert_string_equal(buf, "a a");
	tok_destroy(t);
}

static void test_tok_tiny__small_buffers_report_needed_size(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 } };
	struct tok *t;
	int32_t ids[4] = { 0 };
	size_t n = 0;
	char buf[4];

	(void)state;
	t = tiny_create(&v, p, 1, true, false);
	assert_int_equal(tok_encode(t, "aaaaa", 5, true, ids, 4, &n), SPECD_INVAL);
	assert_int_equal(n, 6);
	assert_int_equal(tok_encode(t, "aaaaa", 5, true, NULL, 0, &n), SPECD_INVAL);
	assert_int_equal(n, 6);
	assert_true(tok_encode_bound(5, true) >= 6);
	ids[0] = ids[1] = ids[2] = ids[3] = v.first_normal;
	n = 0;
	assert_int_equal(tok_decode(t, ids, 4, buf, 4, &n), SPECD_INVAL); /* no room for NUL */
	assert_int_equal(n, 4);
	ids[0] = 9999;
	assert_int_equal(tok_decode(t, ids, 1, buf, 4, &n), SPECD_INVAL);
	assert_int_equal(tok_token_text(t, TOK_NONE, -1, &(const char *){ NULL }, &n),
			 SPECD_INVAL);
	assert_null(tok_piece(t, 9999, NULL));
	assert_int_equal(tok_token_type(t, -5), TOK_TYPE_COUNT);
	tok_destroy(t);
}

static void test_tok_create__rejects_bad_vocab(void **state)
{
	const char *pieces[3] = { "<unk>", "<s>", "</s>" };
	int32_t types[3] = { 2, 3, 9 };
	struct tok_spm_vocab v = { .n = 3, .pieces = pieces, .bos = 1, .eos = 2, .unk = 0 };
	struct tok *t = NULL;
	struct specd_error err;

	(void)state;
	v.bos = 3;
	assert_int_equal(tok_create_spm(&v, &t, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "bos"));
	v.bos = 1;
	v.types = types;
	assert_int_equal(tok_create_spm(&v, &t, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "type 9"));
	v.n = 0;
	assert_int_equal(tok_create_spm(&v, &t, &err), SPECD_INVAL);
	assert_null(t);
}

static void test_tok_create__nomem_paths_clean_up(void **state)
{
	struct tiny_vocab v;
	struct tiny_piece p[] = { { "a", 0 } };
	struct tok *ref = tiny_create(&v, p, 1, true, true);
	struct tok_spm_vocab sv = { .n = v.n, .pieces = v.pieces, .scores = v.scores,
				    .types = v.types, .bos = 1, .eos = 2, .unk = 0 };
	int fails = 0;

	(void)state;
	tok_destroy(ref);
	for (long k = 1; k < 30; k++) {
		struct tok *t = NULL;
		enum specd_status st;

		specd_alloc_fail_after(k);
		st = tok_create_spm(&sv, &t, NULL);
		specd_alloc_fail_reset();
		if (st == SPECD_OK) {
			/* encode's workspace is one allocation too */
			int32_t ids[8];
			size_t n;

			specd_alloc_fail_after(1);
			assert_int_equal(tok_encode(t, "aa", 2, false, ids, 8, &n), SPECD_NOMEM);
			specd_alloc_fail_reset();
			tok_destroy(t);
			break;
		}
		assert_int_equal(st, SPECD_NOMEM);
		assert_null(t);
		fails++;
	}
	assert_true(fails > 0);
}

/* ---- the naive O(n^2) encoder, as the definition the heap version must match ---- */

static size_t naive_encode(const struct tok *t, const char *text, size_t len, int32_t *ids)
{
	char norm[4096];
	size_t start[1024], slen[1024], ns = 0, nl = 0, n = 0;
	int32_t vocab = tok_vocab_size(t);

	memcpy(norm, SP, 3);
	nl = 3;
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(norm + nl, SP, 3);
			nl += 3;
		} else {
			norm[nl++] = text[i];
		}
	}
	/* Every test string below is valid UTF-8: split by lead bytes. */
	for (size_t o = 0; o < nl;) {
		unsigned char c = (unsigned char)norm[o];
		size_t cl = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;

		start[ns] = o;
		slen[ns++] = cl;
		o += cl;
	}
	for (;;) {
		float best = 0;
		size_t at = SIZE_MAX;

		for (size_t i = 0; i + 1 < ns; i++) {
			for (int32_t id = 0; id < vocab; id++) {
				size_t pl;
				const char *p = tok_piece(t, id, &pl);
				enum tok_type ty = tok_token_type(t, id);

				if (ty != TOK_TYPE_NORMAL || pl != slen[i] + slen[i + 1] ||
				    memcmp(p, norm + start[i], pl) != 0)
					continue;
				if (at == SIZE_MAX || tok_score(t, id) > best) {
					best = tok_score(t, id);
					at = i;
				}
				break;
			}
		}
		if (at == SIZE_MAX)
			break;
		slen[at] += slen[at + 1];
		memmove(&start[at + 1], &start[at + 2], (ns - at - 2) * sizeof(start[0]));
		memmove(&slen[at + 1], &slen[at + 2], (ns - at - 2) * sizeof(slen[0]));
		ns--;
	}
	for (size_t i = 0; i < ns; i++) {
		int32_t found = -1;

		for (int32_t id = 0; id < vocab && found < 0; id++) {
			size_t pl;
			const char *p = tok_piece(t, id, &pl);

			if (tok_token_type(t, id) == TOK_TYPE_NORMAL && pl == slen[i] &&
			    memcmp(p, norm + start[i], pl) == 0)
				found = id;
		}
		if (found >= 0) {
			ids[n++] = found;
		} else {
			for (size_t k = 0; k < slen[i]; k++)
				ids[n++] = 3 + (unsigned char)norm[start[i] + k];
		}
	}
	return n;
}

/* ---- stories260K.gguf and its fixture ---- */

struct stories {
	struct gguf_file *f;
	struct tok *t;
	yaml_document_t doc;
	bool have_doc;
};






static int setup_stories(void **state)
{
	struct stories *s = calloc(1, sizeof(*s));
	char path[1024];
	struct specd_error err;

	if (!s)
		return -1;
	*state = s;
	if (!ts_model_path("stories260K.gguf", path, sizeof(path)))
		return 0;
	if (gguf_open(path, &s->f, &err) != SPECD_OK) {
		fprintf(stderr, "gguf_open: %s\n", err.msg);
		return -1;
	}
	if (tok_load_gguf(s->f, &s->t, &err) != SPECD_OK) {
		fprintf(stderr, "tok_load_gguf: %s\n", err.msg);
		return -1;
	}
	s->have_doc = ts_fx_load("stories260K", &s->doc);
	return s->have_doc ? 0 : -1;
}

static int teardown_stories(void **state)
{
	struct stories *s = *state;

	if (s->have_doc)
		yaml_document_delete(&s->doc);
	tok_destroy(s->t);
	gguf_close(s->f);
	free(s);
	return 0;
}

#define NEED_STORIES(s)                                                   \
	do {                                                              \
		if (!(s)->t) {                                            \
			skip();                                           \
		}                                                         \
	} while (0)

static void test_tok_stories__vocab_facts(void **state)
{
	struct stories *s = *state;
	size_t len;

	NEED_STORIES(s);
	assert_int_equal(tok_vocab_size(s->t), 512);
	assert_int_equal(tok_bos(s->t), 1);
	assert_int_equal(tok_eos(s->t), 2);
	assert_int_equal(tok_unk(s->t), 0);
	assert_true(tok_add_bos(s->t));
	assert_string_equal(tok_piece(s->t, 259, &len), SP "t");
	assert_int_equal(len, 4);
	assert_string_equal(tok_piece(s->t, 3 + 0x41, NULL), "<0x41>");
	assert_int_equal(tok_token_type(s->t, 1), TOK_TYPE_CONTROL);
	assert_int_equal(tok_token_type(s->t, 3), TOK_TYPE_BYTE);
}

/* Ids of every tokenizer string and every greedy prompt match the Python reference. */
static void test_tok_stories__matches_reference_ids(void **state)
{
	struct stories *s = *state;
	yaml_node_t *root, *cases, *prompts;
	int32_t want[1024], got[1024];
	size_t checked = 0;

	NEED_STORIES(s);
	root = yaml_document_get_root_node(&s->doc);
	cases = ts_fx_get(&s->doc, ts_fx_get(&s->doc, root, "tokenizer"), "cases");
	prompts = ts_fx_get(&s->doc, ts_fx_get(&s->doc, root, "greedy"), "prompts");
	assert_true(ts_fx_len(cases) >= 25);
	for (int pass = 0; pass < 2; pass++) {
		yaml_node_t *list = pass ? prompts : cases;

		for (size_t i = 0; i < ts_fx_len(list); i++) {
			yaml_node_t *c = ts_fx_at(&s->doc, list, i);
			yaml_node_t *text = ts_fx_get(&s->doc, c, "text");
			size_t nw = ts_fx_ids(&s->doc, ts_fx_get(&s->doc, c, "ids"), want, 1024), ng = 0;
			char buf[4096];
			size_t blen;

			assert_non_null(text);
			assert_int_equal(tok_encode(s->t, (char *)text->data.scalar.value,
						    text->data.scalar.length, pass == 1, got, 1024,
						    &ng), SPECD_OK);
			if (ng != nw || memcmp(got, want, nw * sizeof(*got)) != 0)
				fail_msg("ids differ for \"%s\"", text->data.scalar.value);
			assert_int_equal(tok_decode(s->t, got, ng, buf, sizeof(buf), &blen),
					 SPECD_OK);
			assert_int_equal(blen, text->data.scalar.length);
			assert_memory_equal(buf, text->data.scalar.value, blen);
			checked++;
		}
	}
	assert_true(checked >= 30);
}

static void check_round_trip(const struct tok *t, const char *text, size_t len)
{
	size_t cap = tok_encode_bound(len, true), n, blen;
	int32_t *ids = malloc(cap * sizeof(*ids));
	char *buf = malloc(len + 1);
	size_t off = 0;

	assert_non_null(ids);
	assert_non_null(buf);
	for (int bos = 0; bos < 2; bos++) {
		assert_int_equal(tok_encode(t, text, len, bos, ids, cap, &n), SPECD_OK);
		assert_int_equal(tok_decode(t, ids, n, buf, len + 1, &blen), SPECD_OK);
		assert_int_equal(blen, len);
		assert_memory_equal(buf, text, len);
	}
	/* Streaming: the per-token texts concatenate to the same text. */
	for (size_t i = 0; i < n; i++) {
		const char *p;
		size_t pl;

		assert_int_equal(tok_token_text(t, i ? ids[i - 1] : TOK_NONE, ids[i], &p, &pl),
				 SPECD_OK);
		assert_true(off + pl <= len);
		assert_memory_equal(text + off, p, pl);
		off += pl;
	}
	assert_int_equal(off, len);
	free(ids);
	free(buf);
}

static void test_tok_stories__round_trips(void **state)
{
	struct stories *s = *state;
	static const char *const texts[] = {
		"Hello world", "", " ", "  ", "\t\n\r", "a  b   c", "  lead and trail  ",
		"caf\xc3\xa9 na\xc3\xafve", "\xe4\xbd\xa0\xe5\xa5\xbd", "\xf0\x9f\x98\x80\xf0\x9f\x90\xb6",
		"The quick brown fox jumps over the lazy dog. 0123456789 !@#$%^&*()",
		"\xff\xfe invalid \xc3 bytes \xe2\x82 cut \xed\xa0\x80 surrogate \xc0\xaf overlong",
		"\xf0\x9f\x98", "end with lead \xe4",
	};

	NEED_STORIES(s);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		check_round_trip(s->t, texts[i], strlen(texts[i]));
	check_round_trip(s->t, "nul\0inside", 10);
}

/* Random byte strings (fixed seed) round-trip and never crash; ones made of common
 * pieces agree with the naive encoder. */
static void test_tok_stories__random_text_round_trips_and_matches_naive(void **state)
{
	struct stories *s = *state;
	static const char *const words[] = { " ", "the", "a", "Lily", " dog", "ran", ".",
					     "\xc3\xa9", "\xf0\x9f\x98\x80", "was", "happy", "x",
					     "  ", "ing", "ed", "\n", "q", "Once" };
	uint64_t x = 12345;
	char text[512];

	NEED_STORIES(s);
	for (int round = 0; round < 300; round++) {
		size_t len = 0;
		int32_t a[2048], b[2048];
		size_t na, nb;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		len = (size_t)(x >> 33) % 200;
		for (size_t i = 0; i < len; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			text[i] = (char)(x >> 56);
			/* "▁" itself would decode as a space: the one text that cannot return */
			if (i >= 2 && memcmp(text + i - 2, SP, 3) == 0)
				text[i] = 'z';
		}
		check_round_trip(s->t, text, len);
		if (round >= 100)
			continue; /* the naive encoder is slow */

		len = 0;
		for (int w = 0; w < 40; w++) {
			const char *wd;

			x = x * 6364136223846793005ull + 1442695040888963407ull;
			wd = words[(x >> 33) % (sizeof(words) / sizeof(words[0]))];
			memcpy(text + len, wd, strlen(wd));
			len += strlen(wd);
		}
		assert_int_equal(tok_encode(s->t, text, len, false, a, 2048, &na), SPECD_OK);
		nb = naive_encode(s->t, text, len, b);
		assert_int_equal(na, nb);
		assert_memory_equal(a, b, na * sizeof(a[0]));
		check_round_trip(s->t, text, len);
	}
}

static void test_tok_stories__long_input(void **state)
{
	struct stories *s = *state;
	const char *unit = "Once upon a time, there was a little girl named Lily. ";
	size_t ul = strlen(unit), reps = 4000, len = ul * reps;

	NEED_STORIES(s);
	char *text = malloc(len);
	assert_non_null(text);
	for (size_t i = 0; i < reps; i++)
		memcpy(text + i * ul, unit, ul);
	check_round_trip(s->t, text, len);
	free(text);
}

static void test_tok_utf8_complete__holds_back_partial_characters(void **state)
{
	(void)state;
	assert_int_equal(tok_utf8_complete("abc", 3), 3);
	assert_int_equal(tok_utf8_complete("", 0), 0);
	assert_int_equal(tok_utf8_complete("a\xc3", 2), 1);
	assert_int_equal(tok_utf8_complete("a\xc3\xa9", 3), 3);
	assert_int_equal(tok_utf8_complete("a\xf0\x9f\x98", 4), 1);
	assert_int_equal(tok_utf8_complete("a\xf0\x9f\x98\x80", 5), 5);
	assert_int_equal(tok_utf8_complete("a\xe4\xbd", 3), 1);
	/* never completable: sent as is */
	assert_int_equal(tok_utf8_complete("a\xff", 2), 2);
	assert_int_equal(tok_utf8_complete("a\x80\x80\x80\x80", 5), 5);
	assert_int_equal(tok_utf8_complete("a\xed\xa0", 3), 3);
	assert_int_equal(tok_utf8_complete("a\xc0", 2), 2);
}

/* A GGUF file whose tokenizer is not "llama", and one whose arrays disagree. */
static void test_tok_load_gguf__rejects_other_models_and_bad_arrays(void **state)
{
	char dir[512], path[600];
	const char *tokens[3] = { "<unk>", "<s>", "</s>" };
	float scores[2] = { 0, 0 };
	struct gguf_writer *w;
	struct gguf_file *f;
	struct tok *t = NULL;
	struct specd_error err;

	(void)state;
	assert_true(ts_mkdtemp(dir, sizeof(dir)));
	snprintf(path, sizeof(path), "%s/tok.gguf", dir);
	for (int kind = 0; kind < 2; kind++) {
		assert_int_equal(gguf_writer_create(&w), SPECD_OK);
		assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model",
						     kind == 0 ? "bert" : "llama"), SPECD_OK);
		assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 3),
				 SPECD_OK);
		assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_F32,
						     scores, 2), SPECD_OK);
		assert_int_equal(gguf_writer_write(w, path, 3, &err), SPECD_OK);
		gguf_writer_destroy(w);
		assert_int_equal(gguf_open(path, &f, &err), SPECD_OK);
		assert_int_equal(tok_load_gguf(f, &t, &err),
				 kind == 0 ? SPECD_UNSUPPORTED : SPECD_INVAL);
		assert_non_null(strstr(err.msg, kind == 0 ? "bert" : "tokenizer.ggml.scores"));
		assert_null(t);
		gguf_close(f);
	}
	ts_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tok_tiny__merges_highest_score_first),
		cmocka_unit_test(test_tok_tiny__ties_merge_leftmost),
		cmocka_unit_test(test_tok_tiny__unknown_text_falls_back_to_bytes),
		cmocka_unit_test(test_tok_tiny__no_byte_tokens_gives_unk),
		cmocka_unit_test(test_tok_tiny__bos_and_space_prefix),
		cmocka_unit_test(test_tok_tiny__small_buffers_report_needed_size),
		cmocka_unit_test(test_tok_create__rejects_bad_vocab),
		cmocka_unit_test(test_tok_create__nomem_paths_clean_up),
		cmocka_unit_test(test_tok_utf8_complete__holds_back_partial_characters),
		cmocka_unit_test(test_tok_load_gguf__rejects_other_models_and_bad_arrays),
	};
	const struct CMUnitTest stories_tests[] = {
		cmocka_unit_test(test_tok_stories__vocab_facts),
		cmocka_unit_test(test_tok_stories__matches_reference_ids),
		cmocka_unit_test(test_tok_stories__round_trips),
		cmocka_unit_test(test_tok_stories__random_text_round_trips_and_matches_naive),
		cmocka_unit_test(test_tok_stories__long_input),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);

	failed += cmocka_run_group_tests_name("stories260K", stories_tests, setup_stories,
					      teardown_stories);
	return failed;
}
