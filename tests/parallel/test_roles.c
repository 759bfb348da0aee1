/* parallel/roles and census: world-size checks, who does what, and what a rank may use
 * (a GPU of its own, its cgroup's memory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "parallel/census.h"
#include "parallel/roles.h"
#include "test_support.h"

static void test_layout__dedicated_draft_rank_is_last(void **state)
{
	(void)state;
	struct par_layout l;
	assert_int_equal(par_layout_init(&l, 2, true, 3, NULL), SPECD_OK);
	assert_int_equal(par_layout_role(&l, 0), PAR_ROLE_LEADER);
	assert_int_equal(par_layout_role(&l, 1), PAR_ROLE_TARGET);
	assert_int_equal(par_layout_role(&l, 2), PAR_ROLE_DRAFT);
	assert_int_equal(par_layout_draft_rank(&l), 2);
	assert_string_equal(par_role_label(&l, 0), "leader");
	assert_string_equal(par_role_label(&l, 2), "draft");
}

static void test_layout__leader_placement_has_no_draft_rank(void **state)
{
	(void)state;
	struct par_layout l;
	assert_int_equal(par_layout_init(&l, 2, false, 2, NULL), SPECD_OK);
	assert_int_equal(par_layout_role(&l, 1), PAR_ROLE_TARGET);
	assert_int_equal(par_layout_draft_rank(&l), 0);
	assert_string_equal(par_role_label(&l, 0), "leader+draft");
	assert_int_equal(par_layout_needed(4, true), 5);
	assert_int_equal(par_layout_needed(1, false), 1);
}

static void test_layout__mismatch_names_both_sizes(void **state)
{
	(void)state;
	struct par_layout l;
	memset(&l, 0x5a, sizeof(l));
	struct par_layout before = l;
	struct specd_error err;
	assert_int_equal(par_layout_init(&l, 2, true, 2, &err), SPECD_CONFIG);
	assert_non_null(strstr(err.msg, "started 2 ranks but the cluster file needs 3"));
	assert_non_null(strstr(err.msg, "draft.placement: leader"));
	assert_memory_equal(&l, &before, sizeof(l)); /* untouched on failure */
	assert_int_equal(par_layout_init(&l, 3, false, 4, &err), SPECD_CONFIG);
	assert_non_null(strstr(err.msg, "started 4 ranks but the cluster file needs 3"));
	assert_int_equal(par_layout_init(&l, 0, false, 1, &err), SPECD_INVAL);
}

/* Two shards on one GPU of one machine are found (NCCL refuses them); other GPUs, other
 * machines (by boot id, or by name when it is unknown) and CPU ranks are not. */
static void test_census__shards_sharing_a_gpu_are_found(void **state)
{
	(void)state;
	struct par_rank_info r[4];
	memset(r, 0, sizeof(r));
	const char *dev[4] = {"cuda:0 NVIDIA H200", "cuda:1 NVIDIA H200", "cpu", "cuda:10 X"};
	for (int i = 0; i < 4; i++) {
		snprintf(r[i].node, sizeof(r[i].node), "node-a");
		snprintf(r[i].machine, sizeof(r[i].machine), "boot-a");
		snprintf(r[i].device, sizeof(r[i].device), "%s", dev[i]);
	}
	int a = -1, b = -1;
	assert_false(par_census_shared_gpu(r, 4, &a, &b));
	snprintf(r[3].device, sizeof(r[3].device), "cuda:1 NVIDIA H200");
	assert_true(par_census_shared_gpu(r, 4, &a, &b));
	assert_int_equal(a, 1);
	assert_int_equal(b, 3);
	assert_false(par_census_shared_gpu(r, 3, &a, &b)); /* only the first n ranks */
	snprintf(r[3].machine, sizeof(r[3].machine), "boot-b");
	assert_false(par_census_shared_gpu(r, 4, &a, &b));
	r[1].machine[0] = r[3].machine[0] = '\0'; /* unknown boot ids: by node name */
	assert_true(par_census_shared_gpu(r, 4, &a, &b));
	snprintf(r[3].node, sizeof(r[3].node), "node-b");
	assert_false(par_census_shared_gpu(r, 4, &a, &b));
	snprintf(r[2].device, sizeof(r[2].device), "cpu");
	snprintf(r[0].device, sizeof(r[0].device), "cpu");
	assert_false(par_census_shared_gpu(r, 3, &a, &b)); /* CPU ranks share nothing */
}

