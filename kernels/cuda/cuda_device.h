/* What CUDA devices this process can see. Linked in every build: without the CUDA
 * backend (SPECD_CUDA=OFF) or without a GPU, it reports zero devices and says why,
 * so callers need no #ifdef. */
#ifndef SPECD_KERNELS_CUDA_DEVICE_H
#define SPECD_KERNELS_CUDA_DEVICE_H

#include <stddef.h>

#include "common/status.h"

struct kern_cuda_device {
	char name[96];
	size_t total_bytes; /* device memory */
	size_t free_bytes;
	int cc_major, cc_minor;
};

/* True when this binary was built with the CUDA backend. */
int kern_cuda_compiled(void);

/* The number of visible devices in *count (0 with no GPU or no driver: that is not an
 * error, and `why` then says what was missing). `why` may be NULL. Any thread, but
 * the first call initialises the CUDA runtime. */
enum specd_status kern_cuda_device_count(int *count, char *why, size_t why_size);

/* Properties of device `index`. SPECD_INVAL for an index out of range, SPECD_CUDA
 * when the runtime fails. */
enum specd_status kern_cuda_device_info(int index, struct kern_cuda_device *out);

#endif
