/* Rank roles from the layout; see roles.h. */
#include "roles.h"

int par_layout_needed(int tensor_parallel, bool dedicated_draft)
{
	return tensor_parallel + (dedicated_draft ? 1 : 0);
}

enum specd_status par_layout_init(struct par_layout *out, int tensor_parallel,
				  bool dedicated_draft, int world_size, struct specd_error *err)
{
	if (tensor_parallel < 1)
		return specd_errorf(err, SPECD_INVAL, "tensor_parallel must be at least 1, not %d",
				    tensor_parallel);
	int need = par_layout_needed(tensor_parallel, dedicated_draft);
	if (world_size != need) {
		if (dedicated_draft)
			return specd_errorf(err, SPECD_CONFIG,
					    "world size mismatch: mpirun started %d rank%s but the "
					    "cluster file needs %d (tensor_parallel %d + 1 draft rank); "
					    "run mpirun -np %d, or set draft.placement: leader for %d",
					    world_size, world_size == 1 ? "" : "s", need,
					    tensor_parallel, need, tensor_parallel);
		return specd_errorf(err, SPECD_CONFIG,
				    "world size mismatch: mpirun started %d rank%s but the cluster "
				    "file needs %d (tensor_parallel %d, drafter in the leader); run "
				    "mpirun -np %d",
				    world_size, world_size == 1 ? "" : "s", need, tensor_parallel, need);
	}
	*out = (struct par_layout){
		.world_size = world_size,
		.tensor_parallel = tensor_parallel,
		.dedicated_draft = dedicated_draft,
	};
	return SPECD_OK;
}

enum par_role par_layout_role(const struct par_layout *l, int rank)
{
	if (rank == 0)
		return PAR_ROLE_LEADER;
	if (rank < l->tensor_parallel)
		return PAR_ROLE_TARGET;
	return PAR_ROLE_DRAFT;
}

int par_layout_draft_rank(const struct par_layout *l)
{
	return l->dedicated_draft ? l->tensor_parallel : 0;
}

const char *par_role_name(enum par_role r)
{
	switch (r) {
	case PAR_ROLE_LEADER: return "leader";
	case PAR_ROLE_TARGET: return "target";
	case PAR_ROLE_DRAFT: return "draft";
	}
	return "?";
}

const char *par_role_label(const struct par_layout *l, int rank)
{
	if (rank == 0 && !l->dedicated_draft)
		return "leader+draft";
	return par_role_name(par_layout_role(l, rank));
}
