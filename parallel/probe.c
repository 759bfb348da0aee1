/* Link probes; see probe.h. Waits spin on MPI_Test here rather than sleep: a probe is
 * a fraction of a second at start-up, and a sleeping back-off would be measured as
 * latency. */
#include "probe.h"

#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "mpi_check.h"

enum { TAG_PROBE_HDR = 1501, TAG_PROBE_DATA = 1502 };

#define PROBE_MAX_BYTES (8u << 20)
/* The smallest message a bandwidth is fitted to when the budget ends early: on a far
 * link 8 B and 64 B take the latency and nothing else, so a bandwidth fitted to them is
 * noise. 32 KiB is a few round trips through a fresh TCP window: it undercounts a fast
 * far link's bandwidth but never by orders of magnitude. */
#define BANDWIDTH_MIN_BYTES 32768u

static const uint64_t pingpong_sizes[PAR_PROBE_SIZES] = {
	8, 64, 512, 4096, 32768, 262144, 2097152, PROBE_MAX_BYTES,
};

/* Buffers a timed-out transfer may still use: MPI gives no way to take back a
 * collective (MPI_Cancel and MPI_Request_free are erroneous on one), and a cancelled
 * send may still be read when a late peer matches it. They are parked here rather
 * than freed under MPI's feet; the job ends after a timeout (probe.h). */
static void *g_abandoned[3]; /* the ping-pong's buffer; the all-reduce's send, recv */

/* Waits for req until deadline (absolute, specd_now's clock); on timeout cancels it
 * (its buffer stays: g_abandoned). */
static enum specd_status spin_wait(MPI_Request *req, double deadline, int peer,
				   struct specd_error *err)
{
	for (;;) {
		int done = 0;
		enum specd_status st = PAR_MPI(MPI_Test(req, &done, MPI_STATUS_IGNORE));
		if (st != SPECD_OK)
			return specd_errorf(err, st, "link probe: MPI_Test failed");
		if (done)
			return SPECD_OK;
		if (specd_now() > deadline) {
			MPI_Cancel(req);
			MPI_Request_free(req);
			return specd_errorf(err, SPECD_TIMEOUT, "link probe: rank %d did not answer",
					    peer);
		}
	}
}

static enum specd_status xfer(bool send, void *buf, uint64_t bytes, int peer, int tag,
			      MPI_Comm comm, double deadline, struct specd_error *err)
{
	MPI_Request req;
	enum specd_status st =
		send ? PAR_MPI(MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, comm, &req))
		     : PAR_MPI(MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, comm, &req));
	if (st != SPECD_OK)
		return specd_errorf(err, st, "link probe: cannot post a message to rank %d", peer);
	return spin_wait(&req, deadline, peer, err);
}

/* Fits latency (the smallest size) and bandwidth (the largest) to the timings. */
static void fit(struct par_link_probe *p)
{
	p->measured = p->n > 0;
	if (!p->n)
		return;
	p->latency_s = p->seconds[0];
	uint32_t last = p->n - 1;
	double t = p->seconds[last] - (last ? p->latency_s : 0);
	if (t <= 0)
		t = p->seconds[last];
	p->bandwidth = t > 0 ? (double)p->bytes[last] / t : 0;
}

