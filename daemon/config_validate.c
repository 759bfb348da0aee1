/* Rules of the cluster file that span keys (the schema checks one value at a time):
 * n-gram bounds, a forced method's weights, the listen address and its token, and
 * with CFG_CHECK_PATHS that every path names something. Runs after defaults. */
#include "config_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/alloc.h"
#include "drafters/drafter.h"

const char *const cfg_rule_docs[] = {
	"`speculation.ngram.prompt_lookup_min` must not exceed `prompt_lookup_max` (nor its "
	"default 2 a `prompt_lookup_max` given alone).",
	"`method: draft_model` needs `speculation.draft_model.model`; `method: eagle` needs "
	"`speculation.eagle.heads`; `method: medusa` needs `speculation.medusa.heads`.",
	"`constraints.low_memory: true` cannot be combined with a forced method that loads "
	"extra weights (draft_model, eagle, medusa).",
	"`server.listen` is `HOST:PORT`, `[IPv6]:PORT` or `unix:PATH`; the port is 1..65535 "
	"and a socket path at most 107 bytes after resolution.",
	"A TCP `server.listen` on a host other than `localhost`, `127.x.x.x` or `::1` needs "
	"`server.auth_token` (a unix socket does not).",
	"With path checking on (rank 0, `specd --check-config`), every path that is set must "
	"name an existing file or folder.",
	NULL,
};

struct vctx {
	const struct cfg_cluster *cfg;
	const int *line_of;
	const char *name;
	struct specd_error *err;
};

static int line_of(const struct vctx *v, const char *path)
{
	long i = cfg_schema_index(path);
	return i >= 0 && v->line_of[i] > 0 ? v->line_of[i] : 0;
}

__attribute__((format(printf, 3, 4))) static enum specd_status
fail(const struct vctx *v, int line, const char *fmt, ...)
{
	char msg[SPECD_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return specd_errorf(v->err, SPECD_CONFIG, "%s:%d: %s", v->name, line > 0 ? line : 1,
			    msg);
}

static enum specd_status check_ngram(const struct vctx *v)
{
	const struct cfg_cluster *c = v->cfg;
	/* A maximum left auto follows a larger minimum (drafters/ngram.c); a minimum left
	 * auto is 2, which a given maximum must reach. */
	if (c->lookup_max_auto)
		return SPECD_OK;
	if (c->lookup_min_auto) {
		if (c->prompt_lookup_max >= DRAFT_NGRAM_MIN)
			return SPECD_OK;
		return fail(v, line_of(v, "speculation.ngram.prompt_lookup_max"),
			    "'speculation.ngram.prompt_lookup_max' (%d) is less than the default "
			    "'prompt_lookup_min' (%d): set 'prompt_lookup_min' too",
			    c->prompt_lookup_max, DRAFT_NGRAM_MIN);
	}
	if (c->prompt_lookup_min <= c->prompt_lookup_max)
		return SPECD_OK;
	int line = line_of(v, "speculation.ngram.prompt_lookup_min");
	if (!line)
		line = line_of(v, "speculation.ngram.prompt_lookup_max");
	return fail(v, line,
		    "'speculation.ngram.prompt_lookup_min' (%d) is greater than "
		    "'speculation.ngram.prompt_lookup_max' (%d)",
		    c->prompt_lookup_min, c->prompt_lookup_max);
}

static enum specd_status check_method(const struct vctx *v)
{
	const struct cfg_cluster *c = v->cfg;
	const char *need = NULL;
	const char *have = NULL;
	if (c->method_auto)
		return SPECD_OK;
	int line = line_of(v, "speculation.method");
	switch (c->method) {
	case DRAFT_METHOD_DRAFT_MODEL:
		need = "speculation.draft_model.model";
		have = c->draft_model;
		break;
	case DRAFT_METHOD_EAGLE:
		need = "speculation.eagle.heads";
		have = c->eagle_heads;
		break;
	case DRAFT_METHOD_MEDUSA:
		need = "speculation.medusa.heads";
		have = c->medusa_heads;
		break;
	default:
		break;
	}
	if (need && !have)
		return fail(v, line, "'speculation.method' is %s, which needs '%s'",
			    draft_method_name(c->method), need);
	if (c->low_memory && draft_method_needs_weights(c->method))
		return fail(v, line,
			    "'speculation.method' is %s, which loads extra weights that "
			    "'constraints.low_memory' rules out",
			    draft_method_name(c->method));
	return SPECD_OK;
}

static bool is_loopback(const char *host, size_t n)
{
	if (n == 9 && strncasecmp(host, "localhost", 9) == 0)
		return true;
	if (n == 3 && strncmp(host, "::1", 3) == 0)
		return true;
	/* 127.0.0.0/8, written as an address: "127.example.com" is a name, not loopback */
	if (n <= 4 || strncmp(host, "127.", 4) != 0)
		return false;
	for (size_t i = 4; i < n; i++)
		if (host[i] != '.' && (host[i] < '0' || host[i] > '9'))
			return false;
	return true;
}

/* TCP form: HOST:PORT or [V6]:PORT. */
static enum specd_status check_tcp(const struct vctx *v, int line, bool *loopback)
{
	const char *s = v->cfg->listen;
	const char *host = s, *colon;
	size_t host_len;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			goto syntax;
		host = s + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			goto syntax;
		host_len = (size_t)(colon - s);
		if (memchr(s, ':', host_len)) /* a bare IPv6 address needs brackets */
			goto syntax;
	}
	if (host_len == 0 || memchr(host, ' ', host_len) || colon[1] == '\0')
		goto syntax;
	unsigned long port = 0;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			goto syntax;
		if (port <= 65535)
			port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port == 0 || port > 65535)
		return fail(v, line, "'server.listen' port %.16s is outside 1..65535", colon + 1);
	*loopback = is_loopback(host, host_len);
	return SPECD_OK;
