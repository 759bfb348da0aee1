/* The leader's serving life: method choice, the generation stack, the socket server
 * and the scheduler; see leader.h. */
#include "leader.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/log.h"
#include "drafters/remote.h"
#include "model/kv.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/shard.h"
#include "parallel/census.h"
#include "parallel/control.h"
#include "parallel/mpi_check.h"
#include "runtime.h"
#include "sched.h"
#include "selector/calibrate.h"
#include "server.h"
#include "signals.h"

/* How long replies already queued may take to reach clients at shutdown. */
#define LEADER_FLUSH_S 5.0

/* Start-up calibration: how long it may take, and how long the leader waits for the
 * draft rank's figures before deciding without them. */
#define CAL_BUDGET_S 2.0
#define CAL_WAIT_S 120.0
enum { TAG_CAL_GO = 1601, TAG_CAL_RESULT = 1602 };

/* The draft side's calibration, sent to the leader as bytes. */
struct draft_cal {
	int32_t status; /* SPECD_OK: methods[] holds what was measured */
	struct sel_method_in methods[DRAFT_METHOD_COUNT];
};

/* The bytes of a method's weights on disk: a file, or an EAGLE folder's tensors. */
static uint64_t file_bytes(const char *path)
{
	struct stat sb;
	char inner[4096];

	if (!path || stat(path, &sb) != 0)
		return 0;
	if (S_ISDIR(sb.st_mode)) {
		snprintf(inner, sizeof(inner), "%s/model.safetensors", path);
		return stat(inner, &sb) == 0 && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
	}
	return S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
}

static struct draft_eagle_config eagle_of(const struct cfg_cluster *cfg)
{
	return (struct draft_eagle_config){
		.path = cfg->eagle_heads,
		.static_tree = cfg->eagle_tree == 1,
		.width = (uint32_t)cfg->eagle_width,
		.depth = (uint32_t)cfg->eagle_depth,
	};
}

static uint32_t k_max_of(const struct cfg_cluster *cfg)
{
	return cfg->spec_tokens_auto ? (uint32_t)cfg->max_speculative_tokens
				     : (uint32_t)cfg->num_speculative_tokens;
}

/* Calibration needs something to decide: a method or a K left to the selector. */
static bool will_measure(const struct cfg_cluster *cfg)
{
	return cfg->measure && (cfg->method_auto || cfg->spec_tokens_auto);
}

/* target.threads / draft.threads as a count (auto: par_auto_threads). */
static uint32_t target_threads(const struct cluster *c)
{
	return c->cfg->target_threads_auto ? par_auto_threads() : (uint32_t)c->cfg->target_threads;
}

static uint32_t draft_threads(const struct cluster *c)
{
	return c->cfg->draft_threads_auto ? par_auto_threads() : (uint32_t)c->cfg->draft_threads;
}

/* A local, whole target with one small slot on this rank's device (and its threads and
 * activations: timed as it will serve): enough for timed forwards of up to k_max + 1
 * tokens and for checking drafters against it. */
static enum specd_status open_scratch(const struct cluster *c, enum cfg_device dev,
				      uint32_t threads, enum kern_act act, struct runtime *rt,
				      struct specd_error *err)
{
	uint32_t k = k_max_of(c->cfg);
	struct runtime_config rc = {
		.model_path = c->cfg->target_model,
		.device = dev,
		.dtype = c->cfg->target_dtype, /* timed as it will serve */
		.device_index = c->device_index,
		.threads = threads,
		.act = act,
		.n_slots = 1,
		.max_ctx = 64 + 2 * (k + 1),
		.batch_tokens = k + 1,
		.method = DRAFT_METHOD_NONE,
	};
	return runtime_open(&rc, rt, err);
}

/* Times each configured, built drafter where it will run (this rank). A drafter that
 * does not fit the target is reported incompatible, with the reason. */
