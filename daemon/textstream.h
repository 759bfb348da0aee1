/* The text a job streams back: token text accumulates here, and what is "ready" is
 * only what (1) ends on a UTF-8 character boundary and (2) cannot be the start of a
 * stop string, so a stop string is matched across token boundaries and text past it
 * is never sent (DESIGN.md §7). Invalid byte sequences (a model can emit stray bytes
 * through byte-fallback tokens) and NUL bytes are sent as U+FFFD, so every piece is
 * valid UTF-8 and survives as a C string (protobuf-c's `string`).
 *
 * Caller-owned struct; compute thread only. */
#ifndef SPECD_DAEMON_TEXTSTREAM_H
#define SPECD_DAEMON_TEXTSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/status.h"

struct textstream {
	struct specd_buf pending; /* decoded, not yet handed out */
	struct specd_buf out;     /* the last ready piece (valid UTF-8) */
	char **stops;             /* owned copies */
	size_t n_stops;
	size_t longest;           /* the longest stop string's length */
	size_t stop_at;           /* where in pending the first whole stop string starts,
				   * found as the token completing it is pushed; or SIZE_MAX */
	bool stopped;             /* a stop string matched: nothing more is accepted */
};

/* Copies the stop strings (empty ones are ignored). SPECD_NOMEM. */
enum specd_status textstream_init(struct textstream *ts, const char *const *stops,
				  size_t n_stops);
void textstream_fini(struct textstream *ts);

/* Adds a token's text, looking for a stop string it completes (only where one could end:
 * in its bytes). After a stop matched, bytes are ignored. SPECD_NOMEM. */
enum specd_status textstream_push(struct textstream *ts, const char *bytes, size_t n);

/* True when the text pushed and not yet taken holds a whole stop string: the token
 * just pushed is the last one to send (a speculative step can bring several; those
 * past it must not go out, as plain decoding would never have made them). O(1). */
bool textstream_stop_pending(const struct textstream *ts);

/* Moves what is ready into ts->out (replacing its previous contents) and returns its
 * length; at_end flushes everything left (an unfinished character becomes U+FFFD).
 * SPECD_NOMEM leaves the pending text in place. */
enum specd_status textstream_take(struct textstream *ts, bool at_end, size_t *len);

#endif
