/* Opening the generation stack; see runtime.h. */
#include "runtime.h"

#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "drafters/remote.h"
#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/model_file.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "parallel/census.h"
#include "parallel/tp.h"

/* The model's trained context from `<arch>.context_length`, or 0 when absent. */
static uint32_t trained_context(const struct gguf_file *f)
{
	struct gguf_str arch;
	char key[96];
	uint32_t n = 0;
	if (!gguf_get_str(f, "general.architecture", &arch) || arch.len > 64)
		return 0;
	snprintf(key, sizeof(key), "%.*s.context_length", (int)arch.len, arch.ptr);
	return gguf_get_u32(f, key, &n) ? n : 0;
}

/* The engine's view of a tensor-parallel target: every forward and truncation runs on
 * all shards. A failure once the shards were told of an operation (a stalled shard, an
 * NCCL or device error, the leader's own forward failing mid-way) cannot be recovered
 * from with a collective half done (par_tp_broken says): say why, then end the whole
 * job. */
static enum specd_status tp_failed(struct par_tp_model *tp, enum specd_status st,
				   const struct specd_error *err)
{
	if (st != SPECD_OK && par_tp_broken(tp)) {
		LOG_ERROR("tensor-parallel target failed, ending the job: %s", err ? err->msg : "");
		par_tp_abort(tp, 3);
	}
	return st;
}

static enum specd_status tp_forward(void *user, const struct model_batch *b,
				    struct specd_error *err)
{
	enum par_tp_want want = !b->n_out ? PAR_TP_WANT_NONE
				: b->ids ? PAR_TP_WANT_ARGMAX
				: b->logits ? PAR_TP_WANT_LOGITS : PAR_TP_WANT_NONE;
	return tp_failed(user, par_tp_step(user, b, want, b->ids, err), err);
}

static enum specd_status tp_truncate(void *user, uint32_t slot, uint32_t len,
				     struct specd_error *err)
{
	return tp_failed(user, par_tp_truncate(user, slot, len, err), err);
}

static enum specd_status tp_compact(void *user, uint32_t slot, uint32_t base,
				    const uint32_t *rows, uint32_t n, struct specd_error *err)
{
	return tp_failed(user, par_tp_compact(user, slot, base, rows, n, err), err);
}

static const struct draft_target_ops tp_target_ops = {
	.forward = tp_forward,
	.truncate = tp_truncate,
	.compact = tp_compact,
};

enum specd_status runtime_follow(struct runtime *rt, struct specd_error *err)
{
	enum specd_status st = par_tp_follow(rt->tp, err);
	return tp_failed(rt->tp, st, err);
}

void runtime_close(struct runtime *rt)
{
	if (rt->tp && !rt->follower) {
		struct specd_error err;
		if (par_tp_stop(rt->tp, &err) != SPECD_OK)
			LOG_WARN("releasing the tensor-parallel shards: %s", err.msg);
	}
	draft_engine_destroy(rt->engine);
	draft_destroy(rt->drafter); /* before the target it was checked against */
	if (rt->tp)
		par_tp_model_destroy(rt->tp); /* owns rt->model */
	else
		model_destroy(rt->model); /* before the file its weights point into */
	tok_destroy(rt->tok);
	kern_destroy(rt->kern);
	gguf_close(rt->file);
	memset(rt, 0, sizeof(*rt));
}

enum specd_status runtime_backend_create(const struct runtime_config *cfg, struct kern_ctx **out,
					 struct specd_error *err)
{
	struct kern_cpu_config kc = {.n_threads = cfg->threads ? cfg->threads : 1,
				     .act = cfg->act};
	enum specd_status st;
	switch (cfg->device) {
	case CFG_DEVICE_CPU:
		if ((st = kern_cpu_create(&kc, out)) != SPECD_OK)
			return specd_errorf(err, st, "cannot create the CPU backend: %s",
					    specd_status_str(st));
		return SPECD_OK;
	case CFG_DEVICE_EMULATED: {
		struct kern_emu_config ec = {.cpu = kc};
		if ((st = kern_emu_create(&ec, out)) != SPECD_OK)
			return specd_errorf(err, st, "cannot create the emulated device: %s",
					    specd_status_str(st));
		return SPECD_OK;
	}
	case CFG_DEVICE_CUDA: {
		struct kern_cuda_config gc = {.device = cfg->device_index};
		struct specd_error why;
		specd_error_clear(&why);
		if ((st = kern_cuda_create(&gc, out, &why)) != SPECD_OK)
			return specd_errorf(err, st, "cannot create the CUDA backend on GPU %d: %s",
					    cfg->device_index, why.msg);
		return SPECD_OK;
	}
	}
	return specd_errorf(err, SPECD_INVAL, "unknown device %d", (int)cfg->device);
}

