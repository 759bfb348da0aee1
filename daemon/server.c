/* The leader's event loop: accept, read frames, answer Health and Status, validate
 * and forward Generate/Cancel/Shutdown to the compute thread, write replies back.
 * Errors go back as envelopes with a gRPC-style code; only a byte stream that cannot
 * be framed any more (a bad flag byte) or a client that stops reading its replies
 * loses its connection. A connection is freed by the loop between events, never in
 * the middle of handling one (redis' freeClientAsync). */
#define _GNU_SOURCE /* accept4 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "netaddr.h"
#include "request.h"
#include "wire.h"

/* A client that leaves this much unread is cut off rather than buffered for ever. */
#define SRV_MAX_PENDING_OUT (64u << 20)
#define SRV_READ_CHUNK 65536

struct conn {
	uint64_t id;
	int fd;
	struct wire_reader rd;
	struct specd_buf out; /* frames not yet written */
	uint32_t open_generates;
	uint32_t events;      /* the epoll mask registered now */
	bool read_closed;     /* the client half-closed: it still gets its replies */
	bool close_after_out; /* close once out is written (a refused connection) */
	bool dead;            /* closed; freed by the loop after the current event */
};

struct srv {
	struct srv_config cfg;
	char addr_text[300];
	struct netaddr addr;
	int listen_fd, epfd, stop_fd;
	struct mbox *commands; /* loop -> compute */
	struct mbox *replies;  /* compute -> loop */
	pthread_t thread;
	bool started;
	volatile int draining; /* read by the loop thread; any thread sets it */
	double flush_s;
	struct conn **conns;   /* limits.connections + 1 entries (the +1 to refuse one) */
	size_t n_conns;
	uint64_t next_conn_id;
	uint32_t open_generates;
	bool listen_paused; /* at the connection limit: not accepting until one goes */
	bool stopping;      /* loop thread: srv_stop was called */
};

void srv_cmd_free(struct srv_cmd *c)
{
	if (!c)
		return;
	if (c->generate)
		specd__v1__generate_request__free_unpacked(c->generate, NULL);
	if (c->cancel)
		specd__v1__cancel_request__free_unpacked(c->cancel, NULL);
	specd_free(c);
}

struct srv_reply *srv_reply_new(uint64_t conn_id, uint64_t call_id, Specd__V1__Method method,
				Specd__V1__Code code, const char *message,
				const ProtobufCMessage *payload, bool end)
{
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = 1;
	env.call_id = call_id;
	env.has_method = 1;
	env.method = method;
	char empty[] = "";
	if (code != SPECD__V1__CODE__OK) {
		env.has_code = 1;
		env.code = code;
		env.message = message ? (char *)(uintptr_t)message : empty;
	}
	env.has_end = 1;
	env.end = end;
	uint8_t *body = NULL;
	if (payload) {
		size_t n = protobuf_c_message_get_packed_size(payload);
		body = specd_malloc_array(n ? n : 1, 1);
		if (!body)
			return NULL;
		protobuf_c_message_pack(payload, body);
		env.has_payload = 1;
		env.payload.data = body;
		env.payload.len = n;
	}
	size_t n = specd__v1__envelope__get_packed_size(&env);
	struct srv_reply *r = specd_malloc_array(1, sizeof(*r) + WIRE_PREFIX_BYTES + n);
	if (r) {
		memset(r, 0, sizeof(*r));
		r->conn_id = conn_id;
		r->call_id = call_id;
		r->ends_generate = end && method == SPECD__V1__METHOD__GENERATE;
		struct specd_buf b = {.data = r->frame, .len = 0, .cap = WIRE_PREFIX_BYTES + n};
		wire_pack(&env, &b); /* fits: the buffer was sized for it */
		r->len = b.len;
	}
	specd_free(body);
	return r;
}

static void free_reply_item(struct mbox_item *it)
{
	specd_free(it);
}

static void free_cmd_item(struct mbox_item *it)
{
	srv_cmd_free((struct srv_cmd *)it);
}

