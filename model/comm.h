/* The communication hook through which tensor parallelism reaches the forward pass
 * (DESIGN.md §3, §5): parallel/ fills one with its communicator, and model/ calls it
 * without knowing MPI or NCCL. With no hook (NULL) the model runs whole.
 *
 * Call sites in the forward (llama_forward.c), in this order per layer: one
 * allreduce_sum over the attention output projection (rows x dim floats, the O matrix
 * being split by input rows across shards), one over the MLP down projection. */
#ifndef SPECD_MODEL_COMM_H
#define SPECD_MODEL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Sums buf[0..n) element-wise across all shards, in place; every shard gets the same
 * result, and every shard calls it with the same n at the same point of the forward.
 * Returns SPECD_OK, or the communicator's error (SPECD_MPI, SPECD_NCCL, SPECD_TIMEOUT),
 * which the forward passes up unchanged. Called on the compute thread only. */
typedef enum specd_status model_allreduce_fn(float *buf, size_t n, void *user);

struct model_comm {
	model_allreduce_fn *allreduce_sum;
	void *user;    /* passed to every callback */
	uint32_t rank; /* this shard, 0 .. size-1 */
	uint32_t size; /* shards in all, >= 1 */
};

#endif
