/* kernels/prof.c, the op profiler: a wrapped backend computes exactly what it wraps
 * and keeps its name and memory kind; it counts and times only between start and
 * stop; on a backend with marks (the emulated device's stand in for CUDA events) it
 * reads them back in batches when they run out and at each read, losing no call;
 * the host-clock path (the CPU) times the same calls; the printed profile has a line
 * for each op called; and the profile's functions refuse, or ignore, a backend that
 * is not a profiler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kern.h"

enum { N = 256, ROWS = 3, N_OUT = 64 };

/* The sum of the ops' busy seconds; every op's calls must be counted in `want`. */
static double expect_calls(const struct kern_profile *p, const uint64_t want[KERN_OP_COUNT])
{
	double busy = 0;
	for (int op = 0; op < KERN_OP_COUNT; op++) {
		assert_int_equal(p->calls[op], want[op]);
		assert_true(p->busy[op] >= 0 && p->host[op] >= 0);
		if (want[op])
			assert_true(p->host[op] > 0);
		busy += p->busy[op];
	}
	return busy;
}

/* y = x W through ctx, on its memory (uploads when it is a device). */
static void matmul_on(struct kern_ctx *k, const float *x, const struct kern_mat *w_host,
		      float *y)
{
	struct kern_mat w;
	void *dx = NULL, *dy = NULL;
	assert_int_equal(kern_upload_mat(k, w_host, &w), SPECD_OK);
	assert_int_equal(kern_alloc(k, sizeof(float) * ROWS * N, &dx), SPECD_OK);
	assert_int_equal(kern_alloc(k, sizeof(float) * ROWS * N_OUT, &dy), SPECD_OK);
	assert_int_equal(kern_upload(k, dx, x, sizeof(float) * ROWS * N), SPECD_OK);
	assert_int_equal(kern_matmul(k, dy, N_OUT, dx, N, ROWS, &w, NULL), SPECD_OK);
	assert_int_equal(kern_download(k, y, dy, sizeof(float) * ROWS * N_OUT), SPECD_OK);
	kern_free(k, dx), kern_free(k, dy), kern_free(k, (void *)(uintptr_t)w.data);
}

/* Wrapping the CPU and the emulated device: bitwise the inner results, the inner's name
 * and memory kind; the matmul's calls counted only while on. */
static void test_prof__results_name_and_memory_are_the_inner_backends(void **state)
{
	(void)state;
	float x[ROWS * N], wf[N_OUT * N], want[ROWS * N_OUT], got[ROWS * N_OUT];
	for (size_t i = 0; i < ROWS * N; i++)
		x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
	for (size_t i = 0; i < N_OUT * N; i++)
		wf[i] = (float)((i * 53) % 97) / 48.0f - 1.0f;
	struct kern_mat w = {.type = KERN_F32, .n_in = N, .n_out = N_OUT,
			     .row_bytes = N * sizeof(float), .data = wf};
	for (int emu = 0; emu < 2; emu++) {
		struct kern_ctx *plain = NULL, *inner = NULL, *prof = NULL;
		assert_int_equal(emu ? kern_emu_create(NULL, &plain) : kern_cpu_create(NULL, &plain),
				 SPECD_OK);
		assert_int_equal(emu ? kern_emu_create(NULL, &inner) : kern_cpu_create(NULL, &inner),
				 SPECD_OK);
		assert_int_equal(kern_prof_create(inner, &prof), SPECD_OK);
		assert_string_equal(kern_name(prof), kern_name(plain));
		assert_int_equal(kern_host_memory(prof), kern_host_memory(plain));

		matmul_on(plain, x, &w, want);
		matmul_on(prof, x, &w, got); /* off: nothing counted */
		assert_memory_equal(got, want, sizeof(want));
		assert_int_equal(kern_prof_start(prof), SPECD_OK);
		matmul_on(prof, x, &w, got);
		assert_memory_equal(got, want, sizeof(want));
		kern_prof_stop(prof);
		matmul_on(prof, x, &w, got); /* off again */

		struct kern_profile p;
		assert_int_equal(kern_prof_read(prof, &p), SPECD_OK);
		uint64_t calls[KERN_OP_COUNT] = {[KERN_OP_UPLOAD_MAT] = 1, [KERN_OP_UPLOAD] = 1,
						 [KERN_OP_MATMUL] = 1, [KERN_OP_DOWNLOAD] = 1};
		double busy = expect_calls(&p, calls);
		assert_true(p.busy[KERN_OP_MATMUL] > 0);
		assert_true(p.span >= busy);
		/* The printed profile: the summary line, then a line for each op called. */
		char *text = NULL;
		size_t len = 0;
		FILE *to = open_memstream(&text, &len);
		assert_non_null(to);
		kern_prof_print(to, "step", &p, 2);
		fclose(to);
		assert_non_null(strstr(text, "profile step: "));
		assert_non_null(strstr(text, "profile step   matmul         0.5 calls/step"));
		assert_non_null(strstr(text, "profile step   upload_mat "));
		assert_null(strstr(text, "attention"));
		free(text);
		kern_destroy(prof); /* and inner with it */
		kern_destroy(plain);
	}
}

