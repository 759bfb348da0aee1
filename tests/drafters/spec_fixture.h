/* Helpers shared by the drafters/ suites: generating models with specd-gen-model and
 * heads and EAGLE checkpoints with specd-gen-heads (and editing their safetensors
 * files), loading them, running one job of the engine to its end, and the statistics
 * of the sampling tests. Tests only. */
#ifndef SPECD_TESTS_DRAFTERS_SPEC_FIXTURE_H
#define SPECD_TESTS_DRAFTERS_SPEC_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "model/llama.h"
#include "model/sampler.h"

/* Runs specd-gen-model -o out args... (NULL-terminated); fails the test on error. */
void fx_gen_model(const char *out, const char *const *args);
/* Runs specd-gen-heads -o out args... (NULL-terminated); fails the test on error. */
void fx_gen_heads(const char *out, const char *const *args);

/* Runs specd-gen-heads --eagle -o dir args... (NULL-terminated); fails the test on
 * error. echo: then adds the identity to fc.weight's feature half, so the layer passes
 * the target's state on (plus its own terms, small with --scale 0.1) and drafts mostly
 * what the target chose from that state: right now and then on a model that repeats
 * itself, so trees are cut inside, not only at the root. */
void fx_gen_eagle(const char *dir, const char *const *args, bool echo);

/* The new value of element (row, col) of a tensor (a vector's col is 0), from its old. */
typedef float fx_st_value_fn(uint64_t row, uint64_t col, float old, void *user);
/* Rewrites tensor `name` (F32, F16 or BF16, one or two dimensions) of the safetensors
 * file `path` in place, element by element. Fails the test on error. */
void fx_st_edit(const char *path, const char *name, fx_st_value_fn *fn, void *user);
/* Appends an F32 vector `name` of n values fn(i, 0, 0, user) to the file. */
void fx_st_add(const char *path, const char *name, uint64_t n, fx_st_value_fn *fn, void *user);

/* Loads a model with n_slots slots of n_ctx rows; fails the test on error. */
struct model *fx_load(const char *path, uint32_t n_slots, uint32_t n_ctx);

/* Runs tokens[0 .. n) through the target from an empty slot 0 (one forward per
 * model_max_batch tokens), every token an output: hidden gets the final hidden states
 * (n, dim), logits (may be NULL) the logits (n, n_vocab). */
void fx_forward_all(struct model *t, const int32_t *tokens, uint32_t n, float *hidden,
		    float *logits);

/* MPI_Init_thread (funneled, errors returned) for a test of a leader and a draft rank;
 * false, after MPI_Finalize and a message, when not run under mpirun -np 2. */
bool fx_mpi_init_pair(int *argc, char ***argv);

/* A drafter of `method` for target; `path` is the draft model's file (draft_model) or
 * the heads' (medusa). Fails the test on error. */
struct drafter *fx_drafter(enum draft_method method, struct model *target, uint32_t k,
			   uint32_t n_slots, const char *path, uint32_t lookup_min);

/* Called before each step of a fx_job: a test's draft_select, ... */
typedef void fx_step_fn(struct drafter *d, uint32_t step, void *user);

/* One job of the engine, run by fx_run_job. */
struct fx_job {
	struct model *target;
	struct drafter *d;          /* NULL: plain decoding */
	uint32_t k;
	draft_verify_fn *verify;    /* NULL: the exact verifier */
	const int32_t *prompt;
	uint32_t n_prompt;
	struct draft_job_params params;
	fx_step_fn *before_step;    /* may be NULL; not called without a drafter */
	void *user;
};

/* fx_generate for a fx_job: its own job parameters (defer_prefill: the prompt goes in
 * inside the steps) and hook. */
enum specd_status fx_run_job(const struct fx_job *job, int32_t *out, uint32_t cap,
			     uint32_t *n_out, struct draft_metrics *m, enum draft_stop *stop);

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
/* The same with sampling: each token sampler_sample's draw from its logits with a
 * sampler made from sp (NULL: greedy), as a request's own sampler draws. */
uint32_t fx_plain_decode(struct model *target, const int32_t *prompt, uint32_t n_prompt,
			 const struct sampler_params *sp, uint32_t max_tokens, int32_t *out);

/* Sampled jobs of max_tokens (each reaching it) with drafter d at K = k (d NULL: plain)
 * for seeds 1 .. n_seeds, seed s sampling with sp[s % n_sp]: asserts each output is
 * fx_plain_decode's for that seed, token for token. Returns the drafts accepted in
 * all. */
uint64_t fx_expect_plain_sampling(struct model *target, struct drafter *d, uint32_t k,
				  const int32_t *prompt, uint32_t n_prompt,
				  const struct sampler_params *sp, uint32_t n_sp, uint32_t n_seeds,
				  uint32_t max_tokens);

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

/* The exact law of the first two tokens of plain sampling with sp from prompt (slot 0
 * of t): joint[a * V + b] = p1(a) p2(b | a), V the vocabulary, one forward per a. */
void fx_exact_joint(struct model *t, const int32_t *prompt, uint32_t n,
		    const struct sampler_params *sp, double *joint);

/* n_seeds sampled jobs on slot 0 of t with drafter d at K (seeds 1000, 1001, ...) of
 * max_tokens (>= 2) from prompt, each stepped until its first two tokens (a, b) are
 * out: count[a * V + b] counts them, *drafted and *accepted sum the jobs' metrics. */
void fx_count_first_two(struct model *t, struct drafter *d, uint32_t k, const int32_t *prompt,
			uint32_t n, const struct sampler_params *sp, uint32_t max_tokens,
			uint32_t n_seeds, uint32_t *count, uint64_t *drafted, uint64_t *accepted);

/* Chi-square goodness of fit of counts (n_samples in all) to the law p over n cells
 * (cells expected >= 10 on their own, the rest lumped into one bin) at alpha = 0.001,
 * with at least 3 degrees of freedom, and a drafter whose proposals were accepted
 * sometimes but not always; FX_VERBOSE in the environment prints the numbers. */
void fx_assert_exact_law(const char *what, const double *p, const uint32_t *count, uint32_t n,
			 uint32_t n_samples, uint64_t drafted, uint64_t accepted);

/* The chi-square critical value at alpha = 0.001 for df >= 1 (exact to 30 degrees of
 * freedom, the Wilson-Hilferty approximation beyond). */
double fx_chi2_critical(int df);

#endif
