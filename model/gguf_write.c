/* GGUF writer: builds model files for tests and benches (tools/gen_model.c) from
 * keys and tensors. Values are serialised when set, so writing is a straight copy;
 * tensor bytes are either copied at add time or streamed in at write time, so a model
 * larger than memory never has to be held at once. */
#include "gguf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF writer stores numeric arrays and tensors in host order: little-endian only"
#endif

struct buf {
	uint8_t *p;
	size_t len, cap;
};

struct wkv {
	char *key;
	enum gguf_value_type type;
	struct buf val; /* the serialised value, as it follows the type in the file */
};

struct wtensor {
	char *name;
	enum kern_dtype type;
	uint32_t n_dims;
	uint64_t ne[GGUF_MAX_DIMS];
	uint64_t nbytes, offset;
	uint8_t *data; /* NULL: streamed */
};

struct gguf_writer {
	struct wkv *kvs;
	size_t n_kv, cap_kv;
	struct wtensor *ts;
	size_t n_t, cap_t;
	uint32_t alignment;
	/* streaming state */
	FILE *fp;
	char *path;
	size_t cur;        /* tensor being streamed */
	uint64_t cur_done; /* bytes of it written */
	uint64_t pos;      /* bytes written to the file */
	bool failed;
};

static bool buf_put(struct buf *b, const void *p, size_t n)
{
	if (n > b->cap - b->len) {
		size_t nc = b->cap ? b->cap : 64;
		while (nc - b->len < n) {
			if (nc > SIZE_MAX / 2)
				return false;
			nc *= 2;
		}
		uint8_t *q = specd_realloc_array(b->p, nc, 1);
		if (!q)
			return false;
		b->p = q;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	return true;
}

static bool buf_u32(struct buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	return buf_put(b, x, 4);
}

static bool buf_u64(struct buf *b, uint64_t v)
{
	return buf_u32(b, (uint32_t)v) && buf_u32(b, (uint32_t)(v >> 32));
}

static bool buf_str(struct buf *b, const char *s, uint64_t len)
{
	return len <= SIZE_MAX && buf_u64(b, len) && buf_put(b, s, (size_t)len);
}

enum specd_status gguf_writer_create(struct gguf_writer **out)
{
	struct gguf_writer *w = specd_calloc(1, sizeof(*w));
	if (!w)
		return SPECD_NOMEM;
	w->alignment = GGUF_DEFAULT_ALIGNMENT;
	*out = w;
	return SPECD_OK;
}

void gguf_writer_destroy(struct gguf_writer *w)
{
	if (!w)
		return;
	if (w->fp) {
		fclose(w->fp);
		remove(w->path);
	}
	specd_free(w->path);
	for (size_t i = 0; i < w->n_kv; i++) {
		specd_free(w->kvs[i].key);
		specd_free(w->kvs[i].val.p);
	}
	for (size_t i = 0; i < w->n_t; i++) {
		specd_free(w->ts[i].name);
		specd_free(w->ts[i].data);
	}
	specd_free(w->kvs);
	specd_free(w->ts);
	specd_free(w);
}

/* Replaces (or appends) `key` with the value in *val, taking ownership of it. */
static enum specd_status set_value(struct gguf_writer *w, const char *key, enum gguf_value_type type,
				   struct buf *val)
{
	enum specd_status st = SPECD_INVAL;
	if (!w || !key || !*key || w->fp)
		goto fail;
	for (size_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kvs[i].key, key) == 0) {
			specd_free(w->kvs[i].val.p);
			w->kvs[i].type = type;
			w->kvs[i].val = *val;
			return SPECD_OK;
		}
	}
	st = SPECD_NOMEM;
	if (w->n_kv == w->cap_kv) {
		size_t nc = w->cap_kv ? w->cap_kv * 2 : 16;
		struct wkv *p = specd_realloc_array(w->kvs, nc, sizeof(*p));
		if (!p)
			goto fail;
		w->kvs = p;
		w->cap_kv = nc;
	}
	char *k = specd_strdup(key);
	if (!k)
		goto fail;
	w->kvs[w->n_kv++] = (struct wkv){.key = k, .type = type, .val = *val};
	return SPECD_OK;
fail:
	specd_free(val->p);
	return st;
}

