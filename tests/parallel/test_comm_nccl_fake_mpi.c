/* The NCCL communicator (parallel/comm.h par_comm_nccl_create) under mpirun -np 3 on the
 * fake NCCL and CUDA runtime of fake_nccl/ (no GPU): the unique id shared over MPI and
 * the non-blocking init; all-reduce and max-loc bitwise what the MPI communicator gives
 * (rank order, lower index on ties) across scratch growth; broadcast, gather and
 * send/recv in call order; and the failures: a rank without a GPU, a peer late for
 * init, a stalled peer, an error NCCL reports asynchronously, a failed allocation,
 * and an idle broadcast that outwaits the deadline (its connection included). */
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_nccl.h"
#include "parallel/comm.h"
#include "test_mpi.h"

#define DEADLINE_S 1.0 /* short: the failure tests wait it out */
#define OK_DEADLINE_S 5.0 /* where nothing should fail: long enough under ASan */

static int g_rank, g_size;

static struct par_comm *nccl_create(double deadline)
{
	struct par_comm_config cfg = {.deadline_s = deadline};
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	ts_mpi_check(par_comm_nccl_create(MPI_COMM_WORLD, 0, &cfg, &c, &err), &err, "create");
	return c;
}

static struct par_comm *mpi_create(void)
{
	struct par_comm *c = NULL;
	assert_int_equal(par_comm_mpi_create(MPI_COMM_WORLD, NULL, &c, NULL), SPECD_OK);
	return c;
}

/* Values that differ by rank and include exact ties across ranks. */
static float value(int rank, size_t i)
{
	if (i % 5 == 0)
		return (float)(i % 7) - 3.0f; /* the same on every rank */
	uint32_t x = (uint32_t)(i * 2654435761u) ^ (uint32_t)(rank * 40503 + 17);
	x ^= x >> 13;
	x *= 0x5bd1e995u;
	return (float)(x >> 8) / (float)(1u << 24) * 8.0f - 4.0f;
}

static void test_nccl__init_shares_the_id_and_polls(void **state)
{
	(void)state;
	struct fake_nccl_stats before = fake_nccl_stats();
	struct par_comm *c = nccl_create(OK_DEADLINE_S);
	struct fake_nccl_stats after = fake_nccl_stats();
	assert_string_equal(c->ops->name, "nccl");
	assert_int_equal(c->ops->mem, PAR_MEM_DEVICE);
	assert_int_equal(c->rank, g_rank);
	assert_int_equal(c->size, g_size);
	/* init completed only because every rank held rank 0's id (the fake's ids are
	 * random per call, and ranks with different ids never meet) */
	assert_int_equal(after.inits, before.inits + 1);
	assert_true(after.async_polls > before.async_polls); /* non-blocking, polled */
	par_comm_destroy(c);
	assert_int_equal(fake_nccl_stats().aborts, before.aborts); /* finalized cleanly */
}

/* Both reductions against the MPI communicator's, at sizes that make the scratch grow
 * (the 1-element call first), bitwise. */
