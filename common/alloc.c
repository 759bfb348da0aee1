/* Checked allocation and fault injection; see alloc.h. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long g_fail_after; /* 0: never fail */
static atomic_long g_count;

static int inject_failure(void)
{
	long n = atomic_fetch_add(&g_count, 1) + 1;
	long after = atomic_load(&g_fail_after);
	return after > 0 && n >= after;
}

void specd_alloc_fail_after(long n)
{
	atomic_store(&g_count, 0);
	atomic_store(&g_fail_after, n);
}

void specd_alloc_fail_reset(void)
{
	atomic_store(&g_fail_after, 0);
	atomic_store(&g_count, 0);
}

long specd_alloc_count(void)
{
	return atomic_load(&g_count);
}

void *specd_malloc_array(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	if (inject_failure())
		return NULL;
	size_t bytes = n * size;
	return malloc(bytes ? bytes : 1);
}

void *specd_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	if (inject_failure())
		return NULL;
	return calloc(n ? n : 1, size ? size : 1);
}

void *specd_realloc_array(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	if (inject_failure())
		return NULL;
	size_t bytes = n * size;
	return realloc(p, bytes ? bytes : 1);
}

void *specd_aligned_alloc(size_t align, size_t size)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return NULL;
	if (size > SIZE_MAX - align)
		return NULL;
	if (inject_failure())
		return NULL;
	size_t rounded = (size + align - 1) & ~(align - 1);
	void *p = NULL;
	if (posix_memalign(&p, align, rounded ? rounded : align) != 0)
		return NULL;
	return p;
}

char *specd_strdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = specd_malloc_array(n, 1);
	if (d)
		memcpy(d, s, n);
	return d;
}

void specd_free(void *p)
{
	free(p);
}