static enum specd_status set_scalar(struct gguf_writer *w, const char *key, enum gguf_value_type type,
				    const void *v)
{
	struct buf b = {0};
	if (!buf_put(&b, v, gguf_type_size(type)))
		return SPECD_NOMEM;
	return set_value(w, key, type, &b);
}

enum specd_status gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v)
{
	return set_scalar(w, key, GGUF_TYPE_U8, &v);
}

enum specd_status gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v)
{
	return set_scalar(w, key, GGUF_TYPE_I8, &v);
}

enum specd_status gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v)
{
	return set_scalar(w, key, GGUF_TYPE_U16, &v);
}

enum specd_status gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v)
{
	return set_scalar(w, key, GGUF_TYPE_I16, &v);
}

enum specd_status gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
	if (key && strcmp(key, "general.alignment") == 0) {
		if (v == 0 || (v & (v - 1)))
			return SPECD_INVAL;
		enum specd_status st = set_scalar(w, key, GGUF_TYPE_U32, &v);
		if (st == SPECD_OK)
			w->alignment = v;
		return st;
	}
	return set_scalar(w, key, GGUF_TYPE_U32, &v);
}

/* general.alignment must stay a u32 (what readers require). */
static bool is_alignment(const char *key)
{
	return key && strcmp(key, "general.alignment") == 0;
}

enum specd_status gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_I32, &v);
}

enum specd_status gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_U64, &v);
}

enum specd_status gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v)
{
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_I64, &v);
}

enum specd_status gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_F32, &v);
}

enum specd_status gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v)
{
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_F64, &v);
}

enum specd_status gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v)
{
	uint8_t b = v ? 1 : 0;
	return is_alignment(key) ? SPECD_INVAL : set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

enum specd_status gguf_writer_set_strn(struct gguf_writer *w, const char *key, const char *v,
				       uint64_t len)
{
	struct buf b = {0};
	if (is_alignment(key) || (!v && len))
		return SPECD_INVAL;
	if (!buf_str(&b, v ? v : "", len)) {
		specd_free(b.p);
		return SPECD_NOMEM;
	}
	return set_value(w, key, GGUF_TYPE_STRING, &b);
}

enum specd_status gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v)
{
	return v ? gguf_writer_set_strn(w, key, v, strlen(v)) : SPECD_INVAL;
}

enum specd_status gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
					  const char *const *v, uint64_t n)
{
	struct buf b = {0};
	if (is_alignment(key) || (!v && n))
		return SPECD_INVAL;
	for (uint64_t i = 0; i < n; i++)
		if (!v[i])
			return SPECD_INVAL;
	bool ok = buf_u32(&b, GGUF_TYPE_STRING) && buf_u64(&b, n);
	for (uint64_t i = 0; ok && i < n; i++)
		ok = buf_str(&b, v[i], strlen(v[i]));
	if (!ok) {
		specd_free(b.p);
		return SPECD_NOMEM;
	}
	return set_value(w, key, GGUF_TYPE_ARRAY, &b);
}

enum specd_status gguf_writer_set_arr(struct gguf_writer *w, const char *key,
				      enum gguf_value_type elem, const void *data, uint64_t n)
{
	struct buf b = {0};
	size_t es = gguf_type_size(elem);
	if (is_alignment(key) || !es || (!data && n) || n > SIZE_MAX / es)
		return SPECD_INVAL;
	if (elem == GGUF_TYPE_BOOL)
		for (uint64_t i = 0; i < n; i++)
			if (((const uint8_t *)data)[i] > 1)
				return SPECD_INVAL;
	if (!(buf_u32(&b, elem) && buf_u64(&b, n) && buf_put(&b, data, (size_t)(n * es)))) {
		specd_free(b.p);
		return SPECD_NOMEM;
	}
	return set_value(w, key, GGUF_TYPE_ARRAY, &b);
}

