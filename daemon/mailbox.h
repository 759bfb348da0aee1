/* A thread-safe FIFO between the event-loop thread and the compute thread (STYLE.md:
 * only the loop touches sockets, only the compute thread touches the model and MPI; they
 * talk through mailboxes). Items embed a struct mbox_item, so putting never allocates
 * and never fails. The receiving side either blocks (mbox_wait: the compute thread) or
 * polls an eventfd in its epoll set (mbox_fd: the loop thread).
 *
 * Any thread may put; one thread takes. */
#ifndef SPECD_DAEMON_MAILBOX_H
#define SPECD_DAEMON_MAILBOX_H

#include <stdbool.h>

#include "common/status.h"

struct mbox_item {
	struct mbox_item *next;
};

struct mbox;

/* SPECD_NOMEM, or SPECD_IO when the eventfd cannot be made. */
enum specd_status mbox_create(struct mbox **out);
/* Frees the mailbox; items still in it are passed to free_item (may be NULL). */
void mbox_destroy(struct mbox *mb, void (*free_item)(struct mbox_item *item));

void mbox_put(struct mbox *mb, struct mbox_item *item);
/* The oldest item, or NULL when empty. Never blocks. */
struct mbox_item *mbox_take(struct mbox *mb);
/* The oldest item, waiting up to timeout_s (< 0: for ever); NULL on timeout. */
struct mbox_item *mbox_wait(struct mbox *mb, double timeout_s);
/* Readable whenever items may be waiting; mbox_take clears it once empty. */
int mbox_fd(const struct mbox *mb);

#endif
