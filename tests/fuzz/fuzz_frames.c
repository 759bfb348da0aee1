/* libFuzzer target: bytes from a client, through everything the server does with them
 * before the compute thread: the frame reader (fed in pieces whose sizes the input
 * picks), envelope decoding, the Generate and Cancel payloads, request validation.
 * Build: cmake -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON; run: fuzz_frames CORPUS. */
#include <stddef.h>
#include <stdint.h>

#include "daemon/request.h"
#include "daemon/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handle_frame(const uint8_t *frame, uint32_t len)
{
	Specd__V1__Envelope *env = NULL;
	if (wire_unpack(frame, len, &env) != SPECD_OK)
		return;
	const uint8_t *p = env->has_payload ? env->payload.data : NULL;
	size_t n = env->has_payload ? env->payload.len : 0;
	if (env->method == SPECD__V1__METHOD__GENERATE) {
		Specd__V1__GenerateRequest *r = specd__v1__generate_request__unpack(NULL, n, p);
		if (r) {
			struct cfg_limits limits = {.frame_bytes = 4096, .prompt_tokens = 64,
						    .max_tokens = 128, .jobs = 4, .connections = 4};
			struct specd_error err;
			req_validate(r, &limits, &err);
			req_max_tokens(r, &limits);
			specd__v1__generate_request__free_unpacked(r, NULL);
		}
	} else if (env->method == SPECD__V1__METHOD__CANCEL) {
		Specd__V1__CancelRequest *r = specd__v1__cancel_request__unpack(NULL, n, p);
		if (r)
			specd__v1__cancel_request__free_unpacked(r, NULL);
	}
	specd__v1__envelope__free_unpacked(env, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] % 17 + 1; /* how the bytes arrive */
	data++;
	size--;
	struct wire_reader r;
	wire_reader_init(&r, 4096);
	for (size_t off = 0; off < size; off += piece) {
		size_t k = size - off < piece ? size - off : piece;
		if (wire_reader_push(&r, data + off, k) != SPECD_OK)
			break;
		for (;;) {
			enum wire_event ev;
			const uint8_t *frame = NULL;
			uint32_t len = 0;
			if (wire_reader_next(&r, &ev, &frame, &len) != SPECD_OK ||
			    ev == WIRE_NEED_MORE)
				break;
			/* The reader's contract, checked on every input: a frame is within the
			 * limit and inside the bytes the reader holds. */
			if (ev == WIRE_FRAME &&
			    (len > r.max_frame || frame < r.buf.data ||
			     frame + len > r.buf.data + r.buf.len))
				__builtin_trap();
			if (ev == WIRE_FRAME)
				handle_frame(frame, len);
		}
	}
	wire_reader_fini(&r);
	return 0;
}
