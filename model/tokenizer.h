/* Text <-> token ids for the two vocabulary kinds GGUF stores: SentencePiece-style
 * ("llama") and GPT-2-style byte-level BPE ("gpt2": SmolLM2, Qwen2.5). The leader
 * encodes a prompt before prefill and decodes sampled ids into the text it streams
 * back to the client (DESIGN.md §3, §7).
 *
 * SPM:
 * Encoding follows llama.cpp's SPM tokenizer: spaces become U+2581 "▁", one "▁" is
 * prefixed (add_space_prefix), the text is split into UTF-8 characters, and the
 * adjacent pair whose concatenation is a vocabulary piece with the highest score is
 * merged (leftmost on ties) until no pair merges; a symbol that is no piece falls back
 * to its byte tokens <0xNN>. Differences, deliberate: only NORMAL, USER_DEFINED and
 * UNDEFINED pieces are ever produced from text (text spelling "<s>" or "<0x41>" stays
 * text), user-defined pieces are merged like normal ones rather than split out first,
 * and invalid UTF-8 falls back byte by byte.
 *
 * BPE (tokenizer_bpe.c), as Hugging Face tokenizers and llama.cpp do it: the text is
 * split by the pre-tokenizer's regular expressions (PCRE2, Unicode classes; chosen by
 * tokenizer.ggml.pre: "qwen2", "smollm", "gpt2"/"default", "llama-bpe"), each split is
 * mapped byte by byte to GPT-2's printable byte alphabet, and the adjacent pair with the
 * lowest merge rank (tokenizer.ggml.merges) is merged, leftmost on ties, until none
 * merges (with ignore_merges, a split that is a NORMAL piece whole is that piece first).
 * USER_DEFINED pieces (added tokens that are not special, as Qwen2.5's "<tool_call>")
 * are split out of the text before all that, as Hugging Face and llama.cpp do (the
 * longest at each place; an added token's lstrip, rstrip and single_word, and Hugging
 * Face's matching of non-normalized ones first, are not applied); CONTROL ones stay
 * text. No Unicode normalisation (Qwen's Hugging Face tokenizer applies NFC first: text
 * that is not NFC may tokenize differently there). Invalid UTF-8 bytes form their own
 * splits; a byte the vocabulary has no symbol for is dropped (or, only when the unknown
 * id is an UNKNOWN token, becomes it). As for SPM, tok_encode never produces
 * control tokens from text; tok_encode_special does.
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

/* A byte-level BPE vocabulary, all borrowed for the duration of tok_create_bpe only. */
struct tok_bpe_vocab {
	size_t n;                   /* pieces; 1..INT32_MAX */
	const char *const *pieces;  /* in GPT-2's byte alphabet ("Ġthe" for " the") */
	const size_t *piece_lens;   /* NULL: pieces are NUL-terminated */
	const int32_t *types;       /* enum tok_type values; NULL: all NORMAL */
	size_t n_merges;
	const char *const *merges;  /* "left right", rank = index */
	const size_t *merge_lens;   /* NULL: merges are NUL-terminated */
	const char *pre;            /* pre-tokenizer name; NULL: "gpt2" */
	const char *const *pre_regex; /* n_pre_regex > 0: these regexes (PCRE2, applied in
				       * order) instead of the name's; pre then only names
				       * them (NULL: "custom") */
	const size_t *pre_regex_lens; /* NULL: NUL-terminated */
	size_t n_pre_regex;
	int32_t bos, eos, unk;      /* ids, each < n */
	bool add_bos;
	bool ignore_merges;         /* a split spelling a NORMAL piece whole is that piece,
				     * whatever the merges make of it (Hugging Face's BPE
				     * option; Llama 3 sets it) */
};

/* Builds a BPE tokenizer (copies everything it needs; merges whose parts or result are
 * no piece are skipped, as they can never apply). Errors: SPECD_UNSUPPORTED (an unknown
 * pre-tokenizer name, more than 8 regexes), SPECD_INVAL (as tok_create_spm, a merge
 * without a space, a pre_regex PCRE2 does not compile), SPECD_NOMEM. Any thread. */
enum specd_status tok_create_bpe(const struct tok_bpe_vocab *v, struct tok **out,
				 struct specd_error *err);

/* The one- or two-byte UTF-8 piece that stands for byte b in GPT-2's byte alphabet
 * ("Ġ" for a space), written to out; returns its length (tools build BPE vocabularies). */
