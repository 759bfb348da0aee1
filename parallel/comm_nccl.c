/* The NCCL communicator for device buffers (parallel/comm.h par_comm_nccl_create): the
 * tensor-parallel all-reduce between GPUs, one per rank. MPI carries only the unique
 * id; NCCL runs non-blocking and every wait polls the stream and NCCL's async error
 * against the deadline. Without CUDA or NCCL in the build, the create call says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "mpi_check.h"

static enum specd_status check_args(MPI_Comm comm, int device, const struct par_comm_config *cfg,
				    struct par_comm **out, struct specd_error *err)
{
	if (comm == MPI_COMM_NULL || !out)
		return specd_errorf(err, SPECD_INVAL, "nccl: no MPI communicator or no out");
	if (device < 0)
		return specd_errorf(err, SPECD_INVAL, "nccl: device %d", device);
	if (cfg && cfg->deadline_s < 0)
		return specd_errorf(err, SPECD_INVAL, "nccl: deadline %g s", cfg->deadline_s);
	return SPECD_OK;
}

#if defined(SPECD_HAVE_CUDA) && defined(SPECD_HAVE_NCCL)

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "kernels/cuda/cuda_reduce.h"

#define NAP_BUSY_S 20e-6
#define NAP_IDLE_S 1e-3

struct comm_nccl {
	struct par_comm base; /* first: the ops receive &base */
	MPI_Comm mpi;         /* the caller's, duplicated: the unique id only */
	ncclComm_t nccl;
	cudaStream_t stream;
	int device;
	float *scratch; /* (size, scratch_n) device: the gathered slices */
	size_t scratch_n;
	int32_t *iscratch; /* (size, iscratch_n) device: gathered max-loc indices */
	size_t iscratch_n;
	bool broken; /* an operation failed or timed out: only destroy or abort now */
};

static struct comm_nccl *impl(struct par_comm *c)
{
	return (struct comm_nccl *)(void *)c;
}

static enum specd_status cuda_fail(cudaError_t e, const char *what, struct specd_error *err)
{
	return specd_errorf(err, SPECD_CUDA, "nccl: %s: %s", what, cudaGetErrorString(e));
}

static enum specd_status late(struct comm_nccl *c, const char *what, struct specd_error *err)
{
	c->broken = true;
	return specd_errorf(err, SPECD_TIMEOUT, "nccl: rank %d: %s not done after %.1f s (a peer "
			    "is stalled; NCCL cannot say which)", c->base.rank, what,
			    c->base.deadline_s);
}

/* Waits until the NCCL communicator leaves ncclInProgress (a non-blocking call has been
 * enqueued, or the init is done), within the deadline, or forever when idle: the first
 * call that involves a peer connects to it (NCCL's lazy connection) and so stays in
 * progress until that peer makes the same call, which an idle rank may wait for. */
static enum specd_status wait_nccl(struct comm_nccl *c, ncclResult_t rc, const char *what,
				   bool idle, struct specd_error *err)
{
	double t0 = specd_now();
	while (rc == ncclInProgress) {
		if (!idle && specd_now() - t0 > c->base.deadline_s)
			return late(c, what, err);
		specd_sleep(idle ? NAP_IDLE_S : NAP_BUSY_S);
		if (ncclCommGetAsyncError(c->nccl, &rc) != ncclSuccess)
			break;
	}
	if (rc != ncclSuccess) {
		c->broken = true;
		return specd_errorf(err, SPECD_NCCL, "nccl: rank %d: %s: %s (%s)", c->base.rank,
				    what, ncclGetErrorString(rc), ncclGetLastError(c->nccl));
	}
	return SPECD_OK;
}

/* Waits for the stream (the operation's kernels) within the deadline, or forever when
 * idle, polling NCCL's async error: a failed peer shows there. */
