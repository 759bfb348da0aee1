/* Reading the cluster file: bytes -> a pass over libyaml's events (encoding, flow depth,
 * tags) -> libyaml document -> a walk of its mappings against the schema
 * (config_schema.c) -> struct cfg_cluster, then required keys and cross-field rules.
 * Every error is "FILE:LINE: message" naming the key. */
#include "config_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#include "common/alloc.h"

/* Longest dotted key path we build; schema paths are far shorter, and a longer key
 * is unknown anyway (its display is cut by cfg_show). */
#define PATH_BUF 160

/* The first node written with a YAML tag (the event pass finds it; the document keeps
 * no trace of a tag that names the default type, such as !!str): the walk refuses it
 * by the key it belongs to, or afterwards by its line alone. */
struct tagged {
	bool found;
	size_t at;             /* the node's start offset, as the document records it */
	yaml_node_type_t type; /* and its kind (a block mapping starts where its first key does) */
	int line;
	char shown[64]; /* the tag as written: "!!binary", "!foo" */
};

struct walk {
	const char *name; /* the file, for messages */
	struct cfg_cluster *cfg;
	yaml_document_t *doc;
	unsigned char *seen; /* per node: walked already (so reached through an alias) */
	size_t node_count;
	int *line_of;     /* per schema key: the line that set it, 0: default */
	int *parent_line; /* per schema key: line of its innermost section present */
	struct tagged tag;
	struct specd_error *err;
};

__attribute__((format(printf, 4, 5))) static enum specd_status
failf(struct specd_error *err, const char *name, int line, const char *fmt, ...)
{
	char msg[SPECD_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return specd_errorf(err, SPECD_CONFIG, "%s:%d: %s", name, line > 0 ? line : 1, msg);
}

static enum specd_status nomem(struct specd_error *err, const char *name)
{
	return specd_errorf(err, SPECD_NOMEM, "%s: out of memory", name);
}

static yaml_node_t *node_at(struct walk *w, int index)
{
	if (index < 1 || (size_t)index > w->node_count)
		return NULL;
	return yaml_document_get_node(w->doc, index);
}

/* False when the node was walked before: only an alias reaches a node twice. */
static bool visit(struct walk *w, int index)
{
	if (w->seen[index])
		return false;
	w->seen[index] = 1;
	return true;
}

static int line_of_node(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

static const char *kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_SEQUENCE_NODE: return "a sequence";
	default: return "a scalar";
	}
}

/* A plain empty, ~ or null scalar: YAML's null, which we read as "not set". */
static bool is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (n->data.scalar.length == strlen(nulls[i]) &&
		    memcmp(n->data.scalar.value, nulls[i], n->data.scalar.length) == 0)
			return true;
	return false;
}

/* prefix.key for messages, the key made printable and cut. */
static void display_path(const char *prefix, const yaml_node_t *key, char *buf, size_t size)
{
	char shown[64];
	if (key->type == YAML_SCALAR_NODE)
		cfg_show((const char *)key->data.scalar.value, key->data.scalar.length, shown,
			 sizeof(shown));
	else
		snprintf(shown, sizeof(shown), "?");
	snprintf(buf, size, "%s%s%s", prefix, *prefix ? "." : "", shown);
}

static void mark_section(struct walk *w, const char *path, int line)
{
	size_t n = strlen(path);
	for (size_t i = 0; i < cfg_schema_count; i++)
		if (strncmp(cfg_schema[i].path, path, n) == 0 && cfg_schema[i].path[n] == '.')
			w->parent_line[i] = line;
}

static enum specd_status walk_mapping(struct walk *w, const yaml_node_t *map,
				      const char *prefix);

static bool is_tagged(const struct walk *w, const yaml_node_t *n)
{
	return w->tag.found && n->start_mark.index == w->tag.at && n->type == w->tag.type;
}

/* "a: {b: {c: ...}}" for the dotted key text "a.b.c" (already made printable). */
static void nested_form(const char *dotted, char *buf, size_t size)
{
	size_t o = 0;
	int open = 0;
	buf[0] = '\0';
	for (const char *p = dotted; o < size;) {
		size_t n = strcspn(p, ".");
		bool last = p[n] != '.';
		o += (size_t)snprintf(buf + o, size - o, "%.*s: %s", (int)n, p, last ? "..." : "{");
		if (last)
			break;
		open++;
		p += n + 1;
	}
	while (open-- > 0 && o + 1 < size) {
		buf[o++] = '}';
		buf[o] = '\0';
	}
}

