/* The emulated device's memory (kernels/kern.h kern_emu_create), folder-private: a
 * window of addresses the host may not touch, handed out as "device pointers", and a
 * second mapping of the same size that holds their bytes. emu_backend.c translates
 * every pointer an op receives through here before the CPU ops see it.
 *
 * Threads: none of its own; a struct emu_mem belongs to one backend, used by one
 * thread at a time (kern.h). */
#ifndef SPECD_KERNELS_EMU_EMU_INT_H
#define SPECD_KERNELS_EMU_EMU_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

#define EMU_ALIGN 64 /* kern.h: backend memory is aligned to 64 bytes */

/* A run of the window, in bytes from its start. */
struct emu_extent {
	size_t off;
	size_t len; /* a multiple of EMU_ALIGN */
};

/* A live allocation: len bytes reserved, the first `bytes` of them asked for. */
struct emu_block {
	size_t off;
	size_t len;
	size_t bytes;
};

struct emu_mem {
	unsigned char *window;  /* PROT_NONE: the device pointers; never dereferenced */
	unsigned char *storage; /* read-write, same size: the bytes behind them */
	size_t size;            /* of each mapping, a multiple of the page size */
	size_t page;
	/* Free extents sorted by offset, never adjacent (coalesced); every byte in them
	 * is zero, so an allocation needs no memset. */
	struct emu_extent *holes;
	size_t n_holes, cap_holes;
	/* Live blocks sorted by offset, for lookup by binary search. */
	struct emu_block *live;
	size_t n_live, cap_live;
};

/* Maps both halves of a window of at least `bytes` (rounded up to pages). Errors:
 * SPECD_INTERNAL (mmap refused; logged with errno's words), SPECD_NOMEM. m is left
 * as emu_mem_fini can take either way. */
enum specd_status emu_mem_init(struct emu_mem *m, size_t bytes);
/* Unmaps both and frees the tables; a zeroed struct is fine. */
void emu_mem_fini(struct emu_mem *m);

/* A zeroed block of `bytes` (0 is allowed and gets a distinct block), first fit,
 * aligned to EMU_ALIGN; *out is its window address. Errors: SPECD_NOMEM (no hole big
 * enough, or no memory for the tables). */
enum specd_status emu_mem_alloc(struct emu_mem *m, size_t bytes, void **out);
/* Frees the block starting at p: its pages go back to the system and the bytes
 * read as zero from then on. false (nothing done) when p starts no live block. */
bool emu_mem_free(struct emu_mem *m, const void *p);

/* The live block holding window address p (p in [off, off + max(bytes, 1))), or
 * NULL: p is not device memory, or was freed. */
const struct emu_block *emu_mem_find(const struct emu_mem *m, const void *p);

/* The storage address behind window address p (which must be in the window). */
static inline void *emu_mem_host(const struct emu_mem *m, const void *p)
{
	return m->storage + ((const unsigned char *)p - m->window);
}

#endif
