/* drafters/ private: the Medusa heads as loaded (medusa_load.c) for the drafter that
 * runs them (medusa.c). */
#ifndef SPECD_DRAFTERS_MEDUSA_INT_H
#define SPECD_DRAFTERS_MEDUSA_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kernels/kern.h"
#include "medusa.h"

#define MEDUSA_MAX_LAYERS 8 /* residual blocks per head */

struct model;
struct safetensors_file;

struct medusa_block {
	struct kern_mat w;  /* (dim, dim): in the file's mapping or in owned */
	float *bias;        /* (dim) host, owned */
};

struct medusa_head {
	uint32_t n_layers;
	struct medusa_block block[MEDUSA_MAX_LAYERS];
	struct kern_mat lm; /* (n_vocab, dim): the head's own, or the target's */
	bool shared_lm;
};

struct medusa_heads {
	uint32_t n_heads, dim, n_vocab;
	struct medusa_head head[MEDUSA_MAX_HEADS];
	struct safetensors_file *file; /* the mapping the weights point into, and copies */
};

/* Maps and checks `path` against the target (hidden size, vocabulary, its LM head).
 * Errors: SPECD_IO (cannot open or map), SPECD_INVAL (not safetensors, no heads, a
 * shape that does not fit: the message names the file, the tensor and both sizes),
 * SPECD_UNSUPPORTED (a dtype other than F32, F16, BF16), SPECD_NOMEM. *out only on
 * success; free with medusa_heads_destroy. */
enum specd_status medusa_heads_load(const char *path, const struct model *target,
				    struct medusa_heads **out, struct specd_error *err);
/* NULL is a no-op. */
void medusa_heads_destroy(struct medusa_heads *h);

#endif