/* model_config.huge_pages_max for cfg: 0 without huge pages; else half of the memory
 * this rank may still take (MemAvailable, capped by its cgroups: par_census_local)
 * over the ranks on its machine, which may all be copying their weights at once. The
 * copy speeds decoding up; it must never be what runs a machine out of memory. */
static size_t huge_budget(const struct runtime_config *cfg)
{
	struct par_rank_info me;
	if (!cfg->huge_pages || par_census_local(&me, 0) != SPECD_OK)
		return 0;
	return (size_t)(me.host_mem_free / 2 / (uint64_t)par_local_size());
}

enum specd_status runtime_open(const struct runtime_config *cfg, struct runtime *rt,
			       struct specd_error *err)
{
	memset(rt, 0, sizeof(*rt));
	double t0 = specd_now();
	int tp_size = 1, tp_rank = 0;
	if (cfg->tp) {
		MPI_Comm_size(cfg->tp_comm, &tp_size);
		MPI_Comm_rank(cfg->tp_comm, &tp_rank);
	}
	/* A GPU's shards sum over NCCL, on the device. */
	struct par_tp_config tc = {.deadline_s = cfg->tp_deadline_s,
				   .nccl = cfg->device == CFG_DEVICE_CUDA,
				   .device = cfg->device_index};
	enum specd_status st = model_file_open(cfg->model_path, &rt->file, err);
	if (st == SPECD_OK)
		st = tok_load_gguf(rt->file, &rt->tok, err);
	if (st == SPECD_OK)
		st = runtime_backend_create(cfg, &rt->kern, err);
	if (st != SPECD_OK) {
		/* The other shards are about to load: they must hear of this, not wait for
		 * this rank in the load's collective set-up. */
		struct specd_error mine = {.code = st}, vote;
		if (tp_size > 1)
			par_tp_model_load_failed(cfg->tp_comm, &tc, err ? err : &mine, &vote);
		goto fail;
	}
	bool spec = cfg->method != DRAFT_METHOD_NONE;
	/* A verify batch holds K + 1 tokens of each running sequence. */
	uint32_t n_slots = cfg->n_slots ? cfg->n_slots : 1;
	uint32_t batch = spec ? n_slots * (cfg->spec_tokens + 1) : n_slots;
	if (cfg->batch_tokens)
		batch = spec && cfg->batch_tokens < cfg->spec_tokens + 1 ? cfg->spec_tokens + 1
									   : cfg->batch_tokens;
	uint32_t n_ctx = trained_context(rt->file);
	if (cfg->max_ctx && (n_ctx == 0 || cfg->max_ctx < n_ctx))
		n_ctx = cfg->max_ctx;
	struct model_config mc = {
		.n_slots = n_slots,
		.n_ctx = n_ctx,
		.max_batch = batch > MODEL_DEFAULT_MAX_BATCH || cfg->batch_tokens ? batch : 0,
		.kern = rt->kern,
		.convert = cfg->dtype != CFG_DTYPE_AUTO,
		.weight_type = cfg->dtype == CFG_DTYPE_F16    ? KERN_F16
			       : cfg->dtype == CFG_DTYPE_BF16 ? KERN_BF16
							      : KERN_F32,
		.huge_pages_max = huge_budget(cfg),
	};
	if (tp_size > 1) {
		if ((st = par_tp_model_load_gguf(cfg->tp_comm, rt->file, &mc, &tc, &rt->tp, err)) !=
		    SPECD_OK)
			goto fail;
		rt->model = par_tp_model_get(rt->tp);
		rt->follower = tp_rank != 0;
		if (rt->follower) {
			rt->load_s = specd_now() - t0;
			return SPECD_OK; /* a shard needs no tokenizer check, drafter or engine */
		}
	} else if ((st = model_load_gguf(rt->file, &mc, &rt->model, err)) != SPECD_OK) {
		goto fail;
	}
	const struct model_hparams *hp = model_hparams(rt->model);
	if ((uint32_t)tok_vocab_size(rt->tok) > hp->n_vocab) {
		st = specd_errorf(err, SPECD_INVAL, "the tokenizer has %d tokens, the model %u",
				  tok_vocab_size(rt->tok), hp->n_vocab);
		goto fail;
	}
	if (spec) {
		struct draft_config dc = {
			.method = cfg->method,
			.k_max = cfg->spec_tokens,
			.n_slots = n_slots,
			.n_ctx = kv_n_ctx(model_kv(rt->model)),
			.target = rt->model,
			.prompt_lookup_min = cfg->prompt_lookup_min,
			.prompt_lookup_max = cfg->prompt_lookup_max,
			.draft_path = cfg->draft_path,
			.kern = rt->kern,
			.huge_pages_max = huge_budget(cfg),
			.heads_path = cfg->heads_path,
			.eagle = cfg->eagle,
			.also = cfg->also,
		};
		struct draft_remote_config drc = {
			.link = cfg->draft_link,
			.pipeline = cfg->pipeline,
			.warm = cfg->draft_warm,
			.local_ngram = cfg->local_ngram,
			.transport = DRAFT_Q_FULL,
		};
		st = cfg->draft_link ? draft_remote_create(&drc, &dc, &rt->drafter, err)
				     : draft_create(&dc, &rt->drafter, err);
		if (st != SPECD_OK)
			goto fail;
	}
	struct draft_engine_config ec = {
		.target = rt->model,
		.target_ops = rt->tp ? &tp_target_ops : NULL,
		.target_user = rt->tp,
		.drafter = rt->drafter,
		.spec_tokens = spec ? cfg->spec_tokens : 0,
	};
	if ((st = draft_engine_create(&ec, &rt->engine, err)) != SPECD_OK)
		goto fail;
	rt->load_s = specd_now() - t0;
	return SPECD_OK;
fail:
	runtime_close(rt);
	return st;
}