static void calibrate_drafters(const struct cluster *c, const struct runtime *rt,
			       struct sel_method_in *methods)
{
	const struct cfg_cluster *cfg = c->cfg;
	for (int m = DRAFT_METHOD_NGRAM; m < DRAFT_METHOD_COUNT; m++) {
		if (!draft_ops_for((enum draft_method)m) ||
		    (m == DRAFT_METHOD_DRAFT_MODEL && !cfg->draft_model) ||
		    (m == DRAFT_METHOD_EAGLE && !cfg->eagle_heads) ||
		    (m == DRAFT_METHOD_MEDUSA && !cfg->medusa_heads))
			continue;
		struct draft_config dc = {
			.method = (enum draft_method)m,
			.k_max = k_max_of(cfg),
			.n_slots = 1,
			.n_ctx = kv_n_ctx(model_kv(rt->model)),
			.target = rt->model,
			.prompt_lookup_min = (uint32_t)cfg->prompt_lookup_min,
			.prompt_lookup_max = (uint32_t)cfg->prompt_lookup_max,
			.draft_path = cfg->draft_model,
			.kern = rt->kern,
			.heads_path = cfg->medusa_heads,
			.eagle = eagle_of(cfg),
		};
		struct specd_error err;
		specd_error_clear(&err);
		enum specd_status st = sel_calibrate_drafter(&dc, &methods[m], &err);
		if (st == SPECD_INVAL)
			snprintf(methods[m].incompatible, sizeof(methods[m].incompatible), "%.*s",
				 (int)sizeof(methods[m].incompatible) - 1, err.msg);
		else if (st != SPECD_OK)
			LOG_WARN("cannot time the %s drafter: %s", draft_method_name((enum draft_method)m),
				 err.msg);
	}
}

/* The dedicated draft rank: waits for the leader's word (its own calibration is
 * done, so the two do not share the CPU), times its drafters, sends the figures. */
static void draft_rank_calibrate(const struct cluster *c)
{
	int32_t go = 0;
	MPI_Request req;
	if (PAR_MPI(MPI_Irecv(&go, 1, MPI_INT32_T, 0, TAG_CAL_GO, MPI_COMM_WORLD, &req)) != SPECD_OK ||
	    par_wait_request(&req, MPI_STATUS_IGNORE, -1) != SPECD_OK)
		return;
	struct draft_cal cal;
	memset(&cal, 0, sizeof(cal));
	struct runtime rt;
	struct specd_error err;
	specd_error_clear(&err);
	cal.status = open_scratch(c, c->cfg->draft_device, draft_threads(c),
				  c->cfg->draft_activations, &rt, &err);
	if (cal.status == SPECD_OK) {
		calibrate_drafters(c, &rt, cal.methods);
		runtime_close(&rt);
	} else {
		LOG_WARN("draft rank: cannot open the target to time the drafters: %s", err.msg);
	}
	PAR_MPI(MPI_Send(&cal, (int)sizeof(cal), MPI_BYTE, 0, TAG_CAL_RESULT, MPI_COMM_WORLD));
}

/* The leader's half of drafter calibration on a dedicated rank: false when the
 * figures did not come (then the drafters' times are estimated). */
static bool receive_draft_cal(const struct cluster *c, struct draft_cal *cal)
{
	int draft = par_layout_draft_rank(&c->layout);
	int32_t go = 1;
	MPI_Request req;
	if (PAR_MPI(MPI_Send(&go, 1, MPI_INT32_T, draft, TAG_CAL_GO, MPI_COMM_WORLD)) != SPECD_OK ||
	    PAR_MPI(MPI_Irecv(cal, (int)sizeof(*cal), MPI_BYTE, draft, TAG_CAL_RESULT,
			      MPI_COMM_WORLD, &req)) != SPECD_OK)
		return false;
	if (par_wait_request(&req, MPI_STATUS_IGNORE, CAL_WAIT_S) != SPECD_OK) {
		MPI_Cancel(&req);
		MPI_Wait(&req, MPI_STATUS_IGNORE);
		LOG_WARN("the draft rank sent no calibration within %.0f s", CAL_WAIT_S);
		return false;
	}
	return cal->status == SPECD_OK;
}

/* The file holding method m's weights; NULL for prompt lookup, or when not configured. */
static const char *weights_of(const struct cfg_cluster *cfg, enum draft_method m)
{
	switch (m) {
	case DRAFT_METHOD_DRAFT_MODEL: return cfg->draft_model;
	case DRAFT_METHOD_EAGLE: return cfg->eagle_heads;
	case DRAFT_METHOD_MEDUSA: return cfg->medusa_heads;
	default: return NULL;
	}
}

