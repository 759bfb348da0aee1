/* Chat prompts for instruct models: a conversation becomes the token ids of the
 * model's ChatML template (SmolLM2 and Qwen2.5 both use it), ready for prefill; the
 * reply ends at <|im_end|>, which both files name as their EOS. Used by specd-run's
 * chat mode and the daemon's chat requests.
 *
 *   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n
 *   ...<|im_start|>assistant\n
 *
 * Threads: pure functions of their arguments; any thread. */
#ifndef SPECD_MODEL_CHAT_H
#define SPECD_MODEL_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/status.h"

struct tok;
struct gguf_file;

struct chat_msg {
	const char *role;    /* "system", "user", "assistant" */
	const char *content; /* UTF-8, NUL-terminated */
};

/* The system prompt the file's template (tokenizer.chat_template) inserts when a
 * conversation has none: "You are a helpful AI assistant named SmolLM, trained by
 * Hugging Face" for SmolLM2, "You are Qwen, created by Alibaba Cloud. You are a helpful
 * assistant." for Qwen2.5. *out gets a NUL-terminated copy (free with specd_free), or
 * NULL when the ChatML template has none (then no system turn is added). Errors:
 * SPECD_UNSUPPORTED (no template, or not ChatML), SPECD_NOMEM; *out is NULL then. */
enum specd_status chat_default_system(const struct gguf_file *f, char **out,
				      struct specd_error *err);

/* One user message as the file's template renders it for a reply: its default system
 * prompt (if it has one), the message, the assistant header. *ids gets a malloc'd
 * array (free with specd_free) of *n ids. Errors: those of chat_default_system and
 * chat_format; *ids is NULL then. */
enum specd_status chat_user_prompt(const struct tok *t, const struct gguf_file *f,
				   const char *content, int32_t **ids, size_t *n,
				   struct specd_error *err);

/* Token ids of the ChatML rendering of msgs[0..n). When msgs[0] is not a system
 * message and default_system is not NULL, a system message with it comes first (as the
 * templates do). add_assistant appends "<|im_start|>assistant\n" so the model writes
 * the reply. Markers are the vocabulary's <|im_start|> and <|im_end|> ids; the text
 * between two markers is encoded as one stretch with tok_encode, so a message's
 * content never produces special tokens (a client cannot forge a turn), and for
 * contents that do not spell them the ids equal Hugging Face's apply_chat_template
 * followed by encode. Errors: SPECD_UNSUPPORTED (the vocabulary lacks <|im_start|> or
 * <|im_end|>), SPECD_INVAL (a NULL role or content, or cap too small: *n_out is then
 * the count needed), SPECD_NOMEM. */
enum specd_status chat_format(const struct tok *t, const struct chat_msg *msgs, size_t n,
			      const char *default_system, bool add_assistant, int32_t *ids,
			      size_t cap, size_t *n_out, struct specd_error *err);

/* What a turn adds to its role and content at most: markers, newlines (the bound below
 * counts it per message, and the daemon's byte bound on chat requests too). */
#define CHAT_TURN_BYTES 16

/* An upper bound on chat_format's ids for these messages (cheap; for sizing). */
size_t chat_format_bound(const struct chat_msg *msgs, size_t n, const char *default_system);

#endif
