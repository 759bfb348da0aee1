/* GGUF weight files: the reader maps a file read-only, validates every count, offset
 * and size against it, and exposes metadata and tensors in place (no copies); the
 * writer builds a file from keys and tensors (tools/ use it to generate test models).
 * The tokenizer and the forward pass reach hyper-parameters, vocabularies and weights
 * only through this header.
 *
 * Supported: GGUF versions 2 and 3, little-endian. Version 1 (32-bit counts) and
 * big-endian files are rejected with a message saying so. Tensor types are those of
 * kern_dtype_known() (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
 * Nested arrays (an array whose element type is ARRAY) are allowed by the format's
 * grammar but used by no real file and by nothing in specd: the reader rejects them,
 * naming the key, and the writer cannot produce them.
 *
 * Threads: a struct gguf_file is immutable after gguf_open; any thread may read it
 * concurrently. A struct gguf_writer belongs to one thread at a time. */
#ifndef SPECD_MODEL_GGUF_H
#define SPECD_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "kernels/dtype.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

enum gguf_value_type {
	GGUF_TYPE_U8 = 0,
	GGUF_TYPE_I8 = 1,
	GGUF_TYPE_U16 = 2,
	GGUF_TYPE_I16 = 3,
	GGUF_TYPE_U32 = 4,
	GGUF_TYPE_I32 = 5,
	GGUF_TYPE_F32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_U64 = 10,
	GGUF_TYPE_I64 = 11,
	GGUF_TYPE_F64 = 12,
	GGUF_TYPE_COUNT
};

/* "u8", "string", "array", ...; "?" outside the enum. */
const char *gguf_type_name(enum gguf_value_type t);
/* Bytes of one element of a fixed-size type; 0 for STRING, ARRAY and unknown ids. */
size_t gguf_type_size(enum gguf_value_type t);

/* A string inside the file: not NUL-terminated, points into the mapping and lives as
 * long as the struct gguf_file. May contain any bytes (GGUF says UTF-8; not checked). */
struct gguf_str {
	const char *ptr;
	uint64_t len;
};

struct gguf_tensor {
	const char *name;      /* NUL-terminated, owned by the file object */
	enum kern_dtype type;  /* always kern_dtype_known() */
	uint32_t n_dims;       /* 1..GGUF_MAX_DIMS */
	uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] = elements per row (innermost); unused dims = 1 */
	uint64_t n_elements;   /* product of ne, checked not to overflow */
	uint64_t nbytes;       /* ne[0] row bytes * rows */
	uint64_t offset;       /* relative to the data section, a multiple of the alignment */
	const void *data;      /* into the read-only mapping; nbytes readable */
};

struct gguf_file;

/* Maps `path` read-only and validates it completely (header, every key, every tensor
 * info, tensor data inside the file, aligned and non-overlapping, no duplicate keys or
 * tensor names). On success *out owns the mapping. Errors: SPECD_IO (open/stat/mmap
 * failed; message names the path and errno text), SPECD_INVAL (malformed file;
 * message names the path and the offending key or tensor and what is wrong),
 * SPECD_UNSUPPORTED (GGUF v1, big-endian, a tensor type this build cannot compute
 * with), SPECD_NOMEM. *out is written only on success. */
enum specd_status gguf_open(const char *path, struct gguf_file **out, struct specd_error *err);

/* As gguf_open over a caller's buffer (tests, fuzzing). `data` must outlive the
 * object and is never written; size 0 is a (rejected) empty file. */
enum specd_status gguf_open_memory(const void *data, size_t size, struct gguf_file **out,
				   struct specd_error *err);

/* Frees the object and unmaps the file. NULL is a no-op. Pointers obtained from the
 * file (strings, tensor data, tensor structs) are invalid afterwards. */
void gguf_close(struct gguf_file *f);

uint32_t gguf_version(const struct gguf_file *f);
/* general.alignment, or GGUF_DEFAULT_ALIGNMENT when the key is absent. */
uint32_t gguf_alignment(const struct gguf_file *f);
/* Where the data section starts, in bytes from the start of the file; and the whole
 * mapping (e.g. for sharding code that needs file offsets). */
uint64_t gguf_data_offset(const struct gguf_file *f);
const void *gguf_mapping(const struct gguf_file *f, size_t *size);

/* Metadata. Keys are compared byte-exact. Every getter returns false, and leaves *out
 * untouched, when the key is absent or its value does not convert as documented. */
uint64_t gguf_kv_count(const struct gguf_file *f);
bool gguf_has_key(const struct gguf_file *f, const char *key);
/* The i-th key in file order (i < gguf_kv_count), its value type; false when out of range. */
bool gguf_key_at(const struct gguf_file *f, uint64_t i, struct gguf_str *key,
		 enum gguf_value_type *type);
