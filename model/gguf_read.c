/* GGUF reader: the first thing model loading does. Maps the file, walks header,
 * metadata and tensor infos once with every length checked against what is left of
 * the file, then hands out keys, strings and tensor data as pointers into the mapping.
 * Nothing is trusted: a count only ever bounds a loop that stops at the file's end. */
#include "gguf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

/* Where parsing stands, and how to name the input in messages. */
struct parser {
	const char *src; /* path or "<memory>" */
	const uint8_t *p;
	size_t size, pos;
	struct specd_error *err;
	struct gguf_file *f;
};

/* The smallest a key/value and a tensor info can be in the file: they bound how many
 * of each the remaining bytes can hold. */
#define KV_MIN_BYTES (8 + 1 + 4 + 1)
#define TENSOR_MIN_BYTES (8 + 1 + 4 + 8 + 4 + 8)
#define SHOW_MAX 80

/* ggml's names for the tensor types this build does not compute with, so that the
 * error says "q4_K" rather than just 12. */
static const char *ggml_type_name(uint32_t id)
{
	static const char *const names[] = {
		[6] = "q5_0", [7] = "q5_1", [9] = "q8_1", [10] = "q2_K", [11] = "q3_K",
		[12] = "q4_K", [13] = "q5_K", [14] = "q6_K", [15] = "q8_K", [16] = "iq2_xxs",
		[17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s",
		[22] = "iq2_s", [23] = "iq4_xs", [24] = "i8", [25] = "i16", [26] = "i32",
		[27] = "i64", [28] = "f64", [29] = "iq1_m", [34] = "tq1_0", [35] = "tq2_0",
	};
	if (kern_dtype_known(id))
		return kern_dtype_name((enum kern_dtype)id);
	if (id < sizeof(names) / sizeof(names[0]) && names[id])
		return names[id];
	return "unknown";
}

/* A printable, bounded copy of file bytes for messages: keys and names are untrusted. */
static const char *show(const char *s, uint64_t len, char buf[SHOW_MAX])
{
	size_t n = 0;
	for (uint64_t i = 0; i < len && n < SHOW_MAX - 4; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (n < len)
		memcpy(buf + n, "...", 3), n += 3;
	buf[n] = '\0';
	return buf;
}

static size_t left(const struct parser *ps)
{
	return ps->size - ps->pos;
}

/* Reads n bytes or fails, naming `what` (which already names the key or tensor). */
static enum specd_status take(struct parser *ps, size_t n, const uint8_t **out, const char *what)
{
	if (n > left(ps))
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: %s is truncated: needs %zu bytes at offset %zu, file size %zu",
				    ps->src, what, n, ps->pos, ps->size);
	*out = ps->p + ps->pos;
	ps->pos += n;
	return SPECD_OK;
}

static enum specd_status take_u32(struct parser *ps, uint32_t *v, const char *what)
{
	const uint8_t *b = NULL;
	enum specd_status st = take(ps, 4, &b, what);
	if (st == SPECD_OK)
		*v = rd32(b);
	return st;
}

static enum specd_status take_u64(struct parser *ps, uint64_t *v, const char *what)
{
	const uint8_t *b = NULL;
	enum specd_status st = take(ps, 8, &b, what);
	if (st == SPECD_OK)
		*v = rd64(b);
	return st;
}

/* A GGUF string: u64 length, then the bytes. `what` names it in messages. */
static enum specd_status take_str(struct parser *ps, struct gguf_str *s, const char *what)
{
	uint64_t len;
	const uint8_t *b = NULL;
	enum specd_status st = take_u64(ps, &len, what);
	if (st != SPECD_OK)
		return st;
	if (len > left(ps))
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: %s: length %llu at offset %zu runs past the end of the file (%zu bytes left)",
				    ps->src, what, (unsigned long long)len, ps->pos - 8, left(ps));
	take(ps, (size_t)len, &b, what);
	s->ptr = (const char *)b;
	s->len = len;
	return SPECD_OK;
}