enum specd_status srv_create(const struct srv_config *cfg, struct srv **out,
			     struct specd_error *err)
{
	struct srv *s = specd_calloc(1, sizeof(*s));
	if (!s)
		return specd_errorf(err, SPECD_NOMEM, "server: out of memory");
	s->cfg = *cfg;
	s->listen_fd = s->epfd = s->stop_fd = -1;
	s->next_conn_id = 1;
	enum specd_status st = netaddr_parse(cfg->listen, &s->addr, err);
	if (st != SPECD_OK)
		goto fail;
	netaddr_format(&s->addr, s->addr_text, sizeof(s->addr_text));
	s->conns = specd_calloc((size_t)cfg->limits.connections + 1, sizeof(*s->conns));
	if (!s->conns || mbox_create(&s->commands) != SPECD_OK ||
	    mbox_create(&s->replies) != SPECD_OK) {
		st = specd_errorf(err, SPECD_NOMEM, "server: out of memory");
		goto fail;
	}
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->epfd < 0 || s->stop_fd < 0) {
		st = specd_errorf(err, SPECD_IO, "server: epoll/eventfd: %s", strerror(errno));
		goto fail;
	}
	st = netaddr_listen(&s->addr, &s->listen_fd, err);
	if (st != SPECD_OK)
		goto fail;
	/* epoll tags: fd << 1 (even) for the listener and the two wake-up descriptors,
	 * connection id << 1 | 1 (odd) for clients. */
	int fds[] = {s->listen_fd, mbox_fd(s->replies), s->stop_fd};
	for (int i = 0; i < 3; i++) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)fds[i] << 1};
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, fds[i], &ev);
	}
	*out = s;
	return SPECD_OK;
fail:
	srv_destroy(s);
	return st;
}

void srv_set_status(struct srv *s, srv_status_fn *fn, void *user)
{
	s->cfg.status = fn;
	s->cfg.status_user = user;
}

const char *srv_address(const struct srv *s)
{
	return s->addr_text;
}

struct mbox *srv_commands(struct srv *s)
{
	return s->commands;
}

void srv_post(struct srv *s, struct srv_reply *r)
{
	mbox_put(s->replies, &r->link);
}

void srv_begin_drain(struct srv *s)
{
	__atomic_store_n(&s->draining, 1, __ATOMIC_RELEASE);
}

/* ---- connections ---- */

static struct conn *conn_find(struct srv *s, uint64_t id)
{
	for (size_t i = 0; i < s->n_conns; i++) {
		if (s->conns[i]->id == id)
			return s->conns[i];
	}
	return NULL;
}

static void conn_update_events(struct srv *s, struct conn *c)
{
	if (c->dead)
		return;
	uint32_t want = (c->read_closed ? 0 : EPOLLIN | EPOLLRDHUP) | (c->out.len ? EPOLLOUT : 0);
	if (want == c->events)
		return;
	struct epoll_event ev = {.events = want, .data.u64 = c->id << 1 | 1};
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->events = want;
}

/* Marks the connection closed now; its memory is freed by reap(). The compute thread
 * is told, so jobs of a client that went away are cancelled. */
static void conn_close(struct srv *s, struct conn *c, const char *why)
{
	if (c->dead)
		return;
	LOG_DEBUG("connection %llu closed: %s", (unsigned long long)c->id, why);
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->dead = true;
	if (c->open_generates) {
		struct srv_cmd *cmd = specd_calloc(1, sizeof(*cmd));
		if (cmd) {
			cmd->kind = SRV_CMD_CONN_CLOSED;
			cmd->conn_id = c->id;
			mbox_put(s->commands, &cmd->link);
		}
		/* Without memory the jobs still end at max_tokens: nothing leaks but time. */
	}
}

static void listen_pause(struct srv *s, bool pause)
{
	if (pause == s->listen_paused)
		return;
	if (pause) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
	} else {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)s->listen_fd << 1};
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev);
	}
	s->listen_paused = pause;
}

