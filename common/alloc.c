/* Checked allocation and fault injection; see alloc.h. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

#define HUGE_PAGE ((size_t)2 << 20)

static size_t huge_round(size_t size)
{
	return (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

void *specd_huge_alloc(size_t size)
{
	if (size == 0 || size > SIZE_MAX - 2 * HUGE_PAGE)
		return NULL;
	if (inject_failure())
		return NULL;
	/* mmap aligns to 4 KiB only: map one huge page more and unmap the ragged ends,
	 * so that every 2 MiB of the block can be one huge page. */
	size_t len = huge_round(size), span = len + HUGE_PAGE;
	unsigned char *m = mmap(NULL, span, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	unsigned char *p = (unsigned char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	if (p > m)
		munmap(m, (size_t)(p - m));
	if (m + span > p + len)
		munmap(p + len, (size_t)(m + span - (p + len)));
	(void)madvise(p, len, MADV_HUGEPAGE); /* advice: refused, the pages are 4 KiB */
	return p;
}

void specd_huge_free(void *p, size_t size)
{
	if (p)
		munmap(p, huge_round(size));
}

bool specd_huge_pages_offered(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f)
		return false;
	char line[128] = "";
	bool ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	/* e.g. "always [madvise] never": the bracketed word is the setting */
	return ok && (strstr(line, "[always]") || strstr(line, "[madvise]"));
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