/* A key written with dots ("cluster.name: x") names a key of the schema, but YAML
 * makes it a key of its own, which would slip past the duplicate check beside a nested
 * "cluster: {name: y}": refused, with the nested form to write instead. */
static enum specd_status dotted_key(struct walk *w, const char *prefix, const char *text,
				    size_t len, int line)
{
	char shown[64], nested[160];
	cfg_show(text, len, shown, sizeof(shown));
	nested_form(shown, nested, sizeof(nested));
	if (*prefix)
		return failf(w->err, w->name, line,
			     "dotted key '%s' in '%s' is not supported: write it nested (%s)",
			     shown, prefix, nested);
	return failf(w->err, w->name, line,
		     "dotted key '%s' is not supported: write it nested (%s)", shown, nested);
}

static enum specd_status walk_leaf(struct walk *w, long idx, const yaml_node_t *val,
				   const char *full, int line)
{
	const struct cfg_key *k = &cfg_schema[idx];
	char why[CFG_WHY_MAX];
	if (val->type != YAML_SCALAR_NODE) {
		char what[128];
		return failf(w->err, w->name, line, "'%s' expects %s, not %s", full,
			     cfg_type_describe(k, what, sizeof(what)), kind(val));
	}
	if (is_null(val)) {
		if (k->flags & CFG_KEY_REQUIRED)
			return failf(w->err, w->name, line, "'%s' has no value", full);
		return SPECD_OK; /* as if absent: the default stays */
	}
	enum specd_status st = cfg_value_set(w->cfg, k, (const char *)val->data.scalar.value,
					     val->data.scalar.length, w->cfg->source_dir, why,
					     sizeof(why));
	if (st == SPECD_NOMEM)
		return nomem(w->err, w->name);
	if (st != SPECD_OK)
		return failf(w->err, w->name, line, "'%s' %s", full, why);
	w->line_of[idx] = line;
	return SPECD_OK;
}

static enum specd_status walk_pair(struct walk *w, const yaml_node_t *map, size_t i,
				   const char *prefix)
{
	const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
	const yaml_node_pair_t *p = &pairs[i];
	const yaml_node_t *key = node_at(w, p->key);
	const yaml_node_t *val = node_at(w, p->value);
	char full[PATH_BUF];
	if (!key || !val)
		return failf(w->err, w->name, line_of_node(map), "malformed YAML mapping");
	int line = line_of_node(key);
	display_path(prefix, key, full, sizeof(full));
	if (!visit(w, p->key) || !visit(w, p->value))
		return failf(w->err, w->name, line, "'%s' uses a YAML alias; aliases are not supported",
			     full);
	if (is_tagged(w, key) || is_tagged(w, val))
		return failf(w->err, w->name, w->tag.line,
			     "'%s' has the YAML tag '%s'; tags are not supported", full,
			     w->tag.shown);
	if (key->type != YAML_SCALAR_NODE)
		return failf(w->err, w->name, line, "a key%s%s must be a scalar, not %s",
			     *prefix ? " in " : "", prefix, kind(key));

	const char *text = (const char *)key->data.scalar.value;
	size_t len = key->data.scalar.length;
	for (size_t j = 0; j < i; j++) {
		/* earlier keys are all known ones (an unknown key stops the walk), so this
		 * loop stays short whatever the mapping's size */
		const yaml_node_t *prev = node_at(w, pairs[j].key);
		if (prev && prev->type == YAML_SCALAR_NODE && prev->data.scalar.length == len &&
		    memcmp(prev->data.scalar.value, text, len) == 0)
			return failf(w->err, w->name, line, "duplicate key '%s' (first on line %d)",
				     full, line_of_node(prev));
	}

	bool is_section = false;
	long idx = cfg_schema_find(prefix, text, len, &is_section);
	if ((idx >= 0 || is_section) && memchr(text, '.', len))
		return dotted_key(w, prefix, text, len, line);
	if (idx >= 0)
		return walk_leaf(w, idx, val, full, line);
	if (!is_section) {
		size_t slen = 0;
		const char *s = cfg_schema_suggest(prefix, text, len, &slen);
		if (s)
			return failf(w->err, w->name, line,
				     "unknown key '%s' (did you mean '%.*s'?)", full, (int)slen, s);
		return failf(w->err, w->name, line, "unknown key '%s'", full);
	}
	if (is_null(val))
		return SPECD_OK; /* "draft:" with its keys commented out */
	if (val->type != YAML_MAPPING_NODE)
		return failf(w->err, w->name, line, "'%s' expects a mapping of keys, not %s", full,
			     kind(val));
	/* a known section: its name matched the schema, so full is its exact path */
	mark_section(w, full, line);
	return walk_mapping(w, val, full);
}