static void reap(struct srv *s)
{
	for (size_t i = 0; i < s->n_conns;) {
		struct conn *c = s->conns[i];
		if (!c->dead) {
			i++;
			continue;
		}
		wire_reader_fini(&c->rd);
		specd_buf_fini(&c->out);
		specd_free(c);
		s->conns[i] = s->conns[--s->n_conns];
	}
	if (s->listen_paused && s->n_conns <= s->cfg.limits.connections && !s->stopping)
		listen_pause(s, false);
}

static void conn_flush(struct srv *s, struct conn *c)
{
	while (!c->dead && c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
		if (n > 0) {
			specd_buf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		conn_close(s, c, "write failed");
		return;
	}
	if (!c->dead && c->out.len == 0 &&
	    (c->close_after_out || (c->read_closed && c->open_generates == 0)))
		conn_close(s, c, c->close_after_out ? "refused" : "client done");
	if (!c->dead)
		conn_update_events(s, c);
}

static void conn_queue(struct srv *s, struct conn *c, const uint8_t *frame, size_t len)
{
	if (c->dead)
		return;
	if (c->out.len + len > SRV_MAX_PENDING_OUT) {
		conn_close(s, c, "client is not reading its replies");
		return;
	}
	if (specd_buf_append(&c->out, frame, len) != SPECD_OK) {
		conn_close(s, c, "out of memory for replies");
		return;
	}
	conn_flush(s, c);
}

/* Sends an error (or a payload) built on the loop thread. */
static void reply(struct srv *s, struct conn *c, uint64_t call_id, Specd__V1__Method method,
		  Specd__V1__Code code, const char *message, const ProtobufCMessage *payload)
{
	struct srv_reply *r = srv_reply_new(c->id, call_id, method, code, message, payload, true);
	if (!r) {
		conn_close(s, c, "out of memory for a reply");
		return;
	}
	conn_queue(s, c, r->frame, r->len);
	specd_free(r);
}

static void accept_all(struct srv *s)
{
	for (;;) {
		/* conns has room for limits.connections + 1: the last one to be refused. */
		if (s->n_conns > s->cfg.limits.connections) {
			listen_pause(s, true);
			return;
		}
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				LOG_WARN("accept: %s", strerror(errno));
			return;
		}
		struct conn *c = specd_calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->id = s->next_conn_id++;
		c->fd = fd;
		wire_reader_init(&c->rd, (uint32_t)s->cfg.limits.frame_bytes);
		specd_buf_init(&c->out);
		c->events = EPOLLIN | EPOLLRDHUP;
		struct epoll_event ev = {.events = c->events, .data.u64 = c->id << 1 | 1};
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
		s->conns[s->n_conns++] = c;
		if (s->n_conns > s->cfg.limits.connections) {
			/* One over the limit: told why, then closed once that is written. */
			c->close_after_out = true;
			char msg[96];
			snprintf(msg, sizeof(msg), "too many connections (limits.connections is %u)",
				 s->cfg.limits.connections);
			reply(s, c, 0, SPECD__V1__METHOD__METHOD_UNSPECIFIED,
			      SPECD__V1__CODE__RESOURCE_EXHAUSTED, msg, NULL);
			reap(s);
		}
	}
}

/* ---- calls ---- */

static bool token_ok(const struct srv *s, const Specd__V1__Envelope *env)
{
	const char *want = s->cfg.auth_token;
	if (!want)
		return true;
	const char *got = env->auth_token ? env->auth_token : "";
	size_t n = strlen(want), m = strlen(got);
	/* Compare every byte whatever matches, so timing says nothing of the secret. */
	unsigned diff = (unsigned)(n ^ m);
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? got[i] : 0);
	return diff == 0;
}

