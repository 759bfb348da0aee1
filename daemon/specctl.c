/* specctl: the command-line client of a specd cluster. Sends one call over the
 * protocol of docs/protocol.md and prints the reply: streamed text for generate (stats
 * at the end on stderr, or one JSON object with --json), the cluster for status.
 *
 * Exit codes: 0 done, 1 the server answered with an error or a job did not complete
 * (it ended with ERROR or SERVER_SHUTDOWN), 2 bad usage, 3 cannot connect, 4 the
 * connection broke or the server spoke nonsense. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "common/parse_int.h"
#include "common/version.h"
#include "netaddr.h"
#include "request.h"

enum {
	EXIT_OK = 0,
	EXIT_SERVER = 1,
	EXIT_USAGE = 2,
	EXIT_CONNECT = 3,
	EXIT_BROKEN = 4,
};

#define DEFAULT_ADDR "127.0.0.1:7070"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: specctl [--addr ADDR] [--token TOKEN] COMMAND [options]\n"
		"\n"
		"  --addr ADDR     HOST:PORT, [IPv6]:PORT or unix:PATH (default $SPECD_ADDR or %s)\n"
		"  --token TOKEN   the cluster's auth_token (default $SPECD_AUTH_TOKEN)\n"
		"\n"
		"commands:\n"
		"  generate --prompt TEXT | --chat TEXT [--system TEXT]\n"
		"           [--max-tokens N] [--temperature T] [--top-k K]\n"
		"           [--top-p P] [--min-p P] [--seed S] [--stop TEXT]... [--request-id ID]\n"
		"           [--method M] [--spec-tokens K] [--json [--logprobs N]]\n"
		"      --chat sends a user message (and --system a system prompt) through the\n"
		"      model's chat template; streams the text to stdout; method, acceptance and\n"
		"      tokens/s at the end\n"
		"      on stderr (--json: one JSON object on stdout instead); --method none\n"
		"      or a smaller --spec-tokens than the cluster's change only the speed;\n"
		"      --logprobs N adds each token's log-probability and the N most likely\n"
		"      tokens' (0..20) to the JSON\n"
		"  status [--json]   ranks, devices, memory, the speculation decision, counters\n"
		"  cancel ID         cancels the job with request id ID\n"
		"  health            exit 0 when the cluster is serving\n"
		"  shutdown          drains running jobs, then every rank exits\n"
		"\n"
		"exit codes: 0 done, 1 the server answered with an error or the job did not\n"
		"complete (it ended with ERROR or SERVER_SHUTDOWN; CANCELLED_BY_CLIENT is 0),\n"
		"2 bad usage, 3 cannot connect, 4 the connection broke\n",
		DEFAULT_ADDR);
}

struct gen_opts {
	const char *prompt, *request_id, *method;
	const char *chat, *system; /* a chat request: the user's message, a system prompt */
	const char *stops[REQ_MAX_STOPS];
	size_t n_stops;
	int64_t max_tokens, top_k, spec_tokens, logprobs;
	double temperature, top_p, min_p;
	uint64_t seed;
	int has_max_tokens, has_temperature, has_top_k, has_top_p, has_min_p, has_seed;
	int has_spec_tokens;
	int has_logprobs;
	int json;
};

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "specctl: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n(specctl --help for usage)\n");
	va_end(ap);
	return EXIT_USAGE;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
	char *end = NULL;
	errno = 0;
	double x = strtod(v, &end);
	if (!v[0] || *end || errno || !isfinite(x) || x < lo || x > hi) {
		fprintf(stderr, "specctl: %s expects a number in %g..%g, got '%s'\n", flag, lo, hi, v);
		return -1;
	}
	*out = x;
	return 0;
}

/* Counts and sizes: whole numbers only, so "--top-k 0.9" is refused rather than taken
 * as 0 (off). */
static int parse_int(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out)
{
	if (specd_parse_i64(v, lo, hi, out) != SPECD_OK) {
		fprintf(stderr, "specctl: %s expects an integer in %" PRId64 "..%" PRId64
			", got '%s'\n", flag, lo, hi, v);
		return -1;
	}
	return 0;
}