static enum specd_status walk_mapping(struct walk *w, const yaml_node_t *map,
				      const char *prefix)
{
	size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
	for (size_t i = 0; i < n; i++) {
		enum specd_status st = walk_pair(w, map, i, prefix);
		if (st != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

/* libyaml's reader errors carry a byte offset, not a line. */
static int line_at_offset(const char *text, size_t len, size_t offset)
{
	int line = 1;
	for (size_t i = 0; i < offset && i < len; i++)
		line += text[i] == '\n';
	return line;
}

static enum specd_status yaml_failure(const yaml_parser_t *parser, const char *text, size_t len,
				      const char *name, struct specd_error *err)
{
	if (parser->error == YAML_MEMORY_ERROR)
		return nomem(err, name);
	int line = parser->error == YAML_READER_ERROR
			   ? line_at_offset(text, len, parser->problem_offset)
			   : (int)parser->problem_mark.line + 1;
	const char *problem = parser->problem ? parser->problem : "cannot parse";
	if (parser->context)
		return failf(err, name, line, "invalid YAML: %s (%s)", problem, parser->context);
	return failf(err, name, line, "invalid YAML: %s", problem);
}

static enum specd_status apply_defaults(struct cfg_cluster *cfg, const char *name,
					struct specd_error *err)
{
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const struct cfg_key *k = &cfg_schema[i];
		char why[CFG_WHY_MAX];
		if (!k->def)
			continue;
		enum specd_status st = cfg_value_set(cfg, k, k->def, strlen(k->def),
						     cfg->source_dir, why, sizeof(why));
		if (st == SPECD_NOMEM)
			return nomem(err, name);
		if (st != SPECD_OK) /* a schema bug, caught by the tests */
			return specd_errorf(err, SPECD_INTERNAL, "default of '%s' %s", k->path, why);
	}
	return SPECD_OK;
}

static enum specd_status check_required(struct walk *w)
{
	for (size_t i = 0; i < cfg_schema_count; i++) {
		const struct cfg_key *k = &cfg_schema[i];
		if (!(k->flags & CFG_KEY_REQUIRED) || w->line_of[i] > 0)
			continue;
		return failf(w->err, w->name, w->parent_line[i], "missing required key '%s'",
			     k->path);
	}
	return SPECD_OK;
}

/* The tag as written: libyaml expands "!!x" to "tag:yaml.org,2002:x". */
static void show_tag(const char *tag, char *buf, size_t size)
{
	static const char yaml_prefix[] = "tag:yaml.org,2002:";
	char shown[56];
	size_t n = strlen(yaml_prefix);
	if (strncmp(tag, yaml_prefix, n) == 0) {
		cfg_show(tag + n, strlen(tag + n), shown, sizeof(shown));
		snprintf(buf, size, "!!%s", shown);
	} else {
		cfg_show(tag, strlen(tag), shown, sizeof(shown));
		snprintf(buf, size, tag[0] == '!' ? "%s" : "!<%s>", shown);
	}
}

/* One pass over libyaml's events before the document is built, for what the document
 * hides or what building it would cost:
 * - the encoding libyaml detected (a UTF-16 byte-order mark), where only UTF-8 is read;
 * - flow depth: libyaml's scanner keeps one simple-key slot per flow level and scans
 *   them all for every token, so deep [ [ [ ... costs quadratic time. Counting the
 *   collections as the parser opens them stops at CFG_MAX_FLOW_DEPTH + 1, before the
 *   scanner has gone much deeper (its lookahead ends where a simple key would pass
 *   1024 characters), and it is exact: no guessing where quotes or comments start;
 * - the first explicit tag (recorded in w->tag; the walk names its key).
 * Real cluster files nest one or two flow levels. */
static enum specd_status scan_events(struct walk *w, const char *text, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	enum specd_status st = SPECD_OK;
	int flow = 0;
	bool end = false;

	if (!yaml_parser_initialize(&parser))
		return nomem(w->err, w->name);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (st == SPECD_OK && !end) {
		if (!yaml_parser_parse(&parser, &ev)) {
			st = yaml_failure(&parser, text, len, w->name, w->err);
			break;
		}
		int line = (int)ev.start_mark.line + 1;
		const yaml_char_t *tag = NULL;
		yaml_node_type_t type = YAML_NO_NODE;
		bool flow_start = false;
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
			if (ev.data.stream_start.encoding != YAML_UTF8_ENCODING)
				st = failf(w->err, w->name, 1,
					   "the file is UTF-16 (it starts with a UTF-16 byte-order "
					   "mark); a cluster file is UTF-8");
			break;
		case YAML_STREAM_END_EVENT:
			end = true;
			break;
		case YAML_SCALAR_EVENT:
			tag = ev.data.scalar.tag;
			type = YAML_SCALAR_NODE;
			break;
		case YAML_SEQUENCE_START_EVENT:
			tag = ev.data.sequence_start.tag;
			type = YAML_SEQUENCE_NODE;
			flow_start = ev.data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE;
			break;
		case YAML_MAPPING_START_EVENT:
			tag = ev.data.mapping_start.tag;
			type = YAML_MAPPING_NODE;
			flow_start = ev.data.mapping_start.style == YAML_FLOW_MAPPING_STYLE;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			/* a block collection never opens inside a flow one, so while any flow
			 * one is open, the one closing is flow */
			if (flow > 0)
				flow--;
			break;
		default:
			break;
		}
		if (flow_start && ++flow > CFG_MAX_FLOW_DEPTH)
			st = failf(w->err, w->name, line, "[ ] and { } nest deeper than %d levels",
				   CFG_MAX_FLOW_DEPTH);
		if (tag && !w->tag.found) {
			w->tag.found = true;
			w->tag.at = ev.start_mark.index;
			w->tag.type = type;
			w->tag.line = line;
			show_tag((const char *)tag, w->tag.shown, sizeof(w->tag.shown));
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return st;
}

/* Loads the one document, rejecting a second; walks it. */
static enum specd_status parse_yaml(struct walk *w, const char *text, size_t len)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	bool have_doc = false;
	enum specd_status st;

	st = scan_events(w, text, len);
	if (st != SPECD_OK)
		return st;
	if (!yaml_parser_initialize(&parser))
		return nomem(w->err, w->name);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		st = yaml_failure(&parser, text, len, w->name, w->err);
		goto done;
	}
	have_doc = true;
	if (!yaml_parser_load(&parser, &extra)) {
		st = yaml_failure(&parser, text, len, w->name, w->err);
		goto done;
	}
	if (yaml_document_get_root_node(&extra)) {
		int line = (int)extra.start_mark.line + 1;
		yaml_document_delete(&extra);
		st = failf(w->err, w->name, line,
			   "a second YAML document; a cluster file holds exactly one");
		goto done;
	}
	yaml_document_delete(&extra);

	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root || is_null(root)) {
		st = failf(w->err, w->name, 1, "empty cluster file (at least 'target.model' is "
					       "required)");
		goto done;
	}
	if (root->type != YAML_MAPPING_NODE) {
		st = failf(w->err, w->name, line_of_node(root),
			   "the top level must be a mapping of sections, not %s", kind(root));
		goto done;
	}
	w->doc = &doc;
	w->node_count = (size_t)(doc.nodes.top - doc.nodes.start);
	w->seen = specd_calloc(w->node_count + 1, 1);
	if (!w->seen) {
		st = nomem(w->err, w->name);
		goto done;
	}
	w->seen[1] = 1; /* the root (index 1): an alias back to it is a cycle */
	st = walk_mapping(w, root, "");
	if (st == SPECD_OK && w->tag.found) /* on the root, or where the walk did not go */
		st = failf(w->err, w->name, w->tag.line,
			   "YAML tags such as '%s' are not supported", w->tag.shown);
	specd_free(w->seen);
	w->seen = NULL;
	w->doc = NULL;
done:
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return st;
}

