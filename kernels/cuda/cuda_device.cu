// CUDA device discovery for the census and the role table; see cuda_device.h.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

extern "C" {
#include "cuda_device.h"
}

extern "C" int kern_cuda_compiled(void)
{
	return 1;
}

extern "C" enum specd_status kern_cuda_device_count(int *count, char *why, size_t why_size)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
	    e == cudaErrorInitializationError || e == cudaErrorNotPermitted ||
	    e == cudaErrorCallRequiresNewerDriver || e == cudaErrorSystemDriverMismatch ||
	    e == cudaErrorUnknown) {
		// No usable GPU is the normal state of a CPU node, not a failure.
		if (why)
			snprintf(why, why_size, "%s", cudaGetErrorString(e));
		cudaGetLastError();
		*count = 0;
		return SPECD_OK;
	}
	if (e != cudaSuccess) {
		if (why)
			snprintf(why, why_size, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
		return SPECD_CUDA;
	}
	if (why)
		snprintf(why, why_size, "%d device(s)", n);
	*count = n;
	return SPECD_OK;
}

extern "C" enum specd_status kern_cuda_device_info(int index, struct kern_cuda_device *out)
{
	int n = 0;
	if (kern_cuda_device_count(&n, NULL, 0) != SPECD_OK)
		return SPECD_CUDA;
	if (index < 0 || index >= n)
		return SPECD_INVAL;
	cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, index) != cudaSuccess)
		return SPECD_CUDA;
	size_t free_b = 0, total_b = 0;
	if (cudaSetDevice(index) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
		return SPECD_CUDA;
	struct kern_cuda_device d;
	memset(&d, 0, sizeof(d));
	snprintf(d.name, sizeof(d.name), "%s", prop.name);
	d.total_bytes = total_b;
	d.free_bytes = free_b;
	d.cc_major = prop.major;
	d.cc_minor = prop.minor;
	*out = d;
	return SPECD_OK;
}
