/* Logging for every module: a level checked before formatting, and one line per
 * record carrying time, rank, role and request id. Records go to one sink: stderr by
 * default, or a callback that tests install to capture what was logged.
 *
 * Threads: every function may be called from any thread. The sink is called with an
 * internal lock held, so records never interleave; a sink must not log. */
#ifndef SPECD_COMMON_LOG_H
#define SPECD_COMMON_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

struct log_record {
	enum log_level level;
	double time;          /* seconds since the Unix epoch (wall clock) */
	int rank;             /* MPI world rank, -1 before it is known */
	const char *role;     /* "leader", "target", "draft", or "-" */
	uint64_t request_id;  /* 0 when the line belongs to no request */
	const char *file;     /* source file and line of the LOG_* call */
	int line;
	const char *msg;      /* the formatted message, no trailing newline */
};

typedef void log_sink_fn(const struct log_record *rec, void *user);

/* The level below which records are dropped. Default INFO, or SPECD_LOG_LEVEL
 * (error|warn|info|debug) from the environment when log_init_from_env() ran. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_init_from_env(void);

/* Parses "error", "warn", "info", "debug"; false when the text is none of them. */
bool log_level_parse(const char *text, enum log_level *out);
const char *log_level_name(enum log_level level);

/* Installs a sink; NULL restores the stderr sink. */
void log_set_sink(log_sink_fn *fn, void *user);

/* Who this process is, stamped on every record. role is copied. */
void log_set_identity(int rank, const char *role);

/* The request the calling thread works on now (0: none). Thread-local. */
void log_set_request(uint64_t request_id);

bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Formats a record as the stderr sink prints it, into buf (always terminated). */
void log_format_record(const struct log_record *rec, char *buf, unsigned long size);

#define LOG_AT_(lvl, ...)                                              \
	do {                                                           \
		if (log_enabled(lvl))                                  \
			log_write(lvl, __FILE__, __LINE__, __VA_ARGS__); \
	} while (0)
#define LOG_ERROR(...) LOG_AT_(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT_(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT_(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG_AT_(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