static enum specd_status wait_stream(struct comm_nccl *c, const char *what, bool idle,
				     struct specd_error *err)
{
	double t0 = specd_now();
	for (;;) {
		cudaError_t e = cudaStreamQuery(c->stream);
		if (e == cudaSuccess)
			return SPECD_OK;
		if (e != cudaErrorNotReady) {
			c->broken = true;
			return cuda_fail(e, what, err);
		}
		ncclResult_t async = ncclSuccess;
		if (ncclCommGetAsyncError(c->nccl, &async) != ncclSuccess || async != ncclSuccess)
			return wait_nccl(c, async, what, idle, err);
		if (!idle && specd_now() - t0 > c->base.deadline_s)
			return late(c, what, err);
		specd_sleep(idle ? NAP_IDLE_S : NAP_BUSY_S);
	}
}

static enum specd_status usable(struct comm_nccl *c, struct specd_error *err)
{
	if (c->broken)
		return specd_errorf(err, SPECD_NCCL, "nccl: rank %d: unusable after an earlier "
				    "failure", c->base.rank);
	return SPECD_OK;
}

/* Device room for size slices of n elements of elem bytes, grown when needed. */
static enum specd_status grow(struct comm_nccl *c, void **p, size_t *have, size_t n,
			      size_t elem, struct specd_error *err)
{
	if (n <= *have)
		return SPECD_OK;
	if (n > SIZE_MAX / elem / (size_t)c->base.size)
		return specd_errorf(err, SPECD_INVAL, "nccl: %zu elements", n);
	void *q = NULL;
	cudaError_t e = cudaMalloc(&q, n * elem * (size_t)c->base.size);
	if (e != cudaSuccess) {
		cudaGetLastError();
		return specd_errorf(err, SPECD_NOMEM, "nccl: scratch of %zu bytes: %s",
				    n * elem * (size_t)c->base.size, cudaGetErrorString(e));
	}
	cudaFree(*p);
	*p = q;
	*have = n;
	return SPECD_OK;
}

static enum specd_status nccl_allreduce_sum(struct par_comm *base, float *buf, size_t n,
					    struct specd_error *err)
{
	struct comm_nccl *c = impl(base);
	enum specd_status st = usable(c, err);
	if (st != SPECD_OK || n == 0 || base->size == 1)
		return st;
	if (!buf)
		return specd_errorf(err, SPECD_INVAL, "nccl: all-reduce of NULL");
	if ((st = grow(c, (void **)&c->scratch, &c->scratch_n, n, sizeof(float), err)))
		return st;
	st = wait_nccl(c, ncclAllGather(buf, c->scratch, n, ncclFloat32, c->nccl, c->stream),
		       "all-reduce (gather)", false, err);
	if (st != SPECD_OK)
		return st;
	cudaError_t e = cuda_launch_sum_slices(c->stream, buf, c->scratch, n, base->size);
	if (e != cudaSuccess)
		return cuda_fail(e, "all-reduce (sum)", err);
	return wait_stream(c, "all-reduce", false, err);
}

static enum specd_status nccl_maxloc(struct par_comm *base, float *val, int32_t *idx, size_t n,
				     struct specd_error *err)
{
	struct comm_nccl *c = impl(base);
	enum specd_status st = usable(c, err);
	if (st != SPECD_OK || n == 0 || base->size == 1)
		return st;
	if (!val || !idx)
		return specd_errorf(err, SPECD_INVAL, "nccl: max-loc of NULL");
	if ((st = grow(c, (void **)&c->scratch, &c->scratch_n, n, sizeof(float), err)) ||
	    (st = grow(c, (void **)&c->iscratch, &c->iscratch_n, n, sizeof(int32_t), err)))
		return st;
	ncclResult_t rc = ncclGroupStart();
	if (rc == ncclSuccess)
		rc = ncclAllGather(val, c->scratch, n, ncclFloat32, c->nccl, c->stream);
	if (rc == ncclSuccess || rc == ncclInProgress)
		rc = ncclAllGather(idx, c->iscratch, n, ncclInt32, c->nccl, c->stream);
	ncclResult_t end = ncclGroupEnd();
	if ((st = wait_nccl(c, rc == ncclSuccess || rc == ncclInProgress ? end : rc,
			    "max-loc (gather)", false, err)))
		return st;
	cudaError_t e = cuda_launch_maxloc_slices(c->stream, val, idx, c->scratch, c->iscratch, n,
						  base->size);
	if (e != cudaSuccess)
		return cuda_fail(e, "max-loc", err);
	return wait_stream(c, "max-loc", false, err);
}

