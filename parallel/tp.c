/* The tensor-parallel target (parallel/tp.h): each rank's shard with the hook that
 * carries the forward's all-reduces, max-loc and gathers over a parallel/comm.h
 * communicator, and the leader's operations broadcast to the followers. */
#include "tp.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "model/kv.h"

enum tp_op { TP_OP_FORWARD = 1, TP_OP_TRUNCATE, TP_OP_COMPACT, TP_OP_STOP };

/* One leader operation as broadcast; the arrays follow in a second broadcast. */
struct tp_hdr {
	int32_t op;        /* enum tp_op */
	uint32_t n_tokens; /* FORWARD: batch tokens; COMPACT: rows kept */
	uint32_t n_out;
	uint32_t want;     /* enum par_tp_want */
	uint32_t tree;     /* the batch has parents */
	uint32_t slot;
	uint32_t arg;      /* TRUNCATE: length; COMPACT: base; FORWARD: hidden-only outputs */
	uint32_t pad;
};

#define MSG_WORDS(b) (5 * (size_t)(b)) /* tokens, slots, pos, parent, out_idx */

struct par_tp_model {
	struct par_comm *comm;  /* MPI: control, max-loc, gather (host memory) */
	struct par_comm *dcomm; /* NCCL: the forward's all-reduces (device memory); or NULL */
	struct model_comm hook;
	struct gguf_file *owned_file;
	struct model *model;
	uint32_t max_batch;
	uint32_t n_local;       /* vocabulary rows of this shard */
	float *logits;          /* (max_batch, n_local) this shard's logits, host */
	uint32_t *msg;          /* (MSG_WORDS(max_batch)) a step's arrays */
	uint32_t *ids;          /* (max_batch) a follower's greedy ids (unused there) */
	size_t *bcounts, *bdispls; /* (size) gather in bytes */
	struct specd_error comm_err; /* the communicator's last error, for the step's message */
	bool broken; /* an operation failed after the followers heard of it (par_tp_broken) */
};

static enum specd_status hook_allreduce(float *buf, size_t n, void *user)
{
	struct par_tp_model *tp = user;
	return par_comm_allreduce_sum(tp->dcomm ? tp->dcomm : tp->comm, buf, n, &tp->comm_err);
}

static enum specd_status hook_maxloc(float *val, int32_t *idx, size_t n, void *user)
{
	struct par_tp_model *tp = user;
	return par_comm_maxloc(tp->comm, val, idx, n, &tp->comm_err);
}

static enum specd_status hook_gather(const float *send, float *recv, const size_t *counts,
				     const size_t *displs, void *user)
{
	struct par_tp_model *tp = user;
	for (int r = 0; r < tp->comm->size; r++) {
		tp->bcounts[r] = counts[r] * sizeof(float);
		tp->bdispls[r] = displs[r] * sizeof(float);
	}
	return par_comm_gather(tp->comm, send, recv, tp->bcounts, tp->bdispls, 0, &tp->comm_err);
}

/* A step's error: the forward's words, then what the communicator said (which rank). */
static enum specd_status with_comm(struct par_tp_model *tp, enum specd_status st,
				   struct specd_error *err)
{
	if ((st == SPECD_TIMEOUT || st == SPECD_MPI || st == SPECD_NCCL) &&
	    tp->comm_err.msg[0] && err && !strstr(err->msg, tp->comm_err.msg)) {
		/* the forward's message, then the communicator's (which names the rank) */
		char head[SPECD_ERROR_MSG_MAX];
		snprintf(head, sizeof(head), "%s", err->msg);
		specd_errorf(err, st, "%s: %s", head, tp->comm_err.msg);
	}
	return st;
}

/* The status of an operation whose header the followers may already have: a failure
 * from there on leaves the shards out of step for good. */
static enum specd_status after_hdr(struct par_tp_model *tp, enum specd_status st)
{
	if (st != SPECD_OK && tp->comm->size > 1)
		tp->broken = true;
	return st;
}

