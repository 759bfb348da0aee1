/* Frames and envelopes; see wire.h. */
#include "wire.h"

#include <string.h>

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void wire_reader_init(struct wire_reader *r, uint32_t max_frame)
{
	memset(r, 0, sizeof(*r));
	r->max_frame = max_frame;
	specd_buf_init(&r->buf);
}

void wire_reader_fini(struct wire_reader *r)
{
	specd_buf_fini(&r->buf);
}

enum specd_status wire_reader_push(struct wire_reader *r, const void *data, size_t n)
{
	const uint8_t *p = data;
	/* A refused frame's bytes are skipped only once everything before it has been
	 * handed out, which wire_reader_next guarantees by setting skip only then. */
	if (r->skip && r->buf.len == r->head + r->consumed) {
		size_t drop = n < r->skip ? n : (size_t)r->skip;
		r->skip -= drop;
		p += drop;
		n -= drop;
	}
	return specd_buf_append(&r->buf, p, n);
}

enum specd_status wire_reader_next(struct wire_reader *r, enum wire_event *ev,
				   const uint8_t **frame, uint32_t *len)
{
	specd_buf_advance(&r->buf, &r->head, r->consumed);
	r->consumed = 0;
	*ev = WIRE_NEED_MORE;
	size_t have = r->buf.len - r->head;
	if (r->skip) {
		/* Bytes of a refused frame that arrived in the same push as it. */
		size_t drop = have < r->skip ? have : (size_t)r->skip;
		specd_buf_advance(&r->buf, &r->head, drop);
		r->skip -= drop;
		if (r->skip)
			return SPECD_OK;
		have = r->buf.len - r->head;
	}
	if (have < WIRE_PREFIX_BYTES)
		return SPECD_OK;
	const uint8_t *at = r->buf.data + r->head;
	uint8_t flag = at[0];
	uint32_t n = be32(at + 1);
	if (flag > WIRE_FLAG_COMPRESSED)
		return SPECD_PROTO;
	if (flag == WIRE_FLAG_COMPRESSED || n > r->max_frame) {
		*ev = flag == WIRE_FLAG_COMPRESSED ? WIRE_COMPRESSED : WIRE_TOO_LARGE;
		*len = n;
		r->consumed = WIRE_PREFIX_BYTES;
		r->skip = n;
		size_t here = have - WIRE_PREFIX_BYTES;
		size_t drop = here < n ? here : n;
		r->consumed += drop;
		r->skip -= drop;
		return SPECD_OK;
	}
	if (have - WIRE_PREFIX_BYTES < n)
		return SPECD_OK;
	*ev = WIRE_FRAME;
	*frame = at + WIRE_PREFIX_BYTES;
	*len = n;
	r->consumed = WIRE_PREFIX_BYTES + (size_t)n;
	return SPECD_OK;
}

bool wire_reader_mid_frame(const struct wire_reader *r)
{
	return r->skip || r->buf.len > r->head + r->consumed;
}

enum specd_status wire_pack(const Specd__V1__Envelope *env, struct specd_buf *out)
{
	size_t n = specd__v1__envelope__get_packed_size(env);
	if (n > UINT32_MAX)
		return SPECD_INVAL;
	enum specd_status st = specd_buf_reserve(out, WIRE_PREFIX_BYTES + n);
	if (st != SPECD_OK)
		return st;
	uint8_t *p = out->data + out->len;
	p[0] = 0;
	p[1] = (uint8_t)(n >> 24);
	p[2] = (uint8_t)(n >> 16);
	p[3] = (uint8_t)(n >> 8);
	p[4] = (uint8_t)n;
	specd__v1__envelope__pack(env, p + WIRE_PREFIX_BYTES);
	out->len += WIRE_PREFIX_BYTES + n;
	return SPECD_OK;
}

enum specd_status wire_unpack(const uint8_t *frame, uint32_t len, Specd__V1__Envelope **out)
{
	Specd__V1__Envelope *env = specd__v1__envelope__unpack(NULL, len, frame);
	if (!env)
		return SPECD_PROTO;
	*out = env;
	return SPECD_OK;
}

Specd__V1__Code wire_code_from_status(enum specd_status st)
{
	switch (st) {
	case SPECD_OK: return SPECD__V1__CODE__OK;
	case SPECD_INVAL: return SPECD__V1__CODE__INVALID_ARGUMENT;
	case SPECD_CONFIG: return SPECD__V1__CODE__FAILED_PRECONDITION;
	case SPECD_PROTO: return SPECD__V1__CODE__INVALID_ARGUMENT;
	case SPECD_NOMEM: return SPECD__V1__CODE__RESOURCE_EXHAUSTED;
	case SPECD_BUSY: return SPECD__V1__CODE__RESOURCE_EXHAUSTED;
	case SPECD_TIMEOUT: return SPECD__V1__CODE__DEADLINE_EXCEEDED;
	case SPECD_CANCELLED: return SPECD__V1__CODE__CANCELLED;
	case SPECD_UNSUPPORTED: return SPECD__V1__CODE__UNIMPLEMENTED;
	case SPECD_IO:
	case SPECD_CUDA:
	case SPECD_NCCL:
	case SPECD_MPI: return SPECD__V1__CODE__UNAVAILABLE;
	case SPECD_INTERNAL:
	case SPECD_STATUS_COUNT: break;
	}
	return SPECD__V1__CODE__INTERNAL;
}

const char *wire_code_name(Specd__V1__Code code)
{
	const ProtobufCEnumValue *v =
		protobuf_c_enum_descriptor_get_value(&specd__v1__code__descriptor, (int)code);
	return v ? v->name : "UNKNOWN";
}
