/* The MPI communicator for host buffers (parallel/comm.h): every operation is a
 * non-blocking MPI call polled against the deadline, with liveness checks on a second
 * duplicated communicator so a stalled rank is named rather than waited for. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "mpi_check.h"

/* Inside an operation the peers are computing the same step, so a wait is short: poll
 * (yielding the core, for oversubscribed hosts) this long, then nap at most
 * BUSY_NAP_MAX_S. Waiting for work (idle) sleeps at once, control.h's back-off. */
#define SPIN_S 50e-3
#define BUSY_NAP_MAX_S 1e-3
#define NAP_MIN_S 50e-6
#define NAP_MAX_S 5e-3
#define ABORT_GRACE_MAX_S 1.0
#define CHUNK_BYTES ((size_t)1 << 30)

enum { TAG_PING = 1, TAG_PONG = 2 };

/* A liveness check and its answer: the answer echoes id and says where its sender is. */
struct live_msg {
	int64_t id;
	int64_t seq; /* the answering rank's operations started so far */
	int32_t op;  /* enum op of its current operation, OP_NONE outside one */
	int32_t pad;
};

enum op { OP_NONE, OP_ALLREDUCE, OP_MAXLOC, OP_BCAST, OP_GATHER, OP_SEND, OP_RECV };

static const char *const op_names[] = {"nothing", "all-reduce", "max-loc", "broadcast",
				       "gather", "send", "receive"};

struct comm_mpi {
	struct par_comm base; /* first: the ops receive &base */
	MPI_Comm data;        /* the operations' traffic */
	MPI_Comm ctl;         /* liveness checks only */
	int *world;           /* (size) world rank of each rank, for messages */
	float *scratch;       /* (size, scratch_n) all-reduce contributions, host */
	size_t scratch_n;
	int *icounts, *idispls; /* (size) gather arguments as MPI wants them */
	uint64_t seq;         /* operations started */
	enum op op;           /* the one in progress */
	int64_t ping_id;      /* the last liveness check this rank sent */
	struct live_msg *ping_out, *pong_out, *pong_in; /* (size) per peer */
	MPI_Request *ping_req, *pong_req;               /* (size) per peer */
	int64_t *answered;    /* (size) last ping id each peer answered */
};

static struct comm_mpi *impl(struct par_comm *c)
{
	return (struct comm_mpi *)(void *)c;
}

/* True when a send request slot is free (never used, or its send has completed). */
static bool req_free(MPI_Request *r)
{
	if (*r == MPI_REQUEST_NULL)
		return true;
	int done = 0;
	if (MPI_Test(r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
		return false;
	return done != 0;
}

/* Answers pings and records pongs that have arrived. Never blocks: every message on
 * ctl is a small one whose arrival Iprobe has seen. */
static void service(struct comm_mpi *c)
{
	for (;;) {
		int flag = 0;
		MPI_Status s;
		if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->ctl, &flag, &s) != MPI_SUCCESS ||
		    !flag)
			return;
		struct live_msg msg;
		if (MPI_Recv(&msg, (int)sizeof(msg), MPI_BYTE, s.MPI_SOURCE, s.MPI_TAG, c->ctl,
			     MPI_STATUS_IGNORE) != MPI_SUCCESS)
			return;
		int p = s.MPI_SOURCE;
		if (s.MPI_TAG == TAG_PING) {
			/* A peer that has not taken our last answer gets none now: the
			 * buffer is still in flight, and it hears from us soon enough. */
			if (!req_free(&c->pong_req[p]))
				continue;
			c->pong_out[p] = (struct live_msg){.id = msg.id, .seq = (int64_t)c->seq,
							   .op = (int32_t)c->op};
			MPI_Isend(&c->pong_out[p], (int)sizeof(msg), MPI_BYTE, p, TAG_PONG, c->ctl,
				  &c->pong_req[p]);
		} else if (s.MPI_TAG == TAG_PONG && msg.id == c->ping_id) {
			c->answered[p] = msg.id;
			c->pong_in[p] = msg;
		}
	}
}

