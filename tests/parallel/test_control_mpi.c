/* parallel/control under mpirun: byte broadcast, control messages, a wait that times
 * out instead of hanging, and census gathering; and the MPI communicator's point-to-point
 * receive refusing a message longer than its buffer. Run with 3 ranks. */
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "parallel/census.h"
#include "parallel/comm.h"
#include "parallel/control.h"
#include "test_mpi.h"

static int g_rank, g_size;

static void test_bcast__every_rank_gets_the_bytes(void **state)
{
	(void)state;
	/* bigger than one 64 KiB chunk, so the chunking is exercised */
	const uint64_t n = 200000;
	char *buf = NULL;
	uint64_t len = 0;
	if (g_rank == 0) {
		buf = specd_malloc_array(n, 1);
		assert_non_null(buf);
		for (uint64_t i = 0; i < n; i++)
			buf[i] = (char)('a' + i % 26);
		len = n;
	}
	assert_int_equal(par_bcast_bytes(MPI_COMM_WORLD, 0, &buf, &len), SPECD_OK);
	assert_int_equal(len, n);
	for (uint64_t i = 0; i < n; i += 997)
		assert_int_equal(buf[i], (char)('a' + i % 26));
	if (g_rank != 0)
		assert_int_equal(buf[n], '\0');
	specd_free(buf);
}

static void test_ctrl__followers_receive_leader_messages(void **state)
{
	(void)state;
	struct par_ctrl_msg msg = {.op = PAR_CTRL_SHUTDOWN, .arg = {7, 8, 9, 10}};
	if (g_rank == 0) {
		assert_int_equal(par_ctrl_send_all(MPI_COMM_WORLD, &msg), SPECD_OK);
	} else {
		struct par_ctrl_msg got;
		memset(&got, 0, sizeof(got));
		assert_int_equal(par_ctrl_wait(MPI_COMM_WORLD, &got, 30.0), SPECD_OK);
		assert_int_equal(got.op, PAR_CTRL_SHUTDOWN);
		assert_int_equal(got.arg[3], 10);
	}
	MPI_Barrier(MPI_COMM_WORLD);
}

static void test_ctrl__wait_times_out_when_leader_is_silent(void **state)
{
	(void)state;
	if (g_rank != 0) {
		struct par_ctrl_msg got;
		double t0 = specd_now();
		assert_int_equal(par_ctrl_wait(MPI_COMM_WORLD, &got, 0.2), SPECD_TIMEOUT);
		assert_true(specd_now() - t0 >= 0.2);
	}
	MPI_Barrier(MPI_COMM_WORLD);
}

static void test_census__leader_gathers_every_rank(void **state)
{
	(void)state;
	struct par_rank_info mine;
	assert_int_equal(par_census_local(&mine, g_rank), SPECD_OK);
	assert_int_equal(mine.pid, getpid());
	assert_true(mine.host_mem_total > 0);
	struct par_rank_info *all = NULL;
	if (g_rank == 0) {
		all = specd_calloc((size_t)g_size, sizeof(*all));
		assert_non_null(all);
	}
	assert_int_equal(par_census_gather(MPI_COMM_WORLD, &mine, all), SPECD_OK);
	if (g_rank == 0) {
		for (int r = 0; r < g_size; r++) {
			assert_int_equal(all[r].rank, r);
			assert_true(all[r].pid > 0);
			assert_string_equal(all[r].node, mine.node);
		}
	}
	specd_free(all);
}

/* A message longer than the receive's buffer is refused (SPECD_PROTO) with nothing of
 * it written there or past it (Open MPI would write past the buffer, above its eager
 * size, before reporting the truncation); a shorter one fills the buffer's start; the
 * pair goes on working. */
static void test_p2p__a_longer_message_is_refused_without_overrun(void **state)
{
	(void)state;
	enum { BIG = 8192 };
	struct par_comm_config cc = {.deadline_s = 30};
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(par_comm_mpi_create(MPI_COMM_WORLD, &cc, &c, &err), SPECD_OK);
	if (g_rank == 1) {
		static uint8_t big[BIG];
		uint8_t two[2] = {1, 2};
		uint32_t v = 42;
		memset(big, 0xab, sizeof(big));
		assert_int_equal(par_comm_send(c, big, sizeof(big), 0, 7, &err), SPECD_OK);
		assert_int_equal(par_comm_send(c, two, sizeof(two), 0, 8, &err), SPECD_OK);
		assert_int_equal(par_comm_send(c, &v, sizeof(v), 0, 9, &err), SPECD_OK);
	} else if (g_rank == 0) {
		static uint8_t r[16 + BIG]; /* the buffer, then what an overrun would hit */
		uint8_t four[4] = {9, 9, 9, 9};
		uint32_t v = 0;
		assert_int_equal(par_comm_recv(c, r, 16, 1, 7, &err), SPECD_PROTO);
		assert_non_null(strstr(err.msg, "8192 bytes where at most 16"));
		for (size_t i = 0; i < sizeof(r); i++)
			assert_int_equal(r[i], 0);
		assert_int_equal(par_comm_recv(c, four, sizeof(four), 1, 8, &err), SPECD_OK);
		assert_int_equal(four[0], 1);
		assert_int_equal(four[1], 2);
		assert_int_equal(four[2], 9);
		assert_int_equal(par_comm_recv(c, &v, sizeof(v), 1, 9, &err), SPECD_OK);
		assert_int_equal(v, 42);
	}
	par_comm_destroy(c);
	MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
	ts_mpi_init(&argc, &argv, &g_rank, &g_size);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bcast__every_rank_gets_the_bytes),
		cmocka_unit_test(test_ctrl__followers_receive_leader_messages),
		cmocka_unit_test(test_ctrl__wait_times_out_when_leader_is_silent),
		cmocka_unit_test(test_census__leader_gathers_every_rank),
		cmocka_unit_test(test_p2p__a_longer_message_is_refused_without_overrun),
	};
	return ts_mpi_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