enum specd_status cfg_parse_buffer(const char *text, size_t len, const char *path,
				   unsigned flags, struct cfg_cluster **out,
				   struct specd_error *err)
{
	const char *name = path && *path ? path : "<config>";
	struct walk w = {.name = name, .err = err};
	struct cfg_cluster *cfg = NULL;
	char why[CFG_WHY_MAX];
	enum specd_status st;

	if (!out || (!text && len > 0))
		return specd_errorf(err, SPECD_INVAL, "cfg_parse_buffer: bad arguments");
	if (len > CFG_MAX_FILE_BYTES)
		return specd_errorf(err, SPECD_CONFIG, "%s: too large (%zu bytes; the limit is %u)",
				    name, len, CFG_MAX_FILE_BYTES);
	if (!text)
		text = "";

	cfg = specd_calloc(1, sizeof(*cfg));
	w.line_of = specd_calloc(cfg_schema_count, sizeof(int));
	w.parent_line = specd_calloc(cfg_schema_count, sizeof(int));
	if (!cfg || !w.line_of || !w.parent_line)
		goto nomem;
	cfg->source_path = specd_strdup(path ? path : "");
	if (!cfg->source_path)
		goto nomem;
	st = cfg_source_dir(path, &cfg->source_dir, why, sizeof(why));
	if (st == SPECD_NOMEM)
		goto nomem;
	if (st != SPECD_OK) {
		specd_errorf(err, st, "%s: %s", name, why);
		goto fail;
	}
	w.cfg = cfg;
	st = apply_defaults(cfg, name, err);
	if (st == SPECD_OK)
		st = parse_yaml(&w, text, len);
	if (st == SPECD_OK)
		st = check_required(&w);
	if (st == SPECD_OK)
		st = cfg_validate(cfg, w.line_of, name, flags, err);
	if (st != SPECD_OK)
		goto fail;
	specd_free(w.line_of);
	specd_free(w.parent_line);
	*out = cfg;
	return SPECD_OK;
nomem:
	st = nomem(err, name);
fail:
	specd_free(w.line_of);
	specd_free(w.parent_line);
	cfg_destroy(cfg);
	return st;
}

