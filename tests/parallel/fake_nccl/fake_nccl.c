/* The fake NCCL and CUDA runtime (fake_nccl.h says what it models and what not). */
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_nccl.h"
#include "kernels/cuda/cuda_reduce.h" /* the reductions' prototypes, renamed */

enum step_kind {
	STEP_WAIT,   /* until its MPI requests complete */
	STEP_STUCK,  /* never: an operation that failed (fake_nccl_fail_next) */
	STEP_COPY,   /* cudaMemcpyAsync */
	STEP_SUM,    /* cuda_launch_sum_slices */
	STEP_MAXLOC, /* cuda_launch_maxloc_slices */
};

struct step {
	enum step_kind kind;
	struct fake_nccl_comm *comm; /* WAIT, STUCK: whose (an abort drops them) */
	MPI_Request *reqs;
	void **sent; /* per request: the copy a send reads from; NULL for a receive */
	int n_reqs;
	void *dst; /* COPY, SUM (floats), MAXLOC (values) */
	const void *src;
	size_t bytes;
	int32_t *idx; /* MAXLOC */
	const int32_t *idxs;
	size_t n;
	int n_slices;
};

struct fake_stream {
	struct step *steps;
	size_t n, cap;
	struct fake_stream *next; /* every live stream: an abort looks through them */
};

/* Tags: the unique id's key plus the kind and a sequence that every rank counts alike. */
enum { KIND_INIT, KIND_COLL, KIND_P2P, KIND_CONNECT };

struct fake_nccl_comm {
	int rank, size;
	ncclUniqueId id;
	uint32_t key;
	ncclResult_t async;
	ncclResult_t fail_later; /* injected: becomes async once a call has settled */
	bool ready;     /* init done */
	double post_at; /* init: when to post this rank's messages */
	bool posted;
	struct step init; /* its id to and from every peer (2 requests a peer) */
	ncclUniqueId *peer_ids;
	uint64_t coll_seq;
	uint64_t *send_seq, *recv_seq; /* per peer: NCCL matches send/recv in call order */
	/* Lazy connection (NCCL's runtime connect): the first call that involves a peer
	 * stays in progress until that peer makes its own first such call. */
	bool *connected;
	unsigned char *conn_in; /* a byte from each peer */
	struct step conn;       /* the connections being made (2 requests a peer) */
	char last[200];
};

#define MAX_GROUP_COMMS 16

static struct {
	int devices;
	double init_delay;
	ncclResult_t fail_next;
	int fail_malloc;
	int group_depth;
	struct fake_nccl_comm *group[MAX_GROUP_COMMS];
	int n_group;
	struct fake_stream *streams;
	/* The copies of sends let go unfinished (an abort): MPI may read them still, so
	 * they are kept, reachable, for the life of the process. */
	void **orphans;
	size_t n_orphans, cap_orphans;
	struct fake_nccl_stats stats;
	char last[200];
} g = {.devices = 1};

void fake_nccl_set_devices(int count)
{
	g.devices = count;
}

void fake_nccl_set_init_delay(double seconds)
{
	g.init_delay = seconds;
}

void fake_nccl_fail_next(ncclResult_t rc)
{
	g.fail_next = rc;
}

void fake_nccl_fail_malloc(int n)
{
	g.fail_malloc = n;
}

