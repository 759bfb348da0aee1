/* Path values of the cluster file: ${VAR} and ${VAR:-default} expansion, a leading
 * ~, and resolution of relative paths against the folder holding the file, so a
 * cluster file means the same thing whatever the daemon's working directory. */
#include "config_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

struct sbuf {
	char *p;
	size_t len, cap;
};

static bool sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = specd_realloc_array(b->p, cap, 1);
		if (!p)
			return false;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

static bool is_name_char(char c, bool first)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (!first && c >= '0' && c <= '9');
}

enum specd_status cfg_expand_env(const char *text, size_t len, char **out, char *why,
				 size_t why_size)
{
	struct sbuf b = {0};
	size_t i = 0;
	if (!sb_add(&b, "", 0))
		goto nomem;
	while (i < len) {
		if (text[i] != '$' || i + 1 >= len || text[i + 1] != '{') {
			/* a lone $ is literal: only ${ starts a reference */
			size_t j = i + 1;
			while (j < len && text[j] != '$')
				j++;
			if (!sb_add(&b, text + i, j - i))
				goto nomem;
			i = j;
			continue;
		}
		const char *close = memchr(text + i, '}', len - i);
		if (!close) {
			snprintf(why, why_size, "has an unterminated '${'");
			goto bad;
		}
		const char *name = text + i + 2;
		size_t n = 0;
		while (name + n < close && is_name_char(name[n], n == 0))
			n++;
		const char *rest = name + n;
		bool has_default = rest + 1 < close && rest[0] == ':' && rest[1] == '-';
		int shown = (int)(close - (text + i) + 1); /* the reference, for messages */
		if (shown > 64)
			shown = 64;
		if (n == 0 || n > 128 || (rest != close && !has_default)) {
			snprintf(why, why_size, "has a bad variable reference '%.*s' (write ${NAME} "
				 "or ${NAME:-default})", shown, text + i);
			goto bad;
		}
		/* A default ends at the first '}', so "${A:-${B}}" would give "${B" or "}" left
		 * over: nesting is refused, not guessed at. */
		for (const char *p = rest; has_default && p + 1 < close; p++) {
			if (p[0] == '$' && p[1] == '{') {
				snprintf(why, why_size, "has '${' inside the default of '%.*s' "
					 "(a default is literal text; nesting is not supported)",
					 shown, text + i);
				goto bad;
			}
		}
		if (close + 1 < text + len && close[1] == '}') {
			snprintf(why, why_size, "has a stray '}' right after '%.*s' (nesting is "
				 "not supported)", shown, text + i);
			goto bad;
		}
		char var[129];
		memcpy(var, name, n);
		var[n] = '\0';
		const char *value = getenv(var);
		if (has_default && (!value || !*value)) {
			if (!sb_add(&b, rest + 2, (size_t)(close - (rest + 2))))
				goto nomem;
		} else if (!value) {
			snprintf(why, why_size, "uses environment variable '%s', which is not set",
				 var);
			goto bad;
		} else if (!sb_add(&b, value, strlen(value))) {
			goto nomem;
		}
		i = (size_t)(close - text) + 1;
	}
	*out = b.p;
	return SPECD_OK;
nomem:
	specd_free(b.p);
	snprintf(why, why_size, "out of memory");
	return SPECD_NOMEM;
bad:
	specd_free(b.p);
	return SPECD_CONFIG;
}

/* Folds "//", "/./" and "/x/../" in an absolute path; ".." at the root stays there. */
static char *normalize(const char *abs)
{
	size_t n = strlen(abs);
	char *o = specd_malloc_array(n + 2, 1);
	if (!o)
		return NULL;
	size_t len = 0;
	const char *p = abs;
	while (*p) {
		while (*p == '/')
			p++;
		size_t c = strcspn(p, "/");
		if (c == 0)
			break;
		if (c == 1 && p[0] == '.') {
			/* nothing */
		} else if (c == 2 && p[0] == '.' && p[1] == '.') {
			while (len > 0 && o[len - 1] != '/')
				len--;
			if (len > 0)
				len--; /* the slash before the dropped component */
		} else {
			o[len++] = '/';
			memcpy(o + len, p, c);
			len += c;
		}
		p += c;
	}
	if (len == 0)
		o[len++] = '/';
	o[len] = '\0';
	return o;
}

enum specd_status cfg_path_resolve(const char *path, const char *dir, char **out,
				   char *why, size_t why_size)
{
	struct sbuf b = {0};
	if (path[0] == '~') {
		if (path[1] != '\0' && path[1] != '/') {
			snprintf(why, why_size, "uses '~user', which is not supported");
			return SPECD_CONFIG;
		}
		const char *home = getenv("HOME");
		if (!home || !*home) {
			snprintf(why, why_size, "uses '~', but HOME is not set");
			return SPECD_CONFIG;
		}
		if (!sb_add(&b, home, strlen(home)) || !sb_add(&b, "/", 1) ||
		    !sb_add(&b, path + 1, strlen(path + 1)))
			goto nomem;
		if (b.p[0] != '/') {
			specd_free(b.p);
			snprintf(why, why_size, "uses '~', but HOME is not an absolute path");
			return SPECD_CONFIG;
		}
	} else if (path[0] == '/') {
		if (!sb_add(&b, path, strlen(path)))
			goto nomem;
	} else {
		if (!sb_add(&b, dir, strlen(dir)) || !sb_add(&b, "/", 1) ||
		    !sb_add(&b, path, strlen(path)))
			goto nomem;
	}
	char *norm = normalize(b.p);
	specd_free(b.p);
	if (!norm) {
		snprintf(why, why_size, "out of memory");
		return SPECD_NOMEM;
	}
	*out = norm;
	return SPECD_OK;
nomem:
	specd_free(b.p);
	snprintf(why, why_size, "out of memory");
	return SPECD_NOMEM;
}

enum specd_status cfg_source_dir(const char *file, char **out, char *why, size_t why_size)
{
	char *cwd = NULL, *joined = NULL;
	const char *slash = file ? strrchr(file, '/') : NULL;
	enum specd_status st = SPECD_NOMEM;

	if (slash && file[0] == '/') {
		/* absolute: the file's own folder, cwd is not needed */
		joined = specd_malloc_array((size_t)(slash - file) + 2, 1);
		if (!joined)
			goto fail;
		memcpy(joined, file, (size_t)(slash - file) + 1);
		joined[slash - file + 1] = '\0';
	} else {
		cwd = specd_malloc_array(PATH_MAX, 1);
		if (!cwd)
			goto fail;
		if (!getcwd(cwd, PATH_MAX)) {
			snprintf(why, why_size, "cannot get the working directory: %s",
				 strerror(errno));
			st = SPECD_IO;
			goto fail;
		}
		size_t dn = slash ? (size_t)(slash - file) : 0;
		size_t cn = strlen(cwd);
		joined = specd_malloc_array(cn + dn + 2, 1);
		if (!joined)
			goto fail;
		memcpy(joined, cwd, cn);
		joined[cn] = '/';
		memcpy(joined + cn + 1, file, dn);
		joined[cn + 1 + dn] = '\0';
	}
	char *norm = normalize(joined);
	if (!norm)
		goto fail;
	specd_free(cwd);
	specd_free(joined);
	*out = norm;
	return SPECD_OK;
fail:
	if (st == SPECD_NOMEM)
		snprintf(why, why_size, "out of memory");
	specd_free(cwd);
	specd_free(joined);
	return st;
}
