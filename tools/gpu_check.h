/* specd-gpu-check's parts (tools/gpu_check.c: ops, sample, greedy, bench and the
 * program; tools/gpu_methods.c: methods), sharing the failure count and exit codes.
 * One thread. */
#ifndef SPECD_TOOLS_GPU_CHECK_H
#define SPECD_TOOLS_GPU_CHECK_H

#include <stdbool.h>

struct kern_ctx;
struct model;

#define HBM_BYTES_PER_S 4.8e12 /* H200 datasheet */
#define GPU_CHECK_EXIT_FAIL 1
#define GPU_CHECK_EXIT_USAGE 2
#define GPU_CHECK_EXIT_NO_DEVICE 3

/* Prints "KIND WHAT CLAIM ok|FAIL" and counts a failure when !ok. kind: "op", "inv"
 * (batch invariance), "spec" or "methods". */
void gpu_check_expect(bool ok, const char *kind, const char *what, const char *claim);

/* Failed checks so far. */
int gpu_check_failures(void);

/* Bytes of weights a decode step of m reads: every matrix and vector but the
 * embedding table, of which it reads one row (the file's types; quantised types are
 * read as f32 on the device, 32 / bits-per-weight times more). */
double gpu_check_step_bytes(const struct model *m);

/* `methods TARGET [--draft GGUF] [--heads SAFETENSORS] [--eagle DIR] [-n N] [-k K,..]`
 * on backend k: exit status 0, GPU_CHECK_EXIT_FAIL or GPU_CHECK_EXIT_USAGE. */
int gpu_check_methods(struct kern_ctx *k, int argc, char **argv);

#endif
