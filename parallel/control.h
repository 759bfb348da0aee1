/* The leader's control channel to every other rank, and the waits it is built on.
 * Open MPI's blocking calls spin a core; a rank waiting for work between requests must
 * not (DESIGN.md §10), so every wait here polls a non-blocking request with a sleeping
 * back-off (50 µs doubling to 5 ms: an idle rank wakes ~200 times a second and uses
 * well under 1% of a core, a busy one answers within microseconds).
 *
 * Threads: only the thread that owns MPI (the main thread; MPI_THREAD_FUNNELED). */
#ifndef SPECD_PARALLEL_CONTROL_H
#define SPECD_PARALLEL_CONTROL_H

#include <mpi.h>
#include <stdint.h>

#include "common/status.h"

enum par_ctrl_op {
	PAR_CTRL_SHUTDOWN = 1, /* finish, finalize MPI and exit 0 */
};

/* One control message; fixed size so it travels as bytes. */
struct par_ctrl_msg {
	int32_t op;     /* enum par_ctrl_op */
	int32_t flags;
	int64_t arg[4]; /* op-specific */
};

/* Leader only: sends msg to every rank but itself. SPECD_MPI on failure. */
enum specd_status par_ctrl_send_all(MPI_Comm comm, const struct par_ctrl_msg *msg);

/* Non-leaders: waits for the next control message from rank 0 without spinning.
 * timeout_s < 0 waits for ever; SPECD_TIMEOUT when it passes (the receive is
 * cancelled). */
enum specd_status par_ctrl_wait(MPI_Comm comm, struct par_ctrl_msg *out, double timeout_s);

/* Waits for a posted request with the sleeping back-off above. SPECD_TIMEOUT when
 * timeout_s (>= 0) passes first; the request is then still pending and the caller
 * decides (cancel, or keep waiting). status may be MPI_STATUS_IGNORE. */
enum specd_status par_wait_request(MPI_Request *req, MPI_Status *status, double timeout_s);

/* MPI_Bcast, MPI_Allreduce and MPI_Gather without spinning: posted non-blocking, then
 * waited for with par_wait_request's sleeping back-off and no deadline. For start-up
 * and other one-off agreements, where a rank may wait long for a slow one (rank 0
 * reading the cluster file, a stopped rank) and must not burn a core meanwhile (Open
 * MPI's blocking collectives poll; DESIGN.md §10). SPECD_MPI on failure. */
enum specd_status par_bcast_wait(void *buf, int count, MPI_Datatype type, int root,
				 MPI_Comm comm);
enum specd_status par_allreduce_wait(const void *send, void *recv, int count,
				     MPI_Datatype type, MPI_Op op, MPI_Comm comm);
enum specd_status par_gather_wait(const void *send, int count, MPI_Datatype type, void *recv,
				  int root, MPI_Comm comm);

/* Broadcasts a byte string from root: root passes *buf and *len, every other rank gets
 * a malloc'd copy (NUL-terminated, free with specd_free) in *buf and its length in
 * *len. Limited to 64 MiB: it carries configuration, not tensors. SPECD_MPI,
 * SPECD_NOMEM, SPECD_INVAL (too large). */
enum specd_status par_bcast_bytes(MPI_Comm comm, int root, char **buf, uint64_t *len);

#endif
