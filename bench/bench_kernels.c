/* specd-bench-kernels: the CPU backend's speed where speculative decoding needs it.
 * Measures this machine's read bandwidth (a STREAM-style sum over a large buffer with
 * the same number of threads), then on a model: plain-decode tokens/s against the
 * bandwidth bound (weight bytes per token / bandwidth), and the cost of one forward
 * over n = 1..9 tokens relative to n = 1. Prints Markdown; docs/performance.md. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/shard.h"

struct opts {
	const char *model;
	unsigned threads;
	const char *isa;
	enum kern_act act; /* quantised matmuls' activations; f32, as the tables were made */
	size_t bw_mb;     /* bandwidth buffer, MiB */
	int reps;         /* repetitions of each measurement */
	int decode;       /* decode steps per repetition */
	int curve;        /* largest n of the cost curve */
	int prefix;       /* context length before the measurements */
	int profile;      /* decode steps profiled op by op after the timings; 0: none */
	bool huge;        /* weights copied into huge pages (model_config.huge_pages_max) */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- read bandwidth ---- */

struct bw_share {
	const uint64_t *p;
	size_t n;
	uint64_t sum;
};

static void *bw_sum(void *arg)
{
	struct bw_share *s = arg;
	uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
	size_t i = 0;
	for (; i + 4 <= s->n; i += 4) {
		a0 += s->p[i];
		a1 += s->p[i + 1];
		a2 += s->p[i + 2];
		a3 += s->p[i + 3];
	}
	for (; i < s->n; i++)
		a0 += s->p[i];
	s->sum = a0 + a1 + a2 + a3;
	return NULL;
}

/* Bytes per second read by `threads` threads each summing its slice; the median of reps. */
/* The read rate over an mb MiB buffer in the pages the weights are in (huge: the
 * 2 MiB pages of --huge-pages on), so that the bound compares like with like. */
static double bandwidth(size_t mb, unsigned threads, int reps, bool huge)
{
	size_t words = mb * 1024 * 1024 / sizeof(uint64_t), bytes = words * sizeof(uint64_t);
	uint64_t *buf = huge ? specd_huge_alloc(bytes) : malloc(bytes);
	if (!buf)
		return 0;
	for (size_t i = 0; i < words; i++)
		buf[i] = i;
	double *t = malloc((size_t)reps * sizeof(double));
	struct bw_share sh[64];
	pthread_t th[64];
	if (threads > 64)
		threads = 64;
	uint64_t check = 0;
	for (int r = 0; r < reps; r++) {
		double t0 = specd_now();
		for (unsigned k = 0; k < threads; k++) {
			sh[k].p = buf + words * k / threads;
			sh[k].n = words * (k + 1) / threads - words * k / threads;
			pthread_create(&th[k], NULL, bw_sum, &sh[k]);
		}
		for (unsigned k = 0; k < threads; k++) {
			pthread_join(th[k], NULL);
			check += sh[k].sum;
		}
		t[r] = specd_now() - t0;
	}
	double med = median(t, reps);
	free(t);
	if (huge)
		specd_huge_free(buf, bytes);
	else
		free(buf);
	if (check == 1) /* keeps the sums alive */
		fprintf(stderr, "?\n");
	return (double)(words * sizeof(uint64_t)) / med;
}

/* ---- model timings ---- */

/* Bytes of weights one token's forward reads: every tensor but the embedding table
 * (one row of it is read), which is also the LM head when there is no output.weight. */
static uint64_t weight_bytes(const struct gguf_file *f)
{
	uint64_t total = 0;
	bool tied = gguf_find_tensor(f, "output.weight") == NULL;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		if (!tied && strcmp(t->name, "token_embd.weight") == 0)
			continue;
		total += t->nbytes;
	}
	return total;
}