/* Writes text to dir/name, making dir (and its parents) first. */
static void put(const char *dir, const char *name, const char *text)
{
	char cmd[1200], path[1200];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
	assert_int_equal(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Inside a memory cgroup the census reports what the group allows, not the host's
 * memory: v2 (a limit on an ancestor counts too; "max" is none) and v1. */
/* The ranks on this node, as the launcher says (Open MPI first), 1 when none does:
 * each rank's share of the machine's memory (runtime.c's huge-page budget) and cores
 * (par_auto_threads). */
static void test_census__local_size_from_the_launcher(void **state)
{
	(void)state;
	const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
			      "SLURM_NTASKS_PER_NODE"};
	char *saved[3];
	for (int i = 0; i < 3; i++) {
		const char *v = getenv(vars[i]);
		saved[i] = v ? strdup(v) : NULL;
		unsetenv(vars[i]);
	}
	assert_int_equal(par_local_size(), 1);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	assert_int_equal(par_auto_threads(), cores > 1 ? cores : 1); /* one rank: every core */
	setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "100000", 1);
	assert_int_equal(par_auto_threads(), 1); /* more ranks than cores: at least 1 */
	unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
	setenv("SLURM_NTASKS_PER_NODE", "2(x3)", 1);
	assert_int_equal(par_local_size(), 2);
	setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
	assert_int_equal(par_local_size(), 3);
	setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "0", 1); /* nonsense: the next one says */
	assert_int_equal(par_local_size(), 2);
	for (int i = 0; i < 3; i++) {
		if (saved[i])
			setenv(vars[i], saved[i], 1);
		else
			unsetenv(vars[i]);
		free(saved[i]);
	}
}

static void test_census__memory_capped_by_the_cgroup(void **state)
{
	(void)state;
	char tmp[256], root[400], dir[600], proc[400];
	assert_true(ts_mkdtemp(tmp, sizeof(tmp)));
	snprintf(root, sizeof(root), "%s/cg", tmp);
	snprintf(proc, sizeof(proc), "%s/proc-cgroup", tmp);

	/* v2: job/step; the job is limited to 8 GiB with 6 GiB used, the step has no limit */
	snprintf(dir, sizeof(dir), "%s/job", root);
	put(dir, "memory.max", "8589934592\n");
	put(dir, "memory.current", "6442450944\n");
	snprintf(dir, sizeof(dir), "%s/job/step", root);
	put(dir, "memory.max", "max\n");
	put(dir, "memory.current", "1073741824\n");
	put(tmp, "proc-cgroup", "0::/job/step\n");
	uint64_t total = 64ull << 30, free = 40ull << 30;
	par_cgroup_memory_cap(proc, root, &total, &free);
	assert_true(total == 8ull << 30);
	assert_true(free == 2ull << 30);

	/* v1: the memory controller's own hierarchy, named among others */
	snprintf(dir, sizeof(dir), "%s/memory/slurm/job1", root);
	put(dir, "memory.limit_in_bytes", "536870912\n");
	put(dir, "memory.usage_in_bytes", "134217728\n");
	put(tmp, "proc-cgroup", "5:cpuacct,cpu:/\n4:memory:/slurm/job1\n0::/\n");
	total = 64ull << 30;
	free = 40ull << 30;
	par_cgroup_memory_cap(proc, root, &total, &free);
	assert_true(total == 512ull << 20);
	assert_true(free == 384ull << 20);

	/* no limit anywhere, or nothing readable: the host's figures stay */
	put(tmp, "proc-cgroup", "0::/job/none\n");
	snprintf(dir, sizeof(dir), "%s/job", root);
	put(dir, "memory.max", "max\n");
	total = 64ull << 30;
	free = 40ull << 30;
	par_cgroup_memory_cap(proc, root, &total, &free);
	par_cgroup_memory_cap("/nonexistent/cgroup", root, &total, &free);
	assert_true(total == 64ull << 30);
	assert_true(free == 40ull << 30);
	ts_rmtree(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_census__shards_sharing_a_gpu_are_found),
		cmocka_unit_test(test_census__memory_capped_by_the_cgroup),
		cmocka_unit_test(test_census__local_size_from_the_launcher),
		cmocka_unit_test(test_layout__dedicated_draft_rank_is_last),
		cmocka_unit_test(test_layout__leader_placement_has_no_draft_rank),
		cmocka_unit_test(test_layout__mismatch_names_both_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