static void test_nccl__reductions_bitwise_the_mpi_communicator(void **state)
{
	(void)state;
	struct par_comm *nc = nccl_create(OK_DEADLINE_S), *mc = mpi_create();
	static const size_t sizes[] = {1, 7, 1000, 70001, 3};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t n = sizes[s];
		float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
		float *va = malloc(n * sizeof(float)), *vb = malloc(n * sizeof(float));
		int32_t *ia = malloc(n * sizeof(int32_t)), *ib = malloc(n * sizeof(int32_t));
		assert_true(a && b && va && vb && ia && ib);
		for (size_t i = 0; i < n; i++) {
			a[i] = b[i] = value(g_rank, i);
			va[i] = vb[i] = value(g_rank, i * 3 + 1) > 0 ? 1.0f : value(g_rank, i);
			/* ties between ranks: the lower index must win, whichever rank has it */
			ia[i] = ib[i] = (int32_t)(i * 10 + (size_t)(g_size - g_rank));
		}
		struct specd_error err;
		assert_int_equal(par_comm_allreduce_sum(nc, a, n, &err), SPECD_OK);
		assert_int_equal(par_comm_allreduce_sum(mc, b, n, &err), SPECD_OK);
		assert_memory_equal(a, b, n * sizeof(float));
		assert_int_equal(par_comm_maxloc(nc, va, ia, n, &err), SPECD_OK);
		assert_int_equal(par_comm_maxloc(mc, vb, ib, n, &err), SPECD_OK);
		assert_memory_equal(va, vb, n * sizeof(float));
		assert_memory_equal(ia, ib, n * sizeof(int32_t));
		if (n == 7) /* i = 0 ties on every rank: the last rank holds the lowest index */
			assert_int_equal(ia[0], 1);
		free(a), free(b), free(va), free(vb), free(ia), free(ib);
	}
	par_comm_destroy(nc);
	par_comm_destroy(mc);
}

static void test_nccl__broadcast_gather_and_send_recv_move_the_bytes(void **state)
{
	(void)state;
	struct par_comm *c = nccl_create(OK_DEADLINE_S);
	struct specd_error err;
	for (int root = 0; root < g_size; root++) {
		unsigned char buf[300];
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (unsigned char)(g_rank == root ? i * 7 + (size_t)root : 0xee);
		assert_int_equal(par_comm_bcast(c, buf, sizeof(buf), root, &err), SPECD_OK);
		for (size_t i = 0; i < sizeof(buf); i++)
			assert_int_equal(buf[i], (unsigned char)(i * 7 + (size_t)root));
	}
	/* uneven counts, one of them 0, the root's own part moved on the device */
	size_t counts[3] = {0, 5, 13}, displs[3] = {0, 20, 2};
	unsigned char send[13], recv[32];
	memset(recv, 0xee, sizeof(recv));
	for (size_t i = 0; i < sizeof(send); i++)
		send[i] = (unsigned char)(100 * g_rank + (int)i);
	int root = 1;
	assert_int_equal(par_comm_gather(c, send, g_rank == root ? recv : NULL, counts, displs,
					 root, &err), SPECD_OK);
	if (g_rank == root) {
		for (int r = 0; r < 3; r++)
			for (size_t i = 0; i < counts[r]; i++)
				assert_int_equal(recv[displs[r] + i],
						 (unsigned char)(100 * r + (int)i));
		assert_int_equal(recv[0], 0xee);
		assert_int_equal(recv[25], 0xee);
	}
	/* send/recv match in call order, whatever the tag */
	unsigned char small[10], big[5000];
	if (g_rank == 0) {
		memset(small, 1, sizeof(small));
		memset(big, 2, sizeof(big));
		assert_int_equal(par_comm_send(c, small, sizeof(small), 2, 7, &err), SPECD_OK);
		assert_int_equal(par_comm_send(c, big, sizeof(big), 2, 3, &err), SPECD_OK);
	} else if (g_rank == 2) {
		assert_int_equal(par_comm_recv(c, small, sizeof(small), 0, 0, &err), SPECD_OK);
		assert_int_equal(par_comm_recv(c, big, sizeof(big), 0, 0, &err), SPECD_OK);
		assert_int_equal(small[9], 1);
		assert_int_equal(big[4999], 2);
	}
	assert_int_equal(par_comm_send(c, small, 1, g_rank, 0, &err), SPECD_INVAL);
	par_comm_destroy(c);
}

/* One rank without a GPU: every rank returns SPECD_UNSUPPORTED at once (none waits
 * for it at init), that rank saying why, and none writes a communicator. */
