/* Communicators between the target shards (DESIGN.md §3, §5): all-reduce (sum), max-loc,
 * broadcast, gather and send/recv behind one small interface, so the tensor-parallel
 * code (parallel/tp.c) does not care whether MPI moves host buffers or NCCL moves
 * device buffers. comm_mpi.c is the MPI implementation for host memory; an NCCL one
 * for device memory fills the same table.
 *
 * Deadlines: every operation gives up after the communicator's deadline (seconds from
 * the call) and returns SPECD_TIMEOUT, with a message naming the rank(s) that stalled,
 * instead of hanging. Half-way through a late operation every rank it waits on is
 * sent a liveness check, answered by whatever communicator call that rank is in (or
 * by par_comm_service); the ranks that never answer are the ones named. A timed-out
 * collective cannot be cancelled, so the communicator is unusable afterwards: the
 * caller logs the error and ends the job with par_comm_abort.
 *
 * Determinism: all-reduce adds the ranks' values in rank order, whatever the count,
 * so a row's sum does not depend on how many rows travel with it (the batch
 * invariance of kernels/kern.h), and every rank gets bitwise the same result.
 *
 * Threads: one thread per communicator (the compute thread, which owns MPI). */
#ifndef SPECD_PARALLEL_COMM_H
#define SPECD_PARALLEL_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"

#define PAR_COMM_DEFAULT_DEADLINE_S 30.0

enum par_mem {
	PAR_MEM_HOST,   /* buffers in host memory (MPI) */
	PAR_MEM_DEVICE, /* buffers in device memory (NCCL) */
};

struct par_comm;

/* One implementation. Buffers are in `mem`; byte counts are per rank. */
struct par_comm_ops {
	const char *name;
	enum par_mem mem;
	void (*destroy)(struct par_comm *c);
	enum specd_status (*allreduce_sum)(struct par_comm *c, float *buf, size_t n,
					   struct specd_error *err);
	enum specd_status (*maxloc)(struct par_comm *c, float *val, int32_t *idx, size_t n,
				    struct specd_error *err);
	/* idle: the non-root ranks are waiting for work, however long: no deadline, and
	 * the wait sleeps rather than spins (DESIGN.md §10). */
	enum specd_status (*bcast)(struct par_comm *c, void *buf, size_t bytes, int root,
				   int idle, struct specd_error *err);
	enum specd_status (*gather)(struct par_comm *c, const void *send, void *recv,
				    const size_t *counts, const size_t *displs, int root,
				    struct specd_error *err);
	enum specd_status (*send)(struct par_comm *c, const void *buf, size_t bytes, int dst,
				  int tag, struct specd_error *err);
	enum specd_status (*recv)(struct par_comm *c, void *buf, size_t bytes, int src, int tag,
				  struct specd_error *err);
	void (*service)(struct par_comm *c);
	void (*abort)(struct par_comm *c, int code);
};

/* The common head of every communicator; an implementation's state follows it. */
struct par_comm {
	const struct par_comm_ops *ops;
	int rank;
	int size;
	double deadline_s; /* > 0 */
};

struct par_comm_config {
	double deadline_s;    /* per operation; 0: PAR_COMM_DEFAULT_DEADLINE_S */
	size_t reduce_floats; /* all-reduce size to reserve room for, so the decode step
			       * never allocates; bigger calls grow the room */
};

/* An MPI communicator over `comm` (duplicated: the caller's stays free for its own
 * traffic) for host buffers. Collective over comm. cfg may be NULL. Errors:
 * SPECD_MPI, SPECD_NOMEM, SPECD_INVAL (a negative deadline). *out only on success. */
enum specd_status par_comm_mpi_create(MPI_Comm comm, const struct par_comm_config *cfg,
				      struct par_comm **out, struct specd_error *err);

