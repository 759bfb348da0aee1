/* Generate request validation; see request.h. */
#include "request.h"

#include <math.h>
#include <string.h>

#include "drafters/method.h"
#include "model/chat.h"
#include "utf8.h"

static bool text_ok(const char *s)
{
	return !s || utf8_valid(s, strlen(s));
}

enum specd_status req_validate(const Specd__V1__GenerateRequest *r,
			       const struct cfg_limits *limits, struct specd_error *err)
{
	int kinds = (r->prompt != NULL) + (r->n_prompt_tokens > 0) + (r->n_messages > 0);
	if (kinds > 1)
		return specd_errorf(err, SPECD_INVAL,
				    "give one of prompt, prompt_tokens or messages, not several");
	if (r->request_id && (strlen(r->request_id) > REQ_MAX_ID_BYTES || !text_ok(r->request_id)))
		return specd_errorf(err, SPECD_INVAL,
				    "request_id must be valid UTF-8 of at most %d bytes",
				    REQ_MAX_ID_BYTES);
	if (!text_ok(r->prompt))
		return specd_errorf(err, SPECD_INVAL, "prompt is not valid UTF-8");
	size_t max_bytes = (size_t)limits->prompt_tokens * REQ_MAX_BYTES_PER_TOKEN;
	if (r->prompt && strlen(r->prompt) > max_bytes)
		return specd_errorf(err, SPECD_INVAL, "prompt of %zu bytes is over the limit of "
				    "%u tokens", strlen(r->prompt), limits->prompt_tokens);
	if (r->n_prompt_tokens > limits->prompt_tokens)
		return specd_errorf(err, SPECD_INVAL, "%zu prompt tokens, over the limit of %u",
				    r->n_prompt_tokens, limits->prompt_tokens);
	size_t chat_bytes = 0;
	for (size_t i = 0; i < r->n_messages; i++) {
		const Specd__V1__ChatMessage *m = r->messages[i];
		if (!m->role || (strcmp(m->role, "system") && strcmp(m->role, "user") &&
				 strcmp(m->role, "assistant")))
			return specd_errorf(err, SPECD_INVAL,
					    "messages[%zu].role must be system, user or assistant", i);
		if (!text_ok(m->content))
			return specd_errorf(err, SPECD_INVAL, "messages[%zu].content is not valid "
					    "UTF-8", i);
		/* A turn's markers and role count too: many empty messages are work. */
		chat_bytes += (m->content ? strlen(m->content) : 0) + CHAT_TURN_BYTES;
	}
	if (chat_bytes > max_bytes)
		return specd_errorf(err, SPECD_INVAL, "messages of %zu bytes are over the limit "
				    "of %u tokens", chat_bytes, limits->prompt_tokens);
	if (r->has_max_tokens && (r->max_tokens < 1 || r->max_tokens > limits->max_tokens))
		return specd_errorf(err, SPECD_INVAL, "max_tokens %u is outside 1..%u", r->max_tokens,
				    limits->max_tokens);
	if (r->n_stop > REQ_MAX_STOPS)
		return specd_errorf(err, SPECD_INVAL, "%zu stop strings, at most %d", r->n_stop,
				    REQ_MAX_STOPS);
	for (size_t i = 0; i < r->n_stop; i++) {
		if (strlen(r->stop[i]) > REQ_MAX_STOP_BYTES || !text_ok(r->stop[i]))
			return specd_errorf(err, SPECD_INVAL, "stop[%zu] must be valid UTF-8 of at "
					    "most %d bytes", i, REQ_MAX_STOP_BYTES);
	}
	if (r->has_logprobs && r->logprobs > REQ_MAX_LOGPROBS)
		return specd_errorf(err, SPECD_INVAL, "logprobs %u, at most %d", r->logprobs,
				    REQ_MAX_LOGPROBS);
	const Specd__V1__Sampling *s = r->sampling;
	if (s) {
		if (s->has_temperature && !(isfinite(s->temperature) && s->temperature >= 0 &&
					    s->temperature <= 100))
			return specd_errorf(err, SPECD_INVAL, "temperature must be 0..100");
		if (s->has_top_p && !(isfinite(s->top_p) && s->top_p > 0 && s->top_p <= 1))
			return specd_errorf(err, SPECD_INVAL, "top_p must be in (0, 1]");
		if (s->has_min_p && !(isfinite(s->min_p) && s->min_p >= 0 && s->min_p <= 1))
			return specd_errorf(err, SPECD_INVAL, "min_p must be in [0, 1]");
		if (s->has_top_k && s->top_k > 1000000)
			return specd_errorf(err, SPECD_INVAL, "top_k %u is too large", s->top_k);
	}
	const Specd__V1__Speculation *sp = r->speculation;
	if (sp) {
		enum draft_method m;
		if (sp->method && !draft_method_parse(sp->method, &m))
			return specd_errorf(err, SPECD_INVAL, "speculation.method '%.32s' is none of "
					    "none, ngram, draft_model, eagle, medusa", sp->method);
		if (sp->has_spec_tokens && (sp->spec_tokens < 1 || sp->spec_tokens > REQ_MAX_SPEC_TOKENS))
			return specd_errorf(err, SPECD_INVAL, "speculation.spec_tokens must be 1..%d",
					    REQ_MAX_SPEC_TOKENS);
	}
	return SPECD_OK;
}

uint32_t req_max_tokens(const Specd__V1__GenerateRequest *r, const struct cfg_limits *limits)
{
	if (r->has_max_tokens)
		return r->max_tokens;
	return REQ_DEFAULT_MAX_TOKENS < limits->max_tokens ? REQ_DEFAULT_MAX_TOKENS
							    : limits->max_tokens;
}
