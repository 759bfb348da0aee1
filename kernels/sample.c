/* The sampler's reference transform and draw (sample.h): what the host sampler
 * (model/sampler.c) and the CPU backend's sample op run, last stage of a decode step.
 * Moved here from model/sampler.c unchanged in its arithmetic, so its tokens are
 * bitwise those it gave before; min-p is the one addition. And the tree drafters'
 * candidate pick (kern_top_n, kern_log_norm), the topk op's reference. */
#include "kernels/sample.h"

#include <math.h>
#include <string.h>

struct sample_cand {
	float z;     /* logit / temperature: the order key */
	float e;     /* exp(z - max z), unnormalised probability */
	uint32_t id;
};

static bool cand_before(const struct sample_cand *a, const struct sample_cand *b)
{
	return kern_sample_ranks_before(a->z, a->id, b->z, b->id);
}

/* Sift down in a heap whose root is the candidate ranked last. */
static void cand_sift(struct sample_cand *h, size_t n, size_t i)
{
	struct sample_cand x = h[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && cand_before(&h[c], &h[c + 1]))
			c++;
		if (!cand_before(&x, &h[c]))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

/* Heapsort of a worst-at-root heap into best-first order; in place, no allocation. */
static void cand_sort_heap(struct sample_cand *h, size_t n)
{
	while (n > 1) {
		struct sample_cand t = h[0];

		h[0] = h[n - 1];
		h[n - 1] = t;
		cand_sift(h, --n, 0);
	}
}

static void cand_heapify(struct sample_cand *h, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		cand_sift(h, n, i);
}

bool kern_sample_argmax(const float *x, size_t n, size_t *best)
{
	size_t b = n;

	for (size_t i = 0; i < n; i++)
		if (!isnan(x[i]) && (b == n || x[i] > x[b]))
			b = i;
	if (b == n)
		return false;
	*best = b;
	return true;
}

void kern_sample_scale_row(const struct kern_sample_params *p, const float *x, size_t n,
			   struct kern_sample_scale *s)
{
	float fmax = -INFINITY, xmax = -INFINITY;
	bool finite = false;

	for (size_t i = 0; i < n; i++) {
		if (isnan(x[i]))
			continue;
		xmax = x[i] > xmax ? x[i] : xmax;
		if (isfinite(x[i]) && (!finite || x[i] > fmax)) {
			fmax = x[i];
			finite = true;
		}
	}
	s->inv_t = 1.0f / p->temperature;
	/* Only the largest finite logit can overflow to +inf (the rest lie below it)
	 * or, when negative, take every finite logit to -inf with it; a smaller one
	 * overflowing to -inf gets e = 0, which exp(z - zmax) rounds to anyway. */
	s->limit = finite && (isinf(s->inv_t) || isinf(fmax * s->inv_t));
	s->xmax = xmax;
}

size_t kern_sample_scratch_bytes(size_t n)
{
	return n * sizeof(struct sample_cand);
}

static enum specd_status greedy_probs(const float *logits, size_t n, float *probs)
{
	size_t best;

	if (!kern_sample_argmax(logits, n, &best) || logits[best] == -INFINITY)
		return SPECD_INVAL;
	memset(probs, 0, n * sizeof(*probs));
	probs[best] = 1.0f;
	return SPECD_OK;
}

/* min-p alone: a filter in id order (probs holds the unnormalised e), no sort. The
 * argmax has e = 1 >= min_p, so something is always kept. */
static void min_p_only(float *probs, size_t n, float min_p)
{
	double kept = 0.0;

	for (size_t i = 0; i < n; i++)
		if (probs[i] >= min_p)
			kept += probs[i];
	for (size_t i = 0; i < n; i++)
		probs[i] = probs[i] >= min_p ? (float)(probs[i] / kept) : 0.0f;
}

enum specd_status kern_sample_probs(const struct kern_sample_params *p, const float *logits,
				    size_t n, float *probs, void *scratch)
{
	struct sample_cand *c = scratch;
	struct kern_sample_scale sc;
	float zmax = -INFINITY;
	double sum = 0.0, kept_sum = 0.0;
	size_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
	size_t m = 0;
	bool use_p = p->top_p < 1.0f, use_min = p->min_p > 0.0f;

	if (kern_sample_is_greedy(p))
		return greedy_probs(logits, n, probs);

	kern_sample_scale_row(p, logits, n, &sc);
	for (size_t i = 0; i < n; i++) {
		float z = kern_sample_z(&sc, logits[i]);

		probs[i] = z;
		if (z > zmax)
			zmax = z;
	}
	if (zmax == -INFINITY)
		return SPECD_INVAL;
	for (size_t i = 0; i < n; i++) {
		/* A +inf logit takes all the mass, shared with any other +inf. */
		float e = isinf(zmax) ? (probs[i] == zmax ? 1.0f : 0.0f) : expf(probs[i] - zmax);

		probs[i] = e;
		sum += e;
	}

	if (k < n) {
		/* Keep the k best in a heap whose root is the worst of them: O(n log k). */
		for (size_t i = 0; i < n; i++) {
			struct sample_cand x = { .z = kern_sample_z(&sc, logits[i]), .e = probs[i],
						 .id = (uint32_t)i };

			if (m < k) {
				c[m++] = x;
				if (m == k)
					cand_heapify(c, m);
			} else if (cand_before(&x, &c[0])) {
				c[0] = x;
				cand_sift(c, m, 0);
			}
		}
		cand_sort_heap(c, m);
		for (size_t i = 0; i < m; i++)
			kept_sum += c[i].e;
	} else if (use_p) {
		/* Everything below (1 - p) / n of the mass together holds less than 1 - p,
		 * so the nucleus lies within what is left: sort only that. */
		double floor_e = (1.0 - (double)p->top_p) / (double)n * sum;

		for (size_t i = 0; i < n; i++) {
			if (probs[i] >= floor_e) {
				c[m].z = kern_sample_z(&sc, logits[i]);
				c[m].e = probs[i];
				c[m].id = (uint32_t)i;
				m++;
			}
		}
		cand_heapify(c, m);
		cand_sort_heap(c, m);
		kept_sum = sum;
	} else if (use_min) {
		min_p_only(probs, n, p->min_p);
		return SPECD_OK;
	} else {
		for (size_t i = 0; i < n; i++)
			probs[i] = (float)(probs[i] / sum);
		return SPECD_OK;
	}

	if (use_p) {
		double cum = 0.0, target = (double)p->top_p * kept_sum;
		size_t cut = m;

		for (size_t i = 0; i < m; i++) {
			cum += c[i].e;
			if (cum >= target) {
				cut = i + 1;
				break;
			}
		}
		m = cut;
		kept_sum = cum;
	}
	if (use_min) {
		/* A filter, not a cut at the first miss: the same set whatever the order. */
		double kept = 0.0;
		size_t w = 0;

		for (size_t i = 0; i < m; i++) {
			if (c[i].e >= p->min_p) {
				kept += c[i].e;
				c[w++] = c[i];
			}
		}
		if (w < m) {
			m = w;
			kept_sum = kept;
		}
	}
	memset(probs, 0, n * sizeof(*probs));
	for (size_t i = 0; i < m; i++)
		probs[c[i].id] = (float)(c[i].e / kept_sum);
	return SPECD_OK;
}

enum specd_status kern_sample_total(const float *w, size_t n, double *total)
{
	double t = 0.0;

	for (size_t i = 0; i < n; i++) {
		if (!(w[i] >= 0.0f) || isinf(w[i]))
			return SPECD_INVAL;
		t += w[i];
	}
	if (!(t > 0.0))
		return SPECD_INVAL;
	*total = t;
	return SPECD_OK;
}

size_t kern_sample_pick(const float *w, size_t n, double target)
{
	double cum = 0.0;
	size_t last = 0;

	for (size_t i = 0; i < n; i++) {
		if (w[i] == 0.0f)
			continue;
		cum += w[i];
		last = i;
		if (cum > target)
			break;
	}
	return last;
}

bool kern_sample_rows_ok(const struct kern_sample_rows *s)
{
	const struct kern_sample_params *p;

	if (!s)
		return false;
	if (s->rows == 0)
		return true; /* nothing to do, whatever the rest says */
	p = &s->params;
	if (!s->x || !s->out || s->n == 0 || s->n >= UINT32_MAX || s->ldx < s->n ||
	    (s->probe_p && !s->probe) || (s->exclude_probe && !s->probe) ||
	    !(p->temperature >= 0.0f) || isinf(p->temperature) ||
	    !(p->top_p > 0.0f && p->top_p <= 1.0f) || !(p->min_p >= 0.0f && p->min_p <= 1.0f))
		return false;
	if (kern_sample_is_greedy(p))
		return true;
	if (!s->u || !s->work)
		return false;
	for (size_t r = 0; r < s->rows; r++)
		if (!(s->u[r] >= 0.0f && s->u[r] < 1.0f))
			return false;
	return true;
}

void kern_top_n(const float *x, size_t n, uint32_t k, int32_t *out)
{
	for (uint32_t r = 0; r < k; r++)
		out[r] = -1;
	for (size_t v = 0; v < n; v++) {
		float xv = x[v];
		if (isnan(xv))
			continue;
		uint32_t r = k;
		while (r > 0 && (out[r - 1] < 0 || xv > x[out[r - 1]]))
			r--;
		if (r == k)
			continue;
		memmove(out + r + 1, out + r, (k - r - 1) * sizeof(*out));
		out[r] = (int32_t)v;
	}
}

float kern_log_norm(const float *x, size_t n)
{
	float mx = -INFINITY;
	double sum = 0.0;

	for (size_t v = 0; v < n; v++)
		mx = x[v] > mx ? x[v] : mx;
	for (size_t v = 0; v < n; v++)
		sum += exp((double)(x[v] - mx));
	return mx + (float)log(sum);
}

bool kern_topk_rows_ok(const struct kern_topk_rows *t)
{
	if (!t)
		return false;
	return t->rows == 0 || (t->x && t->ids && t->n >= 1 && t->n <= INT32_MAX &&
				t->ldx >= t->n && t->k >= 1 && t->k <= KERN_TOPK_MAX);
}
