/* daemon/server: the loop thread against a fake compute thread, over a Unix socket. A
 * broken stream is read no more and closed; a flood of tiny frames cannot stall another
 * client; running out of descriptors pauses accepting instead of spinning; a half-closed
 * client still gets its Cancel reply; a drain (a signal's path) is ordered behind every
 * call already passed on; calls the compute thread will never take get UNAVAILABLE; one
 * connection holds at most limits.jobs_per_connection jobs; idle and slow clients are cut
 * off after limits.idle_seconds and limits.frame_seconds. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "daemon/client.h"
#include "daemon/server.h"
#include "test_support.h"

/* Generous: a loaded two-core machine under sanitizers. */
#define DEADLINE_S 30.0
#define MAX_SEEN 8192
#define MAX_HELD 64
#define MAX_CLIENTS 6
#define BIG_STATUS_BYTES 32768

/* The compute thread's stand-in: takes commands, records them and answers Generate and
 * Cancel with one last reply each, as sched.c does. */
struct fake {
	struct srv *srv;
	pthread_t thread;
	pthread_mutex_t mu;
	bool take;   /* false: commands stay in the mailbox (a compute thread that stopped) */
	bool parked; /* it saw take false and waits outside the mailbox */
	bool hold;   /* replies are kept until fake_release */
	bool quit;
	struct {
		enum srv_cmd_kind kind;
		uint64_t conn_id, call_id;
	} seen[MAX_SEEN];
	size_t n_seen;
	struct srv_reply *held[MAX_HELD];
	size_t n_held;
};

/* The Status provider: a payload of about `bytes`, or blocking the loop thread until the
 * test releases it. */
struct status_ctl {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool block, entered;
	size_t bytes;
	unsigned calls;
};

static char g_dir[256], g_addr[320];
static struct srv *g_srv;
static struct fake g_fake;
static struct status_ctl g_status;
static struct client g_cl[MAX_CLIENTS];
static pthread_t g_stopper;
static bool g_stopper_running;

/* Polls pred(arg), under mu when not NULL, until it holds; false at the deadline. */
static bool eventually(pthread_mutex_t *mu, bool (*pred)(const void *arg), const void *arg)
{
	double end = specd_now() + DEADLINE_S;
	for (;;) {
		if (mu)
			pthread_mutex_lock(mu);
		bool ok = pred(arg);
		if (mu)
			pthread_mutex_unlock(mu);
		if (ok)
			return true;
		if (specd_now() > end)
			return false;
		specd_sleep(0.002);
	}
}

