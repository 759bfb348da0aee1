/* A mapped safetensors file (safetensors.h): heads files that drafters read next to the
 * target (Medusa heads, an EAGLE layer). Matrices stay in the read-only mapping where
 * their alignment allows, so the weights cost page cache, not heap. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "kernels/dtype.h"
#include "kernels/kern.h"
#include "model/safetensors.h"

void safetensors_file_close(struct safetensors_file *f)
{
	if (!f)
		return;
	for (uint32_t i = 0; i < f->n_owned; i++)
		specd_free(f->owned[i]);
	specd_free(f->owned);
	safetensors_free(&f->hdr);
	if (f->map)
		munmap(f->map, f->map_size);
	specd_free(f->path);
	specd_free(f);
}

static enum specd_status map_file(struct safetensors_file *f, struct specd_error *err)
{
	struct stat sb;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return specd_errorf(err, SPECD_IO, "%s: cannot open %s: %s", f->tag, f->path,
				    strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 8) {
		close(fd);
		return specd_errorf(err, SPECD_INVAL, "%s: %s is not a safetensors file", f->tag,
				    f->path);
	}
	void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED)
		return specd_errorf(err, SPECD_IO, "%s: cannot map %s: %s", f->tag, f->path,
				    strerror(e));
	f->map = p;
	f->map_size = (size_t)sb.st_size;
	return SPECD_OK;
}

enum specd_status safetensors_file_open(const char *path, const char *tag,
					struct safetensors_file **out, struct specd_error *err)
{
	struct safetensors_file *f = specd_calloc(1, sizeof(*f));
	enum specd_status st;

	if (!f || !(f->path = specd_strdup(path))) {
		specd_free(f);
		return specd_errorf(err, SPECD_NOMEM, "%s: out of memory", tag);
	}
	f->tag = tag;
	struct specd_error why;
	if ((st = map_file(f, err)) != SPECD_OK)
		goto fail;
	if ((st = safetensors_parse(path, f->map, f->map_size, &f->hdr, &why)) != SPECD_OK) {
		specd_errorf(err, st, "%s: %s", tag, why.msg);
		goto fail;
	}
	*out = f;
	return SPECD_OK;
fail:
	safetensors_file_close(f);
	return st;
}


const struct safetensors_tensor *safetensors_file_find(const struct safetensors_file *f,
						       const char *name)
{
	for (size_t t = 0; t < f->hdr.n; t++)
		if (strcmp(f->hdr.t[t].name, name) == 0)
			return &f->hdr.t[t];
	return NULL;
}

static void *keep_copy(struct safetensors_file *f, size_t bytes)
{
	void **grown = specd_realloc_array(f->owned, f->n_owned + 1, sizeof(*grown));
	void *p;

	if (!grown)
		return NULL;
	f->owned = grown;
	if (!(p = specd_calloc(bytes ? bytes : 1, 1)))
		return NULL;
	f->owned[f->n_owned++] = p;
	return p;
}

enum specd_status safetensors_file_matrix(struct safetensors_file *f,
					  const struct safetensors_tensor *t, uint64_t rows,
					  uint64_t cols, const char *what, struct kern_mat *out,
					  struct specd_error *err)
{
	const uint8_t *data = (const uint8_t *)f->map + t->offset;
	size_t elem = kern_dtype_row_bytes(t->type, 1);

	if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols)
		return specd_errorf(err, SPECD_INVAL, "%s: %s: %s is %llu x %llu; %s needs %llu x "
				    "%llu", f->tag, f->path, t->name,
				    (unsigned long long)t->shape[0],
				    (unsigned long long)(t->n_dims > 1 ? t->shape[1] : 1), what,
				    (unsigned long long)rows, (unsigned long long)cols);
	if ((uintptr_t)data % elem) {
		void *copy = keep_copy(f, t->nbytes);
		if (!copy)
			return specd_errorf(err, SPECD_NOMEM, "%s: out of memory for %s", f->tag,
					    t->name);
		memcpy(copy, data, t->nbytes);
		data = copy;
	}
	*out = kern_mat_packed(t->type, (size_t)cols, (size_t)rows, data);
	f->bytes += t->nbytes;
	return SPECD_OK;
}

enum specd_status safetensors_file_vector(struct safetensors_file *f,
					  const struct safetensors_tensor *t, uint64_t n,
					  const char *what, float **out, struct specd_error *err)
{
	float *v = keep_copy(f, n * sizeof(float));

	if (!v)
		return specd_errorf(err, SPECD_NOMEM, "%s: out of memory for %s", f->tag,
				    t ? t->name : what);
	*out = v;
	if (!t)
		return SPECD_OK;
	if (t->n_dims != 1 || t->shape[0] != n)
		return specd_errorf(err, SPECD_INVAL, "%s: %s: %s has %llu entries; %s needs %llu",
				    f->tag, f->path, t->name, (unsigned long long)t->shape[0], what,
				    (unsigned long long)n);
	/* Element by element through an aligned buffer: the data may sit at any offset. */
	uint8_t tmp[8];
	size_t elem = kern_dtype_row_bytes(t->type, 1);
	for (uint64_t i = 0; i < n; i++) {
		memcpy(tmp, (const uint8_t *)f->map + t->offset + i * elem, elem);
		kern_dequant_row(t->type, tmp, &v[i], 1);
	}
	f->bytes += t->nbytes;
	return SPECD_OK;
}
