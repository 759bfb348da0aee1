/* The sampler's transform and draw over one row of logits in host memory: the one
 * reference that model/sampler.c (the host sampler) and the CPU backend's sample op
 * (kern.h, struct kern_sample_rows) both compute with, so the two cannot drift apart;
 * the CUDA op is checked against it (tools/gpu_check.c). The transform is described
 * in model/sampler.h. Pure functions of their arguments: any thread. */
#ifndef SPECD_KERNELS_SAMPLE_H
#define SPECD_KERNELS_SAMPLE_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kern.h"

/* Whether the parameters make the transform a one-hot at the argmax. */
static inline bool kern_sample_is_greedy(const struct kern_sample_params *p)
{
	return p->temperature == 0.0f || p->top_k == 1;
}

/* The sampler's total order on (z, id): a ranks before b when its z is larger, or
 * equal with a smaller id. Every cut keeps a prefix of it, so every cut is
 * deterministic. */
static inline bool kern_sample_ranks_before(float za, uint32_t ia, float zb, uint32_t ib)
{
	return za > zb || (za == zb && ia < ib);
}

/* How a row's logits x become the transform's z = x / T (kern_sample_z). When 1/T,
 * or the largest finite logit times 1/T, overflows (a tiny or subnormal temperature),
 * x / T would make distinct logits equal infinities, or 0 * inf a NaN; such a row
 * takes the limit T -> 0+ of (x - max) / T instead: 0 at the row's largest logit and
 * -inf elsewhere, so its distribution is the one-hot at the argmax (shared equally
 * among tied maxima, as +inf logits share it at any temperature). A row whose z are
 * all representable is computed as x * (1/T), unchanged. The CUDA op
 * (kernels/cuda/cuda_sample.cu) makes the same choice per row. */
struct kern_sample_scale {
	float inv_t; /* 1 / temperature, +inf for a subnormal one */
	bool limit;  /* the row takes the T -> 0+ limit */
	float xmax;  /* limit only: the row's largest non-NaN logit */
};

/* The scale of row x[0..n) under non-greedy parameters p. */
void kern_sample_scale_row(const struct kern_sample_params *p, const float *x, size_t n,
			   struct kern_sample_scale *s);

/* A logit's z under s; NaN is -inf. */
static inline float kern_sample_z(const struct kern_sample_scale *s, float x)
{
	if (isnan(x))
		return -INFINITY;
	if (s->limit)
		return x == s->xmax ? 0.0f : -INFINITY;
	return x * s->inv_t;
}

/* The index of the largest of n values, the lowest on ties, NaN ignored, into *best;
 * false (nothing written) when n is 0 or every value is NaN. */
bool kern_sample_argmax(const float *x, size_t n, size_t *best);

/* Bytes of the scratch kern_sample_probs takes for n logits. */
size_t kern_sample_scratch_bytes(size_t n);

/* The transformed distribution of n logits into probs (n floats, summing to 1 up to
 * rounding, 0 outside the kept set; may not alias logits). scratch: at least
 * kern_sample_scratch_bytes(n) bytes, 4-byte aligned. The parameters are the
 * caller's to check (model/sampler.c's sampler_params_check). Errors: SPECD_INVAL
 * (no logit above -inf). */
enum specd_status kern_sample_probs(const struct kern_sample_params *p, const float *logits,
				    size_t n, float *probs, void *scratch);

/* The sum of n weights in id order, in double. Errors: SPECD_INVAL (a negative or
 * non-finite weight, or a total of 0). *total written only on success. */
enum specd_status kern_sample_total(const float *w, size_t n, double *total);

/* The first id whose running sum of weights, in id order, exceeds target (the draw
 * u * total); rounding can leave target past the sum, and then it is the last id of
 * nonzero weight. The weights must have passed kern_sample_total. */
size_t kern_sample_pick(const float *w, size_t n, double target);

/* The k best ids of n logits into out[0..k) (kern.h struct kern_topk_rows: best first,
 * the lower id among equals, NaN skipped, -1 past the non-NaN values): one pass with
 * insertion into the short sorted list, so the order is exact. */
void kern_top_n(const float *x, size_t n, uint32_t k, int32_t *out);

/* log(sum(exp(x))) over n logits: the largest in float, then the sum of
 * exp(x - largest) in double. A NaN anywhere gives NaN. */
float kern_log_norm(const float *x, size_t n);

/* The argument checks of every backend's topk op (kern.h). True for 0 rows. */
bool kern_topk_rows_ok(const struct kern_topk_rows *t);

/* The argument checks of every backend's sample op (kern.h), made on the host before
 * anything runs: parameters in range, the arrays it needs, each u in [0, 1). False
 * for NULL; true for 0 rows, which need nothing. */
bool kern_sample_rows_ok(const struct kern_sample_rows *s);

#endif
