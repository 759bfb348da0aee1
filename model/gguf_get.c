/* GGUF accessors: what the tokenizer and the forward pass call after gguf_open to
 * read hyper-parameters, vocabularies and tensors. Lookups go through the hash indexes
 * built at open; values are decoded from the mapping on each call (no copies). */
#include <limits.h>
#include <string.h>

#include "gguf_int.h"

static const char *const type_names[GGUF_TYPE_COUNT] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_type_name(enum gguf_value_type t)
{
	return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "?";
}

size_t gguf_type_size(enum gguf_value_type t)
{
	switch (t) {
	case GGUF_TYPE_U8: case GGUF_TYPE_I8: case GGUF_TYPE_BOOL: return 1;
	case GGUF_TYPE_U16: case GGUF_TYPE_I16: return 2;
	case GGUF_TYPE_U32: case GGUF_TYPE_I32: case GGUF_TYPE_F32: return 4;
	case GGUF_TYPE_U64: case GGUF_TYPE_I64: case GGUF_TYPE_F64: return 8;
	case GGUF_TYPE_STRING: case GGUF_TYPE_ARRAY: case GGUF_TYPE_COUNT: break;
	}
	return 0;
}

uint64_t gguf_index_find(const struct gguf_file *f, const char *s, bool is_kv)
{
	const uint64_t *tab = is_kv ? f->kv_hash : f->t_hash;
	uint64_t cap = is_kv ? f->kv_hash_cap : f->t_hash_cap;
	if (!cap || !s)
		return UINT64_MAX;
	uint64_t len = strlen(s);
	for (uint64_t h = hash_bytes(s, len) & (cap - 1); tab[h]; h = (h + 1) & (cap - 1)) {
		uint64_t j = tab[h] - 1;
		const char *o = is_kv ? f->kvs[j].key.ptr : f->tensors[j].name;
		uint64_t olen = is_kv ? f->kvs[j].key.len : strlen(o);
		if (olen == len && memcmp(o, s, len) == 0)
			return j;
	}
	return UINT64_MAX;
}

uint32_t gguf_version(const struct gguf_file *f)
{
	return f->version;
}

uint32_t gguf_alignment(const struct gguf_file *f)
{
	return f->alignment;
}

uint64_t gguf_data_offset(const struct gguf_file *f)
{
	return f->data_offset;
}

const void *gguf_mapping(const struct gguf_file *f, size_t *size)
{
	if (size)
		*size = f->size;
	return f->base;
}

uint64_t gguf_kv_count(const struct gguf_file *f)
{
	return f->n_kv;
}

static const struct kv *find_kv(const struct gguf_file *f, const char *key)
{
	uint64_t i = gguf_index_find(f, key, true);
	return i == UINT64_MAX ? NULL : &f->kvs[i];
}

bool gguf_has_key(const struct gguf_file *f, const char *key)
{
	return find_kv(f, key) != NULL;
}

bool gguf_key_at(const struct gguf_file *f, uint64_t i, struct gguf_str *key, enum gguf_value_type *type)
{
	if (i >= f->n_kv)
		return false;
	if (key)
		*key = f->kvs[i].key;
	if (type)
		*type = f->kvs[i].type;
	return true;
}

bool gguf_get_type(const struct gguf_file *f, const char *key, enum gguf_value_type *out)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv)
		return false;
	*out = kv->type;
	return true;
}

/* An integer value as sign and magnitude: false for non-integer types. */
static bool get_int(const struct gguf_file *f, const char *key, bool *neg, uint64_t *mag)
{
	const struct kv *kv = find_kv(f, key);
	int64_t s;
	if (!kv)
		return false;
	switch (kv->type) {
	case GGUF_TYPE_U8: *neg = false, *mag = kv->val[0]; return true;
	case GGUF_TYPE_U16: *neg = false, *mag = rd16(kv->val); return true;
	case GGUF_TYPE_U32: *neg = false, *mag = rd32(kv->val); return true;
	case GGUF_TYPE_U64: *neg = false, *mag = rd64(kv->val); return true;
	case GGUF_TYPE_I8: s = (int8_t)kv->val[0]; break;
	case GGUF_TYPE_I16: s = (int16_t)rd16(kv->val); break;
	case GGUF_TYPE_I32: s = (int32_t)rd32(kv->val); break;
	case GGUF_TYPE_I64: s = (int64_t)rd64(kv->val); break;
	default: return false;
	}
	*neg = s < 0;
	*mag = s < 0 ? 0 - (uint64_t)s : (uint64_t)s;
	return true;
}

bool gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
	bool neg;
	uint64_t m;
	if (!get_int(f, key, &neg, &m) || neg || m > UINT32_MAX)
		return false;
	*out = (uint32_t)m;
	return true;
}

bool gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out)
{
	bool neg;
	uint64_t m;
	if (!get_int(f, key, &neg, &m) || m > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX))
		return false;
	*out = neg ? (int32_t)(-(int64_t)m) : (int32_t)m;
	return true;
}

bool gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out)
{
	bool neg;
	uint64_t m;
	if (!get_int(f, key, &neg, &m) || neg)
		return false;
	*out = m;
	return true;
}

bool gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out)
{
	bool neg;
	uint64_t m;
	if (!get_int(f, key, &neg, &m) || m > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
		return false;
	*out = neg ? (m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
	return true;
}

bool gguf_get_f64(const struct gguf_file *f, const char *key, double *out)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv)
		return false;
	if (kv->type == GGUF_TYPE_F32) {
		uint32_t u = rd32(kv->val);
		float v;
		memcpy(&v, &u, 4);
		*out = v;
		return true;
	}
	if (kv->type == GGUF_TYPE_F64) {
		uint64_t u = rd64(kv->val);
		memcpy(out, &u, 8);
		return true;
	}
	return false;
}

bool gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
	double d;
	if (!gguf_get_f64(f, key, &d))
		return false;
	*out = (float)d;
	return true;
}

bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv || kv->type != GGUF_TYPE_BOOL)
		return false;
	*out = kv->val[0] != 0;
	return true;
}

bool gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv || kv->type != GGUF_TYPE_STRING)
		return false;
	out->len = rd64(kv->val);
	out->ptr = (const char *)kv->val + 8;
	return true;
}

bool gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_value_type *elem,
		  uint64_t *count, const void **data)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv || kv->type != GGUF_TYPE_ARRAY)
		return false;
	if (elem)
		*elem = kv->elem;
	if (count)
		*count = kv->count;
	if (data)
		*data = kv->elem == GGUF_TYPE_STRING ? NULL : kv->val;
	return true;
}

bool gguf_get_arr_str(const struct gguf_file *f, const char *key, uint64_t i, struct gguf_str *out)
{
	const struct kv *kv = find_kv(f, key);
	if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->elem != GGUF_TYPE_STRING || i >= kv->count)
		return false;
	const uint8_t *p = f->base + kv->str_at[i];
	out->len = rd64(p);
	out->ptr = (const char *)p + 8;
	return true;
}

uint64_t gguf_tensor_count(const struct gguf_file *f)
{
	return f->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_tensors ? &f->tensors[i] : NULL;
}

uint64_t gguf_tensor_index(const struct gguf_file *f, const struct gguf_tensor *t)
{
	return (uint64_t)(t - f->tensors);
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
	uint64_t i = gguf_index_find(f, name, false);
	return i == UINT64_MAX ? NULL : &f->tensors[i];
}
