/* Tensor-parallel shards of the Llama-family model (DESIGN.md §3, §5 "Weights in
 * memory"): which part of every weight matrix a shard holds, what that costs in
 * memory, and the two vocab-parallel operations on its logits. model_load with a
 * struct model_comm of size T > 1 loads shard `rank` of T; parallel/ builds the hook.
 *
 * Split (Megatron): Q/K/V and gate/up by output rows (heads, FFN columns), O and down
 * by input columns, the embedding and the LM head by vocabulary rows.
 *   - Heads: with n_kv_heads >= T each shard gets whole KV heads (as evenly as they
 *     split) with their query heads; with fewer KV heads than shards the query heads
 *     are split evenly and each shard computes the KV heads its query heads read
 *     (replicated across shards).
 *   - FFN columns: in whole quantisation blocks of ffn_down's type, as evenly as the
 *     blocks split (ffn 160 = 5 blocks of 32 over 2 shards: 96 + 64).
 *   - Vocabulary: rows split as evenly as they go.
 * Row slices are used in place from the mapping; the column slices of O and down are
 * copied once at load into the shard's own buffer, in the file's type. When a head
 * boundary falls inside a quantisation block of O (head_dim 16 in blocks of 32, or
 * 128 in K-quant blocks of 256) the shard keeps the whole blocks and its attention
 * output is padded with zero columns, so the products are exactly its own. The rest
 * of the file is never touched, so it never becomes resident.
 *
 * Logits of a sharded model: model_forward writes (n_out, n_vocab) rows of this
 * shard's vocabulary slice only: logit of token vocab0 + j at column j.
 *
 * Threads: as model/llama.h (the compute thread). */
#ifndef SPECD_MODEL_SHARD_H
#define SPECD_MODEL_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "model/llama.h"

struct model_shard {
	uint32_t rank, size;       /* of the hook; 0 of 1 for a whole model */
	uint32_t head0, n_heads;   /* query heads [head0, head0 + n_heads) */
	uint32_t kv_head0, n_kv_heads; /* KV heads computed here */
	uint32_t ffn0, n_ffn;      /* FFN columns */
	uint32_t vocab0, n_vocab;  /* vocabulary rows (embedding and LM head) */
	size_t weight_bytes;       /* every weight of the whole file's model */
	size_t resident_bytes;     /* weights this shard references in place or copied */
	size_t copied_bytes;       /* of which copied at load (O and down column slices) */
};

/* This model's shard (the whole model when loaded without a hook or size 1). */
const struct model_shard *model_shard(const struct model *m);

/* Weight bytes this shard keeps resident: references into the mapping plus copies. */
size_t model_resident_bytes(const struct model *m);
/* Bytes of weight matrices held in huge pages (model_config.huge_pages_max); 0: none. */
size_t model_huge_bytes(const struct model *m);

/* Checks a batch as model_forward would, without running it (a leader checks before
 * it sends a batch to the other shards). SPECD_INVAL as model_forward. */
enum specd_status model_batch_check(struct model *m, const struct model_batch *b,
				    struct specd_error *err);

/* Greedy over vocab-parallel logits: out[r] = the whole-vocabulary id of the largest
 * logit of row r (lowest id on ties; NaN never wins), for r < rows; logits are
 * (rows, model_shard()->n_vocab) as model_forward wrote them. Each shard takes its
 * local argmax and the hook's maxloc picks across shards: no row is gathered. Every
 * shard calls it with the same rows and gets the same out. Errors: SPECD_INVAL
 * (rows 0 or above the model's max batch), the hook's errors. Compute thread. */
enum specd_status model_shard_argmax(struct model *m, const float *logits, uint32_t rows,
				     uint32_t *out, struct specd_error *err);

/* Gathers whole logit rows to shard 0 (for sampling): full is (rows, hp.n_vocab) on
 * shard 0 and may be NULL elsewhere. Every shard calls it. Whole model: a copy.
 * Errors: SPECD_INVAL (rows 0, or full NULL on shard 0), the hook's errors. */
enum specd_status model_shard_gather_logits(struct model *m, const float *logits,
					    uint32_t rows, float *full,
					    struct specd_error *err);

#endif
