/* The emulated device's allocator (emu_int.h): first fit over a sorted table of
 * holes, coalesced on free, and a sorted table of live blocks that every op's pointer
 * is looked up in. Freed pages are handed back with MADV_DONTNEED, so a test that
 * loads and destroys models in a loop stays at the size of one model. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "emu_int.h"

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

enum specd_status emu_mem_init(struct emu_mem *m, size_t bytes)
{
	memset(m, 0, sizeof(*m));
	long page = sysconf(_SC_PAGESIZE);
	m->page = page > 0 ? (size_t)page : 4096;
	if (bytes > SIZE_MAX - m->page) {
		LOG_ERROR("emu: a window of %zu bytes cannot be mapped", bytes);
		return SPECD_INTERNAL;
	}
	size_t size = round_up(bytes ? bytes : 1, m->page);
	/* The host must never touch the window: PROT_NONE turns any dereference of a
	 * device pointer into an immediate fault at the faulty line. NORESERVE: the
	 * address space is free, the storage's pages exist only once written. */
	void *w = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (w == MAP_FAILED) {
		LOG_ERROR("emu: mmap of a %zu-byte window: %s", size, strerror(errno));
		return SPECD_INTERNAL;
	}
	void *s = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (s == MAP_FAILED) {
		LOG_ERROR("emu: mmap of %zu bytes of storage: %s", size, strerror(errno));
		munmap(w, size);
		return SPECD_INTERNAL;
	}
	m->window = w;
	m->storage = s;
	m->size = size;
	m->holes = specd_malloc_array(2, sizeof(*m->holes));
	if (!m->holes)
		return SPECD_NOMEM;
	m->cap_holes = 2;
	m->holes[0] = (struct emu_extent){.off = 0, .len = size};
	m->n_holes = 1;
	return SPECD_OK;
}

void emu_mem_fini(struct emu_mem *m)
{
	if (m->window)
		munmap(m->window, m->size);
	if (m->storage)
		munmap(m->storage, m->size);
	specd_free(m->holes);
	specd_free(m->live);
	memset(m, 0, sizeof(*m));
}

/* The table, grown to hold at least `need` entries (need >= 1); NULL without memory,
 * the old table then untouched. */
static void *reserve(void *table, size_t *cap, size_t need, size_t elem)
{
	if (*cap >= need)
		return table;
	size_t n = *cap * 2 > need ? *cap * 2 : need;
	void *p = specd_realloc_array(table, n, elem);
	if (p)
		*cap = n;
	return p;
}