/* The target's weights (as target.dtype holds its unquantised matrices), vocabulary
 * and width from its file's header (no weights are read): what the selector counts
 * against memory must not depend on whether it measures or the rule table decides.
 * False when the file does not open (the load reports why). */
static bool target_shape(const char *path, enum cfg_dtype dtype, uint64_t *bytes,
			 uint32_t *n_vocab, uint32_t *dim)
{
	size_t held = dtype == CFG_DTYPE_F32 ? 4 : dtype == CFG_DTYPE_AUTO ? 0 : 2;
	struct gguf_file *f = NULL;
	struct specd_error err;
	if (model_file_open(path, &f, &err) != SPECD_OK)
		return false;
	uint64_t sum = 0;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		bool converted = held && t->n_dims == 2 &&
				 (t->type == KERN_F32 || t->type == KERN_F16 || t->type == KERN_BF16);
		sum += converted ? t->n_elements * held : t->nbytes;
	}
	const struct gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
	bool ok = emb && emb->n_dims == 2 && emb->ne[0] <= UINT32_MAX && emb->ne[1] <= UINT32_MAX;
	if (ok) {
		*bytes = sum;
		*dim = (uint32_t)emb->ne[0];
		*n_vocab = (uint32_t)emb->ne[1];
	}
	gguf_close(f);
	return ok;
}

/* The constraints, placement and model support: everything but measurements. */
static void base_inputs(const struct cluster *c, struct sel_inputs *in)
{
	const struct cfg_cluster *cfg = c->cfg;
	memset(in, 0, sizeof(*in));
	in->method_forced = !cfg->method_auto;
	in->method = cfg->method;
	in->k_forced = cfg->spec_tokens_auto ? 0 : (uint32_t)cfg->num_speculative_tokens;
	in->k_max = k_max_of(cfg);
	in->target_speedup = cfg->target_speedup;
	in->low_memory = cfg->low_memory;
	in->max_draft_memory = cfg->max_draft_memory;
	in->dedicated_draft = c->layout.dedicated_draft;
	in->ngram_in_leader = true; /* stack_config's local_ngram */
	in->pipeline = cfg->pipeline;
	in->sampling = cfg->expect_sampling;
	/* drafters/remote.h: whole q rows only; a sampling job's draft is never greedy. */
	in->transport_built[SEL_TRANSPORT_FULL] = true;
	const struct par_rank_info *where =
		&c->ranks[c->layout.dedicated_draft ? par_layout_draft_rank(&c->layout) : 0];
	enum cfg_device dev = c->layout.dedicated_draft ? cfg->draft_device : cfg->target_device;
	in->draft_memory_free = dev == CFG_DEVICE_CUDA ? where->device_mem_free
						       : where->host_mem_free;
	in->link = (struct sel_link){
		.measured = c->draft_probe.measured,
		.latency_s = c->draft_probe.latency_s,
		.bandwidth = c->draft_probe.bandwidth,
	};
	for (int m = DRAFT_METHOD_NGRAM; m < DRAFT_METHOD_COUNT; m++) {
		struct sel_method_in *mi = &in->methods[m];
		const char *weights = weights_of(cfg, (enum draft_method)m);
		mi->built = draft_ops_for((enum draft_method)m) != NULL;
		mi->configured = m == DRAFT_METHOD_NGRAM || weights != NULL;
		mi->memory_bytes = file_bytes(weights);
	}
	uint64_t target_bytes = 0;
	if (!target_shape(cfg->target_model, cfg->target_dtype, &target_bytes, &in->n_vocab,
			  &in->dim))
		return;
	/* A drafter in the leader shares its memory with the leader's target shard. */
	if (!c->layout.dedicated_draft) {
		uint64_t shard = target_bytes / (uint64_t)cfg->tensor_parallel;
		in->draft_memory_free = in->draft_memory_free > shard ? in->draft_memory_free - shard
								      : 0;
	}
	/* EAGLE's draft layer needs the target's embedding and LM head beside it (16-bit). */
	if (in->methods[DRAFT_METHOD_EAGLE].configured)
		in->methods[DRAFT_METHOD_EAGLE].memory_bytes +=
			2ull * in->n_vocab * in->dim * sizeof(uint16_t);
}

