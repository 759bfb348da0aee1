/* Protocol client; see client.h. */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "netaddr.h"

/* Replies can be as large as a Status with many ranks; the server's frames are ours. */
#define CLIENT_MAX_FRAME (64u << 20)

enum specd_status client_open(struct client *c, const char *addr, const char *token,
			      struct specd_error *err)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	struct netaddr a;
	enum specd_status st = netaddr_parse(addr, &a, err);
	if (st != SPECD_OK)
		return st;
	if ((st = netaddr_connect(&a, &c->fd, err)) != SPECD_OK)
		return st;
	if (token && !(c->token = specd_strdup(token))) {
		close(c->fd);
		c->fd = -1;
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	}
	wire_reader_init(&c->rd, CLIENT_MAX_FRAME);
	c->next_call = 1;
	return SPECD_OK;
}

void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	wire_reader_fini(&c->rd);
	specd_free(c->token);
	c->token = NULL;
}

enum specd_status client_send(struct client *c, Specd__V1__Method method,
			      const ProtobufCMessage *payload, uint64_t *call_id,
			      struct specd_error *err)
{
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = env.has_method = 1;
	env.call_id = c->next_call++;
	env.method = method;
	env.auth_token = c->token;
	struct specd_buf body, frame;
	specd_buf_init(&body);
	specd_buf_init(&frame);
	enum specd_status st = SPECD_OK;
	if (payload) {
		size_t n = protobuf_c_message_get_packed_size(payload);
		if ((st = specd_buf_reserve(&body, n ? n : 1)) != SPECD_OK)
			goto out;
		protobuf_c_message_pack(payload, body.data);
		env.has_payload = 1;
		env.payload.data = body.data;
		env.payload.len = n;
	}
	if ((st = wire_pack(&env, &frame)) != SPECD_OK)
		goto out;
	for (size_t off = 0; off < frame.len;) {
		ssize_t n = send(c->fd, frame.data + off, frame.len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			st = specd_errorf(err, SPECD_IO, "send: %s", strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	if (call_id)
		*call_id = env.call_id;
out:
	if (st == SPECD_NOMEM)
		specd_errorf(err, st, "out of memory");
	specd_buf_fini(&body);
	specd_buf_fini(&frame);
	return st;
}

enum specd_status client_recv(struct client *c, Specd__V1__Envelope **env, double timeout_s,
			      struct specd_error *err)
{
	double end = specd_now() + timeout_s;
	for (;;) {
		enum wire_event ev;
		const uint8_t *frame = NULL;
		uint32_t len = 0;
		if (wire_reader_next(&c->rd, &ev, &frame, &len) != SPECD_OK)
			return specd_errorf(err, SPECD_PROTO, "the server sent a bad frame");
		if (ev == WIRE_FRAME) {
			if (wire_unpack(frame, len, env) != SPECD_OK)
				return specd_errorf(err, SPECD_PROTO, "the server sent a bad envelope");
			return SPECD_OK;
		}
		if (ev != WIRE_NEED_MORE)
			return specd_errorf(err, SPECD_PROTO, "the server sent a frame of %u bytes",
					    len);
		int wait_ms = -1;
		if (timeout_s >= 0) {
			double left = end - specd_now();
			if (left <= 0)
				return specd_errorf(err, SPECD_TIMEOUT, "no reply within %.1f s",
						    timeout_s);
			wait_ms = (int)(left * 1000) + 1;
		}
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, wait_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			continue;
		uint8_t buf[65536];
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return specd_errorf(err, SPECD_IO, "the server closed the connection");
		if (wire_reader_push(&c->rd, buf, (size_t)n) != SPECD_OK)
			return specd_errorf(err, SPECD_NOMEM, "out of memory");
	}
}
