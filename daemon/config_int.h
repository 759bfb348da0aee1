/* Private to the cluster-file code (config_*.c): the schema table that drives
 * parsing, defaults, validation and docs/config.md, and the helpers the stages share
 * (value conversion, ${VAR}/~/relative path expansion, cross-field rules). */
#ifndef SPECD_DAEMON_CONFIG_INT_H
#define SPECD_DAEMON_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The YAML text a cluster file may have at most: these files are a few KiB, and the
 * cap bounds what libyaml builds from hostile input. */
#define CFG_MAX_FILE_BYTES (1u << 20)

/* How deep [ ] and { } may nest (libyaml's scanner is quadratic in this depth). */
#define CFG_MAX_FLOW_DEPTH 64

/* Room for the short reason a conversion gives; the caller adds FILE:LINE: 'KEY'. */
#define CFG_WHY_MAX 256

enum cfg_type {
	CFG_TYPE_STRING,   /* non-empty text; ${VAR} expanded */
	CFG_TYPE_PATH,     /* a file or folder; ${VAR}, ~ expanded, relative to the file */
	CFG_TYPE_INT,      /* a decimal integer in imin..imax */
	CFG_TYPE_INT_AUTO, /* "auto" or a decimal integer in imin..imax */
	CFG_TYPE_SIZE,     /* bytes, optionally with a unit, in imin..imax */
	CFG_TYPE_FLOAT,    /* a finite decimal number in fmin..fmax */
	CFG_TYPE_BOOL,     /* true or false */
	CFG_TYPE_ENUM,     /* one of names[] (or "auto" with CFG_KEY_AUTO) */
};

/* How a value lives in struct cfg_cluster (the field at `offset`). */
enum cfg_store {
	CFG_STORE_STR,    /* char *, owned, NULL when unset */
	CFG_STORE_INT,    /* int (also enums: the index into names[]) */
	CFG_STORE_U32,    /* uint32_t */
	CFG_STORE_U64,    /* uint64_t */
	CFG_STORE_DOUBLE, /* double */
	CFG_STORE_BOOL,   /* bool */
};

enum cfg_key_flags {
	CFG_KEY_REQUIRED = 1u << 0, /* no default: the file must set it */
	/* "auto" is accepted: sets the bool at auto_offset (and the value to its zero);
	 * any other value clears it. */
	CFG_KEY_AUTO = 1u << 1,
};

struct cfg_key {
	const char *path; /* dotted: "speculation.ngram.prompt_lookup_min" */
	enum cfg_type type;
	enum cfg_store store;
	size_t offset;      /* into struct cfg_cluster */
	size_t auto_offset; /* bool field, with CFG_KEY_AUTO */
	unsigned flags;
	/* The default as YAML text, converted by the same code as a file's value;
	 * NULL: unset (optional keys) or required. */
	const char *def;
	int64_t imin, imax;       /* INT, INT_AUTO, SIZE */
	double fmin, fmax;        /* FLOAT */
	const char *const *names; /* ENUM: NULL-terminated; index = stored value */
	const char *allowed;      /* docs' "Allowed" cell when the type says too little */
	const char *doc;          /* one line for docs/config.md */
};

struct cfg_section {
	const char *name; /* top-level key */
	const char *doc;
};

extern const struct cfg_key cfg_schema[];
extern const size_t cfg_schema_count;
extern const struct cfg_section cfg_sections[];
extern const size_t cfg_section_count;

/* Cross-field rules in words, for docs/config.md; NULL-terminated. They sit beside
 * the code that enforces them (config_validate.c). */
extern const char *const cfg_rule_docs[];

/* Schema lookups (config_schema.c). `prefix` is a section path ("" for the top level,
 * "speculation.ngram"); `name` a key text of `len` bytes. Returns the index of the
 * leaf key prefix.name, or -1; sets *is_section when prefix.name is a section. A name
 * with dots matches too ("limits.jobs" below "server"): the parser refuses such a key
 * once it is known, so that it cannot set a key beside its nested spelling. */
long cfg_schema_find(const char *prefix, const char *name, size_t len, bool *is_section);
/* The known child of `prefix` nearest to name (edit distance), or NULL when none
 * is close enough to suggest. Points into the schema. Writes its length. */
const char *cfg_schema_suggest(const char *prefix, const char *name, size_t len,
			       size_t *out_len);
/* What a key accepts, in words ("an integer", "one of cpu, cuda"), into buf. */
const char *cfg_type_describe(const struct cfg_key *k, char *buf, size_t size);
/* The type's short name for the reference table: "integer", "size", ... */
const char *cfg_type_name(enum cfg_type t);
/* Copies text for a message into buf: printable ASCII only (others become '?'), at
 * most 48 bytes and then "...". size must be at least 56. */
void cfg_show(const char *text, size_t len, char *buf, size_t size);
/* Formats n as the largest exact unit ("4MiB", "1000B"). */
void cfg_size_format(uint64_t n, char *buf, size_t size);

/* Converts one scalar (config_values.c) into k's field of cfg. `text` is len bytes,
 * not terminated. `dir` is where relative paths resolve. SPECD_CONFIG with a reason
 * in why (the caller prefixes FILE:LINE: 'KEY'), or SPECD_NOMEM. */
enum specd_status cfg_value_set(struct cfg_cluster *cfg, const struct cfg_key *k,
				const char *text, size_t len, const char *dir, char *why,
				size_t why_size);
/* Frees every owned string field of cfg (not cfg itself). */
void cfg_values_free(struct cfg_cluster *cfg);

/* Path helpers (config_paths.c). Outputs are owned (specd_free); errors as above. */
/* ${VAR} and ${VAR:-default} (default used when VAR is unset or empty). */
enum specd_status cfg_expand_env(const char *text, size_t len, char **out, char *why,
				 size_t why_size);
/* A leading ~ or ~/ becomes $HOME; a relative result is joined to dir; "." and ".."
 * components and repeated slashes are folded lexically. */
enum specd_status cfg_path_resolve(const char *path, const char *dir, char **out,
				   char *why, size_t why_size);
/* The absolute folder holding `file` ("" or NULL: the working directory). */
enum specd_status cfg_source_dir(const char *file, char **out, char *why, size_t why_size);

/* Cross-field rules (config_validate.c). line_of[i] is the line that set
 * cfg_schema[i] (0: the default). May rewrite cfg->listen (unix: paths resolve
 * like other paths). Errors carry "FILE:LINE: ..." already. */
enum specd_status cfg_validate(struct cfg_cluster *cfg, const int *line_of, const char *name,
			       unsigned flags, struct specd_error *err);

/* Index of the key with this exact path; -1 when absent. */
long cfg_schema_index(const char *path);

#endif
