/* One status code for every fallible function in specd, and its text.
 * Every module returns enum specd_status; details travel in struct specd_error
 * (error.h) or in the one log line written where the error was first seen. */
#ifndef SPECD_COMMON_STATUS_H
#define SPECD_COMMON_STATUS_H

enum specd_status {
	SPECD_OK = 0,
	SPECD_INVAL,       /* a bad argument or bad input (request, frame, file contents) */
	SPECD_NOMEM,       /* an allocation failed */
	SPECD_IO,          /* a system call on a file or socket failed */
	SPECD_PROTO,       /* a malformed frame or message */
	SPECD_CONFIG,      /* a cluster file that does not parse or validate */
	SPECD_CUDA,        /* a CUDA runtime or cuBLAS call failed */
	SPECD_NCCL,        /* an NCCL call failed */
	SPECD_MPI,         /* an MPI call failed */
	SPECD_TIMEOUT,     /* a deadline passed (a stalled rank, a slow peer) */
	SPECD_BUSY,        /* a limit is reached; try again later */
	SPECD_CANCELLED,   /* the work was cancelled by its owner */
	SPECD_UNSUPPORTED, /* valid, but not something this build or model can do */
	SPECD_INTERNAL,    /* a bug: an invariant did not hold */
	SPECD_STATUS_COUNT
};

/* Static lower-case text for a status ("ok", "out of memory", ...); never NULL,
 * also for values outside the enum. Any thread. */
const char *specd_status_str(enum specd_status s);

/* The enum constant's short name ("SPECD_NOMEM" -> "NOMEM"); never NULL. */
const char *specd_status_name(enum specd_status s);

#endif