static int parse_generate(int argc, char **argv, struct gen_opts *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			o->json = 1;
			continue;
		}
		if (i + 1 >= argc)
			return bad_usage("%s needs a value", a);
		const char *v = argv[++i];
		double x;
		if (strcmp(a, "--prompt") == 0 || strcmp(a, "-p") == 0) {
			o->prompt = v;
		} else if (strcmp(a, "--chat") == 0) {
			o->chat = v;
		} else if (strcmp(a, "--system") == 0) {
			o->system = v;
		} else if (strcmp(a, "--request-id") == 0) {
			o->request_id = v;
		} else if (strcmp(a, "--method") == 0) {
			o->method = v;
		} else if (strcmp(a, "--stop") == 0) {
			if (o->n_stops == REQ_MAX_STOPS)
				return bad_usage("at most %d --stop strings", REQ_MAX_STOPS);
			o->stops[o->n_stops++] = v;
		} else if (strcmp(a, "--max-tokens") == 0 || strcmp(a, "-n") == 0) {
			if (parse_int(a, v, 1, 1000000000, &o->max_tokens))
				return EXIT_USAGE;
			o->has_max_tokens = 1;
		} else if (strcmp(a, "--temperature") == 0) {
			if (parse_num(a, v, 0, 100, &x))
				return EXIT_USAGE;
			o->temperature = x;
			o->has_temperature = 1;
		} else if (strcmp(a, "--top-k") == 0) {
			if (parse_int(a, v, 0, 1000000000, &o->top_k))
				return EXIT_USAGE;
			o->has_top_k = 1;
		} else if (strcmp(a, "--top-p") == 0) {
			if (parse_num(a, v, 0, 1, &x))
				return EXIT_USAGE;
			o->top_p = x;
			o->has_top_p = 1;
		} else if (strcmp(a, "--min-p") == 0) {
			if (parse_num(a, v, 0, 1, &x))
				return EXIT_USAGE;
			o->min_p = x;
			o->has_min_p = 1;
		} else if (strcmp(a, "--seed") == 0) {
			if (specd_parse_u64(v, UINT64_MAX, &o->seed) != SPECD_OK)
				return bad_usage("--seed expects an integer in 0..%" PRIu64
						 ", got '%s'", UINT64_MAX, v);
			o->has_seed = 1;
		} else if (strcmp(a, "--spec-tokens") == 0) {
			if (parse_int(a, v, 1, REQ_MAX_SPEC_TOKENS, &o->spec_tokens))
				return EXIT_USAGE;
			o->has_spec_tokens = 1;
		} else if (strcmp(a, "--logprobs") == 0) {
			if (parse_int(a, v, 0, REQ_MAX_LOGPROBS, &o->logprobs))
				return EXIT_USAGE;
			o->has_logprobs = 1;
		} else {
			return bad_usage("unknown generate option '%s'", a);
		}
	}
	if (!o->prompt == !o->chat)
		return bad_usage("generate needs --prompt TEXT or --chat TEXT (one of them)");
	if (o->system && !o->chat)
		return bad_usage("--system goes with --chat");
	if (o->has_logprobs && !o->json)
		return bad_usage("--logprobs goes with --json");
	return EXIT_OK;
}

/* The error an envelope carries, printed; EXIT_SERVER, or EXIT_OK when none. */
static int envelope_error(const Specd__V1__Envelope *env)
{
	if (!env->has_code || env->code == SPECD__V1__CODE__OK)
		return EXIT_OK;
	fprintf(stderr, "specctl: %s: %s\n", wire_code_name(env->code),
		env->message ? env->message : "");
	return EXIT_SERVER;
}

static const char *finish_name(Specd__V1__FinishReason r)
{
	const ProtobufCEnumValue *v =
		protobuf_c_enum_descriptor_get_value(&specd__v1__finish_reason__descriptor, (int)r);
	return v ? v->name : "?";
}

/* The exit status of a job that ended so: ERROR and SERVER_SHUTDOWN cut it short
 * against the caller's will (1); a cancel is what someone asked for (0). */
static int finish_exit(Specd__V1__FinishReason r)
{
	if (r == SPECD__V1__FINISH_REASON__ERROR || r == SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN)
		return EXIT_SERVER;
	return EXIT_OK;
}

/* jansson's integers are signed, so a seed past 2^63 - 1 would print negative:
 * stats_json leaves this string as the seed, and print_json writes the unsigned number
 * in its place. Only a real member can match the dumped form: quotes inside a string
 * value are escaped, so text cannot imitate `"seed": "`. */
#define SEED_MARK "\001seed\001"
#define SEED_MARK_DUMPED "\"seed\": \"\\u0001seed\\u0001\""

/* One JSON object on stdout, indented, with `seed` (when it has a seed member) as an
 * unsigned integer. */
static void print_json(const json_t *out, uint64_t seed)
{
	char *text = json_dumps(out, JSON_INDENT(2));
	if (!text) {
		fprintf(stderr, "specctl: out of memory\n");
		return;
	}
	const char *mark = strstr(text, SEED_MARK_DUMPED);
	if (mark) {
		size_t key = strlen("\"seed\": ");
		fwrite(text, 1, (size_t)(mark - text) + key, stdout);
		printf("%" PRIu64, seed);
		fputs(mark + strlen(SEED_MARK_DUMPED), stdout);
	} else {
		fputs(text, stdout);
	}
	fputc('\n', stdout);
	free(text);
}

