/* The cluster census: what every rank is and has, gathered to the leader at start-up.
 * Today it feeds the role table; the selector (DESIGN.md §6) decides from it. */
#ifndef SPECD_PARALLEL_CENSUS_H
#define SPECD_PARALLEL_CENSUS_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

struct par_rank_info {
	int32_t rank;
	int32_t pid;
	int32_t cores;             /* online CPUs on this node */
	int32_t local_rank;        /* index among the ranks on this node */
	uint64_t host_mem_total;   /* bytes */
	uint64_t host_mem_free;    /* bytes available (MemAvailable) */
	uint64_t device_mem_total; /* bytes; 0 for a CPU rank */
	uint64_t device_mem_free;
	uint64_t resident_weights;  /* bytes of target weights this rank holds (after load) */
	char node[64];             /* host name */
	/* The kernel's boot id: ranks on one machine share it (and its memory bandwidth)
	 * whatever their host names (network namespaces); empty when unreadable. */
	char machine[40];
	char role[16];             /* par_role_label() */
	char device[64];           /* "cpu" or "cuda:N NAME" */
};

/* This process's index among the ranks on its node, from the launcher's environment
 * (Open MPI, MPICH, Slurm); 0 when none says. Any thread. */
int32_t par_local_rank(void);
/* How many ranks share this process's node, from the launcher's environment (Open
 * MPI, MPICH, Slurm); 1 when none says. Any thread. */
int32_t par_local_size(void);
/* Compute threads for one rank when the count is left to us (target.threads: auto,
 * specd-run --threads auto): this machine's online cores shared evenly among the ranks
 * on it (par_local_size), at least 1. Any thread. */
uint32_t par_auto_threads(void);

/* Fills the host part of *out for this process (rank, pid, node, cores, memory,
 * local_rank from the launcher's environment); role and device are the caller's.
 * SPECD_IO when the host facts cannot be read. Any thread. */
enum specd_status par_census_local(struct par_rank_info *out, int rank);

/* Caps *total and *free (bytes) by the memory cgroups this process is in, read from
 * proc_cgroup (/proc/self/cgroup) under the cgroup file system at root (/sys/fs/cgroup):
 * cgroup v2's memory.max and memory.current, v1's memory.limit_in_bytes and
 * memory.usage_in_bytes, of its own group and every ancestor. Inside a container or a
 * Slurm job the host's figures (sysinfo, MemAvailable) are not what the rank may use.
 * Files it cannot read cap nothing. Any thread. */
void par_cgroup_memory_cap(const char *proc_cgroup, const char *root, uint64_t *total,
			   uint64_t *free);

/* Whether two of ranks[0 .. n) compute on the same GPU: the same machine (boot id, or
 * node name when it is unknown) and the same "cuda:N" device. Then *a < *b are the
 * first such pair. NCCL refuses two ranks of one communicator on one GPU, so the
 * target shards must not. Any thread. */
bool par_census_shared_gpu(const struct par_rank_info *ranks, int n, int *a, int *b);

/* Gathers every rank's info to rank 0: `all` (world-size entries) is written on rank 0
 * only and may be NULL elsewhere. Collective over comm. SPECD_MPI on failure. */
enum specd_status par_census_gather(MPI_Comm comm, const struct par_rank_info *mine,
				    struct par_rank_info *all);

#endif