/* Index of the first live block whose offset is >= off. */
static size_t live_lower_bound(const struct emu_mem *m, size_t off)
{
	size_t lo = 0, hi = m->n_live;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->live[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

enum specd_status emu_mem_alloc(struct emu_mem *m, size_t bytes, void **out)
{
	if (bytes > SIZE_MAX - EMU_ALIGN)
		return SPECD_NOMEM;
	size_t len = round_up(bytes ? bytes : 1, EMU_ALIGN);
	/* Holes never outnumber live blocks + 1, so with room for n_live + 2 of them
	 * reserved here, emu_mem_free (which cannot fail) never has to grow the table. */
	struct emu_block *live = reserve(m->live, &m->cap_live, m->n_live + 1, sizeof(*live));
	if (!live)
		return SPECD_NOMEM;
	m->live = live;
	struct emu_extent *holes = reserve(m->holes, &m->cap_holes, m->n_live + 2,
					   sizeof(*holes));
	if (!holes)
		return SPECD_NOMEM;
	m->holes = holes;
	size_t h = 0;
	while (h < m->n_holes && m->holes[h].len < len)
		h++;
	if (h == m->n_holes)
		return SPECD_NOMEM;
	/* The front of the hole: what is left stays one hole, so the table never grows. */
	size_t off = m->holes[h].off;
	m->holes[h].off += len;
	m->holes[h].len -= len;
	if (m->holes[h].len == 0) {
		memmove(&m->holes[h], &m->holes[h + 1], (m->n_holes - h - 1) * sizeof(*m->holes));
		m->n_holes--;
	}
	size_t i = live_lower_bound(m, off);
	memmove(&m->live[i + 1], &m->live[i], (m->n_live - i) * sizeof(*m->live));
	m->live[i] = (struct emu_block){.off = off, .len = len, .bytes = bytes};
	m->n_live++;
	*out = m->window + off; /* zero already: holes hold only zeros */
	return SPECD_OK;
}

/* Zeroes the freed block [off, off + len), now inside hole `h`: the pages it touches
 * that lie wholly in the hole go back to the system (they read as zero when next
 * touched), and its bytes on pages shared with live blocks are cleared by hand. Only
 * the block's own pages are visited, so a free costs its size, not the hole's. */
static void zero_block(struct emu_mem *m, size_t off, size_t len, const struct emu_extent *h)
{
	size_t end = off + len;
	size_t a = round_up(h->off, m->page), b = (h->off + h->len) / m->page * m->page;
	size_t first = off / m->page * m->page, last = round_up(end, m->page);
	a = a > first ? a : first;
	b = b < last ? b : last;
	if (a >= b || madvise(m->storage + a, b - a, MADV_DONTNEED) != 0) {
		memset(m->storage + off, 0, len);
		return;
	}
	if (off < a)
		memset(m->storage + off, 0, (end < a ? end : a) - off);
	if (end > b) {
		size_t from = off > b ? off : b;
		memset(m->storage + from, 0, end - from);
	}
}

bool emu_mem_free(struct emu_mem *m, const void *p)
{
	uintptr_t at = (uintptr_t)p, base = (uintptr_t)m->window;
	if (at < base || at - base >= m->size)
		return false;
	size_t off = at - base;
	size_t i = live_lower_bound(m, off);
	if (i == m->n_live || m->live[i].off != off)
		return false;
	size_t len = m->live[i].len;
	memmove(&m->live[i], &m->live[i + 1], (m->n_live - i - 1) * sizeof(*m->live));
	m->n_live--;

	/* The hole goes between holes[h - 1] and holes[h], merged with either neighbour
	 * it touches. Room for it was reserved by the allocation. */
	size_t h = 0;
	while (h < m->n_holes && m->holes[h].off < off)
		h++;
	bool prev = h > 0 && m->holes[h - 1].off + m->holes[h - 1].len == off;
	bool next = h < m->n_holes && m->holes[h].off == off + len;
	struct emu_extent *hole;
	if (prev && next) {
		m->holes[h - 1].len += len + m->holes[h].len;
		memmove(&m->holes[h], &m->holes[h + 1], (m->n_holes - h - 1) * sizeof(*m->holes));
		m->n_holes--;
		hole = &m->holes[h - 1];
	} else if (prev) {
		m->holes[h - 1].len += len;
		hole = &m->holes[h - 1];
	} else if (next) {
		m->holes[h].off = off;
		m->holes[h].len += len;
		hole = &m->holes[h];
	} else {
		assert(m->n_holes < m->cap_holes);
		memmove(&m->holes[h + 1], &m->holes[h], (m->n_holes - h) * sizeof(*m->holes));
		m->holes[h] = (struct emu_extent){.off = off, .len = len};
		m->n_holes++;
		hole = &m->holes[h];
	}
	zero_block(m, off, len, hole);
	return true;
}

const struct emu_block *emu_mem_find(const struct emu_mem *m, const void *p)
{
	uintptr_t at = (uintptr_t)p, base = (uintptr_t)m->window;
	if (at < base || at - base >= m->size)
		return NULL;
	size_t off = at - base;
	/* The last block starting at or before off. */
	size_t i = live_lower_bound(m, off + 1);
	if (i == 0)
		return NULL;
	const struct emu_block *b = &m->live[i - 1];
	size_t bytes = b->bytes ? b->bytes : 1;
	return off - b->off < bytes ? b : NULL;
}
