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

struct kern_mat;

/* A safetensors file mapped read-only with its header parsed: how drafters read heads
 * files (Medusa, EAGLE). Tensors are handed out as kern_mats pointing into the mapping
 * (copied once when their data is not aligned for their type) and as f32 vectors
 * (copies); everything handed out belongs to the file and lives until
 * safetensors_file_close. `tag` ("medusa", "eagle") opens every message, which also
 * names the file and the tensor. One thread at a time. */
struct safetensors_file {
	char *path;
	const char *tag;
	struct safetensors_header hdr;
	void *map;
	size_t map_size;
	void **owned;     /* copies handed out */
	uint32_t n_owned;
	size_t bytes;     /* bytes of the tensors handed out (what the file adds to memory) */
};

/* Errors: SPECD_IO (cannot open or map), those of safetensors_parse, SPECD_NOMEM.
 * *out only on success. */
enum specd_status safetensors_file_open(const char *path, const char *tag,
					struct safetensors_file **out, struct specd_error *err);
/* NULL is a no-op. */
void safetensors_file_close(struct safetensors_file *f);
/* The tensor called `name`, or NULL. */
const struct safetensors_tensor *safetensors_file_find(const struct safetensors_file *f,
						       const char *name);
/* t as a (rows, cols) matrix (kern_mat n_out = rows, n_in = cols). `what` says who needs
 * that shape in the message. Errors: SPECD_INVAL (another shape), SPECD_NOMEM. */
enum specd_status safetensors_file_matrix(struct safetensors_file *f,
					  const struct safetensors_tensor *t, uint64_t rows,
					  uint64_t cols, const char *what, struct kern_mat *out,
					  struct specd_error *err);
/* t as n f32 values, or n zeros when t is NULL (an optional bias). Errors: SPECD_INVAL
 * (not a vector of n), SPECD_NOMEM. */
enum specd_status safetensors_file_vector(struct safetensors_file *f,
					  const struct safetensors_tensor *t, uint64_t n,
					  const char *what, float **out, struct specd_error *err);

#endif
