/* Texts for enum specd_status. */
#include "status.h"

static const struct {
	const char *name;
	const char *text;
} status_table[SPECD_STATUS_COUNT] = {
	[SPECD_OK] = {"OK", "ok"},
	[SPECD_INVAL] = {"INVAL", "invalid argument"},
	[SPECD_NOMEM] = {"NOMEM", "out of memory"},
	[SPECD_IO] = {"IO", "input/output error"},
	[SPECD_PROTO] = {"PROTO", "protocol error"},
	[SPECD_CONFIG] = {"CONFIG", "configuration error"},
	[SPECD_CUDA] = {"CUDA", "CUDA error"},
	[SPECD_NCCL] = {"NCCL", "NCCL error"},
	[SPECD_MPI] = {"MPI", "MPI error"},
	[SPECD_TIMEOUT] = {"TIMEOUT", "deadline exceeded"},
	[SPECD_BUSY] = {"BUSY", "resource busy or limit reached"},
	[SPECD_CANCELLED] = {"CANCELLED", "cancelled"},
	[SPECD_UNSUPPORTED] = {"UNSUPPORTED", "not supported"},
	[SPECD_INTERNAL] = {"INTERNAL", "internal error"},
};

const char *specd_status_str(enum specd_status s)
{
	if ((unsigned)s >= SPECD_STATUS_COUNT)
		return "unknown status";
	return status_table[s].text;
}

const char *specd_status_name(enum specd_status s)
{
	if ((unsigned)s >= SPECD_STATUS_COUNT)
		return "UNKNOWN";
	return status_table[s].name;
}
