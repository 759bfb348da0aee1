/* Folder-private layout of a parsed GGUF file, shared by the parser (gguf_read.c)
 * and the accessors (gguf_get.c). Not for other modules: they use gguf.h. */
#ifndef SPECD_MODEL_GGUF_INT_H
#define SPECD_MODEL_GGUF_INT_H

#include "gguf.h"


struct kv {
	struct gguf_str key;
	enum gguf_value_type type;
	enum gguf_value_type elem; /* arrays only */
	uint64_t count;            /* arrays only */
	const uint8_t *val;        /* scalar bytes; string's length prefix; array elements */
	uint64_t *str_at;          /* STRING arrays: file offset of each element's length */
};

/* Where a gguf_file's base comes from, and so how gguf_close releases it. */
enum gguf_base { GGUF_BASE_BORROWED, GGUF_BASE_MAPPED, GGUF_BASE_OWNED };

/* Memory a view holds besides its base (tensor data in other mappings, converted
 * copies): gguf_close unmaps it (map_size > 0) or frees it with specd_free. */
struct gguf_owned {
	void *ptr;
	size_t map_size;
};

struct gguf_file {
	const uint8_t *base; /* the whole file, read-only; a view's metadata image */
	size_t size;
	enum gguf_base base_kind;
	uint32_t version, alignment;
	uint64_t data_offset;
	struct kv *kvs; /* file order */
	uint64_t n_kv;
	struct gguf_tensor *tensors; /* file order */
	uint64_t n_tensors;
	uint64_t *kv_hash, *t_hash; /* open addressing: index + 1, 0 = empty */
	uint64_t kv_hash_cap, t_hash_cap;
	uint64_t tensors_cap;        /* views only */
	struct gguf_owned *owned;    /* views only */
	uint64_t n_owned, owned_cap;
};

/* Little-endian reads from the (unaligned) mapping. */
static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* FNV-1a, for the key and tensor-name indexes. */
static inline uint64_t hash_bytes(const char *s, uint64_t len)
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
	for (uint64_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
	return h;
}

/* Index of the key (is_kv) or tensor named s, or UINT64_MAX when absent. */
uint64_t gguf_index_find(const struct gguf_file *f, const char *s, bool is_kv);

/* Views (model_file.h): keys parsed from an in-memory GGUF image without tensors
 * (gguf_writer_image), which the object takes over (freed by gguf_close; at once on
 * failure), and tensors attached afterwards whose data lie in memory handed over with
 * gguf_view_own or outliving the object. gguf_view_index ends the building: after
 * it the object is an ordinary, immutable gguf_file. `src` names the view in
 * messages. Errors: as gguf_open_memory; SPECD_NOMEM. */
enum specd_status gguf_view_open(void *image, size_t size, const char *src,
				 struct gguf_file **out, struct specd_error *err);
/* Hands ptr over (see struct gguf_owned); on SPECD_NOMEM it is released at once. */
enum specd_status gguf_view_own(struct gguf_file *f, void *ptr, size_t map_size);
/* Appends a tensor: the name is copied, n_elements and nbytes computed from the
 * shape; data must hold nbytes. SPECD_INVAL for a shape gguf_open would reject. */
enum specd_status gguf_view_add_tensor(struct gguf_file *f, const char *name,
				       enum kern_dtype type, uint32_t n_dims,
				       const uint64_t *ne, const void *data);
/* Indexes the tensors by name; SPECD_INVAL for a duplicate name. */
enum specd_status gguf_view_index(struct gguf_file *f, const char *src,
				  struct specd_error *err);

#endif
