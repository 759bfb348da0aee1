/* libFuzzer target: the bytes of a safetensors shard, through the header parser that
 * model_file_open runs on every file of a Hugging Face folder (model/safetensors.c).
 * Checks the parser's contract on every input it accepts: each tensor's span lies in
 * the file past the header and holds exactly its shape's bytes, and no two overlap.
 * Build: cmake -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON; run: fuzz_safetensors CORPUS. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct safetensors_header h;
	struct specd_error err;
	uint64_t hdr = 0;

	if (safetensors_parse("<fuzz>", data, size, &h, &err) != SPECD_OK)
		return 0;
	memcpy(&hdr, data, 8); /* accepted: at least 8 bytes, little-endian hosts only */
	for (size_t i = 0; i < h.n; i++) {
		const struct safetensors_tensor *t = &h.t[i];
		uint64_t n = 1;
		for (uint32_t d = 0; d < t->n_dims; d++)
			n *= t->shape[d];
		if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->offset < 8 + hdr ||
		    t->offset > size || t->nbytes > size - t->offset ||
		    t->nbytes != n * kern_dtype_row_bytes(t->type, 1))
			__builtin_trap();
		for (size_t j = 0; j < i; j++) {
			const struct safetensors_tensor *u = &h.t[j];
			if (t->offset < u->offset + u->nbytes && u->offset < t->offset + t->nbytes)
				__builtin_trap();
		}
		volatile uint8_t sink = data[t->offset + t->nbytes - 1]; /* in bounds */
		(void)sink;
	}
	safetensors_free(&h);
	return 0;
}
