/* A fake NCCL and CUDA runtime, so that parallel/comm_nccl.c (the NCCL communicator of
 * tensor-parallel GPU shards) runs under mpirun on machines without a GPU: its unique
 * id over MPI, its non-blocking init, its polling of the stream and of
 * ncclCommGetAsyncError against the deadline, its scratch growth and its rank-order
 * reductions. The test build compiles comm_nccl.c against this folder's nccl.h and
 * cuda_runtime_api.h instead of the real ones (tests/parallel/CMakeLists.txt).
 *
 * What it models:
 *   - "device memory" is host memory; a stream is a queue of steps, each waiting on
 *     MPI requests or running a host copy or reduction, moved on by cudaStreamQuery;
 *   - every communicator is non-blocking as comm_nccl.c asks: init and each call
 *     return ncclInProgress and a later ncclCommGetAsyncError settles it;
 *   - connections are lazy, as NCCL's runtime connect makes them: the first call that
 *     involves a peer stays in progress until that peer makes its own first such call;
 *   - an operation's messages are MPI point-to-point messages on MPI_COMM_WORLD,
 *     tagged from the unique id and a per-communicator sequence, posted when the call
 *     is made (comm_nccl.c's buffers are ready then); ranks with different ids never
 *     match, so init hangs until the deadline as real NCCL's would;
 *   - abort cancels what is still waiting (receives cancelled, sends let go).
 * What it does not: NCCL's own algorithms, devices, or groups other than all of
 * MPI_COMM_WORLD in rank order (ncclInvalidUsage, saying so).
 *
 * Faults, set per rank by a test before the calls they affect:
 *   - fake_nccl_set_devices(0): no device on this rank;
 *   - fake_nccl_set_init_delay(s): this rank's init posts its messages only s seconds
 *     after it was called (a peer slow to join);
 *   - fake_nccl_fail_next(rc): the next operation is enqueued but posts nothing and
 *     never completes, and the communicator's async error becomes rc at a later poll
 *     (a peer lost mid-operation, as NCCL reports it);
 *   - fake_nccl_fail_malloc(n): the next n cudaMalloc calls fail.
 *
 * Threads: one (the MPI thread), as comm_nccl.c. */
#ifndef SPECD_TEST_FAKE_NCCL_H
#define SPECD_TEST_FAKE_NCCL_H

#include "nccl.h"

struct fake_nccl_stats {
	long inits;       /* communicators whose init completed */
	long async_polls; /* ncclCommGetAsyncError calls that found work in progress */
	long all_gathers; /* ncclAllGather calls that posted messages */
	long broadcasts;
	long sends, recvs;
	long reductions; /* sum or max-loc steps run on a stream */
	long aborts;
	long cancelled; /* receives cancelled by an abort */
};

void fake_nccl_set_devices(int count);
void fake_nccl_set_init_delay(double seconds);
void fake_nccl_fail_next(ncclResult_t rc);
void fake_nccl_fail_malloc(int n);
/* This rank's counts since the process started. */
struct fake_nccl_stats fake_nccl_stats(void);

#endif
