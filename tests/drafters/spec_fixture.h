/* Helpers shared by the drafters/ suites: generating models with specd-gen-model,
 * loading them, and running one job of the engine to its end. Tests only. */
#ifndef SPECD_TESTS_DRAFTERS_SPEC_FIXTURE_H
#define SPECD_TESTS_DRAFTERS_SPEC_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "model/llama.h"

/* Runs specd-gen-model -o out args... (NULL-terminated); fails the test on error. */
void fx_gen_model(const char *out, const char *const *args);
/* Runs specd-gen-heads -o out args... (NULL-terminated); fails the test on error. */
void fx_gen_heads(const char *out, const char *const *args);

/* Loads a model with n_slots slots of n_ctx rows; fails the test on error. */
struct model *fx_load(const char *path, uint32_t n_slots, uint32_t n_ctx);

/* MPI_Init_thread (funneled, errors returned) for a test of a leader and a draft rank;
 * false, after MPI_Finalize and a message, when not run under mpirun -np 2. */
bool fx_mpi_init_pair(int *argc, char ***argv);
/* A temporary folder made by rank 0 and named to every rank (*rank gets this rank's
 * number); false on every rank, together, when rank 0 could not make it. Collective. */
bool fx_mpi_shared_dir(char *dir, size_t size, int *rank);

/* A drafter of `method` for target; `path` is the draft model's file (draft_model) or
 * the heads' (medusa). Fails the test on error. */
struct drafter *fx_drafter(enum draft_method method, struct model *target, uint32_t k,
			   uint32_t n_slots, const char *path, uint32_t lookup_min);

/* One job on slot 0 from prompt to its stop: out gets the output (cap tokens at most),
 * *n_out its length, *m (may be NULL) the metrics, *stop (may be NULL) why it stopped.
 * verify NULL: the exact verifier. Returns the status of the first failing call. */
enum specd_status fx_generate(struct model *target, struct drafter *d, uint32_t k,
			      draft_verify_fn *verify, const int32_t *prompt, uint32_t n_prompt,
			      const struct sampler_params *sp, uint32_t max_tokens, int32_t eos,
			      int32_t *out, uint32_t cap, uint32_t *n_out, struct draft_metrics *m,
			      enum draft_stop *stop);

/* Plain greedy decoding written without the engine: one forward per token, argmax.
 * Returns the number of tokens (stops at max_tokens or the slot's end; no EOS). */
uint32_t fx_plain_greedy(struct model *target, const int32_t *prompt, uint32_t n_prompt,
			 uint32_t max_tokens, int32_t *out);

/* A deliberately wrong verifier (the classic mistake: on rejection it draws from p
 * instead of norm(max(0, p - q))), so the distribution tests can show they fail. */
enum specd_status fx_biased_verify(struct sampler *s, const float *logits, uint32_t n_vocab,
				   const struct draft_proposal *prop, float *work,
				   struct draft_verdict *out);

/* Two-sample chi-square homogeneity of equal-size samples of counts a and b over n
 * cells: the most frequent cells (combined count >= 20, so expected counts are >= 10,
 * at most FX_MAX_BINS - 1 of them, chosen by combined count then cell id) each a bin,
 * the rest lumped into one "other" bin; sum (a - b)^2 / (a + b). *df gets the degrees
 * of freedom (< FX_MAX_BINS). */
#define FX_MAX_BINS 31
double fx_homogeneity(const uint32_t *a, const uint32_t *b, uint32_t n, int *df);

/* The chi-square critical value at alpha = 0.001 for df >= 1 (exact to 30 degrees of
 * freedom, the Wilson-Hilferty approximation beyond). */
double fx_chi2_critical(int df);

#endif
