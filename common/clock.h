/* Monotonic time for deadlines and measurements, and a sleep that survives EINTR. */
#ifndef SPECD_COMMON_CLOCK_H
#define SPECD_COMMON_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (arbitrary origin). Any thread. */
double specd_now(void);
/* Sleeps about `seconds`, resuming after a signal interrupts it. Any thread. */
void specd_sleep(double seconds);

#endif