static json_t *stats_json(const Specd__V1__Stats *s)
{
	json_t *per = json_array();
	for (size_t i = 0; i < s->n_acceptance_per_position; i++)
		json_array_append_new(per, json_real(s->acceptance_per_position[i]));
	return json_pack("{s:i, s:i, s:s, s:i, s:I, s:I, s:f, s:o, s:f, s:f, s:f, s:f, s:s}",
			 "prompt_tokens", (int)s->prompt_tokens, "generated_tokens",
			 (int)s->generated_tokens, "method", s->method ? s->method : "",
			 "spec_tokens", (int)s->spec_tokens, "drafted", (json_int_t)s->drafted,
			 "accepted", (json_int_t)s->accepted, "mean_accepted_length",
			 s->mean_accepted_length, "acceptance_per_position", per,
			 "tokens_per_second", s->tokens_per_second, "time_to_first_token_s",
			 s->time_to_first_token_s, "draft_seconds", s->draft_seconds,
			 "verify_seconds", s->verify_seconds, "seed", SEED_MARK);
}

static json_t *logprobs_json(const Specd__V1__Logprobs *l)
{
	json_t *top = json_array();
	for (size_t i = 0; i < l->n_top; i++)
		json_array_append_new(top, json_pack("{s:i, s:f}", "token", (int)l->top[i]->token,
						     "logprob", (double)l->top[i]->logprob));
	return json_pack("{s:f, s:o}", "logprob", (double)l->logprob, "top", top);
}

static void print_stats(const Specd__V1__Stats *s, Specd__V1__FinishReason why)
{
	fprintf(stderr, "\n[%s", s->method ? s->method : "?");
	if (s->spec_tokens)
		fprintf(stderr, " K=%u", s->spec_tokens);
	fprintf(stderr, " | %u prompt + %u generated tokens, %.1f tokens/s, first token after "
		"%.3f s", s->prompt_tokens, s->generated_tokens, s->tokens_per_second,
		s->time_to_first_token_s);
	if (s->drafted)
		fprintf(stderr, " | accepted %llu of %llu drafted (%.0f%%), %.2f tokens/step",
			(unsigned long long)s->accepted, (unsigned long long)s->drafted,
			100.0 * (double)s->accepted / (double)s->drafted, s->mean_accepted_length);
	fprintf(stderr, " | %s]\n", finish_name(why));
}

/* The end of a job that sent no Stats (cancelled, or ended by a shutdown, while still
 * queued): said all the same, in the stats line's place. */
static void print_finish(size_t tokens, Specd__V1__FinishReason why)
{
	fprintf(stderr, "\n[%zu token%s received | %s]\n", tokens, tokens == 1 ? "" : "s",
		finish_name(why));
}

