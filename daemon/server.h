/* The leader's socket server (DESIGN.md §7): an epoll event loop on its own thread
 * owns the listening socket and every client connection, turns frames into commands
 * for the compute thread, and writes back the replies the compute thread posts. Health
 * and Status are answered on the loop thread itself, so they stay fast while the
 * compute thread is busy.
 *
 * Threads: srv_create, srv_start, srv_stop and srv_destroy from the main thread; the
 * compute thread takes commands from srv_commands() and posts replies with srv_post;
 * srv_begin_drain from any thread. Only the loop thread touches sockets.
 *
 * Every Generate and Cancel call read gets exactly one last reply: from the compute
 * thread while it takes commands, from the loop (UNAVAILABLE) once srv_stop is called.
 * One client cannot stall the others: each loop turn serves a connection at most
 * SRV_TURN_FRAMES frames and SRV_TURN_BYTES bytes (server.c); nor hold a place for
 * ever: a connection idle with no call open, or reading none of its replies, for
 * limits.idle_seconds, or with a frame not whole limits.frame_seconds after its first
 * byte, is closed (a client waiting on its own calls, and reading, never is). */
#ifndef SPECD_DAEMON_SERVER_H
#define SPECD_DAEMON_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "config.h"
#include "mailbox.h"
#include "proto/specd.pb-c.h"

enum srv_cmd_kind {
	SRV_CMD_GENERATE,    /* a validated Generate call */
	SRV_CMD_CANCEL,      /* a Cancel call (the compute thread replies) */
	SRV_CMD_CONN_CLOSED, /* a client went away: cancel its jobs */
	SRV_CMD_DRAIN,       /* Shutdown or a signal: finish every job taken so far (the
			      * loop posts it behind every call it passed on and refuses
			      * new Generate calls from then on), then stop */
};

/* Loop thread -> compute thread. Free with srv_cmd_free. */
struct srv_cmd {
	struct mbox_item link;
	enum srv_cmd_kind kind;
	uint64_t conn_id, call_id;
	double t_arrived; /* SRV_CMD_GENERATE: when the loop read it (specd_now) */
	Specd__V1__GenerateRequest *generate; /* SRV_CMD_GENERATE: owned */
	Specd__V1__CancelRequest *cancel;     /* SRV_CMD_CANCEL: owned */
};
void srv_cmd_free(struct srv_cmd *c);

/* Compute thread (or loop) -> a connection: one packed frame. */
struct srv_reply {
	struct mbox_item link;
	uint64_t conn_id, call_id;
	bool end;           /* the call's last reply (the connection owes it no more) */
	bool ends_generate; /* the last reply of a Generate call (the job slot frees) */
	size_t len;
	uint8_t frame[];
};

/* Packs one reply frame: envelope {call_id, method, code and message when code is not
 * OK, payload when not NULL, end}. NULL when memory runs out. Any thread. */
struct srv_reply *srv_reply_new(uint64_t conn_id, uint64_t call_id, Specd__V1__Method method,
				Specd__V1__Code code, const char *message,
				const ProtobufCMessage *payload, bool end);

/* Packs a StatusResponse into *out (appending). Called on the loop thread; must be
 * safe against the compute thread's updates. */
typedef enum specd_status srv_status_fn(void *user, struct specd_buf *out);

struct srv_config {
	const char *listen;     /* "HOST:PORT", "[IPv6]:PORT" or "unix:PATH" */
	const char *auth_token; /* NULL: no token checked */
	struct cfg_limits limits;
	srv_status_fn *status;  /* may be NULL: Status then answers UNAVAILABLE */
	void *status_user;
};

struct srv;

/* Binds the listening socket (so a port in use fails start-up, not later). SPECD_IO
 * with the address and the system's reason; SPECD_INVAL for a bad address; NOMEM. */
enum specd_status srv_create(const struct srv_config *cfg, struct srv **out,
			     struct specd_error *err);
/* Sets the Status provider (before srv_start). */
void srv_set_status(struct srv *s, srv_status_fn *fn, void *user);
/* Starts the loop thread. SPECD_IO when the thread cannot be made. */
enum specd_status srv_start(struct srv *s);
/* The mailbox the compute thread takes commands from. */
struct mbox *srv_commands(struct srv *s);
/* Hands a reply to the loop thread (ownership passes). */
void srv_post(struct srv *s, struct srv_reply *r);
/* Starts a drain as a Shutdown call does: the loop refuses new Generate calls with
 * UNAVAILABLE from then on and posts SRV_CMD_DRAIN behind every call it already passed
 * on, so the compute thread, which stops only after that command, answers them all.
 * Only wakes the loop (one eventfd write), so it returns at once; any thread, and
 * async-signal-safe. */
void srv_begin_drain(struct srv *s);
/* Call once the compute thread takes no more commands (sched_run returned). Stops
 * accepting; answers the Generate and Cancel calls still waiting in srv_commands(), and
 * those read from now on, with UNAVAILABLE; writes out what is queued (for at most
 * flush_s seconds); closes every connection and the listener; joins the loop thread. */
void srv_stop(struct srv *s, double flush_s);
void srv_destroy(struct srv *s);
/* Where the server listens, for logs ("127.0.0.1:7070", "unix:/run/specd.sock"). */
const char *srv_address(const struct srv *s);

#endif