bool par_tp_broken(const struct par_tp_model *tp)
{
	return tp && tp->broken;
}

void par_tp_model_destroy(struct par_tp_model *tp)
{
	if (!tp)
		return;
	model_destroy(tp->model);
	par_comm_destroy(tp->dcomm);
	par_comm_destroy(tp->comm);
	gguf_close(tp->owned_file);
	specd_free(tp->logits);
	specd_free(tp->msg);
	specd_free(tp->ids);
	specd_free(tp->bcounts);
	specd_free(tp->bdispls);
	specd_free(tp);
}

/* The forward's all-reduces over NCCL on this shard's GPU. Collective;
 * every rank returns the same status. A build without NCCL keeps MPI through host
 * memory: every rank runs the same build, so all keep it alike. */
static enum specd_status open_nccl(MPI_Comm comm, struct par_tp_model *tp, int device,
				   const struct par_comm_config *cc, struct specd_error *err)
{
	struct specd_error why;
	specd_error_clear(&why);
	enum specd_status mine = par_comm_nccl_create(comm, device, cc, &tp->dcomm, &why);
	float failed = mine == SPECD_OK ? 0.0f : mine == SPECD_UNSUPPORTED ? 1.0f : 2.0f;
	int32_t who = (int32_t)tp->hook.rank;
	enum specd_status st = par_comm_maxloc(tp->comm, &failed, &who, 1, err);
	if (st != SPECD_OK)
		return st;
	if (failed == 0.0f)
		return SPECD_OK;
	par_comm_destroy(tp->dcomm);
	tp->dcomm = NULL;
	if (failed == 1.0f) {
		tp->hook.device_memory = false;
		if (tp->hook.rank == 0)
			LOG_WARN("tensor parallel: all-reduces through host memory over MPI: %s",
				 why.msg);
		return SPECD_OK;
	}
	if (mine != SPECD_OK)
		return specd_errorf(err, mine, "tensor parallel: %s", why.msg);
	return specd_errorf(err, SPECD_NCCL, "tensor parallel: rank %d could not join the NCCL "
			    "communicator (its log says why)", who);
}

/* The load on every rank; `early` is a failure this rank met before it could load
 * (the file would not open), which it still votes with. */
static enum specd_status load(MPI_Comm comm, const struct gguf_file *f,
			      const struct model_config *cfg, const struct par_tp_config *tcfg,
			      const struct specd_error *early, struct par_tp_model **out,
			      struct specd_error *err)
{
	static const struct model_config mdefaults;
	static const struct par_tp_config tdefaults;
	if (!cfg)
		cfg = &mdefaults;
	if (!tcfg)
		tcfg = &tdefaults;
	int rank = 0, size = 1;
	if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
		return specd_errorf(err, SPECD_MPI, "tensor parallel: not a valid communicator");
	struct par_tp_model *tp = specd_calloc(1, sizeof(*tp));
	if (!tp)
		return specd_errorf(err, SPECD_NOMEM, "tensor parallel: out of memory");
	tp->hook = (struct model_comm){.allreduce_sum = hook_allreduce, .maxloc = hook_maxloc,
				       .gather = hook_gather, .user = tp,
				       .rank = (uint32_t)rank, .size = (uint32_t)size,
				       .device_memory = tcfg->nccl};
	struct model_config mc = *cfg;
	mc.comm = size > 1 ? &tp->hook : NULL;

