/* The link probes' deadlines (parallel/probe.h), under mpirun -np 2: rank 1 joins the
 * all-reduce probe's first all-reduce only after rank 0 has given up on it. Rank 0 gets
 * SPECD_TIMEOUT having left exactly that one all-reduce pending, its buffers still
 * valid (it writes them when rank 1 comes), so the next collective on the communicator
 * pairs with rank 1's next one. Before the fix the probe posted two more all-reduces
 * over the pending one and freed the buffers it was still to write: rank 0 crashed. */
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/clock.h"
#include "parallel/probe.h"
#include "test_mpi.h"

static int g_rank, g_size;

/* Waits up to 10 s for req; true once it completed. */
static bool wait_for(MPI_Request *req)
{
	double t0 = specd_now();
	int done = 0;
	while (!done && specd_now() - t0 < 10.0) {
		if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
			return false;
		specd_sleep(0.001);
	}
	return done;
}

static void test_probe__allreduce_timeout_leaves_one_pending_with_its_buffers(void **state)
{
	(void)state;
	MPI_Comm comm;
	MPI_Request req;
	int one = g_rank + 1, sum = 0;
	assert_int_equal(MPI_Comm_dup(MPI_COMM_WORLD, &comm), MPI_SUCCESS);
	MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
	if (g_rank == 0) {
		struct par_link_probe p;
		struct specd_error err;
		assert_int_equal(par_probe_allreduce(comm, 0.3, &p, &err), SPECD_TIMEOUT);
	} else {
		static float x[1024], y[1024]; /* the probe's first size, 4096 bytes */
		specd_sleep(2.0); /* past the probe's deadline, however often it retried */
		/* non-blocking like the probe's: MPI does not pair the two kinds */
		MPI_Iallreduce(x, y, 1024, MPI_FLOAT, MPI_SUM, comm, &req);
		assert_true(wait_for(&req));
	}
	MPI_Iallreduce(&one, &sum, 1, MPI_INT, MPI_SUM, comm, &req);
	assert_true(wait_for(&req));
	assert_int_equal(sum, 3);
}

int main(int argc, char **argv)
{
	ts_mpi_init(&argc, &argv, &g_rank, &g_size);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe__allreduce_timeout_leaves_one_pending_with_its_buffers),
	};
	return ts_mpi_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
