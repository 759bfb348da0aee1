/* The leader's event loop: accept, read frames, answer Health and Status, validate
 * and forward Generate/Cancel/Shutdown to the compute thread, write replies back.
 * Errors go back as envelopes with a gRPC-style code; only a byte stream that cannot
 * be framed any more (a bad flag byte) or a client that stops reading its replies
 * loses its connection. A connection is freed by the loop between events, never in
 * the middle of handling one (redis' freeClientAsync). Each turn of the loop gives
 * every ready connection a bounded share, so no client can stall the others. */
#define _GNU_SOURCE /* accept4 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
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
/* One connection's share of a loop turn: a client that sends megabytes of tiny frames
 * in one write is served a slice per turn, the other clients between slices. */
#define SRV_TURN_BYTES (4u * SRV_READ_CHUNK)
#define SRV_TURN_FRAMES 64
/* A condemned connection (bad stream, one over the limit) is closed this long after its
 * error reply was queued, even when the client does not read it. */
#define SRV_CONDEMNED_FLUSH_S 2.0
/* After accept fails for want of descriptors or memory: how long before trying again
 * (unless a connection closes first), and how often that is logged at most. */
#define SRV_ACCEPT_RETRY_S 0.1
#define SRV_ACCEPT_WARN_EVERY_S 10.0
/* Descriptors the leader holds besides client connections (MPI, the model, logs): an
 * estimate, only used to size RLIMIT_NOFILE at start-up. */
#define SRV_FD_RESERVE 128
/* While stopping, how often the loop checks whether everything is written. */
#define SRV_STOP_POLL_S 0.02
/* A connection's input and output buffers give back memory past this once empty: one
 * large frame or a burst of replies must not hold megabytes for the connection's life. */
#define SRV_KEEP_BYTES (4u * SRV_READ_CHUNK)

struct conn {
	uint64_t id;
	int fd;
	struct wire_reader rd; /* freed once the connection is condemned */
	struct specd_buf out;  /* frames not yet written: out.data[out_head..out.len) */
	size_t out_head;
	uint32_t open_calls;   /* Generate and Cancel calls whose last reply the compute
				* thread still owes */
	uint32_t open_generates; /* of them, Generate calls (limits.jobs_per_connection) */
	uint32_t events;       /* the epoll mask registered now */
	uint64_t turn;         /* the loop turn that last served it */
	double close_by;       /* condemned: closed then, written or not */
	double active_at;      /* a byte last passed either way (or it was accepted) */
	double out_since;      /* out not empty: since then the client has read nothing */
	double frame_since;    /* a frame half received: when it began (0: none) */
	bool read_closed;      /* the client half-closed: it still gets its replies */
	bool close_after_out;  /* condemned: nothing more is read; closed once out is
				* written (a broken stream, a refused connection) */
	bool backlog;          /* whole frames may wait in rd: served next turn even if
				* the socket brings nothing new (epoll would not say) */
	bool dead;             /* closed; freed by the loop after the current event */
};