static enum specd_status nccl_bcast(struct par_comm *base, void *buf, size_t bytes, int root,
				    int idle, struct specd_error *err)
{
	struct comm_nccl *c = impl(base);
	enum specd_status st = usable(c, err);
	if (st != SPECD_OK || bytes == 0)
		return st;
	if (!buf || root < 0 || root >= base->size)
		return specd_errorf(err, SPECD_INVAL, "nccl: broadcast from %d", root);
	bool waiting = idle && base->rank != root;
	st = wait_nccl(c, ncclBroadcast(buf, buf, bytes, ncclUint8, root, c->nccl, c->stream),
		       "broadcast", waiting, err);
	return st != SPECD_OK ? st : wait_stream(c, "broadcast", waiting, err);
}

static enum specd_status nccl_gather(struct par_comm *base, const void *send, void *recv,
				     const size_t *counts, const size_t *displs, int root,
				     struct specd_error *err)
{
	struct comm_nccl *c = impl(base);
	enum specd_status st = usable(c, err);
	if (st != SPECD_OK)
		return st;
	if (!counts || !displs || root < 0 || root >= base->size || (!send && counts[base->rank]))
		return specd_errorf(err, SPECD_INVAL, "nccl: gather to %d", root);
	ncclResult_t rc = ncclGroupStart();
	for (int r = 0; r < base->size && (rc == ncclSuccess || rc == ncclInProgress); r++) {
		if (base->rank != root && r != base->rank)
			continue;
		if (counts[r] == 0)
			continue;
		if (base->rank != root)
			rc = ncclSend(send, counts[r], ncclUint8, root, c->nccl, c->stream);
		else if (r != root)
			rc = ncclRecv((unsigned char *)recv + displs[r], counts[r], ncclUint8, r,
				      c->nccl, c->stream);
		else if (cudaMemcpyAsync((unsigned char *)recv + displs[r], send, counts[r],
					 cudaMemcpyDeviceToDevice, c->stream) != cudaSuccess)
			rc = ncclUnhandledCudaError;
	}
	ncclResult_t end = ncclGroupEnd();
	if ((st = wait_nccl(c, rc == ncclSuccess || rc == ncclInProgress ? end : rc, "gather",
			    false, err)))
		return st;
	return wait_stream(c, "gather", false, err);
}

static enum specd_status p2p(struct comm_nccl *c, bool is_send, void *buf, size_t bytes,
			     int peer, int tag, struct specd_error *err)
{
	enum specd_status st = usable(c, err);
	if (st != SPECD_OK || bytes == 0)
		return st;
	if (!buf || peer < 0 || peer >= c->base.size || peer == c->base.rank || tag < 0)
		return specd_errorf(err, SPECD_INVAL, "nccl: %s with rank %d, tag %d",
				    is_send ? "send" : "receive", peer, tag);
	ncclResult_t rc = is_send ? ncclSend(buf, bytes, ncclUint8, peer, c->nccl, c->stream)
				  : ncclRecv(buf, bytes, ncclUint8, peer, c->nccl, c->stream);
	const char *what = is_send ? "send" : "receive";
	st = wait_nccl(c, rc, what, false, err);
	return st != SPECD_OK ? st : wait_stream(c, what, false, err);
}

static enum specd_status nccl_send(struct par_comm *base, const void *buf, size_t bytes, int dst,
				   int tag, struct specd_error *err)
{
	return p2p(impl(base), true, (void *)(uintptr_t)buf, bytes, dst, tag, err);
}

static enum specd_status nccl_recv(struct par_comm *base, void *buf, size_t bytes, int src,
				   int tag, struct specd_error *err)
{
	return p2p(impl(base), false, buf, bytes, src, tag, err);
}

static void nccl_service(struct par_comm *base)
{
	(void)base; /* NCCL has no liveness channel: a stalled peer shows as a timeout */
}

