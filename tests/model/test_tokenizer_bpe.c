/* Byte-level BPE tokenizer and ChatML prompts: merge order, pre-tokenizer splits and
 * special tokens on a tiny vocabulary, then the real vocabularies (SmolLM2, Qwen2.5)
 * against Hugging Face tokenizers' ids for 200 hard strings and two chats, from the
 * fixtures tools/reference/real_reference.py wrote. Real models absent: those skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "model/chat.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "model/tokenizer.h"
#include "model/tokenizer_int.h"
#include "test_fixture.h"
#include "test_support.h"

/* ---- a tiny vocabulary: the bytes a, b, c, space (Ġ), newline (Ċ), 1, 2, merges ---- */

static const char *const tiny_pieces[] = {
	"<|end|>", "a", "b", "c", "\xc4\xa0" /* Ġ */, "\xc4\x8a" /* Ċ */, "1", "2",
	"ab", "bc", "abc", "\xc4\xa0" "a", "<|im_start|>", "<|im_end|>", "user", "u", "s", "e",
	"r", "us", "er", "user", "\xc3\xa9" /* é: byte 0xe9 */, "\xc3\x83" /* Ã: byte 0xc3 */,
	"\xc2\xa9" /* ©: byte 0xa9 */, "<ab>" /* 25: an added token that is not special */,
};
static const int32_t tiny_types[] = {3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 1, 1, 1, 1,
				     1, 1, 1, 1, 1, 1, 1, 4};
/* rank = index: "b c" before "a b", so "abc" -> a + bc, then no "a bc" merge. */
static const char *const tiny_merges[] = {
	"b c", "a b", "\xc4\xa0 a", "u s", "e r", "us er", "ab c",
};

static struct tok *tiny_create_with(const char *pre, bool ignore_merges)
{
	struct tok_bpe_vocab v = {
		.n = sizeof(tiny_pieces) / sizeof(tiny_pieces[0]),
		.pieces = tiny_pieces,
		.types = tiny_types,
		.n_merges = sizeof(tiny_merges) / sizeof(tiny_merges[0]),
		.merges = tiny_merges,
		.pre = pre,
		.bos = 0, .eos = 13, .unk = 0,
		.ignore_merges = ignore_merges,
	};
	struct tok *t = NULL;
	struct specd_error err;
	assert_int_equal(tok_create_bpe(&v, &t, &err), SPECD_OK);
	return t;
}

static struct tok *tiny_create(const char *pre)
{
	return tiny_create_with(pre, false);
}

static size_t enc(const struct tok *t, const char *s, bool special, int32_t *ids, size_t cap)
{
	size_t n = 0;
	enum specd_status st = special ? tok_encode_special(t, s, strlen(s), false, ids, cap, &n)
				       : tok_encode(t, s, strlen(s), false, ids, cap, &n);
	assert_int_equal(st, SPECD_OK);
	return n;
}

static void test_bpe_tiny__merges_by_rank(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	int32_t ids[16];

	/* "abc": b+c (rank 0) first, then a + bc has no merge: [a, bc] */
	assert_int_equal(enc(t, "abc", false, ids, 16), 2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 9);
	/* "ab": [ab] */
	assert_int_equal(enc(t, "ab", false, ids, 16), 1);
	assert_int_equal(ids[0], 8);
	/* "user": u+s, e+r, us+er */
	assert_int_equal(enc(t, "user", false, ids, 16), 1);
	assert_int_equal(ids[0], 14); /* the first of the two "user" pieces */
	assert_true(tok_is_bpe(t));
	assert_string_equal(tok_pre_name(t), "gpt2");
	tok_destroy(t);
}

/* tok_encode of s (no BOS) must give exactly want[0..n). */
static void expect_ids(const struct tok *t, const char *s, const int32_t *want, size_t n)
{
	int32_t ids[16];
	assert_int_equal(enc(t, s, false, ids, 16), n);
	assert_memory_equal(ids, want, n * sizeof(*want));
}