static enum specd_status check_bools(struct parser *ps, const uint8_t *b, uint64_t n, const char *key)
{
	for (uint64_t i = 0; i < n; i++)
		if (b[i] > 1)
			return specd_errorf(ps->err, SPECD_INVAL,
					    "%s: key '%s': bool value %u (element %llu) is neither 0 nor 1",
					    ps->src, key, b[i], (unsigned long long)i);
	return SPECD_OK;
}

static enum specd_status parse_array(struct parser *ps, struct kv *kv, const char *key)
{
	char what[SHOW_MAX + 64];
	uint32_t elem;
	const uint8_t *b = NULL;
	enum specd_status st;

	snprintf(what, sizeof(what), "key '%s': array header", key);
	if ((st = take_u32(ps, &elem, what)) != SPECD_OK || (st = take_u64(ps, &kv->count, what)) != SPECD_OK)
		return st;
	if (elem == GGUF_TYPE_ARRAY)
		return specd_errorf(ps->err, SPECD_UNSUPPORTED,
				    "%s: key '%s': nested arrays (array of array) are not supported",
				    ps->src, key);
	if (elem >= GGUF_TYPE_COUNT)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: key '%s': unknown array element type %u",
				    ps->src, key, elem);
	kv->elem = (enum gguf_value_type)elem;
	if (elem != GGUF_TYPE_STRING) {
		size_t es = gguf_type_size(kv->elem);
		if (kv->count > left(ps) / es)
			return specd_errorf(ps->err, SPECD_INVAL,
					    "%s: key '%s': array of %llu %s elements runs past the end of the file (%zu bytes left)",
					    ps->src, key, (unsigned long long)kv->count, gguf_type_name(kv->elem), left(ps));
		take(ps, (size_t)kv->count * es, &b, what);
		kv->val = b;
		return elem == GGUF_TYPE_BOOL ? check_bools(ps, b, kv->count, key) : SPECD_OK;
	}
	/* Each string takes at least its 8-byte length, so the index is bounded by the file. */
	if (kv->count > left(ps) / 8)
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: key '%s': array of %llu strings cannot fit in the %zu bytes left",
				    ps->src, key, (unsigned long long)kv->count, left(ps));
	kv->val = ps->p + ps->pos;
	if (kv->count && !(kv->str_at = specd_malloc_array((size_t)kv->count, sizeof(uint64_t))))
		return specd_errorf(ps->err, SPECD_NOMEM, "%s: key '%s': no memory for a %llu-string index",
				    ps->src, key, (unsigned long long)kv->count);
	for (uint64_t i = 0; i < kv->count; i++) {
		struct gguf_str s;
		kv->str_at[i] = ps->pos;
		snprintf(what, sizeof(what), "key '%s': string element %llu", key, (unsigned long long)i);
		if ((st = take_str(ps, &s, what)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

static enum specd_status parse_kv(struct parser *ps, uint64_t i, struct kv *kv)
{
	char what[SHOW_MAX + 64], key[SHOW_MAX];
	uint32_t type;
	const uint8_t *b = NULL;
	enum specd_status st;

	snprintf(what, sizeof(what), "key #%llu (name)", (unsigned long long)i);
	if ((st = take_str(ps, &kv->key, what)) != SPECD_OK)
		return st;
	show(kv->key.ptr, kv->key.len, key);
	if (kv->key.len == 0)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: key #%llu has an empty name", ps->src,
				    (unsigned long long)i);
	if (memchr(kv->key.ptr, '\0', kv->key.len))
		return specd_errorf(ps->err, SPECD_INVAL, "%s: key #%llu '%s' contains a NUL byte",
				    ps->src, (unsigned long long)i, key);
	snprintf(what, sizeof(what), "key '%s': value type", key);
	if ((st = take_u32(ps, &type, what)) != SPECD_OK)
		return st;
	if (type >= GGUF_TYPE_COUNT)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: key '%s': unknown value type %u", ps->src,
				    key, type);
	kv->type = (enum gguf_value_type)type;
	snprintf(what, sizeof(what), "key '%s': %s value", key, gguf_type_name(kv->type));
	if (type == GGUF_TYPE_ARRAY)
		return parse_array(ps, kv, key);
	kv->val = ps->p + ps->pos;
	if (type == GGUF_TYPE_STRING) {
		struct gguf_str s;
		return take_str(ps, &s, what);
	}
	if ((st = take(ps, gguf_type_size(kv->type), &b, what)) != SPECD_OK)
		return st;
	return type == GGUF_TYPE_BOOL ? check_bools(ps, b, 1, key) : SPECD_OK;
}

/* Inserts entry idx (0-based) into an open-addressing table; returns the index of an
 * earlier entry with the same name, or UINT64_MAX. */
static uint64_t hash_insert(uint64_t *tab, uint64_t cap, const char *s, uint64_t len, uint64_t idx,
			    const struct gguf_file *f, bool is_kv)
{
	for (uint64_t h = hash_bytes(s, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
		if (!tab[h]) {
			tab[h] = idx + 1;
			return UINT64_MAX;
		}
		uint64_t j = tab[h] - 1;
		const char *o = is_kv ? f->kvs[j].key.ptr : f->tensors[j].name;
		uint64_t olen = is_kv ? f->kvs[j].key.len : strlen(o);
		if (olen == len && memcmp(o, s, len) == 0)
			return j;
	}
}

static enum specd_status build_hash(struct parser *ps, bool is_kv)
{
	struct gguf_file *f = ps->f;
	uint64_t n = is_kv ? f->n_kv : f->n_tensors, cap = 8;
	char a[SHOW_MAX];
	while (cap < 2 * n)
		cap *= 2;
	uint64_t *tab = specd_calloc((size_t)cap, sizeof(uint64_t));
	if (!tab)
		return specd_errorf(ps->err, SPECD_NOMEM, "%s: no memory for the %s index", ps->src,
				    is_kv ? "key" : "tensor");
	if (is_kv)
		f->kv_hash = tab, f->kv_hash_cap = cap;
	else
		f->t_hash = tab, f->t_hash_cap = cap;
	for (uint64_t i = 0; i < n; i++) {
		const char *s = is_kv ? f->kvs[i].key.ptr : f->tensors[i].name;
		uint64_t len = is_kv ? f->kvs[i].key.len : strlen(s);
		uint64_t j = hash_insert(tab, cap, s, len, i, f, is_kv);
		if (j != UINT64_MAX)
			return specd_errorf(ps->err, SPECD_INVAL, "%s: duplicate %s '%s' (entries #%llu and #%llu)",
					    ps->src, is_kv ? "key" : "tensor name", show(s, len, a),
					    (unsigned long long)j, (unsigned long long)i);
	}
	return SPECD_OK;
}

static enum specd_status parse_alignment(struct parser *ps)
{
	struct gguf_file *f = ps->f;
	uint64_t i = gguf_index_find(f, "general.alignment", true);
	f->alignment = GGUF_DEFAULT_ALIGNMENT;
	if (i == UINT64_MAX)
		return SPECD_OK;
	if (f->kvs[i].type != GGUF_TYPE_U32)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: key 'general.alignment' has type %s, not u32",
				    ps->src, gguf_type_name(f->kvs[i].type));
	uint32_t a = rd32(f->kvs[i].val);
	if (a == 0 || (a & (a - 1)))
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: key 'general.alignment' = %u is not a power of two", ps->src, a);
	f->alignment = a;
	return SPECD_OK;
}

/* Grows an array of `size`-byte items to hold one more; *cap doubles. */
static bool grow(void **arr, uint64_t n, uint64_t *cap, size_t size)
{
	if (n < *cap)
		return true;
	uint64_t nc = *cap ? *cap * 2 : 16;
	void *p = specd_realloc_array(*arr, (size_t)nc, size);
	if (!p)
		return false;
	memset((char *)p + n * size, 0, (size_t)(nc - n) * size);
	*arr = p;
	*cap = nc;
	return true;
}

static enum specd_status parse_tensor_info(struct parser *ps, uint64_t i, struct gguf_tensor *t)
{
	char what[SHOW_MAX + 64], name[SHOW_MAX];
	struct gguf_str s;
	uint32_t type;
	enum specd_status st;

	snprintf(what, sizeof(what), "tensor #%llu (name)", (unsigned long long)i);
	if ((st = take_str(ps, &s, what)) != SPECD_OK)
		return st;
	show(s.ptr, s.len, name);
	if (s.len == 0)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: tensor #%llu has an empty name", ps->src,
				    (unsigned long long)i);
	if (memchr(s.ptr, '\0', s.len))
		return specd_errorf(ps->err, SPECD_INVAL, "%s: tensor #%llu '%s': name contains a NUL byte",
				    ps->src, (unsigned long long)i, name);
	char *copy = specd_malloc_array((size_t)s.len + 1, 1);
	if (!copy)
		return specd_errorf(ps->err, SPECD_NOMEM, "%s: tensor '%s': no memory for its name",
				    ps->src, name);
	memcpy(copy, s.ptr, (size_t)s.len);
	copy[s.len] = '\0';
	t->name = copy;

	snprintf(what, sizeof(what), "tensor '%s': info", name);
	if ((st = take_u32(ps, &t->n_dims, what)) != SPECD_OK)
		return st;
	if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: tensor '%s': n_dims %u is outside 1..%d",
				    ps->src, name, t->n_dims, GGUF_MAX_DIMS);
	t->n_elements = 1;
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->n_dims)
			continue;
		if ((st = take_u64(ps, &t->ne[d], what)) != SPECD_OK)
			return st;
		if (t->ne[d] == 0)
			return specd_errorf(ps->err, SPECD_INVAL, "%s: tensor '%s': dimension %u is 0",
					    ps->src, name, d);
		if (t->ne[d] > INT64_MAX / t->n_elements)
			return specd_errorf(ps->err, SPECD_INVAL,
					    "%s: tensor '%s': element count overflows at dimension %u (ne = %llu)",
					    ps->src, name, d, (unsigned long long)t->ne[d]);
		t->n_elements *= t->ne[d];
	}
	if ((st = take_u32(ps, &type, what)) != SPECD_OK || (st = take_u64(ps, &t->offset, what)) != SPECD_OK)
		return st;
	if (!kern_dtype_known(type))
		return specd_errorf(ps->err, SPECD_UNSUPPORTED,
				    "%s: tensor '%s': type id %u (%s) is not supported (f32, f16, bf16, q8_0, q4_0, q4_1 are)",
				    ps->src, name, type, ggml_type_name(type));
	t->type = (enum kern_dtype)type;
	size_t block = kern_dtype_block(t->type);
	if (t->ne[0] % block)
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: tensor '%s': row length %llu is not a multiple of the %s block size %zu",
				    ps->src, name, (unsigned long long)t->ne[0], kern_dtype_name(t->type), block);
	uint64_t rows = t->n_elements / t->ne[0];
	uint64_t row_bytes = t->ne[0] / block * kern_dtype_block_bytes(t->type);
	if (row_bytes / kern_dtype_block_bytes(t->type) != t->ne[0] / block || row_bytes > INT64_MAX / rows)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: tensor '%s': byte size overflows", ps->src, name);
	t->nbytes = row_bytes * rows;
	return SPECD_OK;
}

