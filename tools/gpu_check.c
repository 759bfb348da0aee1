/* specd-gpu-check: what bench/gpu-check.sh runs on a GPU machine. `ops` (gpu_ops.c) compares every
 * op of the CUDA backend with the CPU backend on random inputs and checks the CUDA
 * op's batch invariance bitwise; `greedy MODEL` decodes on both backends and compares
 * the tokens, then checks on CUDA that a batch, a token at a time and speculative
 * verification give bitwise the same logits; `bench MODEL` measures CUDA decode
 * tokens/s, the share of HBM bandwidth, the cost of verifying K+1 tokens, and
 * speculative decoding with a free drafter of set acceptance; `sample` compares the
 * sample op's tokens with the CPU's on random rows and times it against downloading
 * the rows and sampling on the host. Links only the kernels and the model (no MPI,
 * YAML, protobuf-c or cmocka). Exit status: 0 all checks passed, 1 a check failed, 2
 * usage or load error, 3 no CUDA device. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "gpu_check.h"
#include "kernels/kern.h"
#include "kernels/sample.h"
#include "model/llama.h"
#include "model/shard.h"

#define EXIT_FAIL GPU_CHECK_EXIT_FAIL
#define EXIT_USAGE GPU_CHECK_EXIT_USAGE
#define EXIT_NO_DEVICE GPU_CHECK_EXIT_NO_DEVICE

static int failures;

/* ---- random inputs ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

float *gpu_check_rnd_floats(size_t n)
{
	float *p = specd_malloc_array(n ? n : 1, sizeof(float));
	if (!p) {
		fprintf(stderr, "specd-gpu-check: out of memory\n");
		exit(EXIT_USAGE);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = rnd();
	return p;
}

/* ---- device buffers ---- */

void *gpu_check_dev_from(struct kern_ctx *k, const void *host, size_t bytes)
{
	void *d = NULL;
	if (kern_alloc(k, bytes, &d) != SPECD_OK ||
	    (host && kern_upload(k, d, host, bytes) != SPECD_OK)) {
		fprintf(stderr, "specd-gpu-check: device allocation of %zu bytes failed\n", bytes);
		exit(EXIT_FAIL);
	}
	return d;
}

float *gpu_check_dev_floats(struct kern_ctx *k, const float *host, size_t n)
{
	return gpu_check_dev_from(k, host, n * sizeof(float));
}

void gpu_check_to_host(struct kern_ctx *k, void *host, const void *dev, size_t bytes)
{
	if (kern_download(k, host, dev, bytes) != SPECD_OK) {
		fprintf(stderr, "specd-gpu-check: download failed\n");
		exit(EXIT_FAIL);
	}
}

/* ---- reporting ---- */

void gpu_check_fail(void)
{
	failures++;
}

void gpu_check_compare(const char *what, const float *cpu, const float *gpu, size_t n,
		       double tol)
{
	double max_abs = 0, scale = 0;
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)cpu[i] - (double)gpu[i]);
		if (isnan(cpu[i]) != isnan(gpu[i]))
			bad++;
		if (!isnan(d) && d > max_abs)
			max_abs = d;
		if (fabs((double)cpu[i]) > scale)
			scale = fabs((double)cpu[i]);
	}
	double rel = scale > 0 ? max_abs / scale : max_abs;
	bool ok = rel <= tol && bad == 0;
	printf("op %-34s max_abs %.3e  max_rel %.3e  (tol %.0e) %s\n", what, max_abs, rel, tol,
	       ok ? "ok" : "FAIL");
	if (!ok)
		failures++;
}

void gpu_check_expect(bool ok, const char *kind, const char *what, const char *claim)
{
	printf("%s %-34s %s %s\n", kind, what, claim, ok ? "ok" : "FAIL");
	if (!ok)
		failures++;
}

int gpu_check_failures(void)
{
	return failures;
}

