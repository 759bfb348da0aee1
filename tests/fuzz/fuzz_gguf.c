/* libFuzzer target: the bytes of a GGUF model file, through everything specd does with
 * one before serving (model/gguf_read.c, tokenizer_gguf.c, llama_load.c; fuzz_model.h).
 * A file it accepts must keep the parser's contract: every tensor's bytes inside the
 * mapping past the data offset, as many as its shape says. Seeds: models from
 * specd-gen-model (scripts/test.sh makes them). Build: cmake -DCMAKE_C_COMPILER=clang
 * -DSPECD_FUZZ=ON; run: fuzz_gguf CORPUS. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_model.h"
#include "kernels/dtype.h"
#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gguf_file *f = NULL;
	struct specd_error err;
	if (gguf_open_memory(data, size, &f, &err) != SPECD_OK)
		return 0;
	const uint8_t *base = gguf_mapping(f, NULL);
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		size_t at = (size_t)((const uint8_t *)t->data - base);
		uint64_t rows = t->ne[0] ? t->n_elements / t->ne[0] : 0;
		if (base != data || at < gguf_data_offset(f) || at > size ||
		    t->nbytes > size - at ||
		    t->nbytes != kern_dtype_row_bytes(t->type, t->ne[0]) * rows)
			__builtin_trap();
	}
	fuzz_use_model_file(f);
	gguf_close(f);
	return 0;
}
