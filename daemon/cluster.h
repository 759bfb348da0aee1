/* Bringing a cluster up and down under mpirun: the configuration from rank 0 to every
 * rank, the layout check against the world size, the census and the role table, and
 * the clean shutdown. daemon/main.c calls these in order; each is collective over
 * MPI_COMM_WORLD and returns the same status on every rank, so no rank is left waiting
 * for another that gave up. Main thread only (MPI_THREAD_FUNNELED). */
#ifndef SPECD_DAEMON_CLUSTER_H
#define SPECD_DAEMON_CLUSTER_H

#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "parallel/census.h"
#include "parallel/probe.h"
#include "parallel/roles.h"
#include "selector/selector.h"

struct cluster {
	int rank, world_size;
	struct cfg_cluster *cfg;     /* every rank's own parse of rank 0's bytes */
	struct par_layout layout;
	struct par_rank_info self;
	int device_index;            /* the GPU this rank computes on, when its device is cuda */
	struct par_rank_info *ranks; /* rank 0 only: the census of every rank */
	MPI_Comm target_comm;        /* ranks 0..T-1 (the shards); MPI_COMM_NULL elsewhere */
	bool have_target_comm;
	/* rank 0: the link probes (measured false when not run: speculation.measure off,
	 * no dedicated draft rank, one target rank) */
	struct par_link_probe draft_probe;  /* leader <-> draft rank ping-pong */
	struct par_link_probe tp_probe;     /* all-reduce in the target group */
	/* The selector (daemon/leader.c): its inputs on rank 0, its decision on every
	 * rank once leader_select has run. */
	struct sel_inputs sel_in;
	struct sel_decision decision;
};

/* Rank 0 reads `path`; every rank gets the same configuration. On a bad file rank 0
 * prints the error to stderr and every rank returns SPECD_CONFIG (or the failing
 * status). */
enum specd_status cluster_load_config(struct cluster *c, const char *path);

/* Checks the world size against the file (rank 0 prints the one message on a
 * mismatch; every rank returns SPECD_CONFIG), sets the log identity and role, probes
 * this rank's device, gathers the census to rank 0, makes the target group's
 * communicator (ranks 0..T-1) and, with speculation.measure, probes the links (the
 * leader <-> draft rank ping-pong, the target group's all-reduce; well under a
 * second, each wait with a deadline: a rank that does not answer fails start-up). */
enum specd_status cluster_assign_roles(struct cluster *c);

/* Rank 0: prints the role table (rank, node, pid, role, device, memory) to f. */
void cluster_print_roles(const struct cluster *c, FILE *f);

/* Rank 0: tells every other rank to shut down. */
enum specd_status cluster_shutdown_all(const struct cluster *c);

/* Frees what the cluster holds; the struct may be reused after cluster_fini. */
void cluster_fini(struct cluster *c);

#endif
