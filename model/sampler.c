/* The sampler: last stage of a decode step on the leader (and of drafting on a draft
 * rank), turning logits into the next token. The PRNG is our own so that a seed means
 * the same draws on every platform and libc. */
#include "sampler.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

struct sampler_cand {
	float z;    /* logit / temperature: the order key */
	float e;    /* exp(z - max z), unnormalised probability */
	int32_t id;
};

struct sampler {
	int32_t n_vocab;
	struct sampler_params p;
	uint64_t rng[4];             /* xoshiro256** state */
	struct sampler_cand *cand;   /* (n_vocab) host workspace */
	float *probs;                /* (n_vocab) host workspace for sampler_sample */
};

enum specd_status sampler_params_check(const struct sampler_params *p, struct specd_error *err)
{
	if (!p)
		return specd_errorf(err, SPECD_INVAL, "sampler: no parameters");
	if (!(p->temperature >= 0.0f) || isinf(p->temperature))
		return specd_errorf(err, SPECD_INVAL, "sampler: temperature %g is not a finite "
				    "value >= 0", (double)p->temperature);
	if (p->top_k < 0)
		return specd_errorf(err, SPECD_INVAL, "sampler: top_k %d is negative",
				    (int)p->top_k);
	if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
		return specd_errorf(err, SPECD_INVAL, "sampler: top_p %g is outside (0, 1]",
				    (double)p->top_p);
	return SPECD_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t sampler_next(struct sampler *s)
{
	uint64_t *r = s->rng;
	uint64_t out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;

	r[2] ^= r[0];
	r[3] ^= r[1];
	r[1] ^= r[2];
	r[0] ^= r[3];
	r[2] ^= t;
	r[3] = rotl(r[3], 45);
	return out;
}

float sampler_uniform(struct sampler *s)
{
	return (float)(sampler_next(s) >> 40) * 0x1.0p-24f;
}

enum specd_status sampler_reset(struct sampler *s, const struct sampler_params *p,
				struct specd_error *err)
{
	uint64_t x;
	enum specd_status st = sampler_params_check(p, err);

	if (st != SPECD_OK)
		return st;
	s->p = *p;
	x = p->seed;
	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&x); /* never all zero: splitmix64 is a bijection */
	return SPECD_OK;
}

enum specd_status sampler_create(int32_t vocab_size, const struct sampler_params *p,
				 struct sampler **out, struct specd_error *err)
{
	struct sampler *s;
	enum specd_status st;

	if (vocab_size < 1)
		return specd_errorf(err, SPECD_INVAL, "sampler: vocab size %d", (int)vocab_size);
	st = sampler_params_check(p, err);
	if (st != SPECD_OK)
		return st;
	s = specd_calloc(1, sizeof(*s));
	if (!s)
		goto nomem;
	s->n_vocab = vocab_size;
	s->cand = specd_malloc_array((size_t)vocab_size, sizeof(*s->cand));
	s->probs = specd_malloc_array((size_t)vocab_size, sizeof(*s->probs));
	if (!s->cand || !s->probs)
		goto nomem;
	sampler_reset(s, p, NULL);
	*out = s;
	return SPECD_OK;
nomem:
	sampler_destroy(s);
	return specd_errorf(err, SPECD_NOMEM, "sampler: out of memory for vocab %d",
			    (int)vocab_size);
}

void sampler_destroy(struct sampler *s)
{
	if (!s)
		return;
	specd_free(s->cand);
	specd_free(s->probs);
	specd_free(s);
}

const struct sampler_params *sampler_get_params(const struct sampler *s)
{
	return &s->p;
}

int32_t sampler_vocab_size(const struct sampler *s)
{
	return s->n_vocab;
}

bool sampler_is_greedy(const struct sampler *s)
{
	return s->p.temperature == 0.0f || s->p.top_k == 1;
}

int32_t sampler_argmax(const float *logits, int32_t n)
{
	int32_t best = -1;

	for (int32_t i = 0; i < n; i++)
		if (!isnan(logits[i]) && (best < 0 || logits[i] > logits[best]))
			best = i;
	return best;
}

/* Whether a ranks before b: larger z, then smaller id. A total order, so any sort of
 * the candidates gives the same sequence. */
static bool cand_before(const struct sampler_cand *a, const struct sampler_cand *b)
{
	return a->z > b->z || (a->z == b->z && a->id < b->id);
}

