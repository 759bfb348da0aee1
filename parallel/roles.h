/* Which rank does what (DESIGN.md §3): ranks 0..T-1 hold the target's tensor-parallel
 * shards, rank 0 also leads (socket server, scheduler, verifier); with a dedicated draft
 * rank (placement "rank") rank T drafts, otherwise the drafter lives in the leader.
 * Pure functions of (T, placement, world size); any rank, any thread. */
#ifndef SPECD_PARALLEL_ROLES_H
#define SPECD_PARALLEL_ROLES_H

#include <stdbool.h>

#include "common/error.h"

enum par_role {
	PAR_ROLE_LEADER = 0, /* target shard 0, and the one that talks to clients */
	PAR_ROLE_TARGET,     /* target shard 1..T-1 */
	PAR_ROLE_DRAFT,      /* the dedicated draft rank */
};

struct par_layout {
	int world_size;
	int tensor_parallel;  /* T: ranks 0..T-1 are target shards */
	bool dedicated_draft; /* placement "rank": rank T drafts */
};

/* Checks that `world_size` matches T (+1 for a dedicated draft rank) and fills *out.
 * SPECD_CONFIG with a message naming both numbers and what to change when it does not
 * (the world-size mismatch every rank must agree to exit on); SPECD_INVAL for T < 1. */
enum specd_status par_layout_init(struct par_layout *out, int tensor_parallel,
				  bool dedicated_draft, int world_size, struct specd_error *err);

/* The world size a layout needs. */
int par_layout_needed(int tensor_parallel, bool dedicated_draft);

enum par_role par_layout_role(const struct par_layout *l, int rank);
/* The rank that drafts: T with a dedicated draft rank, else 0 (the leader). */
int par_layout_draft_rank(const struct par_layout *l);

/* "leader", "target", "draft"; with the drafter inside the leader the leader's name is
 * "leader+draft" (par_role_label). */
const char *par_role_name(enum par_role r);
const char *par_role_label(const struct par_layout *l, int rank);

#endif
