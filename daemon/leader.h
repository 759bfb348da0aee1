/* What the leader (rank 0) does once the cluster is up: open the generation stack,
 * listen for clients, and run the scheduler until a Shutdown call or a signal has
 * drained every job. Main thread only (it becomes the compute thread). */
#ifndef SPECD_DAEMON_LEADER_H
#define SPECD_DAEMON_LEADER_H

#include "cluster.h"

/* Blocks until the server has drained. Errors: what opening the model, the drafter or
 * the socket returns (logged with the reason before returning). */
enum specd_status leader_serve(struct cluster *c);

/* Target ranks 1..T-1: load this rank's shard (collective with the leader's load) and
 * serve the leader's forwards until it releases them. */
enum specd_status leader_follow(struct cluster *c);

/* The dedicated draft rank (placement "rank"): runs the drafter the leader asks for
 * and answers its requests (drafters/remote.h) until the leader releases it. */
enum specd_status leader_draft(struct cluster *c);

#endif
