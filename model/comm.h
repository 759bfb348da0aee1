/* The communication hook through which tensor parallelism reaches the forward pass
 * (DESIGN.md §3, §5): parallel/ fills one with its communicator, and model/ calls it
 * without knowing MPI or NCCL. With no hook (NULL) the model runs whole.
 *
 * Call sites in the forward (llama_forward.c), in this order: with size > 1, one
 * allreduce_sum over the vocab-parallel embedding lookup (rows x dim floats, zeros
 * for the ids outside a shard's slice); then per layer one allreduce_sum over the
 * attention output projection (rows x dim floats, the O matrix being split by input
 * columns across shards) and one over the MLP down projection. maxloc and gather are
 * called only by model_shard_argmax and model_shard_gather_logits (model/shard.h),
 * over the vocab-parallel logits. */
#ifndef SPECD_MODEL_COMM_H
#define SPECD_MODEL_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Sums buf[0..n) element-wise across all shards, in place; every shard gets the same
 * result, and every shard calls it with the same n at the same point of the forward.
 * The sum of each element must not depend on n (batch invariance, kernels/kern.h):
 * parallel/ adds the shards' values in rank order. Returns SPECD_OK, or the
 * communicator's error (SPECD_MPI, SPECD_NCCL, SPECD_TIMEOUT), which the forward
 * passes up unchanged. Called on the compute thread only. */
typedef enum specd_status model_allreduce_fn(float *buf, size_t n, void *user);

/* For each i < n, in place on every shard: the largest val[i] across shards and its
 * idx[i]; on equal values the lowest idx. No val may be NaN. Errors as above. */
typedef enum specd_status model_maxloc_fn(float *val, int32_t *idx, size_t n, void *user);

/* Gathers to shard 0: shard r's send[0..counts[r]) lands at recv + displs[r]. recv is
 * read on shard 0 only (NULL elsewhere); counts and displs (size entries) are the
 * same on every shard. Errors as above. */
typedef enum specd_status model_gather_fn(const float *send, float *recv,
					  const size_t *counts, const size_t *displs,
					  void *user);

struct model_comm {
	model_allreduce_fn *allreduce_sum;
	model_maxloc_fn *maxloc;   /* required when size > 1 */
	model_gather_fn *gather;   /* required when size > 1 */
	void *user;    /* passed to every callback */
	/* allreduce_sum takes the backend's memory (a device backend's buffers, NCCL),
	 * synced before the call, instead of host memory. maxloc and gather always take
	 * host memory. */
	bool device_memory;
	uint32_t rank; /* this shard, 0 .. size-1 */
	uint32_t size; /* shards in all, >= 1 */
};

#endif