/* ignore_merges (Llama 3): a split the vocabulary spells whole is that piece, where the
 * merges make [a, bc] of "abc"; a split that is no piece still merges. */
static void test_bpe_tiny__ignore_merges_takes_whole_pieces(void **state)
{
	(void)state;
	struct tok *t = tiny_create_with("llama-bpe", true);

	expect_ids(t, "abc", (const int32_t[]){10}, 1);
	expect_ids(t, "abca", (const int32_t[]){1, 9, 1}, 3); /* no "abca": b+c, then none */
	expect_ids(t, " a", (const int32_t[]){11}, 1); /* "Ġa" whole, as its merge makes it */
	tok_destroy(t);
}

/* Added tokens that are not special (USER_DEFINED) are split out of any text, as Hugging
 * Face and llama.cpp do; control tokens only on request. */
static void test_bpe_tiny__user_defined_pieces_split_out_of_text(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	int32_t ids[16];
	size_t need = 0;

	expect_ids(t, "a<ab>b", (const int32_t[]){1, 25, 2}, 3);
	expect_ids(t, "<ab><ab>", (const int32_t[]){25, 25}, 2);
	/* beside a control token's text, which stays text (no 12 among the ids) */
	size_t n = enc(t, "<|im_start|><ab>", false, ids, 16);
	assert_true(n > 2);
	assert_int_equal(ids[n - 1], 25);
	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(ids[i], 12);
	/* BOS first; too small a buffer reports the size needed */
	assert_int_equal(tok_encode(t, "ab<ab>ab", 8, true, ids, 2, &need), SPECD_INVAL);
	assert_int_equal(need, 4);
	assert_int_equal(tok_encode(t, "ab<ab>ab", 8, true, ids, 16, &need), SPECD_OK);
	assert_int_equal(need, 4);
	assert_int_equal(ids[0], 0);
	assert_int_equal(ids[2], 25);
	tok_destroy(t);
}

/* A GGUF vocabulary of llama.cpp's Llama 3 pre-tokenizer: BOS by default and
 * ignore_merges, as llama.cpp loads it; add_bos_token still says otherwise, and the
 * Hugging Face view's key sets ignore_merges for any pre-tokenizer. */
static struct tok *tiny_gguf(const char *pre, int add_bos, bool ignore_key)
{
	struct gguf_writer *w = NULL;
	size_t n = sizeof(tiny_pieces) / sizeof(tiny_pieces[0]);
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", pre), SPECD_OK);
	assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tiny_pieces, n),
			 SPECD_OK);
	assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_I32,
					     tiny_types, n), SPECD_OK);
	assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", tiny_merges,
						 sizeof(tiny_merges) / sizeof(tiny_merges[0])),
			 SPECD_OK);
	assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 12), SPECD_OK);
	if (add_bos >= 0)
		assert_int_equal(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos),
				 SPECD_OK);
	if (ignore_key)
		assert_int_equal(gguf_writer_set_bool(w, MODEL_KEY_IGNORE_MERGES, true), SPECD_OK);
	void *image = NULL;
	size_t size = 0;
	assert_int_equal(gguf_writer_image(w, 3, &image, &size), SPECD_OK);
	gguf_writer_destroy(w);
	struct gguf_file *f = NULL;
	struct tok *t = NULL;
	struct specd_error err;
	assert_int_equal(gguf_open_memory(image, size, &f, &err), SPECD_OK);
	assert_int_equal(tok_load_gguf(f, &t, &err), SPECD_OK);
	gguf_close(f);
	specd_free(image);
	return t;
}

