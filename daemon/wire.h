/* The frame layer of the protocol (DESIGN.md §7, docs/protocol.md): each message is
 * 1 flag byte (0: uncompressed), a 4-byte big-endian length, then a serialized
 * specd.v1.Envelope. The reader takes bytes as they arrive, in any split, and hands
 * out whole frames; a frame over the size limit is reported and its bytes skipped as
 * they arrive, so the connection survives it.
 *
 * Threads: a reader belongs to one connection, used by the event-loop thread. */
#ifndef SPECD_DAEMON_WIRE_H
#define SPECD_DAEMON_WIRE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/status.h"
#include "proto/specd.pb-c.h"

#define WIRE_PREFIX_BYTES 5
#define WIRE_FLAG_COMPRESSED 1

enum wire_event {
	WIRE_NEED_MORE = 0, /* no whole frame yet */
	WIRE_FRAME,         /* a whole frame: *frame, *len */
	WIRE_TOO_LARGE,     /* a frame announced *len bytes, over the limit; skipped */
	WIRE_COMPRESSED,    /* a frame flagged compressed (unsupported); skipped */
};

struct wire_reader {
	uint32_t max_frame;   /* largest frame body accepted (limits.frame_bytes) */
	struct specd_buf buf; /* received; buf.data[head..len) not yet handed out */
	size_t head;          /* read offset: frames are handed out in place, and the
			       * rest moves down only now and then (specd_buf_advance) */
	size_t consumed;      /* bytes at head handed out by the last call */
	uint64_t skip;        /* bytes still to discard of a refused frame */
};

void wire_reader_init(struct wire_reader *r, uint32_t max_frame);
void wire_reader_fini(struct wire_reader *r);

/* Adds received bytes. Bytes of a refused frame are dropped here without being
 * stored. SPECD_NOMEM when they cannot be stored (the reader is unchanged). */
enum specd_status wire_reader_push(struct wire_reader *r, const void *data, size_t n);

/* The next event. With WIRE_FRAME, *frame points into the reader and stays valid until
 * the next call. SPECD_PROTO for a flag byte other than 0 or 1: the byte stream cannot be
 * trusted any more and the connection should be closed. Handing out n frames one by
 * one costs time linear in their bytes, however small they are. */
enum specd_status wire_reader_next(struct wire_reader *r, enum wire_event *ev,
				   const uint8_t **frame, uint32_t *len);

/* True while part of a frame is buffered and the rest is still to come (bytes of a
 * refused frame still to skip count too): the client is in the middle of sending one.
 * Meaningful after wire_reader_next answered WIRE_NEED_MORE. */
bool wire_reader_mid_frame(const struct wire_reader *r);

/* Appends env as one frame to out. SPECD_NOMEM; SPECD_INVAL when the envelope exceeds
 * the 4 GiB a frame can announce. */
enum specd_status wire_pack(const Specd__V1__Envelope *env, struct specd_buf *out);

/* Parses a frame's envelope: *out is owned by the caller (free with
 * specd__v1__envelope__free_unpacked(*out, NULL)). SPECD_PROTO when it is no valid
 * Envelope (bad protobuf, a field of the wrong wire type). */
enum specd_status wire_unpack(const uint8_t *frame, uint32_t len, Specd__V1__Envelope **out);

/* The gRPC-style code for a status (SPECD_INVAL -> INVALID_ARGUMENT, SPECD_BUSY ->
 * RESOURCE_EXHAUSTED, ...). */
Specd__V1__Code wire_code_from_status(enum specd_status st);
/* "INVALID_ARGUMENT", ...: the code's name, for messages and specctl. */
const char *wire_code_name(Specd__V1__Code code);

#endif
