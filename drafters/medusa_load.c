/* Loading Medusa heads (medusa.h): the safetensors file is mapped read-only, its
 * header parsed by the model module's reader, each head's tensors found by the
 * reference repository's names and checked against the target before anything runs. */
#include "medusa_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/safetensors.h"
#include "model/llama.h"

/* Names are tried with this prefix and bare (Medusa's own saved head files). */
static const char *const k_prefixes[] = {"medusa_head.", ""};

struct loader {
	const char *path;
	const struct safetensors_header *hdr;
	const char *prefix;
	struct medusa_heads *h;
	struct specd_error *err;
};

/* The tensors of head i, block or layer j. */
enum part { PART_WEIGHT, PART_BIAS, PART_LM };

static const struct safetensors_tensor *find(const struct loader *l, enum part part, uint32_t i,
				       uint32_t j, char *name, size_t cap)
{
	snprintf(name, cap, "%s%u.%u.%s", l->prefix, i, j,
		 part == PART_WEIGHT ? "linear.weight" : part == PART_BIAS ? "linear.bias"
									    : "weight");
	for (size_t t = 0; t < l->hdr->n; t++)
		if (strcmp(l->hdr->t[t].name, name) == 0)
			return &l->hdr->t[t];
	return NULL;
}

static enum specd_status keep_owned(struct medusa_heads *h, void *p)
{
	void **grown = specd_realloc_array(h->owned, h->n_owned + 1, sizeof(*grown));

	if (!grown)
		return SPECD_NOMEM;
	h->owned = grown;
	h->owned[h->n_owned++] = p;
	return SPECD_OK;
}

/* A (rows, cols) matrix as a kern_mat, in place when its data is aligned for its type,
 * else copied once. */
static enum specd_status matrix(struct loader *l, const struct safetensors_tensor *t, const char *name,
				uint64_t rows, uint64_t cols, const char *what,
				struct kern_mat *out)
{
	const uint8_t *data = (const uint8_t *)l->h->map + t->offset;
	size_t elem = kern_dtype_row_bytes(t->type, 1);

	if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols)
		return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: %s is %llu x %llu; %s "
				    "needs %llu x %llu", l->path, name,
				    (unsigned long long)t->shape[0],
				    (unsigned long long)(t->n_dims > 1 ? t->shape[1] : 1), what,
				    (unsigned long long)rows, (unsigned long long)cols);
	if ((uintptr_t)data % elem) {
		void *copy = specd_malloc_array(t->nbytes, 1);
		if (!copy || keep_owned(l->h, copy) != SPECD_OK) {
			specd_free(copy);
			return specd_errorf(l->err, SPECD_NOMEM, "medusa: out of memory for %s", name);
		}
		memcpy(copy, data, t->nbytes);
		data = copy;
	}
	*out = kern_mat_packed(t->type, cols, rows, data);
	l->h->bytes += t->nbytes;
	return SPECD_OK;
}

static enum specd_status bias(struct loader *l, const struct safetensors_tensor *t, const char *name,
			      float **out)
{
	uint32_t dim = l->h->dim;
	float *b = specd_calloc(dim, sizeof(float));

	if (!b || keep_owned(l->h, b) != SPECD_OK) {
		specd_free(b);
		return specd_errorf(l->err, SPECD_NOMEM, "medusa: out of memory for %s", name);
	}
	*out = b;
	if (!t)
		return SPECD_OK; /* a block without bias */
	if (t->n_dims != 1 || t->shape[0] != dim)
		return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: %s has %llu entries; the "
				    "target's hidden size is %u", l->path, name,
				    (unsigned long long)t->shape[0], dim);
	/* Copied, so alignment does not matter; dequant_row takes any of the three types. */
	uint8_t tmp[8];
	size_t elem = kern_dtype_row_bytes(t->type, 1);
	for (uint32_t i = 0; i < dim; i++) {
		memcpy(tmp, (const uint8_t *)l->h->map + t->offset + i * elem, elem);
		kern_dequant_row(t->type, tmp, &b[i], 1);
	}
	l->h->bytes += t->nbytes;
	return SPECD_OK;
}

/* The target's LM head from its file: output.weight, or token_embd.weight when tied. */
static enum specd_status shared_lm(struct loader *l, const struct model *target,
				   struct kern_mat *out)
{
	const struct gguf_tensor *t = model_lm_head(target);