struct fake_nccl_stats fake_nccl_stats(void)
{
	return g.stats;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- streams ---- */

static void orphan(void *p)
{
	if (g.n_orphans == g.cap_orphans) {
		size_t cap = g.cap_orphans ? 2 * g.cap_orphans : 16;
		void **q = realloc(g.orphans, cap * sizeof(*q));
		if (!q)
			return; /* then it leaks: still better than a buffer freed under MPI */
		g.orphans = q;
		g.cap_orphans = cap;
	}
	g.orphans[g.n_orphans++] = p;
}

/* Frees a step; what is still in flight is cancelled (receives) or let go (sends, whose
 * copies are kept). */
static void drop(struct step *st)
{
	for (int i = 0; i < st->n_reqs; i++) {
		int done = st->reqs[i] == MPI_REQUEST_NULL;
		if (!done)
			MPI_Test(&st->reqs[i], &done, MPI_STATUS_IGNORE);
		if (done) {
			free(st->sent[i]);
		} else if (!st->sent[i]) {
			MPI_Cancel(&st->reqs[i]);
			MPI_Wait(&st->reqs[i], MPI_STATUS_IGNORE);
			g.stats.cancelled++;
		} else {
			MPI_Request_free(&st->reqs[i]);
			orphan(st->sent[i]);
		}
	}
	free(st->reqs);
	free(st->sent);
	memset(st, 0, sizeof(*st));
}

static void run(struct step *st)
{
	size_t n = st->n;
	int k = st->n_slices;
	if (st->kind == STEP_COPY) {
		memmove(st->dst, st->src, st->bytes);
	} else if (st->kind == STEP_SUM) {
		float *out = st->dst;
		const float *in = st->src;
		for (size_t i = 0; i < n; i++) { /* rank order, as comm_mpi.c adds */
			float s = in[i];
			for (int r = 1; r < k; r++)
				s += in[(size_t)r * n + i];
			out[i] = s;
		}
		g.stats.reductions++;
	} else if (st->kind == STEP_MAXLOC) {
		float *val = st->dst;
		const float *vals = st->src;
		for (size_t i = 0; i < n; i++) {
			float v = vals[i];
			int32_t id = st->idxs[i];
			for (int r = 1; r < k; r++) {
				float w = vals[(size_t)r * n + i];
				int32_t j = st->idxs[(size_t)r * n + i];
				if (w > v || (w == v && j < id)) {
					v = w;
					id = j;
				}
			}
			val[i] = v;
			st->idx[i] = id;
		}
		g.stats.reductions++;
	}
}

/* Room for n requests in st (null until posted: MPI_Testall skips them). */
static bool step_reqs(struct step *st, int n)
{
	st->reqs = malloc((size_t)(n > 0 ? n : 1) * sizeof(*st->reqs));
	st->sent = calloc((size_t)(n > 0 ? n : 1), sizeof(*st->sent));
	if (!st->reqs || !st->sent) {
		free(st->reqs);
		free(st->sent);
		st->reqs = NULL;
		st->sent = NULL;
		return false;
	}
	for (int i = 0; i < n; i++)
		st->reqs[i] = MPI_REQUEST_NULL;
	st->n_reqs = n;
	return true;
}

/* A new step at the end of s with room for n_reqs requests, or NULL (no memory). */
static struct step *push(cudaStream_t s, enum step_kind kind, struct fake_nccl_comm *c,
			 int n_reqs)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 8;
		struct step *p = realloc(s->steps, cap * sizeof(*p));
		if (!p)
			return NULL;
		s->steps = p;
		s->cap = cap;
	}
	struct step *st = &s->steps[s->n];
	memset(st, 0, sizeof(*st));
	if (n_reqs > 0 && !step_reqs(st, n_reqs))
		return NULL;
	st->kind = kind;
	st->comm = c;
	s->n++;
	return st;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
	(void)flags;
	if (!s)
		return cudaErrorInvalidValue;
	*s = calloc(1, sizeof(**s));
	if (!*s)
		return cudaErrorMemoryAllocation;
	(*s)->next = g.streams;
	g.streams = *s;
	return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	if (!s)
		return cudaErrorInvalidValue;
	for (struct fake_stream **p = &g.streams; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	for (size_t i = 0; i < s->n; i++)
		drop(&s->steps[i]);
	free(s->steps);
	free(s);
	return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s)
{
	if (!s)
		return cudaErrorInvalidValue;
	size_t done = 0;
	for (; done < s->n; done++) {
		struct step *st = &s->steps[done];
		if (st->kind == STEP_STUCK)
			break;
		if (st->n_reqs) {
			int flag = 0;
			if (MPI_Testall(st->n_reqs, st->reqs, &flag, MPI_STATUSES_IGNORE) !=
			    MPI_SUCCESS)
				return cudaErrorLaunchFailure;
			if (!flag)
				break;
		}
		run(st);
		drop(st);
	}
	if (done) {
		memmove(s->steps, s->steps + done, (s->n - done) * sizeof(*s->steps));
		s->n -= done;
	}
	return s->n ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
			    cudaStream_t s)
{
	if (!s || kind != cudaMemcpyDeviceToDevice || (bytes && (!dst || !src)))
		return cudaErrorInvalidValue;
	struct step *st = push(s, STEP_COPY, NULL, 0);
	if (!st)
		return cudaErrorMemoryAllocation;
	st->dst = dst;
	st->src = src;
	st->bytes = bytes;
	return cudaSuccess;
}

