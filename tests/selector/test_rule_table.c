/* selector/rule_table: the origin document's table, rule by rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "selector/rule_table.h"

static struct sel_rule_choice pick(bool eagle, bool draft, bool low_mem, double speedup)
{
	struct sel_rule_input in = {eagle, draft, low_mem, speedup};
	return sel_rule_table(&in);
}

static void test_rules__eagle_only_above_2_5(void **state)
{
	(void)state;
	assert_int_equal(pick(true, true, false, 3.0).method, DRAFT_METHOD_EAGLE);
	assert_int_equal(pick(true, true, false, 3.0).spec_tokens, 5);
	/* exactly 2.5 is not "above": falls through to the draft model rule */
	assert_int_equal(pick(true, true, false, 2.5).method, DRAFT_METHOD_DRAFT_MODEL);
	assert_int_equal(pick(false, false, false, 3.0).method, DRAFT_METHOD_NGRAM);
}

static void test_rules__low_memory_means_ngram_2_to_5(void **state)
{
	(void)state;
	struct sel_rule_choice c = pick(false, true, true, 2.2);
	assert_int_equal(c.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(c.prompt_lookup_min, 2);
	assert_int_equal(c.prompt_lookup_max, 5);
	/* eagle with a high target still wins over low memory, as in the table */
	assert_int_equal(pick(true, false, true, 2.6).method, DRAFT_METHOD_EAGLE);
}

static void test_rules__default_is_ngram_max_4(void **state)
{
	(void)state;
	struct sel_rule_choice c = pick(false, true, false, 2.0);
	assert_int_equal(c.method, DRAFT_METHOD_NGRAM);
	assert_int_equal(c.prompt_lookup_max, 4);
	assert_string_equal(c.reason, "default");
	assert_int_equal(pick(false, true, false, 2.01).method, DRAFT_METHOD_DRAFT_MODEL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rules__eagle_only_above_2_5),
		cmocka_unit_test(test_rules__low_memory_means_ngram_2_to_5),
		cmocka_unit_test(test_rules__default_is_ngram_max_4),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