static void test_nccl__a_rank_without_a_gpu_stops_all(void **state)
{
	(void)state;
	if (g_rank == 1)
		fake_nccl_set_devices(0);
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	long inits = fake_nccl_stats().inits;
	enum specd_status st = par_comm_nccl_create(MPI_COMM_WORLD, 0, NULL, &c, &err);
	fake_nccl_set_devices(1);
	assert_int_equal(st, SPECD_UNSUPPORTED);
	assert_null(c);
	assert_non_null(strstr(err.msg, g_rank == 1 ? "no CUDA device" : "another rank has no "
						    "usable GPU"));
	assert_int_equal(fake_nccl_stats().inits, inits);
	/* a device index past the last: the rank's own reason, SPECD_INVAL */
	st = par_comm_nccl_create(MPI_COMM_WORLD, 1, NULL, &c, &err);
	assert_int_equal(st, SPECD_INVAL);
	assert_non_null(strstr(err.msg, "device 1 of 1"));
	assert_null(c);
}

/* A peer that joins the NCCL init late: the others give up at the deadline with
 * SPECD_TIMEOUT naming the init, and the late one, given a longer deadline, still
 * completes on its own side (its peers' messages had come) and then finds them gone
 * only at its next call. */
static void test_nccl__a_peer_late_for_init_times_out(void **state)
{
	(void)state;
	struct par_comm_config cfg = {.deadline_s = DEADLINE_S};
	if (g_rank == 2) {
		fake_nccl_set_init_delay(2 * DEADLINE_S);
		cfg.deadline_s = 4 * DEADLINE_S;
	}
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = par_comm_nccl_create(MPI_COMM_WORLD, 0, &cfg, &c, &err);
	fake_nccl_set_init_delay(0);
	if (g_rank == 2) {
		assert_int_equal(st, SPECD_OK);
		par_comm_set_deadline(c, DEADLINE_S);
		float x = 1.0f;
		assert_int_equal(par_comm_allreduce_sum(c, &x, 1, &err), SPECD_TIMEOUT);
		par_comm_destroy(c);
	} else {
		assert_int_equal(st, SPECD_TIMEOUT);
		assert_non_null(strstr(err.msg, "init not done after 1.0 s"));
		assert_null(c);
	}
	MPI_Barrier(MPI_COMM_WORLD);
}

/* A peer that stops joining all-reduces (after one that connected every rank): the
 * others return SPECD_TIMEOUT within the deadline, and the communicator refuses further
 * work; destroy aborts it. (The communicator is made with the long deadline, so that
 * only the stalled call can time out on a loaded machine.) */
static void test_nccl__a_stalled_peer_times_out_and_breaks_the_communicator(void **state)
{
	(void)state;
	struct par_comm *c = nccl_create(OK_DEADLINE_S);
	struct specd_error err;
	float x[16] = {1.0f};
	long aborts = fake_nccl_stats().aborts;
	assert_int_equal(par_comm_allreduce_sum(c, x, 16, &err), SPECD_OK);
	if (g_rank != 2) {
		par_comm_set_deadline(c, DEADLINE_S);
		assert_int_equal(par_comm_allreduce_sum(c, x, 16, &err), SPECD_TIMEOUT);
		assert_non_null(strstr(err.msg, "all-reduce not done after 1.0 s (a peer is "
						"stalled"));
		assert_int_equal(par_comm_allreduce_sum(c, x, 16, &err), SPECD_NCCL);
		assert_non_null(strstr(err.msg, "unusable after an earlier failure"));
	}
	par_comm_destroy(c);
	assert_int_equal(fake_nccl_stats().aborts, aborts + (g_rank != 2));
	MPI_Barrier(MPI_COMM_WORLD);
}

/* NCCL reports a failure asynchronously, after the call was enqueued (a peer lost
 * mid-operation): that rank returns SPECD_NCCL with NCCL's words, the others time
 * out. Once in a grouped call (max-loc, on rank 0), once in a lone one (all-reduce,
 * on rank 1). */
