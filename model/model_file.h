/* Where a model's weights, hyper-parameters and tokenizer come from: a GGUF file or a
 * Hugging Face folder (config.json, *.safetensors, tokenizer.json), both presented as
 * one struct gguf_file view so that the loader, the shards and the tokenizer read
 * every model the same way (DESIGN.md §8).
 *
 * A Hugging Face folder appears as a GGUF file would after llama.cpp's conversion:
 * config.json becomes `<arch>.*` keys, tokenizer.json and tokenizer_config.json become
 * `tokenizer.ggml.*` keys, and each safetensors tensor is named as GGUF names it
 * (model.layers.3.self_attn.q_proj.weight -> blk.3.attn_q.weight) with its data in
 * place in the read-only mapping of its shard. Two keys exist only in such a view:
 * `specd.rope.layout` ("halves": Hugging Face's rotate_half pairing, whatever the
 * architecture) and `specd.tokenizer.pre_regex` (the pre-tokenizer's regexes, taken
 * from tokenizer.json rather than from a name).
 *
 * Threads: as gguf.h (the view is immutable once open). */
#ifndef SPECD_MODEL_MODEL_FILE_H
#define SPECD_MODEL_MODEL_FILE_H

#include "common/error.h"
#include "common/status.h"

#define MODEL_KEY_ROPE_LAYOUT "specd.rope.layout"
#define MODEL_KEY_PRE_REGEX "specd.tokenizer.pre_regex"

struct gguf_file;

/* Opens `path`: a folder is read as a Hugging Face checkpoint, anything else as a GGUF
 * file. Free the result with gguf_close. Errors: those of gguf_open; for a folder,
 * SPECD_IO (a file missing or unreadable; the message names it), SPECD_INVAL (a
 * malformed config.json, safetensors header, index or tokenizer.json; the message
 * names the file and the key or tensor), SPECD_UNSUPPORTED (an architecture, dtype or
 * tokenizer kind specd does not run), SPECD_NOMEM. *out is written only on success. */
enum specd_status model_file_open(const char *path, struct gguf_file **out,
				  struct specd_error *err);

#endif