bool gpu_check_bitwise(const float *a, const float *b, size_t n)
{
	return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ---- sampling ---- */

#define SAMPLE_ROWS 16
#define SAMPLE_U_SETS 16 /* draws per row and setting */

static const struct sample_setting {
	const char *name;
	struct kern_sample_params p;
} sample_settings[] = {
	{"greedy", {.temperature = 0.0f, .top_p = 1.0f}},
	{"T 1", {.temperature = 1.0f, .top_p = 1.0f}},
	{"T 0.7 top_k 40", {.temperature = 0.7f, .top_k = 40, .top_p = 1.0f}},
	{"T 0.8 top_p 0.9", {.temperature = 0.8f, .top_p = 0.9f}},
	{"T 1.2 min_p 0.1", {.temperature = 1.2f, .top_p = 1.0f, .min_p = 0.1f}},
	{"T 0.6 k 100 p 0.8 min_p 0.02",
	 {.temperature = 0.6f, .top_k = 100, .top_p = 0.8f, .min_p = 0.02f}},
	{"T 1 k 5000 p 0.95 min_p 0.05",
	 {.temperature = 1.0f, .top_k = 5000, .top_p = 0.95f, .min_p = 0.05f}},
	/* 1/T overflows: the T -> 0+ limit (kernels/sample.h), the argmax or its ties */
	{"T 1e-40 (the limit)", {.temperature = 1e-40f, .top_p = 1.0f}},
};

/* Rows of four kinds, by r % 4: flat (a wide nucleus), peaked like a model's (a few
 * tokens far above the rest), coarse (many exact ties) and holed (NaN and -inf). */
static void sample_rows_fill(float *x, size_t rows, size_t n)
{
	for (size_t r = 0; r < rows; r++) {
		float *xr = x + r * n;
		for (size_t i = 0; i < n; i++) {
			switch (r % 4) {
			case 0: xr[i] = 3.0f * rnd(); break;
			case 1: xr[i] = 2.0f * rnd() - 4.0f; break;
			case 2: xr[i] = roundf(8.0f * rnd()) / 4.0f; break;
			default:
				xr[i] = 3.0f * rnd();
				if ((rng_state >> 20) % 25 == 0)
					xr[i] = (rng_state >> 30) % 2 ? NAN : -INFINITY;
			}
		}
		for (int j = 0; r % 4 == 1 && j < 30; j++)
			xr[(size_t)((rnd() + 1.0f) * 0.5f * (float)(n - 1))] = 6.0f + 6.0f * rnd();
	}
}

/* The CPU's token for weights w and uniform u (sample.h: what the CPU op draws), and
 * how close u lies to a boundary of w's cumulative distribution. */
static uint32_t host_pick(const float *w, size_t n, float u, double *margin)
{
	double total, cum = 0.0, m = 1.0;
	if (kern_sample_total(w, n, &total) != SPECD_OK) {
		*margin = 1.0;
		return UINT32_MAX;
	}
	for (size_t i = 0; i < n; i++) {
		cum += w[i];
		double d = fabs(cum / total - (double)u);
		m = d < m ? d : m;
	}
	*margin = m;
	return (uint32_t)kern_sample_pick(w, n, (double)u * total);
}

/* The residual weights of drafters/verify.c for a one-hot draft: w without probe's
 * mass, or w itself when nothing is left. */
static void host_residual(float *dst, const float *w, size_t n, uint32_t probe)
{
	double total;
	memcpy(dst, w, n * sizeof(float));
	dst[probe] = 0.0f;
	if (kern_sample_total(dst, n, &total) != SPECD_OK)
		dst[probe] = w[probe];
}

struct sample_tally {
	unsigned draws, near, bad, inv_bad, pp_bad;
	double pp_rel;
};

/* Seconds per call: the device op on `rows` rows, against what it replaces:
 * downloading the rows and sampling them on the host (the CPU op is sampler_sample's
 * code). */
static void sample_time(struct kern_ctx *cpu, struct kern_ctx *gpu, struct kern_sample_rows dev,
			struct kern_sample_rows host, float *hx, double *t_dev, double *t_host)
{
	enum { REPS = 5, HOST_REPS = 2 };
	double t0 = specd_now();
	for (int rep = 0; rep < REPS; rep++)
		if (kern_sample(gpu, &dev) != SPECD_OK)
			failures++;
	*t_dev = (specd_now() - t0) / REPS;
	host.x = hx;
	t0 = specd_now();
	for (int rep = 0; rep < HOST_REPS; rep++) {
		gpu_check_to_host(gpu, hx, dev.x, dev.rows * dev.ldx * sizeof(float));
		if (kern_sample(cpu, &host) != SPECD_OK)
			failures++;
	}
	*t_host = (specd_now() - t0) / HOST_REPS;
}

/* One setting on SAMPLE_ROWS rows of n logits (x on the host, dx its device copy):
 * every draw of the device op against the CPU's, a row alone against the batch, then
 * the times at batch 1 and 16. */
static void check_sample_setting(struct kern_ctx *cpu, struct kern_ctx *gpu,
				 const struct sample_setting *set, const float *x, const float *dx,
				 size_t n, void *dwork, void *hwork, float *probs, float *resid,
				 float *hx)
{
	struct kern_sample_params p = set->p;
	bool greedy = kern_sample_is_greedy(&p);
	struct sample_tally t = {0};
	float u[SAMPLE_ROWS], pp[SAMPLE_ROWS], pp1;
	uint32_t probe[SAMPLE_ROWS], tok[SAMPLE_ROWS], tok1;
	size_t best;

	for (size_t r = 0; r < SAMPLE_ROWS; r++) {
		float *pr = probs + r * n;
		if (kern_sample_probs(&p, x + r * n, n, pr, hwork) != SPECD_OK ||
		    !kern_sample_argmax(pr, n, &best)) {
			printf("sample %s: the CPU refused row %zu FAIL\n", set->name, r);
			failures++;
			return;
		}
		probe[r] = (uint32_t)best; /* the most likely: its residual differs most */
	}
	struct kern_sample_rows s = {
		.rows = SAMPLE_ROWS, .n = n, .x = dx, .ldx = n, .params = p, .u = u, .probe = probe,
		.work = dwork, .out = tok, .probe_p = pp,
	};
	for (unsigned k = 0; k < SAMPLE_U_SETS; k++) {
		for (size_t r = 0; r < SAMPLE_ROWS; r++)
			u[r] = k == 0 ? 0.0f : k == 1 ? 1.0f - 0x1p-24f : (rnd() + 1.0f) * 0.5f;
		s.exclude_probe = k % 2 == 1;
		enum specd_status st = kern_sample(gpu, &s);
		if (st != SPECD_OK) {
			printf("sample %s: %s FAIL\n", set->name, specd_status_str(st));
			failures++;
			return;
		}
		/* One row alone: bitwise the batch's (the op is batch-invariant). */
		size_t r1 = k % SAMPLE_ROWS;
		struct kern_sample_rows one = s;
		one.rows = 1, one.x = dx + r1 * n, one.u = &u[r1], one.probe = &probe[r1];
		one.out = &tok1, one.probe_p = &pp1;
		if (kern_sample(gpu, &one) != SPECD_OK || tok1 != tok[r1] || pp1 != pp[r1])
			t.inv_bad++;
		for (size_t r = 0; r < SAMPLE_ROWS; r++) {
			const float *w = probs + r * n;
			double margin, rel;
			if (s.exclude_probe && !greedy) {
				host_residual(resid, w, n, probe[r]);
				w = resid;
			}
			uint32_t want = host_pick(w, n, u[r], &margin);
			float pc = probs[r * n + probe[r]];
			rel = fabs((double)pp[r] - pc) / (pc > 0 ? pc : 1.0f);
			t.pp_rel = rel > t.pp_rel ? rel : t.pp_rel;
			t.pp_bad += rel > 1e-5;
			t.draws++;
			if (tok[r] == want)
				continue;
			if (!greedy && margin < 1e-6) {
				t.near++;
				continue;
			}
			t.bad++;
			if (t.bad <= 3)
				printf("sample %s vocab %zu row %zu u %.8f: cuda %u, cpu %u (u %.2e from a "
				       "boundary) FAIL\n", set->name, n, r, (double)u[r], tok[r], want,
				       margin);
		}
	}
	double td1, th1, td, th;
	struct kern_sample_rows h = s;
	h.work = hwork;
	h.out = tok, h.probe_p = pp;
	struct kern_sample_rows d1 = s, h1 = h;
	d1.rows = h1.rows = 1;
	sample_time(cpu, gpu, d1, h1, hx, &td1, &th1);
	sample_time(cpu, gpu, s, h, hx, &td, &th);
	bool ok = t.bad == 0 && t.inv_bad == 0 && t.pp_bad == 0;
	printf("sample vocab %6zu %-30s %u draws: %u differ from the CPU (%u more within 1e-6 of "
	       "a boundary), row alone != batch %u, probe p max_rel %.1e; batch 1: device %.3f "
	       "ms, download + host %.3f ms (%.1fx); batch 16: %.3f ms, %.3f ms (%.1fx) %s\n",
	       n, set->name, t.draws, t.bad, t.near, t.inv_bad, t.pp_rel, td1 * 1e3, th1 * 1e3,
	       th1 / td1, td * 1e3, th * 1e3, th / td, ok ? "ok" : "FAIL");
	if (!ok)
		failures++;
}

/* The sample op: CUDA against the CPU on vocabularies of 32000 and 151936. */
static int run_sample(struct kern_ctx *cpu, struct kern_ctx *gpu)
{
	static const size_t vocabs[] = {32000, 151936};
	for (size_t v = 0; v < sizeof(vocabs) / sizeof(vocabs[0]); v++) {
		size_t n = vocabs[v], cells = SAMPLE_ROWS * n;
		float *x = gpu_check_rnd_floats(cells), *probs = gpu_check_rnd_floats(cells);
		float *hx = gpu_check_rnd_floats(cells);
		float *resid = gpu_check_rnd_floats(n);
		void *hwork = specd_malloc_array(1, kern_sample_work_bytes(SAMPLE_ROWS, n));
		if (!hwork) {
			fprintf(stderr, "specd-gpu-check: out of memory\n");
			exit(EXIT_USAGE);
		}
		sample_rows_fill(x, SAMPLE_ROWS, n);
		float *dx = gpu_check_dev_floats(gpu, x, cells);
		void *dwork = gpu_check_dev_from(gpu, NULL, kern_sample_work_bytes(SAMPLE_ROWS, n));
		for (size_t i = 0; i < sizeof(sample_settings) / sizeof(sample_settings[0]); i++)
			check_sample_setting(cpu, gpu, &sample_settings[i], x, dx, n, dwork, hwork,
					     probs, resid, hx);
		kern_free(gpu, dx), kern_free(gpu, dwork);
		specd_free(x), specd_free(probs), specd_free(hx), specd_free(resid), specd_free(hwork);
	}
	return failures ? EXIT_FAIL : 0;
}

/* ---- models ---- */

struct run {
	struct model *m;
	uint32_t vocab;
	float *logits; /* (max_batch, vocab) host */
	uint32_t *ids; /* (max_batch) */
	struct specd_error err;
};

static int open_model(const char *path, struct kern_ctx *k, uint32_t n_ctx, struct run *r)
{
	struct model_config cfg = {.n_slots = 1, .n_ctx = n_ctx, .max_batch = 64, .kern = k};
	memset(r, 0, sizeof(*r));
	double t0 = specd_now();
	if (model_load(path, &cfg, &r->m, &r->err) != SPECD_OK) {
		printf("load %s on %s: %s FAIL\n", path, kern_name(k), r->err.msg);
		return -1;
	}
	r->vocab = model_hparams(r->m)->n_vocab;
	r->logits = specd_malloc_array((size_t)64 * r->vocab, sizeof(float));
	r->ids = specd_malloc_array(64, sizeof(uint32_t));
	if (!r->logits || !r->ids) {
		printf("load: out of memory\n");
		return -1;
	}
	printf("load %s on %s: %.2f s\n", path, kern_name(k), specd_now() - t0);
	return 0;
}

static void close_model(struct run *r)
{
	model_destroy(r->m);
	specd_free(r->logits);
	specd_free(r->ids);
}

/* One causal forward of toks at slot 0 from position pos0, logits for the last n_out
 * tokens (all when n_out == n), then their argmax into r->ids. */
static enum specd_status step(struct run *r, const uint32_t *toks, uint32_t n, uint32_t pos0,
			      uint32_t n_out)
{
	uint32_t slots[64] = {0}, pos[64], out_idx[64];
	for (uint32_t i = 0; i < n; i++)
		pos[i] = pos0 + i;
	for (uint32_t i = 0; i < n_out; i++)
		out_idx[i] = n - n_out + i;
	struct model_batch b = {
		.n_tokens = n, .tokens = toks, .slots = slots, .pos = pos,
		.n_out = n_out, .out_idx = out_idx, .logits = r->logits,
	};
	enum specd_status st = model_forward(r->m, &b, &r->err);
	if (st == SPECD_OK)
		st = model_shard_argmax(r->m, r->logits, n_out, r->ids, &r->err);
	return st;
}

static void make_prompt(uint32_t *p, uint32_t n, uint32_t vocab)
{
	p[0] = 1; /* BOS of the SentencePiece vocabularies */
	for (uint32_t i = 1; i < n; i++)
		p[i] = (uint32_t)((i * 7919u + 13u) % vocab);
}

/* Greedy: prefill, then n tokens one at a time; logits of each step kept in steps. */
static enum specd_status greedy(struct run *r, const uint32_t *prompt, uint32_t np, uint32_t n,
				uint32_t *out, float *steps)
{
	enum specd_status st;
	if ((st = kv_truncate(model_kv(r->m), 0, 0)) || (st = step(r, prompt, np, 0, 1)))
		return st;
	for (uint32_t i = 0; i < n; i++) {
		out[i] = r->ids[0];
		if (steps)
			memcpy(steps + (size_t)i * r->vocab, r->logits, r->vocab * sizeof(float));
		if (i + 1 < n && (st = step(r, &out[i], 1, np + i, 1)))
			return st;
	}
	return SPECD_OK;
}

/* The gap between the two largest logits: a token can differ across backends only
 * where it is within their rounding differences. */
static float top2_margin(const float *x, uint32_t n)
{
	float a = -INFINITY, b = -INFINITY;
	for (uint32_t i = 0; i < n; i++) {
		if (x[i] > a)
			b = a, a = x[i];
		else if (x[i] > b)
			b = x[i];
	}
	return a - b;
}

/* Speculative greedy with a free drafter that proposes the reference continuation,
 * with each drafted token wrong where `wrong` says: the output must be ref exactly. */
static enum specd_status spec_decode(struct run *r, const uint32_t *prompt, uint32_t np,
				     const uint32_t *ref, uint32_t n, uint32_t K, double accept,
				     uint32_t *out, uint32_t *steps_out)
{
	enum specd_status st;
	uint32_t steps = 0, have = 0, toks[64];
	uint64_t seed = 12345;
	if ((st = kv_truncate(model_kv(r->m), 0, 0)) || (st = step(r, prompt, np, 0, 1)))
		return st;
	out[have++] = r->ids[0];
	while (have < n) {
		uint32_t k = K < n - have ? K : n - have;
		toks[0] = out[have - 1];
		for (uint32_t j = 0; j < k; j++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			bool bad = (double)(seed >> 11) / 9007199254740992.0 >= accept;
			toks[1 + j] = bad ? (ref[have + j] + 1) % r->vocab : ref[have + j];
		}
		uint32_t base = np + have - 1;
		if ((st = step(r, toks, k + 1, base, k + 1)))
			return st;
		uint32_t acc = 0;
		while (acc < k && r->ids[acc] == toks[1 + acc])
			acc++;
		for (uint32_t j = 0; j < acc && have < n; j++)
			out[have++] = toks[1 + j];
		if (have < n)
			out[have++] = r->ids[acc];
		/* Keep the rows of the last token and the accepted drafts. */
		if ((st = kv_truncate(model_kv(r->m), 0, base + 1 + acc)))
			return st;
		steps++;
	}
	*steps_out = steps;
	return SPECD_OK;
}

static int run_greedy(struct kern_ctx *cpu, struct kern_ctx *gpu, const char *path, uint32_t n)
{
	enum { NP = 8 };
	struct run rc, rg;
	if (open_model(path, cpu, 256, &rc) || open_model(path, gpu, 256, &rg))
		return EXIT_USAGE;
	uint32_t V = rg.vocab, prompt[NP];
	if (n + NP > 64)
		n = 64 - NP;
	make_prompt(prompt, NP, V);
	uint32_t *tc = specd_calloc(n, sizeof(uint32_t)), *tg = specd_calloc(n, sizeof(uint32_t));
	uint32_t *ts = specd_calloc(n, sizeof(uint32_t));
	float *lc = specd_malloc_array((size_t)n * V, sizeof(float));
	float *lg = specd_malloc_array((size_t)n * V, sizeof(float));
	enum specd_status st;
	double t0 = specd_now();
	if ((st = greedy(&rc, prompt, NP, n, tc, lc)) != SPECD_OK) {
		printf("greedy cpu: %s FAIL\n", rc.err.msg);
		return EXIT_FAIL;
	}
	double t1 = specd_now();
	if ((st = greedy(&rg, prompt, NP, n, tg, lg)) != SPECD_OK) {
		printf("greedy cuda: %s FAIL\n", rg.err.msg);
		return EXIT_FAIL;
	}
	double t2 = specd_now();
	uint32_t first = n;
	for (uint32_t i = 0; i < n && first == n; i++)
		if (tc[i] != tg[i])
			first = i;
	uint32_t cmp = first < n ? first + 1 : n; /* logits agree up to the first split */
	gpu_check_compare("greedy logits cuda vs cpu", lc, lg, (size_t)cmp * V, 1e-3);
	printf("greedy tokens: %u of %u equal (cpu %.1f tok/s, cuda %.1f tok/s)\n",
	       first, n, n / (t1 - t0), n / (t2 - t1));
	if (first < n) {
		float margin = top2_margin(lc + (size_t)first * V, V);
		/* Allowed only where the CPU's top two logits are within rounding. */
		bool ok = margin < 1e-3f * (1.0f + fabsf(lc[(size_t)first * V + tc[first]]));
		printf("greedy first difference at %u: cpu %u cuda %u, cpu top-2 margin %.3e %s\n",
		       first, tc[first], tg[first], (double)margin, ok ? "ok (within tolerance)" : "FAIL");
		if (!ok)
			failures++;
	}
	printf("greedy cpu:  ");
	for (uint32_t i = 0; i < n; i++)
		printf(" %u", tc[i]);
	printf("\ngreedy cuda: ");
	for (uint32_t i = 0; i < n; i++)
		printf(" %u", tg[i]);
	printf("\n");

	/* Batch invariance of the whole forward on CUDA: the prompt and the output as one
	 * batch must give, at every position, the logits of the step-by-step decode. */
	uint32_t all[64];
	memcpy(all, prompt, sizeof(prompt));
	memcpy(all + NP, tg, (n - 1) * sizeof(uint32_t));
	if ((st = kv_truncate(model_kv(rg.m), 0, 0)) == SPECD_OK)
		st = step(&rg, all, NP + n - 1, 0, n);
	if (st != SPECD_OK) {
		printf("batch forward: %s FAIL\n", rg.err.msg);
		failures++;
	} else {
		gpu_check_expect(gpu_check_bitwise(rg.logits, lg, (size_t)n * V), "inv",
				 "forward cuda", "one batch == token by token (bitwise)");
	}
	/* Speculative verification on CUDA gives the plain greedy output exactly. */
	for (uint32_t K = 2; K <= 8; K *= 2) {
		uint32_t steps = 0;
		st = spec_decode(&rg, prompt, NP, tg, n, K, 0.7, ts, &steps);
		char what[64];
		snprintf(what, sizeof(what), "spec K=%u a=0.7 (%u steps)", K, steps);
		if (st != SPECD_OK) {
			printf("spec: %s FAIL\n", rg.err.msg);
			failures++;
		} else {
			gpu_check_expect(memcmp(ts, tg, n * sizeof(uint32_t)) == 0, "spec", what,
					 "output == plain greedy");
		}
	}
	specd_free(tc), specd_free(tg), specd_free(ts), specd_free(lc), specd_free(lg);
	close_model(&rc);
	close_model(&rg);
	return failures ? EXIT_FAIL : 0;
}

double gpu_check_step_bytes(const struct model *m)
{
	const struct model_hparams *hp = model_hparams(m);
	double total = (double)model_shard(m)->weight_bytes;
	if (!hp->tied_output)
		total -= (double)kern_dtype_row_bytes(hp->wtype, hp->dim) * hp->n_vocab;
	return total;
}

/* Seconds per call of kern_matmul on k: rows of x times the n_out x n_in matrix dw. */
static double time_matmul(struct kern_ctx *k, float *dy, const float *dx, size_t rows,
			  const struct kern_mat *dw)
{
	enum { REPS = 20 };
	double t0 = 0;
	for (int rep = 0; rep <= REPS; rep++) {
		if (rep == 1 && kern_sync(k) == SPECD_OK)
			t0 = specd_now();
		if (kern_matmul(k, dy, dw->n_out, dx, dw->n_in, rows, dw, NULL) != SPECD_OK)
			return -1;
	}
	if (kern_sync(k) != SPECD_OK)
		return -1;
	return (specd_now() - t0) / REPS;
}

/* The matmul alone on a bf16 matrix of the model's FFN shape (no launches between):
 * the batched kernel's bandwidth and how its cost grows with the rows, against the
 * reference kernel (ref may be NULL). */
static void bench_matmul(struct kern_ctx *gpu, struct kern_ctx *ref, size_t n_in, size_t n_out)
{
	static const size_t rows_list[] = {1, 2, 3, 5, 9, 16, 17};
	enum { MAX_ROWS = 17 };
	size_t rb = kern_dtype_row_bytes(KERN_BF16, n_in);
	unsigned char *wq = specd_malloc_array(n_out, rb);
	float *row = gpu_check_rnd_floats(n_in), *x = gpu_check_rnd_floats(MAX_ROWS * n_in);
	if (!wq) {
		printf("bench matmul: out of memory FAIL\n");
		failures++;
		specd_free(row), specd_free(x);
		return;
	}
	for (size_t o = 0; o < n_out; o++) {
		row[o % n_in] = rnd();
		kern_quant_row(KERN_BF16, row, wq + o * rb, n_in);
	}
	struct kern_mat w = kern_mat_packed(KERN_BF16, n_in, n_out, wq), dw = {0};
	if (kern_upload_mat(gpu, &w, &dw) != SPECD_OK) {
		printf("bench matmul: upload FAIL\n");
		failures++;
		specd_free(wq), specd_free(row), specd_free(x);
		return;
	}
	float *dx = gpu_check_dev_floats(gpu, x, MAX_ROWS * n_in);
	float *dy = gpu_check_dev_floats(gpu, NULL, MAX_ROWS * n_out);
	float *dyr = ref ? gpu_check_dev_floats(ref, NULL, MAX_ROWS * n_out) : NULL;
	double bytes = (double)n_out * rb, t_one = 0;
	for (size_t i = 0; i < sizeof(rows_list) / sizeof(rows_list[0]); i++) {
		size_t rows = rows_list[i];
		double t = time_matmul(gpu, dy, dx, rows, &dw);
		double tr = ref ? time_matmul(ref, dyr, dx, rows, &dw) : 0;
		if (t <= 0) {
			printf("bench matmul: call FAIL\n");
			failures++;
			break;
		}
		if (rows == 1)
			t_one = t;
		char refs[64] = "";
		if (tr > 0)
			snprintf(refs, sizeof(refs), "; reference kernel %.3f ms (%.2fx)", tr * 1e3,
				 tr / t);
		printf("bench matmul bf16 %zux%zu rows %2zu: %.3f ms, %.2f TB/s (%.1f%% of HBM), "
		       "%.2fx one row%s\n", n_out, n_in, rows, t * 1e3, bytes / t / 1e12,
		       100.0 * bytes / t / HBM_BYTES_PER_S, t / t_one, refs);
	}
	kern_free(gpu, (void *)(uintptr_t)dw.data), kern_free(gpu, dx), kern_free(gpu, dy);
	if (ref)
		kern_free(ref, dyr);
	specd_free(wq), specd_free(row), specd_free(x);
}

/* `reps` times the same step: the cache cut back to len rows, then n tokens there. */
static enum specd_status steps_at(struct run *r, const uint32_t *toks, uint32_t n, uint32_t len,
				  uint32_t n_out, uint32_t reps)
{
	enum specd_status st = SPECD_OK;
	for (uint32_t rep = 0; rep < reps && st == SPECD_OK; rep++) {
		st = kv_truncate(model_kv(r->m), 0, len);
		if (st == SPECD_OK)
			st = step(r, toks, n, len, n_out);
	}
	return st;
}

/* steps_at timed: *seconds a step, over `reps` after one untimed. */
static enum specd_status time_steps_at(struct run *r, const uint32_t *toks, uint32_t n,
				       uint32_t len, uint32_t n_out, uint32_t reps,
				       double *seconds)
{
	enum specd_status st = steps_at(r, toks, n, len, n_out, 1);
	double s0 = specd_now();
	if (st == SPECD_OK)
		st = steps_at(r, toks, n, len, n_out, reps);
	*seconds = (specd_now() - s0) / reps;
	return st;
}

/* `reps` decode steps of one token after len cache rows, profiled (the timed runs are
 * not: the profiler's events cost the host about a microsecond an op). */
static enum specd_status profile_steps(struct run *r, struct kern_ctx *k, const uint32_t *fill,
				       uint32_t len, uint32_t reps, struct kern_profile *p)
{
	enum specd_status st = kern_prof_start(k);
	if (st == SPECD_OK)
		st = steps_at(r, fill, 1, len, 1, reps);
	if (st == SPECD_OK)
		st = kern_prof_read(k, p);
	kern_prof_stop(k);
	return st;
}

/* One token's decode step with the cache holding 128, 512 and 1000 rows (the model is
 * opened with 1024): the attention kernel reads every visible row with one block a
 * head, so its share of the step grows with the context; the ratios say how much a
 * split attention could win back. */
static enum specd_status bench_context(struct run *r, struct kern_ctx *k, const uint32_t *ref,
				       uint32_t n)
{
	enum { REPS = 10, CHUNK = 64 };
	static const uint32_t depths[] = {128, 512, 1000};
	uint32_t fill[CHUNK], len = 0;
	double t_first = 0;
	enum specd_status st = kv_truncate(model_kv(r->m), 0, 0);
	for (uint32_t i = 0; i < CHUNK; i++)
		fill[i] = ref[i % n];
	for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]) && st == SPECD_OK; d++) {
		while (len < depths[d] && st == SPECD_OK) {
			uint32_t c = depths[d] - len < CHUNK ? depths[d] - len : CHUNK;
			st = step(r, fill, c, len, 1);
			len += c;
		}
		double t = 0;
		if (st == SPECD_OK)
			st = time_steps_at(r, fill, 1, len, 1, REPS, &t);
		if (st == SPECD_OK) /* the timed token out again: the next fill starts at len */
			st = kv_truncate(model_kv(r->m), 0, len);
		if (st != SPECD_OK)
			break;
		t_first = d ? t_first : t;
		struct kern_profile p;
		if ((st = profile_steps(r, k, fill, len, REPS, &p)) != SPECD_OK ||
		    (st = kv_truncate(model_kv(r->m), 0, len)) != SPECD_OK)
			break;
		double busy = 0;
		for (int op = 0; op < KERN_OP_COUNT; op++)
			busy += p.busy[op];
		printf("bench decode at context %4u: %.3f ms/step, %.2fx context %u; attention "
		       "%.3f ms/step, %.1f%% of the ops' busy time\n", len, t * 1e3, t / t_first,
		       depths[0], p.busy[KERN_OP_ATTENTION] / REPS * 1e3,
		       busy > 0 ? 100.0 * p.busy[KERN_OP_ATTENTION] / busy : 0.0);
		if (d + 1 == sizeof(depths) / sizeof(depths[0])) {
			char what[32];
			snprintf(what, sizeof(what), "context %u", len);
			kern_prof_print(stdout, what, &p, REPS);
		}
	}
	return st;
}

