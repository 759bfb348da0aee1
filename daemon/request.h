/* Checks a Generate request against the protocol's rules and the cluster's limits
 * before it reaches the compute thread: text fields are valid UTF-8 (protobuf-c does
 * not check), numbers are in range, exactly one kind of prompt. What can only be known
 * after tokenizing (prompt tokens, prompt + max_tokens against the context) is checked
 * by the scheduler. Pure; any thread. */
#ifndef SPECD_DAEMON_REQUEST_H
#define SPECD_DAEMON_REQUEST_H

#include "common/error.h"
#include "config.h"
#include "proto/specd.pb-c.h"

#define REQ_MAX_STOPS 16
#define REQ_MAX_STOP_BYTES 256
#define REQ_MAX_LOGPROBS 20
#define REQ_MAX_ID_BYTES 128
#define REQ_MAX_SPEC_TOKENS 32
#define REQ_DEFAULT_MAX_TOKENS 256
/* Prompt text (or chat turns together, each its content and CHAT_TURN_BYTES) of more
 * bytes than this times
 * limits.prompt_tokens is refused before tokenizing, which runs on the compute thread
 * and would stall every job for a huge text: real text averages 3-5 bytes a token,
 * and only runs of whitespace make single tokens of tens of bytes. */
#define REQ_MAX_BYTES_PER_TOKEN 64

/* SPECD_INVAL with a message naming the field when the request breaks a rule. */
enum specd_status req_validate(const Specd__V1__GenerateRequest *r,
			       const struct cfg_limits *limits, struct specd_error *err);

/* max_tokens as the request gives it, or the default (capped by the limit). */
uint32_t req_max_tokens(const Specd__V1__GenerateRequest *r, const struct cfg_limits *limits);

#endif