static int cmd_generate(struct client *c, const struct gen_opts *opts)
{
	struct gen_opts o = *opts;
	int rc;
	Specd__V1__GenerateRequest req = SPECD__V1__GENERATE_REQUEST__INIT;
	Specd__V1__Sampling samp = SPECD__V1__SAMPLING__INIT;
	Specd__V1__Speculation spec = SPECD__V1__SPECULATION__INIT;
	char *prompt = o.prompt ? strdup(o.prompt) : NULL;
	char *rid = o.request_id ? strdup(o.request_id) : NULL;
	char role_system[] = "system", role_user[] = "user";
	char *chat = o.chat ? strdup(o.chat) : NULL, *system = o.system ? strdup(o.system) : NULL;
	Specd__V1__ChatMessage m_sys = SPECD__V1__CHAT_MESSAGE__INIT;
	Specd__V1__ChatMessage m_user = SPECD__V1__CHAT_MESSAGE__INIT;
	Specd__V1__ChatMessage *msgs[2];
	if (chat) {
		size_t n = 0;
		if (system) {
			m_sys.role = role_system;
			m_sys.content = system;
			msgs[n++] = &m_sys;
		}
		m_user.role = role_user;
		m_user.content = chat;
		msgs[n++] = &m_user;
		req.n_messages = n;
		req.messages = msgs;
	}
	char *method = o.method ? strdup(o.method) : NULL;
	char *stops[REQ_MAX_STOPS];
	for (size_t i = 0; i < o.n_stops; i++)
		stops[i] = strdup(o.stops[i]);
	req.prompt = prompt;
	req.request_id = rid;
	req.n_stop = o.n_stops;
	req.stop = stops;
	req.has_logprobs = o.has_logprobs;
	req.logprobs = (uint32_t)o.logprobs;
	req.has_max_tokens = o.has_max_tokens;
	req.max_tokens = (uint32_t)o.max_tokens;
	samp.has_temperature = o.has_temperature;
	samp.temperature = (float)o.temperature;
	samp.has_top_k = o.has_top_k;
	samp.top_k = (uint32_t)o.top_k;
	samp.has_top_p = o.has_top_p;
	samp.top_p = (float)o.top_p;
	samp.has_min_p = o.has_min_p;
	samp.min_p = (float)o.min_p;
	samp.has_seed = o.has_seed;
	samp.seed = o.seed;
	req.sampling = &samp;
	if (method || o.has_spec_tokens) {
		spec.method = method;
		spec.has_spec_tokens = o.has_spec_tokens;
		spec.spec_tokens = (uint32_t)o.spec_tokens;
		req.speculation = &spec;
	}
	struct specd_error err;
	specd_error_clear(&err);
	uint64_t call = 0;
	rc = client_send(c, SPECD__V1__METHOD__GENERATE, &req.base, &call, &err) == SPECD_OK
		     ? EXIT_OK
		     : EXIT_BROKEN;
	free(prompt);
	free(chat);
	free(system);
	free(rid);
	free(method);
	for (size_t i = 0; i < o.n_stops; i++)
		free(stops[i]);
	if (rc != EXIT_OK) {
		fprintf(stderr, "specctl: %s\n", err.msg);
		return rc;
	}
	json_t *tokens = json_array(), *logprobs = o.has_logprobs ? json_array() : NULL;
	struct specd_buf text;
	specd_buf_init(&text);
	for (;;) {
		Specd__V1__Envelope *env = NULL;
		if (client_recv(c, &env, -1, &err) != SPECD_OK) {
			fprintf(stderr, "\nspecctl: %s\n", err.msg);
			rc = EXIT_BROKEN;
			break;
		}
		if (env->call_id != call && env->call_id != 0) {
			specd__v1__envelope__free_unpacked(env, NULL);
			continue;
		}
		if ((rc = envelope_error(env)) != EXIT_OK) {
			specd__v1__envelope__free_unpacked(env, NULL);
			break;
		}
		Specd__V1__GenerateResponse *r = specd__v1__generate_response__unpack(
			NULL, env->has_payload ? env->payload.len : 0,
			env->has_payload ? env->payload.data : NULL);
		bool end = env->has_end && env->end;
		specd__v1__envelope__free_unpacked(env, NULL);
		if (!r) {
			fprintf(stderr, "\nspecctl: the server sent a bad GenerateResponse\n");
			rc = EXIT_BROKEN;
			break;
		}
		for (size_t i = 0; i < r->n_tokens; i++)
			json_array_append_new(tokens, json_integer(r->tokens[i]));
		for (size_t i = 0; logprobs && i < r->n_logprobs; i++)
			json_array_append_new(logprobs, logprobs_json(r->logprobs[i]));
		if (r->text) {
			if (o.json) {
				specd_buf_append(&text, r->text, strlen(r->text));
			} else {
				fputs(r->text, stdout);
				fflush(stdout);
			}
		}
		if (end) {
			Specd__V1__FinishReason why = r->has_finish_reason ? r->finish_reason : 0;
			rc = finish_exit(why);
			if (o.json) {
				specd_buf_terminate(&text);
				json_t *out = json_pack("{s:s, s:o, s:s}", "text",
							text.data ? (char *)text.data : "", "tokens",
							tokens, "finish_reason", finish_name(why));
				tokens = NULL;
				if (logprobs)
					json_object_set(out, "logprobs", logprobs);
				if (r->stats)
					json_object_set_new(out, "stats", stats_json(r->stats));
				print_json(out, r->stats ? r->stats->seed : 0);
				json_decref(out);
			} else if (r->stats) {
				print_stats(r->stats, why);
			} else {
				print_finish(json_array_size(tokens), why);
			}
			specd__v1__generate_response__free_unpacked(r, NULL);
			break;
		}
		specd__v1__generate_response__free_unpacked(r, NULL);
	}
	json_decref(tokens);
	json_decref(logprobs);
	specd_buf_fini(&text);
	return rc;
}

/* Sends a call with an empty or given payload and returns its one reply envelope. */
static int simple_call(struct client *c, Specd__V1__Method m, const ProtobufCMessage *payload,
		       Specd__V1__Envelope **out)
{
	struct specd_error err;
	specd_error_clear(&err);
	uint64_t call = 0;
	if (client_send(c, m, payload, &call, &err) != SPECD_OK) {
		fprintf(stderr, "specctl: %s\n", err.msg);
		return EXIT_BROKEN;
	}
	for (;;) {
		Specd__V1__Envelope *env = NULL;
		if (client_recv(c, &env, 30.0, &err) != SPECD_OK) {
			fprintf(stderr, "specctl: %s\n", err.msg);
			return EXIT_BROKEN;
		}
		if (env->call_id == call || env->call_id == 0) {
			int rc = envelope_error(env);
			if (rc != EXIT_OK) {
				specd__v1__envelope__free_unpacked(env, NULL);
				return rc;
			}
			*out = env;
			return EXIT_OK;
		}
		specd__v1__envelope__free_unpacked(env, NULL);
	}
}