/* The leader's measurements: the target's forward times (rescaled to the target
 * group), the drafters' step times where they will run, model support. False when
 * the target could not be timed: the rule table decides then. */
static bool leader_calibrate(const struct cluster *c, struct sel_inputs *in)
{
	const struct cfg_cluster *cfg = c->cfg;
	struct runtime rt;
	struct specd_error err;
	specd_error_clear(&err);
	double t0 = specd_now();
	enum specd_status st = open_scratch(c, cfg->target_device, target_threads(c),
					    cfg->target_activations, &rt, &err);
	if (st == SPECD_OK)
		st = sel_calibrate_target(rt.model, 0, in->k_max, CAL_BUDGET_S, in->t_verify_s, &err);
	if (st != SPECD_OK) {
		LOG_WARN("cannot time the target (%s): the rule table decides", err.msg);
		runtime_close(&rt);
		if (c->layout.dedicated_draft) {
			struct draft_cal cal;
			receive_draft_cal(c, &cal); /* the draft rank waits for the word */
		}
		return false;
	}
	/* Read now: rt (and its model) closes below. The vocabulary and width came from
	 * the file's header (base_inputs). */
	uint32_t n_layers = model_hparams(rt.model)->n_layers;
	uint64_t target_bytes = model_resident_bytes(rt.model);
	struct sel_method_in measured[DRAFT_METHOD_COUNT];
	memset(measured, 0, sizeof(measured));
	bool have = false;
	if (c->layout.dedicated_draft) {
		runtime_close(&rt);
		struct draft_cal cal;
		if ((have = receive_draft_cal(c, &cal)))
			memcpy(measured, cal.methods, sizeof(measured));
	} else {
		calibrate_drafters(c, &rt, measured);
		have = true;
		runtime_close(&rt);
	}
	for (int m = DRAFT_METHOD_NGRAM; have && m < DRAFT_METHOD_COUNT; m++) {
		struct sel_method_in *mi = &in->methods[m];
		memcpy(mi->incompatible, measured[m].incompatible, sizeof(mi->incompatible));
		if (!measured[m].timed)
			continue;
		mi->timed = true;
		mi->t_draft_fixed_s = measured[m].t_draft_fixed_s;
		mi->t_draft_token_s = measured[m].t_draft_token_s;
		/* What the drafter holds once made (its cache too) over its file: on top of
		 * what base_inputs counted beside the file (EAGLE's target embedding). */
		uint64_t file = file_bytes(weights_of(cfg, (enum draft_method)m));
		if (measured[m].memory_bytes > file)
			mi->memory_bytes += measured[m].memory_bytes - file;
	}
	/* Not timed: a step of a draft model costs what its weights cost to read, as the
	 * target's does; heads one layer's worth. */
	double per_byte = target_bytes ? in->t_verify_s[1] / (double)target_bytes : 0;
	for (int m = DRAFT_METHOD_DRAFT_MODEL; m < DRAFT_METHOD_COUNT; m++) {
		struct sel_method_in *mi = &in->methods[m];
		if (!mi->timed)
			mi->t_draft_token_s = per_byte * (double)mi->memory_bytes;
	}
	sel_scale_for_tp(in, (uint32_t)cfg->tensor_parallel, n_layers,
			 &(struct sel_link){.measured = c->tp_probe.measured,
					    .latency_s = c->tp_probe.latency_s,
					    .bandwidth = c->tp_probe.bandwidth});
	in->calibrated = !c->layout.dedicated_draft || in->link.measured;
	LOG_INFO("calibration in %.2f s: target %.2f ms for 1 token, %.2f ms for %u%s",
		 specd_now() - t0, 1e3 * in->t_verify_s[1], 1e3 * sel_verify_time(in, in->k_max + 1),
		 in->k_max + 1, cfg->tensor_parallel > 1 ? " (rescaled to the target group)" : "");
	for (int m = DRAFT_METHOD_NGRAM; m < DRAFT_METHOD_COUNT; m++) {
		const struct sel_method_in *mi = &in->methods[m];
		if (mi->configured && mi->built && !mi->incompatible[0])
			LOG_INFO("calibration: %s %s %.3f ms + %.3f ms a token, %.1f MiB",
				 draft_method_name((enum draft_method)m),
				 mi->timed ? "drafts in" : "estimated at", 1e3 * mi->t_draft_fixed_s,
				 1e3 * mi->t_draft_token_s, (double)mi->memory_bytes / (1024.0 * 1024.0));
	}
	return true;
}

