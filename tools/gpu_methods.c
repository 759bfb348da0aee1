/* specd-gpu-check methods: the real engine (drafters/engine.h) with every drafting
 * method in one process on the backend under test: plain decoding, then each method
 * at each K, greedy, on one target. Every method's output must equal plain decoding's
 * token for token (speculation is lossless); the figures are tokens/s, tokens per
 * target forward, the speed-up over plain decoding measured in the same run, and the
 * share of HBM bandwidth the target's weight reads reach. Random-weight models say
 * what each method costs, not what it gains on real text: their acceptance is what
 * random weights give.
 *
 * Then sampling: plain decoding and each method at the largest K, with a temperature
 * and top-p, twice with one seed: as the engine runs it (each row's token drawn on
 * the device when the drafts are not samples, the logits rows left there) and with
 * the logits rows brought to the host verifier (an explicit draft_verify turns the
 * device path off). The two must give the same tokens; the ratio of their speeds is
 * what the device draws save.
 *
 * When the backend is wrapped in the op profiler (kern_prof_create), plain decoding
 * and each method at the largest K run once more with every op timed: where a target
 * step's time goes, the drafter's own ops included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "drafters/method.h"
#include "drafters/metrics.h"
#include "drafters/verify.h"
#include "gpu_check.h"
#include "kernels/kern.h"
#include "model/llama.h"
#include "model/sampler.h"

#define MAX_KS 8
#define PROMPT 96

struct methods_opts {
	const char *target, *draft, *heads, *eagle;
	uint32_t n;            /* tokens generated per run */
	uint32_t ks[MAX_KS];   /* K values tried per method */
	uint32_t n_ks;
};

/* The sampled runs' parameters: top-p makes the host transform sort, as it would for
 * a typical request. */
static const struct sampler_params k_sampled = {.temperature = 0.8f, .top_p = 0.95f,
						 .seed = 7};

/* One timed greedy job: output tokens, metrics and decode seconds (after prefill). */
struct methods_run {
	int32_t *out;
	uint32_t n_out;
	struct draft_metrics met;
	double decode_s;
};

/* A prompt that repeats itself, as real prompts quote their own text: the second half
 * restates the first, so prompt lookup has something to find. */
static void methods_prompt(int32_t *p, uint32_t vocab)
{
	p[0] = 1;
	for (uint32_t i = 1; i < PROMPT / 2; i++)
		p[i] = (int32_t)((i * 7919u + 13u) % vocab);
	for (uint32_t i = PROMPT / 2; i < PROMPT; i++)
		p[i] = p[i - PROMPT / 2 + 1];
}

static int parse_ks(const char *s, struct methods_opts *o)
{
	o->n_ks = 0;
	for (const char *c = s; *c;) {
		char *end;
		unsigned long k = strtoul(c, &end, 10);
		if (end == c || k < 1 || k > DRAFT_MAX_TOKENS || o->n_ks == MAX_KS)
			return -1;
		o->ks[o->n_ks++] = (uint32_t)k;
		c = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return o->n_ks ? 0 : -1;
}

static int parse_opts(int argc, char **argv, struct methods_opts *o)
{
	*o = (struct methods_opts){.n = 128, .ks = {2, 4, 8}, .n_ks = 3};
	if (argc < 3)
		return -1;
	o->target = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		const char *f = argv[i], *v = argv[i + 1];
		if (!strcmp(f, "--draft"))
			o->draft = v;
		else if (!strcmp(f, "--heads"))
			o->heads = v;
		else if (!strcmp(f, "--eagle"))
			o->eagle = v;
		else if (!strcmp(f, "-n"))
			o->n = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(f, "-k")) {
			if (parse_ks(v, o))
				return -1;
		} else
			return -1;
	}
	return (argc - 3) % 2 == 0 && o->n >= 1 && o->n <= 4096 ? 0 : -1;
}

/* Where the ops of a job's decode go: the backend (a kern_prof wrapper, else none is
 * taken) and the profile, for run_job. */
struct methods_prof {
	struct kern_ctx *kern;
	struct kern_profile p;
};

/* Runs one job of o->n tokens with drafter d (NULL: plain) at K = k: greedy when sp
 * is NULL; with host_rows, the verifier reads logits rows on the host; with prof, its
 * decode (not the prefill) is profiled op by op. */