static void test_bpe_gguf__llama3_pre_adds_bos_and_ignores_merges(void **state)
{
	(void)state;
	static const int32_t whole[] = {10}, merged[] = {1, 9};
	struct tok *t = tiny_gguf("llama-bpe", -1, false);
	assert_true(tok_add_bos(t));
	assert_int_equal(tok_bos(t), 12);
	expect_ids(t, "abc", whole, 1);
	tok_destroy(t);

	t = tiny_gguf("llama3", 0, false); /* the file's flag wins */
	assert_false(tok_add_bos(t));
	expect_ids(t, "abc", whole, 1);
	tok_destroy(t);

	t = tiny_gguf("qwen2", -1, false); /* others: no BOS, merges as ranked */
	assert_false(tok_add_bos(t));
	expect_ids(t, "abc", merged, 2);
	tok_destroy(t);

	t = tiny_gguf("qwen2", -1, true); /* MODEL_KEY_IGNORE_MERGES */
	expect_ids(t, "abc", whole, 1);
	tok_destroy(t);
}

static void test_bpe_tiny__pre_tokenizer_splits_words(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	int32_t ids[16];

	/* " a ab": GPT-2 splits " a", " ab" -> [Ġa] [Ġ, ab]: " ab" has no Ġ+ab merge */
	assert_int_equal(enc(t, " a ab", false, ids, 16), 3);
	assert_int_equal(ids[0], 11);
	assert_int_equal(ids[1], 4);
	assert_int_equal(ids[2], 8);
	/* "ab12": letters and digits split apart ("12" is one GPT-2 split, no merge) */
	assert_int_equal(enc(t, "ab12", false, ids, 16), 3);
	assert_int_equal(ids[0], 8);
	assert_int_equal(ids[1], 6);
	assert_int_equal(ids[2], 7);
	tok_destroy(t);
}

static void test_bpe_tiny__bytes_map_to_the_gpt2_alphabet(void **state)
{
	(void)state;
	struct tok *t = tiny_create("qwen2");
	int32_t ids[16];
	char buf[32];
	size_t len;

	/* "é" is bytes c3 a9: symbols Ã and © */
	assert_int_equal(enc(t, "\xc3\xa9", false, ids, 16), 2);
	assert_int_equal(ids[0], 23);
	assert_int_equal(ids[1], 24);
	assert_int_equal(tok_decode(t, ids, 2, buf, sizeof(buf), &len), SPECD_OK);
	assert_string_equal(buf, "\xc3\xa9");
	/* the piece "é" (one symbol, code point U+00E9) decodes to the byte e9 */
	ids[0] = 22;
	assert_int_equal(tok_decode(t, ids, 1, buf, sizeof(buf), &len), SPECD_OK);
	assert_int_equal(len, 1);
	assert_int_equal((unsigned char)buf[0], 0xe9);
	/* spaces and newlines: Ġ and Ċ decode to " " and "\n"; a control token to "" */
	ids[0] = 4;
	ids[1] = 5;
	ids[2] = 12;
	assert_int_equal(tok_decode(t, ids, 3, buf, sizeof(buf), &len), SPECD_OK);
	assert_string_equal(buf, " \n");
	tok_destroy(t);
}

/* A byte with no symbol in the vocabulary (0x04 here, as in SmolLM2's) is dropped: the
 * unknown id is a control token, which text must never produce. */
static void test_bpe_tiny__byte_without_a_symbol_is_dropped(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	int32_t ids[16];

	assert_int_equal(enc(t, "a\x04" "b\x04", false, ids, 16), 2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 2);
	tok_destroy(t);
}

/* The control tokens spelled like end-of-generation tokens end a generation beside the
 * EOS: <|end|> here; <|im_start|> and normal tokens do not. */
/* \s means Unicode's White_Space, as in Hugging Face's tokenizers and llama.cpp: the
 * patterns are compiled with it spelt out, since PCRE2's \s also takes U+180E. */
static void expect_pattern(const char *re, const char *want)
{
	size_t len = 0;
	char *got = tok_bpe_pattern(re, strlen(re), &len);
	assert_non_null(got);
	assert_int_equal(len, strlen(got));
	assert_string_equal(got, want);
	specd_free(got);
}

