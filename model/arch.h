/* Model architectures specd runs and what each implies for the forward pass.
 * DESIGN.md §8: GGUF `llama` files pair adjacent RoPE dimensions (2i, 2i+1); `qwen2`
 * GGUF files and Hugging Face checkpoints pair dimension i with i + d/2. */
#ifndef SPECD_MODEL_ARCH_H
#define SPECD_MODEL_ARCH_H

#include <stdbool.h>

enum model_arch {
	MODEL_ARCH_LLAMA = 0,
	MODEL_ARCH_QWEN2,
	MODEL_ARCH_COUNT
};

enum model_rope_layout {
	MODEL_ROPE_ADJACENT, /* rotate (x[2i], x[2i+1]): GGUF llama */
	MODEL_ROPE_HALVES,   /* rotate (x[i], x[i + d/2]): "neox" style, qwen2, HF */
};

/* The GGUF `general.architecture` name ("llama", "qwen2"); "?" outside the enum. */
const char *model_arch_name(enum model_arch a);
/* False for an architecture specd does not run. */
bool model_arch_parse(const char *name, enum model_arch *out);
enum model_rope_layout model_arch_rope_layout(enum model_arch a);
/* Whether Q/K/V projections carry a bias (qwen2 does). */
bool model_arch_qkv_bias(enum model_arch a);

#endif
