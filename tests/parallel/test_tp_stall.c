/* A stalled shard never hangs the job: runs `mpirun -np 3 test_tp_mpi --decode-forever`
 * (test_tp_mpi.c's helper mode: leader-driven greedy decoding, 2 s deadline), stops rank 1 with SIGSTOP once tokens
 * flow, and checks that the job ends by itself, with ranks 0 and 2 each reporting a
 * timeout that names rank 1 (DESIGN.md §10: a SIGSTOP, because a dead rank makes
 * mpirun abort on its own). Not run under mpirun itself: it is the harness. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "test_support.h"

#define DEADLINE_S 2.0
#define LIMIT_S 120.0 /* far past deadline + grace: only a hang reaches it */

struct child {
	pid_t pid;
	int fd;
	char out[65536];
	size_t len;
};

static void spawn(struct child *c, const char *const argv[])
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		setpgid(0, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	close(fds[1]);
	c->fd = fds[0];
	c->len = 0;
	c->out[0] = '\0';
}

/* Reads what is there within wait_s; false at end of output. */
static bool pump(struct child *c, double wait_s)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	int r = poll(&p, 1, (int)(wait_s * 1000));
	if (r <= 0)
		return true;
	if (c->len + 1 >= sizeof(c->out))
		c->len = sizeof(c->out) / 2; /* keep the tail */
	ssize_t n = read(c->fd, c->out + c->len, sizeof(c->out) - 1 - c->len);
	if (n <= 0)
		return n < 0 && errno == EINTR;
	c->len += (size_t)n;
	c->out[c->len] = '\0';
	return true;
}

static int rank_pid(const char *out, int rank)
{
	char key[32];
	snprintf(key, sizeof(key), "tp-rank %d pid ", rank);
	const char *p = strstr(out, key);
	return p ? atoi(p + strlen(key)) : 0;
}

/* True when the line starting with `prefix` contains `needle`. */
static bool line_has(const char *out, const char *prefix, const char *needle)
{
	const char *p = strstr(out, prefix);
	if (!p)
		return false;
	const char *end = strchr(p, '\n');
	size_t n = end ? (size_t)(end - p) : strlen(p);
	char line[2048];
	snprintf(line, sizeof(line), "%.*s", (int)n, p);
	return strstr(line, needle) != NULL;
}

static void test_tp__stalled_rank_is_named_and_the_job_ends(void **state)
{
	(void)state;
	char dir[512], model[600], gen[600], prog[600];
	assert_true(ts_mkdtemp(dir, sizeof(dir)));
	snprintf(model, sizeof(model), "%s/stall.gguf", dir);
	snprintf(gen, sizeof(gen), "%s/tools/specd-gen-model", ts_binary_dir());
	const char *tp_prog = getenv("SPECD_TP_MPI"); /* test_tp_mpi_np3, set by CTest */
	if (tp_prog)
		snprintf(prog, sizeof(prog), "%s", tp_prog);
	else
		snprintf(prog, sizeof(prog), "%s/tests/parallel/test_tp_mpi_np3", ts_binary_dir());
	const char *gargv[] = {gen, "-o", model, "--dim", "192", "--layers", "4", "--heads", "6",
			       "--kv-heads", "3", "--ffn", "512", "--vocab", "600", "--ctx", "512",
			       "--type", "q8_0", NULL};
	char *text = NULL;
	assert_int_equal(ts_run(gargv, &text, 60), 0);
	free(text);

	const char *mpirun = getenv("SPECD_TEST_MPIRUN");
	if (!mpirun)
		mpirun = "mpirun";
	char mpirun_path[256];
	snprintf(mpirun_path, sizeof(mpirun_path), "%s", mpirun);
	char deadline[16];
	snprintf(deadline, sizeof(deadline), "%.1f", DEADLINE_S);
	const char *argv[] = {mpirun_path, "--allow-run-as-root", "--oversubscribe", "--bind-to",
			      "none", "-np", "3", prog, "--decode-forever", model, deadline, NULL};
	struct child c;
	spawn(&c, argv);

	double t0 = specd_now();
	while (!strstr(c.out, "tp-generating") && specd_now() - t0 < LIMIT_S && pump(&c, 0.1))
		;
	int victim = rank_pid(c.out, 1);
	if (!strstr(c.out, "tp-generating") || victim <= 0) {
		fprintf(stderr, "no generation started:\n%s\n", c.out);
		kill(-c.pid, SIGKILL);
		waitpid(c.pid, NULL, 0);
		fail();
	}
	assert_int_equal(kill(victim, SIGSTOP), 0);
	double stopped = specd_now();
	int status = 0;
	pid_t done = 0;
	while ((done = waitpid(c.pid, &status, WNOHANG)) == 0 && specd_now() - stopped < LIMIT_S)
		pump(&c, 0.05);
	for (int i = 0; done != 0 && i < 20 && pump(&c, 0.05); i++)
		; /* the last words */
	double took = specd_now() - stopped;
	kill(victim, SIGCONT);
	kill(victim, SIGKILL);
	if (done == 0) {
		kill(-c.pid, SIGKILL);
		waitpid(c.pid, &status, 0);
	}
	close(c.fd);
	ts_rmtree(dir);
	printf("[ stall ] job ended %.1f s after rank 1 was stopped (deadline %.1f s)\n", took,
	       DEADLINE_S);
	if (done == 0 || !strstr(c.out, "tp-error rank 0") || !strstr(c.out, "tp-error rank 2"))
		fprintf(stderr, "output:\n%s\n", c.out);
	assert_true(done == c.pid); /* it ended by itself: no hang */
	assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* both surviving ranks say it was a timeout and that rank 1 did not respond */
	assert_true(line_has(c.out, "tp-error rank 0: ", "TIMEOUT"));
	assert_true(line_has(c.out, "tp-error rank 2: ", "TIMEOUT"));
	assert_true(line_has(c.out, "tp-error rank 0: ", "rank 1 did not respond"));
	assert_true(line_has(c.out, "tp-error rank 2: ", "rank 1 did not respond"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tp__stalled_rank_is_named_and_the_job_ends),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
