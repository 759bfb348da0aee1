/* The fake CUDA runtime of tests/parallel/fake_nccl (see fake_nccl.h): the few calls
 * parallel/comm_nccl.c makes, over host memory. Found before the toolkit's header only
 * by the fake's own build (tests/parallel/CMakeLists.txt); every name is mapped to a
 * fake_ symbol so that a test linking the real CUDA backend too never sees two
 * definitions of one symbol. */
#ifndef SPECD_TEST_FAKE_CUDA_RUNTIME_API_H
#define SPECD_TEST_FAKE_CUDA_RUNTIME_API_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInvalidDevice = 101,
	cudaErrorNoDevice = 100,
	cudaErrorNotReady = 600,
	cudaErrorLaunchFailure = 719,
} cudaError_t;

typedef enum {
	cudaMemcpyDeviceToDevice = 3,
} cudaMemcpyKind;

#define cudaStreamNonBlocking 0x01u

typedef struct fake_stream *cudaStream_t;

#define cudaGetDeviceCount fake_cudaGetDeviceCount
#define cudaSetDevice fake_cudaSetDevice
#define cudaGetErrorString fake_cudaGetErrorString
#define cudaGetLastError fake_cudaGetLastError
#define cudaMalloc fake_cudaMalloc
#define cudaFree fake_cudaFree
#define cudaMemcpyAsync fake_cudaMemcpyAsync
#define cudaStreamCreateWithFlags fake_cudaStreamCreateWithFlags
#define cudaStreamDestroy fake_cudaStreamDestroy
#define cudaStreamQuery fake_cudaStreamQuery
/* The device reductions comm_nccl.c queues (kernels/cuda/cuda_reduce.h), done on the
 * host in the same rank order when the stream reaches them. */
#define cuda_launch_sum_slices fake_cuda_launch_sum_slices
#define cuda_launch_maxloc_slices fake_cuda_launch_maxloc_slices

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
			    cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
/* cudaSuccess once every step queued on s has run; cudaErrorNotReady while a step
 * waits for a message. Each call moves the messages on (MPI_Testall). */
cudaError_t cudaStreamQuery(cudaStream_t s);

#endif
