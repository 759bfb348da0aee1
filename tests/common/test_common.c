/* common/: status strings, errors, logging sink and levels, allocation helpers and
 * their failure injection, the byte buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/status.h"
#include "test_support.h"

static void test_status__every_code_has_text(void **state)
{
	(void)state;
	for (int s = 0; s < SPECD_STATUS_COUNT; s++) {
		assert_non_null(specd_status_str((enum specd_status)s));
		assert_string_not_equal(specd_status_name((enum specd_status)s), "UNKNOWN");
	}
	assert_string_equal(specd_status_str(SPECD_NOMEM), "out of memory");
	assert_string_equal(specd_status_name(SPECD_TIMEOUT), "TIMEOUT");
	assert_string_equal(specd_status_str((enum specd_status)999), "unknown status");
}

static void test_error__formats_and_returns_code(void **state)
{
	(void)state;
	struct specd_error err;
	specd_error_clear(&err);
	assert_int_equal(err.code, SPECD_OK);
	assert_int_equal(specd_errorf(&err, SPECD_CONFIG, "%s:%d: bad", "f.yaml", 3),
			 SPECD_CONFIG);
	assert_string_equal(err.msg, "f.yaml:3: bad");
	assert_int_equal(specd_errorf(NULL, SPECD_IO, "ignored"), SPECD_IO);
	char big[2 * SPECD_ERROR_MSG_MAX];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	specd_errorf(&err, SPECD_INVAL, "%s", big);
	assert_int_equal(strlen(err.msg), SPECD_ERROR_MSG_MAX - 1);
}

static void test_log__sink_gets_records_at_or_above_level(void **state)
{
	(void)state;
	ts_log_capture_begin();
	log_set_level(LOG_LEVEL_WARN);
	LOG_INFO("hidden %d", 1);
	LOG_WARN("shown %d", 2);
	LOG_ERROR("also %s", "shown");
	assert_string_equal(ts_log_captured(), "shown 2\nalso shown\n");
	log_set_level(LOG_LEVEL_INFO);
	ts_log_capture_end();
}

static struct log_record g_last;
static char g_last_role[16];

static void keep_last(const struct log_record *rec, void *user)
{
	(void)user;
	g_last = *rec;
	strncpy(g_last_role, rec->role, sizeof(g_last_role) - 1);
}

static void test_log__record_carries_rank_role_request(void **state)
{
	(void)state;
	log_set_sink(keep_last, NULL);
	log_set_identity(3, "draft");
	log_set_request(42);
	LOG_ERROR("x");
	assert_int_equal(g_last.rank, 3);
	assert_string_equal(g_last_role, "draft");
	assert_int_equal(g_last.request_id, 42);
	assert_int_equal(g_last.level, LOG_LEVEL_ERROR);
	char line[512];
	struct log_record rec = g_last;
	rec.msg = "hello";
	rec.role = "draft";
	log_format_record(&rec, line, sizeof(line));
	assert_non_null(strstr(line, "error r3 draft req=42 test_common.c:"));
	assert_non_null(strstr(line, ": hello"));
	log_set_request(0);
	log_set_identity(-1, "-");
	log_set_sink(NULL, NULL);
}

static void test_log__level_names_parse(void **state)
{
	(void)state;
	enum log_level l;
	assert_true(log_level_parse("DEBUG", &l));
	assert_int_equal(l, LOG_LEVEL_DEBUG);
	assert_true(log_level_parse("warn", &l));
	assert_int_equal(l, LOG_LEVEL_WARN);
	assert_false(log_level_parse("verbose", &l));
	assert_false(log_level_parse(NULL, &l));
}

static void test_alloc__overflow_is_refused(void **state)
{
	(void)state;
	assert_null(specd_malloc_array(SIZE_MAX / 2, 4));
	assert_null(specd_calloc(SIZE_MAX / 8, 16));
	void *p = specd_malloc_array(4, 4);
	assert_non_null(p);
	assert_null(specd_realloc_array(p, SIZE_MAX, 2));
	specd_free(p); /* still valid after the failed realloc */
}

static void test_alloc__aligned(void **state)
{
	(void)state;
	void *p = specd_aligned_alloc(64, 100);
	assert_non_null(p);
	assert_int_equal((uintptr_t)p % 64, 0);
	specd_free(p);
	assert_null(specd_aligned_alloc(48, 100)); /* not a power of two */
}