enum specd_status par_probe_pingpong(MPI_Comm comm, int a, int b, double budget_s,
				     double deadline_s, struct par_link_probe *out,
				     struct specd_error *err)
{
	int rank = -1;
	enum specd_status st = PAR_MPI(MPI_Comm_rank(comm, &rank));
	if (st != SPECD_OK)
		return specd_errorf(err, st, "link probe: MPI_Comm_rank failed");
	if (a == b || (rank != a && rank != b))
		return specd_errorf(err, SPECD_INVAL, "link probe: ranks %d and %d, this is %d", a,
				    b, rank);
	bool driver = rank == a;
	int peer = driver ? b : a;
	/* The messages and, past them, the header: both may outlive a timeout. */
	char *buf = specd_malloc_array(PROBE_MAX_BYTES + 2 * sizeof(uint64_t), 1);
	if (!buf)
		return specd_errorf(err, SPECD_NOMEM, "link probe: out of memory");
	memset(buf, 0, PROBE_MAX_BYTES);
	uint64_t *hdr = (uint64_t *)(void *)(buf + PROBE_MAX_BYTES);
	struct par_link_probe p;
	memset(&p, 0, sizeof(p));
	double start = specd_now();
	bool last = false; /* the budget ran out: one BANDWIDTH_MIN_BYTES message, then stop */
	for (uint32_t i = 0;; i++) {
		/* The driver says the next size and its repetitions (size 0: done), so both
		 * sides stop together. */
		hdr[0] = hdr[1] = 0;
		if (driver && i < PAR_PROBE_SIZES && !last) {
			if (i < 2 || specd_now() - start < budget_s) {
				hdr[0] = pingpong_sizes[i];
				hdr[1] = hdr[0] <= 32768 ? 5 : 2;
			} else if (pingpong_sizes[i] <= BANDWIDTH_MIN_BYTES) {
				hdr[0] = BANDWIDTH_MIN_BYTES;
				hdr[1] = 1;
				last = true;
			}
		}
		double deadline = specd_now() + deadline_s;
		st = xfer(driver, hdr, 2 * sizeof(*hdr), peer, TAG_PROBE_HDR, comm, deadline, err);
		uint64_t size = hdr[0];
		if (st != SPECD_OK || size == 0 || size > PROBE_MAX_BYTES || hdr[1] < 1 || hdr[1] > 5)
			break;
		int reps = (int)hdr[1];
		double best = 0;
		for (int r = 0; r < reps && st == SPECD_OK; r++) {
			double t0 = specd_now();
			st = xfer(driver, buf, size, peer, TAG_PROBE_DATA, comm, deadline, err);
			if (st == SPECD_OK)
				st = xfer(!driver, buf, size, peer, TAG_PROBE_DATA, comm, deadline, err);
			double rt = specd_now() - t0;
			if (r == 0 || rt < best)
				best = rt;
		}
		if (st != SPECD_OK)
			break;
		p.bytes[p.n] = size;
		p.seconds[p.n] = best / 2;
		p.n++;
	}
	if (st == SPECD_TIMEOUT)
		g_abandoned[0] = buf;
	else
		specd_free(buf);
	if (st != SPECD_OK)
		return st;
	fit(&p);
	if (driver)
		*out = p;
	return SPECD_OK;
}

enum specd_status par_probe_allreduce(MPI_Comm comm, double deadline_s,
				      struct par_link_probe *out, struct specd_error *err)
{
	static const uint64_t sizes[] = {4096, 65536, 1u << 20};
	const uint32_t n_sizes = sizeof(sizes) / sizeof(sizes[0]);
	float *send = specd_calloc(sizes[n_sizes - 1] / sizeof(float), sizeof(float));
	float *recv = specd_calloc(sizes[n_sizes - 1] / sizeof(float), sizeof(float));
	enum specd_status st = SPECD_OK;
	struct par_link_probe p;
	memset(&p, 0, sizeof(p));
	if (!send || !recv) {
		st = specd_errorf(err, SPECD_NOMEM, "all-reduce probe: out of memory");
		goto done;
	}
	for (uint32_t i = 0; i < n_sizes && st == SPECD_OK; i++) {
		double best = 0;
		for (int r = 0; r < 3 && st == SPECD_OK; r++) {
			MPI_Request req;
			double t0 = specd_now();
			st = PAR_MPI(MPI_Iallreduce(send, recv, (int)(sizes[i] / sizeof(float)),
						    MPI_FLOAT, MPI_SUM, comm, &req));
			if (st != SPECD_OK) {
				specd_errorf(err, st, "all-reduce probe: MPI_Iallreduce failed");
				break;
			}
			double deadline = t0 + deadline_s;
			int done = 0;
			while (st == SPECD_OK && !done) {
				st = PAR_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
				if (st == SPECD_OK && !done && specd_now() > deadline)
					st = specd_errorf(err, SPECD_TIMEOUT, "all-reduce probe: a "
							  "rank of the target group did not join "
							  "within %.1f s", deadline_s);
			}
			double t = specd_now() - t0;
			if (r == 0 || t < best)
				best = t;
		}
		if (st != SPECD_OK)
			break;
		p.bytes[p.n] = sizes[i];
		p.seconds[p.n] = best;
		p.n++;
	}
	if (st != SPECD_OK)
		goto done;
	/* Rank 0's view, so every rank holds the same figures. */
	st = PAR_MPI(MPI_Bcast(p.seconds, (int)p.n, MPI_DOUBLE, 0, comm));
	if (st != SPECD_OK) {
		specd_errorf(err, st, "all-reduce probe: MPI_Bcast failed");
		goto done;
	}
	fit(&p);
	*out = p;
done:
	/* A timed-out all-reduce stays pending (it cannot be cancelled) and may still read
	 * send and write recv: the communicator is broken, and its buffers stay. */
	if (st == SPECD_TIMEOUT) {
		g_abandoned[1] = send;
		g_abandoned[2] = recv;
	} else {
		specd_free(send);
		specd_free(recv);
	}
	return st;
}