enum specd_status gguf_writer_add_tensor(struct gguf_writer *w, const char *name,
					 enum kern_dtype type, uint32_t n_dims,
					 const uint64_t *ne, const void *data)
{
	if (!w || !name || !*name || w->fp || !kern_dtype_known(type) || n_dims < 1 ||
	    n_dims > GGUF_MAX_DIMS || !ne)
		return SPECD_INVAL;
	struct wtensor t = {.type = type, .n_dims = n_dims};
	uint64_t n = 1;
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
		t.ne[d] = d < n_dims ? ne[d] : 1;
		if (t.ne[d] == 0 || t.ne[d] > INT64_MAX / n)
			return SPECD_INVAL;
		n *= t.ne[d];
	}
	size_t row = kern_dtype_row_bytes(type, (size_t)t.ne[0]);
	if (!row || row > INT64_MAX / (n / t.ne[0]) || row * (n / t.ne[0]) > SIZE_MAX)
		return SPECD_INVAL;
	t.nbytes = row * (n / t.ne[0]);
	for (size_t i = 0; i < w->n_t; i++)
		if (strcmp(w->ts[i].name, name) == 0)
			return SPECD_INVAL;
	if (w->n_t == w->cap_t) {
		size_t nc = w->cap_t ? w->cap_t * 2 : 64;
		struct wtensor *p = specd_realloc_array(w->ts, nc, sizeof(*p));
		if (!p)
			return SPECD_NOMEM;
		w->ts = p;
		w->cap_t = nc;
	}
	if (!(t.name = specd_strdup(name)))
		return SPECD_NOMEM;
	if (data) {
		if (!(t.data = specd_malloc_array((size_t)t.nbytes, 1))) {
			specd_free(t.name);
			return SPECD_NOMEM;
		}
		memcpy(t.data, data, (size_t)t.nbytes);
	}
	w->ts[w->n_t++] = t;
	return SPECD_OK;
}

static enum specd_status fail_io(struct gguf_writer *w, struct specd_error *err, const char *what)
{
	int e = errno;
	w->failed = true;
	if (w->fp) {
		fclose(w->fp);
		w->fp = NULL;
		remove(w->path);
	}
	return specd_errorf(err, SPECD_IO, "%s: %s: %s", w->path ? w->path : "?", what, strerror(e));
}

static enum specd_status put(struct gguf_writer *w, const void *p, size_t n, struct specd_error *err)
{
	if (n && fwrite(p, 1, n, w->fp) != n)
		return fail_io(w, err, "write failed");
	w->pos += n;
	return SPECD_OK;
}

static enum specd_status pad(struct gguf_writer *w, struct specd_error *err)
{
	static const uint8_t zeros[256];
	uint64_t n = (w->alignment - w->pos % w->alignment) % w->alignment;
	enum specd_status st = SPECD_OK;
	while (n && st == SPECD_OK) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);
		st = put(w, zeros, k, err);
		n -= k;
	}
	return st;
}

/* Writes every tensor from w->cur on whose bytes the writer already holds. */
static enum specd_status flush_held(struct gguf_writer *w, struct specd_error *err)
{
	enum specd_status st = SPECD_OK;
	while (st == SPECD_OK && w->cur < w->n_t && w->ts[w->cur].data) {
		const struct wtensor *t = &w->ts[w->cur];
		if ((st = put(w, t->data, (size_t)t->nbytes, err)) == SPECD_OK && (st = pad(w, err)) == SPECD_OK)
			w->cur++;
	}
	return st;
}

/* Header, keys and tensor infos as they start the file; tensor offsets assigned. */
static bool build_header(struct gguf_writer *w, uint32_t version, struct buf *h)
{
	bool ok = buf_put(h, GGUF_MAGIC, 4) && buf_u32(h, version) && buf_u64(h, w->n_t) &&
		  buf_u64(h, w->n_kv);
	for (size_t i = 0; ok && i < w->n_kv; i++)
		ok = buf_str(h, w->kvs[i].key, strlen(w->kvs[i].key)) && buf_u32(h, w->kvs[i].type) &&
		     buf_put(h, w->kvs[i].val.p, w->kvs[i].val.len);
	uint64_t off = 0;
	for (size_t i = 0; ok && i < w->n_t; i++) {
		struct wtensor *t = &w->ts[i];
		t->offset = off;
		off += t->nbytes + (w->alignment - t->nbytes % w->alignment) % w->alignment;
		ok = buf_str(h, t->name, strlen(t->name)) && buf_u32(h, t->n_dims);
		for (uint32_t d = 0; ok && d < t->n_dims; d++)
			ok = buf_u64(h, t->ne[d]);
		ok = ok && buf_u32(h, (uint32_t)t->type) && buf_u64(h, t->offset);
	}
	return ok;
}

