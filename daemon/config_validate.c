/* Rules of the cluster file that span keys (the schema checks one value at a time):
 * n-gram bounds, a forced method's weights, K against a static EAGLE tree, the listen
 * address and its token, and with CFG_CHECK_PATHS that every path names something.
 * Runs after defaults. */
#include "config_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/alloc.h"
#include "drafters/drafter.h"
#include "drafters/medusa.h"

#define CFG_STR_(x) #x
#define CFG_STR(x) CFG_STR_(x)

const char *const cfg_rule_docs[] = {
	"`speculation.ngram.prompt_lookup_min` must not exceed `prompt_lookup_max` (nor its "
	"default 2 a `prompt_lookup_max` given alone).",
	"`method: draft_model` needs `speculation.draft_model.model`; `method: eagle` needs "
	"`speculation.eagle.heads`; `method: medusa` needs `speculation.medusa.heads`.",
	"`constraints.low_memory: true` cannot be combined with a forced method that loads "
	"extra weights (draft_model, eagle, medusa).",
	"With `speculation.eagle.tree: static`, wherever EAGLE may run (`method: eagle`, or "
	"`auto` with `eagle.heads` set), K (`num_speculative_tokens`, or "
	"`max_speculative_tokens` when that is `auto`) must fit the static tree of "
	"`eagle.depth` levels, whose nodes have at most " CFG_STR(MEDUSA_MAX_RANK) " children "
	"(depth 1 holds " CFG_STR(MEDUSA_MAX_RANK) " nodes).",
	"`server.listen` is `HOST:PORT`, `[IPv6]:PORT` or `unix:PATH`; the port is 1..65535 "
	"and a socket path at most 107 bytes after resolution.",
	"A TCP `server.listen` on a host other than `localhost` or a loopback address "
	"(`127.x.x.x` or `::1`, written as numbers) needs `server.auth_token` (a unix socket "
	"does not).",
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

static bool tree_fits(uint32_t k, uint32_t depth)
{
	int32_t parent[DRAFT_MAX_TOKENS];
	uint32_t level[DRAFT_MAX_TOKENS], rank[DRAFT_MAX_TOKENS];
	return k >= 1 && k <= DRAFT_MAX_TOKENS &&
	       draft_medusa_tree(k, depth, parent, level, rank) == SPECD_OK;
}

/* The static EAGLE tree is draft_medusa_tree(K, depth) (drafters/eagle.c): a K it cannot
 * build fails the drafter at load, minutes after --check-config said yes. */
static enum specd_status check_eagle_tree(const struct vctx *v)
{
	const struct cfg_cluster *c = v->cfg;
	bool eagle = c->method_auto ? c->eagle_heads != NULL : c->method == DRAFT_METHOD_EAGLE;
	if (!eagle || c->eagle_tree != 1)
		return SPECD_OK;
	const char *key = c->spec_tokens_auto ? "speculation.max_speculative_tokens"
					      : "speculation.num_speculative_tokens";
	uint32_t k = (uint32_t)(c->spec_tokens_auto ? c->max_speculative_tokens
						    : c->num_speculative_tokens);
	uint32_t depth = (uint32_t)c->eagle_depth;
	if (tree_fits(k, depth))
		return SPECD_OK;
	/* the largest K that fits, for the message: a tree's prefixes are trees too */
	uint32_t most = k - 1;
	while (most > 0 && !tree_fits(most, depth))
		most--;
	int line = line_of(v, key);
	if (!line)
		line = line_of(v, "speculation.eagle.depth");
	if (!line)
		line = line_of(v, "speculation.eagle.tree");
	return fail(v, line,
		    "'%s' (%u) does not fit the static EAGLE tree of 'speculation.eagle.depth' "
		    "%u (at most %u nodes): lower it or deepen the tree",
		    key, k, depth, most);
}

/* Loopback: the name localhost, or an address written as numbers in 127.0.0.0/8 or ::1.
 * Anything else inet_pton does not read ("127.999.999.999", "127.0.0.1.",
 * "127.example.com") is a name the resolver would look up, so it is not loopback. */
static bool is_loopback(const char *host, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	struct in_addr v4;
	struct in6_addr v6;
	if (n == 9 && strncasecmp(host, "localhost", 9) == 0)
		return true;
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, host, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &v4) == 1)
		return ntohl(v4.s_addr) >> 24 == 127;
	if (inet_pton(AF_INET6, buf, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6);
	return false;
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
		st = check_eagle_tree(&v);
	if (st == SPECD_OK)
		st = check_listen(&v, cfg);
	if (st == SPECD_OK && (flags & CFG_CHECK_PATHS))
		st = check_paths(&v);
	return st;
}