/* Every rank, first thing: the leader measures and decides (the dedicated draft rank
 * times its drafters for it), and every rank gets the decision: the method, K (0 for
 * none) and the first reason. Collective over MPI_COMM_WORLD. */
/* Whether the stack is sized for the largest K so that the online selector (adapt.h) may
 * raise the cluster's K past the start-up choice: K chosen by measurement, adaptation on.
 * Every rank computes the same from its config and the broadcast decision, so the shards'
 * batch shapes agree. */
static bool stack_widens(const struct cfg_cluster *cfg, const struct sel_decision *d)
{
	return d->method != DRAFT_METHOD_NONE && d->measured && cfg->adapt && cfg->spec_tokens_auto;
}

/* Leader only: whether the dedicated draft rank runs on another machine than the leader
 * (another kernel boot id; host names differ in network namespaces too). Only then can
 * it keep held methods warm for free: on a shared machine the warm-up's memory traffic
 * competes with the target's every step. */
static bool draft_rank_apart(const struct cluster *c)
{
	if (!c->layout.dedicated_draft)
		return false;
	const struct par_rank_info *me = &c->ranks[0];
	const struct par_rank_info *dr = &c->ranks[par_layout_draft_rank(&c->layout)];
	return me->machine[0] && dr->machine[0] && strcmp(me->machine, dr->machine) != 0;
}

/* Leader only: the methods the drafter holds beside the start-up choice, for the online
 * selector to switch between (adapt.h): with `method: auto`, K measured and adaptation
 * on, every other method the start-up decision left open (built, configured,
 * compatible, fitting), best predicted first, while their memory together still fits
 * where the drafter lives (and constraints.max_draft_memory). A method with state to
 * keep per sequence (a draft model's KV: its ops have `warm`) only where a draft rank of
 * its own machine keeps it warm: elsewhere each probe of it would catch it up on the
 * leader's path, which on the emulated cluster cost more than switching could win. */
static uint32_t held_methods(const struct cluster *c)
{
	const struct sel_decision *d = &c->decision;
	const struct sel_inputs *in = &c->sel_in;
	if (!stack_widens(c->cfg, d) || !c->cfg->method_auto)
		return 0;
	bool warm = draft_rank_apart(c);
	double best[DRAFT_METHOD_COUNT] = {0};
	for (uint32_t i = 0; i < d->n_candidates; i++) {
		const struct sel_candidate *cand = &d->candidates[i];
		const struct draft_ops *ops = draft_ops_for(cand->method);
		/* EAGLE's warm-up is its catch-up on the rows shown anyway (one layer). */
		if (!cand->excluded[0] && cand->method != DRAFT_METHOD_NONE && ops &&
		    (warm || !ops->warm || ops->wants_history) &&
		    cand->tokens_per_s > best[cand->method])
			best[cand->method] = cand->tokens_per_s;
	}
	uint64_t used = in->methods[d->method].memory_bytes;
	uint64_t room = in->max_draft_memory ? in->max_draft_memory : UINT64_MAX;
	if (in->draft_memory_free && in->draft_memory_free < room)
		room = in->draft_memory_free;
	uint32_t mask = 0;
	for (;;) {
		int pick = -1;
		for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
			if (best[m] > 0 && m != (int)d->method && !(mask & 1u << m) &&
			    (pick < 0 || best[m] > best[pick]))
				pick = m;
		if (pick < 0)
			return mask;
		best[pick] = 0;
		if (used + in->methods[pick].memory_bytes <= room) {
			used += in->methods[pick].memory_bytes;
			mask |= 1u << pick;
		}
	}
}

/* The decision (made on rank 0, broadcast to all): the method, the K the stack is sized
 * for (*k) and the K the cluster starts with (*k_start; the same unless stack_widens). */
