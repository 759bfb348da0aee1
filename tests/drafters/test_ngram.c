/* drafters/ngram: prompt lookup proposes what followed the longest, most recent
 * earlier occurrence of the sequence's suffix, at most k tokens, nothing without a
 * match; lengths outside prompt_lookup_min..max are not tried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "drafters/drafter.h"
#include "test_support.h"

/* The ngram drafter needs no target of its own; the ops are called directly so that no
 * model is needed. */
static const struct draft_ops *ops(void)
{
	const struct draft_ops *o = draft_ops_for(DRAFT_METHOD_NGRAM);
	assert_non_null(o);
	return o;
}

static uint32_t propose(uint32_t lo, uint32_t hi, const int32_t *h, uint32_t n, uint32_t k,
			int32_t *out)
{
	struct draft_config cfg = {.method = DRAFT_METHOD_NGRAM, .k_max = 8, .n_slots = 1,
				   .prompt_lookup_min = lo, .prompt_lookup_max = hi};
	void *st = NULL;
	struct draft_seq seq = {.slot = 0, .tokens = h, .n_tokens = n};
	struct draft_proposal p = {.tokens = out};

	assert_int_equal(ops()->create(&cfg, &st, NULL), SPECD_OK);
	assert_int_equal(ops()->propose(st, &seq, k, &p, NULL), SPECD_OK);
	assert_true(p.q_onehot);
	ops()->destroy(st);
	return p.n;
}

static void test_ngram__proposes_what_followed_the_longest_match(void **state)
{
	(void)state;
	/* Suffix [7 8 9]: length 3 matches at 1 (then 4 5), length 1 ([9]) later at 6. */
	int32_t h[] = {1, 7, 8, 9, 4, 5, 9, 2, 7, 8, 9};
	int32_t out[8];
	assert_int_equal(propose(1, 3, h, 11, 2, out), 2);
	assert_int_equal(out[0], 4);
	assert_int_equal(out[1], 5);
	/* With only length 1 allowed, the most recent [9] (index 6) wins: 2 7 8 9. */
	assert_int_equal(propose(1, 1, h, 11, 8, out), 4);
	assert_memory_equal(out, ((int32_t[]){2, 7, 8, 9}), 4 * sizeof(int32_t));
}

static void test_ngram__takes_the_most_recent_occurrence(void **state)
{
	(void)state;
	int32_t h[] = {5, 6, 1, 5, 6, 2, 5, 6};
	int32_t out[8];
	assert_int_equal(propose(2, 2, h, 8, 3, out), 3);
	assert_memory_equal(out, ((int32_t[]){2, 5, 6}), 3 * sizeof(int32_t));
}

static void test_ngram__proposes_nothing_without_a_match(void **state)
{
	(void)state;
	int32_t h[] = {1, 2, 3, 4, 5};
	int32_t out[8];
	assert_int_equal(propose(1, 5, h, 5, 4, out), 0);
	/* A match shorter than prompt_lookup_min does not count. */
	int32_t g[] = {1, 4, 2, 3, 4};
	assert_int_equal(propose(2, 5, g, 5, 4, out), 0);
	assert_int_equal(propose(1, 5, g, 5, 4, out), 3);
	/* A single token has no earlier context. */
	assert_int_equal(propose(1, 5, h, 1, 4, out), 0);
}

static void test_ngram__stops_at_the_end_of_the_history(void **state)
{
	(void)state;
	/* [3] occurs at index 1, followed by only [3]: a run of one token repeats. */
	int32_t h[] = {1, 3, 3};
	int32_t out[8];
	assert_int_equal(propose(1, 2, h, 3, 8, out), 1);
	assert_int_equal(out[0], 3);
}

static void test_ngram__checks_its_lengths(void **state)
{
	(void)state;
	struct draft_config cfg = {.method = DRAFT_METHOD_NGRAM, .k_max = 4, .n_slots = 1,
				   .prompt_lookup_min = 4, .prompt_lookup_max = 3};
	struct specd_error err;
	void *st = NULL;
	assert_int_equal(ops()->create(&cfg, &st, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "prompt_lookup_min"));
	assert_null(st);
	assert_int_equal(ops()->memory_bytes(NULL), 0);
	assert_null(draft_ops_for(DRAFT_METHOD_NONE));
	assert_non_null(draft_ops_for(DRAFT_METHOD_EAGLE));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ngram__proposes_what_followed_the_longest_match),
		cmocka_unit_test(test_ngram__takes_the_most_recent_occurrence),
		cmocka_unit_test(test_ngram__proposes_nothing_without_a_match),
		cmocka_unit_test(test_ngram__stops_at_the_end_of_the_history),
		cmocka_unit_test(test_ngram__checks_its_lengths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
