/* specd-gpu-check's parts (tools/gpu_check.c: the shared helpers, sample, greedy, bench
 * and the program; tools/gpu_ops.c: ops; tools/gpu_methods.c: methods), sharing the
 * failure count, exit codes, random inputs and device buffers. One thread. */
#ifndef SPECD_TOOLS_GPU_CHECK_H
#define SPECD_TOOLS_GPU_CHECK_H

#include <stdbool.h>
#include <stddef.h>

struct kern_ctx;
struct model;

#define HBM_BYTES_PER_S 4.8e12 /* H200 datasheet */
#define GPU_CHECK_SMALL_STAGE (16u << 10) /* gpu_check_ops' small_stage ring */
#define GPU_CHECK_EXIT_FAIL 1
#define GPU_CHECK_EXIT_USAGE 2
#define GPU_CHECK_EXIT_NO_DEVICE 3

/* Prints "KIND WHAT CLAIM ok|FAIL" and counts a failure when !ok. kind: "op", "inv"
 * (batch invariance), "spec" or "methods". */
void gpu_check_expect(bool ok, const char *kind, const char *what, const char *claim);

/* Failed checks so far, and one more. */
int gpu_check_failures(void);
void gpu_check_fail(void);

/* Prints "op WHAT max_abs .. max_rel .. ok|FAIL": the largest difference of gpu from cpu
 * relative to cpu's largest magnitude must be <= tol, NaN where cpu has NaN. */
void gpu_check_compare(const char *what, const float *cpu, const float *gpu, size_t n,
		       double tol);

/* The n floats of a and b hold the same bits. */
bool gpu_check_bitwise(const float *a, const float *b, size_t n);

/* n floats in [-1, 1) from the program's one generator (fixed seed: a run is
 * repeatable); free with specd_free. Exits (GPU_CHECK_EXIT_USAGE) when out of memory. */
float *gpu_check_rnd_floats(size_t n);

/* bytes (n floats) of k's memory filled from host, or zeroed when host is NULL; free
 * with kern_free. Exit (GPU_CHECK_EXIT_FAIL) when the allocation or upload fails. */
void *gpu_check_dev_from(struct kern_ctx *k, const void *host, size_t bytes);
float *gpu_check_dev_floats(struct kern_ctx *k, const float *host, size_t n);

/* Downloads bytes of k's memory at dev into host; exits (GPU_CHECK_EXIT_FAIL) on error. */
void gpu_check_to_host(struct kern_ctx *k, void *host, const void *dev, size_t bytes);

/* Returns from the calling void function, counting a failure with the call's text,
 * when the call does not return SPECD_OK: a check stops at its first failed call and
 * the next check goes on. */
#define GPU_CHECK_OK(call)                                                                 \
	do {                                                                               \
		enum specd_status st_ = (call);                                            \
		if (st_ != SPECD_OK) {                                                     \
			printf("op call failed: %s: %s\n", #call, specd_status_str(st_)); \
			gpu_check_fail();                                                  \
			return;                                                            \
		}                                                                          \
	} while (0)

/* `ops`: every op of gpu against cpu (gpu_ops.c); ref, a second device backend running
 * the reference matmul on weights dequantised at load, may be NULL. small_stage, may be
 * NULL: gpu's kind of backend with a staging ring of GPU_CHECK_SMALL_STAGE bytes, on which the ops that
 * stage host arrays run again (the ring wraps every few ops). The failures are counted. */
void gpu_check_ops(struct kern_ctx *cpu, struct kern_ctx *gpu, struct kern_ctx *ref,
		   struct kern_ctx *small_stage);

/* Bytes of weights a decode step of m reads: every matrix and vector but the
 * embedding table, of which it reads one row (the file's types; quantised types are
 * read as f32 on the device, 32 / bits-per-weight times more). */
double gpu_check_step_bytes(const struct model *m);

/* `methods TARGET [--draft GGUF] [--heads SAFETENSORS] [--eagle DIR] [-n N] [-k K,..]`
 * on backend k: exit status 0, GPU_CHECK_EXIT_FAIL or GPU_CHECK_EXIT_USAGE. */
int gpu_check_methods(struct kern_ctx *k, int argc, char **argv);

#endif