static struct srv_reply *fake_answer(const struct srv_cmd *c)
{
	if (c->kind == SRV_CMD_GENERATE) {
		Specd__V1__GenerateResponse r = SPECD__V1__GENERATE_RESPONSE__INIT;
		r.has_finish_reason = 1;
		r.finish_reason = SPECD__V1__FINISH_REASON__LENGTH;
		return srv_reply_new(c->conn_id, c->call_id, SPECD__V1__METHOD__GENERATE,
				     SPECD__V1__CODE__OK, NULL, &r.base, true);
	}
	if (c->kind == SRV_CMD_CANCEL) {
		Specd__V1__CancelResponse r = SPECD__V1__CANCEL_RESPONSE__INIT;
		r.has_cancelled = 1;
		return srv_reply_new(c->conn_id, c->call_id, SPECD__V1__METHOD__CANCEL,
				     SPECD__V1__CODE__NOT_FOUND, "no such job", &r.base, true);
	}
	return NULL;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct mbox *in = srv_commands(f->srv);
	pthread_mutex_lock(&f->mu);
	while (!f->quit) {
		f->parked = !f->take;
		if (!f->take) {
			pthread_mutex_unlock(&f->mu);
			specd_sleep(0.002);
			pthread_mutex_lock(&f->mu);
			continue;
		}
		pthread_mutex_unlock(&f->mu);
		struct srv_cmd *c = (struct srv_cmd *)mbox_wait(in, 0.01);
		pthread_mutex_lock(&f->mu);
		if (!c)
			continue;
		if (f->n_seen < MAX_SEEN) {
			f->seen[f->n_seen].kind = c->kind;
			f->seen[f->n_seen].conn_id = c->conn_id;
			f->seen[f->n_seen].call_id = c->call_id;
			f->n_seen++;
		}
		struct srv_reply *r = fake_answer(c);
		if (r && f->hold && f->n_held < MAX_HELD)
			f->held[f->n_held++] = r;
		else if (r)
			srv_post(f->srv, r);
		srv_cmd_free(c);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static bool fake_parked(const void *arg)
{
	(void)arg;
	return g_fake.parked;
}

/* With take false, returns once the fake waits outside the mailbox, so that whatever
 * is sent from then on stays there. */
static void fake_set(bool take, bool hold)
{
	pthread_mutex_lock(&g_fake.mu);
	g_fake.take = take;
	g_fake.hold = hold;
	pthread_mutex_unlock(&g_fake.mu);
	if (!take)
		assert_true(eventually(&g_fake.mu, fake_parked, NULL));
}

static void fake_release(void)
{
	pthread_mutex_lock(&g_fake.mu);
	for (size_t i = 0; i < g_fake.n_held; i++)
		srv_post(g_srv, g_fake.held[i]);
	g_fake.n_held = 0;
	g_fake.hold = false;
	pthread_mutex_unlock(&g_fake.mu);
}

static bool fake_saw(const void *n)
{
	return g_fake.n_seen >= *(const size_t *)n;
}

/* Waits until the fake has taken n commands; false at the deadline. */
static bool fake_wait_seen(size_t n)
{
	return eventually(&g_fake.mu, fake_saw, &n);
}

/* Stops the fake as sched_run returns: what it has not taken stays in the mailbox. */
static void fake_stop(void)
{
	pthread_mutex_lock(&g_fake.mu);
	bool running = !g_fake.quit;
	g_fake.quit = true;
	pthread_mutex_unlock(&g_fake.mu);
	if (running)
		pthread_join(g_fake.thread, NULL);
}

static enum specd_status status_provider(void *user, struct specd_buf *out)
{
	struct status_ctl *st = user;
	pthread_mutex_lock(&st->mu);
	st->entered = true;
	while (st->block)
		pthread_cond_wait(&st->cv, &st->mu);
	size_t n = st->bytes;
	pthread_mutex_unlock(&st->mu);
	Specd__V1__StatusResponse r = SPECD__V1__STATUS_RESPONSE__INIT;
	char *name = specd_calloc(1, n + 1);
	if (!name)
		return SPECD_NOMEM;
	memset(name, 'x', n);
	r.cluster = name;
	size_t len = specd__v1__status_response__get_packed_size(&r);
	enum specd_status s = specd_buf_reserve(out, len);
	if (s == SPECD_OK) {
		specd__v1__status_response__pack(&r, out->data + out->len);
		out->len += len;
	}
	specd_free(name);
	pthread_mutex_lock(&st->mu);
	st->calls++; /* after the reply is built: the loop queues it before anything else */
	pthread_mutex_unlock(&st->mu);
	return s;
}

static void status_set(bool block, size_t bytes)
{
	pthread_mutex_lock(&g_status.mu);
	g_status.block = block;
	g_status.bytes = bytes;
	g_status.entered = false;
	pthread_cond_broadcast(&g_status.cv);
	pthread_mutex_unlock(&g_status.mu);
}

static bool status_entered(const void *arg)
{
	(void)arg;
	return g_status.entered;
}

static bool status_answered(const void *n)
{
	return g_status.calls >= *(const unsigned *)n;
}

static struct cfg_limits test_limits(void)
{
	struct cfg_limits l = {.frame_bytes = 65536, .prompt_tokens = 64, .max_tokens = 128,
			       .jobs = 8, .jobs_per_connection = 3, .connections = 16};
	return l;
}

static int setup_with(struct cfg_limits limits)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		g_cl[i].fd = -1;
	g_stopper_running = false;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_addr, sizeof(g_addr), "unix:%s/s.sock", g_dir);
	memset(&g_status, 0, sizeof(g_status));
	pthread_mutex_init(&g_status.mu, NULL);
	pthread_cond_init(&g_status.cv, NULL);
	struct srv_config sc = {.listen = g_addr, .limits = limits,
				.status = status_provider, .status_user = &g_status};
	struct specd_error err;
	if (srv_create(&sc, &g_srv, &err) != SPECD_OK) {
		print_message("srv_create: %s\n", err.msg);
		return -1;
	}
	memset(&g_fake, 0, sizeof(g_fake));
	g_fake.srv = g_srv;
	g_fake.take = true;
	pthread_mutex_init(&g_fake.mu, NULL);
	if (pthread_create(&g_fake.thread, NULL, fake_main, &g_fake) != 0)
		return -1;
	return srv_start(g_srv) == SPECD_OK ? 0 : -1;
}

