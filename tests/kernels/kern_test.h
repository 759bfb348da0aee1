/* What the kernel tests share: a seeded uniform generator, weight matrices of any type
 * with their dequantised copy, and CPU backends by ISA name. Test programs only; the
 * helpers fail the running cmocka test on allocation failure. */
#ifndef SPECD_TESTS_KERNELS_KERN_TEST_H
#define SPECD_TESTS_KERNELS_KERN_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kern.h"

/* Restarts the generator (its start: 0x9e3779b97f4a7c15). */
void ktest_seed(uint64_t seed);
/* Uniform in [-1, 1) (xorshift64). */
float ktest_rnd(void);
/* n values of ktest_rnd, malloc'd (free). */
float *ktest_rnd_array(size_t n);

struct ktest_mat {
	struct kern_mat m;
	unsigned char *bytes;
	float *deq; /* (n_out, n_in): the weights as kern_dequant_row gives them */
};

/* n_out rows of n_in uniform weights quantised to t (kern_quant_row), each row pad
 * bytes longer than it needs. */
void ktest_mat_make(struct ktest_mat *tm, enum kern_dtype t, size_t n_in, size_t n_out,
		    size_t pad);
void ktest_mat_free(struct ktest_mat *tm);

/* A CPU backend of `threads` threads on ISA isa ("scalar", "avx2", "avx512") reading
 * activations as act, or NULL when this CPU (or SPECD_ISA) does not offer that ISA: the
 * cap would give a lower one, tested under its own name. */
struct kern_ctx *ktest_cpu(const char *isa, unsigned threads, enum kern_act act);

#endif