#define WS "\\t-\\r\\x{85}\\p{Z}"

static void test_bpe_tiny__white_space_spelt_out(void **state)
{
	(void)state;
	expect_pattern("\\s+(?!\\S)|\\s+", "[" WS "]+(?![^" WS "])|[" WS "]+");
	expect_pattern(" ?[^\\s\\p{L}\\p{N}]+", " ?[^" WS "\\p{L}\\p{N}]+");
	expect_pattern("\\\\s\\Q\\s\\E\\s", "\\\\s\\Q\\s\\E[" WS "]");
	expect_pattern("[]\\s][[:alpha:]\\s]x", "[]" WS "][[:alpha:]" WS "]x");
	expect_pattern("[\\S]\\x{5B}\\s", "[\\S]\\x{5B}[" WS "]");
	/* a '[' that opens no class: the argument of \c, inside a comment */
	expect_pattern("\\c[\\s+", "\\c[[" WS "]+");
	expect_pattern("(?#[)\\s", "(?#[)[" WS "]");
}

/* " " + U+180E before a letter is one GPT-2 piece (U+180E is neither space nor letter)
 * and merges whole; with PCRE2's own \s it split into " " and U+180E. */
static void test_bpe_tiny__space_before_u180e_is_one_piece(void **state)
{
	(void)state;
	char sp[2], b0[2], b1[2], b2[2], m1[8], m2[16], m3[24], r1[16], r2[24], r3[32];
	size_t n_sp = tok_bpe_byte_piece(' ', sp), n0 = tok_bpe_byte_piece(0xe1, b0),
	       n1 = tok_bpe_byte_piece(0xa0, b1), n2 = tok_bpe_byte_piece(0x8e, b2);
	snprintf(m1, sizeof(m1), "%.*s%.*s", (int)n_sp, sp, (int)n0, b0);
	snprintf(m2, sizeof(m2), "%s%.*s", m1, (int)n1, b1);
	snprintf(m3, sizeof(m3), "%s%.*s", m2, (int)n2, b2);
	snprintf(r1, sizeof(r1), "%.*s %.*s", (int)n_sp, sp, (int)n0, b0);
	snprintf(r2, sizeof(r2), "%s %.*s", m1, (int)n1, b1);
	snprintf(r3, sizeof(r3), "%s %.*s", m2, (int)n2, b2);
	char p0[4], p1[4], p2[4], p3[4];
	snprintf(p0, sizeof(p0), "%.*s", (int)n_sp, sp);
	snprintf(p1, sizeof(p1), "%.*s", (int)n0, b0);
	snprintf(p2, sizeof(p2), "%.*s", (int)n1, b1);
	snprintf(p3, sizeof(p3), "%.*s", (int)n2, b2);
	const char *pieces[] = {"<|end|>", p0, p1, p2, p3, m1, m2, m3};
	const char *merges[] = {r1, r2, r3};
	struct tok_bpe_vocab v = {.n = 8, .pieces = pieces, .n_merges = 3, .merges = merges,
				  .pre = "gpt2", .bos = 0, .eos = 0, .unk = 0};
	struct tok *t = NULL;
	struct specd_error err;
	assert_int_equal(tok_create_bpe(&v, &t, &err), SPECD_OK);
	int32_t ids[8];
	/* (the "z" after it, which has no symbol here, is dropped) */
	assert_int_equal(enc(t, " \xe1\xa0\x8ez", false, ids, 8), 1);
	assert_int_equal(ids[0], 7);
	/* after U+3000, a space by any definition (its bytes have no symbols here, so
	 * they are dropped), the space goes with U+180E as before */
	assert_int_equal(enc(t, "\xe3\x80\x80 \xe1\xa0\x8ez", false, ids, 8), 1);
	assert_int_equal(ids[0], 7);
	tok_destroy(t);
}

