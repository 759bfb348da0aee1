/* Test helpers; see test_support.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

const char *ts_source_dir(void)
{
	const char *d = getenv("SPECD_SOURCE_DIR");
	return d ? d : ".";
}

const char *ts_binary_dir(void)
{
	const char *d = getenv("SPECD_BINARY_DIR");
	return d ? d : ".";
}

bool ts_model_path(const char *name, char *buf, size_t size)
{
	const char *models = getenv("SPECD_MODELS");
	if (models && *models) {
		snprintf(buf, size, "%s/%s", models, name);
		if (access(buf, R_OK) == 0)
			return true;
	}
	snprintf(buf, size, "%s/../shared/models/%s", ts_source_dir(), name);
	return access(buf, R_OK) == 0;
}

bool ts_mkdtemp(char *buf, size_t size)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(buf, size, "%s/specd-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(buf) != NULL;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void ts_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

bool ts_write_file(const char *dir, const char *name, const char *text, char *buf,
		   size_t size)
{
	snprintf(buf, size, "%s/%s", dir, name);
	FILE *f = fopen(buf, "w");
	if (!f)
		return false;
	size_t n = strlen(text);
	bool ok = fwrite(text, 1, n, f) == n;
	return fclose(f) == 0 && ok;
}

static char *g_captured;
static size_t g_captured_len;

static void capture_sink(const struct log_record *rec, void *user)
{
	(void)user;
	size_t n = strlen(rec->msg);
	char *p = realloc(g_captured, g_captured_len + n + 2);
	if (!p)
		return;
	g_captured = p;
	memcpy(g_captured + g_captured_len, rec->msg, n);
	g_captured_len += n;
	g_captured[g_captured_len++] = '\n';
	g_captured[g_captured_len] = '\0';
}

void ts_log_capture_begin(void)
{
	free(g_captured);
	g_captured = NULL;
	g_captured_len = 0;
	log_set_sink(capture_sink, NULL);
}

const char *ts_log_captured(void)
{
	return g_captured ? g_captured : "";
}

void ts_log_capture_end(void)
{
	log_set_sink(NULL, NULL);
	free(g_captured);
	g_captured = NULL;
	g_captured_len = 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ts_run(const char *const argv[], char **out, double timeout_s)
{
	int fds[2];
	*out = NULL;
	if (pipe(fds) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		setpgid(0, 0); /* own group, so a timeout kills mpirun and its ranks */
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		/* execv wants mutable strings; the child owns copies. */
		char *args[128];
		size_t n = 0;
		for (; argv[n] && n < 127; n++)
			args[n] = strdup(argv[n]);
		args[n] = NULL;
		execv(args[0], args);
		_exit(127);
	}
	close(fds[1]);
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	double deadline = now_s() + timeout_s;
	bool timed_out = false;
	for (;;) {
		double left = deadline - now_s();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		int r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		if (len + 1024 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		ssize_t n = read(fds[0], buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fds[0]);
	buf[len] = '\0';
	*out = buf;
	if (timed_out) {
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

char *ts_run_built(const char *rel, const char *out, const char *const *args, int *rc)
{
	char bin[600];
	const char *argv[40];
	char *text = NULL;
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/%s", ts_binary_dir(), rel);
	argv[n++] = bin;
	if (out) {
		argv[n++] = "-o";
		argv[n++] = out;
	}
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	*rc = ts_run(argv, &text, 120);
	if (!text)
		text = strdup("(no output)");
	return text;
}

int ts_gen(const char *tool, const char *out, const char *const *args)
{
	char rel[300];
	int rc;
	snprintf(rel, sizeof(rel), "tools/%s", tool);
	char *text = ts_run_built(rel, out, args, &rc);
	if (rc != 0)
		fprintf(stderr, "%s: %s\n", tool, text ? text : "(no output)");
	free(text);
	return rc;
}

int ts_gen_model(const char *out, const char *const *args)
{
	return ts_gen("specd-gen-model", out, args);
}

void *ts_read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	unsigned char *p = NULL;
	long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
	if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)size + 1)) &&
	    fread(p, 1, (size_t)size, f) == (size_t)size) {
		p[size] = '\0';
		*n = (size_t)size;
	} else {
		free(p);
		p = NULL;
	}
	fclose(f);
	return p;
}
