/* The client side of the protocol: one connection, calls sent as envelopes, replies
 * read frame by frame. specctl and the end-to-end tests use it. Blocking I/O; one
 * thread per client. */
#ifndef SPECD_DAEMON_CLIENT_H
#define SPECD_DAEMON_CLIENT_H

#include <stdint.h>

#include "common/error.h"
#include "proto/specd.pb-c.h"
#include "wire.h"

struct client {
	int fd;
	struct wire_reader rd;
	uint64_t next_call;
	char *token; /* sent with every call when not NULL */
};

/* Connects to "HOST:PORT", "[IPv6]:PORT" or "unix:PATH". SPECD_INVAL (bad address),
 * SPECD_IO (cannot connect: the message says why). */
enum specd_status client_open(struct client *c, const char *addr, const char *token,
			      struct specd_error *err);
void client_close(struct client *c);

/* Sends one call; *call_id (may be NULL) receives its id. SPECD_IO, SPECD_NOMEM. */
enum specd_status client_send(struct client *c, Specd__V1__Method method,
			      const ProtobufCMessage *payload, uint64_t *call_id,
			      struct specd_error *err);

/* Reads the next reply envelope (free with specd__v1__envelope__free_unpacked),
 * waiting up to timeout_s (< 0: for ever). SPECD_IO (the server closed the
 * connection), SPECD_TIMEOUT, SPECD_PROTO (a frame that is no envelope). */
enum specd_status client_recv(struct client *c, Specd__V1__Envelope **env, double timeout_s,
			      struct specd_error *err);

#endif