/* More calls than the marks hold: the emulated device's marks are read back in
 * batches; every call is counted, span covers every call's busy time, and a read in
 * the middle loses nothing. On the CPU (no marks) the same calls, host-timed. */
static void test_prof__marks_run_out_and_are_read_back_in_batches(void **state)
{
	(void)state;
	enum { CALLS = 3 * KERN_MARKS / 2 + 7 };
	for (int emu = 0; emu < 2; emu++) {
		struct kern_ctx *inner = NULL, *prof = NULL;
		assert_int_equal(emu ? kern_emu_create(NULL, &inner) : kern_cpu_create(NULL, &inner),
				 SPECD_OK);
		assert_int_equal(kern_prof_create(inner, &prof), SPECD_OK);
		float *y = NULL, *x = NULL;
		assert_int_equal(kern_alloc(prof, N * sizeof(float), (void **)&y), SPECD_OK);
		assert_int_equal(kern_alloc(prof, N * sizeof(float), (void **)&x), SPECD_OK);
		assert_int_equal(kern_prof_start(prof), SPECD_OK);
		struct kern_profile mid, p;
		for (int i = 0; i < CALLS; i++) {
			assert_int_equal(kern_add(prof, y, x, N), SPECD_OK);
			if (i == CALLS / 3) {
				assert_int_equal(kern_prof_read(prof, &mid), SPECD_OK);
				assert_int_equal(mid.calls[KERN_OP_ADD], i + 1);
			}
		}
		assert_int_equal(kern_sync(prof), SPECD_OK);
		assert_int_equal(kern_prof_read(prof, &p), SPECD_OK);
		uint64_t calls[KERN_OP_COUNT] = {[KERN_OP_ADD] = CALLS, [KERN_OP_SYNC] = 1};
		double busy = expect_calls(&p, calls);
		assert_true(p.busy[KERN_OP_ADD] > 0);
		assert_true(p.span >= busy && p.span >= mid.span);
		/* Starting again forgets the old profile. */
		assert_int_equal(kern_prof_start(prof), SPECD_OK);
		assert_int_equal(kern_prof_read(prof, &p), SPECD_OK);
		uint64_t none[KERN_OP_COUNT] = {0};
		expect_calls(&p, none);
		assert_true(p.span == 0);
		kern_free(prof, y), kern_free(prof, x);
		kern_destroy(prof);
	}
}

/* A failing op is forwarded and its status returned, counted like any call. */
static void test_prof__errors_pass_through(void **state)
{
	(void)state;
	struct kern_ctx *inner = NULL, *prof = NULL;
	assert_int_equal(kern_emu_create(NULL, &inner), SPECD_OK);
	assert_int_equal(kern_prof_create(inner, &prof), SPECD_OK);
	assert_int_equal(kern_prof_start(prof), SPECD_OK);
	float host[4] = {0};
	/* A host pointer given to a device op: the emulated device refuses it. */
	assert_int_equal(kern_add(prof, host, host, 4), SPECD_INVAL);
	struct kern_profile p;
	assert_int_equal(kern_prof_read(prof, &p), SPECD_OK);
	assert_int_equal(p.calls[KERN_OP_ADD], 1);
	kern_destroy(prof);
}

/* The profile's functions on a backend that is not a profiler. */
static void test_prof__other_backends_are_refused(void **state)
{
	(void)state;
	struct kern_ctx *cpu = NULL;
	struct kern_profile p;
	assert_int_equal(kern_cpu_create(NULL, &cpu), SPECD_OK);
	assert_int_equal(kern_prof_start(cpu), SPECD_INVAL);
	assert_int_equal(kern_prof_read(cpu, &p), SPECD_INVAL);
	kern_prof_stop(cpu);
	assert_int_equal(kern_prof_start(NULL), SPECD_INVAL);
	kern_destroy(cpu);
	assert_string_equal(kern_op_name(KERN_OP_ADD_RMSNORM), "add_rmsnorm");
	assert_string_equal(kern_op_name(KERN_OP_SYNC), "sync");
	assert_string_equal(kern_op_name(KERN_OP_COUNT), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prof__results_name_and_memory_are_the_inner_backends),
		cmocka_unit_test(test_prof__marks_run_out_and_are_read_back_in_batches),
		cmocka_unit_test(test_prof__errors_pass_through),
		cmocka_unit_test(test_prof__other_backends_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
