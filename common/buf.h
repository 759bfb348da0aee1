/* A growable byte buffer: socket input and output queues, frame assembly, text
 * accumulation. Caller-owned struct (specd_buf_init / specd_buf_fini); the bytes are
 * heap memory it owns. Not thread-safe: one owner at a time. */
#ifndef SPECD_COMMON_BUF_H
#define SPECD_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct specd_buf {
	uint8_t *data; /* data[0..len) is valid; NULL until the first growth */
	size_t len;
	size_t cap;
};

void specd_buf_init(struct specd_buf *b);
/* Frees the bytes; the buffer is empty and reusable afterwards. */
void specd_buf_fini(struct specd_buf *b);
/* Makes room for `more` bytes past len (capacity at least doubles when it grows).
 * SPECD_NOMEM on failure, with the buffer unchanged. */
enum specd_status specd_buf_reserve(struct specd_buf *b, size_t more);
/* Appends n bytes (data may be NULL when n is 0). SPECD_NOMEM on failure, unchanged. */
enum specd_status specd_buf_append(struct specd_buf *b, const void *data, size_t n);
/* Appends a NUL after the bytes without counting it in len (for text). */
enum specd_status specd_buf_terminate(struct specd_buf *b);
/* Drops the first n bytes (n <= len), moving the rest to the front. Each call moves
 * the whole rest: to take a buffer apart piece by piece, use specd_buf_advance. */
void specd_buf_consume(struct specd_buf *b, size_t n);
/* For a buffer read from the front at *head (data[*head..len) still unread): marks n
 * more bytes read (n <= len - *head). The unread rest moves to the front only once the
 * read part is at least as long as it (and the buffer empties, *head 0, when all is
 * read), so reading a buffer in many small pieces costs time linear in its length. */
void specd_buf_advance(struct specd_buf *b, size_t *head, size_t n);
/* An empty buffer that grew past `keep` bytes gives its memory back (a connection's
 * queue after one large frame must not hold megabytes for the rest of its life). */
void specd_buf_trim(struct specd_buf *b, size_t keep);

#endif
