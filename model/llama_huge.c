/* model_config.huge_pages_max (target.huge_pages, draft.huge_pages): the shard's weight
 * matrices copied once at load into one block of transparent huge pages
 * (specd_huge_alloc). Decoding reads every matrix once per token. Read in place from
 * the file's mapping, that is one TLB entry per 4 KiB page: some 250,000 page walks a
 * token for a 1 GB model, and the hardware prefetcher stops at each page's end. From
 * 2 MiB pages it is 500 (docs/performance.md measures the difference). The copy costs
 * a read of the weights at load and makes them private to the process, where the
 * mapping shares the page cache, so it is made only within a budget of free memory
 * (the daemon gives each rank half of the machine's available memory over its ranks
 * there, runtime.c). The embedding table stays in the mapping unless it is also the LM
 * head: a token reads one row of it. */
#include "llama_int.h"

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "model/shard.h"

enum specd_status llama_weights_to_huge_pages(struct model *m, size_t max,
					      struct specd_error *err)
{
	struct kern_mat **w = specd_malloc_array(LLAMA_MAX_MATRICES(m->hp.n_layers), sizeof(*w));
	if (!w)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	size_t n = llama_matrices(m, w), first = 0, total = 0;
	const bool tied = m->output.data == m->tok_embd.data;
	if (!tied)
		first = 1; /* w[0] is tok_embd: only looked up */
	for (size_t i = first; i < n; i++)
		total += llama_packed_bytes(w[i]->type, w[i]->n_in, w[i]->n_out);
	if (total > max) {
		specd_free(w);
		LOG_WARN("model: the weights stay in the file's mapping: their copy in huge pages "
			 "(%.1f MiB) would pass this rank's share of the free memory (%.1f MiB); "
			 "set huge_pages: off to read them there without this warning",
			 (double)total / (1 << 20), (double)max / (1 << 20));
		return SPECD_OK;
	}
	double t0 = specd_now();
	unsigned char *buf = specd_huge_alloc(total);
	if (!buf) {
		specd_free(w);
		return specd_errorf(err, SPECD_NOMEM, "model: no %zu bytes of memory to hold the "
				    "weights in huge pages (huge_pages: off reads them from the "
				    "file in place)", total);
	}
	unsigned char *at = buf;
	for (size_t i = first; i < n; i++) {
		struct kern_mat *src = w[i];
		size_t rb = kern_dtype_row_bytes(src->type, src->n_in);
		for (size_t o = 0; o < src->n_out; o++)
			memcpy(at + o * rb, (const unsigned char *)src->data + o * src->row_bytes, rb);
		*src = kern_mat_packed(src->type, src->n_in, src->n_out, at);
		at += llama_packed_bytes(src->type, src->n_in, src->n_out);
	}
	if (tied)
		m->output = m->tok_embd;
	/* The shard's column slices and converted matrices were copied too (but an untied
	 * embedding table's). */
	llama_free_unread(m, w, n);
	specd_free(w);
	m->huge = buf;
	m->huge_bytes = total;
	LOG_DEBUG("model: %zu bytes of weights copied into huge pages in %.2f s", total,
		  specd_now() - t0);
	return SPECD_OK;
}

size_t model_huge_bytes(const struct model *m)
{
	return m->huge_bytes;
}
