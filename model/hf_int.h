/* Folder-private parts of the Hugging Face reader behind model_file_open: the
 * tokenizer.json reader (hf_tokenizer.c) and the JSON helpers it shares with the folder
 * assembly (hf_open.c) and the safetensors parser (safetensors.c, whose API is public
 * in safetensors.h). Not for other modules: they use model_file.h. */
#ifndef SPECD_MODEL_HF_INT_H
#define SPECD_MODEL_HF_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "model/arch.h"
#include "model/gguf.h"
#include "model/safetensors.h"

/* The folder `dir` as a view (model_file.h); model_file_open's errors for a folder. */
enum specd_status hf_open(const char *dir, struct gguf_file **out, struct specd_error *err);


/* Reads dir/name as JSON into *out (the caller json_decref's it), writing the path to
 * path[0..cap) for messages; `flags` are jansson's decoding flags beyond
 * JSON_REJECT_DUPLICATES. Errors: SPECD_IO (missing or unreadable; the message names
 * the path), SPECD_INVAL (not JSON, or not an object; with line and column). */
enum specd_status hf_json_load(const char *dir, const char *name, size_t flags, char *path,
			       size_t cap, json_t **out, struct specd_error *err);

/* The architecture config.json names (model_type, or the first of architectures:
 * llama or qwen2). Errors: SPECD_INVAL (neither key), SPECD_UNSUPPORTED (another
 * architecture); messages start with path. */
enum specd_status hf_json_arch(const json_t *config, const char *path, enum model_arch *out,
			       struct specd_error *err);

/* A token id in `config` (config.json's bos_token_id, eos_token_id): a non-negative
 * integer, or the first of an array of them; false when absent or not so. */
bool hf_json_id(const json_t *config, const char *key, int32_t *out);

/* tokenizer.json, tokenizer_config.json (optional) and config.json's token ids as the
 * tokenizer.* keys of a byte-level BPE GGUF, plus MODEL_KEY_PRE_REGEX; vocab_size
 * (0: none) pads the vocabulary with unused tokens up to the embedding's rows, as
 * llama.cpp's converter does. Errors: SPECD_IO (tokenizer.json missing), SPECD_INVAL
 * (a malformed file; the message names the file and key), SPECD_UNSUPPORTED (a model
 * or pre-tokenizer other than byte-level BPE), SPECD_NOMEM. */
enum specd_status hf_tokenizer_keys(const char *dir, const json_t *config, uint32_t vocab_size,
				    struct gguf_writer *w, struct specd_error *err);

#endif