static int by_offset(const void *a, const void *b)
{
	const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
	const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Tensor data: aligned, inside the file, and no two tensors sharing bytes. */
static enum specd_status check_data(struct parser *ps)
{
	struct gguf_file *f = ps->f;
	uint64_t a = f->alignment;
	uint64_t data = ps->pos + (a - ps->pos % a) % a;
	f->data_offset = data;
	if (!f->n_tensors)
		return SPECD_OK;
	if (data > ps->size)
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: tensor data section would start at offset %llu, past the end of the file (%zu bytes); tensor '%s' has no data",
				    ps->src, (unsigned long long)data, ps->size, f->tensors[0].name);
	uint64_t room = ps->size - data;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		struct gguf_tensor *t = &f->tensors[i];
		if (t->offset % a)
			return specd_errorf(ps->err, SPECD_INVAL,
					    "%s: tensor '%s': data offset %llu is not a multiple of the alignment %llu",
					    ps->src, t->name, (unsigned long long)t->offset, (unsigned long long)a);
		if (t->offset > room || t->nbytes > room - t->offset)
			return specd_errorf(ps->err, SPECD_INVAL,
					    "%s: tensor '%s': data [%llu, +%llu) lies outside the file's %llu data bytes (truncated?)",
					    ps->src, t->name, (unsigned long long)t->offset,
					    (unsigned long long)t->nbytes, (unsigned long long)room);
		t->data = f->base + data + t->offset;
	}
	const struct gguf_tensor **order = specd_malloc_array((size_t)f->n_tensors, sizeof(*order));
	if (!order)
		return specd_errorf(ps->err, SPECD_NOMEM, "%s: no memory to sort tensors", ps->src);
	for (uint64_t i = 0; i < f->n_tensors; i++)
		order[i] = &f->tensors[i];
	qsort(order, (size_t)f->n_tensors, sizeof(*order), by_offset);
	enum specd_status st = SPECD_OK;
	for (uint64_t i = 1; i < f->n_tensors && st == SPECD_OK; i++) {
		const struct gguf_tensor *x = order[i - 1], *y = order[i];
		if (x->offset + x->nbytes > y->offset)
			st = specd_errorf(ps->err, SPECD_INVAL,
					  "%s: tensors '%s' [%llu, +%llu) and '%s' [%llu, +%llu) overlap",
					  ps->src, x->name, (unsigned long long)x->offset,
					  (unsigned long long)x->nbytes, y->name,
					  (unsigned long long)y->offset, (unsigned long long)y->nbytes);
	}
	specd_free(order);
	return st;
}

