/* The frame of a cmocka suite under mpirun: every rank runs the suite, only rank 0
 * reports to CTest, and the exit code fails when any rank failed. Tests only.
 *
 *   int main(int argc, char **argv)
 *   {
 *           ts_mpi_init(&argc, &argv, &g_rank, &g_size);
 *           const struct CMUnitTest tests[] = {...};
 *           return ts_mpi_finish(cmocka_run_group_tests(tests, setup, teardown));
 *   }
 *
 * Threads: the main thread, which owns MPI (MPI_THREAD_FUNNELED). */
#ifndef SPECD_TEST_MPI_H
#define SPECD_TEST_MPI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "common/status.h"

/* MPI_Init_thread (funneled), MPI_COMM_WORLD's errors returned rather than fatal,
 * this rank's number and the world's size; ranks other than 0 print cmocka's
 * results as subunit, so CTest's log shows one report. */
void ts_mpi_init(int *argc, char ***argv, int *rank, int *size);

/* Asserts st == SPECD_OK (a cmocka failure otherwise), printing first this rank's
 * number, what failed and err's message: on other ranks cmocka reports only as subunit. */
void ts_mpi_check(enum specd_status st, const struct specd_error *err, const char *what);

/* Collective: 1 when `failed` (this rank's failed tests) is non-zero on any rank,
 * else 0, after MPI_Finalize. main's return value. */
int ts_mpi_finish(int failed);

/* A temporary folder made by rank 0 and named to every rank in dir; false on every
 * rank, together, when rank 0 could not make it (no rank waits for a folder that
 * never comes). Collective. */
bool ts_mpi_shared_dir(char *dir, size_t size);
/* specd-gen-model run by rank 0 into `out` (in that folder, so every rank sees it);
 * true on every rank, together, once it has been made. Collective. */
bool ts_mpi_gen_model(const char *out, const char *const *args);
/* Removes that folder once every rank is done with it. Collective. */
void ts_mpi_remove_shared_dir(const char *dir);

#endif
