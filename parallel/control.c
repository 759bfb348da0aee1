/* Control messages and non-spinning waits; see control.h. */
#include "control.h"

#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "mpi_check.h"

enum { PAR_TAG_CTRL = 1 };

#define BACKOFF_MIN_S 50e-6
#define BACKOFF_MAX_S 5e-3
#define BCAST_MAX_BYTES (64ull << 20)
#define BCAST_CHUNK 65536

enum specd_status par_wait_request(MPI_Request *req, MPI_Status *status, double timeout_s)
{
	double start = specd_now();
	double nap = BACKOFF_MIN_S;
	for (;;) {
		int done = 0;
		enum specd_status st = PAR_MPI(MPI_Test(req, &done, status));
		if (st != SPECD_OK)
			return st;
		if (done)
			return SPECD_OK;
		if (timeout_s >= 0 && specd_now() - start >= timeout_s)
			return SPECD_TIMEOUT;
		specd_sleep(nap);
		nap = nap * 2 < BACKOFF_MAX_S ? nap * 2 : BACKOFF_MAX_S;
	}
}

/* Posted by the caller: waits for it without spinning. */
static enum specd_status wait_posted(enum specd_status posted, MPI_Request *req)
{
	return posted != SPECD_OK ? posted : par_wait_request(req, MPI_STATUS_IGNORE, -1);
}

enum specd_status par_bcast_wait(void *buf, int count, MPI_Datatype type, int root,
				 MPI_Comm comm)
{
	MPI_Request req;
	return wait_posted(PAR_MPI(MPI_Ibcast(buf, count, type, root, comm, &req)), &req);
}

enum specd_status par_allreduce_wait(const void *send, void *recv, int count,
				     MPI_Datatype type, MPI_Op op, MPI_Comm comm)
{
	MPI_Request req;
	return wait_posted(PAR_MPI(MPI_Iallreduce(send, recv, count, type, op, comm, &req)),
			   &req);
}

enum specd_status par_gather_wait(const void *send, int count, MPI_Datatype type, void *recv,
				  int root, MPI_Comm comm)
{
	MPI_Request req;
	return wait_posted(PAR_MPI(MPI_Igather(send, count, type, recv, count, type, root, comm,
					       &req)),
			   &req);
}

enum specd_status par_ctrl_send_all(MPI_Comm comm, const struct par_ctrl_msg *msg)
{
	int size = 0;
	enum specd_status st = PAR_MPI(MPI_Comm_size(comm, &size));
	for (int r = 1; st == SPECD_OK && r < size; r++)
		st = PAR_MPI(MPI_Send(msg, (int)sizeof(*msg), MPI_BYTE, r, PAR_TAG_CTRL, comm));
	return st;
}

enum specd_status par_ctrl_wait(MPI_Comm comm, struct par_ctrl_msg *out, double timeout_s)
{
	struct par_ctrl_msg msg;
	MPI_Request req;
	enum specd_status st =
		PAR_MPI(MPI_Irecv(&msg, (int)sizeof(msg), MPI_BYTE, 0, PAR_TAG_CTRL, comm, &req));
	if (st != SPECD_OK)
		return st;
	st = par_wait_request(&req, MPI_STATUS_IGNORE, timeout_s);
	if (st == SPECD_TIMEOUT) {
		MPI_Cancel(&req);
		MPI_Wait(&req, MPI_STATUS_IGNORE);
		return SPECD_TIMEOUT;
	}
	if (st == SPECD_OK)
		*out = msg;
	return st;
}

enum specd_status par_bcast_bytes(MPI_Comm comm, int root, char **buf, uint64_t *len)
{
	int rank = 0;
	enum specd_status st = PAR_MPI(MPI_Comm_rank(comm, &rank));
	if (st != SPECD_OK)
		return st;
	uint64_t n = rank == root ? *len : 0;
	if (rank == root && n > BCAST_MAX_BYTES)
		n = UINT64_MAX; /* tell the others to give up too */
	st = par_bcast_wait(&n, 1, MPI_UINT64_T, root, comm);
	if (st != SPECD_OK)
		return st;
	if (n == UINT64_MAX) {
		LOG_ERROR("broadcast of %llu bytes refused: over the 64 MiB limit",
			  (unsigned long long)*len);
		return SPECD_INVAL;
	}
	char *data = rank == root ? *buf : specd_malloc_array(n + 1, 1);
	/* Every rank takes part in every chunk even if its allocation failed, so the
	 * collective completes with matching counts; that rank then reports NOMEM. */
	static char scratch[BCAST_CHUNK];
	for (uint64_t off = 0; st == SPECD_OK && off < n;) {
		int chunk = n - off > BCAST_CHUNK ? BCAST_CHUNK : (int)(n - off);
		st = par_bcast_wait(data ? data + off : scratch, chunk, MPI_BYTE, root, comm);
		off += (uint64_t)chunk;
	}
	if (rank == root)
		return st;
	if (!data)
		return SPECD_NOMEM;
	if (st != SPECD_OK) {
		specd_free(data);
		return st;
	}
	data[n] = '\0';
	*buf = data;
	*len = n;
	return SPECD_OK;
}