/* One call and its reply's payload unpacked as `desc` (free with
 * protobuf_c_message_free_unpacked). EXIT_BROKEN when the payload is not that message. */
static int call_reply(struct client *c, Specd__V1__Method m, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
	Specd__V1__Envelope *env = NULL;
	int rc = simple_call(c, m, req, &env);
	if (rc != EXIT_OK)
		return rc;
	*out = protobuf_c_message_unpack(desc, NULL, env->has_payload ? env->payload.len : 0,
					 env->has_payload ? env->payload.data : NULL);
	specd__v1__envelope__free_unpacked(env, NULL);
	if (!*out) {
		fprintf(stderr, "specctl: the server sent a bad %s\n", desc->short_name);
		return EXIT_BROKEN;
	}
	return EXIT_OK;
}

static double gib(uint64_t b)
{
	return (double)b / (double)(1ull << 30);
}

/* The selector's inputs (links, calibration), table and choice as JSON. */
static json_t *links_json(const Specd__V1__StatusResponse *r)
{
	json_t *links = json_array();
	for (size_t i = 0; i < r->n_links; i++) {
		const Specd__V1__Link *l = r->links[i];
		json_t *samples = json_array();
		for (size_t j = 0; j < l->n_sample_bytes && j < l->n_sample_seconds; j++)
			json_array_append_new(samples, json_pack("{s:I, s:f}", "bytes",
								 (json_int_t)l->sample_bytes[j],
								 "seconds", l->sample_seconds[j]));
		json_array_append_new(links, json_pack("{s:s, s:f, s:f, s:o}", "name",
						       l->name ? l->name : "", "latency_s",
						       l->latency_s, "bandwidth_bytes_per_s",
						       l->bandwidth_bytes_per_s, "samples", samples));
	}
	return links;
}

static json_t *adaptation_json(const Specd__V1__Adaptation *a)
{
	if (!a->active)
		return json_pack("{s:b, s:i, s:s}", "active", 0, "spec_tokens", (int)a->spec_tokens,
				 "why_off", a->why_off ? a->why_off : "");
	json_t *held = json_array();
	for (size_t i = 0; i < a->n_held; i++)
		json_array_append_new(held, json_string(a->held[i]));
	return json_pack("{s:b, s:s, s:o, s:i, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:s}",
			 "active", 1, "method", a->method ? a->method : "", "held", held,
			 "spec_tokens", (int)a->spec_tokens, "acceptance", a->acceptance,
			 "evidence", a->evidence, "predicted_tokens_per_second",
			 a->predicted_tokens_per_second, "decisions", (json_int_t)a->decisions,
			 "changes", (json_int_t)a->changes, "probes", (json_int_t)a->probes,
			 "planned_steps", (json_int_t)a->planned_steps, "lowered",
			 (json_int_t)a->lowered, "last_change", a->last_change ? a->last_change : "");
}

/* One line for the online selector, a second for its last change. */
static void print_adaptation(const Specd__V1__Adaptation *a)
{
	if (!a->active) {
		printf("online selector: off (%s); K %u\n", a->why_off ? a->why_off : "?",
		       a->spec_tokens);
		return;
	}
	printf("online selector: %s K %u now", a->method ? a->method : "?", a->spec_tokens);
	if (a->n_held > 1) {
		printf(" (switches between");
		for (size_t i = 0; i < a->n_held; i++)
			printf("%s %s", i ? "," : "", a->held[i]);
		printf(")");
	}
	printf("; %llu re-decisions, %llu changes, %llu probes",
	       (unsigned long long)a->decisions, (unsigned long long)a->changes,
	       (unsigned long long)a->probes);
	if (a->decisions)
		printf("; acceptance %.2f over %.0f recent proposals", a->acceptance, a->evidence);
	printf("; %llu steps planned, %llu sequences drafted less than allowed\n",
	       (unsigned long long)a->planned_steps, (unsigned long long)a->lowered);
	if (a->last_change && *a->last_change)
		printf("  last change: %s\n", a->last_change);
}