static void handle_generate(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	Specd__V1__Method m = SPECD__V1__METHOD__GENERATE;
	if (__atomic_load_n(&s->draining, __ATOMIC_ACQUIRE)) {
		reply(s, c, env->call_id, m, SPECD__V1__CODE__UNAVAILABLE,
		      "the server is shutting down", NULL);
		return;
	}
	if (s->open_generates >= s->cfg.limits.jobs) {
		char msg[96];
		snprintf(msg, sizeof(msg), "too many jobs (limits.jobs is %u); try again later",
			 s->cfg.limits.jobs);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__RESOURCE_EXHAUSTED, msg, NULL);
		return;
	}
	Specd__V1__GenerateRequest *req = specd__v1__generate_request__unpack(
		NULL, env->has_payload ? env->payload.len : 0,
		env->has_payload ? env->payload.data : NULL);
	if (!req) {
		reply(s, c, env->call_id, m, SPECD__V1__CODE__INVALID_ARGUMENT,
		      "payload is not a GenerateRequest", NULL);
		return;
	}
	struct specd_error err;
	specd_error_clear(&err);
	if (req_validate(req, &s->cfg.limits, &err) != SPECD_OK) {
		specd__v1__generate_request__free_unpacked(req, NULL);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__INVALID_ARGUMENT, err.msg, NULL);
		return;
	}
	struct srv_cmd *cmd = specd_calloc(1, sizeof(*cmd));
	if (!cmd) {
		specd__v1__generate_request__free_unpacked(req, NULL);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__RESOURCE_EXHAUSTED, "out of memory",
		      NULL);
		return;
	}
	cmd->kind = SRV_CMD_GENERATE;
	cmd->conn_id = c->id;
	cmd->call_id = env->call_id;
	cmd->generate = req;
	c->open_generates++;
	s->open_generates++;
	mbox_put(s->commands, &cmd->link);
}

static void handle_cancel(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	Specd__V1__CancelRequest *req = specd__v1__cancel_request__unpack(
		NULL, env->has_payload ? env->payload.len : 0,
		env->has_payload ? env->payload.data : NULL);
	struct srv_cmd *cmd = req ? specd_calloc(1, sizeof(*cmd)) : NULL;
	if (!cmd) {
		if (req)
			specd__v1__cancel_request__free_unpacked(req, NULL);
		reply(s, c, env->call_id, SPECD__V1__METHOD__CANCEL,
		      req ? SPECD__V1__CODE__RESOURCE_EXHAUSTED : SPECD__V1__CODE__INVALID_ARGUMENT,
		      req ? "out of memory" : "payload is not a CancelRequest", NULL);
		return;
	}
	cmd->kind = SRV_CMD_CANCEL;
	cmd->conn_id = c->id;
	cmd->call_id = env->call_id;
	cmd->cancel = req;
	mbox_put(s->commands, &cmd->link);
}

static void handle_status(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	Specd__V1__Method m = SPECD__V1__METHOD__STATUS;
	if (!s->cfg.status) {
		reply(s, c, env->call_id, m, SPECD__V1__CODE__UNAVAILABLE, "no status yet", NULL);
		return;
	}
	struct specd_buf body;
	specd_buf_init(&body);
	if (s->cfg.status(s->cfg.status_user, &body) != SPECD_OK) {
		specd_buf_fini(&body);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__INTERNAL, "status unavailable", NULL);
		return;
	}
	/* The provider packed the StatusResponse; wrap the bytes as they are. */
	Specd__V1__Envelope out = SPECD__V1__ENVELOPE__INIT;
	out.has_call_id = out.has_method = out.has_payload = out.has_end = 1;
	out.call_id = env->call_id;
	out.method = m;
	out.payload.data = body.data;
	out.payload.len = body.len;
	out.end = 1;
	struct specd_buf frame;
	specd_buf_init(&frame);
	if (wire_pack(&out, &frame) == SPECD_OK)
		conn_queue(s, c, frame.data, frame.len);
	else
		conn_close(s, c, "out of memory for a reply");
	specd_buf_fini(&frame);
	specd_buf_fini(&body);
}