static void nccl_abort(struct par_comm *base, int code)
{
	struct comm_nccl *c = impl(base);
	LOG_ERROR("nccl: rank %d aborts the job (code %d)", base->rank, code);
	if (c->nccl)
		ncclCommAbort(c->nccl);
	c->nccl = NULL;
	MPI_Abort(MPI_COMM_WORLD, code);
	abort(); /* MPI_Abort does not return; this keeps the promise if it does */
}

static void nccl_destroy(struct par_comm *base)
{
	struct comm_nccl *c = impl(base);
	if (c->nccl) {
		/* Finalize flushes what is queued; a broken or late one is aborted. */
		enum specd_status st = SPECD_UNSUPPORTED;
		if (!c->broken)
			st = wait_nccl(c, ncclCommFinalize(c->nccl), "finalize", false, NULL);
		if (st == SPECD_OK)
			ncclCommDestroy(c->nccl);
		else
			ncclCommAbort(c->nccl);
	}
	cudaFree(c->scratch);
	cudaFree(c->iscratch);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	if (c->mpi != MPI_COMM_NULL)
		MPI_Comm_free(&c->mpi);
	specd_free(c);
}

static const struct par_comm_ops nccl_ops = {
	.name = "nccl",
	.mem = PAR_MEM_DEVICE,
	.destroy = nccl_destroy,
	.allreduce_sum = nccl_allreduce_sum,
	.maxloc = nccl_maxloc,
	.bcast = nccl_bcast,
	.gather = nccl_gather,
	.send = nccl_send,
	.recv = nccl_recv,
	.service = nccl_service,
	.abort = nccl_abort,
};

/* Polls an MPI request until it completes or the deadline (from t0) passes. */
static enum specd_status wait_mpi(struct comm_nccl *c, MPI_Request *req, double t0,
				  const char *what, struct specd_error *err)
{
	enum specd_status st = SPECD_OK;
	for (int done = 0; st == SPECD_OK && !done;) {
		st = PAR_MPI(MPI_Test(req, &done, MPI_STATUS_IGNORE));
		if (st == SPECD_OK && !done && specd_now() - t0 > c->base.deadline_s)
			return specd_errorf(err, SPECD_TIMEOUT, "nccl: rank %d: %s not done within "
					    "%.1f s", c->base.rank, what, c->base.deadline_s);
	}
	return st != SPECD_OK ? specd_errorf(err, st, "nccl: MPI %s failed", what) : st;
}

/* The unique id from rank 0 to all, over MPI. ok: whether this rank can go on; the
 * ranks agree on it first (minimum), so one rank without a GPU makes every rank
 * return rather than wait for it. */
static enum specd_status share_id(struct comm_nccl *c, int ok, ncclUniqueId *id,
				  struct specd_error *err)
{
	int all_ok = 0;
	MPI_Request req;
	double t0 = specd_now();
	enum specd_status st =
		PAR_MPI(MPI_Iallreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, c->mpi, &req));
	if (st != SPECD_OK)
		return specd_errorf(err, st, "nccl: MPI agreement failed");
	if ((st = wait_mpi(c, &req, t0, "start agreement", err)) != SPECD_OK)
		return st;
	if (!all_ok)
		return specd_errorf(err, SPECD_UNSUPPORTED, "nccl: rank %d: another rank has no "
				    "usable GPU", c->base.rank);
	if (c->base.rank == 0) {
		ncclResult_t rc = ncclGetUniqueId(id);
		if (rc != ncclSuccess)
			return specd_errorf(err, SPECD_NCCL, "nccl: ncclGetUniqueId: %s",
					    ncclGetErrorString(rc));
	}
	st = PAR_MPI(MPI_Ibcast(id, (int)sizeof(*id), MPI_BYTE, 0, c->mpi, &req));
	if (st != SPECD_OK)
		return specd_errorf(err, st, "nccl: MPI broadcast of the id failed");
	return wait_mpi(c, &req, t0, "unique id broadcast", err);
}