static json_t *decision_json(const Specd__V1__Decision *d)
{
	json_t *o = json_object();
	if (!d)
		return o;
	json_t *reasons = json_array(), *cands = json_array(), *verify = json_array();
	json_t *drafters = json_array();
	for (size_t i = 0; i < d->n_reasons; i++)
		json_array_append_new(reasons, json_string(d->reasons[i]));
	for (size_t i = 0; i < d->n_candidates; i++) {
		const Specd__V1__Candidate *c = d->candidates[i];
		json_t *row = json_pack("{s:s, s:i, s:s}", "method", c->method ? c->method : "",
					"spec_tokens", (int)c->spec_tokens, "transport",
					c->transport ? c->transport : "");
		if (c->excluded_because && *c->excluded_because)
			json_object_set_new(row, "excluded_because", json_string(c->excluded_because));
		if (c->has_predicted_tokens_per_second) {
			json_object_set_new(row, "predicted_tokens_per_second",
					    json_real(c->predicted_tokens_per_second));
			json_object_set_new(row, "predicted_speedup", json_real(c->predicted_speedup));
		}
		if (c->has_acceptance)
			json_object_set_new(row, "acceptance", json_real(c->acceptance));
		json_array_append_new(cands, row);
	}
	for (size_t i = 0; i < d->n_verify_seconds; i++)
		json_array_append_new(verify, json_real(d->verify_seconds[i]));
	for (size_t i = 0; i < d->n_drafters; i++) {
		const Specd__V1__DrafterCalibration *c = d->drafters[i];
		json_t *row = json_pack("{s:s, s:b, s:f, s:f, s:I}", "method",
					c->method ? c->method : "", "measured", c->measured,
					"draft_seconds_fixed", c->draft_seconds_fixed,
					"draft_seconds_per_token", c->draft_seconds_per_token,
					"memory_bytes", (json_int_t)c->memory_bytes);
		if (c->incompatible)
			json_object_set_new(row, "incompatible", json_string(c->incompatible));
		json_array_append_new(drafters, row);
	}
	json_object_set_new(o, "method", json_string(d->method ? d->method : ""));
	json_object_set_new(o, "spec_tokens", json_integer(d->spec_tokens));
	json_object_set_new(o, "transport", json_string(d->transport ? d->transport : ""));
	json_object_set_new(o, "measured", json_boolean(d->measured));
	if (d->has_predicted_tokens_per_second) {
		json_object_set_new(o, "predicted_tokens_per_second",
				    json_real(d->predicted_tokens_per_second));
		json_object_set_new(o, "plain_tokens_per_second",
				    json_real(d->plain_tokens_per_second));
		json_object_set_new(o, "predicted_speedup", json_real(d->predicted_speedup));
	}
	json_object_set_new(o, "reasons", reasons);
	json_object_set_new(o, "verify_seconds", verify);
	json_object_set_new(o, "drafters", drafters);
	json_object_set_new(o, "candidates", cands);
	return o;
}

/* The same as text: links, calibration, the table, the choice and its reasons. */
static void print_selection(const Specd__V1__StatusResponse *r, const Specd__V1__Decision *d)
{
	for (size_t i = 0; i < r->n_links; i++)
		printf("link %s: latency %.1f us, bandwidth %.1f MB/s\n",
		       r->links[i]->name ? r->links[i]->name : "?", 1e6 * r->links[i]->latency_s,
		       r->links[i]->bandwidth_bytes_per_s / 1e6);
	if (!d)
		return;
	if (d->n_verify_seconds)
		printf("target forward: %.3f ms for 1 token, %.3f ms for %zu\n",
		       1e3 * d->verify_seconds[0], 1e3 * d->verify_seconds[d->n_verify_seconds - 1],
		       d->n_verify_seconds);
	for (size_t i = 0; i < d->n_drafters; i++) {
		const Specd__V1__DrafterCalibration *c = d->drafters[i];
		if (c->incompatible)
			printf("drafter %s: incompatible: %s\n", c->method, c->incompatible);
		else
			printf("drafter %s: %.3f ms + %.3f ms a token (%s), %.1f MiB\n", c->method,
			       1e3 * c->draft_seconds_fixed, 1e3 * c->draft_seconds_per_token,
			       c->measured ? "measured" : "estimated",
			       (double)c->memory_bytes / (1024.0 * 1024.0));
	}
	printf("speculation: %s, K = %u, transport %s (%s)\n", d->method ? d->method : "?",
	       d->spec_tokens, d->transport ? d->transport : "?",
	       d->measured ? "measured" : "nothing measured");
	for (size_t i = 0; i < d->n_reasons; i++)
		printf("  because: %s\n", d->reasons[i]);
	if (d->n_candidates)
		printf("  %-12s %-3s %-9s %12s %8s  %s\n", "method", "K", "transport", "tokens/s",
		       "speedup", "excluded because");
	for (size_t i = 0; i < d->n_candidates; i++) {
		const Specd__V1__Candidate *c = d->candidates[i];
		char tps[32] = "-", sp[32] = "-";
		if (c->has_predicted_tokens_per_second) {
			snprintf(tps, sizeof(tps), "%.1f", c->predicted_tokens_per_second);
			snprintf(sp, sizeof(sp), "%.2fx", c->predicted_speedup);
		}
		printf("  %-12s %-3u %-9s %12s %8s  %s\n", c->method ? c->method : "?",
		       c->spec_tokens, c->transport ? c->transport : "?", tps, sp,
		       c->excluded_because ? c->excluded_because : "");
	}
}

