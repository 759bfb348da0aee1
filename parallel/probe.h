/* Link probes at start-up (DESIGN.md §6): the leader <-> draft rank link's latency and
 * bandwidth (ping-pong over 8 B .. 8 MiB) and the target group's all-reduce, for the
 * selector's cost model. Bounded: each probe stops adding sizes when its time budget
 * is spent, and every wait has a deadline, so a dead peer fails start-up with its name
 * instead of hanging it.
 *
 * After SPECD_TIMEOUT the communicator is broken: a transfer is still pending (a
 * collective cannot be cancelled, and a late peer may yet match a cancelled send), its
 * buffers are kept for it, and the caller must end the job (MPI_Abort) rather than go
 * on to the next collective, which the late rank would match against the probe's.
 *
 * Threads: the thread that owns MPI, before anything else uses the communicators. */
#ifndef SPECD_PARALLEL_PROBE_H
#define SPECD_PARALLEL_PROBE_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"

#define PAR_PROBE_SIZES 8

struct par_link_probe {
	bool measured;
	double latency_s;   /* one way, the smallest message */
	double bandwidth;   /* bytes/s, from the largest message measured */
	uint32_t n;         /* sizes measured */
	uint64_t bytes[PAR_PROBE_SIZES];
	double seconds[PAR_PROBE_SIZES]; /* one way (half the best round trip), or one
					  * all-reduce */
};

/* Ping-pong between ranks a (which drives and measures) and b of comm, sizes 8 B,
 * 64 B, ... 2 MiB, 8 MiB, stopping early once budget_s is spent, but not before one
 * message of 32 KiB has been timed (a far link's bandwidth fitted to 64 B would be
 * noise). Only a and b call it;
 * its messages use tags of their own on comm. *out is written on a only. Errors:
 * SPECD_TIMEOUT (the peer did not answer within deadline_s: err names it; end the job),
 * SPECD_MPI, SPECD_NOMEM, SPECD_INVAL (a == b, this rank is neither). */
enum specd_status par_probe_pingpong(MPI_Comm comm, int a, int b, double budget_s,
				     double deadline_s, struct par_link_probe *out,
				     struct specd_error *err);

/* MPI_Allreduce (sum of floats) over comm at 4 KiB, 64 KiB and 1 MiB, best of three
 * each. Collective over comm; every rank gets the same *out (rank 0's timings).
 * Errors: SPECD_TIMEOUT (a rank did not join one all-reduce within deadline_s: the
 * probe stops there, that all-reduce stays pending and the communicator is unusable:
 * end the job), SPECD_MPI, SPECD_NOMEM. */
enum specd_status par_probe_allreduce(MPI_Comm comm, double deadline_s,
				      struct par_link_probe *out, struct specd_error *err);

#endif
