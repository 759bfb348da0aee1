/* Signal recording; see signals.h. */
#include "signals.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>

/* Lock-free, so the handler may store to it: a signal between sig_take's read and its
 * clear must not be lost, so the take is one atomic exchange. */
static atomic_int g_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flag must be lock-free");

static void on_signal(int sig)
{
	atomic_store(&g_signal, sig);
}

int sig_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
		return -1;
	sa.sa_handler = SIG_IGN;
	return sigaction(SIGPIPE, &sa, NULL);
}

int sig_take(void)
{
	return atomic_exchange(&g_signal, 0);
}
