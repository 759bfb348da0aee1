/* The CPU backend's thread pool: created with the backend (kern_cpu_create), it runs
 * each op's parallel-for over output features or attention heads. Folder-private.
 * Workers sleep on a condition variable between ops; after finishing a job they poll
 * for the next one for a few microseconds only (ops of one forward come back to back),
 * so an idle pool costs no CPU. */
#ifndef SPECD_KERNELS_CPU_POOL_H
#define SPECD_KERNELS_CPU_POOL_H

#include "common/status.h"

struct cpu_pool;

/* One share of a parallel job: the caller's arg, this share's index and the number of
 * shares. Every index in [0, n) is run exactly once per cpu_pool_run. */
typedef void cpu_pool_fn(void *arg, unsigned index, unsigned n);

/* A pool of n_threads - 1 workers (the caller of cpu_pool_run is the n-th thread).
 * n_threads 0 counts as 1. Errors: SPECD_NOMEM, SPECD_INTERNAL (a thread could not be
 * started). *out is written only on success. */
enum specd_status cpu_pool_create(unsigned n_threads, struct cpu_pool **out);
/* Stops and joins the workers. NULL is a no-op. Not while a job runs. */
void cpu_pool_destroy(struct cpu_pool *p);
unsigned cpu_pool_size(const struct cpu_pool *p);
/* Runs fn(arg, i, n) for every i < n = cpu_pool_size(p) (index 0 on the calling
 * thread) and returns when all have returned. One caller at a time (the compute
 * thread); fn must not call cpu_pool_run. */
void cpu_pool_run(struct cpu_pool *p, cpu_pool_fn *fn, void *arg);

#endif
