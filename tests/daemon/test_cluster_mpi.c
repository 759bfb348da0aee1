/* specd under mpirun, end to end: the role table, SIGTERM to the leader ending every
 * rank with exit 0 (a drain waits for a running job; a second signal ends it at once),
 * idle ranks not spinning, and a world-size mismatch giving one message and a non-zero
 * exit on every rank (never a hang). */
#include <dirent.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "daemon/client.h"
#include "test_support.h"

static char g_dir[256], g_specd[512], g_mpirun[256], g_model[512];

static int setup(void **state)
{
	(void)state;
	if (!ts_model_path("stories260K.gguf", g_model, sizeof(g_model))) {
		print_message("stories260K.gguf not found (SPECD_MODELS, ../shared/models)\n");
		return -1;
	}
	snprintf(g_specd, sizeof(g_specd), "%s/daemon/specd", ts_binary_dir());
	snprintf(g_mpirun, sizeof(g_mpirun), "%s", MPIEXEC_PATH);
	return ts_mkdtemp(g_dir, sizeof(g_dir)) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static void write_cluster(const char *name, int tp, const char *placement, char *path,
			  size_t size)
{
	/* A socket of its own in the test's folder: a fixed TCP port could be held by
	 * another suite running beside this one. */
	char text[1536];
	snprintf(text, sizeof(text),
		 "cluster:\n  name: test\n  log_level: info\n"
		 "server:\n  listen: unix:%s/%s.sock\n"
		 "target:\n  model: %s\n  tensor_parallel: %d\n"
		 "draft:\n  placement: %s\n",
		 g_dir, name, g_model, tp, placement);
	assert_true(ts_write_file(g_dir, name, text, path, size));
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system) a process has used, from /proc/PID/stat. */
static double cpu_seconds(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (!p)
		return -1;
	unsigned long utime = 0, stime = 0;
	/* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

struct running {
	pid_t pid;
	int fd;
	char out[65536];
	size_t len;
};

/* The cluster a test started, so that a failed assertion (which leaves the test
 * function at once) still ends it: a live mpirun would disturb the next test. */
static struct running *g_run;

static struct running *running_new(void)
{
	g_run = calloc(1, sizeof(*g_run));
	assert_non_null(g_run);
	g_run->pid = -1;
	g_run->fd = -1;
	return g_run;
}

static int running_end(void **state)
{
	(void)state;
	if (g_run && g_run->pid > 0) {
		kill(-g_run->pid, SIGKILL);
		waitpid(g_run->pid, NULL, 0);
	}
	if (g_run && g_run->fd >= 0)
		close(g_run->fd);
	free(g_run);
	g_run = NULL;
	return 0;
}

static void start(struct running *r, int np, const char *cluster)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	r->len = 0;
	r->out[0] = '\0';
	r->pid = fork();
	assert_true(r->pid >= 0);
	if (r->pid == 0) {
		setpgid(0, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		char nps[16];
		snprintf(nps, sizeof(nps), "%d", np);
		execl(g_mpirun, g_mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to",
		      "none", "-np", nps, g_specd, "--cluster", cluster, (char *)NULL);
		_exit(127);
	}
	setpgid(r->pid, r->pid); /* as the child does: no kill before it is its own group */
	close(fds[1]);
	r->fd = fds[0];
}

/* Reads output until `needle` has appeared `times` times or the timeout passes. */
static bool read_until(struct running *r, const char *needle, int times, double timeout)
{
	double end = now_s() + timeout;
	while (count(r->out, needle) < times) {
		double left = end - now_s();
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		ssize_t n = read(r->fd, r->out + r->len, sizeof(r->out) - r->len - 1);
		if (n <= 0)
			return count(r->out, needle) >= times;
		r->len += (size_t)n;
		r->out[r->len] = '\0';
	}
	return true;
}

/* Reads whatever output arrives within `wait` seconds, then what is already there. */
static void drain(struct running *r, double wait)
{
	int ms = (int)(wait * 1000);
	for (;;) {
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (poll(&p, 1, ms) <= 0 || r->len >= sizeof(r->out) - 1)
			return;
		ssize_t n = read(r->fd, r->out + r->len, sizeof(r->out) - r->len - 1);
		if (n <= 0)
			return;
		r->len += (size_t)n;
		r->out[r->len] = '\0';
		ms = 0;
	}
}

/* Waits for mpirun to exit, reading its output meanwhile; its exit code, or -1 on
 * timeout (the whole process group is then killed). */
static int finish(struct running *r, double timeout)
{
	double end = now_s() + timeout;
	int status = 0;
	while (waitpid(r->pid, &status, WNOHANG) != r->pid) {
		if (now_s() > end)
			return -1; /* running_end kills the whole process group */
		drain(r, 0.1);
	}
	r->pid = -1;
	drain(r, 0);
	close(r->fd);
	r->fd = -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The pid in the role table row of `rank`, or -1. */
static int pid_of_rank(const char *out, int rank)
{
	const char *row = strstr(out, "\nrank ");
	if (!row)
		return -1;
	for (const char *line = strchr(row + 1, '\n'); line; line = strchr(line + 1, '\n')) {
		int r, pid;
		char node[128];
		if (sscanf(line + 1, "%d %127s %d", &r, node, &pid) == 3 && r == rank)
			return pid;
	}
	return -1;
}

static void test_cluster__sigterm_to_leader_stops_every_rank_cleanly(void **state)
{
	(void)state;
	char cluster[512];
	write_cluster("three.yaml", 2, "rank", cluster, sizeof(cluster));
	struct running *r = running_new();
	start(r, 3, cluster);
	/* Idle means serving: the role table comes before the model load and the
	 * selector's measurements, which keep the ranks busy. */
	assert_true(read_until(r, "specd: serving on", 1, 120.0) ||
		    (print_message("%s", r->out), false));
	int pids[3];
	for (int i = 0; i < 3; i++)
		pids[i] = pid_of_rank(r->out, i);
	assert_non_null(strstr(r->out, "leader"));
	assert_non_null(strstr(r->out, "target"));
	assert_non_null(strstr(r->out, "draft"));
	for (int i = 0; i < 3; i++)
		assert_true(pids[i] > 0);

	/* Idle ranks sleep: over 1.5 s none may use more than a sliver of a core (a
	 * spinning Open MPI wait would take most of one). */
	double before[3], after[3];
	for (int i = 0; i < 3; i++)
		before[i] = cpu_seconds(pids[i]);
	read_until(r, "\x01never", 1, 1.5); /* lets 1.5 s pass while reading output */
	for (int i = 0; i < 3; i++) {
		after[i] = cpu_seconds(pids[i]);
		assert_true(before[i] >= 0 && after[i] >= 0);
		if (after[i] - before[i] > 0.25)
			fail_msg("rank %d used %.2f s of CPU in 1.5 s while idle", i,
				 after[i] - before[i]);
	}

	assert_int_equal(kill(pids[0], SIGTERM), 0);
	int rc = finish(r, 30.0);
	if (rc != 0)
		print_message("%s", r->out);
	assert_int_equal(rc, 0);
	assert_int_equal(count(r->out, "stopped cleanly"), 3);
	/* The selector measured (both links, the target) and said what it chose and why:
	 * method auto, so the table's baseline is reported beside the choice. */
	assert_non_null(strstr(r->out, "link leader<->draft rank 2: latency"));
	assert_non_null(strstr(r->out, "target group all-reduce: latency"));
	assert_non_null(strstr(r->out, "(rescaled to the target group)"));
	assert_non_null(strstr(r->out, "(measured)"));
	assert_non_null(strstr(r->out, "because chosen: "));
	assert_non_null(strstr(r->out, "the origin rule table would run ngram K 5"));
	assert_non_null(strstr(r->out, "excluded: not configured (speculation.draft_model.model"));
}

/* The next reply of Generate call `call` (false when none comes within timeout_s):
 * its token count, and its finish reason when it is the last (else -1). */
/* The next reply of Generate call `call`: its token count, and its finish reason (-1
 * before the last reply). With `stats`, the last reply's time to first token and its
 * time running (generated tokens / tokens per second) go to stats[0] and stats[1]. */
static bool next_reply_stats(struct client *c, uint64_t call, double timeout_s,
			     size_t *n_tokens, int *finish, double *stats)
{
	Specd__V1__Envelope *env = NULL;
	struct specd_error err;
	if (client_recv(c, &env, timeout_s, &err) != SPECD_OK)
		return false;
	assert_int_equal(env->call_id, call);
	assert_true(!env->has_code || env->code == SPECD__V1__CODE__OK);
	bool end = env->has_end && env->end;
	Specd__V1__GenerateResponse *r = specd__v1__generate_response__unpack(
		NULL, env->payload.len, env->payload.data);
	specd__v1__envelope__free_unpacked(env, NULL);
	assert_non_null(r);
	*n_tokens = r->n_tokens;
	*finish = end ? (int)r->finish_reason : -1;
	if (end && stats && r->stats) {
		stats[0] = r->stats->time_to_first_token_s;
		stats[1] = r->stats->tokens_per_second > 0
				   ? r->stats->generated_tokens / r->stats->tokens_per_second
				   : 0;
	}
	specd__v1__generate_response__free_unpacked(r, NULL);
	return true;
}

static bool next_reply(struct client *c, uint64_t call, double timeout_s, size_t *n_tokens,
		       int *finish)
{
	return next_reply_stats(c, call, timeout_s, n_tokens, finish, NULL);
}

/* Sends a Generate of `prompt` for max_tokens on c; returns its call id. */
static uint64_t send_generate(struct client *c, const char *prompt, uint32_t max_tokens)
{
	Specd__V1__GenerateRequest req = SPECD__V1__GENERATE_REQUEST__INIT;
	char text[64];
	snprintf(text, sizeof(text), "%s", prompt);
	req.prompt = text;
	req.has_max_tokens = 1;
	req.max_tokens = max_tokens;
	uint64_t call;
	struct specd_error err;
	assert_int_equal(client_send(c, SPECD__V1__METHOD__GENERATE, &req.base, &call, &err),
			 SPECD_OK);
	return call;
}

/* Reads call's replies to the end; stats as next_reply_stats. */
static void finish_call(struct client *c, uint64_t call, double *stats)
{
	size_t n = 0;
	int finish = -1;
	while (finish < 0)
		assert_true(next_reply_stats(c, call, 60.0, &n, &finish, stats));
}

/* SIGTERM drains: the running job goes on. A second SIGTERM does not wait for it: its
 * stream ends with SERVER_SHUTDOWN well short of max_tokens, and every rank exits 0. The
 * model is a random one slow enough (100 MB of f32 weights a token) that the job is
 * still running when both signals come. First, with one slot, a job queued behind
 * another counts its wait in its time to first token. */
static void test_cluster__second_sigterm_ends_a_running_job_at_once(void **state)
{
	(void)state;
	enum { MAX_TOKENS = 3000 };
	char model[512], cluster[512], text[1536], sock[400], addr[420];
	snprintf(model, sizeof(model), "%s/slow.gguf", g_dir);
	const char *gen[] = {"--dim", "512", "--layers", "8", "--heads", "8", "--kv-heads", "8",
			     "--ffn", "1376", "--vocab", "512", "--ctx", "4096", "--type", "f32",
			     NULL};
	assert_int_equal(ts_gen_model(model, gen), 0);
	snprintf(sock, sizeof(sock), "%s/slow.sock", g_dir);
	snprintf(addr, sizeof(addr), "unix:%s", sock);
	snprintf(text, sizeof(text),
		 "cluster: {name: slow, log_level: info}\n"
		 "server: {listen: '%s', limits: {max_tokens: %d}}\n"
		 "target: {model: %s, tensor_parallel: 1, slots: 1}\ndraft: {placement: leader}\n"
		 "speculation: {method: none}\n", addr, MAX_TOKENS, model);
	assert_true(ts_write_file(g_dir, "slow.yaml", text, cluster, sizeof(cluster)));
	struct running *r = running_new();
	start(r, 1, cluster); /* plain decoding: the leader alone */
	assert_true(read_until(r, "specd: serving on", 1, 120.0) ||
		    (print_message("%s", r->out), false));
	int leader = pid_of_rank(r->out, 0);
	assert_true(leader > 0);

	struct client c, q;
	struct specd_error err;
	if (client_open(&c, addr, NULL, &err) != SPECD_OK ||
	    client_open(&q, addr, NULL, &err) != SPECD_OK)
		fail_msg("connect %s: %s", addr, err.msg);
	double first[2] = {0, 0}, queued[2] = {0, 0};
	uint64_t a = send_generate(&c, "Once upon a time", 12);
	uint64_t b = send_generate(&q, "Once upon a time", 1);
	finish_call(&c, a, first);
	finish_call(&q, b, queued);
	client_close(&q);
	print_message("the first job ran %.3f s; the one queued behind it reports %.3f s to its "
		      "first token\n", first[1], queued[0]);
	assert_true(first[1] > 0);
	assert_true(queued[0] >= 0.5 * first[1]);

	uint64_t call = send_generate(&c, "Once upon a time", MAX_TOKENS);
	size_t got = 0, n = 0;
	int finish_reason = -1;
	assert_true(next_reply(&c, call, 60.0, &n, &finish_reason)); /* running */
	got += n;
	assert_int_equal(kill(leader, SIGTERM), 0);
	/* Draining: the job goes on for the next half second. */
	double until = now_s() + 0.5;
	while (finish_reason < 0 && now_s() < until && next_reply(&c, call, 10.0, &n,
								   &finish_reason))
		got += n;
	assert_int_equal(finish_reason, -1);
	size_t at_second = got;
	assert_int_equal(kill(leader, SIGTERM), 0);
	while (finish_reason < 0 && next_reply(&c, call, 30.0, &n, &finish_reason))
		got += n;
	client_close(&c);
	assert_int_equal(finish_reason, SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN);
	assert_true(got < MAX_TOKENS);
	print_message("tokens: %zu when the second signal came, %zu in all\n", at_second, got);
	int rc = finish(r, 60.0);
	if (rc != 0 || count(r->out, "stopped cleanly") != 1)
		print_message("%s", r->out);
	assert_int_equal(rc, 0);
	assert_int_equal(count(r->out, "stopped cleanly"), 1);
	assert_non_null(strstr(r->out, "stopping now: ending 1 running"));
	/* the file sets no target.activations nor huge_pages: the defaults, q8 and auto
	 * (huge pages when the kernel offers them) */
	assert_non_null(strstr(r->out, "(1 shard, f32 weights, q8 activations"));
	assert_true((strstr(r->out, "q8 activations, in huge pages)") != NULL) ==
		    specd_huge_pages_offered());
	/* nor target.threads: auto, all of the machine's cores for its one rank */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	char threads[96];
	snprintf(threads, sizeof(threads), "%ld compute thread%s per target rank (target.threads: "
		 "auto", cores > 1 ? cores : 1, cores > 1 ? "s" : "");
	assert_non_null(strstr(r->out, threads));
}

/* With speculation.measure false the origin rule table decides, on the same memory
 * figures as the cost model: EAGLE counts the target's embedding and LM head beside its
 * checkpoint (stories260K: 2 x 512 x 64 16-bit values, 128 KiB), so a cap 64 KiB over
 * the checkpoint rules it out, where target_speedup 3 would have the table pick it.
 * The table's default rule then runs prompt lookup with n-grams up to 4, as the origin
 * says. The target is held as bf16 (target.dtype) and its quantised matmuls (none here)
 * read f32 activations (target.activations), which the load says. */
static void test_cluster__rule_table_with_the_same_memory_and_its_own_ngram(void **state)
{
	(void)state;
	char eagle[320], inner[400], cluster[512], text[1536];
	snprintf(eagle, sizeof(eagle), "%s/eagle", g_dir);
	assert_int_equal(ts_gen("specd-gen-heads", eagle,
				(const char *[]){"--eagle", "-m", g_model, NULL}), 0);
	snprintf(inner, sizeof(inner), "%s/model.safetensors", eagle);
	struct stat sb;
	assert_int_equal(stat(inner, &sb), 0);
	snprintf(text, sizeof(text),
		 "cluster: {name: rule, log_level: info}\n"
		 "server: {listen: 'unix:%s/rule.sock'}\n"
		 "target: {model: %s, dtype: bf16, activations: f32}\ndraft: {placement: leader}\n"
		 "speculation: {measure: false, eagle: {heads: %s}}\n"
		 "constraints: {target_speedup: 3, max_draft_memory: %lldB}\n",
		 g_dir, g_model, eagle, (long long)sb.st_size + 65536);
	assert_true(ts_write_file(g_dir, "rule.yaml", text, cluster, sizeof(cluster)));
	struct running *r = running_new();
	start(r, 1, cluster);
	assert_true(read_until(r, "specd: serving on", 1, 120.0) ||
		    (print_message("%s", r->out), false));
	/* The selector's report follows the "serving on" line; the leader writes all of it
	 * before it looks at signals, so the whole of it is read once the cluster ends. */
	assert_int_equal(kill(pid_of_rank(r->out, 0), SIGTERM), 0);
	int rc = finish(r, 30.0);
	const char *serving = strstr(r->out, "specd: serving on");
	bool eagle_runs = strstr(serving, "(method eagle") != NULL;
	bool capped = strstr(r->out, "constraints.max_draft_memory") != NULL;
	/* target.dtype, and target.activations as the CPU backend took it */
	bool bf16 = strstr(r->out, "(1 shard, bf16 weights, f32 activations") != NULL;
	/* the table's default rule: prompt lookup, n-grams up to 4 */
	bool ngram4 = strstr(serving, "(method ngram") &&
		      strstr(r->out, "n-grams of 2 to 4 tokens, as the rule says");
	if (eagle_runs || !capped || !bf16 || !ngram4)
		print_message("%s", r->out);
	assert_false(eagle_runs);
	assert_true(capped);
	assert_true(bf16);
	assert_true(ngram4);
	assert_int_equal(rc, 0);
}

/* The pids of the processes whose command line holds `needle` (up to cap). */
static int pids_running(const char *needle, int *pids, int cap)
{
	int n = 0;
	DIR *d = opendir("/proc");
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) && n < cap) {
		int pid = atoi(e->d_name);
		if (pid <= 0)
			continue;
		char path[64], cmd[4096];
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t k = fread(cmd, 1, sizeof(cmd) - 1, f);
		fclose(f);
		for (size_t i = 0; i < k; i++)
			cmd[i] = cmd[i] ? cmd[i] : ' ';
		cmd[k] = '\0';
		if (strstr(cmd, needle) && strstr(cmd, "daemon/specd ") && !strstr(cmd, "mpirun") &&
		    !strstr(cmd, "mpiexec"))
			pids[n++] = pid;
	}
	closedir(d);
	return n;
}

/* While rank 0 is still reading the cluster file (here a pipe nothing has written to
 * yet), the other ranks wait for it asleep, not spinning in a blocking broadcast; once
 * the file comes, the cluster starts as usual. */
static void test_cluster__ranks_wait_for_a_slow_cluster_file_asleep(void **state)
{
	(void)state;
	char fifo[400], real[512];
	snprintf(fifo, sizeof(fifo), "%s/slow-file.yaml", g_dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	write_cluster("slow-real.yaml", 2, "rank", real, sizeof(real));
	struct running *r = running_new();
	start(r, 3, fifo);
	int pids[8], n = 0;
	for (int i = 0; i < 200 && n < 3; i++) {
		specd_sleep(0.05);
		n = pids_running(fifo, pids, 8);
	}
	assert_int_equal(n, 3);
	/* All in their wait: start-up (MPI_Init, the loader) spends CPU a loaded machine may
	 * still be giving it, so the measure starts once a quarter second passes with each
	 * rank idle. Ranks that spin never pass; after 10 s they are measured anyway. */
	double last[3];
	for (int i = 0; i < 3; i++)
		last[i] = cpu_seconds(pids[i]);
	for (int tries = 0, quiet = 0; !quiet && tries < 40; tries++) {
		specd_sleep(0.25);
		quiet = 1;
		for (int i = 0; i < 3; i++) {
			double t = cpu_seconds(pids[i]);
			quiet &= t - last[i] < 0.01;
			last[i] = t;
		}
	}
	double before[3], after[3];
	for (int i = 0; i < 3; i++)
		before[i] = cpu_seconds(pids[i]);
	specd_sleep(1.5);
	for (int i = 0; i < 3; i++)
		after[i] = cpu_seconds(pids[i]);
	/* the file arrives: rank 0 reads it and the cluster comes up */
	char *text = NULL;
	FILE *src = fopen(real, "r");
	assert_non_null(src);
	text = calloc(1, 4096);
	size_t len = fread(text, 1, 4095, src);
	fclose(src);
	int fd = open(fifo, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	free(text);
	assert_true(read_until(r, "specd: serving on", 1, 120.0) ||
		    (print_message("%s", r->out), false));
	assert_int_equal(kill(pid_of_rank(r->out, 0), SIGTERM), 0);
	assert_int_equal(finish(r, 30.0), 0);
	for (int i = 0; i < 3; i++) {
		assert_true(before[i] >= 0 && after[i] >= 0);
		if (after[i] - before[i] > 0.25)
			fail_msg("pid %d used %.2f s of CPU in 1.5 s waiting for the cluster file",
				 pids[i], after[i] - before[i]);
	}
}

static void test_cluster__leader_placement_runs_on_two_ranks(void **state)
{
	(void)state;
	char cluster[512];
	write_cluster("two.yaml", 2, "leader", cluster, sizeof(cluster));
	struct running *r = running_new();
	start(r, 2, cluster);
	assert_true(read_until(r, "\n1 ", 1, 60.0) || (print_message("%s", r->out), false));
	assert_non_null(strstr(r->out, "leader+draft"));
	int leader = pid_of_rank(r->out, 0);
	assert_true(leader > 0);
	assert_int_equal(kill(leader, SIGINT), 0);
	assert_int_equal(finish(r, 30.0), 0);
	assert_int_equal(count(r->out, "stopped cleanly"), 2);
}

static void test_cluster__world_size_mismatch_fails_every_rank_once(void **state)
{
	(void)state;
	char cluster[512];
	write_cluster("mismatch.yaml", 2, "rank", cluster, sizeof(cluster));
	/* Each rank runs under a shell that reports its exit code, and mpirun is told not
	 * to kill the others when the first exits non-zero, so every rank's own exit
	 * code is seen. */
	char script[2048];
	snprintf(script, sizeof(script),
		 "%s --cluster %s; rc=$?; echo \"rank-exit $rc\"; exit $rc", g_specd, cluster);
	const char *argv[] = {g_mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
			"--mca", "orte_abort_on_non_zero_status", "0", "-np", "2", "/bin/sh",
			"-c", script, NULL};
	char *out = NULL;
	int rc = ts_run(argv, &out, 60.0);
	assert_non_null(out);
	if (count(out, "rank-exit 1") != 2)
		print_message("%s", out);
	assert_int_equal(count(out, "world size mismatch"), 1);
	assert_non_null(strstr(out, "started 2 ranks but the cluster file needs 3"));
	assert_int_equal(count(out, "rank-exit 1"), 2);
	free(out);

	/* And as a user runs it: mpirun itself exits non-zero, with the one message. */
	char np[] = "2";
	const char *plain[] = {g_mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to",
			       "none", "-np", np, g_specd, "--cluster", cluster, NULL};
	rc = ts_run(plain, &out, 60.0);
	assert_true(rc > 0);
	assert_int_equal(count(out, "world size mismatch"), 1);
	free(out);
}

/* A cluster that asks for GPUs stops with one message: no GPU here, or (on a machine
 * with one) that this version serves on the CPU only. mpirun exits non-zero and nothing
 * is served. */
static void test_cluster__device_cuda_refused_with_reason(void **state)
{
	(void)state;
	char text[1024], cluster[512];
	snprintf(text, sizeof(text),
		 "cluster: {name: gpu}\ntarget: {model: %s, tensor_parallel: 1, device: cuda}\n"
		 "draft: {placement: leader}\n", g_model);
	assert_true(ts_write_file(g_dir, "cuda.yaml", text, cluster, sizeof(cluster)));
	const char *argv[] = {g_mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to",
			      "none", "-np", "1", g_specd, "--cluster", cluster, NULL};
	char *out = NULL;
	int rc = ts_run(argv, &out, 60.0);
	assert_non_null(out);
	int said = count(out, "serves on the CPU only") + count(out, "has no usable GPU");
	if (rc <= 0 || said != 1)
		print_message("%s", out);
	assert_true(rc > 0);
	assert_int_equal(said, 1);
	assert_null(strstr(out, "serving on"));
	free(out);
}

static void test_check_config__valid_and_unknown_key(void **state)
{
	(void)state;
	char good[512], bad[512];
	write_cluster("good.yaml", 2, "rank", good, sizeof(good));
	const char *argv[] = {g_specd, "--check-config", good, NULL};
	char *out = NULL;
	assert_int_equal(ts_run(argv, &out, 30.0), 0);
	assert_non_null(strstr(out, "ok"));
	free(out);

	char text[1024];
	snprintf(text, sizeof(text), "target:\n  model: %s\n  tensor_paralel: 2\n", g_model);
	assert_true(ts_write_file(g_dir, "bad.yaml", text, bad, sizeof(bad)));
	const char *argv2[] = {g_specd, "--check-config", bad, NULL};
	assert_int_equal(ts_run(argv2, &out, 30.0), 1);
	char want[600];
	snprintf(want, sizeof(want), "%s:3: unknown key 'target.tensor_paralel'", bad);
	if (!strstr(out, want))
		fail_msg("expected '%s' in: %s", want, out);
	free(out);
}

static void test_cli__help_version_and_bad_arguments(void **state)
{
	(void)state;
	char *out = NULL;
	const char *help[] = {g_specd, "--help", NULL};
	assert_int_equal(ts_run(help, &out, 10.0), 0);
	assert_non_null(strstr(out, "--cluster FILE"));
	free(out);
	const char *version[] = {g_specd, "--version", NULL};
	assert_int_equal(ts_run(version, &out, 10.0), 0);
	assert_non_null(strstr(out, "specd "));
	free(out);
	const char *bad[] = {g_specd, "--frobnicate", NULL};
	assert_int_equal(ts_run(bad, &out, 10.0), 2);
	assert_non_null(strstr(out, "unknown argument '--frobnicate'"));
	free(out);
	const char *missing[] = {g_specd, "--check-config", "/nonexistent/x.yaml", NULL};
	assert_int_equal(ts_run(missing, &out, 10.0), 1);
	assert_non_null(strstr(out, "/nonexistent/x.yaml"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cli__help_version_and_bad_arguments),
		cmocka_unit_test(test_check_config__valid_and_unknown_key),
		cmocka_unit_test_teardown(test_cluster__sigterm_to_leader_stops_every_rank_cleanly,
					  running_end),
		cmocka_unit_test_teardown(test_cluster__second_sigterm_ends_a_running_job_at_once,
					  running_end),
		cmocka_unit_test_teardown(test_cluster__rule_table_with_the_same_memory_and_its_own_ngram,
					  running_end),
		cmocka_unit_test_teardown(test_cluster__ranks_wait_for_a_slow_cluster_file_asleep,
					  running_end),
		cmocka_unit_test_teardown(test_cluster__leader_placement_runs_on_two_ranks,
					  running_end),
		cmocka_unit_test(test_cluster__world_size_mismatch_fails_every_rank_once),
		cmocka_unit_test(test_cluster__device_cuda_refused_with_reason),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
