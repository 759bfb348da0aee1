/* model/kv: the KV pool's bookkeeping on its own: creation limits, lengths per slot,
 * truncation that only shrinks, compaction of a tree's accepted rows, and allocation
 * failures. (Bitwise re-decode after truncation is in test_forward.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "model/kv.h"

static struct kv_cache *make(uint32_t layers, uint32_t slots, uint32_t ctx, uint32_t row)
{
	struct kv_config cfg = {.n_layers = layers, .n_slots = slots, .n_ctx = ctx,
				.row_floats = row};
	struct kv_cache *kv = NULL;
	assert_int_equal(kv_create(&cfg, &kv, NULL), SPECD_OK);
	return kv;
}

static void test_kv__create_sizes_and_empty_slots(void **state)
{
	(void)state;
	struct kv_cache *kv = make(3, 4, 10, 8);
	assert_int_equal(kv_n_slots(kv), 4);
	assert_int_equal(kv_n_ctx(kv), 10);
	assert_int_equal(kv_bytes(kv), 2 * 3 * 4 * 10 * 8 * sizeof(float));
	for (uint32_t s = 0; s < 4; s++)
		assert_int_equal(kv_len(kv, s), 0);
	/* A row is its key then its value (8 floats each). */
	struct kern_kv_view v = kv_layer_view(kv, 2);
	assert_int_equal(v.slot_stride, 160);
	assert_int_equal(v.row_stride, 16);
	assert_int_equal(v.n_rows, 10);
	assert_ptr_equal(v.v, v.k + 8);
	/* Rows are where the view says they are. */
	assert_ptr_equal(kv_k_row(kv, 2, 3, 7), v.k + 3 * 160 + 7 * 16);
	assert_ptr_equal(kv_v_row(kv, 2, 1, 0), v.v + 160);
	assert_ptr_equal(kv_v_row(kv, 2, 1, 0), kv_k_row(kv, 2, 1, 0) + 8);
	kv_destroy(kv);
	kv_destroy(NULL);
}

static void test_kv__create_rejects_zero_and_overflow(void **state)
{
	(void)state;
	struct kv_config cfg = {.n_layers = 1, .n_slots = 0, .n_ctx = 4, .row_floats = 4};
	struct kv_cache *kv = NULL;
	struct specd_error err;
	assert_int_equal(kv_create(&cfg, &kv, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "slots 0"));
	cfg = (struct kv_config){.n_layers = UINT32_MAX, .n_slots = UINT32_MAX,
				 .n_ctx = UINT32_MAX, .row_floats = UINT32_MAX};
	assert_int_equal(kv_create(&cfg, &kv, &err), SPECD_INVAL);
	assert_null(kv);
	/* 2^32 rows a layer: more than the forward's 32-bit row numbers (4 bytes of memory
	 * a row, so only the count is refused) */
	cfg = (struct kv_config){.n_layers = 1, .n_slots = 65536, .n_ctx = 65536,
				 .row_floats = 1};
	assert_int_equal(kv_create(&cfg, &kv, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "65536 slots x 65536 rows"));
	assert_null(kv);
}

static void test_kv__truncate_only_shrinks(void **state)
{
	(void)state;
	struct kv_cache *kv = make(1, 2, 8, 4);
	kv_set_len(kv, 0, 5);
	assert_int_equal(kv_truncate(kv, 0, 6), SPECD_INVAL);
	assert_int_equal(kv_truncate(kv, 2, 0), SPECD_INVAL); /* no such slot */
	assert_int_equal(kv_truncate(kv, 0, 3), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 3);
	assert_int_equal(kv_len(kv, 1), 0);
	assert_int_equal(kv_truncate(kv, 0, 0), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 0);
	kv_destroy(kv);
}

static void test_kv__compact_keeps_chosen_rows_in_order(void **state)
{
	(void)state;
	struct kv_cache *kv = make(2, 1, 8, 2);
	for (uint32_t l = 0; l < 2; l++) {
		for (uint32_t r = 0; r < 8; r++) {
			float *k = kv_k_row(kv, l, 0, r), *v = kv_v_row(kv, l, 0, r);
			k[0] = k[1] = (float)(100 * l + r);
			v[0] = v[1] = (float)(-100.0 * l - r);
		}
	}
	kv_set_len(kv, 0, 8);
	const uint32_t rows[] = {3, 5, 7};
	assert_int_equal(kv_compact(kv, 0, 3, rows, 3), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 6);
	const float want[] = {0, 1, 2, 3, 5, 7};
	for (uint32_t l = 0; l < 2; l++) {
		for (uint32_t r = 0; r < 6; r++) {
			assert_float_equal(kv_k_row(kv, l, 0, r)[1], 100 * l + want[r], 0);
			assert_float_equal(kv_v_row(kv, l, 0, r)[0], -100.0 * l - want[r], 0);
		}
	}
	/* Bad requests leave the slot alone. */
	const uint32_t unsorted[] = {4, 3}, below[] = {2}, past[] = {6};
	assert_int_equal(kv_compact(kv, 0, 3, unsorted, 2), SPECD_INVAL);
	assert_int_equal(kv_compact(kv, 0, 3, below, 1), SPECD_INVAL);
	assert_int_equal(kv_compact(kv, 0, 3, past, 1), SPECD_INVAL);
	assert_int_equal(kv_compact(kv, 0, 7, NULL, 0), SPECD_INVAL); /* base past length */
	assert_int_equal(kv_len(kv, 0), 6);
	/* Keeping nothing is a truncation. */
	assert_int_equal(kv_compact(kv, 0, 2, NULL, 0), SPECD_OK);
	assert_int_equal(kv_len(kv, 0), 2);
	kv_destroy(kv);
}

static void test_kv__create_fails_cleanly_on_every_allocation(void **state)
{
	(void)state;
	struct kv_config cfg = {.n_layers = 2, .n_slots = 2, .n_ctx = 4, .row_floats = 4};
	for (long n = 1; n <= 3; n++) {
		struct kv_cache *kv = NULL;
		specd_alloc_fail_after(n);
		enum specd_status st = kv_create(&cfg, &kv, NULL);
		specd_alloc_fail_reset();
		assert_int_equal(st, SPECD_NOMEM);
		assert_null(kv);
	}
	struct kv_cache *kv = NULL;
	specd_alloc_fail_after(4);
	assert_int_equal(kv_create(&cfg, &kv, NULL), SPECD_OK);
	specd_alloc_fail_reset();
	kv_destroy(kv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kv__create_sizes_and_empty_slots),
		cmocka_unit_test(test_kv__create_rejects_zero_and_overflow),
		cmocka_unit_test(test_kv__truncate_only_shrinks),
		cmocka_unit_test(test_kv__compact_keeps_chosen_rows_in_order),
		cmocka_unit_test(test_kv__create_fails_cleanly_on_every_allocation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