static uint32_t argmax(const float *x, uint32_t n)
{
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

/* Forward of n causal tokens at the slot's end, logits for all of them. */
static int forward(struct model *m, uint32_t n, const uint32_t *toks, float *logits)
{
	uint32_t slots[64] = {0}, pos[64], idx[64];
	uint32_t len = kv_len(model_kv(m), 0);
	for (uint32_t i = 0; i < n; i++) {
		pos[i] = len + i;
		idx[i] = i;
	}
	struct model_batch b = {
		.n_tokens = n, .tokens = toks, .slots = slots, .pos = pos,
		.n_out = n, .out_idx = idx, .logits = logits,
	};
	struct specd_error err;
	specd_error_clear(&err);
	if (model_forward(m, &b, &err) != SPECD_OK) {
		fprintf(stderr, "specd-bench-kernels: forward: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int bench_model(const struct opts *o, double bw)
{
	struct kern_cpu_config kc = {.n_threads = o->threads, .isa = o->isa, .act = o->act};
	struct kern_ctx *cpu = NULL, *kern = NULL;
	/* The model runs on the op profiler over the CPU backend: off, but for --profile. */
	if (kern_cpu_create(&kc, &cpu) != SPECD_OK || kern_prof_create(cpu, &kern) != SPECD_OK) {
		fprintf(stderr, "specd-bench-kernels: cannot create the CPU backend\n");
		return 1;
	}
	struct model_config mc = {
		.n_slots = 1, .n_ctx = (uint32_t)(o->prefix + o->decode + o->profile + o->curve + 8),
		.max_batch = 16, .kern = kern, .huge_pages_max = o->huge ? SIZE_MAX : 0,
	};
	struct model *m = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	if (model_load(o->model, &mc, &m, &err) != SPECD_OK) {
		fprintf(stderr, "specd-bench-kernels: %s\n", err.msg);
		kern_destroy(kern);
		return 1;
	}
	const struct model_hparams *hp = model_hparams(m);
	uint32_t V = hp->n_vocab;
	float *logits = malloc((size_t)V * 16 * sizeof(float));
	uint64_t bytes = weight_bytes(model_gguf(m));
	int reps = o->reps, steps = o->decode;
	double *tok_t = malloc((size_t)(reps * steps) * sizeof(double));
	double *curve = calloc((size_t)o->curve + 1, sizeof(double));
	double *curve_t = malloc((size_t)(o->curve + 1) * (size_t)reps * sizeof(double));
	int rc = 1;
	uint32_t toks[16];
	for (int i = 0; i < 16; i++)
		toks[i] = (uint32_t)(1 + (i * 37) % (V - 1));

	/* The prefix, which also pages the weights in. */
	for (int i = 0; i < o->prefix; i++)
		if (forward(m, 1, toks + i % 16, logits))
			goto out;
	uint32_t base = kv_len(model_kv(m), 0);

	/* Plain decode: one token at a time, greedy, from the prefix; every step timed. */
	for (int r = 0; r < reps; r++) {
		uint32_t tok = toks[0];
		for (int s = 0; s < steps; s++) {
			double t0 = specd_now();
			if (forward(m, 1, &tok, logits))
				goto out;
			tok = argmax(logits, V);
			tok_t[r * steps + s] = specd_now() - t0;
		}
		kv_truncate(model_kv(m), 0, base);
	}
	double step = median(tok_t, reps * steps);

	/* Cost of n tokens: forward at the prefix's end, then roll back. The n values
	 * take turns within each repetition, so a change in the machine's load over the
	 * run weighs on every n alike. */
	for (int r = 0; r < reps; r++) {
		for (int n = 1; n <= o->curve; n++) {
			double t0 = specd_now();
			if (forward(m, (uint32_t)n, toks, logits))
				goto out;
			curve_t[(size_t)n * (size_t)reps + (size_t)r] = specd_now() - t0;
			kv_truncate(model_kv(m), 0, base);
		}
	}
	for (int n = 1; n <= o->curve; n++)
		curve[n] = median(curve_t + (size_t)n * (size_t)reps, reps);

	double tps = 1.0 / step, bound = bw / (double)bytes;
	printf("| %s | %s | %u | %s | %s | %s | %.1f | %.2f | %.1f | %.1f | %.0f%% |\n", o->model,
	       kern_dtype_name(hp->wtype), o->threads, kern_cpu_isa_of(cpu), kern_cpu_act_of(cpu),
	       model_huge_bytes(m) ? "huge" : "file", (double)bytes / 1e6, bw / 1e9, tps, bound, 100.0 * tps / bound);
	printf("\ncost of a forward over n tokens relative to n = 1 (n = 1 takes %.2f ms):\n\n|",
	       curve[1] * 1e3);
	for (int n = 1; n <= o->curve; n++)
		printf(" n=%d |", n);
	printf("\n|");
	for (int n = 1; n <= o->curve; n++)
		printf("---|");
	printf("\n|");
	for (int n = 1; n <= o->curve; n++)
		printf(" %.2f |", curve[n] / curve[1]);
	printf("\n");
	if (o->profile) {
		/* Greedy decode steps again, each op timed: where a token's time goes. */
		struct kern_profile p;
		uint32_t tok = toks[0];
		printf("\n");
		kern_prof_start(kern);
		for (int s = 0; s < o->profile; s++) {
			if (forward(m, 1, &tok, logits))
				goto out;
			tok = argmax(logits, V);
		}
		kern_prof_read(kern, &p);
		kern_prof_stop(kern);
		kv_truncate(model_kv(m), 0, base);
		kern_prof_print(stdout, "decode", &p, (uint32_t)o->profile);
	}
	rc = 0;
out:
	free(tok_t);
	free(curve);
	free(curve_t);
	free(logits);
	model_destroy(m);
	kern_destroy(kern);
	return rc;
}

/* ---- matmul alone ---- */

/* Times one n_out x n_in matmul of each type over 1..curve rows (median of reps, the
 * weights 64 MiB or more in total so they come from memory, as in a forward). */
static int bench_matmul(const struct opts *o, size_t n_in, size_t n_out)
{
	static const enum kern_dtype types[] = {KERN_F32,  KERN_F16,  KERN_BF16, KERN_Q8_0,
						KERN_Q4_0, KERN_Q4_1, KERN_Q4_K, KERN_Q5_K,
						KERN_Q6_K};
	struct kern_cpu_config kc = {.n_threads = o->threads, .isa = o->isa, .act = o->act};
	struct kern_ctx *kern = NULL;
	if (kern_cpu_create(&kc, &kern) != SPECD_OK)
		return 1;
	float *x = malloc(16 * n_in * sizeof(float)), *y = malloc(16 * n_out * sizeof(float));
	float *row = malloc(n_in * sizeof(float));
	double *samp = malloc((size_t)o->reps * sizeof(double));
	for (size_t i = 0; i < 16 * n_in; i++)
		x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
	for (size_t i = 0; i < n_in; i++)
		row[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
	printf("matmul %zu x %zu, %u threads, %s, %s activations: ms per call by rows (and "
	       "relative to 1 row)\n\n", n_out, n_in, o->threads, kern_cpu_isa_of(kern),
	       kern_cpu_act_of(kern));
	printf("| type | GB/s at 1 row |");
	for (int n = 1; n <= o->curve; n++)
		printf(" %d |", n);
	printf("\n|---|---|");
	for (int n = 1; n <= o->curve; n++)
		printf("---|");
	printf("\n");
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		if (n_in % kern_dtype_block(types[ti]))
			continue; /* K-quants need n_in a multiple of 256 */
		size_t rb = kern_dtype_row_bytes(types[ti], n_in), bytes = rb * n_out;
		size_t copies = (64u << 20) / bytes + 1;
		unsigned char *w = malloc(copies * bytes);
		for (size_t c = 0; c < copies * n_out; c++)
			kern_quant_row(types[ti], row, w + c * rb, n_in);
		printf("| %s |", kern_dtype_name(types[ti]));
		double t1 = 0;
		for (int n = 1; n <= o->curve; n++) {
			for (int r = 0; r < o->reps; r++) {
				struct kern_mat m = kern_mat_packed(types[ti], n_in, n_out,
								    w + (size_t)r % copies * bytes);
				double t0 = specd_now();
				kern_matmul(kern, y, n_out, x, n_in, (size_t)n, &m, NULL);
				samp[r] = specd_now() - t0;
			}
			double t = median(samp, o->reps);
			if (n == 1) {
				t1 = t;
				printf(" %.1f | %.3f |", (double)bytes / t / 1e9, t * 1e3);
			} else {
				printf(" %.3f (%.2f) |", t * 1e3, t / t1);
			}
		}
		printf("\n");
		free(w);
	}
	free(x);
	free(y);
	free(row);
	free(samp);
	kern_destroy(kern);
	return 0;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: specd-bench-kernels [--model PATH] [--threads N] [--isa scalar|avx2|avx512]\n"
		"         [--activations f32|q8] [--bw-mb 512] [--reps 9] [--decode 16] [--curve 9]\n"
		"         [--prefix 32] [--matmul N_OUTxN_IN] [--profile STEPS] [--huge-pages off|on]\n"
		"Without --model, only the read bandwidth; --matmul times one matmul per type;\n"
		"--profile STEPS also decodes STEPS tokens with each op timed (kern_prof).\n"
		"--activations: how matmuls on quantised weights read activations (kern.h):\n"
		"f32 (the default, as docs/performance.md's tables were made) or q8.\n"
		"--huge-pages on: the weights copied into huge pages at load (target.huge_pages);\n"
		"off (the default, as the tables were made): read from the file's mapping.\n");
}

int main(int argc, char **argv)
{
	size_t mm_out = 0, mm_in = 0;
	struct opts o = {.threads = 1, .act = KERN_ACT_F32, .bw_mb = 512, .reps = 9, .decode = 16,
			 .curve = 9, .prefix = 32};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--model"))
			o.model = v;
		else if (!strcmp(a, "--threads"))
			o.threads = (unsigned)atoi(v);
		else if (!strcmp(a, "--isa"))
			o.isa = v;
		else if (!strcmp(a, "--activations")) {
			if (kern_act_parse(v, &o.act) != SPECD_OK) {
				fprintf(stderr, "specd-bench-kernels: --activations '%s': expected "
						"f32 or q8\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--huge-pages")) {
			if (strcmp(v, "on") && strcmp(v, "off")) {
				fprintf(stderr, "specd-bench-kernels: --huge-pages '%s': expected on "
						"or off\n", v);
				return 2;
			}
			o.huge = !strcmp(v, "on");
		} else if (!strcmp(a, "--bw-mb"))
			o.bw_mb = (size_t)atol(v);
		else if (!strcmp(a, "--reps"))
			o.reps = atoi(v);
		else if (!strcmp(a, "--decode"))
			o.decode = atoi(v);
		else if (!strcmp(a, "--curve"))
			o.curve = atoi(v);
		else if (!strcmp(a, "--matmul")) {
			if (sscanf(v, "%zux%zu", &mm_out, &mm_in) != 2 || !mm_out || !mm_in ||
			    mm_in % 32) {
				usage(stderr);
				return 2;
			}
		} else if (!strcmp(a, "--prefix"))
			o.prefix = atoi(v);
		else if (!strcmp(a, "--profile"))
			o.profile = atoi(v);
		else {
			usage(stderr);
			return 2;
		}
	}
	if (o.threads < 1 || o.reps < 1 || o.decode < 1 || o.curve < 1 || o.curve > 16 ||
	    o.prefix < 1 || o.bw_mb < 1 || o.profile < 0) {
		usage(stderr);
		return 2;
	}
	if (mm_out)
		return bench_matmul(&o, mm_in, mm_out);
	double bw = bandwidth(o.bw_mb, o.threads, 2 * o.reps + 1, o.huge);
	if (!o.model) {
		printf("read bandwidth, %u threads: %.2f GB/s\n", o.threads, bw / 1e9);
		return 0;
	}
	printf("| model | type | threads | isa | activations | pages | weight MB/token | read GB/s "
	       "| tokens/s | bound tokens/s | of bound |\n"
	       "|---|---|---|---|---|---|---|---|---|---|---|\n");
	return bench_model(&o, bw);
}