static void handle_envelope(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	Specd__V1__Method m = env->has_method ? env->method : SPECD__V1__METHOD__METHOD_UNSPECIFIED;
	if (!token_ok(s, env)) {
		reply(s, c, env->call_id, m, SPECD__V1__CODE__UNAUTHENTICATED,
		      "missing or wrong auth_token", NULL);
		return;
	}
	switch (m) {
	case SPECD__V1__METHOD__GENERATE:
		handle_generate(s, c, env);
		return;
	case SPECD__V1__METHOD__CANCEL:
		handle_cancel(s, c, env);
		return;
	case SPECD__V1__METHOD__STATUS:
		handle_status(s, c, env);
		return;
	case SPECD__V1__METHOD__HEALTH: {
		Specd__V1__HealthResponse h = SPECD__V1__HEALTH_RESPONSE__INIT;
		h.has_serving = 1;
		h.serving = !__atomic_load_n(&s->draining, __ATOMIC_ACQUIRE);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__OK, NULL, &h.base);
		return;
	}
	case SPECD__V1__METHOD__SHUTDOWN: {
		Specd__V1__ShutdownResponse r = SPECD__V1__SHUTDOWN_RESPONSE__INIT;
		r.has_draining_jobs = 1;
		r.draining_jobs = s->open_generates;
		reply(s, c, env->call_id, m, SPECD__V1__CODE__OK, NULL, &r.base);
		if (!__atomic_exchange_n(&s->draining, 1, __ATOMIC_ACQ_REL)) {
			struct srv_cmd *cmd = specd_calloc(1, sizeof(*cmd));
			if (cmd) {
				cmd->kind = SRV_CMD_DRAIN;
				mbox_put(s->commands, &cmd->link);
			}
			LOG_INFO("Shutdown requested by a client: draining %u job(s)",
				 s->open_generates);
		}
		return;
	}
	case SPECD__V1__METHOD__METHOD_UNSPECIFIED:
	default:
		break;
	}
	char msg[64];
	snprintf(msg, sizeof(msg), "unknown method %d", (int)m);
	reply(s, c, env->call_id, m, SPECD__V1__CODE__UNIMPLEMENTED, msg, NULL);
}

/* Reads what the socket has and handles every whole frame in it. */
static void conn_readable(struct srv *s, struct conn *c)
{
	uint8_t chunk[SRV_READ_CHUNK];
	for (;;) {
		ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
		if (n == 0) {
			/* End of the client's requests. A half-closed client still gets the
			 * replies to its open calls; one that is gone makes the next write fail,
			 * which cancels its jobs. Frames already read are still handled below. */
			c->read_closed = true;
			break;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(s, c, "read failed");
			break;
		}
		if (wire_reader_push(&c->rd, chunk, (size_t)n) != SPECD_OK) {
			conn_close(s, c, "out of memory for input");
			return;
		}
		if ((size_t)n < sizeof(chunk))
			break;
	}
	while (!c->dead) {
		enum wire_event ev;
		const uint8_t *frame = NULL;
		uint32_t len = 0;
		if (wire_reader_next(&c->rd, &ev, &frame, &len) != SPECD_OK) {
			/* The stream cannot be re-framed: say why, then hang up. */
			c->close_after_out = true;
			reply(s, c, 0, SPECD__V1__METHOD__METHOD_UNSPECIFIED,
			      SPECD__V1__CODE__INVALID_ARGUMENT, "bad frame flag byte", NULL);
			return;
		}
		if (ev == WIRE_NEED_MORE)
			break;
		if (ev == WIRE_TOO_LARGE || ev == WIRE_COMPRESSED) {
			char msg[128];
			if (ev == WIRE_TOO_LARGE)
				snprintf(msg, sizeof(msg), "frame of %u bytes is over limits.frame_bytes "
					 "(%llu)", len, (unsigned long long)s->cfg.limits.frame_bytes);
			else
				snprintf(msg, sizeof(msg), "compressed frames are not supported");
			reply(s, c, 0, SPECD__V1__METHOD__METHOD_UNSPECIFIED,
			      ev == WIRE_TOO_LARGE ? SPECD__V1__CODE__RESOURCE_EXHAUSTED
						   : SPECD__V1__CODE__UNIMPLEMENTED, msg, NULL);
			continue;
		}
		Specd__V1__Envelope *env = NULL;
		if (wire_unpack(frame, len, &env) != SPECD_OK) {
			reply(s, c, 0, SPECD__V1__METHOD__METHOD_UNSPECIFIED,
			      SPECD__V1__CODE__INVALID_ARGUMENT, "frame is not a specd.v1.Envelope",
			      NULL);
			continue;
		}
		handle_envelope(s, c, env);
		specd__v1__envelope__free_unpacked(env, NULL);
	}
	if (!c->dead && c->read_closed)
		conn_flush(s, c); /* closes it now if nothing is owed */
}

