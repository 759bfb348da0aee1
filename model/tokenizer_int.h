/* Layout of struct tok, shared by the tokenizer's files only (tokenizer.c builds and
 * decodes, tokenizer_encode.c merges, tokenizer_gguf.c loads). Not for other modules. */
#ifndef SPECD_MODEL_TOKENIZER_INT_H
#define SPECD_MODEL_TOKENIZER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

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
	bool add_bos;
	bool add_space_prefix;
};

/* The id of the mergeable piece spelled by s[0..len), or -1. */
int32_t tok_lookup(const struct tok *t, const char *s, size_t len);

/* Bytes of the valid UTF-8 character starting at s[0] (1..4, strict: no overlongs,
 * surrogates or values above U+10FFFF), or 1 when s does not start one. len >= 1. */
size_t tok_utf8_char_len(const unsigned char *s, size_t len);

#endif
