/* daemon/wire: frames split anywhere, refused frames skipped without losing the
 * connection, many frames in one read handed out in place, envelopes round-tripped,
 * garbage refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/wire.h"

static void pack_health(uint64_t call_id, struct specd_buf *out)
{
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = 1;
	env.call_id = call_id;
	env.has_method = 1;
	env.method = SPECD__V1__METHOD__HEALTH;
	assert_int_equal(wire_pack(&env, out), SPECD_OK);
}

/* docs/protocol.md's worked example: the Health call and its reply, byte for byte. */
static void test_pack__the_protocol_docs_worked_health_example(void **state)
{
	(void)state;
	static const uint8_t call[] = {0x00, 0x00, 0x00, 0x00, 0x04, 0x08, 0x01, 0x10, 0x04};
	static const uint8_t reply[] = {0x00, 0x00, 0x00, 0x00, 0x13, 0x08, 0x01, 0x10, 0x04,
					0x1a, 0x0b, 0x08, 0x01, 0x11, 0x00, 0x00, 0x00, 0x00,
					0x00, 0x00, 0x29, 0x40, 0x38, 0x01};
	struct specd_buf b;
	specd_buf_init(&b);
	pack_health(1, &b);
	assert_int_equal(b.len, sizeof(call));
	assert_memory_equal(b.data, call, sizeof(call));

	Specd__V1__HealthResponse h = SPECD__V1__HEALTH_RESPONSE__INIT;
	h.has_serving = h.has_uptime_s = 1;
	h.serving = 1;
	h.uptime_s = 12.5;
	uint8_t payload[16];
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = env.has_method = env.has_payload = env.has_end = 1;
	env.call_id = 1;
	env.method = SPECD__V1__METHOD__HEALTH;
	env.payload.data = payload;
	env.payload.len = specd__v1__health_response__pack(&h, payload);
	env.end = 1;
	b.len = 0;
	assert_int_equal(wire_pack(&env, &b), SPECD_OK);
	assert_int_equal(b.len, sizeof(reply));
	assert_memory_equal(b.data, reply, sizeof(reply));
	specd_buf_fini(&b);
}

/* Feeds `n` bytes in pieces of `step` and collects the call ids of whole frames and the
 * refusals, in order: call id for a frame, 1000000 + len for a refusal. */
static size_t feed(struct wire_reader *r, const uint8_t *bytes, size_t n, size_t step,
		   uint64_t *events, size_t cap)
{
	size_t got = 0;
	for (size_t off = 0; off < n; off += step) {
		size_t k = n - off < step ? n - off : step;
		assert_int_equal(wire_reader_push(r, bytes + off, k), SPECD_OK);
		for (;;) {
			enum wire_event ev;
			const uint8_t *frame = NULL;
			uint32_t len = 0;
			assert_int_equal(wire_reader_next(r, &ev, &frame, &len), SPECD_OK);
			if (ev == WIRE_NEED_MORE)
				break;
			assert_true(got < cap);
			if (ev == WIRE_FRAME) {
				Specd__V1__Envelope *env = NULL;
				assert_int_equal(wire_unpack(frame, len, &env), SPECD_OK);
				events[got++] = env->call_id;
				specd__v1__envelope__free_unpacked(env, NULL);
			} else {
				events[got++] = 1000000 + len;
			}
		}
	}
	return got;
}

static void test_reader__frames_split_at_every_size(void **state)
{
	(void)state;
	struct specd_buf stream;
	specd_buf_init(&stream);
	pack_health(7, &stream);
	pack_health(8, &stream);
	pack_health(300, &stream);
	for (size_t step = 1; step <= stream.len; step++) {
		struct wire_reader r;
		wire_reader_init(&r, 1024);
		uint64_t ev[8];
		size_t n = feed(&r, stream.data, stream.len, step, ev, 8);
		assert_int_equal(n, 3);
		assert_int_equal(ev[0], 7);
		assert_int_equal(ev[1], 8);
		assert_int_equal(ev[2], 300);
		wire_reader_fini(&r);
	}
	specd_buf_fini(&stream);
}