/* Whether this rank can use `device`: SPECD_OK, or why not. */
static enum specd_status device_usable(int device, struct specd_error *err)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0) {
		cudaGetLastError();
		return specd_errorf(err, SPECD_UNSUPPORTED, "nccl: no CUDA device (%s)",
				    e != cudaSuccess ? cudaGetErrorString(e) : "none visible");
	}
	if (device >= count)
		return specd_errorf(err, SPECD_INVAL, "nccl: device %d of %d", device, count);
	e = cudaSetDevice(device);
	return e == cudaSuccess ? SPECD_OK : cuda_fail(e, "cudaSetDevice", err);
}

enum specd_status par_comm_nccl_create(MPI_Comm comm, int device,
				       const struct par_comm_config *cfg, struct par_comm **out,
				       struct specd_error *err)
{
	enum specd_status st = check_args(comm, device, cfg, out, err);
	if (st != SPECD_OK)
		return st;
	struct comm_nccl *c = specd_calloc(1, sizeof(*c));
	if (!c)
		return specd_errorf(err, SPECD_NOMEM, "nccl: out of memory");
	c->base.ops = &nccl_ops;
	c->base.deadline_s = cfg && cfg->deadline_s > 0 ? cfg->deadline_s
							: PAR_COMM_DEFAULT_DEADLINE_S;
	c->device = device;
	c->mpi = MPI_COMM_NULL;
	if ((st = PAR_MPI(MPI_Comm_dup(comm, &c->mpi))) ||
	    (st = PAR_MPI(MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN))) ||
	    (st = PAR_MPI(MPI_Comm_rank(c->mpi, &c->base.rank))) ||
	    (st = PAR_MPI(MPI_Comm_size(c->mpi, &c->base.size)))) {
		specd_errorf(err, st, "nccl: MPI setup failed");
		goto fail;
	}
	struct specd_error local;
	specd_error_clear(&local);
	enum specd_status dev_st = device_usable(device, &local);
	if (dev_st == SPECD_OK) {
		cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
		if (e != cudaSuccess)
			dev_st = cuda_fail(e, "cudaStreamCreate", &local);
	}
	ncclUniqueId id;
	memset(&id, 0, sizeof(id));
	st = share_id(c, dev_st == SPECD_OK, &id, err);
	if (dev_st != SPECD_OK) { /* this rank's own reason first */
		st = dev_st;
		specd_errorf(err, st, "%s", local.msg);
	}
	if (st != SPECD_OK)
		goto fail;
	ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
	config.blocking = 0;
	ncclResult_t rc = ncclCommInitRankConfig(&c->nccl, c->base.size, id, c->base.rank, &config);
	if (rc != ncclSuccess && rc != ncclInProgress) {
		st = specd_errorf(err, SPECD_NCCL, "nccl: rank %d: ncclCommInitRankConfig: %s",
				  c->base.rank, ncclGetErrorString(rc));
		c->nccl = NULL;
		goto fail;
	}
	if (rc == ncclInProgress && ncclCommGetAsyncError(c->nccl, &rc) != ncclSuccess)
		rc = ncclInternalError;
	if ((st = wait_nccl(c, rc, "init", false, err)) != SPECD_OK)
		goto fail;
	LOG_INFO("nccl: rank %d of %d on device %d", c->base.rank, c->base.size, device);
	*out = &c->base;
	return SPECD_OK;
fail:
	c->broken = true;
	nccl_destroy(&c->base);
	return st;
}

#else /* no CUDA or no NCCL in this build */

enum specd_status par_comm_nccl_create(MPI_Comm comm, int device,
				       const struct par_comm_config *cfg, struct par_comm **out,
				       struct specd_error *err)
{
	enum specd_status st = check_args(comm, device, cfg, out, err);
	if (st != SPECD_OK)
		return st;
#ifdef SPECD_HAVE_CUDA
	return specd_errorf(err, SPECD_UNSUPPORTED,
			    "nccl: built without NCCL (nccl.h and libnccl not found at configure)");
#else
	return specd_errorf(err, SPECD_UNSUPPORTED,
			    "nccl: built without CUDA (SPECD_CUDA=OFF or no nvcc), so no NCCL");
#endif
}

#endif
