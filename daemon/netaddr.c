/* Parsing addresses and opening sockets; see netaddr.h. */
#include "netaddr.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum specd_status netaddr_parse(const char *text, struct netaddr *out, struct specd_error *err)
{
	struct netaddr a;
	memset(&a, 0, sizeof(a));
	if (!text || !*text)
		return specd_errorf(err, SPECD_INVAL, "empty address");
	if (strncmp(text, "unix:", 5) == 0) {
		size_t n = strlen(text + 5);
		if (n == 0 || n >= sizeof(a.path))
			return specd_errorf(err, SPECD_INVAL, "'%s': a unix socket path of 1..%zu bytes",
					    text, sizeof(a.path) - 1);
		a.is_unix = true;
		memcpy(a.path, text + 5, n + 1);
		*out = a;
		return SPECD_OK;
	}
	const char *colon, *host = text;
	size_t host_len;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return specd_errorf(err, SPECD_INVAL, "'%s': expected [IPv6]:PORT", text);
		host = text + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return specd_errorf(err, SPECD_INVAL,
					    "'%s': expected HOST:PORT, [IPv6]:PORT or unix:PATH", text);
		host_len = (size_t)(colon - text);
	}
	const char *port = colon + 1;
	size_t port_len = strlen(port);
	char *end = NULL;
	long p = strtol(port, &end, 10);
	if (port_len == 0 || port_len >= sizeof(a.port) || *end || p < 1 || p > 65535)
		return specd_errorf(err, SPECD_INVAL, "'%s': the port must be 1..65535", text);
	if (host_len == 0 || host_len >= sizeof(a.host))
		return specd_errorf(err, SPECD_INVAL, "'%s': missing or too long host", text);
	memcpy(a.host, host, host_len);
	memcpy(a.port, port, port_len + 1);
	*out = a;
	return SPECD_OK;
}

void netaddr_format(const struct netaddr *a, char *buf, unsigned long size)
{
	if (a->is_unix)
		snprintf(buf, size, "unix:%s", a->path);
	else if (strchr(a->host, ':'))
		snprintf(buf, size, "[%s]:%s", a->host, a->port);
	else
		snprintf(buf, size, "%s:%s", a->host, a->port);
}

static void unix_sockaddr(const struct netaddr *a, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, a->path, strlen(a->path) + 1);
}

/* True when something accepts connections on the unix socket path. */
static bool unix_alive(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true; /* cannot tell: do not remove it */
	bool alive = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 ||
		     errno != ECONNREFUSED;
	close(fd);
	return alive;
}

static enum specd_status listen_unix(const struct netaddr *a, int *out, struct specd_error *err)
{
	struct sockaddr_un sun;
	unix_sockaddr(a, &sun);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return specd_errorf(err, SPECD_IO, "socket: %s", strerror(errno));
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	if (rc != 0 && errno == EADDRINUSE && !unix_alive(&sun)) {
		unlink(a->path); /* a stale socket file from a process that is gone */
		rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	}
	if (rc != 0) {
		int e = errno;
		close(fd);
		return specd_errorf(err, SPECD_IO, "cannot listen on unix:%s: %s", a->path,
				    strerror(e));
	}
	if (listen(fd, 64) != 0) {
		int e = errno;
		close(fd);
		return specd_errorf(err, SPECD_IO, "cannot listen on unix:%s: %s", a->path,
				    strerror(e));
	}
	*out = fd;
	return SPECD_OK;
}

enum specd_status netaddr_listen(const struct netaddr *a, int *out, struct specd_error *err)
{
	if (a->is_unix)
		return listen_unix(a, out, err);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(a->host, a->port, &hints, &res);
	if (rc != 0)
		return specd_errorf(err, SPECD_IO, "cannot resolve %s: %s", a->host,
				    gai_strerror(rc));
	int e = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) {
			freeaddrinfo(res);
			*out = fd;
			return SPECD_OK;
		}
		e = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return specd_errorf(err, SPECD_IO, "cannot listen on %s:%s: %s", a->host, a->port,
			    strerror(e));
}

enum specd_status netaddr_connect(const struct netaddr *a, int *out, struct specd_error *err)
{
	if (a->is_unix) {
		struct sockaddr_un sun;
		unix_sockaddr(a, &sun);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return specd_errorf(err, SPECD_IO, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
			int e = errno;
			close(fd);
			return specd_errorf(err, SPECD_IO, "cannot connect to unix:%s: %s", a->path,
					    strerror(e));
		}
		*out = fd;
		return SPECD_OK;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(a->host, a->port, &hints, &res);
	if (rc != 0)
		return specd_errorf(err, SPECD_IO, "cannot resolve %s: %s", a->host,
				    gai_strerror(rc));
	int e = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(res);
			*out = fd;
			return SPECD_OK;
		}
		e = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return specd_errorf(err, SPECD_IO, "cannot connect to %s:%s: %s", a->host, a->port,
			    strerror(e));
}