/* Sends a liveness check to `peer`, or to every other rank when peer < 0. */
static void ping(struct comm_mpi *c, int peer)
{
	c->ping_id++;
	for (int p = 0; p < c->base.size; p++) {
		if (p == c->base.rank || (peer >= 0 && p != peer) || !req_free(&c->ping_req[p]))
			continue;
		c->ping_out[p] = (struct live_msg){.id = c->ping_id};
		MPI_Isend(&c->ping_out[p], (int)sizeof(struct live_msg), MPI_BYTE, p, TAG_PING,
			  c->ctl, &c->ping_req[p]);
	}
}

/* The timeout's message: who never answered, and where the others are. */
static enum specd_status blame(struct comm_mpi *c, int peer, double waited,
			       struct specd_error *err)
{
	char silent[160] = "", alive[320] = "";
	size_t ls = 0, la = 0;
	int n_silent = 0;
	for (int p = 0; p < c->base.size; p++) {
		if (p == c->base.rank || (peer >= 0 && p != peer))
			continue;
		if (c->answered[p] != c->ping_id) {
			n_silent++;
			if (ls < sizeof(silent))
				ls += (size_t)snprintf(silent + ls, sizeof(silent) - ls, "%s%d",
						       n_silent > 1 ? ", " : "", c->world[p]);
		} else if (la < sizeof(alive)) {
			const struct live_msg *m = &c->pong_in[p];
			int op = m->op >= 0 && m->op <= OP_RECV ? m->op : OP_NONE;
			la += (size_t)snprintf(alive + la, sizeof(alive) - la,
					       "; rank %d answered, in %s #%lld", c->world[p],
					       op_names[op], (long long)m->seq);
		}
	}
	const char *what = op_names[c->op];
	if (n_silent)
		specd_errorf(err, SPECD_TIMEOUT,
			     "%s #%llu on rank %d timed out after %.1f s: rank%s %s did not "
			     "respond (stopped, stalled or dead)%s",
			     what, (unsigned long long)c->seq, c->world[c->base.rank], waited,
			     n_silent > 1 ? "s" : "", silent, alive);
	else
		specd_errorf(err, SPECD_TIMEOUT,
			     "%s #%llu on rank %d timed out after %.1f s although every rank "
			     "answered (mismatched calls?)%s",
			     what, (unsigned long long)c->seq, c->world[c->base.rank], waited, alive);
	LOG_ERROR("%s", err ? err->msg : what);
	return SPECD_TIMEOUT;
}

/* What a wait polls: a request to complete, or (recv's first half) a message from
 * peer with tag to arrive, matched (MPI_Improbe) so that its size is known before any
 * byte of it is written. */
struct waited {
	MPI_Request *req;
	int tag;
	MPI_Message *msg;
	MPI_Status *status;
};

static int poll_once(struct comm_mpi *c, const struct waited *w, int peer, int *done,
		     const char **call)
{
	if (w->req) {
		*call = "MPI_Test";
		return MPI_Test(w->req, done, MPI_STATUS_IGNORE);
	}
	*call = "MPI_Improbe";
	return MPI_Improbe(peer, w->tag, c->data, done, w->msg, w->status);
}

/* Waits for w: polls while the peers finish the same step, then sleeps with a
 * doubling nap. With a deadline, checks liveness half-way and gives up at the
 * deadline; peer is the rank waited on, or -1 for all. */
static enum specd_status wait_for(struct comm_mpi *c, const struct waited *w, int peer,
				  bool idle, struct specd_error *err)
{
	double t0 = specd_now(), deadline = c->base.deadline_s, nap = NAP_MIN_S;
	bool pinged = false;
	for (;;) {
		int done = 0;
		const char *call = "";
		int rc = poll_once(c, w, peer, &done, &call);
		if (rc != MPI_SUCCESS) {
			par_mpi_check(rc, call, __FILE__, __LINE__);
			enum op op = c->op;
			c->op = OP_NONE;
			return specd_errorf(err, SPECD_MPI, "%s #%llu: %s failed", op_names[op],
					    (unsigned long long)c->seq, call);
		}
		if (done) {
			c->op = OP_NONE;
			return SPECD_OK;
		}
		service(c);
		double waited = specd_now() - t0;
		if (!idle && !pinged && waited >= deadline / 2) {
			ping(c, peer);
			pinged = true;
		}
		if (!idle && waited >= deadline)
			return blame(c, peer, waited, err);
		if (!idle && waited < SPIN_S) {
			sched_yield();
			continue;
		}
		specd_sleep(nap);
		double cap = idle ? NAP_MAX_S : BUSY_NAP_MAX_S;
		nap = nap * 2 < cap ? nap * 2 : cap;
	}
}