struct srv {
	struct srv_config cfg;
	char addr_text[300];
	struct netaddr addr;
	int listen_fd, epfd, stop_fd, drain_fd;
	struct mbox *commands; /* loop -> compute */
	struct mbox *replies;  /* compute -> loop */
	struct srv_cmd *drain_cmd; /* made up front, so a drain never waits for memory;
				    * NULL once posted */
	pthread_t thread;
	bool started;
	double flush_s;
	struct conn **conns;   /* limits.connections + 1 entries (the +1 to refuse one),
				* in rising id order */
	size_t n_conns;
	uint64_t next_conn_id;
	uint64_t turn;         /* loop turns so far */
	uint32_t open_generates;
	double accept_retry_at;  /* accept ran short of a resource: paused until then */
	double accept_warned_at; /* the last accept warning (0: none yet) */
	uint32_t accept_unwarned; /* failures since then, not logged */
	bool listen_paused; /* not accepting: at the limit, backing off, or stopping */
	bool draining;      /* loop thread: new Generate calls get UNAVAILABLE */
	bool stopping;      /* loop thread: srv_stop was called */
	double t_created;   /* Health's uptime_s counts from here */
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
		r->end = end;
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

/* Every connection holds a descriptor. Raises the soft RLIMIT_NOFILE to what
 * limits.connections needs when the hard limit allows. Past the hard limit it only
 * warns: the need is an estimate (SRV_FD_RESERVE), and running out no longer harms the
 * loop (accept_backoff), it only makes new clients wait for a free descriptor, so
 * refusing to start would turn a soft limit into an outage. */
static void fd_limit_fit(uint32_t connections)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rlim_t need = (rlim_t)connections + 1 + SRV_FD_RESERVE, was = rl.rlim_cur;
	if (was >= need)
		return;
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) == 0) {
		LOG_INFO("raised the open-file limit from %llu to %llu for limits.connections %u",
			 (unsigned long long)was, (unsigned long long)rl.rlim_cur, connections);
		if (rl.rlim_cur >= need)
			return;
	} else {
		rl.rlim_cur = was;
	}
	LOG_WARN("limits.connections is %u, which needs about %llu open files, but RLIMIT_NOFILE "
		 "allows %llu (hard limit %llu): clients past that wait until a connection closes; "
		 "raise the limit (ulimit -n, systemd LimitNOFILE=) or lower limits.connections",
		 connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
		 (unsigned long long)rl.rlim_max);
}

enum specd_status srv_create(const struct srv_config *cfg, struct srv **out,
			     struct specd_error *err)
{
	struct srv *s = specd_calloc(1, sizeof(*s));
	if (!s)
		return specd_errorf(err, SPECD_NOMEM, "server: out of memory");
	s->cfg = *cfg;
	s->listen_fd = s->epfd = s->stop_fd = s->drain_fd = -1;
	s->next_conn_id = 1;
	s->t_created = specd_now();
	enum specd_status st = netaddr_parse(cfg->listen, &s->addr, err);
	if (st != SPECD_OK)
		goto fail;
	netaddr_format(&s->addr, s->addr_text, sizeof(s->addr_text));
	s->conns = specd_calloc((size_t)cfg->limits.connections + 1, sizeof(*s->conns));
	s->drain_cmd = specd_calloc(1, sizeof(*s->drain_cmd));
	if (!s->conns || !s->drain_cmd || mbox_create(&s->commands) != SPECD_OK ||
	    mbox_create(&s->replies) != SPECD_OK) {
		st = specd_errorf(err, SPECD_NOMEM, "server: out of memory");
		goto fail;
	}
	s->drain_cmd->kind = SRV_CMD_DRAIN;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->drain_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->epfd < 0 || s->stop_fd < 0 || s->drain_fd < 0) {
		st = specd_errorf(err, SPECD_IO, "server: epoll/eventfd: %s", strerror(errno));
		goto fail;
	}
	fd_limit_fit(cfg->limits.connections);
	st = netaddr_listen(&s->addr, &s->listen_fd, err);
	if (st != SPECD_OK)
		goto fail;
	/* epoll tags: fd << 1 (even) for the listener and the three wake-up descriptors,
	 * connection id << 1 | 1 (odd) for clients. */
	int fds[] = {s->listen_fd, mbox_fd(s->replies), s->stop_fd, s->drain_fd};
	for (int i = 0; i < 4; i++) {
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
	/* Only a wake-up: the loop itself starts the drain (begin_drain), so that it is
	 * ordered after every call the loop has already passed on. */
	uint64_t one = 1;
	ssize_t r = write(s->drain_fd, &one, sizeof(one));
	(void)r; /* fails only when the counter is full: a drain is asked already */
}

/* ---- connections ---- */

/* conns is in id order (accept appends rising ids, reap keeps the order), so a
 * connection is found by bisection: every socket event and reply looks one up. */
