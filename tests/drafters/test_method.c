/* drafters/method: the method vocabulary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "drafters/method.h"

static void test_method__names_round_trip(void **state)
{
	(void)state;
	for (int m = 0; m < DRAFT_METHOD_COUNT; m++) {
		enum draft_method got;
		assert_true(draft_method_parse(draft_method_name((enum draft_method)m), &got));
		assert_int_equal(got, m);
	}
	enum draft_method got = DRAFT_METHOD_EAGLE;
	assert_false(draft_method_parse("auto", &got));
	assert_false(draft_method_parse("NGRAM", &got));
	assert_int_equal(got, DRAFT_METHOD_EAGLE);
	assert_string_equal(draft_method_name(DRAFT_METHOD_COUNT), "?");
}

static void test_method__weights_needed(void **state)
{
	(void)state;
	assert_false(draft_method_needs_weights(DRAFT_METHOD_NONE));
	assert_false(draft_method_needs_weights(DRAFT_METHOD_NGRAM));
	assert_true(draft_method_needs_weights(DRAFT_METHOD_DRAFT_MODEL));
	assert_true(draft_method_needs_weights(DRAFT_METHOD_EAGLE));
	assert_true(draft_method_needs_weights(DRAFT_METHOD_MEDUSA));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_method__names_round_trip),
		cmocka_unit_test(test_method__weights_needed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
