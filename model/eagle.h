/* An EAGLE draft layer (Li et al. 2401.15077; EAGLE-2 2406.16858) as a struct model,
 * so it runs through the same batch-invariant forward, KV cache and tree attention as
 * every model (llama.h). The drafter (drafters/eagle.c) feeds it, per entry, a token
 * and the target's hidden state that the token follows (model_batch.features); the
 * layer predicts the target's next hidden state, and the target's LM head turns that
 * into the next token's logits.
 *
 * A checkpoint is a folder in the reference repository's layout (SafeAILab/EAGLE):
 *   config.json        a Hugging Face Llama/Qwen2 config: hidden_size, intermediate_size,
 *                      num_attention_heads, num_key_value_heads, num_hidden_layers
 *                      (1 for EAGLE-1/2), rms_norm_eps, rope_theta, vocab_size,
 *                      optionally head_dim; model_type or architectures llama/qwen2
 *   model.safetensors  F32, F16 or BF16 tensors, named without a "model." prefix:
 *     fc.weight (hidden, 2 hidden), fc.bias (hidden, optional)
 *     layers.L.self_attn.{q,k,v,o}_proj.weight, {q,k,v}_proj.bias (optional)
 *     layers.L.mlp.{gate,up,down}_proj.weight
 *     layers.L.post_attention_layernorm.weight
 *     layers.L.input_layernorm.weight       layers after the first only
 *     embed_tokens.weight                   ignored: the target's embedding is used
 * Published checkpoints that ship pytorch_model.bin are converted first
 * (tools/convert-eagle); tools/train-eagle trains one, specd-gen-heads --eagle makes a
 * random one.
 *
 * The forward of entry t, with f_t the target's hidden state after its output norm and
 * x_{t+1} the token after it: x = fc([embed(x_{t+1}), f_t]); each layer is a Llama
 * block, the first without its input norm; no output norm: the last layer's output is
 * the predicted f_{t+1} (model_batch.hidden), and logits = the target's LM head times
 * it. RoPE pairs dimension i with i + head_dim / 2 (Hugging Face's rotate_half).
 *
 * Threads: as llama.h. */
#ifndef SPECD_MODEL_EAGLE_H
#define SPECD_MODEL_EAGLE_H

#include "common/error.h"
#include "common/status.h"
#include "model/llama.h"

#define EAGLE_MAX_LAYERS 8

/* Loads the checkpoint folder `dir` for `target`, which it borrows (its token
 * embedding and LM head; it must outlive the result). cfg as model_load_gguf's, except
 * that cfg->comm must be NULL (the layer runs whole); cfg->kern NULL gives the layer a
 * CPU backend of its own. On a device backend the layer's weights are copied there,
 * and the embedding and LM head are the target's device copies when the target is
 * whole on that same backend, else copied from its file. Errors: SPECD_IO (a file
 * missing or unreadable; a folder with pytorch_model.bin and no model.safetensors says
 * to convert it), SPECD_INVAL (config.json malformed, or a size, name or shape that
 * does not fit the target: the message names the file, the key or tensor, and both
 * sizes), SPECD_UNSUPPORTED (an architecture, dtype or RoPE scaling specd does not
 * run), SPECD_NOMEM and the backend's errors. *out only on success; free with
 * model_destroy. */
enum specd_status model_load_eagle(const char *dir, const struct model *target,
				   const struct model_config *cfg, struct model **out,
				   struct specd_error *err);

/* Bytes of the layer's weights (its file's tensors; the target's are not counted). */
size_t model_eagle_weight_bytes(const struct model *m);

#endif