syntax:
	return fail(v, line, "'server.listen' expects HOST:PORT or unix:PATH, got '%.64s'", s);
}

static enum specd_status check_listen(const struct vctx *v, struct cfg_cluster *cfg)
{
	int line = line_of(v, "server.listen");
	bool loopback = false;
	enum specd_status st;
	if (strncmp(cfg->listen, "unix:", 5) == 0) {
		char why[CFG_WHY_MAX], *path = NULL;
		if (cfg->listen[5] == '\0')
			return fail(v, line,
				    "'server.listen' expects HOST:PORT or unix:PATH, got 'unix:'");
		st = cfg_path_resolve(cfg->listen + 5, cfg->source_dir, &path, why, sizeof(why));
		if (st == SPECD_NOMEM)
			return specd_errorf(v->err, st, "%s: out of memory", v->name);
		if (st != SPECD_OK)
			return fail(v, line, "'server.listen' %s", why);
		size_t n = strlen(path);
		if (n >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			specd_free(path);
			return fail(v, line, "'server.listen' socket path is %zu bytes, longer than %zu",
				    n, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		}
		char *listen = specd_malloc_array(n + 6, 1);
		if (!listen) {
			specd_free(path);
			return specd_errorf(v->err, SPECD_NOMEM, "%s: out of memory", v->name);
		}
		memcpy(listen, "unix:", 5);
		memcpy(listen + 5, path, n + 1);
		specd_free(path);
		specd_free(cfg->listen);
		cfg->listen = listen;
		return SPECD_OK;
	}
	st = check_tcp(v, line, &loopback);
	if (st != SPECD_OK)
		return st;
	if (!loopback && !cfg->auth_token)
		return fail(v, line,
			    "'server.listen' is %.64s, which is not loopback: set 'server.auth_token'",
			    cfg->listen);
	return SPECD_OK;
}

static enum specd_status check_paths(const struct vctx *v)
{
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const struct cfg_key *k = &cfg_schema[i];
		if (k->type != CFG_TYPE_PATH)
			continue;
		const char *path = *(char *const *)((const char *)v->cfg + k->offset);
		struct stat sb;
		if (path && stat(path, &sb) != 0)
			return fail(v, v->line_of[i], "'%s' names '%.200s', which cannot be accessed: %s",
				    k->path, path, strerror(errno));
	}
	return SPECD_OK;
}

enum specd_status cfg_validate(struct cfg_cluster *cfg, const int *lines, const char *name,
			       unsigned flags, struct specd_error *err)
{
	struct vctx v = {.cfg = cfg, .line_of = lines, .name = name, .err = err};
	enum specd_status st = check_ngram(&v);
	if (st == SPECD_OK)
		st = check_method(&v);
	if (st == SPECD_OK)
		st = check_listen(&v, cfg);
	if (st == SPECD_OK && (flags & CFG_CHECK_PATHS))
		st = check_paths(&v);
	return st;
}
