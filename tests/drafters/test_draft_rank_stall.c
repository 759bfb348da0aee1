/* A stalled draft rank never stops the job: runs `mpirun -np 2 specd-run --placement
 * rank` (1 s draft deadline) on a generated model, stops the draft rank with SIGSTOP
 * once text flows, and checks that the leader says "draft rank 1 stalled: falling back
 * to plain decoding", finishes the job with exactly the greedy text of plain decoding,
 * and that the job ends cleanly once the stopped rank is continued (it finds the
 * leader's word to stop). DESIGN.md §10: SIGSTOP, because a dead rank makes mpirun
 * abort on its own. Not run under mpirun itself: it is the harness. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "spec_fixture.h"
#include "test_support.h"

#define LIMIT_S 120.0 /* only a hang reaches it */
#define PROMPT "hello"
#define N_TOKENS "400"

static char g_dir[256], g_target[512], g_draft[512], g_run[512];

static char *slurp(const char *file)
{
	FILE *f = fopen(file, "r");
	assert_non_null(f);
	char *out = calloc(1, 1 << 20);
	assert_non_null(out);
	size_t n = fread(out, 1, (1 << 20) - 1, f);
	out[n] = '\0';
	fclose(f);
	return out;
}

static long file_size(const char *file)
{
	struct stat st;
	return stat(file, &st) == 0 ? (long)st.st_size : 0;
}

static void test_draft_rank__stalled_rank_falls_back_to_plain_decoding(void **state)
{
	(void)state;
	assert_true(ts_mkdtemp(g_dir, sizeof(g_dir)));
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	snprintf(g_draft, sizeof(g_draft), "%s/draft.gguf", g_dir);
	snprintf(g_run, sizeof(g_run), "%s/daemon/specd-run", ts_binary_dir());
	/* A target slow enough (about 25 MB of weights a token) that the job lasts
	 * seconds past the moment the harness stops the draft rank, even when this
	 * harness is starved of CPU on a busy machine: a job that ends first shows no
	 * stall at all. */
	const char *t[] = {"--dim", "512", "--layers", "8", "--heads", "8", "--kv-heads", "4",
			   "--ffn", "1376", "--vocab", "600", "--ctx", "1024", "--type", "q8_0",
			   "--seed", "9", NULL};
	fx_gen_model(g_target, t);
	const char *d[] = {"--vocab-from", g_target, "--dim", "64", "--layers", "2", "--heads",
			   "4", "--kv-heads", "2", "--ffn", "128", "--ctx", "1024", "--seed", "10",
			   NULL};
	fx_gen_model(g_draft, d);

	/* plain decoding: the text the stalled job must still produce */
	char plain_file[320], cmd[2048];
	snprintf(plain_file, sizeof(plain_file), "%s/plain.txt", g_dir);
	snprintf(cmd, sizeof(cmd), "%s -m %s -p " PROMPT " -n " N_TOKENS " > %s 2>/dev/null", g_run,
		 g_target, plain_file);
	const char *sh[] = {"/bin/sh", "-c", cmd, NULL};
	char *out = NULL;
	assert_int_equal(ts_run(sh, &out, 120), 0);
	free(out);
	char *plain = slurp(plain_file);

	/* the job with a draft rank: stdout to a file, stderr through a pipe */
	char spec_file[320];
	snprintf(spec_file, sizeof(spec_file), "%s/spec.txt", g_dir);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setpgid(0, 0);
		int fd = open(spec_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		execl(MPIEXEC_PATH, MPIEXEC_PATH, "--allow-run-as-root", "--oversubscribe",
		      "--bind-to", "none", "-np", "2", g_run, "-m", g_target, "-p", PROMPT, "-n",
		      N_TOKENS, "--method", "draft_model", "--draft", g_draft, "--spec-tokens", "3",
		      "--placement", "rank", "--draft-deadline", "1", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	static char log[1 << 16];
	size_t len = 0;
	int victim = 0;
	bool stopped = false, continued = false;
	int status = 0;
	pid_t done = 0;
	double t0 = specd_now();
	while ((done = waitpid(pid, &status, WNOHANG)) == 0 && specd_now() - t0 < LIMIT_S) {
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		if (poll(&p, 1, 20) > 0 && len + 1 < sizeof(log)) {
			ssize_t n = read(fds[0], log + len, sizeof(log) - 1 - len);
			if (n > 0)
				len += (size_t)n;
			log[len] = '\0';
		}
		const char *at = strstr(log, "draft rank 1 (pid ");
		if (at && !victim)
			victim = atoi(at + strlen("draft rank 1 (pid "));
		/* mid-generation: some text is out, most is still to come */
		if (victim > 0 && !stopped && file_size(spec_file) > (long)strlen(PROMPT) + 8) {
			assert_int_equal(kill(victim, SIGSTOP), 0);
			stopped = true;
		}
		/* the leader finished alone: let the stopped rank find its word to stop */
		if (stopped && !continued && strstr(log, "specd-run: draft rank: ")) {
			kill(victim, SIGCONT);
			continued = true;
		}
	}
	for (int i = 0; i < 50; i++) { /* the last words */
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		if (poll(&p, 1, 20) <= 0 || len + 1 >= sizeof(log))
			break;
		ssize_t n = read(fds[0], log + len, sizeof(log) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		log[len] = '\0';
	}
	close(fds[0]);
	if (victim > 0)
		kill(victim, SIGCONT);
	if (done == 0) {
		kill(-pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	char *spec = slurp(spec_file);
	ts_rmtree(g_dir);
	if (done != pid || !strstr(log, "falling back to plain decoding"))
		fprintf(stderr, "output:\n%s\n", log);
	assert_true(stopped);
	assert_true(done == pid); /* it ended by itself: no hang */
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_non_null(strstr(log, "draft rank 1 stalled: falling back to plain decoding"));
	assert_non_null(strstr(log, "it stalled: plain decoding since"));
	assert_string_equal(plain, spec);
	free(plain);
	free(spec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_draft_rank__stalled_rank_falls_back_to_plain_decoding),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
