/* Start-up calibration for the selector (DESIGN.md §6): the target's forward time for
 * 1..K+1 tokens and a drafter's step time, measured where they will run. The
 * measurement code is kept apart from the pure decision (selector.h).
 *
 * Threads: the compute thread (the one that owns the model). */
#ifndef SPECD_SELECTOR_CALIBRATE_H
#define SPECD_SELECTOR_CALIBRATE_H

#include <stdint.h>

#include "drafters/drafter.h"
#include "selector/selector.h"

struct model;

/* Times forwards of n = 1..k_max+1 tokens (logits for every row, as verification
 * asks) on `slot` of m, truncating the slot back after each, and writes the fastest
 * of up to two runs to t_verify[n] (SEL_K_MAX + 2 entries; sizes the budget left out
 * stay 0 and are interpolated by sel_verify_time; 1 and k_max+1 are always measured).
 * m must be a whole local model (not a shard) with room for k_max+1 tokens in one batch
 * and in the slot. Errors: SPECD_INVAL (K out of range, no room), SPECD_NOMEM, the
 * forward's. t_verify is written only on success. */
enum specd_status sel_calibrate_target(struct model *m, uint32_t slot, uint32_t k_max,
				       double budget_s, double *t_verify,
				       struct specd_error *err);

/* Creates the drafter cfg describes (n_slots >= 1, k_max >= 1; slot 0 is used), times
 * a propose of 1 and of k_max tokens on a synthetic sequence (best of two), and fills
 * out's timed, t_draft_fixed_s, t_draft_token_s and memory_bytes; then destroys it.
 * Errors: draft_create's (SPECD_INVAL with the reason for a drafter that does not fit
 * the target), and those of reset and propose. out is written only on success. */
enum specd_status sel_calibrate_drafter(const struct draft_config *cfg, struct sel_method_in *out,
					struct specd_error *err);

#endif