static enum specd_status parse_header(struct parser *ps, uint64_t *n_tensors, uint64_t *n_kv)
{
	const uint8_t *b = NULL;
	uint32_t v;
	if (ps->size < 4 || memcmp(ps->p, GGUF_MAGIC, 4) != 0)
		return specd_errorf(ps->err, SPECD_INVAL, "%s: not a GGUF file (bad magic%s)", ps->src,
				    ps->size < 4 ? ": file shorter than 4 bytes" : "");
	take(ps, 4, &b, "magic");
	enum specd_status st = take_u32(ps, &v, "header (version)");
	if (st != SPECD_OK)
		return st;
	uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
	if ((v & 0xffff) == 0 && swapped >= 1 && swapped <= 3)
		return specd_errorf(ps->err, SPECD_UNSUPPORTED,
				    "%s: big-endian GGUF file (version %u byte-swapped) is not supported",
				    ps->src, swapped);
	if (v == 1)
		return specd_errorf(ps->err, SPECD_UNSUPPORTED,
				    "%s: GGUF version 1 (32-bit counts) is not supported; convert it to version 3",
				    ps->src);
	if (v != 2 && v != 3)
		return specd_errorf(ps->err, SPECD_UNSUPPORTED,
				    "%s: GGUF version %u is not supported (2 and 3 are)", ps->src, v);
	ps->f->version = v;
	if ((st = take_u64(ps, n_tensors, "header (tensor count)")) != SPECD_OK ||
	    (st = take_u64(ps, n_kv, "header (key count)")) != SPECD_OK)
		return st;
	if (*n_kv > left(ps) / KV_MIN_BYTES)
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: header claims %llu keys but the file can hold at most %zu",
				    ps->src, (unsigned long long)*n_kv, left(ps) / KV_MIN_BYTES);
	if (*n_tensors > left(ps) / TENSOR_MIN_BYTES)
		return specd_errorf(ps->err, SPECD_INVAL,
				    "%s: header claims %llu tensors but the file can hold at most %zu",
				    ps->src, (unsigned long long)*n_tensors, left(ps) / TENSOR_MIN_BYTES);
	return SPECD_OK;
}

