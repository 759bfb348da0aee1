/* Allocation helpers: overflow-checked array allocation, aligned buffers for SIMD
 * and device staging, and a failure injector so tests can prove that every NOMEM
 * path cleans up. All return NULL on failure and never abort; callers turn NULL into
 * SPECD_NOMEM. Any thread. */
#ifndef SPECD_COMMON_ALLOC_H
#define SPECD_COMMON_ALLOC_H

#include <stddef.h>

/* malloc(n * size) with the multiplication checked; NULL on overflow or failure. */
void *specd_malloc_array(size_t n, size_t size);
/* calloc(n, size); NULL on overflow or failure. */
void *specd_calloc(size_t n, size_t size);
/* realloc to n * size, checked; on failure the old block is untouched. */
void *specd_realloc_array(void *p, size_t n, size_t size);
/* A block aligned to `align` (a power of two, at least sizeof(void *)), rounded up to a
 * multiple of align. Free with specd_free. */
void *specd_aligned_alloc(size_t align, size_t size);
/* strdup; NULL when s is NULL or on failure. */
char *specd_strdup(const char *s);
/* free; for symmetry with the allocators above. */
void specd_free(void *p);

/* Test hook: the n-th allocation from now (1 = the next) and every later one fail
 * until specd_alloc_fail_reset(). Counts only the helpers above. */
void specd_alloc_fail_after(long n);
void specd_alloc_fail_reset(void);
/* Allocations made through the helpers since the last reset (for fault-injection loops). */
long specd_alloc_count(void);

#endif