static struct conn *conn_find(struct srv *s, uint64_t id)
{
	size_t lo = 0, hi = s->n_conns;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->conns[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n_conns && s->conns[lo]->id == id ? s->conns[lo] : NULL;
}

static void conn_update_events(struct srv *s, struct conn *c)
{
	if (c->dead)
		return;
	bool reading = !c->read_closed && !c->close_after_out;
	uint32_t want = (reading ? EPOLLIN | EPOLLRDHUP : 0) | (c->out.len ? EPOLLOUT : 0);
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
	if (c->open_calls) {
		struct srv_cmd *cmd = specd_calloc(1, sizeof(*cmd));
		if (cmd) {
			cmd->kind = SRV_CMD_CONN_CLOSED;
			cmd->conn_id = c->id;
			mbox_put(s->commands, &cmd->link);
		}
		/* Without memory the jobs still end at max_tokens: nothing leaks but time. */
	}
}

/* Accepting pauses while stopping, at the connection limit, and for a moment after
 * accept ran short of a resource; this makes the listener's registration match. */
static void listen_update(struct srv *s)
{
	if (s->accept_retry_at > 0 && specd_now() >= s->accept_retry_at)
		s->accept_retry_at = 0;
	bool pause = s->stopping || s->n_conns > s->cfg.limits.connections ||
		     s->accept_retry_at > 0;
	if (pause == s->listen_paused)
		return;
	if (pause) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
	} else {
		struct epoll_event ev = {.events = EPOLLIN,
					 .data.u64 = (uint64_t)s->listen_fd << 1};
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev);
	}
	s->listen_paused = pause;
}

static void reap(struct srv *s)
{
	size_t kept = 0;
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (!c->dead) {
			s->conns[kept++] = c; /* in order: conn_find bisects */
			continue;
		}
		wire_reader_fini(&c->rd);
		specd_buf_fini(&c->out);
		specd_free(c);
	}
	bool freed = kept < s->n_conns;
	s->n_conns = kept;
	if (freed)
		s->accept_retry_at = 0; /* a descriptor came back: accepting may work again */
	listen_update(s);
}

/* The client half-closed, every call it made is answered, and no frame of it is left
 * unread: nothing more will pass. */
static bool conn_done(const struct conn *c)
{
	return c->read_closed && c->open_calls == 0 && !c->backlog;
}

static void conn_flush(struct srv *s, struct conn *c)
{
	while (!c->dead && c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_head, c->out.len - c->out_head,
				 MSG_NOSIGNAL);
		if (n > 0) {
			specd_buf_advance(&c->out, &c->out_head, (size_t)n);
			c->active_at = c->out_since = specd_now();
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		conn_close(s, c, "write failed");
		return;
	}
	if (c->out.len == 0)
		specd_buf_trim(&c->out, SRV_KEEP_BYTES);
	if (!c->dead && c->out.len == 0 && (c->close_after_out || conn_done(c)))
		conn_close(s, c, c->close_after_out ? "refused" : "client done");
	if (!c->dead)
		conn_update_events(s, c);
}