static void test_reader__oversized_frame_is_skipped_and_next_served(void **state)
{
	(void)state;
	struct specd_buf stream;
	specd_buf_init(&stream);
	uint8_t big[5 + 100] = {0, 0, 0, 0, 100};
	memset(big + 5, 0xee, 100);
	assert_int_equal(specd_buf_append(&stream, big, sizeof(big)), SPECD_OK);
	pack_health(9, &stream);
	for (size_t step = 1; step <= stream.len; step += 7) {
		struct wire_reader r;
		wire_reader_init(&r, 50);
		uint64_t ev[4];
		size_t n = feed(&r, stream.data, stream.len, step, ev, 4);
		assert_int_equal(n, 2);
		assert_int_equal(ev[0], 1000000 + 100);
		assert_int_equal(ev[1], 9);
		assert_true(r.buf.cap <= 256); /* the refused body was never stored whole */
		wire_reader_fini(&r);
	}
	specd_buf_fini(&stream);
}

/* mid_frame (the server's frame_seconds clock): true from a frame's first byte until it
 * is handed out, and while a refused frame's bytes are still to come. */
static void test_reader__mid_frame_from_first_byte_to_whole(void **state)
{
	(void)state;
	struct specd_buf stream;
	specd_buf_init(&stream);
	pack_health(5, &stream);
	uint8_t big[5 + 10] = {0, 0, 0, 0, 100}; /* announces 100 of a limit of 50 */
	assert_int_equal(specd_buf_append(&stream, big, sizeof(big)), SPECD_OK);
	size_t health = stream.len - sizeof(big);
	struct wire_reader r;
	wire_reader_init(&r, 50);
	uint64_t ev[4];
	assert_false(wire_reader_mid_frame(&r));
	assert_int_equal(feed(&r, stream.data, 1, 1, ev, 4), 0);
	assert_true(wire_reader_mid_frame(&r));
	assert_int_equal(feed(&r, stream.data + 1, health - 1, health, ev, 4), 1);
	assert_false(wire_reader_mid_frame(&r));
	assert_int_equal(feed(&r, stream.data + health, sizeof(big), 64, ev, 4), 1);
	assert_int_equal(ev[0], 1000000 + 100);
	assert_true(wire_reader_mid_frame(&r)); /* 90 bytes of it still to skip */
	uint8_t rest[90] = {0};
	assert_int_equal(feed(&r, rest, sizeof(rest), 64, ev, 4), 0);
	assert_false(wire_reader_mid_frame(&r));
	wire_reader_fini(&r);
	specd_buf_fini(&stream);
}

static void test_reader__compressed_frame_refused_and_skipped(void **state)
{
	(void)state;
	struct wire_reader r;
	wire_reader_init(&r, 1024);
	const uint8_t compressed[] = {1, 0, 0, 0, 3, 'a', 'b', 'c'};
	assert_int_equal(wire_reader_push(&r, compressed, sizeof(compressed)), SPECD_OK);
	enum wire_event ev;
	const uint8_t *f;
	uint32_t len;
	assert_int_equal(wire_reader_next(&r, &ev, &f, &len), SPECD_OK);
	assert_int_equal(ev, WIRE_COMPRESSED);
	assert_int_equal(wire_reader_next(&r, &ev, &f, &len), SPECD_OK);
	assert_int_equal(ev, WIRE_NEED_MORE);
	assert_int_equal(r.buf.len, 0);
	wire_reader_fini(&r);
}

static void test_reader__bad_flag_and_huge_length(void **state)
{
	(void)state;
	struct wire_reader r;
	wire_reader_init(&r, 1024);
	const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
	assert_int_equal(wire_reader_push(&r, huge, sizeof(huge)), SPECD_OK);
	enum wire_event ev;
	const uint8_t *f;
	uint32_t len;
	assert_int_equal(wire_reader_next(&r, &ev, &f, &len), SPECD_OK);
	assert_int_equal(ev, WIRE_TOO_LARGE);
	assert_int_equal(len, UINT32_MAX);
	assert_int_equal(r.skip, UINT32_MAX - 3ull);
	wire_reader_fini(&r);

	wire_reader_init(&r, 1024);
	const uint8_t bad[] = {7, 0, 0, 0, 1, 0};
	assert_int_equal(wire_reader_push(&r, bad, sizeof(bad)), SPECD_OK);
	assert_int_equal(wire_reader_next(&r, &ev, &f, &len), SPECD_PROTO);
	wire_reader_fini(&r);
}

/* Many small frames in one read are handed out where they lie: the bytes behind a frame
 * are not moved down after each one (which made a read of n frames cost n^2). */