static int setup(void **state)
{
	(void)state;
	return setup_with(test_limits());
}

/* limits.idle_seconds and limits.frame_seconds, short enough for a test and long
 * against the pauses of the clients that must not be cut off (TICK_S). */
#define TIMEOUT_S 1.0
#define TICK_S 0.05

static int setup_deadlines(void **state)
{
	(void)state;
	struct cfg_limits l = test_limits();
	l.idle_seconds = TIMEOUT_S;
	l.frame_seconds = TIMEOUT_S;
	return setup_with(l);
}

/* limits.idle_seconds alone: frame_seconds 0, no limit on a frame. */
static int setup_idle_only(void **state)
{
	(void)state;
	struct cfg_limits l = test_limits();
	l.idle_seconds = TIMEOUT_S;
	return setup_with(l);
}

static int teardown(void **state)
{
	(void)state;
	status_set(false, 0); /* a loop blocked in Status must be able to stop */
	for (int i = 0; i < MAX_CLIENTS; i++)
		client_close(&g_cl[i]); /* also ends a stop that waits on a client */
	if (g_stopper_running)
		pthread_join(g_stopper, NULL);
	fake_stop();
	srv_destroy(g_srv);
	g_srv = NULL;
	for (size_t i = 0; i < g_fake.n_held; i++)
		specd_free(g_fake.held[i]);
	pthread_mutex_destroy(&g_fake.mu);
	pthread_mutex_destroy(&g_status.mu);
	pthread_cond_destroy(&g_status.cv);
	ts_rmtree(g_dir);
	return 0;
}

static struct client *connect_client(int i)
{
	struct specd_error err;
	if (client_open(&g_cl[i], g_addr, NULL, &err) != SPECD_OK)
		fail_msg("connect %s: %s", g_addr, err.msg);
	return &g_cl[i];
}

static void send_call(struct client *c, Specd__V1__Method m, const ProtobufCMessage *payload)
{
	struct specd_error err;
	if (client_send(c, m, payload, NULL, &err) != SPECD_OK)
		fail_msg("send: %s", err.msg);
}

/* The next reply; fails the test unless it is one. */
static Specd__V1__Envelope *recv_reply(struct client *c)
{
	Specd__V1__Envelope *env = NULL;
	struct specd_error err;
	if (client_recv(c, &env, DEADLINE_S, &err) != SPECD_OK)
		fail_msg("no reply: %s", err.msg);
	return env;
}

/* Receives one reply and checks its method, code and end. */
static void expect_reply(struct client *c, Specd__V1__Method m, Specd__V1__Code code)
{
	Specd__V1__Envelope *env = recv_reply(c);
	assert_int_equal(env->method, m);
	assert_int_equal(env->has_code ? env->code : SPECD__V1__CODE__OK, code);
	assert_true(env->has_end && env->end);
	specd__v1__envelope__free_unpacked(env, NULL);
}

/* True once the server has closed c (its replies before that are read and dropped). */
static bool closed_by_server(struct client *c)
{
	for (;;) {
		Specd__V1__Envelope *env = NULL;
		struct specd_error err;
		enum specd_status st = client_recv(c, &env, DEADLINE_S, &err);
		if (st != SPECD_OK)
			return st == SPECD_IO;
		specd__v1__envelope__free_unpacked(env, NULL);
	}
}

