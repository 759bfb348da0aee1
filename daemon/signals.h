/* SIGINT/SIGTERM handling for specd. The handler only records the signal; the main
 * loop of each rank reads it and acts (the leader shuts the cluster down, other ranks
 * wait for the leader's word). SIGPIPE is ignored: a client that goes away is a
 * socket error, not a reason to die. Main thread only. */
#ifndef SPECD_DAEMON_SIGNALS_H
#define SPECD_DAEMON_SIGNALS_H

/* Installs the handlers. Returns 0, or -1 with errno set. */
int sig_install(void);
/* The last SIGINT/SIGTERM received (0: none) and clears it. Async-signal safe read. */
int sig_take(void);

#endif
