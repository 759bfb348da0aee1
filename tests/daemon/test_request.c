/* daemon/request: each rule of a Generate request, broken alone, is refused with
 * SPECD_INVAL and a message naming the field; a request within every rule passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/request.h"
#include "model/chat.h"

enum { PROMPT_TOKENS = 16 };

static const struct cfg_limits limits = {
	.frame_bytes = 1 << 20, .prompt_tokens = PROMPT_TOKENS, .max_tokens = 100, .jobs = 4,
	.connections = 4,
};

/* A valid request (chat or prompt) and the parts a case may change. */
struct req {
	Specd__V1__GenerateRequest r;
	Specd__V1__ChatMessage msg[2];
	Specd__V1__ChatMessage *msgs[2];
	Specd__V1__Sampling sampling;
	Specd__V1__Speculation spec;
	char *stops[REQ_MAX_STOPS + 1];
};

static void req_init(struct req *q)
{
	*q = (struct req){
		.r = (Specd__V1__GenerateRequest)SPECD__V1__GENERATE_REQUEST__INIT,
		.sampling = (Specd__V1__Sampling)SPECD__V1__SAMPLING__INIT,
		.spec = (Specd__V1__Speculation)SPECD__V1__SPECULATION__INIT,
	};
	for (int i = 0; i < 2; i++) {
		q->msg[i] = (Specd__V1__ChatMessage)SPECD__V1__CHAT_MESSAGE__INIT;
		q->msgs[i] = &q->msg[i];
	}
	static char prompt[] = "Once upon a time", id[] = "job-1";
	q->r.prompt = prompt;
	q->r.request_id = id;
	q->r.sampling = &q->sampling;
	q->r.speculation = &q->spec;
}

/* Validates q; expects SPECD_OK, or SPECD_INVAL with `words` in the message. */
static void expect(struct req *q, const char *words)
{
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = req_validate(&q->r, &limits, &err);
	if (!words) {
		if (st != SPECD_OK)
			fail_msg("refused a valid request: %s", err.msg);
		return;
	}
	if (st != SPECD_INVAL || !strstr(err.msg, words))
		fail_msg("want INVALID with '%s', got status %d: '%s'", words, st, err.msg);
}

/* A string of n copies of c (owned by the caller). */
static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void test_request__valid_requests_pass(void **state)
{
	(void)state;
	struct req q;
	req_init(&q);
	q.sampling.has_temperature = true, q.sampling.temperature = 0.7f;
	q.sampling.has_top_p = true, q.sampling.top_p = 1.0f;
	q.r.has_max_tokens = true, q.r.max_tokens = limits.max_tokens;
	q.spec.method = (char[]){"ngram"};
	expect(&q, NULL);
	/* A chat whose turns together are exactly at the byte bound. */
	char *half = repeat('a', limits.prompt_tokens * REQ_MAX_BYTES_PER_TOKEN / 2 -
				      CHAT_TURN_BYTES);
	req_init(&q);
	q.r.prompt = NULL;
	q.msg[0].role = (char[]){"system"}, q.msg[0].content = half;
	q.msg[1].role = (char[]){"user"}, q.msg[1].content = half;
	q.r.n_messages = 2, q.r.messages = q.msgs;
	expect(&q, NULL);
	free(half);
}