/* The value type of `key`; false when absent. */
bool gguf_get_type(const struct gguf_file *f, const char *key, enum gguf_value_type *out);

/* Any integer type (U8..I64, not BOOL) whose value fits the result. */
bool gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out);
bool gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out);
/* F32, or F64 (narrowed). */
bool gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
/* F32 or F64 (F32 widened exactly). */
bool gguf_get_f64(const struct gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out);

/* Arrays: element type and count. For numeric and BOOL arrays *data points at the
 * packed little-endian elements in the mapping (possibly unaligned for their type:
 * read with memcpy). For STRING arrays *data is NULL; use gguf_get_arr_str. Any of
 * elem, count, data may be NULL when not wanted. */
bool gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_value_type *elem,
		  uint64_t *count, const void **data);
/* Element i of a STRING array, in O(1) (an index is built at open). */
bool gguf_get_arr_str(const struct gguf_file *f, const char *key, uint64_t i,
		      struct gguf_str *out);

/* Tensors, in file order. gguf_find_tensor is a hash lookup; NULL when absent. */
uint64_t gguf_tensor_count(const struct gguf_file *f);
const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *f, uint64_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);
/* The i with gguf_tensor_at(f, i) == t, for a t obtained from f (the loader marks
 * what it has taken by it). */
uint64_t gguf_tensor_index(const struct gguf_file *f, const struct gguf_tensor *t);

/* Writer. Keys keep the order they were first set in; setting a key again replaces its
 * value in place. Strings are copied; tensor data is copied at add time (the caller's
 * buffer may be reused at once). Errors: SPECD_INVAL (NULL/empty key or name, a
 * duplicate tensor name, a tensor shape the type cannot hold, a non-numeric elem in
 * set_arr, a general.alignment that is not a power of two), SPECD_NOMEM. */
struct gguf_writer;

enum specd_status gguf_writer_create(struct gguf_writer **out);
void gguf_writer_destroy(struct gguf_writer *w); /* NULL ok */

enum specd_status gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v);
enum specd_status gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v);
enum specd_status gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v);
enum specd_status gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v);
enum specd_status gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
enum specd_status gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
enum specd_status gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
enum specd_status gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v);
enum specd_status gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
enum specd_status gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v);
enum specd_status gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
enum specd_status gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
/* A string with explicit length (may contain NUL bytes). */
enum specd_status gguf_writer_set_strn(struct gguf_writer *w, const char *key, const char *v,
				       uint64_t len);
enum specd_status gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
					  const char *const *v, uint64_t n);
/* Numeric or BOOL elements, n of them, packed in host (little-endian) order. */
enum specd_status gguf_writer_set_arr(struct gguf_writer *w, const char *key,
				      enum gguf_value_type elem, const void *data, uint64_t n);

/* n_dims 1..4, ne[0] a multiple of the type's block size. `data` (nbytes of the shape)
 * is copied now; data NULL reserves the tensor and its bytes are supplied later by the
 * streaming path below. */
enum specd_status gguf_writer_add_tensor(struct gguf_writer *w, const char *name,
					 enum kern_dtype type, uint32_t n_dims,
					 const uint64_t *ne, const void *data);

/* Writes the whole file (version 2 or 3). Every tensor must have data. Errors:
 * SPECD_IO (names path and errno), SPECD_INVAL (bad version, missing tensor data). */
enum specd_status gguf_writer_write(struct gguf_writer *w, const char *path, uint32_t version,
				    struct specd_error *err);

/* The file gguf_writer_write would write, for a writer holding keys only (no tensors),
 * as a buffer the caller frees with specd_free: gguf_open_memory reads it (the views of
 * model_file.h build their metadata so). Errors: SPECD_INVAL (tensors declared, bad
 * version, a write under way), SPECD_NOMEM. */
enum specd_status gguf_writer_image(struct gguf_writer *w, uint32_t version, void **out,
				    size_t *size);

/* Streaming, for models larger than memory: declare every tensor with data NULL, then
 * gguf_writer_begin writes header, metadata and tensor infos; then the tensors' bytes
 * are given in declaration order with gguf_writer_stream (any number of calls per
 * tensor, exactly nbytes in all); gguf_writer_finish pads and closes the file. After
 * an error the partial file is removed and the writer may only be destroyed. */
enum specd_status gguf_writer_begin(struct gguf_writer *w, const char *path, uint32_t version,
				    struct specd_error *err);
enum specd_status gguf_writer_stream(struct gguf_writer *w, const void *bytes, size_t n,
				     struct specd_error *err);
enum specd_status gguf_writer_finish(struct gguf_writer *w, struct specd_error *err);

#endif