static enum specd_status parse(struct parser *ps)
{
	struct gguf_file *f = ps->f;
	uint64_t n_tensors, n_kv, cap = 0;
	enum specd_status st = parse_header(ps, &n_tensors, &n_kv);
	if (st != SPECD_OK)
		return st;
	/* Arrays grow as entries really parse, so memory follows the file's content,
	 * never a count it claims. */
	for (uint64_t i = 0; i < n_kv; i++) {
		if (!grow((void **)&f->kvs, f->n_kv, &cap, sizeof(*f->kvs)))
			return specd_errorf(ps->err, SPECD_NOMEM, "%s: no memory for key #%llu", ps->src,
					    (unsigned long long)i);
		f->n_kv++;
		if ((st = parse_kv(ps, i, &f->kvs[i])) != SPECD_OK)
			return st;
	}
	if ((st = build_hash(ps, true)) != SPECD_OK || (st = parse_alignment(ps)) != SPECD_OK)
		return st;
	cap = 0;
	for (uint64_t i = 0; i < n_tensors; i++) {
		if (!grow((void **)&f->tensors, f->n_tensors, &cap, sizeof(*f->tensors)))
			return specd_errorf(ps->err, SPECD_NOMEM, "%s: no memory for tensor #%llu", ps->src,
					    (unsigned long long)i);
		f->n_tensors++;
		if ((st = parse_tensor_info(ps, i, &f->tensors[i])) != SPECD_OK)
			return st;
	}
	if ((st = build_hash(ps, false)) != SPECD_OK)
		return st;
	return check_data(ps);
}

