/* The safetensors format's header: what a Hugging Face checkpoint (model_file.h) and
 * published Medusa/EAGLE heads (drafters/) are stored in. The parser checks every
 * entry against the file; the caller keeps the file mapped and reads each tensor's
 * bytes at its offset. Any thread; no state. */
#ifndef SPECD_MODEL_SAFETENSORS_H
#define SPECD_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "model/gguf.h"

/* One tensor of a safetensors header, checked against its file. */
struct safetensors_tensor {
	char *name;                     /* Hugging Face name, owned */
	enum kern_dtype type;           /* KERN_F32, KERN_F16 or KERN_BF16 */
	uint32_t n_dims;                /* 1..GGUF_MAX_DIMS */
	uint64_t shape[GGUF_MAX_DIMS];  /* outermost first, as Hugging Face writes it */
	uint64_t offset, nbytes;        /* the data: bytes from the start of the file */
};

struct safetensors_header {
	struct safetensors_tensor *t; /* in the header's order */
	size_t n;
};

/* Parses the safetensors file p[0..size): an 8-byte little-endian header length, a
 * JSON header (an optional __metadata__ object, then name -> {dtype, shape,
 * data_offsets}), the data section. Checks that the header lies inside the file, each
 * entry has a shape of 1..4 positive dimensions whose bytes equal its data_offsets'
 * span, that span lies inside the data section and no two spans overlap. `src` names
 * the file in messages, which also name the tensor or key. Errors: SPECD_INVAL,
 * SPECD_UNSUPPORTED (a dtype other than F32, F16, BF16, or a rank outside 1..4),
 * SPECD_NOMEM. *out is written only on success; free it with safetensors_free. */
enum specd_status safetensors_parse(const char *src, const uint8_t *p, size_t size,
			      struct safetensors_header *out, struct specd_error *err);
void safetensors_free(struct safetensors_header *h);

#endif
