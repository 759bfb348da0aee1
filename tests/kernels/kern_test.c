/* kern_test.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kern_test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

void ktest_seed(uint64_t seed)
{
	rng_state = seed;
}

float ktest_rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (float)((double)(rng_state >> 11) * 0x1p-53 * 2.0 - 1.0);
}

float *ktest_rnd_array(size_t n)
{
	float *a = malloc(n * sizeof(float));
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = ktest_rnd();
	return a;
}

void ktest_mat_make(struct ktest_mat *tm, enum kern_dtype t, size_t n_in, size_t n_out,
		    size_t pad)
{
	size_t rb = kern_dtype_row_bytes(t, n_in) + pad;
	tm->bytes = calloc(n_out, rb);
	tm->deq = malloc(n_in * n_out * sizeof(float));
	float *src = malloc(n_in * sizeof(float));
	assert_non_null(tm->bytes);
	assert_non_null(tm->deq);
	assert_non_null(src);
	for (size_t o = 0; o < n_out; o++) {
		for (size_t i = 0; i < n_in; i++)
			src[i] = ktest_rnd();
		kern_quant_row(t, src, tm->bytes + o * rb, n_in);
		kern_dequant_row(t, tm->bytes + o * rb, tm->deq + o * n_in, n_in);
	}
	free(src);
	tm->m = (struct kern_mat){.type = t, .n_in = n_in, .n_out = n_out, .row_bytes = rb,
				  .data = tm->bytes};
}

void ktest_mat_free(struct ktest_mat *tm)
{
	free(tm->bytes);
	free(tm->deq);
}

struct kern_ctx *ktest_cpu(const char *isa, unsigned threads, enum kern_act act)
{
	struct kern_cpu_config cfg = {.n_threads = threads, .isa = isa, .act = act};
	struct kern_ctx *ctx = NULL;
	assert_int_equal(kern_cpu_create(&cfg, &ctx), SPECD_OK);
	if (strcmp(kern_cpu_isa_of(ctx), isa) != 0) {
		kern_destroy(ctx);
		return NULL;
	}
	assert_string_equal(kern_cpu_act_of(ctx), kern_act_name(act));
	return ctx;
}
