/* Shared helpers for the cmocka suites: where the tree and the models are, scratch
 * folders, running the built tools, reading files and capturing log records. Tests
 * only. The helpers assert nothing: each returns what it found or whether it worked,
 * so the group set-ups (which must return -1, not fail a test) can use them as well
 * as the tests, which assert on the result. */
#ifndef SPECD_TEST_SUPPORT_H
#define SPECD_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

/* The source tree (SPECD_SOURCE_DIR, set by CTest) or "." when unset. */
const char *ts_source_dir(void);
/* The build tree (SPECD_BINARY_DIR) or "." when unset. */
const char *ts_binary_dir(void);

/* Finds a real model file by name: $SPECD_MODELS/NAME, then
 * $SPECD_SOURCE_DIR/../shared/models/NAME. Writes the path into buf and returns true
 * when the file exists. */
bool ts_model_path(const char *name, char *buf, size_t size);

/* Creates a fresh scratch folder under $TMPDIR (or /tmp) and writes its path into
 * buf; false on failure. ts_rmtree removes it again. */
bool ts_mkdtemp(char *buf, size_t size);
void ts_rmtree(const char *path);

/* Writes `text` to DIR/NAME, returning the full path in buf. */
bool ts_write_file(const char *dir, const char *name, const char *text, char *buf,
		   size_t size);

/* The whole file at path, malloc'd with one NUL past its end (so text can be read as a
 * string), its size in *n; NULL when it cannot be read. */
void *ts_read_file(const char *path, size_t *n);

/* Captures every log record's message (joined by newlines) until ts_log_capture_end;
 * ts_log_captured returns the text so far. */
void ts_log_capture_begin(void);
const char *ts_log_captured(void);
void ts_log_capture_end(void);

/* Runs argv (argv[0] a path) with stdout and stderr both captured into *out (malloc'd,
 * NUL-terminated), waiting at most timeout_s; returns the exit status (0..255), 128+sig
 * when killed by a signal, or -1 when it could not run or timed out (then killed). */
int ts_run(const char *const argv[], char **out, double timeout_s);

/* Runs this build's program `rel` (under the build folder: "tools/specd-gen-heads"),
 * with "-o out" first unless out is NULL, then args (NULL-terminated, at most 36);
 * returns its stdout and stderr (malloc'd; NULL only without memory) and *rc its exit
 * status as ts_run. */
char *ts_run_built(const char *rel, const char *out, const char *const *args, int *rc);
/* Runs this build's tools/<tool> -o out args... (NULL-terminated, at most 36), its
 * output printed to stderr when it fails; returns its exit status as ts_run. */
int ts_gen(const char *tool, const char *out, const char *const *args);
/* ts_gen of specd-gen-model. */
int ts_gen_model(const char *out, const char *const *args);

#endif
