/* MPI error reporting; see mpi_check.h. */
#include "mpi_check.h"

#include "common/log.h"

enum specd_status par_mpi_check(int rc, const char *call, const char *file, int line)
{
	if (rc == MPI_SUCCESS)
		return SPECD_OK;
	char text[MPI_MAX_ERROR_STRING] = "";
	int len = 0;
	MPI_Error_string(rc, text, &len);
	if (log_enabled(LOG_LEVEL_ERROR))
		log_write(LOG_LEVEL_ERROR, file, line, "%s failed: %s", call, text);
	return SPECD_MPI;
}