static void conn_queue(struct srv *s, struct conn *c, const uint8_t *frame, size_t len)
{
	if (c->dead || c->close_after_out)
		return; /* a condemned connection gets its one error reply, nothing after it */
	if (c->out.len - c->out_head + len > SRV_MAX_PENDING_OUT) {
		conn_close(s, c, "client is not reading its replies");
		return;
	}
	bool was_empty = c->out.len == 0;
	if (specd_buf_append(&c->out, frame, len) != SPECD_OK) {
		conn_close(s, c, "out of memory for replies");
		return;
	}
	if (was_empty)
		c->out_since = specd_now();
	/* With bytes already waiting, the socket is full and EPOLLOUT is armed: the loop
	 * writes when it drains, rather than trying (and failing) once per reply. */
	if (was_empty)
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

/* Gives up on a connection (a stream that cannot be framed, one over the limit): it is
 * read no more, since what it keeps sending would only pile up unread, gets one last
 * reply saying why, and is closed once that is written or after SRV_CONDEMNED_FLUSH_S. */
static void conn_condemn(struct srv *s, struct conn *c, Specd__V1__Code code, const char *why)
{
	c->backlog = false;
	c->close_by = specd_now() + SRV_CONDEMNED_FLUSH_S;
	wire_reader_fini(&c->rd);
	reply(s, c, 0, SPECD__V1__METHOD__METHOD_UNSPECIFIED, code, why, NULL);
	c->close_after_out = true;
	conn_flush(s, c); /* closes it if that was all; else drops EPOLLIN */
}

/* accept failed for want of something (descriptors, memory) or for a reason not
 * expected. The client waiting in the backlog keeps the listener readable, so trying
 * again at once would spin the loop: pause until a connection closes or
 * SRV_ACCEPT_RETRY_S passes, and log it at most every SRV_ACCEPT_WARN_EVERY_S. */
static void accept_backoff(struct srv *s, int err)
{
	double now = specd_now();
	s->accept_retry_at = now + SRV_ACCEPT_RETRY_S;
	listen_update(s);
	if (s->accept_warned_at > 0 && now - s->accept_warned_at < SRV_ACCEPT_WARN_EVERY_S) {
		s->accept_unwarned++;
		return;
	}
	char more[64] = "";
	if (s->accept_unwarned)
		snprintf(more, sizeof(more), " (%u more since the last warning)",
			 s->accept_unwarned);
	LOG_WARN("accept: %s; new clients wait until a connection closes or %.1f s pass%s",
		 strerror(err), SRV_ACCEPT_RETRY_S, more);
	s->accept_warned_at = now;
	s->accept_unwarned = 0;
}

static void accept_all(struct srv *s)
{
	for (;;) {
		/* conns has room for limits.connections + 1: the last one to be refused. */
		if (s->n_conns > s->cfg.limits.connections) {
			listen_update(s);
			return;
		}
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				accept_backoff(s, errno);
			return;
		}
		struct conn *c = specd_calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->id = s->next_conn_id++;
		c->fd = fd;
		c->active_at = specd_now();
		wire_reader_init(&c->rd, (uint32_t)s->cfg.limits.frame_bytes);
		specd_buf_init(&c->out);
		c->events = EPOLLIN | EPOLLRDHUP;
		struct epoll_event ev = {.events = c->events, .data.u64 = c->id << 1 | 1};
		epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
		s->conns[s->n_conns++] = c;
		if (s->n_conns > s->cfg.limits.connections) {
			/* One over the limit: told why, then closed once that is written. */
			char msg[96];
			snprintf(msg, sizeof(msg),
				 "too many connections (limits.connections is %u)",
				 s->cfg.limits.connections);
			conn_condemn(s, c, SPECD__V1__CODE__RESOURCE_EXHAUSTED, msg);
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

static void refuse_stopping(struct srv *s, struct conn *c, uint64_t call_id,
			    Specd__V1__Method m)
{
	reply(s, c, call_id, m, SPECD__V1__CODE__UNAVAILABLE, "the server is shutting down", NULL);
}

/* Stops new jobs and tells the compute thread, behind every call already passed to it,
 * so that it takes and finishes all of those before it stops: none is left unanswered.
 * A Shutdown call and srv_begin_drain (a signal) both come here, on the loop thread. */
static bool begin_drain(struct srv *s)
{
	if (s->draining)
		return false;
	s->draining = true;
	mbox_put(s->commands, &s->drain_cmd->link);
	s->drain_cmd = NULL;
	return true;
}

/* A call the compute thread owed has had its last reply; c is NULL once it is gone. */
static void call_ended(struct srv *s, struct conn *c, bool generate)
{
	if (generate)
		s->open_generates--;
	if (c && c->open_calls)
		c->open_calls--;
	if (c && generate && c->open_generates)
		c->open_generates--;
}

/* srv_stop: the compute thread takes no more commands, so the calls still waiting for
 * it would never be answered. Each gets UNAVAILABLE instead (as every Generate and
 * Cancel read from now on does: handle_generate, handle_cancel). */
static void refuse_waiting_calls(struct srv *s)
{
	struct mbox_item *it;
	while ((it = mbox_take(s->commands))) {
		struct srv_cmd *cmd = (struct srv_cmd *)it;
		bool generate = cmd->kind == SRV_CMD_GENERATE;
		if (generate || cmd->kind == SRV_CMD_CANCEL) {
			struct conn *c = conn_find(s, cmd->conn_id);
			call_ended(s, c, generate);
			Specd__V1__Method m = generate ? SPECD__V1__METHOD__GENERATE
						       : SPECD__V1__METHOD__CANCEL;
			if (c)
				refuse_stopping(s, c, cmd->call_id, m);
		}
		srv_cmd_free(cmd);
	}
}

static void handle_generate(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	Specd__V1__Method m = SPECD__V1__METHOD__GENERATE;
	if (s->draining || s->stopping) {
		refuse_stopping(s, c, env->call_id, m);
		return;
	}
	if (s->open_generates >= s->cfg.limits.jobs) {
		char msg[96];
		snprintf(msg, sizeof(msg), "too many jobs (limits.jobs is %u); try again later",
			 s->cfg.limits.jobs);
		reply(s, c, env->call_id, m, SPECD__V1__CODE__RESOURCE_EXHAUSTED, msg, NULL);
		return;
	}
	uint32_t per = s->cfg.limits.jobs_per_connection;
	if (per && c->open_generates >= per) {
		char msg[128];
		snprintf(msg, sizeof(msg), "this connection has %u jobs open "
			 "(limits.jobs_per_connection); try again when one ends", per);
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
	cmd->t_arrived = specd_now();
	cmd->generate = req;
	c->open_calls++;
	c->open_generates++;
	s->open_generates++;
	mbox_put(s->commands, &cmd->link);
}

static void handle_cancel(struct srv *s, struct conn *c, const Specd__V1__Envelope *env)
{
	if (s->stopping) {
		refuse_stopping(s, c, env->call_id, SPECD__V1__METHOD__CANCEL);
		return;
	}
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
	c->open_calls++; /* a half-closed client still waits for this reply */
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
		h.has_serving = h.has_uptime_s = 1;
		h.serving = !s->draining && !s->stopping;
		h.uptime_s = specd_now() - s->t_created;
		reply(s, c, env->call_id, m, SPECD__V1__CODE__OK, NULL, &h.base);
		return;
	}
	case SPECD__V1__METHOD__SHUTDOWN: {
		Specd__V1__ShutdownResponse r = SPECD__V1__SHUTDOWN_RESPONSE__INIT;
		r.has_draining_jobs = 1;
		r.draining_jobs = s->open_generates;
		reply(s, c, env->call_id, m, SPECD__V1__CODE__OK, NULL, &r.base);
		if (begin_drain(s))
			LOG_INFO("Shutdown requested by a client: draining %u job(s)",
				 s->open_generates);
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

/* Handles whole frames from c's reader while *budget lasts. True when every buffered
 * frame is handled and the reader needs more bytes; false when the connection closed or
 * was condemned, or the budget ran out (then backlog brings it back next turn). */
static bool conn_frames(struct srv *s, struct conn *c, uint32_t *budget)
{
	while (!c->dead && !c->close_after_out) {
		if (*budget == 0) {
			c->backlog = true;
			return false;
		}
		enum wire_event ev;
		const uint8_t *frame = NULL;
		uint32_t len = 0;
		if (wire_reader_next(&c->rd, &ev, &frame, &len) != SPECD_OK) {
			/* The stream cannot be re-framed: say why, then hang up. */
			conn_condemn(s, c, SPECD__V1__CODE__INVALID_ARGUMENT,
				     "bad frame flag byte");
			return false;
		}
		if (ev == WIRE_NEED_MORE) {
			c->backlog = false;
			return true;
		}
		(*budget)--;
		if (ev == WIRE_TOO_LARGE || ev == WIRE_COMPRESSED) {
			char msg[128];
			if (ev == WIRE_TOO_LARGE)
				snprintf(msg, sizeof(msg),
					 "frame of %u bytes is over limits.frame_bytes (%llu)", len,
					 (unsigned long long)s->cfg.limits.frame_bytes);
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
	return false;
}

/* One connection's share of a loop turn: the frames it has buffered, then what its
 * socket holds, at most SRV_TURN_FRAMES frames and SRV_TURN_BYTES bytes. Bytes left in
 * the socket make epoll (level-triggered) report it again; frames left in the reader
 * set backlog, which the loop serves without waiting for epoll. Socket bytes are read
 * only once the reader is through its frames, so it never holds more than one frame
 * and one read. */
static void conn_serve(struct srv *s, struct conn *c)
{
	c->turn = s->turn;
	double now = specd_now();
	uint32_t budget = SRV_TURN_FRAMES;
	size_t bytes = 0;
	bool drained = false;
	uint8_t chunk[SRV_READ_CHUNK];
	while (conn_frames(s, c, &budget) && !c->read_closed && !drained &&
	       bytes < SRV_TURN_BYTES) {
		ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
		if (n == 0) {
			/* End of the client's requests. A half-closed client still gets the
			 * replies to its open calls; one that is gone makes the next write fail,
			 * which cancels its jobs. */
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
		bytes += (size_t)n;
		c->active_at = now;
		drained = (size_t)n < sizeof(chunk); /* its frames are still handled */
	}
	if (!c->dead && !c->close_after_out) {
		/* A frame half received starts the frame_seconds clock; one handed out this
		 * turn restarts it for whatever follows (which began no earlier). */
		/* After the end of the client's stream a frame can never complete: no
		 * clock for it (the client still gets the replies it is owed). */
		if (c->read_closed || c->backlog || !wire_reader_mid_frame(&c->rd))
			c->frame_since = 0;
		else if (c->frame_since == 0 || budget < SRV_TURN_FRAMES)
			c->frame_since = now;
		specd_buf_trim(&c->rd.buf, SRV_KEEP_BYTES);
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
		if (r->end)
			call_ended(s, c, r->ends_generate);
		if (c)
			conn_queue(s, c, r->frame, r->len);
		specd_free(r);
	}
}

/* The earlier of two due times, -1 meaning none. */
static double earlier(double a, double b)
{
	return a < 0 ? b : b < 0 || a < b ? a : b;
}

/* A connection's deadlines (server.limits): when it is next due for one, -1 for none;
 * with now past it, it is condemned or closed instead. A client that has a call open
 * and reads its replies is never cut off, however long its job takes. */
static double conn_deadline(struct srv *s, struct conn *c, double now)
{
	if (c->close_after_out) {
		if (now >= c->close_by)
			conn_close(s, c, "its error reply was not read in time");
		return c->close_by;
	}
	double idle = s->cfg.limits.idle_seconds, frame = s->cfg.limits.frame_seconds;
	double due = -1;
	char msg[128];
	if (frame > 0 && c->frame_since > 0) {
		due = c->frame_since + frame;
		if (now >= due) {
			snprintf(msg, sizeof(msg), "a frame was not whole %g s after its first byte "
				 "(limits.frame_seconds)", frame);
			conn_condemn(s, c, SPECD__V1__CODE__DEADLINE_EXCEEDED, msg);
			return c->close_by;
		}
	}
	if (idle <= 0)
		return due;
	if (c->out.len) {
		/* Replies wait and the socket takes no more: the client reads nothing. */
		double stalled = c->out_since + idle;
		if (now >= stalled) {
			conn_close(s, c, "the client read none of its replies for limits.idle_seconds");
			return -1;
		}
		due = earlier(due, stalled);
	} else if (c->open_calls == 0 && (frame <= 0 || c->frame_since == 0) && !c->backlog) {
		/* a frame begun holds the connection only while frame_seconds bounds it */
		double quiet = c->active_at + idle;
		if (now >= quiet) {
			conn_close(s, c, "idle for limits.idle_seconds");
			return -1;
		}
		due = earlier(due, quiet);
	}
	return due;
}

/* What no socket event announces: connections with frames left from their share of an
 * earlier turn, and deadlines (conn_deadline). Returns when the next of these is due: 0
 * (frames wait), a deadline, or -1 (none). */
static double serve_pending(struct srv *s)
{
	double now = specd_now(), wake = -1;
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (c->dead)
			continue;
		if (c->backlog && c->turn != s->turn)
			conn_serve(s, c);
		double due = c->dead ? -1 : c->backlog ? 0 : conn_deadline(s, c, now);
		if (!c->dead)
			wake = earlier(wake, due);
	}
	return wake;
}

/* How long epoll may sleep: until conn_wake (serve_pending's), accepting again, or a
 * stop's next poll, whichever comes first; -1: until an event. */
static int loop_timeout_ms(const struct srv *s, double conn_wake)
{
	double now = specd_now(), wake = conn_wake;
	if (s->stopping)
		wake = earlier(wake, now + SRV_STOP_POLL_S);
	if (s->accept_retry_at > 0)
		wake = earlier(wake, s->accept_retry_at);
	if (wake < 0)
		return -1;
	double ms = (wake - now) * 1000.0 + 1.0; /* rounded up: never wake just before */
	return ms <= 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static void *loop_main(void *arg)
{
	struct srv *s = arg;
	log_set_request(0);
	struct epoll_event evs[64];
	double stop_at = 0, conn_wake = -1;
	for (;;) {
		int n = epoll_wait(s->epfd, evs, 64, loop_timeout_ms(s, conn_wake));
		if (n < 0 && errno != EINTR) {
			LOG_ERROR("epoll_wait: %s", strerror(errno));
			break;
		}
		s->turn++;
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (!(tag & 1)) {
				int fd = (int)(tag >> 1);
				uint64_t v;
				if (fd == s->listen_fd && !s->listen_paused) {
					accept_all(s);
				} else if (fd == mbox_fd(s->replies)) {
					deliver_replies(s);
				} else if (fd == s->drain_fd) {
					ssize_t r = read(s->drain_fd, &v, sizeof(v));
					(void)r;
					begin_drain(s);
				} else if (fd == s->stop_fd && !s->stopping) {
					ssize_t r = read(s->stop_fd, &v, sizeof(v));
					(void)r;
					s->stopping = true;
					stop_at = specd_now() + s->flush_s;
					listen_update(s);
					refuse_waiting_calls(s);
				}
				continue;
			}
			struct conn *c = conn_find(s, tag >> 1);
			if (!c || c->dead)
				continue;
			if ((c->read_closed || c->close_after_out) &&
			    (evs[i].events & (EPOLLERR | EPOLLHUP))) {
				conn_close(s, c, "client gone");
				continue;
			}
			if (evs[i].events & EPOLLOUT)
				conn_flush(s, c);
			if (!c->dead && !c->read_closed && !c->close_after_out &&
			    (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
				conn_serve(s, c);
		}
		conn_wake = serve_pending(s);
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
	/* Should the loop fail before srv_stop, the compute thread must still stop. */
	if (!s->stopping)
		begin_drain(s);
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
	if (s->drain_fd >= 0)
		close(s->drain_fd);
	srv_cmd_free(s->drain_cmd);
	mbox_destroy(s->commands, free_cmd_item);
	mbox_destroy(s->replies, free_reply_item);
	specd_free(s);
}
