/* The daemon end to end under mpirun: Generate through the socket gives exactly the
 * tokens of plain greedy decoding in this process, stop strings, cancel from another
 * connection, Status, and hostile input of every kind (each followed by a check that
 * the next client is served), then Shutdown ending every rank with exit 0. */
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
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/client.h"
#include "daemon/runtime.h"
#include "drafters/engine.h"
#include "model/tokenizer.h"
#include "test_support.h"

#define TOKEN "s3cret-token"
#define MAX_CONNS 10

static char g_dir[256], g_model[512], g_sock[300], g_addr[320];
static pid_t g_mpirun = -1;
static int g_out = -1;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void connect_client(struct client *c, const char *token)
{
	struct specd_error err;
	if (client_open(c, g_addr, token, &err) != SPECD_OK)
		fail_msg("connect %s: %s", g_addr, err.msg);
}

static bool healthy(void)
{
	struct client c;
	struct specd_error err;
	if (client_open(&c, g_addr, TOKEN, &err) != SPECD_OK)
		return false;
	Specd__V1__HealthRequest h = SPECD__V1__HEALTH_REQUEST__INIT;
	Specd__V1__Envelope *env = NULL;
	bool ok = client_send(&c, SPECD__V1__METHOD__HEALTH, &h.base, NULL, &err) == SPECD_OK &&
		  client_recv(&c, &env, 10.0, &err) == SPECD_OK && !env->has_code;
	if (env)
		specd__v1__envelope__free_unpacked(env, NULL);
	client_close(&c);
	return ok;
}