/* Reads the whole file, at most CFG_MAX_FILE_BYTES (+1 to notice a longer one). */
static enum specd_status read_file(const char *path, char **out, size_t *out_len,
				   struct specd_error *err)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	if (!f)
		return specd_errorf(err, SPECD_IO, "%s: cannot read: %s", path, strerror(errno));
	for (;;) {
		if (len + 1 >= cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			if (ncap > CFG_MAX_FILE_BYTES + 2)
				ncap = CFG_MAX_FILE_BYTES + 2;
			char *p = specd_realloc_array(buf, ncap, 1);
			if (!p) {
				specd_free(buf);
				fclose(f);
				return nomem(err, path);
			}
			buf = p;
			cap = ncap;
		}
		size_t n = fread(buf + len, 1, cap - 1 - len, f);
		len += n;
		if (n == 0 || len > CFG_MAX_FILE_BYTES)
			break;
	}
	int e = errno;
	bool bad = ferror(f) != 0;
	fclose(f);
	if (bad) {
		specd_free(buf);
		return specd_errorf(err, SPECD_IO, "%s: cannot read: %s", path, strerror(e));
	}
	if (len > CFG_MAX_FILE_BYTES) {
		specd_free(buf);
		return specd_errorf(err, SPECD_CONFIG, "%s: too large (more than %u bytes)", path,
				    CFG_MAX_FILE_BYTES);
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return SPECD_OK;
}

enum specd_status cfg_load_file(const char *path, unsigned flags, struct cfg_cluster **out,
				char **text, size_t *len, struct specd_error *err)
{
	char *buf = NULL;
	size_t n = 0;
	struct cfg_cluster *cfg = NULL;
	if (!path || !out || (text && !len))
		return specd_errorf(err, SPECD_INVAL, "cfg_load_file: bad arguments");
	enum specd_status st = read_file(path, &buf, &n, err);
	if (st != SPECD_OK)
		return st;
	st = cfg_parse_buffer(buf, n, path, flags, &cfg, err);
	if (st != SPECD_OK) {
		specd_free(buf);
		return st;
	}
	if (text) {
		*text = buf;
		*len = n;
	} else {
		specd_free(buf);
	}
	*out = cfg;
	return SPECD_OK;
}

void cfg_destroy(struct cfg_cluster *cfg)
{
	if (!cfg)
		return;
	cfg_values_free(cfg);
	specd_free(cfg->source_path);
	specd_free(cfg->source_dir);
	specd_free(cfg);
}