static void test_alloc__huge_is_aligned_zeroed_and_writable(void **state)
{
	(void)state;
	size_t sizes[] = {1, (size_t)2 << 20, ((size_t)5 << 20) + 123};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *p = specd_huge_alloc(sizes[i]);
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % ((uintptr_t)2 << 20), 0);
		assert_int_equal(p[0], 0);
		assert_int_equal(p[sizes[i] - 1], 0);
		memset(p, 0xab, sizes[i]);
		assert_int_equal(p[sizes[i] - 1], 0xab);
		specd_huge_free(p, sizes[i]);
	}
	assert_null(specd_huge_alloc(0));
	assert_null(specd_huge_alloc(SIZE_MAX - 1));
	specd_huge_free(NULL, 1); /* no-op */
	specd_alloc_fail_after(1);
	assert_null(specd_huge_alloc(4096));
	specd_alloc_fail_reset();
	(void)specd_huge_pages_offered(); /* either answer; it must not fail */
}

static void test_alloc__failure_injection_counts(void **state)
{
	(void)state;
	specd_alloc_fail_after(3);
	void *a = specd_malloc_array(1, 8);
	char *b = specd_strdup("x");
	void *c = specd_calloc(1, 8);
	void *d = specd_calloc(1, 8);
	assert_non_null(a);
	assert_non_null(b);
	assert_null(c);
	assert_null(d);
	assert_int_equal(specd_alloc_count(), 4);
	specd_alloc_fail_reset();
	c = specd_calloc(1, 8);
	assert_non_null(c);
	specd_free(a);
	specd_free(b);
	specd_free(c);
}

static void test_clock__monotonic_and_sleeps(void **state)
{
	(void)state;
	double t0 = specd_now();
	specd_sleep(0.002);
	assert_true(specd_now() - t0 >= 0.0019);
}

/* Reading a buffer from the front in pieces leaves the unread bytes where they are until
 * the read part outweighs them, so each piece costs its own length, not the rest's. */
static void test_buf__advance_moves_rest_only_when_outweighed(void **state)
{
	(void)state;
	struct specd_buf b;
	specd_buf_init(&b);
	uint8_t bytes[100];
	for (int i = 0; i < 100; i++)
		bytes[i] = (uint8_t)i;
	assert_int_equal(specd_buf_append(&b, bytes, sizeof(bytes)), SPECD_OK);
	size_t head = 0;
	specd_buf_advance(&b, &head, 10);
	assert_int_equal(head, 10);
	assert_int_equal(b.len, 100);
	specd_buf_advance(&b, &head, 39);
	assert_int_equal(head, 49); /* 49 read, 51 unread: still in place */
	assert_int_equal(b.data[head], 49);
	specd_buf_advance(&b, &head, 1);
	assert_int_equal(head, 0); /* 50 read, 50 unread: moved to the front */
	assert_int_equal(b.len, 50);
	assert_int_equal(b.data[0], 50);
	/* Byte by byte, every byte read is the next one and nothing is lost. */
	for (int i = 50; i < 99; i++) {
		assert_int_equal(b.data[head], i);
		specd_buf_advance(&b, &head, 1);
	}
	assert_int_equal(b.len - head, 1);
	assert_int_equal(b.data[head], 99);
	specd_buf_advance(&b, &head, 1);
	assert_int_equal(b.len, 0); /* all read: empty again */
	assert_int_equal(head, 0);
	specd_buf_fini(&b);
}

/* Only an empty buffer past the size kept gives its memory back. */
static void test_buf__trim_frees_only_empty_and_large(void **state)
{
	(void)state;
	struct specd_buf b;
	specd_buf_init(&b);
	uint8_t bytes[4096] = {0};
	assert_int_equal(specd_buf_append(&b, bytes, sizeof(bytes)), SPECD_OK);
	specd_buf_trim(&b, 1024); /* not empty: kept */
	assert_non_null(b.data);
	assert_int_equal(b.len, sizeof(bytes));
	size_t head = 0;
	specd_buf_advance(&b, &head, sizeof(bytes));
	specd_buf_trim(&b, 1u << 20); /* empty but small: kept for reuse */
	assert_non_null(b.data);
	specd_buf_trim(&b, 1024); /* empty and large: freed, and usable again */
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	assert_int_equal(specd_buf_append(&b, bytes, 10), SPECD_OK);
	assert_int_equal(b.len, 10);
	specd_buf_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status__every_code_has_text),
		cmocka_unit_test(test_error__formats_and_returns_code),
		cmocka_unit_test(test_log__sink_gets_records_at_or_above_level),
		cmocka_unit_test(test_log__record_carries_rank_role_request),
		cmocka_unit_test(test_log__level_names_parse),
		cmocka_unit_test(test_alloc__overflow_is_refused),
		cmocka_unit_test(test_alloc__aligned),
		cmocka_unit_test(test_alloc__huge_is_aligned_zeroed_and_writable),
		cmocka_unit_test(test_alloc__failure_injection_counts),
		cmocka_unit_test(test_clock__monotonic_and_sleeps),
		cmocka_unit_test(test_buf__advance_moves_rest_only_when_outweighed),
		cmocka_unit_test(test_buf__trim_frees_only_empty_and_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
