/* Cluster start-up and shutdown under mpirun; see cluster.h. Every step ends with an
 * agreement (a broadcast or an all-reduce of the outcome) so that a failure on one
 * rank becomes one clear exit on all of them instead of a hang. */
#include "cluster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "kernels/cuda/cuda_device.h"
#include "parallel/control.h"
#include "parallel/mpi_check.h"

/* Link probes: what they may spend adding sizes, and how long a peer may be silent. */
#define PROBE_BUDGET_S 0.5
#define PROBE_DEADLINE_S 10.0

/* All ranks learn whether any rank failed; returns SPECD_OK only if none did. */
static enum specd_status agree(enum specd_status mine)
{
	int bad = mine != SPECD_OK, any = 0;
	if (par_allreduce_wait(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != SPECD_OK)
		return SPECD_MPI;
	if (mine != SPECD_OK)
		return mine;
	return any ? SPECD_CONFIG : SPECD_OK;
}

enum specd_status cluster_load_config(struct cluster *c, const char *path)
{
	enum specd_status st = PAR_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
	if (st == SPECD_OK)
		st = PAR_MPI(MPI_Comm_size(MPI_COMM_WORLD, &c->world_size));
	if (st != SPECD_OK)
		return st;

	char *text = NULL;
	size_t len = 0;
	int32_t outcome = SPECD_OK;
	if (c->rank == 0) {
		struct specd_error err;
		specd_error_clear(&err);
		outcome = cfg_load_file(path, CFG_CHECK_PATHS, &c->cfg, &text, &len, &err);
		if (outcome != SPECD_OK)
			fprintf(stderr, "specd: %s\n", err.msg);
	}
	/* The others wait here while rank 0 reads the file (from slow storage, or a pipe):
	 * sleeping, not spinning. */
	st = par_bcast_wait(&outcome, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
	if (st != SPECD_OK || outcome != SPECD_OK) {
		specd_free(text);
		return st != SPECD_OK ? st : (enum specd_status)outcome;
	}

	uint64_t n = len;
	st = par_bcast_bytes(MPI_COMM_WORLD, 0, &text, &n);
	enum specd_status parsed = st;
	if (st == SPECD_OK && c->rank != 0) {
		/* Same bytes, same parser: the ranks cannot disagree on the configuration.
		 * Paths were checked on rank 0; other nodes may mount them elsewhere. */
		struct specd_error err;
		specd_error_clear(&err);
		parsed = cfg_parse_buffer(text, (size_t)n, path, 0, &c->cfg, &err);
		if (parsed != SPECD_OK)
			LOG_ERROR("cluster file differs after broadcast: %s", err.msg);
	}
	specd_free(text);
	return agree(parsed);
}

/* Which device this rank computes on, checked now so that "cuda" on a node without a
 * GPU fails at start-up with a reason, not at the first request. */
static enum specd_status probe_device(struct cluster *c)
{
	enum par_role role = par_layout_role(&c->layout, c->rank);
	enum cfg_device dev = role == PAR_ROLE_DRAFT ? c->cfg->draft_device : c->cfg->target_device;
	if (dev != CFG_DEVICE_CUDA) {
		snprintf(c->self.device, sizeof(c->self.device), "%s", cfg_device_name(dev));
		return SPECD_OK;
	}
	int count = 0;
	char why[128] = "";
	enum specd_status st = kern_cuda_device_count(&count, why, sizeof(why));
	if (st != SPECD_OK || count == 0) {
		LOG_ERROR("rank %d (%s) is configured for device cuda but has no usable GPU: %s",
			  c->rank, par_role_label(&c->layout, c->rank), why);
		return st != SPECD_OK ? st : SPECD_UNSUPPORTED;
	}
	int index = c->self.local_rank % count;
	struct kern_cuda_device info;
	st = kern_cuda_device_info(index, &info);
	if (st != SPECD_OK) {
		LOG_ERROR("rank %d: cannot query CUDA device %d", c->rank, index);
		return st;
	}
	c->device_index = index;
	snprintf(c->self.device, sizeof(c->self.device), "cuda:%d %.40s", index, info.name);
	c->self.device_mem_total = info.total_bytes;
	c->self.device_mem_free = info.free_bytes;
	return SPECD_OK;
}

/* The links the selector prices: leader <-> draft rank and the target group's
 * all-reduce. Only the ranks of each probe take part; rank 0 keeps the figures. */
static enum specd_status probe_links(struct cluster *c)
{
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = SPECD_OK;
	int draft = par_layout_draft_rank(&c->layout);
	if (c->layout.dedicated_draft && (c->rank == 0 || c->rank == draft))
		st = par_probe_pingpong(MPI_COMM_WORLD, 0, draft, PROBE_BUDGET_S, PROBE_DEADLINE_S,
					&c->draft_probe, &err);
	if (st == SPECD_OK && c->have_target_comm && c->layout.tensor_parallel > 1)
		st = par_probe_allreduce(c->target_comm, PROBE_DEADLINE_S, &c->tp_probe, &err);
	if (st != SPECD_OK) {
		LOG_ERROR("%s", err.msg);
		/* The silent rank may yet wake up into the probe's pending transfer, and the
		 * agreement that follows would wait for it for ever: end the job instead. */
		if (st == SPECD_TIMEOUT) {
			LOG_ERROR("a link probe timed out: ending the job");
			MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE);
		}
		return st;
	}
	if (c->rank == 0 && c->draft_probe.measured)
		LOG_INFO("link leader<->draft rank %d: latency %.1f us, bandwidth %.1f MB/s (%u sizes "
			 "up to %llu bytes)", draft, 1e6 * c->draft_probe.latency_s,
			 c->draft_probe.bandwidth / 1e6, c->draft_probe.n,
			 (unsigned long long)c->draft_probe.bytes[c->draft_probe.n - 1]);
	if (c->rank == 0 && c->tp_probe.measured)
		LOG_INFO("target group all-reduce: latency %.1f us, bandwidth %.1f MB/s",
			 1e6 * c->tp_probe.latency_s, c->tp_probe.bandwidth / 1e6);
	return SPECD_OK;
}

enum specd_status cluster_assign_roles(struct cluster *c)
{
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st =
		par_layout_init(&c->layout, c->cfg->tensor_parallel,
				c->cfg->draft_placement == CFG_PLACEMENT_RANK, c->world_size, &err);
	if (st != SPECD_OK) {
		/* Every rank computed the same verdict from the same file: one message. */
		if (c->rank == 0)
			fprintf(stderr, "specd: %s: %s\n", c->cfg->source_path, err.msg);
		return st;
	}
	const char *label = par_role_label(&c->layout, c->rank);
	log_set_identity(c->rank, label);