/* An NCCL communicator over the ranks of `comm` for device buffers, one GPU per rank
 * (`device`, bound to the calling thread with cudaSetDevice). Rank 0 makes the NCCL
 * unique id and sends it over MPI; NCCL is initialised non-blocking and polled against
 * the deadline, and every operation polls its stream and ncclCommGetAsyncError against
 * the deadline (a late one aborts the NCCL communicator: SPECD_TIMEOUT; NCCL cannot
 * name the stalled rank, so the message cannot either). All-reduce and max-loc gather
 * every rank's slice and combine the slices in rank order on the device, so results
 * match par_comm_mpi_create's bitwise. Buffers must be ready when an operation is
 * called (the caller's kernels synced) and are when it returns. send/recv ignore the
 * tag (NCCL matches them in call order); service does nothing (no liveness checks).
 * Collective over comm. cfg may be NULL. Errors: SPECD_UNSUPPORTED (built without
 * CUDA or NCCL, or no CUDA device: the message says which), SPECD_INVAL (a negative
 * device or deadline, a device index out of range, NULL out), SPECD_MPI, SPECD_CUDA,
 * SPECD_NCCL, SPECD_TIMEOUT, SPECD_NOMEM. *out only on success. */
enum specd_status par_comm_nccl_create(MPI_Comm comm, int device,
				       const struct par_comm_config *cfg, struct par_comm **out,
				       struct specd_error *err);

/* Frees the communicator; NULL is a no-op. Not collective. */
static inline void par_comm_destroy(struct par_comm *c)
{
	if (c)
		c->ops->destroy(c);
}

static inline void par_comm_set_deadline(struct par_comm *c, double seconds)
{
	c->deadline_s = seconds > 0 ? seconds : PAR_COMM_DEFAULT_DEADLINE_S;
}

/* buf[0..n) summed across ranks in rank order, in place on every rank. Collective. */
static inline enum specd_status par_comm_allreduce_sum(struct par_comm *c, float *buf,
						       size_t n, struct specd_error *err)
{
	return c->ops->allreduce_sum(c, buf, n, err);
}

/* For each i < n: the largest val[i] across ranks with its idx[i], the lowest idx on
 * equal values, in place on every rank (greedy over vocab-parallel logits). No NaN.
 * Collective. */
static inline enum specd_status par_comm_maxloc(struct par_comm *c, float *val, int32_t *idx,
						size_t n, struct specd_error *err)
{
	return c->ops->maxloc(c, val, idx, n, err);
}

/* bytes of buf from root to every rank. Collective. */
static inline enum specd_status par_comm_bcast(struct par_comm *c, void *buf, size_t bytes,
					       int root, struct specd_error *err)
{
	return c->ops->bcast(c, buf, bytes, root, 0, err);
}

/* As par_comm_bcast, for ranks waiting for the root's next piece of work: no deadline
 * and no spinning (the root itself still has its deadline). */
static inline enum specd_status par_comm_bcast_idle(struct par_comm *c, void *buf,
						    size_t bytes, int root,
						    struct specd_error *err)
{
	return c->ops->bcast(c, buf, bytes, root, 1, err);
}

/* Rank r's send[0..counts[r]) bytes land at recv + displs[r] on root; recv is read on
 * root only. counts and displs (size entries) are the same everywhere. Collective. */
static inline enum specd_status par_comm_gather(struct par_comm *c, const void *send,
						void *recv, const size_t *counts,
						const size_t *displs, int root,
						struct specd_error *err)
{
	return c->ops->gather(c, send, recv, counts, displs, root, err);
}

/* Point to point, tag >= 0. The receive takes a message of at most `bytes` (a shorter
 * one fills the start of buf); a longer one is taken elsewhere and refused with
 * SPECD_PROTO, nothing of it written to buf (the MPI communicator matches a message and
 * reads its size before receiving it). */
static inline enum specd_status par_comm_send(struct par_comm *c, const void *buf,
					      size_t bytes, int dst, int tag,
					      struct specd_error *err)
{
	return c->ops->send(c, buf, bytes, dst, tag, err);
}

static inline enum specd_status par_comm_recv(struct par_comm *c, void *buf, size_t bytes,
					      int src, int tag, struct specd_error *err)
{
	return c->ops->recv(c, buf, bytes, src, tag, err);
}

/* Answers the other ranks' liveness checks. A rank that spends longer than half a
 * deadline outside communicator calls while others wait on it (the leader's event
 * loop) calls this now and then, or it is taken for stalled. */
static inline void par_comm_service(struct par_comm *c)
{
	c->ops->service(c);
}

/* Ends the whole job after an unrecoverable error (a timed-out collective): keeps
 * answering liveness checks for a short grace so the other ranks can report their own
 * view, then aborts every rank (MPI_Abort) with `code`. Does not return. */
static inline void par_comm_abort(struct par_comm *c, int code)
{
	c->ops->abort(c, code);
}

#endif