static int setup(void **state)
{
	(void)state;
	if (!ts_model_path("stories260K.gguf", g_model, sizeof(g_model)) ||
	    !ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_sock, sizeof(g_sock), "%s/specd.sock", g_dir);
	snprintf(g_addr, sizeof(g_addr), "unix:%s", g_sock);
	char text[2048], path[512];
	snprintf(text, sizeof(text),
		 "cluster: {name: e2e}\n"
		 "server:\n  listen: unix:%s\n  auth_token: " TOKEN "\n"
		 "  limits: {frame_bytes: 64KiB, max_tokens: 200, jobs: 8, connections: %d}\n"
		 "target: {model: %s, tensor_parallel: 1, slots: 4, batch_tokens: 8}\n"
		 "draft: {placement: leader}\n"
		 "speculation: {method: ngram, num_speculative_tokens: 4}\n",
		 g_sock, MAX_CONNS, g_model);
	if (!ts_write_file(g_dir, "cluster.yaml", text, path, sizeof(path)))
		return -1;
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	char specd[512];
	snprintf(specd, sizeof(specd), "%s/daemon/specd", ts_binary_dir());
	g_mpirun = fork();
	if (g_mpirun == 0) {
		setpgid(0, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		execl(MPIEXEC_PATH, MPIEXEC_PATH, "--allow-run-as-root", "--oversubscribe",
		      "--bind-to", "none", "-np", "1", specd, "--cluster", path, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	g_out = fds[0];
	double end = now_s() + 60;
	while (now_s() < end) {
		if (access(g_sock, F_OK) == 0 && healthy())
			return 0;
		usleep(50000);
	}
	print_message("the daemon did not come up\n");
	return -1;
}

/* Reads everything mpirun printed (after it exited). */
static void dump_output(void)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(g_out, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		print_message("%s", buf);
	}
}

static int teardown(void **state)
{
	(void)state;
	if (g_mpirun > 0) {
		kill(-g_mpirun, SIGKILL);
		waitpid(g_mpirun, NULL, 0);
	}
	if (g_out >= 0)
		close(g_out);
	ts_rmtree(g_dir);
	return 0;
}

struct gen_result {
	uint32_t tokens[512];
	size_t n_tokens;
	char text[8192];
	Specd__V1__FinishReason finish;
	Specd__V1__Code code;
	uint64_t drafted;
	uint32_t generated;        /* from the stats */
	uint32_t spec_tokens;      /* from the stats */
	char method[32];
	float logprob[512];        /* each token's, when asked for */
	uint32_t top_first[512];   /* the most likely token at each step */
	size_t n_logprobs, n_top_min, n_top_max;
};

static uint64_t generate_send(struct client *c, Specd__V1__GenerateRequest *req)
{
	struct specd_error err;
	uint64_t call;
	assert_int_equal(client_send(c, SPECD__V1__METHOD__GENERATE, &req->base, &call, &err),
			 SPECD_OK);
	return call;
}

/* Collects every reply of Generate call `call` into out. */
static void generate_collect(struct client *c, uint64_t call, struct gen_result *out)
{
	memset(out, 0, sizeof(*out));
	out->n_top_min = SIZE_MAX;
	struct specd_error err;
	size_t tlen = 0;
	for (;;) {
		Specd__V1__Envelope *env = NULL;
		if (client_recv(c, &env, 60.0, &err) != SPECD_OK)
			fail_msg("generate: %s", err.msg);
		assert_int_equal(env->call_id, call);
		out->code = env->has_code ? env->code : SPECD__V1__CODE__OK;
		bool end = env->has_end && env->end;
		Specd__V1__GenerateResponse *r = specd__v1__generate_response__unpack(
			NULL, env->payload.len, env->payload.data);
		specd__v1__envelope__free_unpacked(env, NULL);
		assert_non_null(r);
		assert_true(r->n_logprobs == 0 || r->n_logprobs == r->n_tokens);
		for (size_t i = 0; i < r->n_logprobs && out->n_logprobs < 512; i++) {
			const Specd__V1__Logprobs *l = r->logprobs[i];
			out->logprob[out->n_logprobs] = l->logprob;
			out->top_first[out->n_logprobs++] = l->n_top ? l->top[0]->token : UINT32_MAX;
			if (l->n_top < out->n_top_min)
				out->n_top_min = l->n_top;
			if (l->n_top > out->n_top_max)
				out->n_top_max = l->n_top;
		}
		for (size_t i = 0; i < r->n_tokens && out->n_tokens < 512; i++)
			out->tokens[out->n_tokens++] = r->tokens[i];
		if (r->text) {
			size_t n = strlen(r->text);
			assert_true(tlen + n < sizeof(out->text));
			memcpy(out->text + tlen, r->text, n + 1);
			tlen += n;
		}
		if (end) {
			out->finish = r->finish_reason;
			if (r->stats) {
				out->drafted = r->stats->drafted;
				out->generated = r->stats->generated_tokens;
				out->spec_tokens = r->stats->spec_tokens;
				snprintf(out->method, sizeof(out->method), "%s",
					 r->stats->method ? r->stats->method : "");
			}
			specd__v1__generate_response__free_unpacked(r, NULL);
			return;
		}
		specd__v1__generate_response__free_unpacked(r, NULL);
	}
}

static void generate_req(struct client *c, Specd__V1__GenerateRequest *req,
			 struct gen_result *out)
{
	generate_collect(c, generate_send(c, req), out);
}

static void generate(struct client *c, const char *prompt, uint32_t max_tokens,
		     const char *stop, struct gen_result *out)
{
	Specd__V1__GenerateRequest req = SPECD__V1__GENERATE_REQUEST__INIT;
	char p[1024], s[64];
	snprintf(p, sizeof(p), "%s", prompt);
	req.prompt = p;
	req.has_max_tokens = 1;
	req.max_tokens = max_tokens;
	char *stops[1] = {s};
	if (stop) {
		snprintf(s, sizeof(s), "%s", stop);
		req.n_stop = 1;
		req.stop = stops;
	}
	generate_req(c, &req, out);
}

/* Plain greedy decoding in this process (method none): the reference, reading
 * activations as the suite's cluster file leaves them (target.activations: q8). */
static size_t reference_greedy(const char *prompt, uint32_t n, uint32_t *out)
{
	struct runtime_config rc = {.model_path = g_model, .act = KERN_ACT_Q8,
				    .method = DRAFT_METHOD_NONE};
	struct runtime rt;
	struct specd_error err;
	assert_int_equal(runtime_open(&rc, &rt, &err), SPECD_OK);
	int32_t ids[256];
	size_t n_ids = 0;
	assert_int_equal(tok_encode(rt.tok, prompt, strlen(prompt), true, ids, 256, &n_ids),
			 SPECD_OK);
	struct draft_job *job = NULL;
	assert_int_equal(draft_job_create(rt.engine, 0, &job, &err), SPECD_OK);
	struct draft_job_params p = {.sampling = {.top_p = 1.0f}, .max_tokens = n,
				     .eos = tok_eos(rt.tok)};
	assert_int_equal(draft_job_start(job, ids, (uint32_t)n_ids, &p, &err), SPECD_OK);
	while (draft_job_stop(job) == DRAFT_STOP_NONE)
		assert_int_equal(draft_job_step(job, &err), SPECD_OK);
	uint32_t got = 0;
	const int32_t *o = draft_job_output(job, &got);
	for (uint32_t i = 0; i < got; i++)
		out[i] = (uint32_t)o[i];
	draft_job_destroy(job);
	runtime_close(&rt);
	return got;
}

static void test_generate__greedy_equals_plain_decoding(void **state)
{
	(void)state;
	const char *prompts[] = {"Once upon a time", "Lily and Ben went to the park. Lily and Ben"};
	for (size_t i = 0; i < 2; i++) {
		struct client c;
		connect_client(&c, TOKEN);
		struct gen_result *r = calloc(1, sizeof(*r));
		generate(&c, prompts[i], 64, NULL, r);
		client_close(&c);
		assert_int_equal(r->code, SPECD__V1__CODE__OK);
		uint32_t want[512];
		size_t n = reference_greedy(prompts[i], 64, want);
		assert_int_equal(r->n_tokens, n);
		assert_memory_equal(r->tokens, want, n * sizeof(uint32_t));
		assert_true(strlen(r->text) > 20);
		free(r);
	}
}

static void test_generate__stop_string_cuts_text(void **state)
{
	(void)state;
	struct client c;
	connect_client(&c, TOKEN);
	struct gen_result *r = calloc(1, sizeof(*r));
	generate(&c, "Once upon a time", 64, "Lily", r);
	client_close(&c);
	assert_int_equal(r->finish, SPECD__V1__FINISH_REASON__STOP);
	assert_null(strstr(r->text, "Lily"));
	assert_string_equal(r->text, ", there was a little girl named ");
	free(r);
}

/* A Generate request for prompt with its own speculation (method NULL: the cluster's). */
static void spec_request(Specd__V1__GenerateRequest *req, Specd__V1__Speculation *sp,
			 char *prompt, uint32_t max_tokens, char *method)
{
	*req = (Specd__V1__GenerateRequest)SPECD__V1__GENERATE_REQUEST__INIT;
	*sp = (Specd__V1__Speculation)SPECD__V1__SPECULATION__INIT;
	req->prompt = prompt;
	req->has_max_tokens = 1;
	req->max_tokens = max_tokens;
	sp->method = method;
	req->speculation = sp;
}

/* A stop string completed inside a speculative step (ngram K 4 accepts runs of this
 * repetitive prompt): the tokens past the one that completed it are not sent, so the
 * tokens, their count and the text are plain decoding's (speculation none). */
static void test_generate__stop_inside_a_step_sends_plain_decodings_tokens(void **state)
{
	(void)state;
	char p[] = "Lily said, \"I want to play with the ball. I want to play with the ball. "
		   "I want to play with the ball.", stop[] = "ball", none[] = "none";
	char *stops[1] = {stop};
	struct gen_result *r[2];
	for (int i = 0; i < 2; i++) {
		Specd__V1__GenerateRequest req;
		Specd__V1__Speculation sp;
		spec_request(&req, &sp, p, 120, i ? none : NULL);
		req.n_stop = 1;
		req.stop = stops;
		struct client c;
		connect_client(&c, TOKEN);
		r[i] = calloc(1, sizeof(*r[i]));
		generate_req(&c, &req, r[i]);
		client_close(&c);
		assert_int_equal(r[i]->code, SPECD__V1__CODE__OK);
		assert_int_equal(r[i]->finish, SPECD__V1__FINISH_REASON__STOP);
	}
	assert_true(r[0]->drafted > 0);
	assert_int_equal(r[0]->generated, r[0]->n_tokens);
	assert_int_equal(r[1]->generated, r[1]->n_tokens);
	assert_int_equal(r[0]->n_tokens, r[1]->n_tokens);
	assert_memory_equal(r[0]->tokens, r[1]->tokens, r[1]->n_tokens * sizeof(uint32_t));
	assert_string_equal(r[0]->text, r[1]->text);
	free(r[0]);
	free(r[1]);
}

/* Sends raw bytes on a fresh connection and returns the first reply's code, or -1
 * when the server closed the connection without one. */
static int raw_exchange(const void *bytes, size_t n, bool expect_reply)
{
	struct client c;
	connect_client(&c, TOKEN);
	assert_int_equal(send(c.fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
	int code = -1;
	if (expect_reply) {
		Specd__V1__Envelope *env = NULL;
		struct specd_error err;
		if (client_recv(&c, &env, 10.0, &err) == SPECD_OK) {
			code = env->has_code ? (int)env->code : 0;
			specd__v1__envelope__free_unpacked(env, NULL);
		}
	}
	client_close(&c);
	return code;
}

static void test_hostile__frames_each_answered_and_next_client_served(void **state)
{
	(void)state;
	/* A frame announcing 2^32-1 bytes: refused as too large, the rest skipped. */
	const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
	assert_int_equal(raw_exchange(huge, sizeof(huge), true),
			 SPECD__V1__CODE__RESOURCE_EXHAUSTED);
	assert_true(healthy());
	/* Garbage that is no Envelope. */
	const uint8_t garbage[] = {0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff};
	assert_int_equal(raw_exchange(garbage, sizeof(garbage), true),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	assert_true(healthy());
	/* call_id (a varint) sent as bytes: a wrong wire type. */
	const uint8_t wrong[] = {0, 0, 0, 0, 4, 0x0a, 0x02, 'h', 'i'};
	assert_int_equal(raw_exchange(wrong, sizeof(wrong), true), SPECD__V1__CODE__INVALID_ARGUMENT);
	/* A bad flag byte: told, then hung up on. */
	const uint8_t flag[] = {9, 0, 0, 0, 0};
	assert_int_equal(raw_exchange(flag, sizeof(flag), true), SPECD__V1__CODE__INVALID_ARGUMENT);
	/* A truncated frame, then the client vanishes. */
	const uint8_t cut[] = {0, 0, 0, 0, 50, 0x08};
	raw_exchange(cut, sizeof(cut), false);
	assert_true(healthy());
}

static int call_code(const char *token, Specd__V1__Method m, const ProtobufCMessage *payload)
{
	struct client c;
	connect_client(&c, token);
	struct specd_error err;
	Specd__V1__Envelope *env = NULL;
	assert_int_equal(client_send(&c, m, payload, NULL, &err), SPECD_OK);
	assert_int_equal(client_recv(&c, &env, 30.0, &err), SPECD_OK);
	int code = env->has_code ? (int)env->code : 0;
	specd__v1__envelope__free_unpacked(env, NULL);
	client_close(&c);
	return code;
}

static void test_hostile__requests_refused_with_reasons(void **state)
{
	(void)state;
	Specd__V1__HealthRequest h = SPECD__V1__HEALTH_REQUEST__INIT;
	assert_int_equal(call_code("wrong", SPECD__V1__METHOD__HEALTH, &h.base),
			 SPECD__V1__CODE__UNAUTHENTICATED);
	assert_int_equal(call_code(NULL, SPECD__V1__METHOD__HEALTH, &h.base),
			 SPECD__V1__CODE__UNAUTHENTICATED);
	assert_int_equal(call_code(TOKEN, (Specd__V1__Method)42, &h.base),
			 SPECD__V1__CODE__UNIMPLEMENTED);

	Specd__V1__GenerateRequest g = SPECD__V1__GENERATE_REQUEST__INIT;
	char bad_utf8[] = "abc\xff\xfe";
	g.prompt = bad_utf8;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	char ok[] = "Once";
	g.prompt = ok;
	g.has_max_tokens = 1;
	g.max_tokens = 0;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	g.max_tokens = UINT32_MAX;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	/* Sampling out of range: a min_p above 1 keeps nothing. */
	Specd__V1__Sampling bad_min_p = SPECD__V1__SAMPLING__INIT;
	bad_min_p.has_temperature = bad_min_p.has_min_p = 1;
	bad_min_p.temperature = 0.8f;
	bad_min_p.min_p = 1.5f;
	g.max_tokens = 8;
	g.sampling = &bad_min_p;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	bad_min_p.min_p = 0.2f; /* in range: served */
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__OK);
	g.sampling = NULL;
	/* A prompt plus max_tokens past the context (2048 for stories260K). */
	char *longp = malloc(8000);
	for (int i = 0; i < 7999; i++)
		longp[i] = i % 2 ? ' ' : 'a';
	longp[7999] = '\0';
	g.prompt = longp;
	g.max_tokens = 200;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	free(longp);
	assert_true(healthy());
}

/* A request's own speculation (none, a smaller K) and its log-probabilities: the same
 * tokens as the cluster's setting, stats that say what ran, and what the cluster
 * cannot do refused with a reason. */
static void test_generate__speculation_override_and_logprobs(void **state)
{
	(void)state;
	const char *prompt = "Lily and Ben went to the park. Lily and Ben";
	uint32_t want[512];
	size_t n_want = reference_greedy(prompt, 48, want);
	char p[128], none[] = "none", ngram[] = "ngram", draft[] = "draft_model";
	snprintf(p, sizeof(p), "%s", prompt);
	const struct { char *method; int has_k; uint32_t k; uint32_t want_k; } cases[] = {
		{NULL, 0, 0, 4}, {none, 0, 0, 0}, {ngram, 1, 2, 2}, {NULL, 1, 1, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		Specd__V1__GenerateRequest req;
		Specd__V1__Speculation sp;
		spec_request(&req, &sp, p, 48, cases[i].method);
		req.has_logprobs = 1;
		req.logprobs = 2;
		sp.has_spec_tokens = cases[i].has_k;
		sp.spec_tokens = cases[i].k;
		struct client c;
		connect_client(&c, TOKEN);
		struct gen_result *r = calloc(1, sizeof(*r));
		generate_req(&c, &req, r);
		client_close(&c);
		assert_int_equal(r->code, SPECD__V1__CODE__OK);
		assert_int_equal(r->n_tokens, n_want);
		assert_memory_equal(r->tokens, want, n_want * sizeof(uint32_t));
		assert_int_equal(r->spec_tokens, cases[i].want_k);
		assert_string_equal(r->method, cases[i].want_k ? "ngram" : "none");
		if (!cases[i].want_k)
			assert_int_equal(r->drafted, 0);
		/* Greedy: each token is the most likely, its log-probability <= 0. */
		assert_int_equal(r->n_logprobs, n_want);
		assert_int_equal(r->n_top_min, 2);
		assert_int_equal(r->n_top_max, 2);
		for (size_t t = 0; t < n_want; t++) {
			assert_int_equal(r->top_first[t], want[t]);
			assert_true(r->logprob[t] <= 0.0f);
		}
		free(r);
	}
	/* A method the cluster has not loaded, a K above its own, too many logprobs. */
	Specd__V1__GenerateRequest g = SPECD__V1__GENERATE_REQUEST__INIT;
	Specd__V1__Speculation sp = SPECD__V1__SPECULATION__INIT;
	g.prompt = p;
	g.speculation = &sp;
	sp.method = draft;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__UNIMPLEMENTED);
	sp.method = NULL;
	sp.has_spec_tokens = 1;
	sp.spec_tokens = 5;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	g.speculation = NULL;
	g.has_logprobs = 1;
	g.logprobs = 21;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__GENERATE, &g.base),
			 SPECD__V1__CODE__INVALID_ARGUMENT);
	assert_true(healthy());
}

/* Continuous batching: more concurrent clients than KV slots (4), with different
 * prompts, lengths, speculation and sampling. The extra jobs queue; with 4 running, the
 * 8-token batch leaves each job 1 draft token a step instead of 4. Each greedy output
 * equals the same prompt decoded alone; a job cancelled mid-batch leaves the others'
 * outputs intact. */
static void test_batch__concurrent_clients_each_equal_their_solo_run(void **state)
{
	(void)state;
	enum { N = 7, CANCELLED = 5 };
	static const char *const prompts[N] = {
		"Once upon a time", "Lily and Ben went to the park. Lily and Ben",
		"The cat sat on the mat. The cat", "Tom had a red ball.", "One day, a little bird",
		"Sara liked to play with her doll.", "The sun was hot and the",
	};
	static const uint32_t lengths[N] = {120, 60, 90, 30, 150, 200, 75};
	struct client c[N];
	uint64_t call[N];
	char text[N][128], none[] = "none", rid[] = "batch-cancel-me";
	for (int i = 0; i < N; i++) {
		Specd__V1__GenerateRequest req = SPECD__V1__GENERATE_REQUEST__INIT;
		Specd__V1__Speculation sp = SPECD__V1__SPECULATION__INIT;
		Specd__V1__Sampling samp = SPECD__V1__SAMPLING__INIT;
		snprintf(text[i], sizeof(text[i]), "%s", prompts[i]);
		req.prompt = text[i];
		req.has_max_tokens = 1;
		req.max_tokens = lengths[i];
		if (i % 3 == 1) { /* this job alone without speculation */
			sp.method = none;
			req.speculation = &sp;
		}
		if (i % 3 == 2) { /* a smaller K */
			sp.has_spec_tokens = 1;
			sp.spec_tokens = 2;
			req.speculation = &sp;
		}
		if (i == 3) { /* sampled: only its length is checked */
			samp.has_temperature = samp.has_seed = 1;
			samp.temperature = 0.8f;
			samp.seed = 11;
			req.sampling = &samp;
		}
		if (i == CANCELLED)
			req.request_id = rid;
		connect_client(&c[i], TOKEN);
		call[i] = generate_send(&c[i], &req);
	}
	Specd__V1__CancelRequest cr = SPECD__V1__CANCEL_REQUEST__INIT;
	cr.request_id = rid;
	int code = call_code(TOKEN, SPECD__V1__METHOD__CANCEL, &cr.base);
	struct gen_result *r = calloc(1, sizeof(*r));
	for (int i = 0; i < N; i++) {
		generate_collect(&c[i], call[i], r);
		client_close(&c[i]);
		assert_int_equal(r->code, SPECD__V1__CODE__OK);
		if (i == CANCELLED) {
			/* Cancelled while queued or running: either way it says so (or it had
			 * finished first, when the cancel found nothing). */
			assert_true(code == SPECD__V1__CODE__OK || code == SPECD__V1__CODE__NOT_FOUND);
			assert_int_equal(r->finish, code == SPECD__V1__CODE__OK
							    ? SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT
							    : SPECD__V1__FINISH_REASON__LENGTH);
			continue;
		}
		if (i == 3) {
			assert_true(r->n_tokens >= 1 && r->n_tokens <= lengths[i]);
			continue;
		}
		uint32_t want[512];
		size_t n = reference_greedy(prompts[i], lengths[i], want);
		if (r->n_tokens != n || memcmp(r->tokens, want, n * sizeof(uint32_t)) != 0)
			fail_msg("job %d (\"%s\"): its output in the batch differs from its solo run",
				 i, prompts[i]);
	}
	free(r);
	assert_true(healthy());
}

static void test_hostile__trickled_frame_and_too_many_connections(void **state)
{
	(void)state;
	/* A Health call sent one byte at a time. */
	struct client c;
	connect_client(&c, TOKEN);
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = env.has_method = 1;
	env.call_id = 77;
	env.method = SPECD__V1__METHOD__HEALTH;
	char tok[] = TOKEN;
	env.auth_token = tok;
	struct specd_buf frame;
	specd_buf_init(&frame);
	assert_int_equal(wire_pack(&env, &frame), SPECD_OK);
	for (size_t i = 0; i < frame.len; i++) {
		assert_int_equal(send(c.fd, frame.data + i, 1, MSG_NOSIGNAL), 1);
		usleep(2000);
	}
	specd_buf_fini(&frame);
	Specd__V1__Envelope *got = NULL;
	struct specd_error err;
	assert_int_equal(client_recv(&c, &got, 10.0, &err), SPECD_OK);
	assert_int_equal(got->call_id, 77);
	specd__v1__envelope__free_unpacked(got, NULL);

	/* One connection over the limit is told so and closed; the others still work. */
	struct client many[MAX_CONNS];
	for (int i = 0; i < MAX_CONNS - 1; i++)
		connect_client(&many[i], TOKEN);
	struct client extra;
	connect_client(&extra, TOKEN);
	assert_int_equal(client_recv(&extra, &got, 10.0, &err), SPECD_OK);
	assert_int_equal(got->code, SPECD__V1__CODE__RESOURCE_EXHAUSTED);
	specd__v1__envelope__free_unpacked(got, NULL);
	client_close(&extra);
	client_close(&c);
	for (int i = 0; i < MAX_CONNS - 1; i++)
		client_close(&many[i]);
	double end = now_s() + 10;
	while (!healthy() && now_s() < end)
		usleep(20000);
	assert_true(healthy());
}

static void test_cancel__from_another_connection_and_by_disconnect(void **state)
{
	(void)state;
	struct client a, b;
	connect_client(&a, TOKEN);
	Specd__V1__GenerateRequest g = SPECD__V1__GENERATE_REQUEST__INIT;
	char p[] = "Once upon a time", rid[] = "job-to-cancel";
	g.prompt = p;
	g.request_id = rid;
	g.has_max_tokens = 1;
	g.max_tokens = 200;
	struct specd_error err;
	assert_int_equal(client_send(&a, SPECD__V1__METHOD__GENERATE, &g.base, NULL, &err),
			 SPECD_OK);
	Specd__V1__Envelope *env = NULL;
	assert_int_equal(client_recv(&a, &env, 30.0, &err), SPECD_OK); /* it is running */
	specd__v1__envelope__free_unpacked(env, NULL);
	connect_client(&b, TOKEN);
	Specd__V1__CancelRequest cr = SPECD__V1__CANCEL_REQUEST__INIT;
	cr.request_id = rid;
	assert_int_equal(client_send(&b, SPECD__V1__METHOD__CANCEL, &cr.base, NULL, &err), SPECD_OK);
	assert_int_equal(client_recv(&b, &env, 30.0, &err), SPECD_OK);
	int cancel_code = env->has_code ? (int)env->code : 0;
	specd__v1__envelope__free_unpacked(env, NULL);
	client_close(&b);
	/* Either it was cancelled, or it had already finished (200 tokens are quick). */
	Specd__V1__FinishReason finish = 0;
	for (;;) {
		assert_int_equal(client_recv(&a, &env, 30.0, &err), SPECD_OK);
		bool end = env->has_end && env->end;
		Specd__V1__GenerateResponse *r = specd__v1__generate_response__unpack(
			NULL, env->payload.len, env->payload.data);
		specd__v1__envelope__free_unpacked(env, NULL);
		if (end)
			finish = r->finish_reason;
		specd__v1__generate_response__free_unpacked(r, NULL);
		if (end)
			break;
	}
	if (cancel_code == 0)
		assert_int_equal(finish, SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT);
	else
		assert_int_equal(cancel_code, SPECD__V1__CODE__NOT_FOUND);
	client_close(&a);

	/* A client that disconnects mid-stream: the server goes on serving. */
	connect_client(&a, TOKEN);
	assert_int_equal(client_send(&a, SPECD__V1__METHOD__GENERATE, &g.base, NULL, &err),
			 SPECD_OK);
	client_close(&a);
	assert_true(healthy());
}

static void test_status__lists_ranks_and_decision(void **state)
{
	(void)state;
	struct client c;
	connect_client(&c, TOKEN);
	Specd__V1__StatusRequest s = SPECD__V1__STATUS_REQUEST__INIT;
	struct specd_error err;
	Specd__V1__Envelope *env = NULL;
	assert_int_equal(client_send(&c, SPECD__V1__METHOD__STATUS, &s.base, NULL, &err), SPECD_OK);
	assert_int_equal(client_recv(&c, &env, 10.0, &err), SPECD_OK);
	Specd__V1__StatusResponse *r =
		specd__v1__status_response__unpack(NULL, env->payload.len, env->payload.data);
	specd__v1__envelope__free_unpacked(env, NULL);
	assert_non_null(r);
	assert_string_equal(r->cluster, "e2e");
	assert_int_equal(r->n_ranks, 1);
	assert_string_equal(r->ranks[0]->role, "leader+draft");
	assert_string_equal(r->decision->method, "ngram");
	assert_int_equal(r->decision->spec_tokens, 4);
	assert_true(r->tokens_generated > 0);
	/* The file fixes K: the online selector says it is off and why. */
	assert_non_null(r->adaptation);
	assert_false(r->adaptation->active);
	assert_int_equal(r->adaptation->spec_tokens, 4);
	assert_non_null(strstr(r->adaptation->why_off, "num_speculative_tokens fixes K at 4"));
	specd__v1__status_response__free_unpacked(r, NULL);
	client_close(&c);
}

static void test_shutdown__drains_and_every_rank_exits_zero(void **state)
{
	(void)state;
	Specd__V1__ShutdownRequest s = SPECD__V1__SHUTDOWN_REQUEST__INIT;
	assert_int_equal(call_code(TOKEN, SPECD__V1__METHOD__SHUTDOWN, &s.base), 0);
	int status = 0;
	double end = now_s() + 30;
	pid_t w = 0;
	while ((w = waitpid(g_mpirun, &status, WNOHANG)) == 0 && now_s() < end)
		usleep(20000);
	if (w != g_mpirun)
		fail_msg("mpirun did not exit after Shutdown");
	g_mpirun = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		dump_output();
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(g_sock, F_OK), -1); /* the socket file is removed */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generate__greedy_equals_plain_decoding),
		cmocka_unit_test(test_generate__stop_string_cuts_text),
		cmocka_unit_test(test_generate__stop_inside_a_step_sends_plain_decodings_tokens),
		cmocka_unit_test(test_hostile__frames_each_answered_and_next_client_served),
		cmocka_unit_test(test_hostile__requests_refused_with_reasons),
		cmocka_unit_test(test_generate__speculation_override_and_logprobs),
		cmocka_unit_test(test_batch__concurrent_clients_each_equal_their_solo_run),
		cmocka_unit_test(test_hostile__trickled_frame_and_too_many_connections),
		cmocka_unit_test(test_cancel__from_another_connection_and_by_disconnect),
		cmocka_unit_test(test_status__lists_ranks_and_decision),
		cmocka_unit_test(test_shutdown__drains_and_every_rank_exits_zero),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
