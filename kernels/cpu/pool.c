/* The CPU backend's thread pool (pool.h). A job is published by bumping a generation
 * counter; workers notice it by a short poll or, when idle longer, a condition
 * variable. The caller waits for the pending count to reach zero the same way. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/alloc.h"
#include "common/log.h"

/* Polls before sleeping: about 20-50 us. The ops of one forward pass follow each
 * other within microseconds, and a sleeping worker takes tens of microseconds to wake,
 * so a short poll saves most wake-ups; beyond it the pool sleeps. */
#define POOL_POLLS 4000

struct pool_worker {
	struct cpu_pool *pool;
	unsigned index;
	pthread_t thread;
};

struct cpu_pool {
	unsigned n;
	pthread_mutex_t lock;
	pthread_cond_t work; /* generation advanced or stop */
	pthread_cond_t done; /* pending reached 0 */
	atomic_uint_fast64_t generation;
	atomic_uint pending;
	atomic_bool stop;
	cpu_pool_fn *fn; /* published before generation (release), read after (acquire) */
	void *arg;
	struct pool_worker *workers; /* (n - 1) */
	unsigned n_started;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void *worker_main(void *p)
{
	struct pool_worker *w = p;
	struct cpu_pool *pool = w->pool;
	uint_fast64_t seen = 0;
	for (;;) {
		uint_fast64_t gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
		for (int i = 0; gen == seen && i < POOL_POLLS; i++) {
			if (atomic_load_explicit(&pool->stop, memory_order_relaxed))
				break;
			cpu_relax();
			gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
		}
		if (gen == seen) {
			pthread_mutex_lock(&pool->lock);
			while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
				pthread_cond_wait(&pool->work, &pool->lock);
			pthread_mutex_unlock(&pool->lock);
		}
		if (gen == seen) /* woken by stop */
			return NULL;
		seen = gen;
		pool->fn(pool->arg, w->index, pool->n);
		if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
			pthread_mutex_lock(&pool->lock);
			pthread_cond_signal(&pool->done);
			pthread_mutex_unlock(&pool->lock);
		}
	}
}

static void pool_stop(struct cpu_pool *p)
{
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->stop, true);
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n_started; i++)
		pthread_join(p->workers[i].thread, NULL);
}

enum specd_status cpu_pool_create(unsigned n_threads, struct cpu_pool **out)
{
	enum specd_status st = SPECD_NOMEM;
	struct cpu_pool *p = specd_calloc(1, sizeof(*p));
	if (!p)
		return SPECD_NOMEM;
	p->n = n_threads ? n_threads : 1;
	atomic_init(&p->generation, 0);
	atomic_init(&p->pending, 0);
	atomic_init(&p->stop, false);
	if (pthread_mutex_init(&p->lock, NULL) != 0) {
		specd_free(p);
		return SPECD_INTERNAL;
	}
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	if (p->n > 1) {
		p->workers = specd_calloc(p->n - 1, sizeof(*p->workers));
		if (!p->workers)
			goto fail;
		for (unsigned i = 0; i + 1 < p->n; i++) {
			p->workers[i].pool = p;
			p->workers[i].index = i + 1;
			int rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
			if (rc != 0) {
				LOG_ERROR("cpu pool: pthread_create failed (%d) for worker %u of %u", rc,
					  i + 1, p->n - 1);
				st = SPECD_INTERNAL;
				goto fail;
			}
			p->n_started++;
		}
	}
	*out = p;
	return SPECD_OK;
fail:
	cpu_pool_destroy(p);
	return st;
}

void cpu_pool_destroy(struct cpu_pool *p)
{
	if (!p)
		return;
	pool_stop(p);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->lock);
	specd_free(p->workers);
	specd_free(p);
}

unsigned cpu_pool_size(const struct cpu_pool *p)
{
	return p->n;
}

void cpu_pool_run(struct cpu_pool *p, cpu_pool_fn *fn, void *arg)
{
	if (p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);

	fn(arg, 0, p->n);

	for (int i = 0; i < POOL_POLLS; i++) {
		if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
			return;
		cpu_relax();
	}
	pthread_mutex_lock(&p->lock);
	while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
}