/* Releases a base or an owned block as its kind says. */
static void release(enum gguf_base kind, const void *p, size_t size)
{
	if (kind == GGUF_BASE_MAPPED)
		munmap((void *)(uintptr_t)p, size);
	else if (kind == GGUF_BASE_OWNED)
		specd_free((void *)(uintptr_t)p);
}

static enum specd_status open_common(const char *src, const void *data, size_t size,
				     enum gguf_base kind, struct gguf_file **out,
				     struct specd_error *err)
{
	struct gguf_file *f = specd_calloc(1, sizeof(*f));
	if (!f) {
		release(kind, data, size);
		return specd_errorf(err, SPECD_NOMEM, "%s: no memory", src);
	}
	f->base = data;
	f->size = size;
	f->base_kind = kind;
	struct parser ps = {.src = src, .p = data, .size = size, .err = err, .f = f};
	enum specd_status st = parse(&ps);
	if (st != SPECD_OK) {
		gguf_close(f);
		return st;
	}
	*out = f;
	return SPECD_OK;
}

enum specd_status gguf_open_memory(const void *data, size_t size, struct gguf_file **out,
				   struct specd_error *err)
{
	if (!out || (!data && size))
		return specd_errorf(err, SPECD_INVAL, "gguf_open_memory: NULL argument");
	return open_common("<memory>", size ? data : "", size, GGUF_BASE_BORROWED, out, err);
}