enum specd_status gguf_writer_image(struct gguf_writer *w, uint32_t version, void **out,
				    size_t *size)
{
	struct buf h = {0};
	if (!w || !out || !size || w->n_t || w->fp || (version != 2 && version != 3))
		return SPECD_INVAL;
	if (!build_header(w, version, &h)) {
		specd_free(h.p);
		return SPECD_NOMEM;
	}
	*out = h.p;
	*size = h.len;
	return SPECD_OK;
}

enum specd_status gguf_writer_begin(struct gguf_writer *w, const char *path, uint32_t version,
				    struct specd_error *err)
{
	struct buf h = {0};
	enum specd_status st;
	if (!w || !path || w->fp || w->failed)
		return specd_errorf(err, SPECD_INVAL, "gguf writer: bad arguments or state");
	if (version != 2 && version != 3)
		return specd_errorf(err, SPECD_INVAL, "%s: cannot write GGUF version %u (2 or 3)", path, version);
	if (!build_header(w, version, &h)) {
		specd_free(h.p);
		return specd_errorf(err, SPECD_NOMEM, "%s: no memory for the header", path);
	}
	if (!(w->path = specd_strdup(path))) {
		specd_free(h.p);
		return specd_errorf(err, SPECD_NOMEM, "%s: no memory", path);
	}
	w->fp = fopen(path, "wb");
	if (!w->fp) {
		specd_free(h.p);
		return fail_io(w, err, "cannot create");
	}
	w->pos = 0;
	w->cur = 0;
	w->cur_done = 0;
	st = put(w, h.p, h.len, err);
	specd_free(h.p);
	if (st == SPECD_OK)
		st = pad(w, err);
	if (st == SPECD_OK)
		st = flush_held(w, err);
	return st;
}

enum specd_status gguf_writer_stream(struct gguf_writer *w, const void *bytes, size_t n,
				     struct specd_error *err)
{
	const uint8_t *p = bytes;
	enum specd_status st = SPECD_OK;
	if (!w || !w->fp)
		return specd_errorf(err, SPECD_INVAL, "gguf writer: stream without begin");
	while (n && st == SPECD_OK) {
		if (w->cur >= w->n_t) {
			w->failed = true;
			return specd_errorf(err, SPECD_INVAL, "%s: %zu bytes streamed past the last tensor",
					    w->path, n);
		}
		const struct wtensor *t = &w->ts[w->cur];
		uint64_t want = t->nbytes - w->cur_done;
		size_t k = n < want ? n : (size_t)want;
		if ((st = put(w, p, k, err)) != SPECD_OK)
			break;
		p += k;
		n -= k;
		w->cur_done += k;
		if (w->cur_done == t->nbytes) {
			w->cur++;
			w->cur_done = 0;
			if ((st = pad(w, err)) == SPECD_OK)
				st = flush_held(w, err);
		}
	}
	return st;
}

enum specd_status gguf_writer_finish(struct gguf_writer *w, struct specd_error *err)
{
	if (!w || !w->fp)
		return specd_errorf(err, SPECD_INVAL, "gguf writer: finish without begin");
	if (w->cur < w->n_t) {
		const struct wtensor *t = &w->ts[w->cur];
		enum specd_status st = specd_errorf(err, SPECD_INVAL,
						    "%s: tensor '%s' got %llu of its %llu bytes", w->path,
						    t->name, (unsigned long long)w->cur_done,
						    (unsigned long long)t->nbytes);
		w->failed = true;
		fclose(w->fp);
		w->fp = NULL;
		remove(w->path);
		return st;
	}
	FILE *fp = w->fp;
	w->fp = NULL;
	if (fclose(fp) != 0) {
		int e = errno;
		w->failed = true;
		remove(w->path);
		return specd_errorf(err, SPECD_IO, "%s: close failed: %s", w->path, strerror(e));
	}
	specd_free(w->path);
	w->path = NULL;
	return SPECD_OK;
}

enum specd_status gguf_writer_write(struct gguf_writer *w, const char *path, uint32_t version,
				    struct specd_error *err)
{
	if (!w)
		return specd_errorf(err, SPECD_INVAL, "gguf writer: NULL");
	for (size_t i = 0; i < w->n_t; i++)
		if (!w->ts[i].data)
			return specd_errorf(err, SPECD_INVAL, "%s: tensor '%s' has no data", path ? path : "?",
					    w->ts[i].name);
	enum specd_status st = gguf_writer_begin(w, path, version, err);
	return st == SPECD_OK ? gguf_writer_finish(w, err) : st;
}
