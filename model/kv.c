/* The KV cache pool; see kv.h. One block laid out [layer][slot][row][K f | V f]: a
 * row's key and value side by side, as the forward's Q/K/V projection leaves them
 * (llama_acts.qkv), so a batch's keys and values go into the cache in one scatter and
 * a kept row moves in one copy. One layer of one slot is contiguous and the attention
 * op walks it with two strides. Lengths are the only state: truncation is O(1) and
 * rows past a length are simply rewritten by the next forward. */
#include "kv.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"

struct kv_cache {
	struct kv_config cfg;
	size_t slot_floats;  /* n_ctx * 2 row_floats */
	size_t layer_floats; /* n_slots * slot_floats */
	/* (n_layers, n_slots, n_ctx, 2 row_floats) host, or the device's: each row the
	 * key then the value */
	float *kv;
	struct kern_ctx *dev; /* the device backend holding k and v; NULL: host memory */
	uint32_t *len;       /* (n_slots) rows committed */
};

enum specd_status kv_create(const struct kv_config *cfg, struct kv_cache **out,
			    struct specd_error *err)
{
	if (!cfg->n_layers || !cfg->n_slots || !cfg->n_ctx || !cfg->row_floats)
		return specd_errorf(err, SPECD_INVAL,
				    "kv cache: layers %u, slots %u, context %u, row %u: none may be 0",
				    cfg->n_layers, cfg->n_slots, cfg->n_ctx, cfg->row_floats);
	/* A layer's rows are numbered slot x n_ctx + row in 32 bits (model_forward's
	 * scatter into the cache). */
	size_t pair = 2 * (size_t)cfg->row_floats, slot_floats = (size_t)cfg->n_ctx * pair;
	if ((uint64_t)cfg->n_slots * cfg->n_ctx > UINT32_MAX ||
	    slot_floats / cfg->n_ctx != pair ||
	    slot_floats > SIZE_MAX / sizeof(float) / cfg->n_slots / cfg->n_layers)
		return specd_errorf(err, SPECD_INVAL, "kv cache: %u slots x %u rows overflow",
				    cfg->n_slots, cfg->n_ctx);
	size_t layer_floats = slot_floats * cfg->n_slots;
	size_t total = layer_floats * cfg->n_layers;

	struct kv_cache *kv = specd_calloc(1, sizeof(*kv));
	if (!kv)
		return specd_errorf(err, SPECD_NOMEM, "kv cache: out of memory");
	kv->cfg = *cfg;
	kv->slot_floats = slot_floats;
	kv->layer_floats = layer_floats;
	enum specd_status st = SPECD_NOMEM;
	if (cfg->kern && !kern_host_memory(cfg->kern)) {
		void *p = NULL;
		kv->dev = cfg->kern;
		if ((st = kern_alloc(kv->dev, total * sizeof(float), &p)) == SPECD_OK)
			kv->kv = p;
	} else {
		/* calloc, not malloc + memset: pages of a large pool are touched only when used. */
		kv->kv = specd_calloc(total, sizeof(float));
	}
	kv->len = specd_calloc(cfg->n_slots, sizeof(uint32_t));
	if (!kv->kv || !kv->len) {
		kv_destroy(kv);
		return specd_errorf(err, st == SPECD_OK ? SPECD_NOMEM : st,
				    "kv cache: cannot allocate %zu bytes%s", total * sizeof(float),
				    cfg->kern ? " on the backend" : "");
	}
	*out = kv;
	return SPECD_OK;
}

void kv_destroy(struct kv_cache *kv)
{
	if (!kv)
		return;
	if (kv->dev)
		kern_free(kv->dev, kv->kv);
	else
		specd_free(kv->kv);
	specd_free(kv->len);
	specd_free(kv);
}

uint32_t kv_n_slots(const struct kv_cache *kv)
{
	return kv->cfg.n_slots;
}

uint32_t kv_n_ctx(const struct kv_cache *kv)
{
	return kv->cfg.n_ctx;
}

size_t kv_bytes(const struct kv_cache *kv)
{
	return kv->layer_floats * kv->cfg.n_layers * sizeof(float);
}

uint32_t kv_len(const struct kv_cache *kv, uint32_t slot)
{
	assert(slot < kv->cfg.n_slots);
	return kv->len[slot];
}

enum specd_status kv_truncate(struct kv_cache *kv, uint32_t slot, uint32_t len)
{
	if (slot >= kv->cfg.n_slots || len > kv->len[slot])
		return SPECD_INVAL;
	kv->len[slot] = len;
	return SPECD_OK;
}

/* Distinct rows never overlap, which a device copy needs. */
static enum specd_status row_copy(struct kv_cache *kv, float *dst, const float *src,
				  size_t bytes)
{
	if (kv->dev)
		return kern_copy(kv->dev, dst, src, bytes);
	memcpy(dst, src, bytes);
	return SPECD_OK;
}

enum specd_status kv_compact(struct kv_cache *kv, uint32_t slot, uint32_t base,
			     const uint32_t *rows, uint32_t n)
{
	if (slot >= kv->cfg.n_slots || base > kv->len[slot] || (n && !rows))
		return SPECD_INVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (rows[i] < base || rows[i] >= kv->len[slot] || (i && rows[i] <= rows[i - 1]))
			return SPECD_INVAL;
	}
	/* rows[i] >= base + i (increasing from >= base), so copying in increasing i never
	 * overwrites a row still to be read. A row's key and value move together. */
	size_t bytes = 2 * (size_t)kv->cfg.row_floats * sizeof(float);
	for (uint32_t l = 0; l < kv->cfg.n_layers; l++) {
		for (uint32_t i = 0; i < n; i++) {
			if (rows[i] == base + i)
				continue;
			enum specd_status st = row_copy(kv, kv_k_row(kv, l, slot, base + i),
							kv_k_row(kv, l, slot, rows[i]), bytes);
			if (st != SPECD_OK)
				return st;
		}
	}
	kv->len[slot] = base + n;
	return SPECD_OK;
}

struct kern_kv_view kv_layer_view(const struct kv_cache *kv, uint32_t layer)
{
	assert(layer < kv->cfg.n_layers);
	const float *k = kv->kv + layer * kv->layer_floats;
	struct kern_kv_view view = {
		.k = k,
		.v = k + kv->cfg.row_floats,
		.slot_stride = kv->slot_floats,
		.row_stride = 2 * (size_t)kv->cfg.row_floats,
		.n_rows = kv->cfg.n_ctx,
	};
	return view;
}

float *kv_k_row(struct kv_cache *kv, uint32_t layer, uint32_t slot, uint32_t row)
{
	assert(layer < kv->cfg.n_layers && slot < kv->cfg.n_slots && row < kv->cfg.n_ctx);
	return kv->kv + layer * kv->layer_floats + slot * kv->slot_floats +
	       (size_t)row * 2 * kv->cfg.row_floats;
}

float *kv_v_row(struct kv_cache *kv, uint32_t layer, uint32_t slot, uint32_t row)
{
	return kv_k_row(kv, layer, slot, row) + kv->cfg.row_floats;
}

void kv_set_len(struct kv_cache *kv, uint32_t slot, uint32_t len)
{
	assert(slot < kv->cfg.n_slots && len <= kv->cfg.n_ctx);
	kv->len[slot] = len;
}