static bool health_serving(struct client *c)
{
	Specd__V1__HealthRequest h = SPECD__V1__HEALTH_REQUEST__INIT;
	send_call(c, SPECD__V1__METHOD__HEALTH, &h.base);
	Specd__V1__Envelope *env = recv_reply(c);
	assert_int_equal(env->method, SPECD__V1__METHOD__HEALTH);
	Specd__V1__HealthResponse *h2 = specd__v1__health_response__unpack(
		NULL, env->payload.len, env->payload.data);
	assert_non_null(h2);
	assert_true(h2->has_serving && h2->has_uptime_s);
	assert_true(h2->uptime_s >= 0 && h2->uptime_s < 3600);
	bool serving = h2->serving;
	specd__v1__health_response__free_unpacked(h2, NULL);
	specd__v1__envelope__free_unpacked(env, NULL);
	return serving;
}

static void send_all(int fd, const void *data, size_t n)
{
	const uint8_t *p = data;
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		assert_true(k > 0);
		p += k;
		n -= (size_t)k;
	}
}

/* Makes the server hold replies for c that c does not read: `calls` Status calls of
 * BIG_STATUS_BYTES each, far beyond what the socket buffers take. Returns once the
 * server has built them all. */
static void pile_up_replies(struct client *c, unsigned calls)
{
	status_set(false, BIG_STATUS_BYTES);
	pthread_mutex_lock(&g_status.mu);
	unsigned want = g_status.calls + calls;
	pthread_mutex_unlock(&g_status.mu);
	Specd__V1__StatusRequest r = SPECD__V1__STATUS_REQUEST__INIT;
	for (unsigned i = 0; i < calls; i++)
		send_call(c, SPECD__V1__METHOD__STATUS, &r.base);
	assert_true(eventually(&g_status.mu, status_answered, &want));
}

/* A bad flag byte condemns the connection: the server reads nothing more from it (what
 * the client keeps sending stays in the socket, so the leader's memory does not grow)
 * and closes it, here once its flush deadline passes since the client reads nothing. */
static void test_condemned__bad_flag_stops_reading_and_closes(void **state)
{
	(void)state;
	struct client *x = connect_client(0);
	pile_up_replies(x, 100); /* the error reply waits behind 3 MiB of replies */
	const uint8_t bad[] = {7, 0, 0, 0, 1, 0};
	send_all(x->fd, bad, sizeof(bad));
	assert_int_equal(fcntl(x->fd, F_SETFL, fcntl(x->fd, F_GETFL) | O_NONBLOCK), 0);
	static uint8_t junk[65536];
	size_t sent = 0;
	bool closed = false;
	double end = specd_now() + 2 * DEADLINE_S;
	while (!closed && sent < (16u << 20) && specd_now() < end) {
		ssize_t k = send(x->fd, junk, sizeof(junk), MSG_NOSIGNAL);
		if (k > 0) {
			sent += (size_t)k;
		} else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			struct pollfd p = {.fd = x->fd, .events = POLLOUT};
			poll(&p, 1, 100);
		} else {
			closed = true; /* EPIPE or ECONNRESET: the server hung up */
		}
	}
	print_message("sent %zu bytes after the bad flag byte before the close\n", sent);
	assert_true(closed);
	assert_true(sent < (4u << 20)); /* socket buffers and one turn's read, no more */
	/* The next client is served as usual. */
	struct client *y = connect_client(1);
	assert_true(health_serving(y));
}

/* One client writes thousands of tiny calls at once; another client's call is handled
 * long before the flood is through, and every call of the flood is still answered
 * though no byte more arrives on its socket once the server has read it all. */