static void test_nccl__an_async_error_is_reported(void **state)
{
	(void)state;
	for (int failing = 0; failing < 2; failing++) {
		struct par_comm *c = nccl_create(OK_DEADLINE_S);
		struct specd_error err;
		float v[4] = {1, 2, 3, 4};
		int32_t idx[4] = {0, 1, 2, 3};
		if (g_rank == failing)
			fake_nccl_fail_next(ncclRemoteError);
		else
			par_comm_set_deadline(c, DEADLINE_S);
		enum specd_status st = failing == 0 ? par_comm_maxloc(c, v, idx, 4, &err)
						    : par_comm_allreduce_sum(c, v, 4, &err);
		if (g_rank == failing) {
			assert_int_equal(st, SPECD_NCCL);
			assert_non_null(strstr(err.msg, "remote process exited"));
		} else {
			assert_int_equal(st, SPECD_TIMEOUT);
		}
		par_comm_destroy(c);
		MPI_Barrier(MPI_COMM_WORLD);
	}
}

/* No device memory for the scratch: SPECD_NOMEM before anything is sent, and the
 * communicator still works once memory is there. */
static void test_nccl__scratch_allocation_failure_leaves_it_usable(void **state)
{
	(void)state;
	struct par_comm *c = nccl_create(OK_DEADLINE_S);
	struct specd_error err;
	float x[3] = {1.0f, 2.0f, (float)g_rank};
	fake_nccl_fail_malloc(1);
	assert_int_equal(par_comm_allreduce_sum(c, x, 3, &err), SPECD_NOMEM);
	assert_non_null(strstr(err.msg, "scratch"));
	fake_nccl_fail_malloc(0);
	assert_int_equal(par_comm_allreduce_sum(c, x, 3, &err), SPECD_OK);
	assert_true(x[0] == (float)g_size && x[2] == (float)(g_size * (g_size - 1) / 2));
	par_comm_destroy(c);
}

/* Ranks waiting for work (idle) have no deadline: a broadcast whose root comes after
 * twice the deadline still arrives, both as the communicator's first call (whose lazy
 * connection to the root waits for the root too) and as a later one (on the stream). */
static void test_nccl__an_idle_broadcast_outwaits_the_deadline(void **state)
{
	(void)state;
	struct par_comm *c = nccl_create(OK_DEADLINE_S);
	struct specd_error err;
	par_comm_set_deadline(c, DEADLINE_S / 2);
	for (uint32_t call = 0; call < 2; call++) {
		uint32_t word = g_rank == 0 ? 0xC0FFEEu + call : 0;
		if (g_rank == 0)
			usleep((useconds_t)(DEADLINE_S * 1e6));
		assert_int_equal(par_comm_bcast_idle(c, &word, sizeof(word), 0, &err), SPECD_OK);
		assert_int_equal(word, 0xC0FFEEu + call);
	}
	par_comm_destroy(c);
}

int main(int argc, char **argv)
{
	ts_mpi_init(&argc, &argv, &g_rank, &g_size);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nccl__init_shares_the_id_and_polls),
		cmocka_unit_test(test_nccl__reductions_bitwise_the_mpi_communicator),
		cmocka_unit_test(test_nccl__broadcast_gather_and_send_recv_move_the_bytes),
		cmocka_unit_test(test_nccl__a_rank_without_a_gpu_stops_all),
		cmocka_unit_test(test_nccl__a_peer_late_for_init_times_out),
		cmocka_unit_test(test_nccl__a_stalled_peer_times_out_and_breaks_the_communicator),
		cmocka_unit_test(test_nccl__an_async_error_is_reported),
		cmocka_unit_test(test_nccl__scratch_allocation_failure_leaves_it_usable),
		cmocka_unit_test(test_nccl__an_idle_broadcast_outwaits_the_deadline),
	};
	if (g_size != 3) {
		fprintf(stderr, "run under mpirun -np 3\n");
		MPI_Finalize();
		return 2;
	}
	return ts_mpi_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
