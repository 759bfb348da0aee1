/* The leader's serving life: method choice, the generation stack, the socket server
 * and the scheduler; see leader.h. */
#include "leader.h"

#include <stdio.h>

#include "common/log.h"
#include "drafters/remote.h"
#include "model/shard.h"
#include "parallel/mpi_check.h"
#include "runtime.h"
#include "sched.h"
#include "selector/rule_table.h"
#include "server.h"
#include "signals.h"

/* How long replies already queued may take to reach clients at shutdown. */
#define LEADER_FLUSH_S 5.0

/* The method and K before anything is measured: what the file forces, or the origin
 * rule table's choice among what is configured (DESIGN.md §6). */
static void choose_method(const struct cfg_cluster *cfg, enum draft_method *method,
			  uint32_t *k, const char **why)
{
	struct sel_rule_input in = {
		.eagle_supported = false, /* no EAGLE drafter is built yet */
		.draft_available = cfg->draft_model != NULL,
		.low_memory = cfg->low_memory,
		.target_speedup = cfg->target_speedup,
	};
	struct sel_rule_choice rule = sel_rule_table(&in);
	if (cfg->method_auto) {
		*method = rule.method;
		*why = rule.reason;
	} else {
		*method = cfg->method;
		*why = "forced by speculation.method";
	}
	*k = cfg->spec_tokens_auto ? (uint32_t)rule.spec_tokens
				   : (uint32_t)cfg->num_speculative_tokens;
	if (*method == DRAFT_METHOD_NONE)
		*k = 0;
}

/* What every target rank opens: the same file and shape, so the shards agree. The
 * draft rank opens the same config with its own thread count. */
static struct runtime_config stack_config(const struct cluster *c, enum draft_method method,
					  uint32_t k, struct draft_link *link)
{
	const struct cfg_cluster *cfg = c->cfg;
	struct runtime_config rc = {
		.model_path = cfg->target_model,
		.threads = (uint32_t)cfg->target_threads,
		.n_slots = (uint32_t)cfg->target_slots,
		.max_ctx = (uint32_t)cfg->target_context,
		.batch_tokens = (uint32_t)cfg->target_batch_tokens,
		.method = method,
		.spec_tokens = k,
		.prompt_lookup_min = (uint32_t)cfg->prompt_lookup_min,
		.prompt_lookup_max = (uint32_t)cfg->prompt_lookup_max,
		.draft_path = cfg->draft_model,
		.tp = c->have_target_comm,
		.tp_comm = c->target_comm,
		.draft_link = link,
		.pipeline = cfg->pipeline,
	};
	return rc;
}

/* Every shard's resident weight bytes to the leader's census (for Status and the log):
 * measured after loading, since that is when slices were mapped or copied. Collective
 * over the target group. */
static void gather_resident(struct cluster *c, const struct runtime *rt)
{
	uint64_t mine = model_resident_bytes(rt->model);
	int t = c->layout.tensor_parallel;
	uint64_t all[64] = {0};
	if (c->have_target_comm && t > 1 && t <= 64)
		PAR_MPI(MPI_Gather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, c->target_comm));
	else
		all[0] = mine;
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
	uint32_t k;
	const char *why;
	choose_method(c->cfg, &method, &k, &why);
	struct runtime_config rc = stack_config(c, method, k, NULL);
	struct specd_error err;
	specd_error_clear(&err);
	struct runtime rt;
	enum specd_status st = runtime_open(&rc, &rt, &err);
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
	uint32_t k;
	const char *why;
	choose_method(c->cfg, &method, &k, &why);
	struct draft_link *link = NULL;
	enum specd_status st = draft_link_open(c, &link);
	if (st != SPECD_OK)
		return st;
	struct runtime_config rc = stack_config(c, method, k, NULL);
	rc.threads = (uint32_t)c->cfg->draft_threads;
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
	uint32_t k;
	const char *why;
	choose_method(cfg, &method, &k, &why);

	/* The draft rank waits for this link whatever happens next; closing it (below,
	 * also after a failed load) releases it. */
	struct draft_link *link = NULL;
	if (c->layout.dedicated_draft && draft_link_open(c, &link) != SPECD_OK)
		return SPECD_MPI;
	struct runtime_config rc = stack_config(c, method, k, link);
	struct specd_error err;
	specd_error_clear(&err);
	struct runtime rt;
	enum specd_status st = runtime_open(&rc, &rt, &err);
	if (st == SPECD_OK) {
		LOG_INFO("model %s loaded in %.2f s (%d shard%s); method %s, K %u (%s); drafter %s",
			 cfg->target_model, rt.load_s, cfg->tensor_parallel,
			 cfg->tensor_parallel == 1 ? "" : "s", draft_method_name(method), k, why,
			 link ? (cfg->pipeline ? "on the draft rank, pipelined" : "on the draft rank")
			      : "in the leader");
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
	       draft_method_name(method), k);
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