cudaError_t cuda_launch_sum_slices(cudaStream_t s, float *out, const float *slices, size_t n,
				   int n_slices)
{
	if (!s || n_slices < 1)
		return cudaErrorInvalidValue;
	struct step *st = push(s, STEP_SUM, NULL, 0);
	if (!st)
		return cudaErrorMemoryAllocation;
	st->dst = out;
	st->src = slices;
	st->n = n;
	st->n_slices = n_slices;
	return cudaSuccess;
}

cudaError_t cuda_launch_maxloc_slices(cudaStream_t s, float *val, int32_t *idx,
				      const float *vals, const int32_t *idxs, size_t n,
				      int n_slices)
{
	if (!s || n_slices < 1)
		return cudaErrorInvalidValue;
	struct step *st = push(s, STEP_MAXLOC, NULL, 0);
	if (!st)
		return cudaErrorMemoryAllocation;
	st->dst = val;
	st->src = vals;
	st->idx = idx;
	st->idxs = idxs;
	st->n = n;
	st->n_slices = n_slices;
	return cudaSuccess;
}

/* ---- devices and memory ---- */

cudaError_t cudaGetDeviceCount(int *count)
{
	*count = g.devices > 0 ? g.devices : 0;
	return g.devices > 0 ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaSetDevice(int device)
{
	return device >= 0 && device < g.devices ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetLastError(void)
{
	return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess:
		return "no error";
	case cudaErrorInvalidValue:
		return "invalid argument";
	case cudaErrorMemoryAllocation:
		return "out of memory";
	case cudaErrorNoDevice:
		return "no CUDA-capable device is detected";
	case cudaErrorInvalidDevice:
		return "invalid device ordinal";
	case cudaErrorNotReady:
		return "device not ready";
	case cudaErrorLaunchFailure:
		return "unspecified launch failure";
	}
	return "unknown error";
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
	*p = NULL;
	if (g.fail_malloc > 0) {
		g.fail_malloc--;
		return cudaErrorMemoryAllocation;
	}
	*p = calloc(1, bytes ? bytes : 1);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *p)
{
	free(p);
	return cudaSuccess;
}

/* ---- communicators ---- */

const char *ncclGetErrorString(ncclResult_t rc)
{
	switch (rc) {
	case ncclSuccess:
		return "no error";
	case ncclUnhandledCudaError:
		return "unhandled cuda error";
	case ncclSystemError:
		return "unhandled system error";
	case ncclInternalError:
		return "internal error";
	case ncclInvalidArgument:
		return "invalid argument";
	case ncclInvalidUsage:
		return "invalid usage";
	case ncclRemoteError:
		return "remote process exited or there was a network error";
	case ncclInProgress:
		return "NCCL operation in progress";
	}
	return "unknown result code";
}

const char *ncclGetLastError(ncclComm_t c)
{
	return c ? c->last : g.last;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
	static uint64_t calls;
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	uint64_t x = (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 30) ^
		     ((uint64_t)getpid() << 17) ^ ++calls * 0x9E3779B97F4A7C15ull;
	for (size_t i = 0; i < sizeof(id->internal); i++) { /* splitmix64 bytes */
		x += 0x9E3779B97F4A7C15ull;
		uint64_t z = x;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		id->internal[i] = (char)(z ^ (z >> 31));
	}
	return ncclSuccess;
}

static int tag(const struct fake_nccl_comm *c, unsigned kind, uint64_t seq)
{
	static int ub;
	if (!ub) {
		int *v = NULL, flag = 0;
		MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &v, &flag);
		ub = flag && v && *v > 1024 ? *v : 32767;
	}
	uint32_t t = c->key + kind * 0x40000000u + (uint32_t)seq;
	return 1 + (int)(t % (uint32_t)(ub - 1));
}

/* Request i of st: a receive into buf, or a send of a copy of buf's bytes (the fake
 * posts when a call is made; the copy keeps the bytes the call saw). */