static enum specd_status wait_req(struct comm_mpi *c, MPI_Request *req, int peer, bool idle,
				  struct specd_error *err)
{
	const struct waited w = {.req = req};
	return wait_for(c, &w, peer, idle, err);
}

static enum specd_status start(struct comm_mpi *c, enum op op, int rc, const char *call,
			       struct specd_error *err)
{
	c->seq++;
	c->op = op;
	if (par_mpi_check(rc, call, __FILE__, __LINE__) == SPECD_OK)
		return SPECD_OK;
	c->op = OP_NONE;
	return specd_errorf(err, SPECD_MPI, "%s #%llu: %s failed", op_names[op],
			    (unsigned long long)c->seq, call);
}

static enum specd_status grow_scratch(struct comm_mpi *c, size_t n)
{
	if (n <= c->scratch_n)
		return SPECD_OK;
	size_t size = (size_t)c->base.size;
	if (n > SIZE_MAX / sizeof(float) / size)
		return SPECD_NOMEM;
	float *s = specd_aligned_alloc(64, n * size * sizeof(float));
	if (!s)
		return SPECD_NOMEM;
	specd_free(c->scratch);
	c->scratch = s;
	c->scratch_n = n;
	return SPECD_OK;
}

static enum specd_status mpi_allreduce_sum(struct par_comm *base, float *buf, size_t n,
					   struct specd_error *err)
{
	struct comm_mpi *c = impl(base);
	if (base->size == 1 || n == 0)
		return SPECD_OK;
	if (n > INT_MAX)
		return specd_errorf(err, SPECD_INVAL, "all-reduce of %zu floats: too many", n);
	if (grow_scratch(c, n) != SPECD_OK)
		return specd_errorf(err, SPECD_NOMEM, "all-reduce of %zu floats: out of memory", n);
	/* Every contribution to every rank, then one fixed-order sum: MPI's own
	 * reduction picks its algorithm (and so the order of the additions) by message
	 * size, which would make a row's sum depend on the batch it travels in. */
	MPI_Request req;
	enum specd_status st = start(c, OP_ALLREDUCE,
				     MPI_Iallgather(buf, (int)n, MPI_FLOAT, c->scratch, (int)n,
						    MPI_FLOAT, c->data, &req),
				     "MPI_Iallgather", err);
	if (st == SPECD_OK)
		st = wait_req(c, &req, -1, false, err);
	if (st != SPECD_OK)
		return st;
	for (size_t i = 0; i < n; i++) {
		float s = c->scratch[i];
		for (int r = 1; r < base->size; r++)
			s += c->scratch[(size_t)r * n + i];
		buf[i] = s;
	}
	return SPECD_OK;
}

struct float_int {
	float val;
	int idx;
};

static enum specd_status mpi_maxloc(struct par_comm *base, float *val, int32_t *idx, size_t n,
				    struct specd_error *err)
{
	struct comm_mpi *c = impl(base);
	if (base->size == 1 || n == 0)
		return SPECD_OK;
	/* Small: the rows of one verification step. */
	struct float_int pairs[256];
	for (size_t i0 = 0; i0 < n; i0 += 256) {
		size_t m = n - i0 < 256 ? n - i0 : 256;
		for (size_t i = 0; i < m; i++)
			pairs[i] = (struct float_int){.val = val[i0 + i], .idx = idx[i0 + i]};
		MPI_Request req;
		/* MPI_MAXLOC takes the lowest index among equal values, as argmax does. */
		enum specd_status st =
			start(c, OP_MAXLOC,
			      MPI_Iallreduce(MPI_IN_PLACE, pairs, (int)m, MPI_FLOAT_INT, MPI_MAXLOC,
					     c->data, &req),
			      "MPI_Iallreduce", err);
		if (st == SPECD_OK)
			st = wait_req(c, &req, -1, false, err);
		if (st != SPECD_OK)
			return st;
		for (size_t i = 0; i < m; i++) {
			val[i0 + i] = pairs[i].val;
			idx[i0 + i] = pairs[i].idx;
		}
	}
	return SPECD_OK;
}

