/* Growable byte buffer; see buf.h. */
#include "buf.h"

#include <string.h>

#include "alloc.h"

void specd_buf_init(struct specd_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void specd_buf_fini(struct specd_buf *b)
{
	specd_free(b->data);
	specd_buf_init(b);
}

enum specd_status specd_buf_reserve(struct specd_buf *b, size_t more)
{
	if (more <= b->cap - b->len)
		return SPECD_OK;
	if (more > SIZE_MAX / 2 - b->len)
		return SPECD_NOMEM;
	size_t need = b->len + more, cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	uint8_t *p = specd_realloc_array(b->data, cap, 1);
	if (!p)
		return SPECD_NOMEM;
	b->data = p;
	b->cap = cap;
	return SPECD_OK;
}

enum specd_status specd_buf_append(struct specd_buf *b, const void *data, size_t n)
{
	enum specd_status st = specd_buf_reserve(b, n);
	if (st != SPECD_OK || n == 0)
		return st;
	memcpy(b->data + b->len, data, n);
	b->len += n;
	return SPECD_OK;
}

enum specd_status specd_buf_terminate(struct specd_buf *b)
{
	enum specd_status st = specd_buf_reserve(b, 1);
	if (st == SPECD_OK)
		b->data[b->len] = 0;
	return st;
}

void specd_buf_consume(struct specd_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void specd_buf_advance(struct specd_buf *b, size_t *head, size_t n)
{
	size_t h = *head + n;
	if (h >= b->len) {
		b->len = 0;
		*head = 0;
		return;
	}
	/* Moving only when the read part outweighs the rest bounds the bytes moved by the
	 * bytes read: each byte read pays for at most one byte moved. */
	if (h >= b->len - h) {
		memmove(b->data, b->data + h, b->len - h);
		b->len -= h;
		h = 0;
	}
	*head = h;
}

void specd_buf_trim(struct specd_buf *b, size_t keep)
{
	if (b->len == 0 && b->cap > keep)
		specd_buf_fini(b);
}
