/* The NCCL communicator (parallel/comm.h par_comm_nccl_create) as far as a machine
 * without a GPU can check it: argument errors, and the clear SPECD_UNSUPPORTED that a
 * build without CUDA or NCCL, or a rank without a device, gets. Where a device exists
 * (one rank, under MPI), a device all-reduce, max-loc and broadcast run too. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "kernels/kern.h"
#include "parallel/comm.h"

static void test_nccl_create__rejects_bad_arguments(void **state)
{
	(void)state;
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(par_comm_nccl_create(MPI_COMM_WORLD, -1, NULL, &c, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "device -1"));
	struct par_comm_config cfg = {.deadline_s = -1.0};
	assert_int_equal(par_comm_nccl_create(MPI_COMM_WORLD, 0, &cfg, &c, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "deadline"));
	assert_int_equal(par_comm_nccl_create(MPI_COMM_NULL, 0, NULL, &c, &err), SPECD_INVAL);
	assert_int_equal(par_comm_nccl_create(MPI_COMM_WORLD, 0, NULL, NULL, &err), SPECD_INVAL);
	assert_null(c);
}

static bool have_device(void)
{
	struct kern_ctx *k = NULL;
	bool yes = kern_cuda_create(NULL, &k, NULL) == SPECD_OK;
	kern_destroy(k);
	return yes;
}

/* Without a device (or CUDA, or NCCL) the call fails at once, saying which, and
 * writes no communicator. */
static void test_nccl_create__without_device_is_unsupported(void **state)
{
	(void)state;
	if (have_device())
		skip();
	struct par_comm *c = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(par_comm_nccl_create(MPI_COMM_WORLD, 0, NULL, &c, &err),
			 SPECD_UNSUPPORTED);
	assert_null(c);
	assert_true(strstr(err.msg, "no CUDA device") || strstr(err.msg, "without CUDA") ||
		    strstr(err.msg, "without NCCL"));
}

/* With a device and NCCL (one rank): all-reduce and broadcast of a device buffer. */
static void test_nccl_allreduce__one_rank_keeps_the_values(void **state)
{
	(void)state;
	struct par_comm *c = NULL;
	struct kern_ctx *k = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	if (kern_cuda_create(NULL, &k, NULL) != SPECD_OK)
		skip();
	struct par_comm_config cfg = {.deadline_s = 20.0};
	enum specd_status st = par_comm_nccl_create(MPI_COMM_WORLD, 0, &cfg, &c, &err);
	if (st == SPECD_UNSUPPORTED) { /* built without NCCL */
		kern_destroy(k);
		skip();
	}
	assert_int_equal(st, SPECD_OK);
	assert_int_equal(c->ops->mem, PAR_MEM_DEVICE);
	assert_int_equal(c->size, 1);
	enum { N = 1000 };
	float host[N], back[N];
	for (int i = 0; i < N; i++)
		host[i] = (float)i * 0.5f - 7.0f;
	void *dev = NULL;
	assert_int_equal(kern_alloc(k, sizeof(host), &dev), SPECD_OK);
	assert_int_equal(kern_upload(k, dev, host, sizeof(host)), SPECD_OK);
	assert_int_equal(par_comm_allreduce_sum(c, dev, N, &err), SPECD_OK);
	assert_int_equal(par_comm_bcast(c, dev, sizeof(host), 0, &err), SPECD_OK);
	assert_int_equal(kern_download(k, back, dev, sizeof(back)), SPECD_OK);
	assert_memory_equal(back, host, sizeof(host));
	kern_free(k, dev);
	par_comm_destroy(c);
	kern_destroy(k);
}

int main(int argc, char **argv)
{
	int provided = 0;
	MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nccl_create__rejects_bad_arguments),
		cmocka_unit_test(test_nccl_create__without_device_is_unsupported),
		cmocka_unit_test(test_nccl_allreduce__one_rank_keeps_the_values),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	MPI_Finalize();
	return failed ? 1 : 0;
}
