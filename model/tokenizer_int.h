/* Layout of struct tok, shared by the tokenizer's files only (tokenizer.c builds and
 * decodes, tokenizer_encode.c merges, tokenizer_gguf.c loads). Not for other modules. */
#ifndef SPECD_MODEL_TOKENIZER_INT_H
#define SPECD_MODEL_TOKENIZER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* GPT-2's pre-tokenizer regex (also Hugging Face's ByteLevel with use_regex), and the
 * most regexes one pre-tokenizer may chain. */
#define TOK_RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define TOK_BPE_MAX_RE 8

/* UTF-8 of "▁" (U+2581). */
#define TOK_SPACE_MARK "\xe2\x96\x81"
#define TOK_SPACE_MARK_LEN 3

struct tok {
	int32_t n;
	char *arena;          /* every piece and decoded text, NUL-separated, host */
	size_t *piece_off;    /* (n) start of piece i in arena */
	uint32_t *piece_len;  /* (n) */
	size_t *text_off;     /* (n) start of the decoded text of i in arena */
	uint32_t *text_len;   /* (n) */
	float *scores;        /* (n) */
	uint8_t *types;       /* (n) enum tok_type */
	int32_t byte_id[256]; /* byte value -> its <0xNN> token, -1 when absent */
	int32_t *slots;       /* open-addressing table of mergeable ids, -1 empty */
	size_t slot_mask;     /* slots has slot_mask + 1 entries, a power of two */
	int32_t bos, eos, unk;
	int32_t end_ids[TOK_MAX_END_IDS]; /* tok_end_ids */
	uint32_t n_end_ids;
	bool add_bos;
	bool add_space_prefix;
	int32_t *special;     /* CONTROL and USER_DEFINED ids with a non-empty piece, longest
			       * piece first, for tok_encode_special */
	int32_t n_special;
	uint8_t special_first[32]; /* bitmap of the first bytes of those pieces */
	int32_t *user_defined; /* the USER_DEFINED ones among them, in the same order: what
				* tok_encode splits out of text (BPE) */
	int32_t n_user_defined;
	uint8_t user_defined_first[32];
	struct tok_bpe *bpe;  /* NULL for SPM; tokenizer_bpe.c owns the layout */
};

/* Builds the vocabulary part of struct tok (pieces, texts, lookup, specials): SPM
 * texts when bpe is false, byte-level BPE texts otherwise. */
enum specd_status tok_build(const struct tok_spm_vocab *v, bool bpe, struct tok **out,
			    struct specd_error *err);

/* BPE halves, in tokenizer_bpe.c. */
size_t tok_bpe_piece_text(const char *p, size_t len, char *dst);
enum specd_status tok_bpe_encode(const struct tok *t, const char *text, size_t len,
				 int32_t *ids, size_t cap, size_t *n);
/* A pre-tokenizer regex (re[0..n)) as tokenizer_bpe.c compiles it: each \s, and \S
 * outside a character class, spelt out as Unicode's White_Space (PCRE2's would also
 * match U+180E). Malloc'd, NUL-ended, its length in *out_len; NULL without memory. */
char *tok_bpe_pattern(const char *re, size_t n, size_t *out_len);
void tok_bpe_destroy(struct tok_bpe *b);
const char *tok_bpe_pre_name(const struct tok_bpe *b);
/* Whether the pre-tokenizer `name` is llama.cpp's Llama 3 one (tok_load_gguf). */
bool tok_bpe_pre_llama3(const char *name);

/* tok_encode without splitting out USER_DEFINED pieces (tokenizer_encode.c). */
enum specd_status tok_encode_text(const struct tok *t, const char *text, size_t len,
				  bool add_bos, int32_t *ids, size_t cap, size_t *n_out);
/* Encodes text with the special pieces in it as their ids, CONTROL and USER_DEFINED
 * ones when control, else USER_DEFINED ones only (the longest at each place), and each
 * stretch between them by tok_encode_text (tokenizer.c; tok_encode_special and BPE's
 * tok_encode). Errors as tok_encode. */
enum specd_status tok_encode_parts(const struct tok *t, const char *text, size_t len,
				   bool add_bos, bool control, int32_t *ids, size_t cap,
				   size_t *n_out);

/* The id of the mergeable piece spelled by s[0..len), or -1. */
int32_t tok_lookup(const struct tok *t, const char *s, size_t len);

/* Bytes of the valid UTF-8 character starting at s[0] (1..4, strict: no overlongs,
 * surrogates or values above U+10FFFF), or 1 when s does not start one. len >= 1. */
size_t tok_utf8_char_len(const unsigned char *s, size_t len);

#endif
