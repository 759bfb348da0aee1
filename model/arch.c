/* Architecture facts; see arch.h. */
#include "arch.h"

#include <string.h>

static const char *const arch_names[MODEL_ARCH_COUNT] = {
	[MODEL_ARCH_LLAMA] = "llama",
	[MODEL_ARCH_QWEN2] = "qwen2",
};

const char *model_arch_name(enum model_arch a)
{
	return (unsigned)a < MODEL_ARCH_COUNT ? arch_names[a] : "?";
}

bool model_arch_parse(const char *name, enum model_arch *out)
{
	for (int i = 0; name && i < MODEL_ARCH_COUNT; i++) {
		if (strcmp(name, arch_names[i]) == 0) {
			*out = (enum model_arch)i;
			return true;
		}
	}
	return false;
}

enum model_rope_layout model_arch_rope_layout(enum model_arch a)
{
	return a == MODEL_ARCH_QWEN2 ? MODEL_ROPE_HALVES : MODEL_ROPE_ADJACENT;
}

bool model_arch_qkv_bias(enum model_arch a)
{
	return a == MODEL_ARCH_QWEN2;
}