static enum specd_status mpi_bcast(struct par_comm *base, void *buf, size_t bytes, int root,
				   int idle, struct specd_error *err)
{
	struct comm_mpi *c = impl(base);
	if (root < 0 || root >= base->size)
		return specd_errorf(err, SPECD_INVAL, "broadcast from rank %d of %d", root,
				    base->size);
	if (base->size == 1)
		return SPECD_OK;
	bool wait_idle = idle && base->rank != root;
	for (size_t off = 0; off < bytes || off == 0; off += CHUNK_BYTES) {
		size_t m = bytes - off < CHUNK_BYTES ? bytes - off : CHUNK_BYTES;
		MPI_Request req;
		enum specd_status st = start(c, OP_BCAST,
					     MPI_Ibcast((char *)buf + off, (int)m, MPI_BYTE, root,
							c->data, &req),
					     "MPI_Ibcast", err);
		if (st == SPECD_OK)
			st = wait_req(c, &req, base->rank == root ? -1 : root, wait_idle, err);
		if (st != SPECD_OK)
			return st;
		if (bytes == 0)
			break;
	}
	return SPECD_OK;
}

static enum specd_status mpi_gather(struct par_comm *base, const void *send, void *recv,
				    const size_t *counts, const size_t *displs, int root,
				    struct specd_error *err)
{
	struct comm_mpi *c = impl(base);
	if (root < 0 || root >= base->size)
		return specd_errorf(err, SPECD_INVAL, "gather to rank %d of %d", root, base->size);
	for (int r = 0; r < base->size; r++) {
		if (counts[r] > INT_MAX || displs[r] > INT_MAX)
			return specd_errorf(err, SPECD_INVAL,
					    "gather: %zu bytes at %zu from rank %d: too large",
					    counts[r], displs[r], r);
		c->icounts[r] = (int)counts[r];
		c->idispls[r] = (int)displs[r];
	}
	if (base->size == 1) {
		memmove((char *)recv + displs[0], send, counts[0]);
		return SPECD_OK;
	}
	MPI_Request req;
	enum specd_status st = start(c, OP_GATHER,
				     MPI_Igatherv(send, c->icounts[base->rank], MPI_BYTE, recv,
						  c->icounts, c->idispls, MPI_BYTE, root, c->data,
						  &req),
				     "MPI_Igatherv", err);
	if (st == SPECD_OK)
		st = wait_req(c, &req, base->rank == root ? -1 : root, false, err);
	return st;
}

/* A receive of at most `bytes`: the message is matched first and its size read, since
 * Open MPI (4.1 here) writes a longer message past the buffer before it reports the
 * truncation. A longer one is taken into a buffer of its own and refused with
 * SPECD_PROTO; a shorter one fills the start of buf (the rest is left as it was). */
static enum specd_status recv_matched(struct comm_mpi *c, void *buf, size_t bytes, int peer,
				      int tag, struct specd_error *err)
{
	MPI_Message msg = MPI_MESSAGE_NULL;
	MPI_Status status;
	MPI_Request req;
	int count = 0;
	const struct waited w = {.tag = tag, .msg = &msg, .status = &status};
	unsigned long long seq = ++c->seq;
	c->op = OP_RECV;
	enum specd_status st = wait_for(c, &w, peer, false, err);
	if (st != SPECD_OK)
		return st; /* nothing was posted: nothing to withdraw */
	if (PAR_MPI(MPI_Get_count(&status, MPI_BYTE, &count)) != SPECD_OK || count < 0)
		return specd_errorf(err, SPECD_MPI, "receive #%llu from rank %d: the message's "
				    "size is unknown", seq, c->world[peer]);
	bool too_long = (size_t)count > bytes;
	void *into = too_long ? specd_malloc_array((size_t)count, 1) : buf;
	if (!into)
		return specd_errorf(err, SPECD_NOMEM, "receive #%llu from rank %d: a message of "
				    "%d bytes, out of memory for it", seq, c->world[peer], count);
	c->op = OP_RECV;
	if (PAR_MPI(MPI_Imrecv(into, count, MPI_BYTE, &msg, &req)) != SPECD_OK) {
		c->op = OP_NONE;
		st = specd_errorf(err, SPECD_MPI, "receive #%llu: MPI_Imrecv failed", seq);
	} else {
		st = wait_req(c, &req, peer, false, err);
	}
	/* A matched receive cannot be withdrawn: after a timeout MPI may still write into,
	 * so the refused message's buffer is then left to it. */
	if (too_long && st != SPECD_TIMEOUT)
		specd_free(into);
	if (st == SPECD_OK && too_long)
		st = specd_errorf(err, SPECD_PROTO, "receive #%llu from rank %d (tag %d): a message "
				  "of %d bytes where at most %zu were expected", seq,
				  c->world[peer], tag, count, bytes);
	return st;
}

