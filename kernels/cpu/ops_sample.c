/* The CPU backend's sample op: each row through the sampler's reference transform
 * and draw (kernels/sample.h), with the caller's uniform, so a row gives exactly
 * sampler_sample's token. The reference every device backend's op is checked against.
 * And its topk op, the reference kern_top_n on each row. */
#include <assert.h>
#include <math.h>

#include "cpu_ops.h"
#include "kernels/sample.h"

/* Whether the row has a logit the transform can use (sampler_sample refuses it
 * otherwise): one above -inf (NaN compares false). The temperature cannot take it away:
 * where x / T would overflow, the row takes the T -> 0+ limit, whose argmax keeps its
 * mass (kernels/sample.h). So the first usable logit ends the scan. */
static bool row_has_mass(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (x[i] > -INFINITY)
			return true;
	return false;
}

/* One row's token and probe probability; probs and scratch are the op's work. */
static void sample_row(const struct kern_sample_rows *s, size_t r, float *probs, void *scratch,
		       uint32_t *tok, float *pp)
{
	const float *x = s->x + r * s->ldx;
	uint32_t probe = s->probe ? s->probe[r] : UINT32_MAX;
	size_t n = s->n, best;
	double total;

	if (kern_sample_is_greedy(&s->params)) {
		/* The residual of a one-hot leaves nothing or the one-hot: the argmax either way. */
		kern_sample_argmax(x, n, &best);
		*tok = (uint32_t)best;
		*pp = probe == best ? 1.0f : 0.0f;
		return;
	}
	/* Cannot fail: the row was checked, and the transform keeps its argmax. */
	kern_sample_probs(&s->params, x, n, probs, scratch);
	*pp = probe < n ? probs[probe] : 0.0f;
	if (s->exclude_probe && probe < n) {
		probs[probe] = 0.0f;
		if (kern_sample_total(probs, n, &total) != SPECD_OK) {
			probs[probe] = *pp; /* nothing left: draw from p itself */
			kern_sample_total(probs, n, &total);
		}
	} else {
		kern_sample_total(probs, n, &total);
	}
	*tok = (uint32_t)kern_sample_pick(probs, n, (double)s->u[r] * total);
}

enum specd_status cpu_sample(struct kern_ctx *ctx, const struct kern_sample_rows *s)
{
	(void)ctx;
	if (!kern_sample_rows_ok(s))
		return SPECD_INVAL;
	if (s->rows == 0)
		return SPECD_OK;
	for (size_t r = 0; r < s->rows; r++)
		if (!row_has_mass(s->x + r * s->ldx, s->n))
			return SPECD_INVAL;
	/* work: probs, then the transform's scratch (kern_sample_work_bytes allows 16
	 * bytes per logit). */
	float *probs = s->work;
	void *scratch = probs + s->n;
	assert(kern_sample_scratch_bytes(s->n) + s->n * sizeof(float) <=
	       kern_sample_work_bytes(1, s->n));
	for (size_t r = 0; r < s->rows; r++) {
		float pp;

		sample_row(s, r, probs, scratch, &s->out[r], &pp);
		if (s->probe_p)
			s->probe_p[r] = pp;
	}
	return SPECD_OK;
}

enum specd_status cpu_topk(struct kern_ctx *ctx, const struct kern_topk_rows *t)
{
	(void)ctx;
	if (!kern_topk_rows_ok(t))
		return SPECD_INVAL;
	for (size_t r = 0; r < t->rows; r++) {
		const float *x = t->x + r * t->ldx;
		int32_t *ids = t->ids + r * t->k;
		kern_top_n(x, t->n, t->k, ids);
		for (uint32_t i = 0; t->vals && i < t->k; i++)
			t->vals[r * t->k + i] = ids[i] < 0 ? -INFINITY : x[ids[i]];
		if (t->lse)
			t->lse[r] = kern_log_norm(x, t->n);
	}
	return SPECD_OK;
}