	if (!t || t->ne[0] != l->h->dim || t->ne[1] != l->h->n_vocab)
		return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: the heads share the target's "
				    "LM head, and the target has none of %u x %u", l->path,
				    l->h->n_vocab, l->h->dim);
	*out = kern_mat_packed(t->type, (size_t)t->ne[0], (size_t)t->ne[1], t->data);
	return SPECD_OK;
}

static enum specd_status load_head(struct loader *l, const struct model *target, uint32_t i)
{
	struct medusa_head *hd = &l->h->head[i];
	const struct safetensors_tensor *t;
	char name[160], what[64];
	enum specd_status st;
	uint32_t dim = l->h->dim;

	snprintf(what, sizeof(what), "the target's hidden size %u", dim);
	for (uint32_t j = 0; (t = find(l, PART_WEIGHT, i, j, name, sizeof(name))); j++) {
		if (j == MEDUSA_MAX_LAYERS)
			return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: head %u has more than "
					    "%d residual blocks", l->path, i, MEDUSA_MAX_LAYERS);
		if ((st = matrix(l, t, name, dim, dim, what, &hd->block[j].w)) != SPECD_OK)
			return st;
		t = find(l, PART_BIAS, i, j, name, sizeof(name));
		if ((st = bias(l, t, name, &hd->block[j].bias)) != SPECD_OK)
			return st;
		hd->n_layers = j + 1;
	}
	if ((t = find(l, PART_LM, i, hd->n_layers, name, sizeof(name)))) {
		snprintf(what, sizeof(what), "the target's vocabulary %u x hidden size %u",
			 l->h->n_vocab, dim);
		return matrix(l, t, name, l->h->n_vocab, dim, what, &hd->lm);
	}
	hd->shared_lm = true;
	return shared_lm(l, target, &hd->lm);
}

void medusa_heads_destroy(struct medusa_heads *h)
{
	if (!h)
		return;
	for (uint32_t i = 0; i < h->n_owned; i++)
		specd_free(h->owned[i]);
	specd_free(h->owned);
	if (h->map)
		munmap(h->map, h->map_size);
	specd_free(h);
}

static enum specd_status map_file(const char *path, struct medusa_heads *h,
				  struct specd_error *err)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return specd_errorf(err, SPECD_IO, "medusa: cannot open the heads %s: %s", path,
				    strerror(errno));
	if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
		close(fd);
		return specd_errorf(err, SPECD_INVAL, "medusa: %s is not a safetensors file", path);
	}
	void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED)
		return specd_errorf(err, SPECD_IO, "medusa: cannot map %s: %s", path, strerror(e));
	h->map = p;
	h->map_size = (size_t)sb.st_size;
	return SPECD_OK;
}

enum specd_status medusa_heads_load(const char *path, const struct model *target,
				    struct medusa_heads **out, struct specd_error *err)
{
	struct safetensors_header hdr = {0};
	struct medusa_heads *h;
	enum specd_status st;

	if (!path || !*path)
		return specd_errorf(err, SPECD_INVAL, "medusa: no heads file (--heads FILE)");
	if (!(h = specd_calloc(1, sizeof(*h))))
		return specd_errorf(err, SPECD_NOMEM, "medusa: out of memory");
	h->dim = model_hparams(target)->dim;
	h->n_vocab = model_hparams(target)->n_vocab;
	if ((st = map_file(path, h, err)) != SPECD_OK ||
	    (st = safetensors_parse(path, h->map, h->map_size, &hdr, err)) != SPECD_OK)
		goto fail;
	struct loader l = {.path = path, .hdr = &hdr, .h = h, .err = err};
	char name[160];
	for (size_t p = 0; p < sizeof(k_prefixes) / sizeof(k_prefixes[0]) && !h->n_heads; p++) {
		l.prefix = k_prefixes[p];
		while (h->n_heads < MEDUSA_MAX_HEADS &&
		       find(&l, PART_WEIGHT, h->n_heads, 0, name, sizeof(name)))
			h->n_heads++;
	}
	if (h->n_heads == 0) {
		st = specd_errorf(err, SPECD_INVAL, "medusa: %s holds no Medusa heads (no tensor "
				  "medusa_head.0.0.linear.weight)", path);
		goto fail;
	}
	for (uint32_t i = 0; i < h->n_heads; i++)
		if ((st = load_head(&l, target, i)) != SPECD_OK)
			goto fail;
	safetensors_free(&hdr);
	*out = h;
	return SPECD_OK;
fail:
	safetensors_free(&hdr);
	medusa_heads_destroy(h);
	return st;
}
