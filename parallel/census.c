/* Start-up census of every rank; see census.h. */
#include "census.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "control.h"
#include "mpi_check.h"

/* MemAvailable from /proc/meminfo: what the kernel says can be had without
 * swapping, which is what a model load competes for (MemFree undercounts page cache). */
static uint64_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return 0;
	char line[256];
	unsigned long long kib = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
			break;
	}
	fclose(f);
	return (uint64_t)kib * 1024;
}

/* One number from dir/name; false when absent, unreadable or "max" (no limit). */
static bool read_u64(const char *dir, const char *name, uint64_t *v)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	unsigned long long x = 0;
	bool ok = fscanf(f, "%llu", &x) == 1;
	fclose(f);
	*v = x;
	return ok;
}

/* Whether the comma-separated list holds `word`. */
static bool has_word(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; *p;) {
		size_t k = strcspn(p, ",");
		if (k == n && strncmp(p, word, n) == 0)
			return true;
		p += k + (p[k] == ',');
	}
	return false;
}

void par_cgroup_memory_cap(const char *proc_cgroup, const char *root, uint64_t *total,
			   uint64_t *free)
{
	FILE *f = fopen(proc_cgroup, "r");
	if (!f)
		return;
	char line[2048];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		/* "ID:CONTROLLERS:PATH"; v2 is "0::PATH" */
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		bool v2 = c1[1] == '\0';
		if (!v2 && !has_word(c1 + 1, "memory"))
			continue;
		char dir[4096];
		int base = snprintf(dir, sizeof(dir), "%s%s", root, v2 ? "" : "/memory");
		if (base < 0 || (size_t)base >= sizeof(dir) ||
		    snprintf(dir + base, sizeof(dir) - (size_t)base, "%s", c2 + 1) >=
			    (int)(sizeof(dir) - (size_t)base))
			continue;
		const char *lim_name = v2 ? "memory.max" : "memory.limit_in_bytes";
		const char *use_name = v2 ? "memory.current" : "memory.usage_in_bytes";
		/* The group and each ancestor up to the root of the hierarchy. */
		for (;;) {
			uint64_t lim, use;
			if (read_u64(dir, lim_name, &lim)) {
				uint64_t room = lim;
				if (read_u64(dir, use_name, &use))
					room = use < lim ? lim - use : 0;
				*total = lim < *total ? lim : *total;
				*free = room < *free ? room : *free;
			}
			char *slash = strrchr(dir + base, '/');
			if (!slash)
				break;
			*slash = '\0';
		}
	}
	fclose(f);
}

int32_t par_local_rank(void)
{
	static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
					   "SLURM_LOCALID"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);
		if (v && *v)
			return (int32_t)atoi(v);
	}
	return 0;
}

int32_t par_local_size(void)
{
	static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
					   "SLURM_NTASKS_PER_NODE"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);
		int n = v && *v ? atoi(v) : 0; /* Slurm may say "2(x3)": 2 a node */
		if (n > 0)
			return (int32_t)n;
	}
	return 1;
}

uint32_t par_auto_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN) / par_local_size();
	return n > 1 ? (uint32_t)n : 1;
}

/* The "cuda:N" of a device string ("cuda:N NAME"), its length; 0 for another device. */
static size_t gpu_id_len(const char *device)
{
	return strncmp(device, "cuda:", 5) == 0 ? strcspn(device, " ") : 0;
}

static bool same_machine(const struct par_rank_info *x, const struct par_rank_info *y)
{
	if (x->machine[0] && y->machine[0])
		return strcmp(x->machine, y->machine) == 0;
	return strcmp(x->node, y->node) == 0;
}

bool par_census_shared_gpu(const struct par_rank_info *ranks, int n, int *a, int *b)
{
	for (int j = 1; j < n; j++) {
		size_t lj = gpu_id_len(ranks[j].device);
		for (int i = 0; lj && i < j; i++) {
			if (gpu_id_len(ranks[i].device) != lj ||
			    strncmp(ranks[i].device, ranks[j].device, lj) != 0 ||
			    !same_machine(&ranks[i], &ranks[j]))
				continue;
			*a = i;
			*b = j;
			return true;
		}
	}
	return false;
}

enum specd_status par_census_local(struct par_rank_info *out, int rank)
{
	struct par_rank_info info;
	memset(&info, 0, sizeof(info));
	info.rank = rank;
	info.pid = (int32_t)getpid();
	info.cores = (int32_t)sysconf(_SC_NPROCESSORS_ONLN);
	info.local_rank = par_local_rank();
	if (gethostname(info.node, sizeof(info.node) - 1) != 0)
		return SPECD_IO;
	struct sysinfo si;
	if (sysinfo(&si) != 0)
		return SPECD_IO;
	info.host_mem_total = (uint64_t)si.totalram * si.mem_unit;
	info.host_mem_free = mem_available();
	par_cgroup_memory_cap("/proc/self/cgroup", "/sys/fs/cgroup", &info.host_mem_total,
			      &info.host_mem_free);
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f) {
		if (fgets(info.machine, sizeof(info.machine), f))
			info.machine[strcspn(info.machine, "\n")] = '\0';
		fclose(f);
	}
	snprintf(info.role, sizeof(info.role), "-");
	snprintf(info.device, sizeof(info.device), "cpu");
	*out = info;
	return SPECD_OK;
}

enum specd_status par_census_gather(MPI_Comm comm, const struct par_rank_info *mine,
				    struct par_rank_info *all)
{
	/* Plain bytes: every rank runs the same binary on the same architecture. */
	return par_gather_wait(mine, (int)sizeof(*mine), MPI_BYTE, all, 0, comm);
}