	/* Every rank reaches the communicator and the vote below even when its own load
	 * failed, so a bad file is one clear error everywhere, never a hang. */
	struct specd_error load_err;
	specd_error_clear(&load_err);
	enum specd_status load_st = SPECD_OK;
	if (early)
		load_st = specd_errorf(&load_err, early->code, "%s", early->msg);
	else if (cfg->comm)
		load_st = specd_errorf(&load_err, SPECD_INVAL,
				       "tensor parallel: the model config already has a hook");
	else
		load_st = model_load_gguf(f, &mc, &tp->model, &load_err);
	if (load_st == SPECD_OK) {
		tp->max_batch = model_max_batch(tp->model);
		tp->n_local = model_shard(tp->model)->n_vocab;
		tp->logits = specd_malloc_array((size_t)tp->max_batch * tp->n_local, sizeof(float));
		tp->msg = specd_malloc_array(MSG_WORDS(tp->max_batch), sizeof(uint32_t));
		tp->ids = specd_malloc_array(tp->max_batch, sizeof(uint32_t));
		tp->bcounts = specd_malloc_array((size_t)size, sizeof(size_t));
		tp->bdispls = specd_malloc_array((size_t)size, sizeof(size_t));
		if (!tp->logits || !tp->msg || !tp->ids || !tp->bcounts || !tp->bdispls)
			load_st = specd_errorf(&load_err, SPECD_NOMEM,
					       "tensor parallel: out of memory for buffers");
	}
	struct par_comm_config cc = {
		.deadline_s = tcfg->deadline_s,
		.reduce_floats = tp->model ? (size_t)tp->max_batch * model_hparams(tp->model)->dim
					   : 0,
	};
	enum specd_status st = par_comm_mpi_create(comm, &cc, &tp->comm, err);
	if (st != SPECD_OK)
		goto fail;
	float failed = load_st != SPECD_OK ? 1.0f : 0.0f;
	int32_t who = rank;
	if ((st = par_comm_maxloc(tp->comm, &failed, &who, 1, err)) != SPECD_OK)
		goto fail;
	if (load_st != SPECD_OK) {
		st = specd_errorf(err, load_st, "%s", load_err.msg);
		goto fail;
	}
	if (failed > 0) {
		st = specd_errorf(err, SPECD_INVAL,
				  "tensor parallel: rank %d could not load its shard (its log says why)",
				  who);
		goto fail;
	}
	if (size > 1 && tcfg->nccl && (st = open_nccl(comm, tp, tcfg->device, &cc, err)))
		goto fail;
	*out = tp;
	return SPECD_OK;
fail:
	par_tp_model_destroy(tp);
	return st;
}

enum specd_status par_tp_model_load_gguf(MPI_Comm comm, const struct gguf_file *f,
					 const struct model_config *cfg,
					 const struct par_tp_config *tcfg,
					 struct par_tp_model **out, struct specd_error *err)
{
	return load(comm, f, cfg, tcfg, NULL, out, err);
}

enum specd_status par_tp_model_load_failed(MPI_Comm comm, const struct par_tp_config *tcfg,
					   const struct specd_error *why, struct specd_error *err)
{
	struct par_tp_model *tp = NULL;
	return load(comm, NULL, NULL, tcfg, why, &tp, err);
}

enum specd_status par_tp_model_load(MPI_Comm comm, const char *path,
				    const struct model_config *cfg,
				    const struct par_tp_config *tcfg,
				    struct par_tp_model **out, struct specd_error *err)
{
	struct gguf_file *f = NULL;
	struct specd_error open_err;
	specd_error_clear(&open_err);
	/* A rank that cannot open the file still takes part in the vote. */
	enum specd_status ost = model_file_open(path, &f, &open_err);
	struct par_tp_model *tp = NULL;
	struct specd_error inner;
	specd_error_clear(&inner);
	enum specd_status st = load(comm, f, cfg, tcfg, ost != SPECD_OK ? &open_err : NULL, &tp,
				    &inner);
	if (st != SPECD_OK) {
		gguf_close(f);
		return specd_errorf(err, st, "%s: %s", path, inner.msg);
	}
	tp->owned_file = f;
	*out = tp;
	return SPECD_OK;
}

struct model *par_tp_model_get(struct par_tp_model *tp)
{
	return tp->model;
}

struct par_comm *par_tp_comm(struct par_tp_model *tp)
{
	return tp->comm;
}

