/* Scalar conversion for the cluster file: one YAML scalar's text becomes a typed
 * field of struct cfg_cluster, by the schema entry's type, range and store. Defaults
 * go through here too, so a default obeys the same rules as a file's value. */
#include "config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static void *field(struct cfg_cluster *cfg, size_t offset)
{
	return (char *)cfg + offset;
}

static bool text_is(const char *text, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(text, word, len) == 0;
}

/* Digits with an optional minus, and nothing else; strtoll alone would also take
 * leading spaces, a "+" and trailing junk. */
static bool parse_int(const char *text, size_t len, int64_t *out, bool *overflow)
{
	char buf[32];
	size_t i = (len > 0 && text[0] == '-') ? 1 : 0;
	*overflow = false;
	if (i == len)
		return false;
	for (size_t j = i; j < len; j++)
		if (text[j] < '0' || text[j] > '9')
			return false;
	if (len >= sizeof(buf)) {
		*overflow = true;
		return true;
	}
	memcpy(buf, text, len);
	buf[len] = '\0';
	errno = 0;
	long long v = strtoll(buf, NULL, 10);
	if (errno == ERANGE)
		*overflow = true;
	*out = v;
	return true;
}

struct size_unit {
	const char *name;
	uint64_t scale;
};

static const struct size_unit size_units[] = {
	{"B", 1},
	{"KiB", UINT64_C(1) << 10},
	{"MiB", UINT64_C(1) << 20},
	{"GiB", UINT64_C(1) << 30},
	{"TiB", UINT64_C(1) << 40},
	{"PiB", UINT64_C(1) << 50},
	{"KB", UINT64_C(1000)},
	{"MB", UINT64_C(1000000)},
	{"GB", UINT64_C(1000000000)},
	{"TB", UINT64_C(1000000000000)},
	{"PB", UINT64_C(1000000000000000)},
};

