/* daemon/utf8 and daemon/textstream: validation, pieces cut on character boundaries,
 * stop strings matched across tokens with nothing past them sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/textstream.h"
#include "daemon/utf8.h"

static void test_utf8__valid_and_invalid(void **state)
{
	(void)state;
	assert_true(utf8_valid("héllo ✓ 😀", strlen("héllo ✓ 😀")));
	assert_true(utf8_valid("", 0));
	const char *bad[] = {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
			     "\x80", "\xff", "a\xc3"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(utf8_valid(bad[i], strlen(bad[i])));
}

/* Pushes pieces one by one and concatenates everything taken. */
static void run(const char *const *pieces, size_t n, const char *const *stops, size_t n_stops,
		char *got, size_t cap, bool *stopped)
{
	struct textstream ts;
	assert_int_equal(textstream_init(&ts, stops, n_stops), SPECD_OK);
	size_t used = 0, len;
	for (size_t i = 0; i <= n; i++) {
		if (i < n)
			assert_int_equal(textstream_push(&ts, pieces[i], strlen(pieces[i])), SPECD_OK);
		assert_int_equal(textstream_take(&ts, i == n, &len), SPECD_OK);
		assert_true(utf8_valid((const char *)ts.out.data, len));
		assert_true(used + len < cap);
		memcpy(got + used, ts.out.data, len);
		used += len;
	}
	got[used] = '\0';
	*stopped = ts.stopped;
	textstream_fini(&ts);
}

static void test_textstream__character_split_across_tokens(void **state)
{
	(void)state;
	const char *pieces[] = {"caf", "\xc3", "\xa9 ", "\xf0\x9f", "\x98", "\x80!"};
	char got[64];
	bool stopped;
	struct textstream ts;
	assert_int_equal(textstream_init(&ts, NULL, 0), SPECD_OK);
	size_t len;
	assert_int_equal(textstream_push(&ts, "caf\xc3", 4), SPECD_OK);
	assert_int_equal(textstream_take(&ts, false, &len), SPECD_OK);
	assert_int_equal(len, 3); /* the lone lead byte waits */
	textstream_fini(&ts);
	run(pieces, 6, NULL, 0, got, sizeof(got), &stopped);
	assert_string_equal(got, "café 😀!");
	assert_false(stopped);
}

static void test_textstream__stop_string_across_tokens(void **state)
{
	(void)state;
	const char *pieces[] = {"Hello, wor", "ld. The E", "N", "D is near", " and more"};
	const char *stops[] = {"END"};
	char got[128];
	bool stopped;
	run(pieces, 5, stops, 1, got, sizeof(got), &stopped);
	assert_string_equal(got, "Hello, world. The ");
	assert_true(stopped);
}

static void test_textstream__partial_stop_prefix_is_released_when_it_fails(void **state)
{
	(void)state;
	const char *pieces[] = {"x EN", "Dy", "z"};
	const char *stops[] = {"ENDZ", "###"};
	char got[64];
	bool stopped;
	run(pieces, 3, stops, 2, got, sizeof(got), &stopped);
	assert_string_equal(got, "x ENDyz");
	assert_false(stopped);
}

static void test_textstream__earliest_of_several_stops_wins(void **state)
{
	(void)state;
	const char *pieces[] = {"a\n\nb STOP c"};
	const char *stops[] = {"STOP", "\n\n", ""};
	char got[64];
	bool stopped;
	run(pieces, 1, stops, 3, got, sizeof(got), &stopped);
	assert_string_equal(got, "a");
	assert_true(stopped);
}

static void test_textstream__invalid_bytes_become_replacement(void **state)
{
	(void)state;
	const char *pieces[] = {"a\xff", "b", "\xe2\x9c"}; /* the last is cut at the end */
	char got[64];
	bool stopped;
	run(pieces, 3, NULL, 0, got, sizeof(got), &stopped);
	assert_string_equal(got, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd");
}

/* A NUL byte would end the piece early as a protobuf-c string: it is sent as U+FFFD,
 * the bytes after it kept. */
static void test_textstream__nul_byte_becomes_replacement(void **state)
{
	(void)state;
	struct textstream ts;
	size_t len;
	assert_int_equal(textstream_init(&ts, NULL, 0), SPECD_OK);
	assert_int_equal(textstream_push(&ts, "a\0b", 3), SPECD_OK);
	assert_int_equal(textstream_push(&ts, "\0", 1), SPECD_OK);
	assert_int_equal(textstream_take(&ts, true, &len), SPECD_OK);
	assert_int_equal(len, 8);
	assert_memory_equal(ts.out.data, "a\xef\xbf\xbd" "b\xef\xbf\xbd", 8);
	textstream_fini(&ts);
}

/* The token whose text completes a stop string is known as it is pushed, so the
 * tokens after it in the same step can be held back. */
static void test_textstream__stop_pending_from_the_completing_token(void **state)
{
	(void)state;
	const char *stops[] = {"ball"};
	struct textstream ts;
	size_t len;
	assert_int_equal(textstream_init(&ts, stops, 1), SPECD_OK);
	assert_int_equal(textstream_push(&ts, "the b", 5), SPECD_OK);
	assert_false(textstream_stop_pending(&ts));
	assert_int_equal(textstream_take(&ts, false, &len), SPECD_OK); /* "the " out, "b" held */
	assert_int_equal(textstream_push(&ts, "al", 2), SPECD_OK);
	assert_false(textstream_stop_pending(&ts));
	assert_int_equal(textstream_push(&ts, "l.", 2), SPECD_OK);
	assert_true(textstream_stop_pending(&ts));
	assert_int_equal(textstream_take(&ts, false, &len), SPECD_OK);
	assert_true(ts.stopped);
	assert_false(textstream_stop_pending(&ts)); /* it has been acted on */
	textstream_fini(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8__valid_and_invalid),
		cmocka_unit_test(test_textstream__character_split_across_tokens),
		cmocka_unit_test(test_textstream__stop_string_across_tokens),
		cmocka_unit_test(test_textstream__partial_stop_prefix_is_released_when_it_fails),
		cmocka_unit_test(test_textstream__earliest_of_several_stops_wins),
		cmocka_unit_test(test_textstream__invalid_bytes_become_replacement),
		cmocka_unit_test(test_textstream__nul_byte_becomes_replacement),
		cmocka_unit_test(test_textstream__stop_pending_from_the_completing_token),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
