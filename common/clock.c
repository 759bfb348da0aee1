/* Monotonic clock; see clock.h. */
#include "clock.h"

#include <errno.h>
#include <time.h>

double specd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void specd_sleep(double seconds)
{
	if (seconds <= 0)
		return;
	struct timespec ts = {.tv_sec = (time_t)seconds};
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}
