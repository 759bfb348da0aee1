/* The CUDA device API when this build has no CUDA backend (SPECD_CUDA=OFF or no nvcc). */
#include "cuda_device.h"

#include <stdio.h>

int kern_cuda_compiled(void)
{
	return 0;
}

enum specd_status kern_cuda_device_count(int *count, char *why, size_t why_size)
{
	if (why)
		snprintf(why, why_size, "built without CUDA (SPECD_CUDA=OFF or no nvcc)");
	*count = 0;
	return SPECD_OK;
}

enum specd_status kern_cuda_device_info(int index, struct kern_cuda_device *out)
{
	(void)index;
	(void)out;
	return SPECD_UNSUPPORTED;
}