static void test_bpe_tiny__end_ids_beside_the_eos(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	const int32_t *ids = NULL;

	assert_int_equal(tok_end_ids(t, &ids), 1);
	assert_int_equal(ids[0], 0);
	assert_true(tok_is_end(t, 0));
	assert_true(tok_is_end(t, 13)); /* the EOS, <|im_end|> */
	assert_false(tok_is_end(t, 12));
	assert_false(tok_is_end(t, 1));
	tok_destroy(t);
}

static void test_bpe_tiny__special_tokens_split_out_only_on_request(void **state)
{
	(void)state;
	struct tok *t = tiny_create("qwen2");
	int32_t ids[64];
	size_t n, need = 0;

	n = enc(t, "<|im_start|>user<|im_end|>", true, ids, 64);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 12);
	assert_int_equal(ids[1], 14);
	assert_int_equal(ids[2], 13);
	/* plain encoding keeps the marker as text: many pieces, none of them 12 */
	n = enc(t, "<|im_start|>", false, ids, 64);
	assert_true(n > 1);
	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(ids[i], 12);
	assert_int_equal(tok_special_id(t, "<|im_end|>"), 13);
	assert_int_equal(tok_special_id(t, "user"), -1);
	/* too small a buffer reports the size needed */
	assert_int_equal(tok_encode_special(t, "ab<|im_end|>ab", 14, true, ids, 2, &need),
			 SPECD_INVAL);
	assert_int_equal(need, 4);
	tok_destroy(t);
}

/* One split of 100k letters: merges stay O(n log n), so this is quick. */
static void test_bpe_tiny__long_word(void **state)
{
	(void)state;
	struct tok *t = tiny_create("gpt2");
	enum { N = 100000 };
	char *s = malloc(N + 1);
	int32_t *ids = malloc(sizeof(int32_t) * N);
	size_t n = 0;

	assert_non_null(s);
	assert_non_null(ids);
	for (int i = 0; i < N; i++)
		s[i] = i % 2 ? 'b' : 'a';
	s[N] = '\0';
	assert_int_equal(tok_encode(t, s, N, false, ids, N, &n), SPECD_OK);
	assert_int_equal(n, N / 2);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ids[i], 8);
	free(s);
	free(ids);
	tok_destroy(t);
}

static void test_bpe_tiny__rejects_unknown_pre_tokenizer(void **state)
{
	(void)state;
	struct tok_bpe_vocab v = {.n = 3, .pieces = tiny_pieces, .pre = "no-such-pre"};
	struct tok *t = NULL;
	struct specd_error err;

	assert_int_equal(tok_create_bpe(&v, &t, &err), SPECD_UNSUPPORTED);
	assert_null(t);
	assert_non_null(strstr(err.msg, "no-such-pre"));
}

static void test_bpe_tiny__nomem_paths_clean_up(void **state)
{
	(void)state;
	struct tok *t;
	int32_t ids[16];
	size_t n;

	for (long k = 0; k < 64; k++) {
		struct tok_bpe_vocab v = {
			.n = sizeof(tiny_pieces) / sizeof(tiny_pieces[0]), .pieces = tiny_pieces,
			.types = tiny_types, .n_merges = 3, .merges = tiny_merges, .pre = "smollm",
		};
		struct specd_error err;
		t = NULL;
		specd_alloc_fail_after(k);
		enum specd_status st = tok_create_bpe(&v, &t, &err);
		if (st == SPECD_OK)
			st = tok_encode(t, "ab 12", 5, false, ids, 16, &n);
		specd_alloc_fail_reset();
		tok_destroy(t);
		assert_true(st == SPECD_OK || st == SPECD_NOMEM);
	}
}