static void test_reader__many_frames_handed_out_in_place(void **state)
{
	(void)state;
	enum { N = 64 };
	struct specd_buf stream;
	specd_buf_init(&stream);
	for (uint64_t i = 1; i <= N; i++)
		pack_health(i, &stream);
	struct wire_reader r;
	wire_reader_init(&r, 1024);
	assert_int_equal(wire_reader_push(&r, stream.data, stream.len), SPECD_OK);
	const uint8_t *prev_end = NULL;
	for (uint64_t i = 1; i <= N; i++) {
		enum wire_event ev;
		const uint8_t *frame = NULL;
		uint32_t len = 0;
		assert_int_equal(wire_reader_next(&r, &ev, &frame, &len), SPECD_OK);
		assert_int_equal(ev, WIRE_FRAME);
		/* In place until half is read: each frame follows the one before. */
		if (prev_end && i <= N / 2)
			assert_ptr_equal(frame, prev_end + WIRE_PREFIX_BYTES);
		prev_end = frame + len;
		Specd__V1__Envelope *env = NULL;
		assert_int_equal(wire_unpack(frame, len, &env), SPECD_OK);
		assert_int_equal(env->call_id, i);
		specd__v1__envelope__free_unpacked(env, NULL);
	}
	enum wire_event ev;
	const uint8_t *frame = NULL;
	uint32_t len = 0;
	assert_int_equal(wire_reader_next(&r, &ev, &frame, &len), SPECD_OK);
	assert_int_equal(ev, WIRE_NEED_MORE);
	assert_int_equal(r.buf.len, 0); /* all handed out: the buffer is empty again */
	wire_reader_fini(&r);
	specd_buf_fini(&stream);
}

static void test_envelope__round_trip_and_garbage(void **state)
{
	(void)state;
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = 1;
	env.call_id = 0xfedcba9876543210ull;
	env.has_method = 1;
	env.method = SPECD__V1__METHOD__GENERATE;
	uint8_t payload[] = {1, 2, 3};
	env.has_payload = 1;
	env.payload.data = payload;
	env.payload.len = sizeof(payload);
	char token[] = "secret";
	env.auth_token = token;
	struct specd_buf b;
	specd_buf_init(&b);
	assert_int_equal(wire_pack(&env, &b), SPECD_OK);
	assert_int_equal(b.data[0], 0);
	uint32_t n = (uint32_t)b.data[1] << 24 | b.data[2] << 16 | b.data[3] << 8 | b.data[4];
	assert_int_equal(n, b.len - WIRE_PREFIX_BYTES);
	Specd__V1__Envelope *back = NULL;
	assert_int_equal(wire_unpack(b.data + 5, n, &back), SPECD_OK);
	assert_int_equal(back->call_id, env.call_id);
	assert_int_equal(back->method, SPECD__V1__METHOD__GENERATE);
	assert_int_equal(back->payload.len, 3);
	assert_string_equal(back->auth_token, "secret");
	specd__v1__envelope__free_unpacked(back, NULL);
	specd_buf_fini(&b);

	/* field 1 (call_id, a varint) sent as a length-delimited field: wrong wire type */
	const uint8_t wrong_type[] = {0x0a, 0x02, 'h', 'i'};
	assert_int_equal(wire_unpack(wrong_type, sizeof(wrong_type), &back), SPECD_PROTO);
	const uint8_t truncated[] = {0x08, 0xff};
	assert_int_equal(wire_unpack(truncated, sizeof(truncated), &back), SPECD_PROTO);
}

static void test_codes__status_mapping(void **state)
{
	(void)state;
	assert_int_equal(wire_code_from_status(SPECD_BUSY), SPECD__V1__CODE__RESOURCE_EXHAUSTED);
	assert_int_equal(wire_code_from_status(SPECD_CANCELLED), SPECD__V1__CODE__CANCELLED);
	assert_string_equal(wire_code_name(SPECD__V1__CODE__UNAUTHENTICATED), "UNAUTHENTICATED");
	assert_string_equal(wire_code_name((Specd__V1__Code)99), "UNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pack__the_protocol_docs_worked_health_example),
		cmocka_unit_test(test_reader__frames_split_at_every_size),
		cmocka_unit_test(test_reader__oversized_frame_is_skipped_and_next_served),
		cmocka_unit_test(test_reader__mid_frame_from_first_byte_to_whole),
		cmocka_unit_test(test_reader__compressed_frame_refused_and_skipped),
		cmocka_unit_test(test_reader__bad_flag_and_huge_length),
		cmocka_unit_test(test_reader__many_frames_handed_out_in_place),
		cmocka_unit_test(test_envelope__round_trip_and_garbage),
		cmocka_unit_test(test_codes__status_mapping),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
