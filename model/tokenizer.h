/* Text <-> token ids for SentencePiece-style ("llama") vocabularies as GGUF stores
 * them: the leader encodes a prompt before prefill and decodes sampled ids into the
 * text it streams back to the client (DESIGN.md §3, §7).
 *
 * Encoding follows llama.cpp's SPM tokenizer: spaces become U+2581 "▁", one "▁" is
 * prefixed (add_space_prefix), the text is split into UTF-8 characters, and the
 * adjacent pair whose concatenation is a vocabulary piece with the highest score is
 * merged (leftmost on ties) until no pair merges; a symbol that is no piece falls back
 * to its byte tokens <0xNN>. Differences, deliberate: only NORMAL, USER_DEFINED and
 * UNDEFINED pieces are ever produced from text (text spelling "<s>" or "<0x41>" stays
 * text), user-defined pieces are merged like normal ones rather than split out first,
 * and invalid UTF-8 falls back byte by byte.
 *
 * Threads: a struct tok is immutable after creation; any thread may encode and decode
 * with it concurrently. */
#ifndef SPECD_MODEL_TOKENIZER_H
#define SPECD_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"

/* tokenizer.ggml.token_type values. */
enum tok_type {
	TOK_TYPE_UNDEFINED = 0,
	TOK_TYPE_NORMAL = 1,
	TOK_TYPE_UNKNOWN = 2,
	TOK_TYPE_CONTROL = 3,      /* <s>, </s>: no text */
	TOK_TYPE_USER_DEFINED = 4,
	TOK_TYPE_UNUSED = 5,       /* no text */
	TOK_TYPE_BYTE = 6,         /* <0xNN>: one raw byte */
	TOK_TYPE_COUNT
};

/* "no previous token", for tok_token_text at the start of a sequence. */
#define TOK_NONE (-1)

struct tok;

/* A vocabulary as plain arrays, all borrowed for the duration of tok_create_spm only. */
struct tok_spm_vocab {
	size_t n;                   /* pieces; 1..INT32_MAX */
	const char *const *pieces;  /* n pieces, UTF-8, not necessarily NUL-terminated */
	const size_t *piece_lens;   /* bytes of each piece; NULL: pieces are NUL-terminated */
	const float *scores;        /* merge priority, higher first; NULL: all 0 */
	const int32_t *types;       /* enum tok_type values; NULL: all NORMAL */
	int32_t bos, eos, unk;      /* ids, each < n */
	bool add_bos;               /* the model's default for tok_encode callers */
	bool add_space_prefix;      /* prefix "▁" when encoding, strip it when decoding */
};

/* Builds a tokenizer (copies everything it needs). Errors: SPECD_INVAL (n out of range,
 * a NULL piece of non-zero length, a type outside enum tok_type, bos/eos/unk out of
 * range, a piece longer than 1 MiB), SPECD_NOMEM. *out is written only on success;
 * free with tok_destroy. Any thread. */
enum specd_status tok_create_spm(const struct tok_spm_vocab *v, struct tok **out,
				 struct specd_error *err);

struct gguf_file;

/* The vocabulary of a GGUF file (tokenizer.ggml.*; bos/eos/unk default to 1/2/0,
 * add_bos_token and add_space_prefix to true when absent). The file may be closed
 * afterwards. Errors: SPECD_UNSUPPORTED (tokenizer.ggml.model is not "llama"),
 * SPECD_INVAL (a key missing or of the wrong type, array lengths that disagree, and
 * everything tok_create_spm rejects; the message names the key), SPECD_NOMEM. */
enum specd_status tok_load_gguf(const struct gguf_file *f, struct tok **out,
				struct specd_error *err);

/* NULL is a no-op. */
void tok_destroy(struct tok *t);

int32_t tok_vocab_size(const struct tok *t);
int32_t tok_bos(const struct tok *t);
int32_t tok_eos(const struct tok *t);
int32_t tok_unk(const struct tok *t);
/* Whether the model wants BOS in front of a prompt (tokenizer.ggml.add_bos_token). */
bool tok_add_bos(const struct tok *t);
/* TOK_TYPE_COUNT for an id out of range. */
enum tok_type tok_token_type(const struct tok *t, int32_t id);
/* The merge score of a piece; 0 for an id out of range. */
float tok_score(const struct tok *t, int32_t id);
/* The raw vocabulary piece ("▁the", "<0x0A>", "<s>"), NUL-terminated, owned by t;
 * *len (may be NULL) gets its length. NULL for an id out of range. */
const char *tok_piece(const struct tok *t, int32_t id, size_t *len);

/* An upper bound on the ids tok_encode can produce for len bytes (saturating). */
size_t tok_encode_bound(size_t len, bool add_bos);

/* Encodes len bytes of text (any bytes; NUL is an ordinary byte) into ids[0..*n_out),
 * BOS first when add_bos. An empty text gives just BOS (or nothing). Allocates one
 * workspace sized from len for the call (about 60 bytes per character), nothing else.
 * Errors: SPECD_INVAL (text NULL with len > 0, ids NULL with cap > 0, len above 1 GiB,
 * or cap too small: then *n_out is set to the number of ids needed, the one error that
 * writes an out-parameter), SPECD_NOMEM. */
enum specd_status tok_encode(const struct tok *t, const char *text, size_t len, bool add_bos,
			     int32_t *ids, size_t cap, size_t *n_out);

/* The text token `id` contributes when it follows `prev` (TOK_NONE at the start):
 * control and unused tokens give "", byte tokens their byte, unknown "▅", others their
 * piece with "▁" as " ", minus one leading space when prev is TOK_NONE or BOS. (llama.cpp
 * drops it only at TOK_NONE; dropping it after BOS too gives decode(encode(text)) ==
 * text with or without BOS, and a reply to an empty prompt no leading space.) Points
 * into t, not NUL-terminated. A sequence's text is exactly the concatenation of these,
 * so a streamer can emit each token's text as it arrives; a byte token may end inside a
 * UTF-8 character, which tok_utf8_complete helps hold back. Errors: SPECD_INVAL (id
 * out of range). */
enum specd_status tok_token_text(const struct tok *t, int32_t prev, int32_t id,
				 const char **text, size_t *len);

/* Decodes n ids into buf as text plus a terminating NUL (*len_out excludes it).
 * Errors: SPECD_INVAL (an id out of range, ids NULL with n > 0, or cap < length + 1:
 * then *len_out is set to the length needed without the NUL). */
enum specd_status tok_decode(const struct tok *t, const int32_t *ids, size_t n, char *buf,
			     size_t cap, size_t *len_out);

/* The length of the longest prefix of buf[0..len) that does not end inside a UTF-8
 * character that more bytes could still complete; a streamer sends that much and keeps
 * the rest (at most 3 bytes) for the next token. Bytes that can never form a character
 * count as complete, so invalid input is never held back forever. */
size_t tok_utf8_complete(const char *buf, size_t len);

#endif