static enum specd_status p2p(struct comm_mpi *c, bool is_send, void *buf, size_t bytes,
			     int peer, int tag, struct specd_error *err)
{
	const char *what = is_send ? "send" : "receive";
	if (peer < 0 || peer >= c->base.size || peer == c->base.rank || tag < 0 ||
	    bytes > INT_MAX)
		return specd_errorf(err, SPECD_INVAL, "%s of %zu bytes with rank %d (tag %d) "
				    "on rank %d of %d", what, bytes, peer, tag, c->base.rank,
				    c->base.size);
	MPI_Request req;
	if (!is_send)
		return recv_matched(c, buf, bytes, peer, tag, err);
	enum specd_status st = start(c, OP_SEND, MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag,
							   c->data, &req), "MPI_Isend", err);
	if (st == SPECD_OK)
		st = wait_req(c, &req, peer, false, err);
	if (st == SPECD_TIMEOUT) {
		/* Point-to-point requests, unlike collectives, can be withdrawn. */
		MPI_Cancel(&req);
		MPI_Request_free(&req);
	}
	return st;
}

static enum specd_status mpi_send(struct par_comm *base, const void *buf, size_t bytes,
				  int dst, int tag, struct specd_error *err)
{
	return p2p(impl(base), true, (void *)(uintptr_t)buf, bytes, dst, tag, err);
}

static enum specd_status mpi_recv(struct par_comm *base, void *buf, size_t bytes, int src,
				  int tag, struct specd_error *err)
{
	return p2p(impl(base), false, buf, bytes, src, tag, err);
}

static void mpi_service(struct par_comm *base)
{
	service(impl(base));
}

static void mpi_abort(struct par_comm *base, int code)
{
	struct comm_mpi *c = impl(base);
	double grace = base->deadline_s / 2 < ABORT_GRACE_MAX_S ? base->deadline_s / 2
								: ABORT_GRACE_MAX_S;
	LOG_ERROR("ending the job (exit code %d) in %.1f s", code, grace);
	double t0 = specd_now();
	while (specd_now() - t0 < grace) {
		service(c);
		specd_sleep(NAP_MAX_S);
	}
	MPI_Abort(MPI_COMM_WORLD, code);
	_Exit(code); /* MPI_Abort does not return; if it somehow did, neither do we */
}

static void drop_requests(MPI_Request *reqs, int n)
{
	for (int p = 0; reqs && p < n; p++) {
		if (req_free(&reqs[p]))
			continue;
		MPI_Cancel(&reqs[p]);
		MPI_Request_free(&reqs[p]);
	}
}

static void mpi_destroy(struct par_comm *base)
{
	struct comm_mpi *c = impl(base);
	if (c->ctl != MPI_COMM_NULL) {
		service(c);
		drop_requests(c->ping_req, base->size);
		drop_requests(c->pong_req, base->size);
		MPI_Comm_free(&c->ctl);
	}
	if (c->data != MPI_COMM_NULL)
		MPI_Comm_free(&c->data);
	specd_free(c->world);
	specd_free(c->scratch);
	specd_free(c->icounts);
	specd_free(c->idispls);
	specd_free(c->ping_out);
	specd_free(c->pong_out);
	specd_free(c->pong_in);
	specd_free(c->ping_req);
	specd_free(c->pong_req);
	specd_free(c->answered);
	specd_free(c);
}

static const struct par_comm_ops mpi_ops = {
	.name = "mpi",
	.mem = PAR_MEM_HOST,
	.destroy = mpi_destroy,
	.allreduce_sum = mpi_allreduce_sum,
	.maxloc = mpi_maxloc,
	.bcast = mpi_bcast,
	.gather = mpi_gather,
	.send = mpi_send,
	.recv = mpi_recv,
	.service = mpi_service,
	.abort = mpi_abort,
};