static void test_turns__flood_does_not_stall_another_client(void **state)
{
	(void)state;
	enum { N = 4000 };
	/* Hold the loop inside a Status call while both clients connect and write, so that
	 * it finds the whole flood waiting when it comes back. */
	status_set(true, 16);
	struct client *c = connect_client(0);
	Specd__V1__StatusRequest sr = SPECD__V1__STATUS_REQUEST__INIT;
	send_call(c, SPECD__V1__METHOD__STATUS, &sr.base);
	assert_true(eventually(&g_status.mu, status_entered, NULL));

	struct client *a = connect_client(1);
	struct specd_buf flood;
	specd_buf_init(&flood);
	for (uint64_t i = 1; i <= N; i++) {
		Specd__V1__CancelRequest cr = SPECD__V1__CANCEL_REQUEST__INIT;
		cr.has_call_id = 1;
		cr.call_id = i;
		uint8_t body[16];
		size_t n = specd__v1__cancel_request__pack(&cr, body);
		Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
		env.has_call_id = env.has_method = env.has_payload = 1;
		env.call_id = i;
		env.method = SPECD__V1__METHOD__CANCEL;
		env.payload.data = body;
		env.payload.len = n;
		assert_int_equal(wire_pack(&env, &flood), SPECD_OK);
	}
	send_all(a->fd, flood.data, flood.len);
	specd_buf_fini(&flood);
	struct client *b = connect_client(2);
	b->next_call = 1000000;
	Specd__V1__CancelRequest one = SPECD__V1__CANCEL_REQUEST__INIT;
	one.has_call_id = 1;
	one.call_id = 1;
	send_call(b, SPECD__V1__METHOD__CANCEL, &one.base);
	status_set(false, 16);

	expect_reply(b, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__NOT_FOUND);
	assert_true(fake_wait_seen(N + 1));
	size_t pos = SIZE_MAX;
	pthread_mutex_lock(&g_fake.mu);
	for (size_t i = 0; i < g_fake.n_seen; i++) {
		if (g_fake.seen[i].call_id == 1000000)
			pos = i;
	}
	pthread_mutex_unlock(&g_fake.mu);
	print_message("the other client's call was taken after %zu of the flood's %d\n", pos, N);
	assert_true(pos < N / 2);
	for (int i = 0; i < N; i++)
		expect_reply(a, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__NOT_FOUND);
	expect_reply(c, SPECD__V1__METHOD__STATUS, SPECD__V1__CODE__OK);
}

static unsigned g_accept_warnings;

static bool accept_warned(const void *arg)
{
	(void)arg;
	return __atomic_load_n(&g_accept_warnings, __ATOMIC_RELAXED) > 0;
}

static void count_accept_warnings(const struct log_record *rec, void *user)
{
	(void)user;
	if (rec->level == LOG_LEVEL_WARN && strncmp(rec->msg, "accept:", 7) == 0)
		__atomic_add_fetch(&g_accept_warnings, 1, __ATOMIC_RELAXED);
}

/* With every descriptor in use, accept fails while the client stays in the backlog:
 * the loop pauses accepting (one warning, not one per spin) and takes the client once
 * descriptors are free again. */
static void test_accept__out_of_descriptors_pauses_and_recovers(void **state)
{
	(void)state;
	struct rlimit saved, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	low = saved;
	if (low.rlim_cur > 256)
		low.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	static int fill[1024];
	size_t n_fill = 0;
	int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(base >= 0);
	while (n_fill < 1024) {
		int fd = dup(base);
		if (fd < 0)
			break;
		fill[n_fill++] = fd;
	}
	assert_int_equal(errno, EMFILE);
	assert_true(n_fill > 0);
	close(fill[--n_fill]); /* room for the client's socket, none for the server's */

	__atomic_store_n(&g_accept_warnings, 0, __ATOMIC_RELAXED);
	log_set_sink(count_accept_warnings, NULL);
	struct client *c = connect_client(0);
	Specd__V1__HealthRequest h = SPECD__V1__HEALTH_REQUEST__INIT;
	send_call(c, SPECD__V1__METHOD__HEALTH, &h.base);
	eventually(NULL, accept_warned, NULL);
	specd_sleep(0.5); /* a spinning loop would log thousands of times meanwhile */
	unsigned warned = __atomic_load_n(&g_accept_warnings, __ATOMIC_RELAXED);

	while (n_fill)
		close(fill[--n_fill]);
	close(base);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	print_message("%u accept warning(s)\n", warned);
	expect_reply(c, SPECD__V1__METHOD__HEALTH, SPECD__V1__CODE__OK);
	log_set_sink(NULL, NULL);
	assert_true(warned >= 1 && warned <= 2);
}

