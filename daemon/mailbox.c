/* Mailboxes between threads; see mailbox.h. */
#include "mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"

struct mbox {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct mbox_item *head, *tail;
	int efd;
};

enum specd_status mbox_create(struct mbox **out)
{
	struct mbox *mb = specd_calloc(1, sizeof(*mb));
	if (!mb)
		return SPECD_NOMEM;
	mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (mb->efd < 0) {
		specd_free(mb);
		return SPECD_IO;
	}
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&mb->cond, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&mb->lock, NULL);
	*out = mb;
	return SPECD_OK;
}

void mbox_destroy(struct mbox *mb, void (*free_item)(struct mbox_item *item))
{
	if (!mb)
		return;
	struct mbox_item *it = mb->head;
	while (it) {
		struct mbox_item *next = it->next;
		if (free_item)
			free_item(it);
		it = next;
	}
	close(mb->efd);
	pthread_cond_destroy(&mb->cond);
	pthread_mutex_destroy(&mb->lock);
	specd_free(mb);
}

void mbox_put(struct mbox *mb, struct mbox_item *item)
{
	item->next = NULL;
	pthread_mutex_lock(&mb->lock);
	bool was_empty = mb->head == NULL;
	if (mb->tail)
		mb->tail->next = item;
	else
		mb->head = item;
	mb->tail = item;
	pthread_cond_signal(&mb->cond);
	pthread_mutex_unlock(&mb->lock);
	if (was_empty) {
		/* One wake-up per empty->non-empty transition is enough: the taker drains
		 * everything it finds. A full counter (EAGAIN) already means "readable". */
		uint64_t one = 1;
		ssize_t r = write(mb->efd, &one, sizeof(one));
		(void)r;
	}
}

static struct mbox_item *pop_locked(struct mbox *mb)
{
	struct mbox_item *it = mb->head;
	if (it) {
		mb->head = it->next;
		if (!mb->head)
			mb->tail = NULL;
		it->next = NULL;
	}
	if (!mb->head) {
		uint64_t v;
		ssize_t r = read(mb->efd, &v, sizeof(v)); /* clear readiness; EAGAIN is fine */
		(void)r;
	}
	return it;
}

struct mbox_item *mbox_take(struct mbox *mb)
{
	pthread_mutex_lock(&mb->lock);
	struct mbox_item *it = pop_locked(mb);
	pthread_mutex_unlock(&mb->lock);
	return it;
}

struct mbox_item *mbox_wait(struct mbox *mb, double timeout_s)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_s >= 0) {
		long ns = deadline.tv_nsec + (long)((timeout_s - (double)(long)timeout_s) * 1e9);
		deadline.tv_sec += (time_t)timeout_s + ns / 1000000000L;
		deadline.tv_nsec = ns % 1000000000L;
	}
	pthread_mutex_lock(&mb->lock);
	while (!mb->head) {
		int rc = timeout_s < 0 ? pthread_cond_wait(&mb->cond, &mb->lock)
				       : pthread_cond_timedwait(&mb->cond, &mb->lock, &deadline);
		if (rc == ETIMEDOUT)
			break;
	}
	struct mbox_item *it = pop_locked(mb);
	pthread_mutex_unlock(&mb->lock);
	return it;
}

int mbox_fd(const struct mbox *mb)
{
	return mb->efd;
}
