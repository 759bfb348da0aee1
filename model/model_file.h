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
 * A folder holds config.json (model_type llama or qwen2, or their architectures
 * class; rope_scaling and sliding windows are refused), model.safetensors or shards
 * named by model.safetensors.index.json's weight_map, tokenizer.json (byte-level BPE:
 * its pre_tokenizer must have a ByteLevel step; SentencePiece-style files are refused)
 * and optionally tokenizer_config.json (bos/eos/unk tokens, add_bos_token,
 * chat_template) and chat_template.jinja. Tensors may be F32, F16 or BF16; 1-D ones
 * (norms, biases) are converted to f32 copies the view owns, as the loader wants, and
 * so is a tensor whose data is not aligned for its type; everything else stays in the
 * shards' mappings, so a tensor-parallel rank touches only its own slices. Unknown
 * tensors (rotary_emb.inv_freq) and a tied lm_head are left out. gguf_mapping of a view
 * gives its metadata only.
 *
 * Threads: as gguf.h (the view is immutable once open). */
#ifndef SPECD_MODEL_MODEL_FILE_H
#define SPECD_MODEL_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "common/status.h"

#define MODEL_KEY_ROPE_LAYOUT "specd.rope.layout"
#define MODEL_KEY_PRE_REGEX "specd.tokenizer.pre_regex"
#define MODEL_KEY_IGNORE_MERGES "specd.tokenizer.ignore_merges" /* bool: tok_bpe_vocab's */

struct gguf_file;

/* Opens `path`: a folder is read as a Hugging Face checkpoint, anything else as a GGUF
 * file. Free the result with gguf_close. Errors: those of gguf_open; for a folder,
 * SPECD_IO (a file missing or unreadable; the message names it), SPECD_INVAL (a
 * malformed config.json, safetensors header, index or tokenizer.json; the message
 * names the file and the key or tensor), SPECD_UNSUPPORTED (an architecture, dtype or
 * tokenizer kind specd does not run), SPECD_NOMEM. *out is written only on success. */
enum specd_status model_file_open(const char *path, struct gguf_file **out,
				  struct specd_error *err);

/* The names model_file_open gives Hugging Face tensors, both ways:
 * "model.layers.3.self_attn.q_proj.weight" <-> "blk.3.attn_q.weight" (tools write
 * folders with it). False when the name has no counterpart or does not fit in cap. */
bool model_file_gguf_name(const char *hf_name, char *buf, size_t cap);
bool model_file_hf_name(const char *gguf_name, char *buf, size_t cap);

#endif