size_t tok_bpe_byte_piece(unsigned char b, char out[2]);

struct gguf_file;

/* The vocabulary of a GGUF file: tokenizer.ggml.model "llama" gives SPM, "gpt2" BPE
 * (with tokenizer.ggml.merges and .pre, or the regexes of MODEL_KEY_PRE_REGEX, which a
 * Hugging Face folder's view carries: model_file.h). bos/eos/unk default to 1/2/0; add_bos_token
 * defaults to true for SPM and false for BPE, add_space_prefix to true (SPM only). As
 * llama.cpp does for Llama 3, the BPE pre-tokenizers "llama-bpe" and "llama3" default
 * add_bos_token to true and set ignore_merges; MODEL_KEY_IGNORE_MERGES sets it too. The
 * file may be closed afterwards. Errors: SPECD_UNSUPPORTED (another tokenizer model,
 * an unknown pre-tokenizer), SPECD_INVAL (a key missing or of the wrong type, array
 * lengths that disagree, and everything tok_create_* rejects; the message names the
 * key), SPECD_NOMEM. */
enum specd_status tok_load_gguf(const struct gguf_file *f, struct tok **out,
				struct specd_error *err);

/* NULL is a no-op. */
void tok_destroy(struct tok *t);

int32_t tok_vocab_size(const struct tok *t);
int32_t tok_bos(const struct tok *t);
int32_t tok_eos(const struct tok *t);
#define TOK_MAX_END_IDS 4
/* The ids besides tok_eos that end a generation, as llama.cpp's end-of-generation set:
 * control tokens spelled <|endoftext|>, <|im_end|>, <|eot_id|>, <|eom_id|>,
 * <|end_of_text|>, <end_of_turn> or <|end|> (Qwen2.5-Instruct names <|im_end|> its EOS
 * but may also end with <|endoftext|>; SmolLM2 likewise). *ids (may be NULL) points
 * into t; returns how many, at most TOK_MAX_END_IDS. */
uint32_t tok_end_ids(const struct tok *t, const int32_t **ids);
/* id is tok_eos or one of tok_end_ids. */
bool tok_is_end(const struct tok *t, int32_t id);
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

/* Whether t is byte-level BPE; the pre-tokenizer's name ("" for SPM). */
bool tok_is_bpe(const struct tok *t);
const char *tok_pre_name(const struct tok *t);
/* The id of the CONTROL or USER_DEFINED token spelled exactly text (as "<|im_end|>"),
 * or -1. */
int32_t tok_special_id(const struct tok *t, const char *text);

/* Encodes len bytes of text (any bytes; NUL is an ordinary byte) into ids[0..*n_out),
 * BOS first when add_bos. An empty text gives just BOS (or nothing). Allocates one
 * workspace sized from len for the call (about 60 bytes per character), nothing else.
 * Errors: SPECD_INVAL (text NULL with len > 0, ids NULL with cap > 0, len above 1 GiB,
 * or cap too small: then *n_out is set to the number of ids needed, the one error that
 * writes an out-parameter), SPECD_NOMEM. */
enum specd_status tok_encode(const struct tok *t, const char *text, size_t len, bool add_bos,
			     int32_t *ids, size_t cap, size_t *n_out);

/* As tok_encode, but text spelling a CONTROL or USER_DEFINED piece ("<|im_start|>",
 * the longest at each place) becomes that token, and the text between is encoded as
 * by tok_encode, each stretch on its own (what Hugging Face's encode does with added
 * tokens). For SPM vocabularies each stretch gets the space prefix. Use it for text the
 * program builds (templates), not for a client's text. Same errors and workspace
 * bound as tok_encode (a special token is never longer than its text). */
enum specd_status tok_encode_special(const struct tok *t, const char *text, size_t len,
				     bool add_bos, int32_t *ids, size_t cap, size_t *n_out);

/* The text token `id` contributes when it follows `prev` (TOK_NONE at the start):
 * control and unused tokens give "", byte tokens their byte, unknown "▅", others their
 * piece with "▁" as " ", minus one leading space when prev is TOK_NONE or BOS. (llama.cpp
 * drops it only at TOK_NONE; dropping it after BOS too gives decode(encode(text)) ==
 * text with or without BOS, and a reply to an empty prompt no leading space.) For BPE:
 * normal pieces give their bytes (GPT-2's alphabet undone), user-defined ones their
 * piece, and no space is ever dropped. Points
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