/* srv_create makes room for limits.connections descriptors when the hard limit allows,
 * and says so; when it does not, it warns. */
static void test_accept__open_file_limit_fits_connections(void **state)
{
	(void)state;
	struct rlimit saved, rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	rl = saved;
	rl.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	char addr[320];
	snprintf(addr, sizeof(addr), "unix:%s/limit.sock", g_dir);
	struct srv_config sc = {.listen = addr, .limits = test_limits()};
	sc.limits.connections = 1000;
	struct srv *s = NULL;
	struct specd_error err;
	ts_log_capture_begin();
	enum specd_status st = srv_create(&sc, &s, &err);
	char said[1024];
	snprintf(said, sizeof(said), "%s", ts_log_captured());
	ts_log_capture_end();
	srv_destroy(s);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	assert_int_equal(st, SPECD_OK);
	print_message("%s", said);
	if (saved.rlim_max >= 1000 + 1 + 128) {
		assert_true(rl.rlim_cur >= 1000 + 1 + 128);
		assert_non_null(strstr(said, "raised the open-file limit"));
	} else {
		assert_non_null(strstr(said, "RLIMIT_NOFILE"));
	}
}

/* A client that half-closes after a Cancel still gets the Cancel's reply, which the
 * compute thread sends later. */
static void test_half_close__cancel_reply_still_arrives(void **state)
{
	(void)state;
	fake_set(true, true);
	struct client *c = connect_client(0);
	Specd__V1__CancelRequest cr = SPECD__V1__CANCEL_REQUEST__INIT;
	cr.has_call_id = 1;
	cr.call_id = 5;
	send_call(c, SPECD__V1__METHOD__CANCEL, &cr.base);
	assert_true(fake_wait_seen(1));
	assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
	/* The server owes a reply, so it keeps the connection: nothing, not even the end of
	 * the stream, arrives while the compute thread holds it. */
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 300), 0);
	fake_release();
	expect_reply(c, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__NOT_FOUND);
	assert_true(closed_by_server(c)); /* and then it is done */
}

static void send_generate(struct client *c)
{
	Specd__V1__GenerateRequest g = SPECD__V1__GENERATE_REQUEST__INIT;
	g.prompt = (char *)(uintptr_t)"hi";
	send_call(c, SPECD__V1__METHOD__GENERATE, &g.base);
}

/* srv_begin_drain (what a signal does) drains through the loop: a Generate passed on
 * before it is taken before the drain command, so the compute thread cannot stop
 * without it; Generate calls after it get UNAVAILABLE. */
