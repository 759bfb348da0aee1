/* The KV cache: a pool of per-sequence slots, allocated once at model load (n_slots x
 * n_ctx rows per layer), written by the forward pass and rolled back by the verifier
 * when drafted tokens are rejected (DESIGN.md §5). Row r of a slot holds the K and V
 * (after RoPE) of the token at position r once that token is committed.
 *
 * Roll-back is exact: kv_truncate(slot, len) makes the slot what it was when it
 * held len rows, so truncating then re-decoding gives bitwise the same logits as
 * decoding straight on (rows past len are never read again before being rewritten).
 *
 * Threads: the compute thread only (the forward pass writes the same memory). */
#ifndef SPECD_MODEL_KV_H
#define SPECD_MODEL_KV_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "kernels/kern.h"

struct kv_config {
	uint32_t n_layers;
	uint32_t n_slots;    /* sequences held at once, >= 1 */
	uint32_t n_ctx;      /* rows per slot, >= 1 */
	uint32_t row_floats; /* floats per row of one layer: n_kv_heads * head_dim of this shard */
	/* The backend whose memory holds the pool, borrowed; NULL or a host-memory
	 * backend: host memory. Rows (kv_k_row, kv_layer_view) are in its memory. */
	struct kern_ctx *kern;
};

struct kv_cache;

/* Allocates the pool (zeroed, every slot empty). Errors: SPECD_INVAL (a zero field, a
 * size that overflows, or n_slots x n_ctx of 2^32 rows or more), SPECD_NOMEM (the
 * message says how many bytes), a device backend's allocation error. */
enum specd_status kv_create(const struct kv_config *cfg, struct kv_cache **out,
			    struct specd_error *err);
/* NULL is a no-op. */
void kv_destroy(struct kv_cache *kv);

uint32_t kv_n_slots(const struct kv_cache *kv);
uint32_t kv_n_ctx(const struct kv_cache *kv);
/* Bytes of K and V together. */
size_t kv_bytes(const struct kv_cache *kv);

/* Rows committed in a slot (the next causal position). slot < kv_n_slots (asserted). */
uint32_t kv_len(const struct kv_cache *kv, uint32_t slot);

/* Rolls a slot back to its first len rows; len 0 empties it. Errors: SPECD_INVAL (slot
 * out of range, or len greater than kv_len: truncation cannot grow a slot). */
enum specd_status kv_truncate(struct kv_cache *kv, uint32_t slot, uint32_t len);

/* After a tree forward (model/llama.h): keeps the n rows rows[0..n) of the slot, in
 * that order, as rows base .. base + n - 1, and sets the slot's length to base + n.
 * This is how the verifier keeps the accepted branch of a token tree. rows must be
 * increasing, each >= base and < kv_len. Errors: SPECD_INVAL (slot out of range,
 * base > kv_len, rows not as required), a device backend's copy error. */
enum specd_status kv_compact(struct kv_cache *kv, uint32_t slot, uint32_t base,
			     const uint32_t *rows, uint32_t n);

/* For model_forward only: the layer's cache as the attention op reads it, the K and
 * V rows it writes, and the new length of a slot once a batch is done. A row holds
 * its key (row_floats) then its value: kv_v_row is kv_k_row + row_floats, rows are
 * 2 row_floats apart, and one scatter of 2 row_floats columns from kv_k_row(l, 0, 0)
 * writes both. */
struct kern_kv_view kv_layer_view(const struct kv_cache *kv, uint32_t layer);
float *kv_k_row(struct kv_cache *kv, uint32_t layer, uint32_t slot, uint32_t row);
float *kv_v_row(struct kv_cache *kv, uint32_t layer, uint32_t slot, uint32_t row);
void kv_set_len(struct kv_cache *kv, uint32_t slot, uint32_t len);

#endif