/* The world rank of each of comm's ranks, so messages name what mpirun and the role
 * table show. */
static enum specd_status world_ranks(MPI_Comm comm, int size, int *out)
{
	MPI_Group g, wg;
	int *mine = specd_malloc_array((size_t)size, sizeof(int));
	if (!mine)
		return SPECD_NOMEM;
	for (int r = 0; r < size; r++)
		mine[r] = r;
	enum specd_status st = PAR_MPI(MPI_Comm_group(comm, &g));
	if (st == SPECD_OK) {
		if ((st = PAR_MPI(MPI_Comm_group(MPI_COMM_WORLD, &wg))) == SPECD_OK) {
			st = PAR_MPI(MPI_Group_translate_ranks(g, size, mine, wg, out));
			MPI_Group_free(&wg);
		}
		MPI_Group_free(&g);
	}
	specd_free(mine);
	return st;
}

enum specd_status par_comm_mpi_create(MPI_Comm comm, const struct par_comm_config *cfg,
				      struct par_comm **out, struct specd_error *err)
{
	static const struct par_comm_config defaults;
	if (!cfg)
		cfg = &defaults;
	if (!(cfg->deadline_s >= 0))
		return specd_errorf(err, SPECD_INVAL, "communicator deadline %g s: must be >= 0",
				    cfg->deadline_s);
	struct comm_mpi *c = specd_calloc(1, sizeof(*c));
	if (!c)
		return specd_errorf(err, SPECD_NOMEM, "communicator: out of memory");
	c->base.ops = &mpi_ops;
	c->data = c->ctl = MPI_COMM_NULL;
	par_comm_set_deadline(&c->base, cfg->deadline_s);
	enum specd_status st;
	size_t n = 0;
	if ((st = PAR_MPI(MPI_Comm_rank(comm, &c->base.rank))) ||
	    (st = PAR_MPI(MPI_Comm_size(comm, &c->base.size))) ||
	    (st = PAR_MPI(MPI_Comm_dup(comm, &c->data))) ||
	    (st = PAR_MPI(MPI_Comm_dup(comm, &c->ctl)))) {
		specd_errorf(err, st, "communicator: MPI set-up failed");
		goto fail;
	}
	MPI_Comm_set_errhandler(c->data, MPI_ERRORS_RETURN);
	MPI_Comm_set_errhandler(c->ctl, MPI_ERRORS_RETURN);
	n = (size_t)c->base.size;
	c->ping_req = specd_malloc_array(n, sizeof(MPI_Request));
	c->pong_req = specd_malloc_array(n, sizeof(MPI_Request));
	for (size_t p = 0; p < n && c->ping_req && c->pong_req; p++)
		c->ping_req[p] = c->pong_req[p] = MPI_REQUEST_NULL;
	c->world = specd_malloc_array(n, sizeof(int));
	c->icounts = specd_malloc_array(n, sizeof(int));
	c->idispls = specd_malloc_array(n, sizeof(int));
	c->ping_out = specd_calloc(n, sizeof(*c->ping_out));
	c->pong_out = specd_calloc(n, sizeof(*c->pong_out));
	c->pong_in = specd_calloc(n, sizeof(*c->pong_in));
	c->answered = specd_calloc(n, sizeof(int64_t));
	if (!c->world || !c->icounts || !c->idispls || !c->ping_out || !c->pong_out ||
	    !c->pong_in || !c->ping_req || !c->pong_req || !c->answered ||
	    (c->base.size > 1 && grow_scratch(c, cfg->reduce_floats) != SPECD_OK)) {
		st = specd_errorf(err, SPECD_NOMEM, "communicator: out of memory");
		goto fail;
	}
	if ((st = world_ranks(comm, c->base.size, c->world)) != SPECD_OK) {
		specd_errorf(err, st, "communicator: cannot translate ranks");
		goto fail;
	}
	*out = &c->base;
	return SPECD_OK;
fail:
	if (!c->ping_req || !c->pong_req) { /* nothing was sent: no requests to drop */
		specd_free(c->ping_req);
		specd_free(c->pong_req);
		c->ping_req = c->pong_req = NULL;
	}
	mpi_destroy(&c->base);
	return st;
}