int par_tp_rank(const struct par_tp_model *tp)
{
	return tp->comm->rank;
}

int par_tp_size(const struct par_tp_model *tp)
{
	return tp->comm->size;
}

uint32_t par_tp_local_vocab(const struct par_tp_model *tp)
{
	return tp->n_local;
}

enum specd_status par_tp_argmax(struct par_tp_model *tp, const float *logits, uint32_t rows,
				uint32_t *out, struct specd_error *err)
{
	specd_error_clear(&tp->comm_err);
	return with_comm(tp, model_shard_argmax(tp->model, logits, rows, out, err), err);
}

enum specd_status par_tp_gather_logits(struct par_tp_model *tp, const float *logits,
				       uint32_t rows, float *full, struct specd_error *err)
{
	specd_error_clear(&tp->comm_err);
	return with_comm(tp, model_shard_gather_logits(tp->model, logits, rows, full, err), err);
}

/* ---- leader-driven ---- */

static enum specd_status leader_only(const struct par_tp_model *tp, const char *what,
				     struct specd_error *err)
{
	if (tp->comm->rank == 0)
		return SPECD_OK;
	return specd_errorf(err, SPECD_INVAL, "%s: leader (rank 0) only, called on rank %d",
			    what, tp->comm->rank);
}

/* Both sides of one forward once the batch is known everywhere: the shard's forward,
 * then the output the leader asked for. On followers b's outputs are NULL. */
static enum specd_status run_forward(struct par_tp_model *tp, const struct model_batch *b,
				     enum par_tp_want want, uint32_t *ids, float *full,
				     struct specd_error *err)
{
	struct model_batch local = *b;
	local.logits = want != PAR_TP_WANT_NONE ? tp->logits : NULL;
	local.ids = NULL; /* a shard's argmax is model_shard_argmax's, below */
	enum specd_status st = model_forward(tp->model, &local, err);
	uint32_t rows = b->n_out - b->n_hidden_only; /* outputs with logits */
	if (st != SPECD_OK || rows == 0)
		return st;
	if (want == PAR_TP_WANT_ARGMAX)
		return model_shard_argmax(tp->model, tp->logits, rows, ids, err);
	if (want == PAR_TP_WANT_LOGITS)
		return model_shard_gather_logits(tp->model, tp->logits, rows, full, err);
	return SPECD_OK;
}

enum specd_status par_tp_step(struct par_tp_model *tp, const struct model_batch *b,
			      enum par_tp_want want, uint32_t *ids, struct specd_error *err)
{
	enum specd_status st = leader_only(tp, "tensor-parallel step", err);
	if (st != SPECD_OK)
		return st;
	if (want > PAR_TP_WANT_LOGITS || (want == PAR_TP_WANT_ARGMAX && b->n_out && !ids) ||
	    (want == PAR_TP_WANT_LOGITS && b->n_out && !b->logits))
		return specd_errorf(err, SPECD_INVAL,
				    "tensor-parallel step: output %d without its buffer", (int)want);
	/* Checked here, before the followers hear of it: a batch the leader's forward
	 * would refuse after they started would leave them in a collective. (The ids are
	 * this call's output, not the shard's.) */
	struct model_batch checked = *b;
	checked.ids = NULL;
	if ((st = model_batch_check(tp->model, &checked, err)) != SPECD_OK)
		return st;
	specd_error_clear(&tp->comm_err);
	if (tp->comm->size > 1) {
		uint32_t n = b->n_tokens;
		struct tp_hdr h = {.op = TP_OP_FORWARD, .n_tokens = n, .n_out = b->n_out,
				   .want = want, .tree = b->parent != NULL,
				   .arg = b->n_hidden_only};
		uint32_t *w = tp->msg;
		memcpy(w, b->tokens, n * sizeof(uint32_t));
		memcpy(w + n, b->slots, n * sizeof(uint32_t));
		memcpy(w + 2 * n, b->pos, n * sizeof(uint32_t));
		if (b->parent)
			memcpy(w + 3 * n, b->parent, n * sizeof(uint32_t));
		if (b->n_out) /* a prefill has no outputs, and no out_idx */
			memcpy(w + 4 * n, b->out_idx, b->n_out * sizeof(uint32_t));
		if ((st = par_comm_bcast(tp->comm, &h, sizeof(h), 0, err)) != SPECD_OK ||
		    (st = par_comm_bcast(tp->comm, w, (4 * (size_t)n + b->n_out) * sizeof(uint32_t),
					 0, err)) != SPECD_OK)
			return after_hdr(tp, st);
	}
	st = run_forward(tp, b, want, ids, b->logits, err);
	return after_hdr(tp, with_comm(tp, st, err));
}