	st = par_census_local(&c->self, c->rank);
	if (st == SPECD_OK) {
		snprintf(c->self.role, sizeof(c->self.role), "%s", label);
		st = probe_device(c);
	}
	st = agree(st);
	if (st != SPECD_OK)
		return st;

	if (c->rank == 0) {
		c->ranks = specd_calloc((size_t)c->world_size, sizeof(*c->ranks));
		if (!c->ranks)
			st = SPECD_NOMEM;
	}
	st = agree(st);
	if (st == SPECD_OK)
		st = par_census_gather(MPI_COMM_WORLD, &c->self, c->ranks);
	int a, b;
	if (st == SPECD_OK && c->rank == 0 && c->layout.tensor_parallel > 1 &&
	    par_census_shared_gpu(c->ranks, c->layout.tensor_parallel, &a, &b)) {
		LOG_ERROR("target ranks %d and %d would share GPU %s on %s: each shard needs a GPU "
			  "of its own (NCCL refuses two ranks on one); start at most as many "
			  "shards per node as it has GPUs", a, b, c->ranks[a].device,
			  c->ranks[a].node);
		st = SPECD_CONFIG;
	}
	st = agree(st);
	if (st == SPECD_OK) {
		/* The shards' own communicator: their collectives never involve the draft
		 * rank. */
		int color = c->rank < c->layout.tensor_parallel ? 0 : MPI_UNDEFINED;
		st = PAR_MPI(MPI_Comm_split(MPI_COMM_WORLD, color, c->rank, &c->target_comm));
		c->have_target_comm = st == SPECD_OK && color == 0;
	}
	if (st == SPECD_OK && c->cfg->measure)
		st = probe_links(c);
	return agree(st);
}

static void format_bytes(uint64_t b, char *buf, size_t size)
{
	if (b >= (1ull << 30))
		snprintf(buf, size, "%.1f GiB", (double)b / (double)(1ull << 30));
	else
		snprintf(buf, size, "%.0f MiB", (double)b / (double)(1ull << 20));
}

void cluster_print_roles(const struct cluster *c, FILE *f)
{
	const struct cfg_cluster *cfg = c->cfg;
	fprintf(f, "cluster '%s': %d rank%s, tensor_parallel %d, drafter on %s\n", cfg->name,
		c->world_size, c->world_size == 1 ? "" : "s", cfg->tensor_parallel,
		c->layout.dedicated_draft ? "a dedicated draft rank" : "the leader");
	fprintf(f, "%-5s %-20s %-8s %-13s %-24s %s\n", "rank", "node", "pid", "role", "device",
		"host memory free/total");
	for (int r = 0; r < c->world_size; r++) {
		const struct par_rank_info *i = &c->ranks[r];
		char fr[32], tot[32];
		format_bytes(i->host_mem_free, fr, sizeof(fr));
		format_bytes(i->host_mem_total, tot, sizeof(tot));
		fprintf(f, "%-5d %-20s %-8d %-13s %-24s %s / %s\n", i->rank, i->node, i->pid, i->role,
			i->device, fr, tot);
	}
	fflush(f);
}

enum specd_status cluster_shutdown_all(const struct cluster *c)
{
	struct par_ctrl_msg msg = {.op = PAR_CTRL_SHUTDOWN};
	(void)c;
	return par_ctrl_send_all(MPI_COMM_WORLD, &msg);
}

void cluster_fini(struct cluster *c)
{
	if (c->have_target_comm)
		MPI_Comm_free(&c->target_comm);
	cfg_destroy(c->cfg);
	specd_free(c->ranks);
	memset(c, 0, sizeof(*c));
}