/* gpu wrapped in the op profiler, off but for the command's own profiled runs; NULL
 * (gpu freed, the failure printed) when there is no memory for it. */
static struct kern_ctx *with_profiler(struct kern_ctx *gpu)
{
	struct kern_ctx *p = NULL;
	if (kern_prof_create(gpu, &p) != SPECD_OK)
		printf("profiler: out of memory FAIL\n");
	return p;
}

static int run_bench(struct kern_ctx *gpu, struct kern_ctx *ref_kern, const char *path,
		     uint32_t n)
{
	enum { NP = 16 };
	struct run r;
	if (open_model(path, gpu, 1024, &r))
		return EXIT_USAGE;
	const struct model_hparams *hp = model_hparams(r.m);
	uint32_t prompt[NP], *ref = specd_calloc(n, sizeof(uint32_t));
	uint32_t *out = specd_calloc(n, sizeof(uint32_t));
	make_prompt(prompt, NP, r.vocab);
	double bytes = gpu_check_step_bytes(r.m);
	printf("bench model: %u layers, dim %u, ffn %u, heads %u/%u, vocab %u, %s, %.2f GB of "
	       "weights read per step\n", hp->n_layers, hp->dim, hp->ffn_dim, hp->n_heads,
	       hp->n_kv_heads, hp->n_vocab, kern_dtype_name(hp->wtype), bytes / 1e9);
	bench_matmul(gpu, ref_kern, hp->dim, hp->ffn_dim);
	enum specd_status st = greedy(&r, prompt, NP, 8, ref, NULL); /* warm-up */
	double t0 = specd_now();
	if (st == SPECD_OK)
		st = greedy(&r, prompt, NP, n, ref, NULL);
	double t_none = specd_now() - t0;
	if (st != SPECD_OK) {
		printf("bench: %s FAIL\n", r.err.msg);
		close_model(&r);
		return EXIT_FAIL;
	}
	double per = t_none / n; /* includes one prefill of NP tokens */
	printf("bench none: %u tokens in %.3f s: %.1f tok/s, %.3f ms/token, %.1f%% of %.1f TB/s HBM\n",
	       n, t_none, n / t_none, per * 1e3, 100.0 * bytes / per / HBM_BYTES_PER_S,
	       HBM_BYTES_PER_S / 1e12);
	struct kern_profile prof;
	uint32_t at = kv_len(model_kv(r.m), 0);
	if ((st = profile_steps(&r, gpu, ref, at, 16, &prof)) == SPECD_OK)
		kern_prof_print(stdout, "decode", &prof, 16);

	/* One verification step of K+1 tokens against the same weights read. */
	uint32_t toks[64];
	uint32_t base = kv_len(model_kv(r.m), 0);
	double t_one = 0;
	for (uint32_t K = 0; K <= 16; K = K ? K * 2 : 1) {
		enum { REPS = 10 };
		for (uint32_t i = 0; i <= K; i++)
			toks[i] = ref[i % n];
		if (st != SPECD_OK || base + K + 1 > 1024)
			break;
		double t = 0;
		if ((st = time_steps_at(&r, toks, K + 1, base, K + 1, REPS, &t)) != SPECD_OK)
			break;
		if (K == 0)
			t_one = t;
		printf("bench verify K=%-2u (%2u tokens): %.3f ms/step, %.2fx one token\n", K, K + 1,
		       t * 1e3, t / t_one);
	}
	if (st == SPECD_OK)
		st = bench_context(&r, gpu, ref, n);
	/* Speculative decoding with a drafter that costs nothing (as ngram nearly does),
	 * its acceptance set; output checked against plain greedy. */
	for (uint32_t K = 2; K <= 8 && st == SPECD_OK; K *= 2) {
		for (int ai = 0; ai < 2 && st == SPECD_OK; ai++) {
			double a = ai ? 0.6 : 1.0;
			uint32_t steps = 0;
			t0 = specd_now();
			st = spec_decode(&r, prompt, NP, ref, n, K, a, out, &steps);
			double t = specd_now() - t0;
			if (st != SPECD_OK)
				break;
			bool same = memcmp(out, ref, n * sizeof(uint32_t)) == 0;
			printf("bench spec K=%u accept=%.1f: %.1f tok/s (%.2fx none), %.2f tokens/step, "
			       "output == greedy: %s\n", K, a, n / t, t_none / t, (double)n / steps,
			       same ? "yes" : "NO (FAIL)");
			if (!same)
				failures++;
		}
	}
	if (st != SPECD_OK) {
		printf("bench: %s FAIL\n", r.err.msg);
		failures++;
	}
	specd_free(ref), specd_free(out);
	close_model(&r);
	return failures ? EXIT_FAIL : 0;
}