static enum specd_status select_method(struct cluster *c, enum draft_method *method, uint32_t *k,
				       uint32_t *k_start, const char **why)
{
	bool measure = will_measure(c->cfg);
	if (c->rank == 0) {
		struct sel_inputs *in = &c->sel_in;
		base_inputs(c, in);
		if (measure)
			leader_calibrate(c, in);
		struct specd_error err;
		specd_error_clear(&err);
		if (sel_decide(in, &c->decision, &err) != SPECD_OK) {
			/* The figures were unusable: decide as if nothing were measured. */
			LOG_WARN("%s: the rule table decides", err.msg);
			in->calibrated = false;
			sel_decide(in, &c->decision, &err);
		}
		sel_decision_log(&c->decision);
	} else if (measure && par_layout_role(&c->layout, c->rank) == PAR_ROLE_DRAFT) {
		draft_rank_calibrate(c);
	}
	/* Everyone waits for the choice without spinning: the leader may be timing. */
	MPI_Request req;
	enum specd_status st = PAR_MPI(MPI_Ibcast(&c->decision, (int)sizeof(c->decision), MPI_BYTE,
						  0, MPI_COMM_WORLD, &req));
	if (st == SPECD_OK)
		st = par_wait_request(&req, MPI_STATUS_IGNORE, -1);
	*method = c->decision.method;
	*k_start = *method == DRAFT_METHOD_NONE ? 0 : c->decision.k;
	*k = stack_widens(c->cfg, &c->decision) && (uint32_t)c->cfg->max_speculative_tokens > *k_start
		     ? (uint32_t)c->cfg->max_speculative_tokens
		     : *k_start;
	*why = c->decision.n_reasons ? c->decision.reasons[0] : "";
	return st;
}

/* What every target rank opens: the same file and shape, so the shards agree. The
 * draft rank opens the same config with its own device, thread count and activations. */
static struct runtime_config stack_config(const struct cluster *c, enum draft_method method,
					  uint32_t k, struct draft_link *link)
{
	const struct cfg_cluster *cfg = c->cfg;
	struct runtime_config rc = {
		.model_path = cfg->target_model,
		.device = cfg->target_device,
		.dtype = cfg->target_dtype,
		.device_index = c->device_index,
		.threads = target_threads(c),
		.act = cfg->target_activations, /* a drafter in the leader computes here too */
		.huge_pages = cfg_huge_pages_wanted(cfg->target_huge_pages),
		.n_slots = (uint32_t)cfg->target_slots,
		.max_ctx = (uint32_t)cfg->target_context,
		.batch_tokens = (uint32_t)cfg->target_batch_tokens,
		.method = method,
		.spec_tokens = k,
		.draft_path = cfg->draft_model,
		.heads_path = cfg->medusa_heads,
		.eagle = eagle_of(cfg),
		.also = c->rank == 0 ? held_methods(c) : 0,
		.local_ngram = true,
		.tp = c->have_target_comm,
		.tp_comm = c->target_comm,
		.draft_link = link,
		.pipeline = cfg->pipeline,
	};
	/* auto (0): the rule table's lengths when it decided, else the drafter's */
	sel_lookup_lengths(&c->decision, cfg->lookup_min_auto ? 0 : (uint32_t)cfg->prompt_lookup_min,
			   cfg->lookup_max_auto ? 0 : (uint32_t)cfg->prompt_lookup_max,
			   &rc.prompt_lookup_min, &rc.prompt_lookup_max);
	return rc;
}

/* Every shard's resident weight bytes to the leader's census (for Status and the log):
 * measured after loading, since that is when slices were mapped or copied. Collective
 * over the target group. The shards come here as soon as they have loaded, the leader
 * only once the draft rank has made its drafter (minutes, for a big draft model on a
 * slow disk): they wait without spinning (DESIGN.md §10), and for as long as it takes,
 * like every rank waiting for the leader. */