static int cmd_status(struct client *c, bool json)
{
	Specd__V1__StatusRequest req = SPECD__V1__STATUS_REQUEST__INIT;
	Specd__V1__Envelope *env = NULL;
	int rc = simple_call(c, SPECD__V1__METHOD__STATUS, &req.base, &env);
	if (rc != EXIT_OK)
		return rc;
	Specd__V1__StatusResponse *r = specd__v1__status_response__unpack(
		NULL, env->has_payload ? env->payload.len : 0,
		env->has_payload ? env->payload.data : NULL);
	specd__v1__envelope__free_unpacked(env, NULL);
	if (!r) {
		fprintf(stderr, "specctl: the server sent a bad StatusResponse\n");
		return EXIT_BROKEN;
	}
	const Specd__V1__Decision *d = r->decision;
	if (json) {
		json_t *ranks = json_array();
		for (size_t i = 0; i < r->n_ranks; i++) {
			const Specd__V1__RankStatus *k = r->ranks[i];
			json_array_append_new(
				ranks, json_pack("{s:i, s:s, s:i, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "rank",
						 (int)k->rank, "node", k->node ? k->node : "", "pid",
						 k->pid, "role", k->role ? k->role : "", "device",
						 k->device ? k->device : "", "host_memory_total",
						 (json_int_t)k->host_memory_total, "host_memory_free",
						 (json_int_t)k->host_memory_free, "device_memory_total",
						 (json_int_t)k->device_memory_total, "device_memory_free",
						 (json_int_t)k->device_memory_free, "resident_weight_bytes",
						 (json_int_t)k->resident_weight_bytes));
		}
		json_t *out = json_pack(
			"{s:s, s:s, s:o, s:o, s:o, s:i, s:i, s:I, s:f}", "cluster",
			r->cluster ? r->cluster : "", "version", r->version ? r->version : "",
			"ranks", ranks, "links", links_json(r), "decision", decision_json(d),
			"jobs_running", (int)r->jobs_running, "jobs_queued", (int)r->jobs_queued,
			"tokens_generated", (json_int_t)r->tokens_generated, "uptime_s",
			r->uptime_s);
		if (r->recent)
			json_object_set_new(out, "recent", stats_json(r->recent));
		if (r->adaptation)
			json_object_set_new(out, "adaptation", adaptation_json(r->adaptation));
		print_json(out, r->recent ? r->recent->seed : 0);
		json_decref(out);
	} else {
		printf("cluster '%s' (specd %s), up %.0f s\n", r->cluster ? r->cluster : "?",
		       r->version ? r->version : "?", r->uptime_s);
		printf("%-5s %-20s %-8s %-13s %-24s %-12s %s\n", "rank", "node", "pid", "role",
		       "device", "weights", "host memory free/total");
		for (size_t i = 0; i < r->n_ranks; i++) {
			const Specd__V1__RankStatus *k = r->ranks[i];
			char weights[32] = "-";
			if (k->has_resident_weight_bytes)
				snprintf(weights, sizeof(weights), "%.1f MiB",
					 (double)k->resident_weight_bytes / (1024.0 * 1024.0));
			printf("%-5u %-20s %-8d %-13s %-24s %-12s %.1f / %.1f GiB\n", k->rank,
			       k->node ? k->node : "", k->pid, k->role ? k->role : "",
			       k->device ? k->device : "", weights, gib(k->host_memory_free),
			       gib(k->host_memory_total));
		}
		print_selection(r, d);
		if (r->adaptation)
			print_adaptation(r->adaptation);
		printf("jobs: %u running, %u queued; %llu tokens generated\n", r->jobs_running,
		       r->jobs_queued, (unsigned long long)r->tokens_generated);
		if (r->recent && r->recent->drafted)
			printf("acceptance so far: %llu of %llu drafted, %.2f tokens/step\n",
			       (unsigned long long)r->recent->accepted,
			       (unsigned long long)r->recent->drafted,
			       r->recent->mean_accepted_length);
	}
	specd__v1__status_response__free_unpacked(r, NULL);
	return EXIT_OK;
}

