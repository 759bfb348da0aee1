/* Allocation helpers: overflow-checked array allocation, aligned buffers for SIMD
 * and device staging, and a failure injector so tests can prove that every NOMEM
 * path cleans up. All return NULL on failure and never abort; callers turn NULL into
 * SPECD_NOMEM. Any thread. */
#ifndef SPECD_COMMON_ALLOC_H
#define SPECD_COMMON_ALLOC_H

#include <stdbool.h>
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
/* size bytes for large, long-lived, read-mostly data (model weights): anonymous zeroed
 * memory, aligned to 2 MiB and advised to the kernel as transparent huge pages
 * (MADV_HUGEPAGE), so that reading it takes one TLB entry per 2 MiB instead of one
 * per 4 KiB. Whether the kernel grants huge pages is its choice
 * (specd_huge_pages_offered); the memory is usable either way. Free with
 * specd_huge_free(p, size), the same size. */
void *specd_huge_alloc(size_t size);
void specd_huge_free(void *p, size_t size);
/* Whether this kernel gives madvised memory transparent huge pages: its setting in
 * /sys/kernel/mm/transparent_hugepage/enabled is `always` or `madvise` (false when the
 * file is missing or says `never`). */
bool specd_huge_pages_offered(void);
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