static enum specd_status run_job(struct model *target, struct drafter *d, uint32_t k,
				 const struct methods_opts *o, const struct sampler_params *sp,
				 bool host_rows, struct methods_run *r, struct methods_prof *prof,
				 struct specd_error *err)
{
	struct draft_engine_config ec = {.target = target, .drafter = d, .spec_tokens = d ? k : 0,
					 .verify = host_rows ? draft_verify : NULL};
	struct draft_engine *e = NULL;
	struct draft_job *j = NULL;
	int32_t prompt[PROMPT];
	methods_prompt(prompt, model_hparams(target)->n_vocab);
	struct draft_job_params p = {.sampling = {.top_p = 1.0f}, .max_tokens = o->n, .eos = -1};
	if (sp)
		p.sampling = *sp;
	enum specd_status st;
	if ((st = draft_engine_create(&ec, &e, err)) || (st = draft_job_create(e, 0, &j, err)) ||
	    (st = draft_job_start(j, prompt, PROMPT, &p, err)))
		goto out;
	if (prof && kern_prof_start(prof->kern) != SPECD_OK) {
		st = specd_errorf(err, SPECD_INVAL, "the backend is not profiled");
		goto out;
	}
	double t0 = specd_now();
	while (draft_job_stop(j) == DRAFT_STOP_NONE)
		if ((st = draft_job_step(j, err)))
			goto out;
	r->decode_s = specd_now() - t0;
	if (prof && (st = kern_prof_read(prof->kern, &prof->p)) != SPECD_OK) {
		specd_errorf(err, st, "the profile could not be read");
		goto out;
	}
	const int32_t *toks = draft_job_output(j, &r->n_out);
	specd_free(r->out);
	if (!(r->out = specd_malloc_array(r->n_out ? r->n_out : 1, sizeof(int32_t)))) {
		st = specd_errorf(err, SPECD_NOMEM, "out of memory");
		goto out;
	}
	memcpy(r->out, toks, r->n_out * sizeof(int32_t));
	r->met = *draft_job_metrics(j);
out:
	if (prof)
		kern_prof_stop(prof->kern);
	draft_job_destroy(j);
	draft_engine_destroy(e);
	return st;
}

/* One more greedy run of d (NULL: plain) at K = k with every op timed: where a target
 * step's time goes, the drafter's ops included (kern_prof_print, per target step). */
static void profiled(struct model *target, struct drafter *d, const char *name, uint32_t k,
		     const struct methods_opts *o, struct kern_ctx *kern, struct methods_run *r)
{
	struct specd_error err;
	struct methods_prof prof = {.kern = kern};
	char what[48];
	specd_error_clear(&err);
	if (run_job(target, d, k, o, NULL, false, r, &prof, &err) != SPECD_OK) {
		printf("profile %s K=%u: %s FAIL\n", name, k, err.msg);
		gpu_check_expect(false, "profile", name, "the profiled job runs");
		return;
	}
	snprintf(what, sizeof(what), "%s K=%u", name, k);
	kern_prof_print(stdout, what, &prof.p, r->met.steps ? r->met.steps : r->n_out);
}

/* One method at one K against plain decoding's run; prints a result line. */
static void report(const char *method, uint32_t k, const struct methods_run *r,
		   const struct methods_run *plain, const struct model *target)
{
	bool same = r->n_out == plain->n_out &&
		    memcmp(r->out, plain->out, r->n_out * sizeof(int32_t)) == 0;
	double tps = r->decode_s > 0 ? r->n_out / r->decode_s : 0;
	double base = plain->decode_s > 0 ? plain->n_out / plain->decode_s : 0;
	double steps = (double)(r->met.steps ? r->met.steps : r->n_out);
	double hbm = r->decode_s > 0
		     ? gpu_check_step_bytes(target) * steps / r->decode_s / HBM_BYTES_PER_S : 0;
	printf("methods %-11s K=%-2u %7.1f tok/s  %.2fx  %.2f tok/step  accept %5.1f%%  "
	       "target reads %5.1f%% of HBM  output %s\n",
	       method, k, tps, base > 0 ? tps / base : 0,
	       r->met.steps ? (double)r->met.emitted / (double)r->met.steps : 1.0,
	       100.0 * draft_metrics_acceptance_rate(&r->met), 100.0 * hbm,
	       same ? "== plain" : "DIFFERS");
	if (r != plain)
		gpu_check_expect(same, "methods", method, "output equals plain decoding");
}

/* One method sampled on the device and through host rows, same seed: both speeds and
 * whether the tokens agree. */
static void sampled(struct model *target, struct drafter *d, const char *name, uint32_t k,
		    const struct methods_opts *o, struct methods_run *dev, struct methods_run *host)
{
	struct specd_error err;
	if (run_job(target, d, k, o, &k_sampled, false, dev, NULL, &err) ||
	    run_job(target, d, k, o, &k_sampled, true, host, NULL, &err)) {
		printf("sampled %-11s K=%u: %s FAIL\n", name, k, err.msg);
		gpu_check_expect(false, "sampled", name, "the job runs");
		return;
	}
	bool same = dev->n_out == host->n_out &&
		    memcmp(dev->out, host->out, dev->n_out * sizeof(int32_t)) == 0;
	double td = dev->decode_s > 0 ? dev->n_out / dev->decode_s : 0;
	double th = host->decode_s > 0 ? host->n_out / host->decode_s : 0;
	printf("sampled %-11s K=%-2u device draws %7.1f tok/s  host rows %7.1f tok/s  %.2fx  "
	       "accept %5.1f%%  output %s\n", name, k, td, th, th > 0 ? td / th : 0,
	       100.0 * draft_metrics_acceptance_rate(&dev->met), same ? "equal" : "DIFFERS");
	/* kern.h lets a device draw differ from the CPU's where u lies within rounding of a
	 * boundary of the cumulative distribution: so rare that a difference is reported
	 * as a failure, to be looked at. */
	gpu_check_expect(same, "sampled", name, "device draws give the host verifier's tokens "
			 "(rarely not, at a rounding boundary: look at the draw)");
}

