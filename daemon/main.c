/* specd: one rank of a speculative-decoding cluster, started as
 *   mpirun -np N specd --cluster FILE.yaml
 * Start-up in order: arguments, MPI, the cluster file (rank 0 reads, all parse), roles
 * and census, then each rank's main loop until the leader is told to stop. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/log.h"
#include "common/version.h"
#include "config.h"
#include "leader.h"
#include "parallel/control.h"
#include "parallel/mpi_check.h"
#include "signals.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mpirun -np N specd --cluster FILE.yaml\n"
		"       specd --check-config FILE.yaml\n"
		"       specd --help | --version\n"
		"\n"
		"  --cluster FILE       run as one rank of the cluster FILE describes; N must be\n"
		"                       target.tensor_parallel, plus 1 with draft.placement: rank\n"
		"  --check-config FILE  validate FILE (paths included) without MPI; exit 0 if valid\n"
		"  --help               this text\n"
		"  --version            the version\n"
		"\n"
		"SIGTERM or SIGINT to the leader (rank 0; its pid is in the role table) shuts\n"
		"every rank down cleanly. Log level: cluster.log_level, or SPECD_LOG_LEVEL.\n"
		"Keys of the cluster file: docs/config.md.\n");
}

/* --check-config: the whole validation a cluster start does, minus MPI. */
static int check_config(const char *path)
{
	struct cfg_cluster *cfg = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	if (cfg_load_file(path, CFG_CHECK_PATHS, &cfg, NULL, NULL, &err) != SPECD_OK) {
		fprintf(stderr, "%s\n", err.msg);
		return EXIT_FAILURE;
	}
	printf("%s: ok (cluster '%s': %d ranks = tensor_parallel %d%s; method %s)\n", path,
	       cfg->name, cfg_world_size(cfg), cfg->tensor_parallel,
	       cfg->draft_placement == CFG_PLACEMENT_RANK ? " + 1 draft rank" : ", drafter in the leader",
	       cfg->method_auto ? "auto" : draft_method_name(cfg->method));
	cfg_destroy(cfg);
	return EXIT_SUCCESS;
}

/* Every other rank: wait (without spinning) for the leader's instructions. */
static enum specd_status follower_loop(void)
{
	for (;;) {
		struct par_ctrl_msg msg;
		enum specd_status st = par_ctrl_wait(MPI_COMM_WORLD, &msg, 1.0);
		int sig = sig_take();
		if (sig)
			LOG_INFO("signal %d received: only the leader (rank 0) stops the cluster; "
				 "waiting for its word", sig);
		if (st == SPECD_TIMEOUT)
			continue;
		if (st != SPECD_OK)
			return st;
		if (msg.op == PAR_CTRL_SHUTDOWN)
			return SPECD_OK;
		LOG_WARN("unknown control message %d ignored", (int)msg.op);
	}
}

static int run_cluster(const char *path)
{
	int provided = 0;
	if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
		fprintf(stderr, "specd: MPI_Init_thread failed\n");
		return EXIT_FAILURE;
	}
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	int rank = 0;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	log_set_identity(rank, "-");
	if (provided < MPI_THREAD_FUNNELED) {
		/* Every rank gets the same answer from the same library: all exit. */
		if (rank == 0)
			fprintf(stderr, "specd: this MPI grants thread level %d; specd needs "
					"MPI_THREAD_FUNNELED\n", provided);
		MPI_Finalize();
		return EXIT_FAILURE;
	}
	if (sig_install() != 0) {
		LOG_ERROR("cannot install signal handlers");
		MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE);
	}

	struct cluster c;
	memset(&c, 0, sizeof(c));
	enum specd_status st = cluster_load_config(&c, path);
	if (st == SPECD_OK) {
		enum log_level level;
		if (!getenv("SPECD_LOG_LEVEL") && log_level_parse(c.cfg->log_level, &level))
			log_set_level(level);
		st = cluster_assign_roles(&c);
	}
	if (st == SPECD_OK && rank == 0) {
		printf("specd %s\n", SPECD_VERSION);
		cluster_print_roles(&c, stdout);
		LOG_INFO("ready; leader pid %d: SIGTERM or SIGINT to it stops the cluster",
			 c.self.pid);
	}
	if (st == SPECD_OK) {
		if (rank == 0) {
			/* Serve until drained; the other ranks are told to stop whatever the
			 * outcome, so a failed model load still ends every rank cleanly. */
			st = leader_serve(&c);
			enum specd_status down = cluster_shutdown_all(&c);
			if (st == SPECD_OK)
				st = down;
		} else {
			/* Target shards serve the leader's forwards and the draft rank its
			 * drafting requests until it releases them; then every rank but the
			 * leader waits for the word to exit. */
			if (c.have_target_comm)
				st = leader_follow(&c);
			else if (par_layout_role(&c.layout, rank) == PAR_ROLE_DRAFT)
				st = leader_draft(&c);
			if (st == SPECD_OK)
				st = follower_loop();
		}
	}
	if (st == SPECD_OK)
		LOG_INFO("stopped cleanly");
	cluster_fini(&c);
	MPI_Finalize();
	return st == SPECD_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv)
{
	log_init_from_env();
	const char *cluster_path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return EXIT_SUCCESS;
		}
		if (strcmp(a, "--version") == 0) {
			printf("specd %s\n", SPECD_VERSION);
			return EXIT_SUCCESS;
		}
		if (strcmp(a, "--check-config") == 0 || strcmp(a, "--cluster") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "specd: %s needs a FILE\n", a);
				return EXIT_USAGE;
			}
			if (strcmp(a, "--check-config") == 0)
				return check_config(argv[i + 1]);
			cluster_path = argv[++i];
			continue;
		}
		fprintf(stderr, "specd: unknown argument '%s'\n", a);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!cluster_path) {
		usage(stderr);
		return EXIT_USAGE;
	}
	return run_cluster(cluster_path);
}
