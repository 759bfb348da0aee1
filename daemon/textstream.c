/* Streamed text with stop strings; see textstream.h. */
#include "textstream.h"

#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "model/tokenizer.h"
#include "utf8.h"

enum specd_status textstream_init(struct textstream *ts, const char *const *stops,
				  size_t n_stops)
{
	memset(ts, 0, sizeof(*ts));
	specd_buf_init(&ts->pending);
	specd_buf_init(&ts->out);
	ts->stop_at = SIZE_MAX;
	if (n_stops == 0)
		return SPECD_OK;
	ts->stops = specd_calloc(n_stops, sizeof(char *));
	if (!ts->stops)
		return SPECD_NOMEM;
	for (size_t i = 0; i < n_stops; i++) {
		if (!stops[i] || !stops[i][0])
			continue;
		ts->stops[ts->n_stops] = specd_strdup(stops[i]);
		if (!ts->stops[ts->n_stops]) {
			textstream_fini(ts);
			return SPECD_NOMEM;
		}
		size_t k = strlen(stops[i]);
		ts->longest = k > ts->longest ? k : ts->longest;
		ts->n_stops++;
	}
	return SPECD_OK;
}

void textstream_fini(struct textstream *ts)
{
	for (size_t i = 0; i < ts->n_stops; i++)
		specd_free(ts->stops[i]);
	specd_free(ts->stops);
	specd_buf_fini(&ts->pending);
	specd_buf_fini(&ts->out);
	memset(ts, 0, sizeof(*ts));
}

/* The earliest position from `from` on where a whole stop string starts, or len when
 * none does. */
static size_t find_stop(const struct textstream *ts, const char *s, size_t from, size_t len)
{
	size_t best = len;
	for (size_t i = 0; i < ts->n_stops; i++) {
		size_t k = strlen(ts->stops[i]);
		for (size_t at = from; at + k <= len && at < best; at++) {
			if (memcmp(s + at, ts->stops[i], k) == 0) {
				best = at;
				break;
			}
		}
	}
	return best;
}

enum specd_status textstream_push(struct textstream *ts, const char *bytes, size_t n)
{
	if (ts->stopped || ts->stop_at != SIZE_MAX)
		return SPECD_OK; /* text past a stop string is never sent */
	size_t old = ts->pending.len;
	enum specd_status st = specd_buf_append(&ts->pending, bytes, n);
	if (st != SPECD_OK || ts->n_stops == 0)
		return st;
	/* A stop string this push completes ends in its bytes, so starts at most
	 * longest - 1 bytes before them; one that ended earlier was found then. */
	size_t from = old > ts->longest - 1 ? old - (ts->longest - 1) : 0;
	size_t at = find_stop(ts, (const char *)ts->pending.data, from, ts->pending.len);
	if (at < ts->pending.len)
		ts->stop_at = at;
	return SPECD_OK;
}

bool textstream_stop_pending(const struct textstream *ts)
{
	return !ts->stopped && ts->stop_at != SIZE_MAX;
}

/* The length of the longest suffix of s[0..len) that is a proper prefix of a stop
 * string: those bytes must wait for the next token. */
static size_t held_back(const struct textstream *ts, const char *s, size_t len)
{
	size_t hold = 0;
	for (size_t i = 0; i < ts->n_stops; i++) {
		size_t k = strlen(ts->stops[i]);
		for (size_t m = k - 1 < len ? k - 1 : len; m > hold; m--) {
			if (memcmp(s + len - m, ts->stops[i], m) == 0) {
				hold = m;
				break;
			}
		}
	}
	return hold;
}

/* Appends s[0..n) to out with every invalid sequence replaced by U+FFFD, and U+0000
 * too: a piece goes out as a protobuf-c string, which ends at the first NUL byte, so
 * a NUL (a model can emit one through the byte-fallback token <0x00>) would cut the
 * rest of the piece off. The step's token ids still say exactly what was generated. */
static enum specd_status append_sanitised(struct specd_buf *out, const char *s, size_t n)
{
	static const char replacement[] = "\xef\xbf\xbd";
	const unsigned char *u = (const unsigned char *)s;
	enum specd_status st = SPECD_OK;
	for (size_t i = 0; i < n && st == SPECD_OK;) {
		size_t k = u[i] ? utf8_char_len(u + i, n - i, NULL) : 0;
		if (k == 0) {
			st = specd_buf_append(out, replacement, 3);
			i++;
		} else {
			st = specd_buf_append(out, s + i, k);
			i += k;
		}
	}
	return st;
}

enum specd_status textstream_take(struct textstream *ts, bool at_end, size_t *len)
{
	const char *s = (const char *)ts->pending.data;
	size_t n = ts->pending.len, ready;
	size_t stop = ts->stopped || ts->stop_at == SIZE_MAX ? n : ts->stop_at;
	if (stop < n) {
		ready = stop;
	} else if (at_end) {
		ready = n;
	} else {
		ready = tok_utf8_complete(s, n - held_back(ts, s, n));
	}
	ts->out.len = 0;
	enum specd_status st = append_sanitised(&ts->out, s, ready);
	if (st == SPECD_OK)
		st = specd_buf_terminate(&ts->out);
	if (st != SPECD_OK) {
		ts->out.len = 0;
		return st;
	}
	if (stop < n) {
		ts->stopped = true;
		ts->pending.len = 0; /* text past a stop string is never sent */
	} else {
		specd_buf_consume(&ts->pending, ready);
	}
	*len = ts->out.len;
	return SPECD_OK;
}