/* "4096", "64KiB", "4 MiB", "2GB": digits, optional spaces, optional unit. */
static bool parse_size(const char *text, size_t len, uint64_t *out, bool *overflow)
{
	size_t i = 0;
	uint64_t n = 0;
	*overflow = false;
	while (i < len && text[i] >= '0' && text[i] <= '9') {
		unsigned d = (unsigned)(text[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			n = n * 10 + d;
		i++;
	}
	if (i == 0)
		return false;
	while (i < len && text[i] == ' ')
		i++;
	uint64_t scale = 1;
	if (i < len) {
		bool found = false;
		for (size_t u = 0; u < sizeof(size_units) / sizeof(size_units[0]); u++) {
			if (text_is(text + i, len - i, size_units[u].name)) {
				scale = size_units[u].scale;
				found = true;
				break;
			}
		}
		if (!found)
			return false;
	}
	if (n > UINT64_MAX / scale)
		*overflow = true;
	*out = n * scale;
	return true;
}

static bool parse_float(const char *text, size_t len, double *out)
{
	char buf[64];
	if (len == 0 || len >= sizeof(buf))
		return false;
	/* only plain decimal notation: no "inf", "nan" or hex floats */
	for (size_t i = 0; i < len; i++)
		if (!strchr("0123456789.eE+-", text[i]))
			return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	char *end = NULL;
	double v = strtod(buf, &end);
	if (end != buf + len || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static void store_int(struct cfg_cluster *cfg, const struct cfg_key *k, int64_t v)
{
	switch (k->store) {
	case CFG_STORE_INT: *(int *)field(cfg, k->offset) = (int)v; break;
	case CFG_STORE_U32: *(uint32_t *)field(cfg, k->offset) = (uint32_t)v; break;
	case CFG_STORE_U64: *(uint64_t *)field(cfg, k->offset) = (uint64_t)v; break;
	default: break;
	}
}

static enum specd_status out_of_range(const struct cfg_key *k, const char *text, size_t len,
				      char *why, size_t why_size)
{
	char shown[64], lo[32], hi[32];
	cfg_show(text, len, shown, sizeof(shown));
	if (k->type == CFG_TYPE_SIZE) {
		cfg_size_format((uint64_t)k->imin, lo, sizeof(lo));
		cfg_size_format((uint64_t)k->imax, hi, sizeof(hi));
	} else if (k->type == CFG_TYPE_FLOAT) {
		snprintf(lo, sizeof(lo), "%g", k->fmin);
		snprintf(hi, sizeof(hi), "%g", k->fmax);
	} else {
		snprintf(lo, sizeof(lo), "%" PRId64, k->imin);
		snprintf(hi, sizeof(hi), "%" PRId64, k->imax);
	}
	snprintf(why, why_size, "is %s, outside %s..%s", shown, lo, hi);
	return SPECD_CONFIG;
}

static enum specd_status bad_text(const struct cfg_key *k, const char *text, size_t len,
				  char *why, size_t why_size)
{
	char shown[64], what[128];
	cfg_show(text, len, shown, sizeof(shown));
	snprintf(why, why_size, "expects %s, got '%s'",
		 cfg_type_describe(k, what, sizeof(what)), shown);
	return SPECD_CONFIG;
}

static enum specd_status set_enum(struct cfg_cluster *cfg, const struct cfg_key *k,
				  const char *text, size_t len, char *why, size_t why_size)
{
	if ((k->flags & CFG_KEY_AUTO) && text_is(text, len, "auto")) {
		*(bool *)field(cfg, k->auto_offset) = true;
		*(int *)field(cfg, k->offset) = 0;
		return SPECD_OK;
	}
	for (int i = 0; k->names[i]; i++) {
		if (!text_is(text, len, k->names[i]))
			continue;
		if (k->store == CFG_STORE_STR) {
			char *s = specd_strdup(k->names[i]);
			if (!s)
				return SPECD_NOMEM;
			char **slot = field(cfg, k->offset);
			specd_free(*slot);
			*slot = s;
		} else {
			*(int *)field(cfg, k->offset) = i;
		}
		if (k->flags & CFG_KEY_AUTO)
			*(bool *)field(cfg, k->auto_offset) = false;
		return SPECD_OK;
	}
	char shown[64];
	size_t o = 0;
	cfg_show(text, len, shown, sizeof(shown));
	o += (size_t)snprintf(why, why_size, "has unknown value '%s' (allowed: %s", shown,
			      (k->flags & CFG_KEY_AUTO) ? "auto" : "");
	for (int i = 0; k->names[i] && o < why_size; i++)
		o += (size_t)snprintf(why + o, why_size - o, "%s%s",
				      (i > 0 || (k->flags & CFG_KEY_AUTO)) ? ", " : "",
				      k->names[i]);
	if (o < why_size)
		snprintf(why + o, why_size - o, ")");
	return SPECD_CONFIG;
}

static enum specd_status set_text(struct cfg_cluster *cfg, const struct cfg_key *k,
				  const char *text, size_t len, const char *dir, char *why,
				  size_t why_size)
{
	char *expanded = NULL, *resolved = NULL;
	enum specd_status st = cfg_expand_env(text, len, &expanded, why, why_size);
	if (st != SPECD_OK)
		return st;
	if (expanded[0] == '\0') {
		specd_free(expanded);
		snprintf(why, why_size, "must not be empty");
		return SPECD_CONFIG;
	}
	if (k->type == CFG_TYPE_PATH) {
		st = cfg_path_resolve(expanded, dir, &resolved, why, why_size);
		specd_free(expanded);
		if (st != SPECD_OK)
			return st;
	} else {
		resolved = expanded;
	}
	char **slot = field(cfg, k->offset);
	specd_free(*slot);
	*slot = resolved;
	return SPECD_OK;
}

enum specd_status cfg_value_set(struct cfg_cluster *cfg, const struct cfg_key *k,
				const char *text, size_t len, const char *dir, char *why,
				size_t why_size)
{
	int64_t iv = 0;
	uint64_t uv = 0;
	double dv = 0;
	bool overflow = false;

	if (memchr(text, '\0', len)) {
		snprintf(why, why_size, "contains a NUL character");
		return SPECD_CONFIG;
	}
	switch (k->type) {
	case CFG_TYPE_STRING:
	case CFG_TYPE_PATH:
		return set_text(cfg, k, text, len, dir, why, why_size);
	case CFG_TYPE_ENUM:
		return set_enum(cfg, k, text, len, why, why_size);
	case CFG_TYPE_BOOL:
		if (text_is(text, len, "true") || text_is(text, len, "false")) {
			*(bool *)field(cfg, k->offset) = text[0] == 't';
			return SPECD_OK;
		}
		return bad_text(k, text, len, why, why_size);
	case CFG_TYPE_INT_AUTO:
		if (text_is(text, len, "auto")) {
			*(bool *)field(cfg, k->auto_offset) = true;
			store_int(cfg, k, 0);
			return SPECD_OK;
		}
		__attribute__((fallthrough)); /* a number: parsed as for CFG_TYPE_INT */
	case CFG_TYPE_INT:
		if (!parse_int(text, len, &iv, &overflow))
			return bad_text(k, text, len, why, why_size);
		if (overflow || iv < k->imin || iv > k->imax)
			return out_of_range(k, text, len, why, why_size);
		store_int(cfg, k, iv);
		if (k->flags & CFG_KEY_AUTO)
			*(bool *)field(cfg, k->auto_offset) = false;
		return SPECD_OK;
	case CFG_TYPE_SIZE:
		if (!parse_size(text, len, &uv, &overflow))
			return bad_text(k, text, len, why, why_size);
		if (overflow || uv < (uint64_t)k->imin || uv > (uint64_t)k->imax)
			return out_of_range(k, text, len, why, why_size);
		store_int(cfg, k, (int64_t)uv);
		return SPECD_OK;
	case CFG_TYPE_FLOAT:
		if (!parse_float(text, len, &dv))
			return bad_text(k, text, len, why, why_size);
		if (dv < k->fmin || dv > k->fmax)
			return out_of_range(k, text, len, why, why_size);
		*(double *)field(cfg, k->offset) = dv;
		return SPECD_OK;
	}
	snprintf(why, why_size, "has an unknown type");
	return SPECD_INTERNAL;
}

void cfg_values_free(struct cfg_cluster *cfg)
{
	for (size_t i = 0; i < cfg_schema_count; i++) {
		if (cfg_schema[i].store != CFG_STORE_STR)
			continue;
		char **slot = field(cfg, cfg_schema[i].offset);
		specd_free(*slot);
		*slot = NULL;
	}
}
