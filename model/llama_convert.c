/* target.dtype: the shard's unquantised weight matrices held in another float type
 * (f32, f16 or bf16), converted once at load after the shard is cut, so each rank
 * converts only its own part. Quantised matrices and the f32 vectors (norms, biases)
 * stay as the file has them. Each row goes through f32 (exact for f16 and bf16) and
 * is rounded to nearest even, as specd-gen-model writes a file of that type: a model
 * converted here computes bit for bit what the same weights written in that type do. */
#include "llama_int.h"

#include "common/alloc.h"

static bool is_float(enum kern_dtype t)
{
	return t == KERN_F32 || t == KERN_F16 || t == KERN_BF16;
}

/* llama_int.h: shared with llama_huge.c. */
size_t llama_matrices(struct model *m, struct kern_mat **out)
{
	size_t n = 0;
	out[n++] = &m->tok_embd;
	if (m->output.data != m->tok_embd.data)
		out[n++] = &m->output;
	for (uint32_t l = 0; l < m->hp.n_layers; l++) {
		struct llama_layer *ly = &m->layers[l];
		struct kern_mat *w[] = {&ly->wq, &ly->wk,     &ly->wv,    &ly->wo,
					&ly->w_gate, &ly->w_up, &ly->w_down};
		for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
			out[n++] = w[i];
	}
	return n;
}

/* Whether any of the n matrices still reads from [base, base + bytes). */
static bool points_into(struct kern_mat *const *w, size_t n, const void *base, size_t bytes)
{
	const uint8_t *lo = base, *hi = lo + bytes;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = w[i]->data;
		if (p >= lo && p < hi)
			return true;
	}
	return false;
}

void llama_free_unread(struct model *m, struct kern_mat *const *w, size_t n)
{
	if (m->copies && !points_into(w, n, m->copies, m->shard.copied_bytes)) {
		specd_free(m->copies);
		m->copies = NULL;
	}
	if (m->converted && !points_into(w, n, m->converted, m->converted_bytes)) {
		specd_free(m->converted);
		m->converted = NULL;
	}
}

#define ALIGN 64 /* each matrix starts on a cache line, as the kernels' loads like */

size_t llama_packed_bytes(enum kern_dtype t, size_t n_in, size_t n_out)
{
	return (kern_dtype_row_bytes(t, n_in) * n_out + ALIGN - 1) / ALIGN * ALIGN;
}

enum specd_status llama_convert_weights(struct model *m, enum kern_dtype to,
					struct specd_error *err)
{
	if (!is_float(to))
		return specd_errorf(err, SPECD_INVAL, "model: weights can be held as f32, f16 "
				    "or bf16, not %s", kern_dtype_name(to));
	struct kern_mat **w = specd_malloc_array(LLAMA_MAX_MATRICES(m->hp.n_layers), sizeof(*w));
	if (!w)
		return specd_errorf(err, SPECD_NOMEM, "model: out of memory");
	size_t n = llama_matrices(m, w), total = 0, widest = 0, before = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_float(w[i]->type) || w[i]->type == to)
			continue;
		total += llama_packed_bytes(to, w[i]->n_in, w[i]->n_out);
		before += kern_dtype_row_bytes(w[i]->type, w[i]->n_in) * w[i]->n_out;
		widest = w[i]->n_in > widest ? w[i]->n_in : widest;
	}
	if (total == 0) {
		specd_free(w);
		return SPECD_OK;
	}
	uint8_t *buf = specd_aligned_alloc(ALIGN, total);
	float *row = specd_malloc_array(widest, sizeof(float));
	if (!buf || !row) {
		specd_free(buf);
		specd_free(row);
		specd_free(w);
		return specd_errorf(err, SPECD_NOMEM, "model: no memory to hold the weights as %s "
				    "(%zu bytes)", kern_dtype_name(to), total);
	}
	const void *embd_was = m->tok_embd.data;
	uint8_t *at = buf;
	for (size_t i = 0; i < n; i++) {
		struct kern_mat *src = w[i];
		if (!is_float(src->type) || src->type == to)
			continue;
		size_t rb = kern_dtype_row_bytes(to, src->n_in);
		for (size_t o = 0; o < src->n_out; o++) {
			kern_dequant_row(src->type, (const uint8_t *)src->data + o * src->row_bytes,
					 row, src->n_in);
			kern_quant_row(to, row, at + o * rb, src->n_in);
		}
		*src = kern_mat_packed(to, src->n_in, src->n_out, at);
		at += llama_packed_bytes(to, src->n_in, src->n_out);
	}
	if (m->output.data == embd_was)
		m->output = m->tok_embd; /* tied: the converted embedding */
	m->converted = buf;
	m->converted_bytes = total;
	/* The shard's own column slices (llama_shard.c) are dead once nothing points into
	 * them: freed, and the resident count already left them out with `before`. */
	llama_free_unread(m, w, n);
	m->shard.resident_bytes = m->shard.resident_bytes - before + total;
	m->hp.wtype = m->layers[0].wq.type;
	specd_free(row);
	specd_free(w);
	return SPECD_OK;
}
