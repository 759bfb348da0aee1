/* Rank-order reductions on the device for parallel/comm_nccl.c: NCCL gathers every
 * rank's slice and these add or compare the slices in rank order, so a device
 * all-reduce gives bitwise what the MPI communicator gives on the host, whatever the
 * element count (parallel/comm.h, Determinism). Queued on `s`; the launch error is
 * returned (faults show at the next sync). Built only with SPECD_CUDA. */
#ifndef SPECD_KERNELS_CUDA_REDUCE_H
#define SPECD_KERNELS_CUDA_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = ((slices[0][i] + slices[1][i]) + ...) + slices[n_slices - 1][i], slice s at
 * slices + s * n. out may be any of the slices. */
cudaError_t cuda_launch_sum_slices(cudaStream_t s, float *out, const float *slices, size_t n,
				   int n_slices);

/* For each i: the largest vals[s][i] over the slices with its idxs[s][i], the lower
 * index on equal values, into val[i] and idx[i]. */
cudaError_t cuda_launch_maxloc_slices(cudaStream_t s, float *val, int32_t *idx,
				      const float *vals, const int32_t *idxs, size_t n,
				      int n_slices);

#ifdef __cplusplus
}
#endif

#endif
