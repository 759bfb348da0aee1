/* The fake NCCL of tests/parallel/fake_nccl (see fake_nccl.h): the API subset
 * parallel/comm_nccl.c uses, with NCCL's non-blocking semantics, over MPI point-to-point
 * messages between host buffers. Every name maps to a fake_ symbol (as in the fake
 * cuda_runtime_api.h). */
#ifndef SPECD_TEST_FAKE_NCCL_H_API
#define SPECD_TEST_FAKE_NCCL_H_API

#include <stddef.h>

#include "cuda_runtime_api.h"

typedef enum {
	ncclSuccess = 0,
	ncclUnhandledCudaError = 1,
	ncclSystemError = 2,
	ncclInternalError = 3,
	ncclInvalidArgument = 4,
	ncclInvalidUsage = 5,
	ncclRemoteError = 6,
	ncclInProgress = 7,
} ncclResult_t;

typedef enum {
	ncclInt32 = 2,
	ncclUint8 = 1,
	ncclFloat32 = 7,
} ncclDataType_t;

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
	char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef struct fake_nccl_comm *ncclComm_t;

typedef struct {
	int blocking; /* 0: every call may return ncclInProgress (comm_nccl.c's mode) */
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER {.blocking = 1}

#define ncclGetUniqueId fake_ncclGetUniqueId
#define ncclCommInitRankConfig fake_ncclCommInitRankConfig
#define ncclCommGetAsyncError fake_ncclCommGetAsyncError
#define ncclGetErrorString fake_ncclGetErrorString
#define ncclGetLastError fake_ncclGetLastError
#define ncclAllGather fake_ncclAllGather
#define ncclBroadcast fake_ncclBroadcast
#define ncclSend fake_ncclSend
#define ncclRecv fake_ncclRecv
#define ncclGroupStart fake_ncclGroupStart
#define ncclGroupEnd fake_ncclGroupEnd
#define ncclCommFinalize fake_ncclCommFinalize
#define ncclCommDestroy fake_ncclCommDestroy
#define ncclCommAbort fake_ncclCommAbort

ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
				    ncclConfig_t *config);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async);
const char *ncclGetErrorString(ncclResult_t rc);
const char *ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type,
			   ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
			   int root, ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer,
		      ncclComm_t comm, cudaStream_t s);
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
		      cudaStream_t s);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);

#endif
