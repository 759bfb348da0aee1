/* parallel/roles: world-size checks and who does what. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "parallel/roles.h"

static void test_layout__dedicated_draft_rank_is_last(void **state)
{
	(void)state;
	struct par_layout l;
	assert_int_equal(par_layout_init(&l, 2, true, 3, NULL), SPECD_OK);
	assert_int_equal(par_layout_role(&l, 0), PAR_ROLE_LEADER);
	assert_int_equal(par_layout_role(&l, 1), PAR_ROLE_TARGET);
	assert_int_equal(par_layout_role(&l, 2), PAR_ROLE_DRAFT);
	assert_int_equal(par_layout_draft_rank(&l), 2);
	assert_string_equal(par_role_label(&l, 0), "leader");
	assert_string_equal(par_role_label(&l, 2), "draft");
}

static void test_layout__leader_placement_has_no_draft_rank(void **state)
{
	(void)state;
	struct par_layout l;
	assert_int_equal(par_layout_init(&l, 2, false, 2, NULL), SPECD_OK);
	assert_int_equal(par_layout_role(&l, 1), PAR_ROLE_TARGET);
	assert_int_equal(par_layout_draft_rank(&l), 0);
	assert_string_equal(par_role_label(&l, 0), "leader+draft");
	assert_int_equal(par_layout_needed(4, true), 5);
	assert_int_equal(par_layout_needed(1, false), 1);
}

static void test_layout__mismatch_names_both_sizes(void **state)
{
	(void)state;
	struct par_layout l;
	memset(&l, 0x5a, sizeof(l));
	struct par_layout before = l;
	struct specd_error err;
	assert_int_equal(par_layout_init(&l, 2, true, 2, &err), SPECD_CONFIG);
	assert_non_null(strstr(err.msg, "started 2 ranks but the cluster file needs 3"));
	assert_non_null(strstr(err.msg, "draft.placement: leader"));
	assert_memory_equal(&l, &before, sizeof(l)); /* untouched on failure */
	assert_int_equal(par_layout_init(&l, 3, false, 4, &err), SPECD_CONFIG);
	assert_non_null(strstr(err.msg, "started 4 ranks but the cluster file needs 3"));
	assert_int_equal(par_layout_init(&l, 0, false, 1, &err), SPECD_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout__dedicated_draft_rank_is_last),
		cmocka_unit_test(test_layout__leader_placement_has_no_draft_rank),
		cmocka_unit_test(test_layout__mismatch_names_both_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