static void test_drain__ordered_behind_calls_passed_on(void **state)
{
	(void)state;
	fake_set(false, false);
	struct client *c = connect_client(0);
	send_generate(c);
	assert_true(health_serving(c)); /* the Generate is in the mailbox now */
	srv_begin_drain(g_srv);
	double end = specd_now() + DEADLINE_S;
	while (health_serving(c))
		assert_true(specd_now() < end);
	send_generate(c);
	expect_reply(c, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__UNAVAILABLE);
	fake_set(true, false);
	assert_true(fake_wait_seen(2));
	pthread_mutex_lock(&g_fake.mu);
	enum srv_cmd_kind first = g_fake.seen[0].kind, second = g_fake.seen[1].kind;
	pthread_mutex_unlock(&g_fake.mu);
	assert_int_equal(first, SRV_CMD_GENERATE);
	assert_int_equal(second, SRV_CMD_DRAIN);
	expect_reply(c, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
}

/* limits.jobs_per_connection: a connection's fourth open Generate is refused while the
 * others' are still taken, and its own are again once one of its calls has ended. */
static void test_jobs__one_connection_cannot_take_every_place(void **state)
{
	(void)state;
	fake_set(true, true); /* the fake takes calls, holds their replies */
	struct client *a = connect_client(0), *b = connect_client(1);
	for (int i = 0; i < 3; i++)
		send_generate(a);
	assert_true(fake_wait_seen(3));
	send_generate(a);
	expect_reply(a, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__RESOURCE_EXHAUSTED);
	send_generate(b);
	assert_true(fake_wait_seen(4)); /* b's was passed on */
	fake_release();
	for (int i = 0; i < 3; i++)
		expect_reply(a, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
	expect_reply(b, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
	send_generate(a);
	expect_reply(a, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
}

/* limits.idle_seconds: a connection with no call open that sends nothing is closed; one
 * whose Generate is still owed, or that keeps calling, stays open however long. */
static void test_idle__quiet_connection_closed_busy_ones_kept(void **state)
{
	(void)state;
	fake_set(true, true);
	struct client *quiet = connect_client(0), *owed = connect_client(1),
		      *chatty = connect_client(2);
	assert_true(health_serving(quiet));
	send_generate(owed);
	assert_true(fake_wait_seen(1));
	double end = specd_now() + 3 * TIMEOUT_S;
	while (specd_now() < end) {
		assert_true(health_serving(chatty));
		specd_sleep(TICK_S);
	}
	assert_true(closed_by_server(quiet));
	fake_release();
	expect_reply(owed, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
	assert_true(health_serving(chatty));
}

/* limits.idle_seconds also bounds how long replies may wait unread: a client that reads
 * none of its replies is cut off rather than holding them (and its jobs) for ever. */
static void test_idle__client_not_reading_is_cut_off(void **state)
{
	(void)state;
	struct client *x = connect_client(0);
	pile_up_replies(x, 100); /* more than the socket buffers take */
	specd_sleep(2 * TIMEOUT_S);
	assert_true(closed_by_server(x));
}

/* limits.frame_seconds: a frame trickled in byte by byte, each byte well inside the
 * idle time, is refused with DEADLINE_EXCEEDED once the frame's time is up; a frame
 * sent in two parts in time is served. */
static void test_frame__slow_frame_refused(void **state)
{
	(void)state;
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = env.has_method = 1;
	env.call_id = 1;
	env.method = SPECD__V1__METHOD__HEALTH;
	struct specd_buf f;
	specd_buf_init(&f);
	assert_int_equal(wire_pack(&env, &f), SPECD_OK);
	struct client *ok = connect_client(0), *slow = connect_client(1);
	send_all(ok->fd, f.data, 3);
	specd_sleep(TICK_S);
	send_all(ok->fd, f.data + 3, f.len - 3);
	expect_reply(ok, SPECD__V1__METHOD__HEALTH, SPECD__V1__CODE__OK);
	double end = specd_now() + 3 * TIMEOUT_S;
	for (size_t i = 0; i + 1 < f.len && specd_now() < end; i++) {
		struct pollfd p = {.fd = slow->fd, .events = POLLIN};
		if (poll(&p, 1, 0) == 1)
			break; /* the refusal came */
		send_all(slow->fd, f.data + i, 1);
		specd_sleep(TIMEOUT_S / 4);
	}
	specd_buf_fini(&f);
	expect_reply(slow, SPECD__V1__METHOD__METHOD_UNSPECIFIED,
		     SPECD__V1__CODE__DEADLINE_EXCEEDED);
	assert_true(closed_by_server(slow));
	assert_true(health_serving(connect_client(2)));
}

/* Connections are looked up by id (by bisection: the table stays in id order as
 * connections close): with some closed in between, every other one still gets its own
 * replies, those from the loop and those from the compute thread. */
static void test_conns__each_found_after_others_close(void **state)
{
	(void)state;
	for (int i = 0; i < MAX_CLIENTS; i++)
		connect_client(i);
	for (int i = 0; i < MAX_CLIENTS; i++)
		assert_true(health_serving(&g_cl[i])); /* all accepted */
	client_close(&g_cl[1]);
	client_close(&g_cl[4]);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (g_cl[i].fd < 0)
				continue;
			send_generate(&g_cl[i]);
			expect_reply(&g_cl[i], SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
			assert_true(health_serving(&g_cl[i]));
		}
		/* the first (oldest id) goes, two come with the newest ids */
		client_close(&g_cl[0]);
		connect_client(0);
		if (round == 0)
			connect_client(1);
	}
}

/* With frame_seconds 0, a frame begun and then abandoned does not hold the connection
 * past idle_seconds (a slow client must keep sending to keep it). */
static void test_idle__abandoned_frame_without_frame_limit(void **state)
{
	(void)state;
	struct client *c = connect_client(0);
	const uint8_t first = 0;
	send_all(c->fd, &first, 1);
	specd_sleep(2 * TIMEOUT_S);
	assert_true(closed_by_server(c));
}

/* A client that half-closes in the middle of a frame still gets the reply to the
 * Generate it sent before: the frame that can never complete starts no deadline. */
static void test_frame__half_close_mid_frame_keeps_owed_replies(void **state)
{
	(void)state;
	fake_set(true, true);
	struct client *c = connect_client(0);
	send_generate(c);
	assert_true(fake_wait_seen(1));
	const uint8_t part[] = {0, 0, 0, 0, 9, 8};
	send_all(c->fd, part, sizeof(part));
	assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
	specd_sleep(2 * TIMEOUT_S);
	fake_release();
	expect_reply(c, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__OK);
	assert_true(closed_by_server(c));
}

static void *stopper_main(void *arg)
{
	(void)arg;
	srv_stop(g_srv, DEADLINE_S);
	return NULL;
}

/* Once the compute thread has stopped taking commands, srv_stop answers the calls left
 * in the mailbox, and those read while it flushes, with UNAVAILABLE. */
static void test_stop__waiting_and_later_calls_get_unavailable(void **state)
{
	(void)state;
	fake_stop(); /* as sched_run returning: nothing more is taken */
	struct client *y = connect_client(0);
	send_generate(y);
	Specd__V1__CancelRequest cr = SPECD__V1__CANCEL_REQUEST__INIT;
	cr.has_call_id = 1;
	cr.call_id = 1;
	send_call(y, SPECD__V1__METHOD__CANCEL, &cr.base);
	assert_true(health_serving(y)); /* both calls are in the mailbox now */
	/* A client that reads nothing keeps the stopping loop flushing. */
	struct client *x = connect_client(1);
	pile_up_replies(x, 100);
	assert_int_equal(pthread_create(&g_stopper, NULL, stopper_main, NULL), 0);
	g_stopper_running = true;
	expect_reply(y, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__UNAVAILABLE);
	expect_reply(y, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__UNAVAILABLE);
	send_call(y, SPECD__V1__METHOD__CANCEL, &cr.base);
	expect_reply(y, SPECD__V1__METHOD__CANCEL, SPECD__V1__CODE__UNAVAILABLE);
	send_generate(y);
	expect_reply(y, SPECD__V1__METHOD__GENERATE, SPECD__V1__CODE__UNAVAILABLE);
	client_close(x); /* the flush ends: the loop stops and closes y */
	assert_true(closed_by_server(y));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_condemned__bad_flag_stops_reading_and_closes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_turns__flood_does_not_stall_another_client,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_accept__out_of_descriptors_pauses_and_recovers,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_accept__open_file_limit_fits_connections,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_close__cancel_reply_still_arrives,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain__ordered_behind_calls_passed_on,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop__waiting_and_later_calls_get_unavailable,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_jobs__one_connection_cannot_take_every_place,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle__quiet_connection_closed_busy_ones_kept,
						setup_deadlines, teardown),
		cmocka_unit_test_setup_teardown(test_idle__client_not_reading_is_cut_off,
						setup_deadlines, teardown),
		cmocka_unit_test_setup_teardown(test_frame__slow_frame_refused,
						setup_deadlines, teardown),
		cmocka_unit_test_setup_teardown(test_idle__abandoned_frame_without_frame_limit,
						setup_idle_only, teardown),
		cmocka_unit_test_setup_teardown(test_frame__half_close_mid_frame_keeps_owed_replies,
						setup_deadlines, teardown),
		cmocka_unit_test_setup_teardown(test_conns__each_found_after_others_close, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
