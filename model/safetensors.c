/* safetensors header parser (safetensors.h): the first step of reading a Hugging Face
 * shard or a heads file. The JSON header (jansson) gives each tensor's dtype, shape and
 * byte span; every number is checked against the file before hf_open.c (or a drafter)
 * points a tensor into the mapping. */
#include "hf_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gguf_int.h"

/* The dtype names of the safetensors format; those specd computes with map to a kern
 * type, the others are named in the error. */
static bool st_dtype(const char *name, enum kern_dtype *out)
{
	static const struct {
		const char *name;
		enum kern_dtype type;
	} known[] = {{"F32", KERN_F32}, {"F16", KERN_F16}, {"BF16", KERN_BF16}};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(name, known[i].name) == 0) {
			*out = known[i].type;
			return true;
		}
	}
	return false;
}

/* A JSON integer in 0..INT64_MAX. */
static bool st_uint(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static enum specd_status st_shape(const char *src, const char *name, const json_t *shape,
				  struct safetensors_tensor *t, uint64_t *n_elements,
				  struct specd_error *err)
{
	if (!json_is_array(shape))
		return specd_errorf(err, SPECD_INVAL, "%s: tensor '%s': shape is not an array", src,
				    name);
	size_t rank = json_array_size(shape);
	if (rank < 1 || rank > GGUF_MAX_DIMS)
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "%s: tensor '%s': rank %zu is not supported (1 to %d)", src, name,
				    rank, GGUF_MAX_DIMS);
	*n_elements = 1;
	for (size_t d = 0; d < rank; d++) {
		uint64_t v;
		if (!st_uint(json_array_get(shape, d), &v) || v == 0)
			return specd_errorf(err, SPECD_INVAL,
					    "%s: tensor '%s': shape[%zu] is not a positive integer",
					    src, name, d);
		if (v > INT64_MAX / *n_elements)
			return specd_errorf(err, SPECD_INVAL,
					    "%s: tensor '%s': element count overflows", src, name);
		*n_elements *= v;
		t->shape[d] = v;
	}
	t->n_dims = (uint32_t)rank;
	return SPECD_OK;
}

/* One header entry; data_len is the size of the data section. */
static enum specd_status st_entry(const char *src, const char *name, const json_t *e,
				  uint64_t data_start, uint64_t data_len, struct safetensors_tensor *t,
				  struct specd_error *err)
{
	const json_t *dtype = json_object_get(e, "dtype");
	const json_t *offs = json_object_get(e, "data_offsets");
	uint64_t n_elements = 0, begin, end;
	enum specd_status st;

	if (!json_is_object(e))
		return specd_errorf(err, SPECD_INVAL, "%s: tensor '%s': entry is not an object",
				    src, name);
	if (!json_is_string(dtype))
		return specd_errorf(err, SPECD_INVAL, "%s: tensor '%s': dtype missing or not a string",
				    src, name);
	if (!st_dtype(json_string_value(dtype), &t->type))
		return specd_errorf(err, SPECD_UNSUPPORTED,
				    "%s: tensor '%s': dtype %.32s is not supported (F32, F16, BF16 are)",
				    src, name, json_string_value(dtype));
	if ((st = st_shape(src, name, json_object_get(e, "shape"), t, &n_elements, err)) != SPECD_OK)
		return st;
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !st_uint(json_array_get(offs, 0), &begin) || !st_uint(json_array_get(offs, 1), &end) ||
	    end < begin)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: tensor '%s': data_offsets is not [begin, end] with begin <= end",
				    src, name);
	if (end > data_len)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: tensor '%s': data_offsets [%llu, %llu) run past the %llu data bytes of the file (truncated?)",
				    src, name, (unsigned long long)begin, (unsigned long long)end,
				    (unsigned long long)data_len);
	uint64_t es = kern_dtype_block_bytes(t->type);
	if (n_elements > INT64_MAX / es || end - begin != n_elements * es)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: tensor '%s': data_offsets span %llu bytes, but the shape holds %llu %s elements",
				    src, name, (unsigned long long)(end - begin),
				    (unsigned long long)n_elements, json_string_value(dtype));
	t->offset = data_start + begin;
	t->nbytes = end - begin;
	return SPECD_OK;
}

static int st_by_offset(const void *a, const void *b)
{
	const struct safetensors_tensor *x = *(const struct safetensors_tensor *const *)a;
	const struct safetensors_tensor *y = *(const struct safetensors_tensor *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static enum specd_status st_no_overlap(const char *src, const struct safetensors_header *h,
				       struct specd_error *err)
{
	const struct safetensors_tensor **order;
	enum specd_status st = SPECD_OK;

	if (h->n < 2)
		return SPECD_OK;
	if (!(order = specd_malloc_array(h->n, sizeof(*order))))
		return specd_errorf(err, SPECD_NOMEM, "%s: no memory to sort tensors", src);
	for (size_t i = 0; i < h->n; i++)
		order[i] = &h->t[i];
	qsort(order, h->n, sizeof(*order), st_by_offset);
	for (size_t i = 1; i < h->n && st == SPECD_OK; i++) {
		const struct safetensors_tensor *x = order[i - 1], *y = order[i];
		if (x->offset + x->nbytes > y->offset)
			st = specd_errorf(err, SPECD_INVAL, "%s: tensors '%s' and '%s' overlap", src,
					  x->name, y->name);
	}
	specd_free(order);
	return st;
}

enum specd_status safetensors_parse(const char *src, const uint8_t *p, size_t size,
			      struct safetensors_header *out, struct specd_error *err)
{
	struct safetensors_header h = {0};
	json_error_t jerr;
	json_t *root = NULL, *e;
	const char *name;
	enum specd_status st = SPECD_OK;

	if (size < 8)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: not a safetensors file (shorter than its 8-byte header length)",
				    src);
	uint64_t len = rd64(p);
	if (len > size - 8)
		return specd_errorf(err, SPECD_INVAL,
				    "%s: header length %llu runs past the end of the file (%zu bytes)",
				    src, (unsigned long long)len, size);
	root = json_loadb((const char *)p + 8, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return specd_errorf(err, SPECD_INVAL, "%s: header is not JSON: %s (line %d, column %d)",
				    src, jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root)) {
		st = specd_errorf(err, SPECD_INVAL, "%s: header is not a JSON object", src);
		goto out;
	}
	if (!(h.t = specd_calloc(json_object_size(root) + 1, sizeof(*h.t)))) {
		st = specd_errorf(err, SPECD_NOMEM, "%s: no memory for the header", src);
		goto out;
	}
	json_object_foreach(root, name, e) {
		if (strcmp(name, "__metadata__") == 0)
			continue;
		struct safetensors_tensor *t = &h.t[h.n];
		if (!(t->name = specd_strdup(name))) {
			st = specd_errorf(err, SPECD_NOMEM, "%s: no memory", src);
			goto out;
		}
		h.n++;
		if ((st = st_entry(src, name, e, 8 + len, size - 8 - len, t, err)) != SPECD_OK)
			goto out;
	}
	st = st_no_overlap(src, &h, err);
out:
	json_decref(root);
	if (st != SPECD_OK)
		safetensors_free(&h);
	else
		*out = h;
	return st;
}

void safetensors_free(struct safetensors_header *h)
{
	for (size_t i = 0; h->t && i < h->n; i++)
		specd_free(h->t[i].name);
	specd_free(h->t);
	h->t = NULL;
	h->n = 0;
}
