/* The logging sink and its record formatting; see log.h. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int g_level = LOG_LEVEL_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static log_sink_fn *g_sink;
static void *g_sink_user;
static int g_rank = -1;
static char g_role[16] = "-";
static _Thread_local uint64_t t_request;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
	atomic_store(&g_level, (int)level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&g_level);
}

bool log_level_parse(const char *text, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (text && strcasecmp(text, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

const char *log_level_name(enum log_level level)
{
	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		return "?";
	return level_names[level];
}

void log_init_from_env(void)
{
	enum log_level level;
	if (log_level_parse(getenv("SPECD_LOG_LEVEL"), &level))
		log_set_level(level);
}

void log_set_sink(log_sink_fn *fn, void *user)
{
	pthread_mutex_lock(&g_lock);
	g_sink = fn;
	g_sink_user = user;
	pthread_mutex_unlock(&g_lock);
}

void log_set_identity(int rank, const char *role)
{
	pthread_mutex_lock(&g_lock);
	g_rank = rank;
	snprintf(g_role, sizeof(g_role), "%s", role ? role : "-");
	pthread_mutex_unlock(&g_lock);
}

void log_set_request(uint64_t request_id)
{
	t_request = request_id;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&g_level, memory_order_relaxed);
}

void log_format_record(const struct log_record *rec, char *buf, unsigned long size)
{
	time_t secs = (time_t)rec->time;
	struct tm tm;
	gmtime_r(&secs, &tm);
	int ms = (int)((rec->time - (double)secs) * 1000.0);
	char req[32] = "-";
	if (rec->request_id)
		snprintf(req, sizeof(req), "%llu", (unsigned long long)rec->request_id);
	const char *base = strrchr(rec->file, '/');
	snprintf(buf, size, "%02d:%02d:%02d.%03d %-5s r%d %s req=%s %s:%d: %s", tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ms, log_level_name(rec->level), rec->rank, rec->role, req,
		 base ? base + 1 : rec->file, rec->line, rec->msg);
}

static void stderr_sink(const struct log_record *rec)
{
	char line[1536];
	log_format_record(rec, line, sizeof(line));
	fprintf(stderr, "%s\n", line);
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct log_record rec = {
		.level = level,
		.time = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9,
		.request_id = t_request,
		.file = file,
		.line = line,
		.msg = msg,
	};
	pthread_mutex_lock(&g_lock);
	rec.rank = g_rank;
	rec.role = g_role;
	if (g_sink)
		g_sink(&rec, g_sink_user);
	else
		stderr_sink(&rec);
	pthread_mutex_unlock(&g_lock);
}