enum specd_status runtime_serve_draft(const struct runtime_config *cfg, struct draft_link *link,
				      struct specd_error *err)
{
	struct gguf_file *file = NULL;
	struct kern_ctx *kern = NULL, *host = NULL;
	struct model *target = NULL;
	struct specd_error why;
	specd_error_clear(&why);
	/* The target only answers a drafter's supports() and lends EAGLE its embedding and
	 * LM head: one row, one token a batch, on the CPU over the file's mapping, so a
	 * GPU draft rank does not copy the target's weights to its device. The drafters
	 * compute on cfg's backend. */
	struct model_config mc = {.n_slots = 1, .n_ctx = 1, .max_batch = 1};
	struct runtime_config on_cpu = *cfg;
	on_cpu.device = CFG_DEVICE_CPU;
	enum specd_status st = model_file_open(cfg->model_path, &file, &why);
	if (st == SPECD_OK)
		st = runtime_backend_create(cfg, &kern, &why);
	if (st == SPECD_OK && cfg->device != CFG_DEVICE_CPU)
		st = runtime_backend_create(&on_cpu, &host, &why);
	mc.kern = host ? host : kern;
	if (st == SPECD_OK)
		st = model_load_gguf(file, &mc, &target, &why);
	if (st != SPECD_OK)
		LOG_ERROR("the draft rank cannot open the target %s: %s", cfg->model_path, why.msg);
	/* Serve even when broken: the leader learns why at its first request. */
	struct draft_server_config sc = {
		.target = target,
		.draft_path = cfg->draft_path,
		.heads_path = cfg->heads_path,
		.eagle = cfg->eagle,
		.kern = kern,
		.huge_pages_max = huge_budget(cfg),
		.broken = st,
		.broken_msg = why.msg,
	};
	st = draft_serve(link, &sc, err);
	model_destroy(target);
	kern_destroy(host);
	kern_destroy(kern);
	gguf_close(file);
	return st;
}