static void gather_resident(struct cluster *c, const struct runtime *rt)
{
	uint64_t mine = model_resident_bytes(rt->model);
	int t = c->layout.tensor_parallel;
	uint64_t all[64] = {0};
	MPI_Request req;
	if (c->have_target_comm && t > 1 && t <= 64) {
		if (PAR_MPI(MPI_Igather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0,
					c->target_comm, &req)) == SPECD_OK)
			par_wait_request(&req, MPI_STATUS_IGNORE, -1);
	} else {
		all[0] = mine;
	}
	if (c->rank != 0)
		return;
	for (int r = 0; r < t && r < 64; r++) {
		c->ranks[r].resident_weights = all[r];
		LOG_INFO("rank %d holds %.1f MiB of target weights", r,
			 (double)all[r] / (1024.0 * 1024.0));
	}
}

enum specd_status leader_follow(struct cluster *c)
{
	enum draft_method method;
	uint32_t k, k_start;
	const char *why;
	enum specd_status st = select_method(c, &method, &k, &k_start, &why);
	if (st != SPECD_OK)
		return st;
	struct runtime_config rc = stack_config(c, method, k, NULL);
	struct specd_error err;
	specd_error_clear(&err);
	struct runtime rt;
	st = runtime_open(&rc, &rt, &err);
	if (st != SPECD_OK) {
		LOG_ERROR("cannot load this rank's shard of %s: %s", c->cfg->target_model, err.msg);
		return st;
	}
	LOG_INFO("shard loaded in %.2f s; serving the leader's forwards", rt.load_s);
	gather_resident(c, &rt);
	st = runtime_follow(&rt, &err);
	if (st != SPECD_OK)
		LOG_ERROR("shard: %s", err.msg);
	runtime_close(&rt);
	return st;
}

/* The leader's end of the link to the dedicated draft rank; collective with
 * leader_draft's. */
static enum specd_status draft_link_open(const struct cluster *c, struct draft_link **out)
{
	struct draft_link_config lc = {
		.leader = 0,
		.draft = par_layout_draft_rank(&c->layout),
	};
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = draft_link_create(MPI_COMM_WORLD, &lc, out, &err);
	if (st != SPECD_OK)
		LOG_ERROR("cannot reach the draft rank: %s", err.msg);
	return st;
}

enum specd_status leader_draft(struct cluster *c)
{
	enum draft_method method;
	uint32_t k, k_start;
	const char *why;
	enum specd_status st = select_method(c, &method, &k, &k_start, &why);
	if (st != SPECD_OK)
		return st;
	struct draft_link *link = NULL;
	st = draft_link_open(c, &link);
	if (st != SPECD_OK)
		return st;
	struct runtime_config rc = stack_config(c, method, k, NULL);
	rc.threads = draft_threads(c);
	rc.act = c->cfg->draft_activations;
	rc.huge_pages = cfg_huge_pages_wanted(c->cfg->draft_huge_pages);
	rc.device = c->cfg->draft_device;
	struct specd_error err;
	specd_error_clear(&err);
	LOG_INFO("draft rank: serving the leader's drafting requests");
	st = runtime_serve_draft(&rc, link, &err);
	if (st != SPECD_OK)
		LOG_ERROR("draft rank: %s", err.msg);
	draft_link_destroy(link);
	return st;
}

static bool stop_requested(void *user)
{
	(void)user;
	int sig = sig_take();
	if (sig)
		LOG_INFO("signal %d received: shutting the cluster down", sig);
	return sig != 0;
}

enum specd_status leader_serve(struct cluster *c)
{
	const struct cfg_cluster *cfg = c->cfg;
	enum draft_method method;
	uint32_t k, k_start;
	const char *why;
	if (select_method(c, &method, &k, &k_start, &why) != SPECD_OK)
		return SPECD_MPI;

