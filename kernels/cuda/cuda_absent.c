/* The CUDA device API and backend entry point when this build has no CUDA backend
 * (SPECD_CUDA=OFF or no nvcc): no device, and kern_cuda_create says why. */
#include "cuda_device.h"
#include "kernels/kern.h"

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

enum specd_status kern_cuda_create(const struct kern_cuda_config *cfg, struct kern_ctx **out,
				   struct specd_error *err)
{
	(void)cfg;
	(void)out;
	return specd_errorf(err, SPECD_UNSUPPORTED,
			    "no CUDA device: built without CUDA (SPECD_CUDA=OFF or no nvcc)");
}

enum specd_status kern_cuda_dequant_host(enum kern_dtype t, const void *row, size_t n,
					 float *out)
{
	(void)t;
	(void)row;
	(void)n;
	(void)out;
	return SPECD_UNSUPPORTED;
}