static bool post(struct step *st, int i, bool recv, void *buf, size_t bytes, int peer, int t)
{
	if (recv)
		return MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, t, MPI_COMM_WORLD,
				 &st->reqs[i]) == MPI_SUCCESS;
	st->sent[i] = malloc(bytes ? bytes : 1);
	if (!st->sent[i])
		return false;
	memcpy(st->sent[i], buf, bytes);
	return MPI_Isend(st->sent[i], (int)bytes, MPI_BYTE, peer, t, MPI_COMM_WORLD,
			 &st->reqs[i]) == MPI_SUCCESS;
}

/* Requests i and i + 1 of st: bytes from peer into in, and bytes of out to peer. */
static bool exchange(struct step *st, int i, void *in, const void *out, size_t bytes, int peer,
		     int t)
{
	return post(st, i, true, in, bytes, peer, t) &&
	       post(st, i + 1, false, (void *)(uintptr_t)out, bytes, peer, t);
}

static void free_comm(struct fake_nccl_comm *c)
{
	for (struct fake_stream *s = g.streams; s; s = s->next) {
		size_t keep = 0;
		for (size_t i = 0; i < s->n; i++) {
			if (s->steps[i].comm == c)
				drop(&s->steps[i]);
			else
				s->steps[keep++] = s->steps[i];
		}
		s->n = keep;
	}
	drop(&c->init);
	drop(&c->conn);
	free(c->connected);
	free(c->conn_in);
	free(c->peer_ids);
	free(c->send_seq);
	free(c->recv_seq);
	free(c);
}

/* Init's progress: post this rank's id to every peer (after the injected delay), and
 * done once every peer's has come and matches. */
