/* Logits -> the next token: greedy, temperature, top-k, top-p and min-p with a
 * per-request seeded PRNG (xoshiro256**), so a seed reproduces a run on every machine.
 * The verifier of speculative sampling (drafters/) applies sampler_probs to target and
 * draft logits alike, so both sides see exactly the same transformed distribution.
 *
 * The transform, in order: temperature 0 (or top_k 1) is greedy, a one-hot at the
 * argmax (lowest id on ties). Otherwise softmax(logits / temperature); top_k keeps the
 * k most likely; top_p keeps, of those, the shortest prefix whose mass (renormalised
 * over the kept set) reaches top_p; min_p keeps, of those, the ones whose probability
 * is at least min_p times the largest; the kept probabilities are renormalised and all
 * others are 0. "Most likely" orders by logit descending, then id ascending, so every
 * cut is deterministic. NaN logits count as -inf. The transform and the draw are the
 * kernels' reference (kernels/sample.h), which the backends' sample op also computes,
 * so a device can draw the token from its own logits with this sampler's uniform
 * (sampler_uniform, then kern_sample: the same token as sampler_sample).
 *
 * Threads: a struct sampler is one request's state; one thread at a time. Nothing
 * after sampler_create allocates. */
#ifndef SPECD_MODEL_SAMPLER_H
#define SPECD_MODEL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"
#include "kernels/kern.h"

struct sampler_params {
	float temperature; /* 0: greedy; otherwise > 0 and finite */
	int32_t top_k;     /* 0: off; otherwise >= 1 (values >= vocab are off too) */
	float top_p;       /* 1: off; otherwise in (0, 1) */
	uint64_t seed;     /* any value; the PRNG is seeded from it by splitmix64 */
	/* 0: off; otherwise in (0, 1]. Last, so initialisers that name only the fields
	 * above leave it off. */
	float min_p;
};

struct sampler;

/* Errors: SPECD_INVAL (temperature negative or not finite, top_k negative, top_p
 * outside (0, 1], min_p outside [0, 1]), with a message naming the parameter. */
enum specd_status sampler_params_check(const struct sampler_params *p, struct specd_error *err);

/* A sampler over vocab_size logits, its workspace allocated once here. Errors:
 * SPECD_INVAL (vocab_size < 1, bad params), SPECD_NOMEM. *out only on success. */
enum specd_status sampler_create(int32_t vocab_size, const struct sampler_params *p,
				 struct sampler **out, struct specd_error *err);
/* NULL is a no-op. */
void sampler_destroy(struct sampler *s);

/* Reuses the sampler for a new request: new parameters and a PRNG reseeded from
 * p->seed. Errors: SPECD_INVAL (bad params; the sampler is unchanged). */
enum specd_status sampler_reset(struct sampler *s, const struct sampler_params *p,
				struct specd_error *err);

int32_t sampler_vocab_size(const struct sampler *s);
/* The parameters of the last sampler_create or sampler_reset, seed included (the seed
 * given, not the PRNG's state since): what a remote draft rank needs to rebuild the
 * same stream (drafters/remote.h). */
const struct sampler_params *sampler_get_params(const struct sampler *s);
/* Whether the parameters make the transform a one-hot (temperature 0 or top_k 1). */
bool sampler_is_greedy(const struct sampler *s);

/* The index of the largest of n values, the lowest on ties, NaN ignored; -1 when n < 1
 * or every value is NaN. */
int32_t sampler_argmax(const float *logits, int32_t n);

/* The next token from vocab_size logits. Greedy draws nothing from the PRNG;
 * otherwise it is exactly sampler_probs followed by sampler_sample_probs (one draw).
 * Errors: SPECD_INVAL (NULL arguments, or no logit above -inf). */
enum specd_status sampler_sample(struct sampler *s, const float *logits, int32_t *token);

/* Writes the transformed distribution (vocab_size floats, summing to 1 up to rounding,
 * 0 outside the kept set) into probs, which may not alias logits. Draws nothing.
 * Errors: SPECD_INVAL (NULL arguments, or no logit above -inf). */
enum specd_status sampler_probs(struct sampler *s, const float *logits, float *probs);

/* Draws one token from vocab_size non-negative weights (need not sum to 1): one
 * uniform u, then the first id whose running sum, in id order, exceeds u * total.
 * Errors: SPECD_INVAL (NULL arguments, a negative or non-finite weight, total 0). */
enum specd_status sampler_sample_probs(struct sampler *s, const float *probs, int32_t *token);

/* One token's log-probability under the model's own distribution (log-softmax of the
 * raw logits: before temperature, top-k and top-p). */
struct sampler_logprob {
	int32_t token;
	float logprob;
};

#define SAMPLER_MAX_TOP_LOGPROBS 20

/* Log-probabilities from n logits: out[0] is `chosen`'s, out[1..top] the `top` most
 * likely tokens' in the sampler's order (logit descending, id ascending), fewer when
 * n < top (the rest get token -1). The normaliser is summed in double in id order, so
 * the result depends on the row alone. NaN logits count as -inf. top is at most
 * SAMPLER_MAX_TOP_LOGPROBS. Errors: SPECD_INVAL (NULL arguments, n < 1, chosen out of
 * range, top too large, no logit above -inf). Any thread; draws nothing. */
enum specd_status sampler_logprobs(const float *logits, int32_t n, int32_t chosen, uint32_t top,
				   struct sampler_logprob *out);

/* The sampler's parameters as the sample op (kern_sample) and the kernels' reference
 * transform take them. */
struct kern_sample_params sampler_kern_params(const struct sampler *s);

/* A uniform draw in [0, 1) with 24 random bits (every value exactly a float), for the
 * verifier's acceptance test. */
float sampler_uniform(struct sampler *s);

/* The next n uniforms sampler_uniform would return, without drawing them: a verifier
 * whose draws are taken on a device (kern_sample) needs them before the forward, and
 * takes as many as the host verifier would have with sampler_skip afterwards, so a
 * seed gives the same tokens either way. */
void sampler_peek_uniforms(const struct sampler *s, uint32_t n, float *u);

/* Draws n uniforms and forgets them. */
void sampler_skip(struct sampler *s, uint32_t n);

#endif
