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

struct gguf_file {
	const uint8_t *base; /* the whole file, read-only */
	size_t size;
	bool mapped;
	uint32_t version, alignment;
	uint64_t data_offset;
	struct kv *kvs; /* file order */
	uint64_t n_kv;
	struct gguf_tensor *tensors; /* file order */
	uint64_t n_tensors;
	uint64_t *kv_hash, *t_hash; /* open addressing: index + 1, 0 = empty */
	uint64_t kv_hash_cap, t_hash_cap;
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

#endif