static void progress_init(struct fake_nccl_comm *c)
{
	if (!c->posted) {
		if (now() < c->post_at)
			return;
		int t = tag(c, KIND_INIT, 0), i = 0;
		for (int p = 0; p < c->size; p++) {
			if (p == c->rank)
				continue;
			if (!exchange(&c->init, i, &c->peer_ids[p], &c->id, sizeof(c->id), p, t)) {
				c->async = ncclSystemError;
				snprintf(c->last, sizeof(c->last),
					 "fake: MPI refused init's messages");
				return;
			}
			i += 2;
		}
		c->posted = true;
	}
	int flag = 0;
	if (MPI_Testall(c->init.n_reqs, c->init.reqs, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
		c->async = ncclSystemError;
		return;
	}
	if (!flag)
		return;
	for (int p = 0; p < c->size; p++) {
		if (p != c->rank && memcmp(&c->peer_ids[p], &c->id, sizeof(c->id))) {
			c->async = ncclInvalidUsage;
			snprintf(c->last, sizeof(c->last), "fake: rank %d has another unique id",
				 p);
			return;
		}
	}
	c->ready = true;
	c->async = ncclSuccess;
	g.stats.inits++;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank,
				    ncclConfig_t *config)
{
	if (!out)
		return ncclInvalidArgument;
	*out = NULL;
	int wr = -1, ws = 0;
	MPI_Comm_rank(MPI_COMM_WORLD, &wr);
	MPI_Comm_size(MPI_COMM_WORLD, &ws);
	if (nranks != ws || rank != wr) {
		snprintf(g.last, sizeof(g.last), "fake: only a communicator over all of "
			 "MPI_COMM_WORLD in rank order is modelled (rank %d of %d asked for "
			 "%d of %d)", wr, ws, rank, nranks);
		return ncclInvalidUsage;
	}
	struct fake_nccl_comm *c = calloc(1, sizeof(*c));
	if (!c)
		return ncclSystemError;
	c->rank = rank;
	c->size = nranks;
	c->id = id;
	c->key = 2166136261u; /* FNV-1a of the id */
	for (size_t i = 0; i < sizeof(id.internal); i++)
		c->key = (c->key ^ (unsigned char)id.internal[i]) * 16777619u;
	c->peer_ids = calloc((size_t)nranks, sizeof(*c->peer_ids));
	c->send_seq = calloc((size_t)nranks, sizeof(*c->send_seq));
	c->recv_seq = calloc((size_t)nranks, sizeof(*c->recv_seq));
	c->connected = calloc((size_t)nranks, sizeof(*c->connected));
	c->conn_in = calloc((size_t)nranks, 1);
	if (!step_reqs(&c->init, 2 * (nranks - 1)) || !step_reqs(&c->conn, 2 * (nranks - 1)) ||
	    !c->peer_ids || !c->send_seq || !c->recv_seq || !c->connected || !c->conn_in) {
		free_comm(c);
		return ncclSystemError;
	}
	c->post_at = now() + g.init_delay;
	c->async = ncclInProgress;
	*out = c;
	if (config && !config->blocking)
		return ncclInProgress;
	while (c->async == ncclInProgress)
		progress_init(c);
	return c->async;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *async)
{
	if (!c || !async)
		return ncclInvalidArgument;
	if (c->async == ncclInProgress) {
		g.stats.async_polls++;
		int done = 1;
		if (!c->ready)
			progress_init(c);
		else if (MPI_Testall(c->conn.n_reqs, c->conn.reqs, &done, MPI_STATUSES_IGNORE) !=
			 MPI_SUCCESS)
			c->async = ncclSystemError;
		if (c->ready && done && c->async == ncclInProgress)
			c->async = ncclSuccess; /* an enqueued call settles once connected */
	} else if (c->async == ncclSuccess && c->fail_later != ncclSuccess) {
		c->async = c->fail_later;
		c->fail_later = ncclSuccess;
	}
	*async = c->async;
	return ncclSuccess;
}

/* Connects this rank to `peer` (-1: every peer) where not yet connected: a byte each
 * way, requests 2 i and 2 i + 1 of conn for the i-th peer connected. */
static bool connect_peers(struct fake_nccl_comm *c, int peer)
{
	unsigned char hello = 1;
	int t = tag(c, KIND_CONNECT, 0), i = 0;
	for (int p = 0; p < c->size; p++)
		i += p != c->rank && c->connected[p];
	for (int p = 0; p < c->size; p++) {
		if (p == c->rank || c->connected[p] || (peer >= 0 && p != peer))
			continue;
		if (!exchange(&c->conn, 2 * i, &c->conn_in[p], &hello, 1, p, t))
			return false;
		c->connected[p] = true;
		i++;
	}
	return true;
}

/* A call's outcome once its messages are posted: in progress until the next poll
 * (NCCL's non-blocking mode), or at the group's end. */
static ncclResult_t settle(struct fake_nccl_comm *c)
{
	if (g.group_depth > 0) {
		if (g.n_group < MAX_GROUP_COMMS)
			g.group[g.n_group++] = c;
		return ncclSuccess;
	}
	c->async = ncclInProgress;
	return ncclInProgress;
}

/* Checks before a call posts anything; *out is its result when it should not go on.
 * peer: the one peer of a send or receive (is_send says which), -1 for a collective. */
static bool begin(struct fake_nccl_comm *c, cudaStream_t s, size_t count, ncclDataType_t type,
		  int peer, bool is_send, size_t *bytes, ncclResult_t *out)
{
	size_t es = type == ncclFloat32 || type == ncclInt32 ? 4 : type == ncclUint8 ? 1 : 0;
	*bytes = count * es;
	if (!c || !s || !es || *bytes / es != count || *bytes > (size_t)INT32_MAX) {
		*out = ncclInvalidArgument;
		return false;
	}
	if (!c->ready) {
		snprintf(c->last, sizeof(c->last), "fake: a call before init completed");
		*out = ncclInvalidUsage;
		return false;
	}
	if (c->async == ncclInProgress) { /* NCCL: nothing new until the last call settled */
		snprintf(c->last, sizeof(c->last), "fake: a call while the last is in progress");
		*out = ncclInvalidUsage;
		return false;
	}
	if (c->async != ncclSuccess) {
		*out = c->async;
		return false;
	}
	if (g.fail_next != ncclSuccess) {
		/* Enqueued (connected, its place in the sequence taken) but it never
		 * completes on the stream, and the error shows at a later poll, as a peer
		 * lost mid-operation shows. */
		c->fail_later = g.fail_next;
		snprintf(c->last, sizeof(c->last), "fake: injected %s",
			 ncclGetErrorString(g.fail_next));
		g.fail_next = ncclSuccess;
		if (peer < 0)
			c->coll_seq++;
		else if (is_send)
			c->send_seq[peer]++;
		else
			c->recv_seq[peer]++;
		*out = connect_peers(c, peer) && push(s, STEP_STUCK, c, 0) ? settle(c)
									 : ncclSystemError;
		return false;
	}
	return true;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type,
			   ncclComm_t c, cudaStream_t s)
{
	size_t bytes;
	ncclResult_t rc;
	if (!begin(c, s, count, type, -1, false, &bytes, &rc))
		return rc;
	struct step *st = push(s, STEP_WAIT, c, 2 * (c->size - 1));
	if (!st || !connect_peers(c, -1))
		return ncclSystemError;
	unsigned char *r = recv;
	memmove(r + (size_t)c->rank * bytes, send, bytes);
	int t = tag(c, KIND_COLL, c->coll_seq++), i = 0;
	for (int p = 0; p < c->size; p++) {
		if (p == c->rank)
			continue;
		if (!exchange(st, i, r + (size_t)p * bytes, send, bytes, p, t))
			return ncclSystemError;
		i += 2;
	}
	g.stats.all_gathers++;
	return settle(c);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
			   int root, ncclComm_t c, cudaStream_t s)
{
	size_t bytes;
	ncclResult_t rc;
	if (c && (root < 0 || root >= c->size))
		return ncclInvalidArgument;
	if (!begin(c, s, count, type, -1, false, &bytes, &rc))
		return rc;
	bool am_root = c->rank == root;
	struct step *st = push(s, STEP_WAIT, c, am_root ? c->size - 1 : 1);
	if (!st || !connect_peers(c, -1))
		return ncclSystemError;
	int t = tag(c, KIND_COLL, c->coll_seq++);
	if (am_root) {
		if (send != recv)
			memmove(recv, send, bytes);
		for (int p = 0, i = 0; p < c->size; p++) {
			if (p != root && !post(st, i, false, recv, bytes, p, t))
				return ncclSystemError;
			i += p != root;
		}
	} else if (!post(st, 0, true, recv, bytes, root, t)) {
		return ncclSystemError;
	}
	g.stats.broadcasts++;
	return settle(c);
}

static ncclResult_t p2p(bool is_send, void *buf, size_t count, ncclDataType_t type, int peer,
			ncclComm_t c, cudaStream_t s)
{
	size_t bytes;
	ncclResult_t rc;
	if (c && (peer < 0 || peer >= c->size))
		return ncclInvalidArgument;
	if (!begin(c, s, count, type, peer, is_send, &bytes, &rc))
		return rc;
	struct step *st = push(s, STEP_WAIT, c, 1);
	if (!st || !connect_peers(c, peer))
		return ncclSystemError;
	uint64_t seq = is_send ? c->send_seq[peer]++ : c->recv_seq[peer]++;
	if (!post(st, 0, !is_send, buf, bytes, peer,
		  tag(c, KIND_P2P, seq)))
		return ncclSystemError;
	if (is_send)
		g.stats.sends++;
	else
		g.stats.recvs++;
	return settle(c);
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer,
		      ncclComm_t c, cudaStream_t s)
{
	return p2p(true, (void *)(uintptr_t)send, count, type, peer, c, s);
}

ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t c,
		      cudaStream_t s)
{
	return p2p(false, recv, count, type, peer, c, s);
}

ncclResult_t ncclGroupStart(void)
{
	if (g.group_depth++ == 0)
		g.n_group = 0;
	return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void)
{
	if (g.group_depth == 0)
		return ncclInvalidUsage;
	if (--g.group_depth > 0)
		return ncclSuccess;
	bool any = false;
	for (int i = 0; i < g.n_group; i++) {
		if (g.group[i]->async == ncclSuccess)
			g.group[i]->async = ncclInProgress;
		any = true;
	}
	g.n_group = 0;
	return any ? ncclInProgress : ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c)
{
	if (!c || !c->ready || c->async == ncclInProgress)
		return ncclInvalidUsage;
	if (c->async != ncclSuccess)
		return c->async;
	c->async = ncclInProgress;
	return ncclInProgress;
}

ncclResult_t ncclCommDestroy(ncclComm_t c)
{
	if (c)
		free_comm(c);
	return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c)
{
	if (c) {
		g.stats.aborts++;
		free_comm(c);
	}
	return ncclSuccess;
}