static int cmd_cancel(struct client *c, char *request_id)
{
	Specd__V1__CancelRequest req = SPECD__V1__CANCEL_REQUEST__INIT;
	req.request_id = request_id;
	ProtobufCMessage *msg = NULL;
	int rc = call_reply(c, SPECD__V1__METHOD__CANCEL, &req.base,
			    &specd__v1__cancel_response__descriptor, &msg);
	if (rc != EXIT_OK)
		return rc;
	printf("cancelled %u job(s)\n", ((Specd__V1__CancelResponse *)msg)->cancelled);
	protobuf_c_message_free_unpacked(msg, NULL);
	return EXIT_OK;
}

static int cmd_health(struct client *c)
{
	Specd__V1__HealthRequest req = SPECD__V1__HEALTH_REQUEST__INIT;
	ProtobufCMessage *msg = NULL;
	int rc = call_reply(c, SPECD__V1__METHOD__HEALTH, &req.base,
			    &specd__v1__health_response__descriptor, &msg);
	if (rc != EXIT_OK)
		return rc;
	const Specd__V1__HealthResponse *h = (const Specd__V1__HealthResponse *)msg;
	bool serving = h->serving;
	printf("%s", serving ? "serving" : "not serving (shutting down)");
	if (h->has_uptime_s)
		printf(", up %.0f s", h->uptime_s);
	printf("\n");
	protobuf_c_message_free_unpacked(msg, NULL);
	return serving ? EXIT_OK : EXIT_SERVER;
}

static int cmd_shutdown(struct client *c)
{
	Specd__V1__ShutdownRequest req = SPECD__V1__SHUTDOWN_REQUEST__INIT;
	ProtobufCMessage *msg = NULL;
	int rc = call_reply(c, SPECD__V1__METHOD__SHUTDOWN, &req.base,
			    &specd__v1__shutdown_response__descriptor, &msg);
	if (rc != EXIT_OK)
		return rc;
	printf("shutting down; %u job(s) draining\n",
	       ((Specd__V1__ShutdownResponse *)msg)->draining_jobs);
	protobuf_c_message_free_unpacked(msg, NULL);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *addr = getenv("SPECD_ADDR");
	const char *token = getenv("SPECD_AUTH_TOKEN");
	const char *addr_from = "$SPECD_ADDR"; /* where addr came from, for messages */
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return EXIT_OK;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("specctl %s\n", SPECD_VERSION);
			return EXIT_OK;
		}
		if (strcmp(argv[i], "--addr") == 0 || strcmp(argv[i], "--token") == 0) {
			if (i + 1 >= argc)
				return bad_usage("%s needs a value", argv[i]);
			if (argv[i][2] == 'a') {
				addr = argv[++i];
				addr_from = "--addr";
			} else {
				token = argv[++i];
			}
			continue;
		}
		return bad_usage("unknown option '%s'", argv[i]);
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[i++];
	int nargs = argc - i;
	char **args = argv + i;
	/* Arguments are checked before connecting: bad usage is exit 2 whatever the server. */
	struct gen_opts gen;
	bool json = false;
	if (strcmp(cmd, "generate") == 0) {
		int rc = parse_generate(nargs, args, &gen);
		if (rc != EXIT_OK)
			return rc;
	} else if (strcmp(cmd, "status") == 0) {
		json = nargs == 1 && strcmp(args[0], "--json") == 0;
		if (nargs > 1 || (nargs == 1 && !json))
			return bad_usage("status takes only --json");
	} else if (strcmp(cmd, "cancel") == 0) {
		if (nargs != 1)
			return bad_usage("cancel takes one request id");
	} else if (strcmp(cmd, "health") == 0 || strcmp(cmd, "shutdown") == 0) {
		if (nargs)
			return bad_usage("%s takes no options", cmd);
	} else {
		return bad_usage("unknown command '%s'", cmd);
	}
	struct specd_error err;
	specd_error_clear(&err);
	if (!addr || !*addr) {
		addr = DEFAULT_ADDR;
		addr_from = "the default address";
	}
	struct netaddr parsed;
	if (netaddr_parse(addr, &parsed, &err) != SPECD_OK)
		return bad_usage("%s: %s", addr_from, err.msg);
	struct client c;
	if (client_open(&c, addr, token && *token ? token : NULL, &err) != SPECD_OK) {
		fprintf(stderr, "specctl: %s\n", err.msg);
		return EXIT_CONNECT;
	}
	int rc;
	if (strcmp(cmd, "generate") == 0)
		rc = cmd_generate(&c, &gen);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(&c, json);
	else if (strcmp(cmd, "cancel") == 0)
		rc = cmd_cancel(&c, args[0]);
	else if (strcmp(cmd, "health") == 0)
		rc = cmd_health(&c);
	else
		rc = cmd_shutdown(&c);
	client_close(&c);
	return rc;
}