static void test_chat__formats_chatml_with_default_system(void **state)
{
	(void)state;
	struct tok *t = tiny_create("qwen2");
	struct chat_msg msgs[] = {{"user", "ab"}};
	int32_t ids[64];
	size_t n = 0;
	struct specd_error err;

	assert_int_equal(chat_format(t, msgs, 1, "c", true, ids, 64, &n, &err), SPECD_OK);
	/* <s>system\nc<e>\n<s>user\nab<e>\n<s>assistant\n: "system" and "assistant" spell
	 * letters this vocabulary lacks, which come out as unk (0) */
	assert_int_equal(ids[0], 12);
	size_t ends = 0, starts = 0;
	for (size_t i = 0; i < n; i++) {
		ends += ids[i] == 13;
		starts += ids[i] == 12;
	}
	assert_int_equal(starts, 3);
	assert_int_equal(ends, 2);
	assert_int_equal(ids[n - 1], 5); /* "\n" after "assistant" */
	/* an explicit system message replaces the default */
	struct chat_msg two[] = {{"system", "a"}, {"user", "b"}};
	assert_int_equal(chat_format(t, two, 2, "c", false, ids, 64, &n, &err), SPECD_OK);
	starts = 0;
	for (size_t i = 0; i < n; i++)
		starts += ids[i] == 12;
	assert_int_equal(starts, 2);
	assert_int_equal(chat_format(t, two, 2, NULL, false, ids, 3, &n, &err), SPECD_INVAL);
	assert_true(n > 3);
	tok_destroy(t);
}

/* chat_default_system on a file holding only `template`: *out as it returns it. */
static enum specd_status template_default(const char *template, char **out)
{
	struct gguf_writer *w = NULL;
	struct gguf_file *f = NULL;
	struct specd_error err;
	void *img = NULL;
	size_t size = 0;
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "tokenizer.chat_template", template), SPECD_OK);
	assert_int_equal(gguf_writer_image(w, 3, &img, &size), SPECD_OK);
	assert_int_equal(gguf_open_memory(img, size, &f, &err), SPECD_OK);
	enum specd_status st = chat_default_system(f, out, &err);
	gguf_close(f);
	specd_free(img);
	gguf_writer_destroy(w);
	return st;
}

/* The default system prompt is the literal that holds a whole system turn, whatever
 * quote it uses and whatever the other quote inside it; a template without one adds
 * no system turn (NULL), not an empty one. */
