/* Checking MPI calls: every call runs under MPI_ERRORS_RETURN and goes through
 * PAR_MPI(), which logs the failing call with MPI's own message, rank and file:line
 * once, and turns it into SPECD_MPI. */
#ifndef SPECD_PARALLEL_MPI_CHECK_H
#define SPECD_PARALLEL_MPI_CHECK_H

#include <mpi.h>

#include "common/status.h"

/* SPECD_OK when rc is MPI_SUCCESS; otherwise logs "CALL failed: <MPI message>" and
 * returns SPECD_MPI. */
enum specd_status par_mpi_check(int rc, const char *call, const char *file, int line);

#define PAR_MPI(call) par_mpi_check((call), #call, __FILE__, __LINE__)

#endif
