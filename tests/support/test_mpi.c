/* The frame of cmocka suites under mpirun (test_mpi.h). */
#include "test_mpi.h"

#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "test_support.h"

void ts_mpi_init(int *argc, char ***argv, int *rank, int *size)
{
	int provided = 0;
	MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, rank);
	MPI_Comm_size(MPI_COMM_WORLD, size);
	if (*rank != 0)
		cmocka_set_message_output(CM_OUTPUT_SUBUNIT);
}

void ts_mpi_check(enum specd_status st, const struct specd_error *err, const char *what)
{
	if (st != SPECD_OK) {
		int rank = -1;
		MPI_Comm_rank(MPI_COMM_WORLD, &rank);
		fprintf(stderr, "rank %d: %s: %s\n", rank, what, err->msg);
	}
	assert_int_equal(st, SPECD_OK);
}

int ts_mpi_finish(int failed)
{
	int any = 0;
	MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
	MPI_Finalize();
	return any ? 1 : 0;
}

bool ts_mpi_shared_dir(char *dir, size_t size)
{
	int rank = 0;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	if (rank == 0 && !ts_mkdtemp(dir, size))
		dir[0] = '\0';
	MPI_Bcast(dir, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
	return dir[0] != '\0';
}

bool ts_mpi_gen_model(const char *out, const char *const *args)
{
	int rank = 0, ok = 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	if (rank == 0)
		ok = ts_gen_model(out, args) == 0;
	MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
	return ok != 0;
}

void ts_mpi_remove_shared_dir(const char *dir)
{
	int rank = 0;
	MPI_Barrier(MPI_COMM_WORLD);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	if (rank == 0)
		ts_rmtree(dir);
}