static void test_request__each_broken_rule_is_named(void **state)
{
	(void)state;
	struct req q;
	uint32_t ids[PROMPT_TOKENS + 1];
	memset(ids, 0, sizeof(ids));

	req_init(&q); /* two kinds of prompt */
	q.r.n_prompt_tokens = 1, q.r.prompt_tokens = ids;
	expect(&q, "give one of prompt");
	req_init(&q);
	q.r.request_id = repeat('x', REQ_MAX_ID_BYTES + 1);
	expect(&q, "request_id");
	free(q.r.request_id);
	req_init(&q);
	q.r.request_id = (char[]){"\xff"};
	expect(&q, "request_id");
	req_init(&q);
	q.r.prompt = (char[]){"bad \xc0\xaf"};
	expect(&q, "prompt is not valid UTF-8");
	req_init(&q);
	q.r.prompt = NULL;
	q.r.n_prompt_tokens = limits.prompt_tokens + 1, q.r.prompt_tokens = ids;
	expect(&q, "prompt tokens, over the limit");

	req_init(&q);
	q.r.prompt = NULL, q.r.n_messages = 1, q.r.messages = q.msgs;
	q.msg[0].role = (char[]){"tool"}, q.msg[0].content = (char[]){"hi"};
	expect(&q, "messages[0].role");
	q.msg[0].role = (char[]){"user"}, q.msg[0].content = (char[]){"\xed\xa0\x80"};
	expect(&q, "messages[0].content is not valid UTF-8");

	req_init(&q);
	q.r.has_max_tokens = true, q.r.max_tokens = 0;
	expect(&q, "max_tokens 0");
	q.r.max_tokens = limits.max_tokens + 1;
	expect(&q, "max_tokens 101");
	req_init(&q);
	char end[] = "end";
	for (int i = 0; i <= REQ_MAX_STOPS; i++)
		q.stops[i] = end;
	q.r.n_stop = REQ_MAX_STOPS + 1, q.r.stop = q.stops;
	expect(&q, "stop strings");
	req_init(&q);
	q.stops[0] = repeat('s', REQ_MAX_STOP_BYTES + 1);
	q.r.n_stop = 1, q.r.stop = q.stops;
	expect(&q, "stop[0]");
	free(q.stops[0]);
	req_init(&q);
	q.r.has_logprobs = true, q.r.logprobs = REQ_MAX_LOGPROBS + 1;
	expect(&q, "logprobs");

	req_init(&q);
	q.sampling.has_temperature = true, q.sampling.temperature = -1.0f;
	expect(&q, "temperature");
	req_init(&q);
	q.sampling.has_top_p = true, q.sampling.top_p = 0.0f;
	expect(&q, "top_p");
	req_init(&q);
	q.sampling.has_min_p = true, q.sampling.min_p = 1.5f;
	expect(&q, "min_p");
	req_init(&q);
	q.sampling.has_top_k = true, q.sampling.top_k = 1000001;
	expect(&q, "top_k");
	req_init(&q);
	q.spec.method = (char[]){"lookahead"};
	expect(&q, "speculation.method");
	req_init(&q);
	q.spec.has_spec_tokens = true, q.spec.spec_tokens = REQ_MAX_SPEC_TOKENS + 1;
	expect(&q, "speculation.spec_tokens");
}

/* Text too long for the prompt limit is refused before it reaches the tokenizer,
 * whether it comes as a prompt or spread over chat messages. */
static void test_request__text_over_the_byte_bound_is_refused_before_tokenizing(void **state)
{
	(void)state;
	size_t bound = (size_t)limits.prompt_tokens * REQ_MAX_BYTES_PER_TOKEN;
	char *half = repeat('a', bound / 2), *over = repeat('a', bound + 1);
	struct req q;
	req_init(&q);
	q.r.prompt = over;
	expect(&q, "prompt of 1025 bytes is over the limit of 16 tokens");
	req_init(&q);
	q.r.prompt = NULL;
	q.msg[0].role = (char[]){"system"}, q.msg[0].content = half;
	q.msg[1].role = (char[]){"user"}, q.msg[1].content = over + bound / 2; /* half + 1 */
	q.r.n_messages = 2, q.r.messages = q.msgs;
	expect(&q, "messages of 1057 bytes are over the limit of 16 tokens");
	/* Empty turns count too: a frame of many empty messages is refused before it is
	 * turned into ids. */
	enum { N_EMPTY = PROMPT_TOKENS * REQ_MAX_BYTES_PER_TOKEN / CHAT_TURN_BYTES + 1 };
	Specd__V1__ChatMessage empty[N_EMPTY], *emptyp[N_EMPTY];
	for (size_t i = 0; i < N_EMPTY; i++) {
		empty[i] = (Specd__V1__ChatMessage)SPECD__V1__CHAT_MESSAGE__INIT;
		empty[i].role = q.msg[1].role;
		emptyp[i] = &empty[i];
	}
	q.r.n_messages = N_EMPTY, q.r.messages = emptyp;
	expect(&q, "messages of 1040 bytes are over the limit of 16 tokens");
	free(half);
	free(over);
}

static void test_request__max_tokens_default_is_capped_by_the_limit(void **state)
{
	(void)state;
	struct req q;
	req_init(&q);
	assert_int_equal(req_max_tokens(&q.r, &limits), limits.max_tokens); /* 100 < 256 */
	struct cfg_limits roomy = limits;
	roomy.max_tokens = 4096;
	assert_int_equal(req_max_tokens(&q.r, &roomy), REQ_DEFAULT_MAX_TOKENS);
	q.r.has_max_tokens = true, q.r.max_tokens = 7;
	assert_int_equal(req_max_tokens(&q.r, &roomy), 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request__valid_requests_pass),
		cmocka_unit_test(test_request__each_broken_rule_is_named),
		cmocka_unit_test(test_request__text_over_the_byte_bound_is_refused_before_tokenizing),
		cmocka_unit_test(test_request__max_tokens_default_is_capped_by_the_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