static void test_chat__default_system_read_from_the_template(void **state)
{
	(void)state;
	static const struct {
		const char *template, *want;
	} cases[] = {
		{"{{ '<|im_start|>system\\nYou are kind.<|im_end|>\\n' }}", "You are kind."},
		{"{{ \"<|im_start|>system\\nYou're a \\\"helper\\\".<|im_end|>\\n\" }}",
		 "You're a \"helper\"."},
		/* the explicit-system branch only: the literal closes before <|im_end|> */
		{"{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
		 "'<|im_end|>\\n' }}{% endfor %}", NULL},
		{"{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *sys = (char *)1;
		assert_int_equal(template_default(cases[i].template, &sys), SPECD_OK);
		if (cases[i].want) {
			assert_non_null(sys);
			assert_string_equal(sys, cases[i].want);
		} else {
			assert_null(sys);
		}
		specd_free(sys);
	}
	char *sys = (char *)1;
	assert_int_equal(template_default("{{ bos_token }}{{ messages }}", &sys),
			 SPECD_UNSUPPORTED); /* not ChatML */
	assert_null(sys);
}

/* ---- the real vocabularies ---- */

struct real_vocab {
	const char *name, *file, *system;
};

static const struct real_vocab vocabs[] = {
	{"smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf",
	 "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
	{"qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
	 "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
	{"qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
	 "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
};

struct real {
	const struct real_vocab *v;
	struct gguf_file *f;
	struct tok *t;
	yaml_document_t doc;
	bool have_doc;
};






/* Hex text -> bytes in buf (NUL-terminated); returns the length. */
static size_t fx_hex(const char *hex, char *buf, size_t cap)
{
	size_t n = strlen(hex) / 2;
	assert_true(n < cap);
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		buf[i] = (char)v;
	}
	buf[n] = '\0';
	return n;
}

static int setup_vocab_load(void **state, const struct real_vocab *v)
{
	struct real *r = calloc(1, sizeof(*r));
	char path[1024];
	struct specd_error err;

	if (!r)
		return -1;
	*state = r;
	r->v = v;
	if (!ts_model_path(v->file, path, sizeof(path))) {
		fprintf(stderr, "%s: not in SPECD_MODELS (tools/fetch-models %s); skipping\n",
			v->file, v->name);
		return 0;
	}
	if (gguf_open(path, &r->f, &err) != SPECD_OK || tok_load_gguf(r->f, &r->t, &err) != SPECD_OK) {
		fprintf(stderr, "%s: %s\n", path, err.msg);
		return -1;
	}
	r->have_doc = ts_fx_load(v->name, &r->doc);
	return r->have_doc ? 0 : -1;
}

static int teardown_vocab(void **state);
/* cmocka runs no teardown after a failed setup: clean up here then. */
static int setup_vocab(void **state, const struct real_vocab *v)
{
	int rc = setup_vocab_load(state, v);
	if (rc != 0) {
		teardown_vocab(state);
		*state = NULL;
	}
	return rc;
}

static int setup_smollm(void **state)
{
	return setup_vocab(state, &vocabs[0]);
}

static int setup_qwen15(void **state)
{
	return setup_vocab(state, &vocabs[1]);
}

static int setup_qwen05(void **state)
{
	return setup_vocab(state, &vocabs[2]);
}

static int teardown_vocab(void **state)
{
	struct real *r = *state;
	if (!r)
		return 0;
	if (r->have_doc)
		yaml_document_delete(&r->doc);
	tok_destroy(r->t);
	gguf_close(r->f);
	free(r);
	return 0;
}

static bool has_special_text(const struct tok *t, const char *s, size_t len)
{
	int32_t ids[256];
	size_t n = 0;
	if (tok_encode_special(t, s, len, false, ids, 256, &n) != SPECD_OK)
		return true;
	for (size_t i = 0; i < n; i++) {
		enum tok_type ty = tok_token_type(t, ids[i]);
		if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED)
			return true;
	}
	return false;
}

/* Every hard string gives Hugging Face's ids, and decodes back to itself. */
static void test_bpe_real__matches_hugging_face_ids(void **state)
{
	struct real *r = *state;
	if (!r->t)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *cases = ts_fx_get(d, yaml_document_get_root_node(d), "tokenize");
	char text[1024], back[1024];
	int32_t want[1024], got[1024];
	size_t bad = 0;

	assert_string_equal(tok_pre_name(r->t),
			    ts_fx_str(ts_fx_get(d, yaml_document_get_root_node(d), "pre")));
	assert_int_equal(ts_fx_len(cases), 200);
	for (size_t i = 0; i < ts_fx_len(cases); i++) {
		yaml_node_t *c = ts_fx_at(d, cases, i);
		size_t len = fx_hex(ts_fx_str(ts_fx_get(d, c, "hex")), text, sizeof(text));
		size_t nw = ts_fx_ids(d, ts_fx_get(d, c, "ids"), want, 1024), ng = 0, nb = 0;

		assert_int_equal(tok_encode_special(r->t, text, len, false, got, 1024, &ng), SPECD_OK);
		if (ng != nw || memcmp(got, want, nw * sizeof(int32_t)) != 0) {
			fprintf(stderr, "%s: case %zu (%s): %zu ids, Hugging Face %zu\n", r->v->name,
				i, ts_fx_str(ts_fx_get(d, c, "hex")), ng, nw);
			bad++;
			continue;
		}
		if (has_special_text(r->t, text, len))
			continue; /* control tokens decode to nothing */
		assert_int_equal(tok_decode(r->t, got, ng, back, sizeof(back), &nb), SPECD_OK);
		assert_int_equal(nb, len);
		assert_memory_equal(back, text, len);
	}
	assert_int_equal(bad, 0);
}

static void test_bpe_real__chat_matches_template(void **state)
{
	struct real *r = *state;
	if (!r->t)
		skip();
	yaml_document_t *d = &r->doc;
	yaml_node_t *chats = ts_fx_get(d, yaml_document_get_root_node(d), "chat");
	char *sys = NULL;
	struct specd_error err;

	assert_int_equal(chat_default_system(r->f, &sys, &err), SPECD_OK);
	assert_non_null(sys);
	assert_string_equal(sys, r->v->system);
	for (size_t i = 0; i < ts_fx_len(chats); i++) {
		yaml_node_t *c = ts_fx_at(d, chats, i), *msgs = ts_fx_get(d, c, "messages");
		struct chat_msg m[8];
		int32_t want[1024], got[1024];
		size_t nw = ts_fx_ids(d, ts_fx_get(d, c, "ids"), want, 1024), ng = 0;
		size_t nm = ts_fx_len(msgs);

		assert_true(nm <= 8);
		for (size_t k = 0; k < nm; k++) {
			m[k].role = ts_fx_str(ts_fx_get(d, ts_fx_at(d, msgs, k), "role"));
			m[k].content = ts_fx_str(ts_fx_get(d, ts_fx_at(d, msgs, k), "content"));
		}
		assert_int_equal(chat_format(r->t, m, nm, sys, true, got, 1024, &ng, &err), SPECD_OK);
		assert_true(ng <= chat_format_bound(m, nm, sys));
		assert_int_equal(ng, nw);
		assert_memory_equal(got, want, nw * sizeof(int32_t));
	}
	specd_free(sys);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bpe_tiny__merges_by_rank),
		cmocka_unit_test(test_bpe_tiny__ignore_merges_takes_whole_pieces),
		cmocka_unit_test(test_bpe_tiny__user_defined_pieces_split_out_of_text),
		cmocka_unit_test(test_bpe_gguf__llama3_pre_adds_bos_and_ignores_merges),
		cmocka_unit_test(test_bpe_tiny__pre_tokenizer_splits_words),
		cmocka_unit_test(test_bpe_tiny__bytes_map_to_the_gpt2_alphabet),
		cmocka_unit_test(test_bpe_tiny__special_tokens_split_out_only_on_request),
		cmocka_unit_test(test_bpe_tiny__long_word),
		cmocka_unit_test(test_bpe_tiny__rejects_unknown_pre_tokenizer),
		cmocka_unit_test(test_bpe_tiny__byte_without_a_symbol_is_dropped),
		cmocka_unit_test(test_bpe_tiny__white_space_spelt_out),
		cmocka_unit_test(test_bpe_tiny__space_before_u180e_is_one_piece),
		cmocka_unit_test(test_bpe_tiny__end_ids_beside_the_eos),
		cmocka_unit_test(test_bpe_tiny__nomem_paths_clean_up),
		cmocka_unit_test(test_chat__formats_chatml_with_default_system),
		cmocka_unit_test(test_chat__default_system_read_from_the_template),
		cmocka_unit_test_setup_teardown(test_bpe_real__matches_hugging_face_ids,
						setup_smollm, teardown_vocab),
		cmocka_unit_test_setup_teardown(test_bpe_real__chat_matches_template, setup_smollm,
						teardown_vocab),
		cmocka_unit_test_setup_teardown(test_bpe_real__matches_hugging_face_ids,
						setup_qwen15, teardown_vocab),
		cmocka_unit_test_setup_teardown(test_bpe_real__chat_matches_template, setup_qwen15,
						teardown_vocab),
		cmocka_unit_test_setup_teardown(test_bpe_real__matches_hugging_face_ids,
						setup_qwen05, teardown_vocab),
		cmocka_unit_test_setup_teardown(test_bpe_real__chat_matches_template, setup_qwen05,
						teardown_vocab),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