static enum specd_status send_hdr(struct par_tp_model *tp, const struct tp_hdr *h,
				  struct specd_error *err)
{
	if (tp->comm->size == 1)
		return SPECD_OK;
	struct tp_hdr copy = *h;
	return par_comm_bcast(tp->comm, &copy, sizeof(copy), 0, err);
}

enum specd_status par_tp_truncate(struct par_tp_model *tp, uint32_t slot, uint32_t len,
				  struct specd_error *err)
{
	enum specd_status st = leader_only(tp, "tensor-parallel truncate", err);
	if (st != SPECD_OK)
		return st;
	struct kv_cache *kv = model_kv(tp->model);
	if (slot >= kv_n_slots(kv) || len > kv_len(kv, slot))
		return specd_errorf(err, SPECD_INVAL, "truncate slot %u to %u rows: %s", slot, len,
				    slot >= kv_n_slots(kv) ? "no such slot" : "longer than it is");
	struct tp_hdr h = {.op = TP_OP_TRUNCATE, .slot = slot, .arg = len};
	if ((st = send_hdr(tp, &h, err)) != SPECD_OK)
		return after_hdr(tp, st);
	if ((st = kv_truncate(kv, slot, len)) != SPECD_OK)
		return after_hdr(tp, specd_errorf(err, st, "truncate slot %u to %u rows failed",
						  slot, len));
	return SPECD_OK;
}

enum specd_status par_tp_compact(struct par_tp_model *tp, uint32_t slot, uint32_t base,
				 const uint32_t *rows, uint32_t n, struct specd_error *err)
{
	enum specd_status st = leader_only(tp, "tensor-parallel compact", err);
	if (st != SPECD_OK)
		return st;
	struct kv_cache *kv = model_kv(tp->model);
	if (n > MSG_WORDS(tp->max_batch) || (n && !rows) || slot >= kv_n_slots(kv) ||
	    base > kv_len(kv, slot))
		return specd_errorf(err, SPECD_INVAL, "compact slot %u: %u rows from %u", slot, n,
				    base);
	for (uint32_t i = 0; i < n; i++) {
		if (rows[i] < base || rows[i] >= kv_len(kv, slot) || (i && rows[i] <= rows[i - 1]))
			return specd_errorf(err, SPECD_INVAL,
					    "compact slot %u: row %u (%u) is not increasing in "
					    "%u..%u", slot, i, rows[i], base, kv_len(kv, slot) - 1);
	}
	struct tp_hdr h = {.op = TP_OP_COMPACT, .n_tokens = n, .slot = slot, .arg = base};
	if ((st = send_hdr(tp, &h, err)) != SPECD_OK)
		return after_hdr(tp, st);
	if (tp->comm->size > 1 && n) {
		memcpy(tp->msg, rows, n * sizeof(uint32_t));
		if ((st = par_comm_bcast(tp->comm, tp->msg, n * sizeof(uint32_t), 0, err)))
			return after_hdr(tp, st);
	}
	if ((st = kv_compact(kv, slot, base, rows, n)) != SPECD_OK)
		return after_hdr(tp, specd_errorf(err, st, "compact slot %u failed", slot));
	return SPECD_OK;
}