int gpu_check_methods(struct kern_ctx *k, int argc, char **argv)
{
	struct methods_opts o;
	if (parse_opts(argc, argv, &o)) {
		fprintf(stderr, "usage: specd-gpu-check methods TARGET [--draft GGUF] [--heads "
				"SAFETENSORS] [--eagle DIR] [-n N] [-k K,K,...]\n");
		return GPU_CHECK_EXIT_USAGE;
	}
	uint32_t k_top = 1;
	for (uint32_t i = 0; i < o.n_ks; i++)
		k_top = o.ks[i] > k_top ? o.ks[i] : k_top;
	struct specd_error err;
	specd_error_clear(&err);
	struct model *target = NULL;
	struct model_config mc = {.n_slots = 1, .n_ctx = PROMPT + o.n + 2 * DRAFT_MAX_TOKENS + 2,
				  .max_batch = PROMPT > k_top + 1 ? PROMPT : k_top + 1, .kern = k};
	double t0 = specd_now();
	if (model_load(o.target, &mc, &target, &err) != SPECD_OK) {
		printf("load %s on %s: %s FAIL\n", o.target, kern_name(k), err.msg);
		return GPU_CHECK_EXIT_USAGE;
	}
	printf("load %s on %s: %.2f s; %.2f GB read per forward\n", o.target, kern_name(k),
	       specd_now() - t0, gpu_check_step_bytes(target) / 1e9);

	struct methods_run plain = {0}, r = {0};
	int rc = 0;
	/* A first plain run warms the device (its code, its clocks) before anything is
	 * timed; the second is the baseline every method is compared with. */
	if (run_job(target, NULL, 0, &o, NULL, false, &plain, NULL, &err) ||
	    run_job(target, NULL, 0, &o, NULL, false, &plain, NULL, &err)) {
		printf("methods none: %s FAIL\n", err.msg);
		rc = GPU_CHECK_EXIT_FAIL;
		goto out;
	}
	report("none", 0, &plain, &plain, target);
	profiled(target, NULL, "none", 0, &o, k, &r);
	struct methods_run host = {0};
	printf("sampled: temperature %.2f, top-p %.2f, seed %llu\n",
	       (double)k_sampled.temperature, (double)k_sampled.top_p,
	       (unsigned long long)k_sampled.seed);
	sampled(target, NULL, "none", 0, &o, &r, &host);
	static const enum draft_method methods[] = {DRAFT_METHOD_NGRAM, DRAFT_METHOD_DRAFT_MODEL,
						     DRAFT_METHOD_MEDUSA, DRAFT_METHOD_EAGLE};
	for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
		enum draft_method dm = methods[m];
		const char *name = draft_method_name(dm);
		if ((dm == DRAFT_METHOD_DRAFT_MODEL && !o.draft) ||
		    (dm == DRAFT_METHOD_MEDUSA && !o.heads) ||
		    (dm == DRAFT_METHOD_EAGLE && !o.eagle)) {
			printf("methods %-11s skipped: no file given\n", name);
			continue;
		}
		struct draft_config dc = {
			.method = dm, .k_max = k_top, .n_slots = 1, .n_ctx = mc.n_ctx,
			.target = target, .draft_path = o.draft, .kern = k, .heads_path = o.heads,
			.eagle = {.path = o.eagle},
		};
		struct drafter *d = NULL;
		if (draft_create(&dc, &d, &err) != SPECD_OK) {
			printf("methods %-11s: %s FAIL\n", name, err.msg);
			gpu_check_expect(false, "methods", name, "the drafter opens");
			continue;
		}
		for (uint32_t i = 0; i < o.n_ks; i++) {
			if (run_job(target, d, o.ks[i], &o, NULL, false, &r, NULL, &err) != SPECD_OK) {
				printf("methods %-11s K=%u: %s FAIL\n", name, o.ks[i], err.msg);
				gpu_check_expect(false, "methods", name, "the job runs");
				continue;
			}
			report(name, o.ks[i], &r, &plain, target);
		}
		profiled(target, d, name, k_top, &o, k, &r);
		sampled(target, d, name, k_top, &o, &r, &host);
		draft_destroy(d);
	}
out:
	specd_free(plain.out);
	specd_free(r.out);
	specd_free(host.out);
	model_destroy(target);
	return rc ? rc : gpu_check_failures() ? GPU_CHECK_EXIT_FAIL : 0;
}