static void usage(FILE *to)
{
	fprintf(to, "usage: specd-gpu-check ops\n"
		    "       specd-gpu-check sample\n"
		    "       specd-gpu-check greedy MODEL [N]   (N tokens, default 32)\n"
		    "       specd-gpu-check bench MODEL [N]    (N tokens, default 64)\n"
		    "       specd-gpu-check methods MODEL [--draft GGUF] [--heads SAFETENSORS]\n"
		    "                       [--eagle DIR] [-n N] [-k K,K,...]\n"
		    "Exit status: 0 passed, 1 a check failed, 2 usage or load error, 3 no CUDA device.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "ops") != 0 && strcmp(argv[1], "sample") != 0 && argc < 3)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	log_init_from_env();
	struct specd_error err;
	struct kern_ctx *gpu = NULL, *cpu = NULL;
	specd_error_clear(&err);
	/* SPECD_GPU_CHECK_CPU=1: a second CPU backend stands in for CUDA, to try this
	 * program where there is no GPU (its checks then compare the CPU with itself);
	 * SPECD_GPU_CHECK_CPU=emulated: the emulated device does (kern_emu_create: the
	 * CPU's results through the device code path, uploads and downloads).
	 * SPECD_GPU_CHECK_REFERENCE=1: the CUDA backend runs the reference matmul kernel
	 * (bench figures before/after the batched kernel). SPECD_GPU_CHECK_DEQUANT=1: it
	 * dequantises quantised weights to f32 at load (figures before/after reading the
	 * blocks as stored). */
	const char *stand_in = getenv("SPECD_GPU_CHECK_CPU");
	const char *use_ref = getenv("SPECD_GPU_CHECK_REFERENCE");
	const char *dequant = getenv("SPECD_GPU_CHECK_DEQUANT");
	bool emulated = stand_in && strcmp(stand_in, "emulated") == 0;
	bool on_cpu = emulated || (stand_in && strcmp(stand_in, "1") == 0);
	struct kern_cuda_config gc = {.matmul_reference = use_ref && strcmp(use_ref, "1") == 0,
				      .dequant_at_load = dequant && strcmp(dequant, "1") == 0};
	struct kern_emu_config ec = {{0}, 0};
	enum specd_status st = emulated ? kern_emu_create(&ec, &gpu)
			       : on_cpu ? kern_cpu_create(NULL, &gpu)
			       : kern_cuda_create(&gc, &gpu, &err);
	if (st != SPECD_OK) {
		printf("%s\n", err.msg);
		return st == SPECD_UNSUPPORTED ? EXIT_NO_DEVICE : EXIT_FAIL;
	}
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct kern_cpu_config cc = {.n_threads = ncpu > 0 ? (unsigned)ncpu : 1};
	if (kern_cpu_create(&cc, &cpu) != SPECD_OK) {
		printf("cannot create the CPU backend\n");
		kern_destroy(gpu);
		return EXIT_FAIL;
	}
	printf("backends: %s%s%s, cpu (%s, %u threads)\n", kern_name(gpu),
	       gc.matmul_reference ? " (reference matmul)" : "",
	       gc.dequant_at_load ? " (dequantised at load)" : "", kern_cpu_isa_of(cpu),
	       cc.n_threads);
	int rc = 0;
	unsigned long n = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
	if (strcmp(argv[1], "ops") == 0) {
		/* The reference kernel on a second backend, quantised weights dequantised at
		 * load: bitwise the batched one's results on the blocks as stored. None beside
		 * the emulated device: a second one would not share its memory. */
		struct kern_cuda_config rc_cfg = {.matmul_reference = true, .dequant_at_load = true};
		struct kern_cuda_config small_cfg = gc;
		struct kern_ctx *ref = NULL, *small = NULL;
		small_cfg.stage_bytes = GPU_CHECK_SMALL_STAGE;
		st = emulated ? SPECD_OK
		     : on_cpu ? kern_cpu_create(NULL, &ref) : kern_cuda_create(&rc_cfg, &ref, &err);
		if (st == SPECD_OK && !on_cpu)
			st = kern_cuda_create(&small_cfg, &small, &err);
		if (st != SPECD_OK) {
			printf("second backend: %s FAIL\n", err.msg);
			failures++;
		}
		gpu_check_ops(cpu, gpu, ref, small);
		kern_destroy(small);
		kern_destroy(ref);
		rc = failures ? EXIT_FAIL : 0;
	} else if (strcmp(argv[1], "sample") == 0) {
		rc = run_sample(cpu, gpu);
	} else if (strcmp(argv[1], "greedy") == 0) {
		rc = run_greedy(cpu, gpu, argv[2], n ? (uint32_t)n : 32);
	} else if (strcmp(argv[1], "methods") == 0) {
		rc = (gpu = with_profiler(gpu)) ? gpu_check_methods(gpu, argc, argv) : EXIT_FAIL;
	} else if (strcmp(argv[1], "bench") == 0) {
		/* The reference kernel for the matmul figures, unless gpu already runs it. */
		struct kern_cuda_config rc_cfg = {.matmul_reference = true};
		struct kern_ctx *ref = NULL;
		if (!on_cpu && !gc.matmul_reference &&
		    kern_cuda_create(&rc_cfg, &ref, &err) != SPECD_OK)
			printf("reference backend: %s (matmul figures without it)\n", err.msg);
		gpu = with_profiler(gpu);
		rc = gpu ? run_bench(gpu, ref, argv[2], n ? (uint32_t)n : 64) : EXIT_FAIL;
		kern_destroy(ref);
	} else {
		usage(stderr);
		rc = EXIT_USAGE;
	}
	printf("result %s: %s (%d failed checks)\n", argv[1], rc == 0 ? "PASS" : "FAIL", failures);
	kern_destroy(cpu);
	kern_destroy(gpu);
	return rc;
}