/* Sift down in a heap whose root is the candidate ranked last. */
static void cand_sift(struct sampler_cand *h, size_t n, size_t i)
{
	struct sampler_cand x = h[i];

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
static void cand_sort_heap(struct sampler_cand *h, size_t n)
{
	while (n > 1) {
		struct sampler_cand t = h[0];

		h[0] = h[n - 1];
		h[n - 1] = t;
		cand_sift(h, --n, 0);
	}
}

static void cand_heapify(struct sampler_cand *h, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		cand_sift(h, n, i);
}

static float logit_or_ninf(float z)
{
	return isnan(z) ? -INFINITY : z;
}

enum specd_status sampler_logprobs(const float *logits, int32_t n, int32_t chosen, uint32_t top,
				   struct sampler_logprob *out)
{
	struct sampler_cand best[SAMPLER_MAX_TOP_LOGPROBS];
	uint32_t n_best = 0;

	if (!logits || !out || n < 1 || chosen < 0 || chosen >= n || top > SAMPLER_MAX_TOP_LOGPROBS)
		return SPECD_INVAL;
	int32_t arg = sampler_argmax(logits, n);
	if (arg < 0 || logits[arg] == -INFINITY)
		return SPECD_INVAL;
	double max = logits[arg], sum = 0;
	for (int32_t i = 0; i < n; i++) {
		struct sampler_cand c = {.z = logit_or_ninf(logits[i]), .id = i};

		sum += exp((double)c.z - max);
		/* Insertion into the kept few, best first: top is small. */
		if (top == 0 || (n_best == top && !cand_before(&c, &best[top - 1])))
			continue;
		uint32_t at = n_best < top ? n_best++ : top - 1;
		while (at > 0 && cand_before(&c, &best[at - 1])) {
			best[at] = best[at - 1];
			at--;
		}
		best[at] = c;
	}
	double norm = max + log(sum);
	out[0].token = chosen;
	out[0].logprob = (float)(logit_or_ninf(logits[chosen]) - norm);
	for (uint32_t i = 0; i < top; i++) {
		out[1 + i].token = i < n_best ? best[i].id : -1;
		out[1 + i].logprob = i < n_best ? (float)(best[i].z - norm) : -INFINITY;
	}
	return SPECD_OK;
}

static enum specd_status sampler_greedy_probs(const struct sampler *s, const float *logits,
					      float *probs)
{
	int32_t best = sampler_argmax(logits, s->n_vocab);

	if (best < 0 || logits[best] == -INFINITY)
		return SPECD_INVAL;
	memset(probs, 0, (size_t)s->n_vocab * sizeof(*probs));
	probs[best] = 1.0f;
	return SPECD_OK;
}

enum specd_status sampler_probs(struct sampler *s, const float *logits, float *probs)
{
	const size_t n = (size_t)s->n_vocab;
	struct sampler_cand *c = s->cand;
	float inv_t, zmax = -INFINITY;
	double sum = 0.0, kept_sum = 0.0;
	size_t k = s->p.top_k > 0 && (size_t)s->p.top_k < n ? (size_t)s->p.top_k : n;
	size_t m = 0;
	bool use_p = s->p.top_p < 1.0f;

	if (!logits || !probs)
		return SPECD_INVAL;
	if (sampler_is_greedy(s))
		return sampler_greedy_probs(s, logits, probs);

	inv_t = 1.0f / s->p.temperature;
	for (size_t i = 0; i < n; i++) {
		float z = isnan(logits[i]) ? -INFINITY : logits[i] * inv_t;

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
			struct sampler_cand x = { .z = logits[i] * inv_t, .e = probs[i],
						  .id = (int32_t)i };

			if (isnan(logits[i]))
				x.z = -INFINITY;
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
		double floor_e = (1.0 - (double)s->p.top_p) / (double)n * sum;

		for (size_t i = 0; i < n; i++) {
			if (probs[i] >= floor_e) {
				c[m].z = isnan(logits[i]) ? -INFINITY : logits[i] * inv_t;
				c[m].e = probs[i];
				c[m].id = (int32_t)i;
				m++;
			}
		}
		cand_heapify(c, m);
		cand_sort_heap(c, m);
		kept_sum = sum;
	} else {
		for (size_t i = 0; i < n; i++)
			probs[i] = (float)(probs[i] / sum);
		return SPECD_OK;
	}

	if (use_p) {
		double cum = 0.0, target = (double)s->p.top_p * kept_sum;
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
	memset(probs, 0, n * sizeof(*probs));
	for (size_t i = 0; i < m; i++)
		probs[c[i].id] = (float)(c[i].e / kept_sum);
	return SPECD_OK;
}

enum specd_status sampler_sample_probs(struct sampler *s, const float *probs, int32_t *token)
{
	const int32_t n = s->n_vocab;
	double total = 0.0, target, cum = 0.0;
	int32_t last = -1;

	if (!probs || !token)
		return SPECD_INVAL;
	for (int32_t i = 0; i < n; i++) {
		if (!(probs[i] >= 0.0f) || isinf(probs[i]))
			return SPECD_INVAL;
		total += probs[i];
	}
	if (!(total > 0.0))
		return SPECD_INVAL;
	target = (double)sampler_uniform(s) * total;
	for (int32_t i = 0; i < n; i++) {
		if (probs[i] == 0.0f)
			continue;
		cum += probs[i];
		last = i;
		if (cum > target)
			break;
	}
	*token = last; /* rounding can leave target past the sum: take the last kept id */
	return SPECD_OK;
}

enum specd_status sampler_sample(struct sampler *s, const float *logits, int32_t *token)
{
	enum specd_status st;

	if (!logits || !token)
		return SPECD_INVAL;
	if (sampler_is_greedy(s)) {
		int32_t best = sampler_argmax(logits, s->n_vocab);

		if (best < 0 || logits[best] == -INFINITY)
			return SPECD_INVAL;
		*token = best;
		return SPECD_OK;
	}
	st = sampler_probs(s, logits, s->probs);
	if (st != SPECD_OK)
		return st;
	return sampler_sample_probs(s, s->probs, token);
}
