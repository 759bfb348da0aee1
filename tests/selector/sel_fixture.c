/* Calibrated selector inputs for tests (see sel_fixture.h). */
#include "sel_fixture.h"

#include <string.h>

struct sel_inputs sel_fx_inputs(uint32_t k_max, double t1, double per_row, uint32_t dim)
{
	struct sel_inputs in;
	memset(&in, 0, sizeof(in));
	in.k_max = k_max;
	in.n_vocab = 32000;
	in.dim = dim;
	in.calibrated = true;
	for (uint32_t n = 1; n <= k_max + 1 && n <= SEL_K_MAX + 1; n++)
		in.t_verify_s[n] = t1 + per_row * (n - 1);
	return in;
}

void sel_fx_method(struct sel_inputs *in, enum draft_method m, double fixed, double per_token)
{
	struct sel_method_in *mi = &in->methods[m];
	mi->configured = mi->built = mi->timed = true;
	mi->t_draft_fixed_s = fixed;
	mi->t_draft_token_s = per_token;
}