	/* The draft rank waits for this link whatever happens next; closing it (below,
	 * also after a failed load) releases it. */
	struct draft_link *link = NULL;
	if (c->layout.dedicated_draft && draft_link_open(c, &link) != SPECD_OK)
		return SPECD_MPI;
	struct runtime_config rc = stack_config(c, method, k, link);
	rc.draft_warm = rc.also && draft_rank_apart(c);
	if (rc.also)
		LOG_INFO("the draft rank %s", rc.draft_warm ? "has a machine of its own: it keeps "
			 "the held methods it is not drafting with up to date" : "shares the "
			 "leader's machine (or there is none): the drafter holds only methods "
			 "without state to keep warm");
	struct specd_error err;
	specd_error_clear(&err);
	struct runtime rt;
	enum specd_status st = runtime_open(&rc, &rt, &err);
	bool hidden = st == SPECD_OK && rt.drafter && draft_wants_hidden(rt.drafter);
	/* The draft rank drafts ahead only while no method it holds reads the target's
	 * hidden states: the online selector costs the steps as they will run. */
	if (hidden)
		c->sel_in.pipeline = false;
	if (st == SPECD_OK) {
		for (int m = 0; m < DRAFT_METHOD_COUNT; m++)
			if (rc.also & 1u << m)
				LOG_INFO("drafter also holds %s: the online selector may switch "
					 "to it", draft_method_name((enum draft_method)m));
		/* target.activations as the backend took it; a GPU has no such setting */
		const char *act = kern_cpu_act_of(rt.kern);
		char acts[64] = "";
		if (act) {
			snprintf(acts, sizeof(acts), ", %s activations%s", act,
				 model_huge_bytes(rt.model) ? ", in huge pages" : "");
			LOG_INFO("%u compute thread%s per target rank (target.threads%s)",
				 rc.threads, rc.threads == 1 ? "" : "s",
				 cfg->target_threads_auto ? ": auto, the cores over the ranks "
							    "on this machine" : "");
		}
		LOG_INFO("model %s loaded in %.2f s (%d shard%s, %s weights%s); method %s, K %u "
			 "(%s); drafter %s", cfg->target_model, rt.load_s, cfg->tensor_parallel,
			 cfg->tensor_parallel == 1 ? "" : "s",
			 kern_dtype_name(model_hparams(rt.model)->wtype), acts,
			 draft_method_name(method),
			 k_start,
			 why,
			 !link ? "in the leader"
			 : cfg->pipeline && !hidden ? "on the draft rank, pipelined"
				 : "on the draft rank");
		if (k > k_start)
			LOG_INFO("stack sized for K up to %u: the online selector may raise K past %u",
				 k, k_start);
	} else {
		fprintf(stderr, "specd: cannot load %s: %s\n", cfg->target_model, err.msg);
		draft_link_destroy(link);
		return st;
	}
	gather_resident(c, &rt);

	struct srv_config sc = {
		.listen = cfg->listen,
		.auth_token = cfg->auth_token,
		.limits = cfg->limits,
	};
	struct srv *srv = NULL;
	struct sched *sched = NULL;
	if ((st = srv_create(&sc, &srv, &err)) != SPECD_OK) {
		fprintf(stderr, "specd: %s\n", err.msg);
		goto done;
	}
	struct sched_config schc = {
		.srv = srv,
		.target = rt.model,
		.tok = rt.tok,
		.file = rt.file,
		.engine = rt.engine,
		.n_slots = (uint32_t)cfg->target_slots,
		.limits = cfg->limits,
		.method = draft_method_name(method),
		.spec_tokens = k,
		.cluster = c,
		.adapt = {
			.in = &c->sel_in, .method = method,
			.methods = rc.also, .drafter = rt.drafter,
			.k = k, .k_start = k_start, .k_fixed = !cfg->spec_tokens_auto,
			.enabled = cfg->adapt,
			.interval = (uint32_t)cfg->adapt_interval,
			.hysteresis = cfg->adapt_hysteresis,
		},
	};
	if ((st = sched_create(&schc, &sched, &err)) != SPECD_OK) {
		fprintf(stderr, "specd: %s\n", err.msg);
		goto done;
	}
	srv_set_status(srv, sched_status, sched);
	if ((st = srv_start(srv)) != SPECD_OK) {
		fprintf(stderr, "specd: cannot start the server thread\n");
		goto done;
	}
	printf("specd: serving on %s (method %s, K %u)\n", srv_address(srv),
	       draft_method_name(method), k_start);
	fflush(stdout);
	st = sched_run(sched, stop_requested, NULL);
	srv_stop(srv, LEADER_FLUSH_S);
done:
	sched_destroy(sched);
	srv_destroy(srv);
	runtime_close(&rt);
	draft_link_destroy(link); /* the draft rank stops before the shutdown word */
	return st;
}