/* Replies from the compute thread: to their connection, if it is still there. */
static void deliver_replies(struct srv *s)
{
	struct mbox_item *it;
	while ((it = mbox_take(s->replies))) {
		struct srv_reply *r = (struct srv_reply *)it;
		struct conn *c = conn_find(s, r->conn_id);
		if (r->ends_generate) {
			s->open_generates--;
			if (c && c->open_generates)
				c->open_generates--;
		}
		if (c)
			conn_queue(s, c, r->frame, r->len);
		specd_free(r);
	}
}

static void *loop_main(void *arg)
{
	struct srv *s = arg;
	log_set_request(0);
	struct epoll_event evs[64];
	double stop_at = 0;
	for (;;) {
		int timeout_ms = s->stopping ? 20 : -1;
		int n = epoll_wait(s->epfd, evs, 64, timeout_ms);
		if (n < 0 && errno != EINTR) {
			LOG_ERROR("epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (!(tag & 1)) {
				int fd = (int)(tag >> 1);
				if (fd == s->listen_fd && !s->stopping)
					accept_all(s);
				else if (fd == mbox_fd(s->replies))
					deliver_replies(s);
				else if (fd == s->stop_fd && !s->stopping) {
					uint64_t v;
					ssize_t r = read(s->stop_fd, &v, sizeof(v));
					(void)r;
					s->stopping = true;
					stop_at = specd_now() + s->flush_s;
					listen_pause(s, true);
				}
				continue;
			}
			struct conn *c = conn_find(s, tag >> 1);
			if (!c || c->dead)
				continue;
			if (c->read_closed && (evs[i].events & (EPOLLERR | EPOLLHUP))) {
				conn_close(s, c, "client gone");
				continue;
			}
			if (evs[i].events & EPOLLOUT)
				conn_flush(s, c);
			if (!c->dead && !c->read_closed &&
			    (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
				conn_readable(s, c);
		}
		reap(s);
		if (s->stopping) {
			deliver_replies(s);
			bool pending = false;
			for (size_t i = 0; i < s->n_conns; i++)
				pending |= s->conns[i]->out.len > 0;
			if (!pending || specd_now() >= stop_at)
				break;
		}
	}
	for (size_t i = 0; i < s->n_conns; i++)
		conn_close(s, s->conns[i], "server stopping");
	reap(s);
	return NULL;
}

enum specd_status srv_start(struct srv *s)
{
	/* The loop thread must not take SIGINT/SIGTERM: the main thread handles them. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	int rc = pthread_create(&s->thread, NULL, loop_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return SPECD_IO;
	s->started = true;
	return SPECD_OK;
}

void srv_stop(struct srv *s, double flush_s)
{
	if (!s || !s->started)
		return;
	s->flush_s = flush_s;
	uint64_t one = 1;
	ssize_t r = write(s->stop_fd, &one, sizeof(one));
	(void)r;
	pthread_join(s->thread, NULL);
	s->started = false;
}

void srv_destroy(struct srv *s)
{
	if (!s)
		return;
	srv_stop(s, 0);
	for (size_t i = 0; i < s->n_conns; i++) {
		if (s->conns[i]->fd >= 0)
			close(s->conns[i]->fd);
		wire_reader_fini(&s->conns[i]->rd);
		specd_buf_fini(&s->conns[i]->out);
		specd_free(s->conns[i]);
	}
	specd_free(s->conns);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		if (s->addr.is_unix)
			unlink(s->addr.path);
	}
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	mbox_destroy(s->commands, free_cmd_item);
	mbox_destroy(s->replies, free_reply_item);
	specd_free(s);
}
