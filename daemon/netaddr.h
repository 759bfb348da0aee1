/* Socket addresses as the cluster file and specctl write them: "HOST:PORT",
 * "[IPv6]:PORT" or "unix:PATH", and the sockets made from them. Used by the server
 * (listen) and by specctl (connect). Any thread. */
#ifndef SPECD_DAEMON_NETADDR_H
#define SPECD_DAEMON_NETADDR_H

#include <stdbool.h>

#include "common/error.h"

struct netaddr {
	bool is_unix;
	char host[256]; /* TCP: the host, without brackets */
	char port[8];   /* TCP: the port */
	char path[108]; /* unix: the socket path */
};

/* SPECD_INVAL with a message when text is none of the three forms. */
enum specd_status netaddr_parse(const char *text, struct netaddr *out, struct specd_error *err);

/* A non-blocking, close-on-exec listening socket. A unix socket file left behind by a
 * process that is gone is replaced; one that still answers is "address in use".
 * SPECD_IO with the system's reason. */
enum specd_status netaddr_listen(const struct netaddr *a, int *fd, struct specd_error *err);

/* A blocking connected socket. SPECD_IO with the system's reason. */
enum specd_status netaddr_connect(const struct netaddr *a, int *fd, struct specd_error *err);

/* "unix:/path" or "host:port" for messages. */
void netaddr_format(const struct netaddr *a, char *buf, unsigned long size);

#endif
