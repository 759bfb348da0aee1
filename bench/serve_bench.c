/* specd-bench-serve: load on a running daemon. C clients, each on its own connection
 * and thread, send Generate calls back to back (prompts taken round-robin from files)
 * for a fixed number of requests, with speculation as the cluster runs it or turned
 * off per request (speculation.method none), and the run reports requests/s, generated
 * tokens/s and time to first token. bench/run-serve.sh drives it; docs/performance.md
 * quotes it.
 *   specd-bench-serve --addr ADDR --clients N --requests R --max-tokens T
 *                     [--spec on|off] [--label TEXT] PROMPT_FILE...
 * One line of JSON per run on stdout. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/client.h"

#define MAX_CLIENTS 256
#define MAX_PROMPTS 64

struct bench {
	const char *addr, *label;
	int clients, requests, max_tokens;
	bool spec;
	char *prompts[MAX_PROMPTS];
	int n_prompts;
	pthread_mutex_t lock;
	int next;                /* the next request to send, over all clients */
	int done, failed;
	long tokens;
	double *ttft;            /* (requests) */
	int n_ttft;
};

/* One request on c; 0 on success with *tokens and *ttft filled. */
static int one_request(struct bench *b, struct client *c, const char *prompt, long *tokens,
		       double *ttft)
{
	Specd__V1__GenerateRequest req = SPECD__V1__GENERATE_REQUEST__INIT;
	Specd__V1__Speculation sp = SPECD__V1__SPECULATION__INIT;
	char none[] = "none";
	req.prompt = (char *)(uintptr_t)prompt;
	req.has_max_tokens = 1;
	req.max_tokens = (uint32_t)b->max_tokens;
	if (!b->spec) {
		sp.method = none;
		req.speculation = &sp;
	}
	struct specd_error err;
	uint64_t call;
	double t0 = specd_now();
	if (client_send(c, SPECD__V1__METHOD__GENERATE, &req.base, &call, &err) != SPECD_OK) {
		fprintf(stderr, "specd-bench-serve: %s\n", err.msg);
		return -1;
	}
	*tokens = 0;
	*ttft = 0;
	for (;;) {
		Specd__V1__Envelope *env = NULL;
		if (client_recv(c, &env, 600.0, &err) != SPECD_OK) {
			fprintf(stderr, "specd-bench-serve: %s\n", err.msg);
			return -1;
		}
		bool end = env->has_end && env->end;
		int bad = env->has_code && env->code != SPECD__V1__CODE__OK;
		if (bad)
			fprintf(stderr, "specd-bench-serve: %s\n", env->message ? env->message : "error");
		Specd__V1__GenerateResponse *r = specd__v1__generate_response__unpack(
			NULL, env->has_payload ? env->payload.len : 0,
			env->has_payload ? env->payload.data : NULL);
		specd__v1__envelope__free_unpacked(env, NULL);
		if (r) {
			if (r->n_tokens && *ttft == 0)
				*ttft = specd_now() - t0;
			*tokens += (long)r->n_tokens;
			specd__v1__generate_response__free_unpacked(r, NULL);
		}
		if (bad || !r)
			return -1;
		if (end)
			return 0;
	}
}

static void *client_main(void *arg)
{
	struct bench *b = arg;
	struct client c;
	struct specd_error err;
	if (client_open(&c, b->addr, getenv("SPECD_AUTH_TOKEN"), &err) != SPECD_OK) {
		fprintf(stderr, "specd-bench-serve: %s\n", err.msg);
		pthread_mutex_lock(&b->lock);
		b->failed++;
		pthread_mutex_unlock(&b->lock);
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&b->lock);
		int i = b->next < b->requests ? b->next++ : -1;
		pthread_mutex_unlock(&b->lock);
		if (i < 0)
			break;
		long tokens = 0;
		double ttft = 0;
		int rc = one_request(b, &c, b->prompts[i % b->n_prompts], &tokens, &ttft);
		pthread_mutex_lock(&b->lock);
		if (rc == 0) {
			b->done++;
			b->tokens += tokens;
			b->ttft[b->n_ttft++] = ttft;
		} else {
			b->failed++;
		}
		pthread_mutex_unlock(&b->lock);
		if (rc != 0)
			break;
	}
	client_close(&c);
	return NULL;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	char chunk[4096];
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = 2 * (len + n + 1);
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		memcpy(buf + len, chunk, n);
		len += n;
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double percentile(const double *v, int n, double p)
{
	if (n == 0)
		return 0;
	int i = (int)(p * (n - 1) + 0.5);
	return v[i];
}

static int usage(void)
{
	fprintf(stderr, "usage: specd-bench-serve --addr ADDR --clients N --requests R "
		"--max-tokens T [--spec on|off] [--label TEXT] PROMPT_FILE...\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct bench b = {.clients = 1, .requests = 8, .max_tokens = 64, .spec = true,
			  .label = ""};
	b.addr = getenv("SPECD_ADDR");
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return usage();
		if (strcmp(a, "--addr") == 0)
			b.addr = v;
		else if (strcmp(a, "--clients") == 0)
			b.clients = atoi(v);
		else if (strcmp(a, "--requests") == 0)
			b.requests = atoi(v);
		else if (strcmp(a, "--max-tokens") == 0)
			b.max_tokens = atoi(v);
		else if (strcmp(a, "--spec") == 0)
			b.spec = strcmp(v, "off") != 0;
		else if (strcmp(a, "--label") == 0)
			b.label = v;
		else
			return usage();
	}
	if (!b.addr || b.clients < 1 || b.clients > MAX_CLIENTS || b.requests < 1 ||
	    b.max_tokens < 1 || i >= argc)
		return usage();
	for (; i < argc && b.n_prompts < MAX_PROMPTS; i++) {
		if (!(b.prompts[b.n_prompts] = read_file(argv[i]))) {
			fprintf(stderr, "specd-bench-serve: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		b.n_prompts++;
	}
	b.ttft = calloc((size_t)b.requests, sizeof(double));
	pthread_t th[MAX_CLIENTS];
	pthread_mutex_init(&b.lock, NULL);
	double t0 = specd_now();
	for (int c = 0; c < b.clients; c++)
		pthread_create(&th[c], NULL, client_main, &b);
	for (int c = 0; c < b.clients; c++)
		pthread_join(th[c], NULL);
	double wall = specd_now() - t0;
	qsort(b.ttft, (size_t)b.n_ttft, sizeof(double), cmp_double);
	printf("{\"label\": \"%s\", \"clients\": %d, \"spec\": %s, \"requests\": %d, "
	       "\"failed\": %d, \"tokens\": %ld, \"wall_s\": %.3f, \"requests_per_s\": %.3f, "
	       "\"tokens_per_s\": %.2f, \"ttft_p50_s\": %.4f, \"ttft_p90_s\": %.4f}\n",
	       b.label, b.clients, b.spec ? "true" : "false", b.done, b.failed, b.tokens, wall,
	       b.done / wall, (double)b.tokens / wall, percentile(b.ttft, b.n_ttft, 0.5),
	       percentile(b.ttft, b.n_ttft, 0.9));
	for (int p = 0; p < b.n_prompts; p++)
		free(b.prompts[p]);
	free(b.ttft);
	pthread_mutex_destroy(&b.lock);
	return b.failed ? 1 : 0;
}