enum specd_status par_tp_stop(struct par_tp_model *tp, struct specd_error *err)
{
	enum specd_status st = leader_only(tp, "tensor-parallel stop", err);
	if (st != SPECD_OK)
		return st;
	struct tp_hdr h = {.op = TP_OP_STOP};
	return send_hdr(tp, &h, err);
}

static enum specd_status follow_forward(struct par_tp_model *tp, const struct tp_hdr *h,
					struct specd_error *err)
{
	uint32_t n = h->n_tokens;
	if (n == 0 || n > tp->max_batch || h->n_out > n || h->arg > h->n_out ||
	    h->want > PAR_TP_WANT_LOGITS)
		return specd_errorf(err, SPECD_PROTO,
				    "tensor-parallel step from the leader: %u tokens, %u outputs",
				    n, h->n_out);
	uint32_t *w = tp->msg;
	enum specd_status st = par_comm_bcast(tp->comm, w, (4 * (size_t)n + h->n_out) *
							   sizeof(uint32_t), 0, err);
	if (st != SPECD_OK)
		return st;
	struct model_batch b = {
		.n_tokens = n,
		.tokens = w,
		.slots = w + n,
		.pos = w + 2 * n,
		.parent = h->tree ? (const int32_t *)(const void *)(w + 3 * n) : NULL,
		.n_out = h->n_out,
		.out_idx = w + 4 * n,
		.n_hidden_only = h->arg,
	};
	specd_error_clear(&tp->comm_err);
	st = run_forward(tp, &b, (enum par_tp_want)h->want, tp->ids, NULL, err);
	return with_comm(tp, st, err);
}

static enum specd_status follow(struct par_tp_model *tp, struct specd_error *err)
{
	struct kv_cache *kv = model_kv(tp->model);
	for (;;) {
		struct tp_hdr h;
		enum specd_status st = par_comm_bcast_idle(tp->comm, &h, sizeof(h), 0, err);
		if (st != SPECD_OK)
			return st;
		switch (h.op) {
		case TP_OP_FORWARD:
			st = follow_forward(tp, &h, err);
			break;
		case TP_OP_TRUNCATE:
			st = kv_truncate(kv, h.slot, h.arg);
			if (st != SPECD_OK)
				specd_errorf(err, st, "truncate slot %u to %u rows failed on rank %d",
					     h.slot, h.arg, tp->comm->rank);
			break;
		case TP_OP_COMPACT:
			if (h.n_tokens > MSG_WORDS(tp->max_batch))
				return specd_errorf(err, SPECD_PROTO, "compact of %u rows", h.n_tokens);
			if (h.n_tokens &&
			    (st = par_comm_bcast(tp->comm, tp->msg, h.n_tokens * sizeof(uint32_t), 0,
						 err)) != SPECD_OK)
				return st;
			st = kv_compact(kv, h.slot, h.arg, tp->msg, h.n_tokens);
			if (st != SPECD_OK)
				specd_errorf(err, st, "compact slot %u failed on rank %d", h.slot,
					     tp->comm->rank);
			break;
		case TP_OP_STOP:
			return SPECD_OK;
		default:
			return specd_errorf(err, SPECD_PROTO, "tensor parallel: unknown operation %d "
					    "from the leader", h.op);
		}
		if (st != SPECD_OK)
			return st;
	}
}

enum specd_status par_tp_follow(struct par_tp_model *tp, struct specd_error *err)
{
	if (tp->comm->rank == 0)
		return specd_errorf(err, SPECD_INVAL, "par_tp_follow: not on the leader");
	/* A shard leaves the loop only at the leader's stop: anything else is out of step. */
	return after_hdr(tp, follow(tp, err));
}

void par_tp_abort(struct par_tp_model *tp, int code)
{
	par_comm_abort(tp->comm, code);
}