enum specd_status gguf_open(const char *path, struct gguf_file **out, struct specd_error *err)
{
	if (!path || !out)
		return specd_errorf(err, SPECD_INVAL, "gguf_open: NULL argument");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return specd_errorf(err, SPECD_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		int e = errno;
		close(fd);
		return specd_errorf(err, SPECD_IO, "%s: cannot stat: %s", path, strerror(e));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return specd_errorf(err, SPECD_INVAL, "%s: not a regular file", path);
	}
	if (sb.st_size == 0) {
		close(fd);
		return specd_errorf(err, SPECD_INVAL, "%s: not a GGUF file (empty)", path);
	}
	if ((uint64_t)sb.st_size > SIZE_MAX) {
		close(fd);
		return specd_errorf(err, SPECD_UNSUPPORTED, "%s: too large to map", path);
	}
	void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (m == MAP_FAILED)
		return specd_errorf(err, SPECD_IO, "%s: cannot map %lld bytes: %s", path,
				    (long long)sb.st_size, strerror(e));
	return open_common(path, m, (size_t)sb.st_size, GGUF_BASE_MAPPED, out, err);
}

void gguf_close(struct gguf_file *f)
{
	if (!f)
		return;
	for (uint64_t i = 0; i < f->n_kv; i++)
		specd_free(f->kvs[i].str_at);
	for (uint64_t i = 0; i < f->n_tensors; i++)
		specd_free((void *)(uintptr_t)f->tensors[i].name);
	specd_free(f->kvs);
	specd_free(f->tensors);
	specd_free(f->kv_hash);
	specd_free(f->t_hash);
	for (uint64_t i = 0; i < f->n_owned; i++)
		release(f->owned[i].map_size ? GGUF_BASE_MAPPED : GGUF_BASE_OWNED, f->owned[i].ptr,
			f->owned[i].map_size);
	specd_free(f->owned);
	release(f->base_kind, f->base, f->size);
	specd_free(f);
}

enum specd_status gguf_view_open(void *image, size_t size, const char *src,
				 struct gguf_file **out, struct specd_error *err)
{
	return open_common(src, image, size, GGUF_BASE_OWNED, out, err);
}

enum specd_status gguf_view_own(struct gguf_file *f, void *ptr, size_t map_size)
{
	if (!grow((void **)&f->owned, f->n_owned, &f->owned_cap, sizeof(*f->owned))) {
		release(map_size ? GGUF_BASE_MAPPED : GGUF_BASE_OWNED, ptr, map_size);
		return SPECD_NOMEM;
	}
	f->owned[f->n_owned++] = (struct gguf_owned){.ptr = ptr, .map_size = map_size};
	return SPECD_OK;
}

enum specd_status gguf_view_add_tensor(struct gguf_file *f, const char *name,
				       enum kern_dtype type, uint32_t n_dims,
				       const uint64_t *ne, const void *data)
{
	struct gguf_tensor t = {.type = type, .n_dims = n_dims, .n_elements = 1, .data = data};
	if (!kern_dtype_known(type) || n_dims < 1 || n_dims > GGUF_MAX_DIMS)
		return SPECD_INVAL;
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
		t.ne[d] = d < n_dims ? ne[d] : 1;
		if (t.ne[d] == 0 || t.ne[d] > INT64_MAX / t.n_elements)
			return SPECD_INVAL;
		t.n_elements *= t.ne[d];
	}
	uint64_t rows = t.n_elements / t.ne[0];
	size_t row = t.ne[0] <= SIZE_MAX ? kern_dtype_row_bytes(type, (size_t)t.ne[0]) : 0;
	if (!row || row > INT64_MAX / rows)
		return SPECD_INVAL;
	t.nbytes = row * rows;
	if (!grow((void **)&f->tensors, f->n_tensors, &f->tensors_cap, sizeof(*f->tensors)) ||
	    !(t.name = specd_strdup(name)))
		return SPECD_NOMEM;
	f->tensors[f->n_tensors++] = t;
	return SPECD_OK;
}

enum specd_status gguf_view_index(struct gguf_file *f, const char *src, struct specd_error *err)
{
	struct parser ps = {.src = src, .err = err, .f = f};
	specd_free(f->t_hash); /* the empty index of gguf_view_open */
	f->t_hash = NULL;
	f->t_hash_cap = 0;
	return build_hash(&ps, false);
}
