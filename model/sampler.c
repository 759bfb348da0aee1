/* The sampler: last stage of a decode step on the leader (and of drafting on a draft
 * rank), turning logits into the next token. The PRNG is our own so that a seed means
 * the same draws on every platform and libc. */
#include "sampler.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "kernels/sample.h"

/* A logit as sampler_logprobs ranks it. */
struct sampler_cand {
	float z;
	int32_t id;
};

struct sampler {
	int32_t n_vocab;
	struct sampler_params p;
	uint64_t rng[4];             /* xoshiro256** state */
	void *cand;                  /* kern_sample_scratch_bytes(n_vocab) host workspace */
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
	if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
		return specd_errorf(err, SPECD_INVAL, "sampler: min_p %g is outside [0, 1]",
				    (double)p->min_p);
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

static uint64_t rng_next(uint64_t r[4])
{
	uint64_t out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;

	r[2] ^= r[0];
	r[3] ^= r[1];
	r[1] ^= r[2];
	r[0] ^= r[3];
	r[2] ^= t;
	r[3] = rotl(r[3], 45);
	return out;
}

static float rng_uniform(uint64_t r[4])
{
	return (float)(rng_next(r) >> 40) * 0x1.0p-24f;
}

float sampler_uniform(struct sampler *s)
{
	return rng_uniform(s->rng);
}

void sampler_peek_uniforms(const struct sampler *s, uint32_t n, float *u)
{
	uint64_t r[4];

	memcpy(r, s->rng, sizeof(r));
	for (uint32_t i = 0; i < n; i++)
		u[i] = rng_uniform(r);
}

void sampler_skip(struct sampler *s, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		rng_next(s->rng);
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
	s->cand = specd_malloc_array(1, kern_sample_scratch_bytes((size_t)vocab_size));
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

struct kern_sample_params sampler_kern_params(const struct sampler *s)
{
	struct kern_sample_params kp = {
		.temperature = s->p.temperature,
		.top_k = (uint32_t)s->p.top_k,
		.top_p = s->p.top_p,
		.min_p = s->p.min_p,
	};
	return kp;
}

bool sampler_is_greedy(const struct sampler *s)
{
	struct kern_sample_params kp = sampler_kern_params(s);

	return kern_sample_is_greedy(&kp);
}

int32_t sampler_argmax(const float *logits, int32_t n)
{
	size_t best;

	return n >= 1 && kern_sample_argmax(logits, (size_t)n, &best) ? (int32_t)best : -1;
}

static bool cand_before(const struct sampler_cand *a, const struct sampler_cand *b)
{
	return kern_sample_ranks_before(a->z, (uint32_t)a->id, b->z, (uint32_t)b->id);
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

enum specd_status sampler_probs(struct sampler *s, const float *logits, float *probs)
{
	struct kern_sample_params kp = sampler_kern_params(s);

	if (!logits || !probs)
		return SPECD_INVAL;
	return kern_sample_probs(&kp, logits, (size_t)s->n_vocab, probs, s->cand);
}

enum specd_status sampler_sample_probs(struct sampler *s, const float *probs, int32_t *token)
{
	double total;
	enum specd_status st;

	if (!probs || !token)
		return SPECD_INVAL;
	st = kern_sample_total(probs, (size_t)s->n_vocab, &total);
	if (st != SPECD_OK)
		return st;
	*token = (int32_t)kern_sample_pick(probs, (size_t)s->n_vocab,
					   (double)sampler_uniform(s) * total);
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
