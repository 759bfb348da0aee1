/* specctl against a fake server: a thread on a unix socket takes the one Generate call
 * and answers it with scripted frames (daemon/wire.h), so every way a job can end is
 * tested without a model: what specctl prints (the text on stdout, the stats line or
 * the finish reason on stderr, one JSON object with --json) and its exit status. Also
 * the command line it refuses before connecting (exit 2) and the request it sends. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/wire.h"
#include "test_support.h"

/* One reply frame: text and a token, or the last frame with its finish reason (and
 * Stats when stats is set); code other than OK makes it an error envelope. */
struct frame {
	const char *text;
	uint32_t token;
	bool end;
	Specd__V1__FinishReason finish;
	bool stats;
	uint64_t seed;
	Specd__V1__Code code;
};

struct fake {
	pthread_t thread;
	const struct frame *script;
	size_t n;
	Specd__V1__GenerateRequest *got; /* the call as it arrived; NULL: none */
};

static char g_dir[512];
static char g_sock[600]; /* unix:PATH of the fake server */
static char g_nowhere[600]; /* unix:PATH where nothing listens */
static char g_ctl[600];
static int g_listen = -1;

static int setup_all(void **state)
{
	(void)state;
	snprintf(g_ctl, sizeof(g_ctl), "%s/daemon/specctl", ts_binary_dir());
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(g_dir) + strlen("/ctl.sock") >= sizeof(sun.sun_path))
		return -1;
	memcpy(sun.sun_path, g_dir, strlen(g_dir));
	memcpy(sun.sun_path + strlen(g_dir), "/ctl.sock", strlen("/ctl.sock") + 1);
	snprintf(g_sock, sizeof(g_sock), "unix:%s", sun.sun_path);
	snprintf(g_nowhere, sizeof(g_nowhere), "unix:%s/nobody.sock", g_dir);
	g_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g_listen < 0 || bind(g_listen, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    listen(g_listen, 4) != 0)
		return -1;
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	if (g_listen >= 0)
		close(g_listen);
	ts_rmtree(g_dir);
	return 0;
}

static bool wait_readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;
	while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR) {
	}
	return r > 0;
}

static bool send_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

static bool send_frame(int fd, uint64_t call_id, const struct frame *f)
{
	Specd__V1__GenerateResponse r = SPECD__V1__GENERATE_RESPONSE__INIT;
	Specd__V1__Stats st = SPECD__V1__STATS__INIT;
	uint32_t tok = f->token;
	char method[] = "ngram";
	r.text = (char *)(uintptr_t)f->text;
	if (f->text) {
		r.n_tokens = 1;
		r.tokens = &tok;
	}
	if (f->end) {
		r.has_finish_reason = 1;
		r.finish_reason = f->finish;
	}
	if (f->stats) {
		st.has_prompt_tokens = st.has_generated_tokens = st.has_spec_tokens = 1;
		st.prompt_tokens = 3;
		st.generated_tokens = 1;
		st.spec_tokens = 2;
		st.method = method;
		st.has_seed = 1;
		st.seed = f->seed;
		r.stats = &st;
	}
	uint8_t body[1024];
	size_t n = protobuf_c_message_pack(&r.base, body);
	Specd__V1__Envelope env = SPECD__V1__ENVELOPE__INIT;
	env.has_call_id = env.has_method = env.has_payload = env.has_end = 1;
	env.call_id = call_id;
	env.method = SPECD__V1__METHOD__GENERATE;
	env.payload.data = body;
	env.payload.len = n;
	env.end = f->end;
	char message[] = "the engine failed";
	if (f->code != SPECD__V1__CODE__OK) {
		env.has_code = 1;
		env.code = f->code;
		env.message = message;
	}
	struct specd_buf out;
	specd_buf_init(&out);
	bool ok = wire_pack(&env, &out) == SPECD_OK && send_all(fd, out.data, out.len);
	specd_buf_fini(&out);
	return ok;
}

/* Takes one connection, reads its first frame (the Generate call), answers with the
 * script and waits for specctl to hang up. */
static void *fake_main(void *arg)
{
	struct fake *f = arg;
	if (!wait_readable(g_listen, 20000))
		return NULL;
	int fd = accept(g_listen, NULL, NULL);
	if (fd < 0)
		return NULL;
	struct wire_reader rd;
	wire_reader_init(&rd, 1u << 20);
	Specd__V1__Envelope *env = NULL;
	while (!env && wait_readable(fd, 20000)) {
		uint8_t buf[4096];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0 || wire_reader_push(&rd, buf, (size_t)n) != SPECD_OK)
			break;
		enum wire_event ev;
		const uint8_t *frame;
		uint32_t len;
		if (wire_reader_next(&rd, &ev, &frame, &len) == SPECD_OK && ev == WIRE_FRAME &&
		    wire_unpack(frame, len, &env) != SPECD_OK)
			break;
	}
	if (env) {
		f->got = specd__v1__generate_request__unpack(NULL, env->payload.len,
							     env->payload.data);
		for (size_t i = 0; i < f->n && send_frame(fd, env->call_id, &f->script[i]); i++) {
		}
		specd__v1__envelope__free_unpacked(env, NULL);
		uint8_t buf[256];
		while (wait_readable(fd, 20000) && recv(fd, buf, sizeof(buf), 0) > 0) {
		}
	}
	wire_reader_fini(&rd);
	close(fd);
	return NULL;
}

static void fake_start(struct fake *f, const struct frame *script, size_t n)
{
	memset(f, 0, sizeof(*f));
	f->script = script;
	f->n = n;
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_join(struct fake *f)
{
	pthread_join(f->thread, NULL);
	if (f->got)
		specd__v1__generate_request__free_unpacked(f->got, NULL);
	f->got = NULL;
}

/* What one specctl run printed, apart. */
struct ctl_out {
	int rc;
	char *out, *err;
};

/* Runs specctl with args (NULL-terminated), stdout and stderr into files of their own. */
static struct ctl_out ctl(const char *const *args)
{
	char out_path[700], err_path[700], script[1600];
	snprintf(out_path, sizeof(out_path), "%s/stdout", g_dir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", g_dir);
	snprintf(script, sizeof(script), "exec \"$0\" \"$@\" >'%s' 2>'%s'", out_path, err_path);
	const char *argv[40] = {"/bin/sh", "-c", script, g_ctl};
	int n = 4;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	char *merged = NULL;
	struct ctl_out r = {.rc = ts_run(argv, &merged, 30)};
	free(merged);
	size_t len;
	r.out = ts_read_file(out_path, &len);
	r.err = ts_read_file(err_path, &len);
	assert_non_null(r.out);
	assert_non_null(r.err);
	return r;
}

static void ctl_free(struct ctl_out *r)
{
	free(r->out);
	free(r->err);
}

static void expect(const char *text, const char *want)
{
	if (!strstr(text, want))
		fail_msg("output lacks '%s':\n%s", want, text);
}

/* One generate call against the script; the result for the caller to check and free. */
static struct ctl_out generate(const struct frame *script, size_t n, bool json)
{
	struct fake f;
	fake_start(&f, script, n);
	const char *text[] = {"--addr", g_sock, "generate", "--prompt", "hi", NULL};
	const char *js[] = {"--addr", g_sock, "generate", "--prompt", "hi", "--json", NULL};
	struct ctl_out r = ctl(json ? js : text);
	fake_join(&f);
	return r;
}

static void test_specctl__cancelled_in_the_queue_says_so_and_exits_0(void **state)
{
	(void)state;
	/* A queued job cancelled from another shell: one last frame, no Stats. */
	const struct frame script[] = {
		{.end = true, .finish = SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT},
	};
	struct ctl_out r = generate(script, 1, false);
	if (r.rc != 0)
		fail_msg("exit %d:\n%s", r.rc, r.err);
	assert_string_equal(r.out, "");
	expect(r.err, "[0 tokens received | CANCELLED_BY_CLIENT]");
	ctl_free(&r);
}

static void test_specctl__server_shutdown_says_so_and_exits_1(void **state)
{
	(void)state;
	const struct frame script[] = {
		{.text = "Once", .token = 7},
		{.end = true, .finish = SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN},
	};
	struct ctl_out r = generate(script, 2, false);
	assert_int_equal(r.rc, 1);
	assert_string_equal(r.out, "Once"); /* the text only: the reason goes to stderr */
	expect(r.err, "[1 token received | SERVER_SHUTDOWN]");
	ctl_free(&r);
	/* A running job ended by a second signal has Stats: the stats line says it. */
	const struct frame with_stats[] = {
		{.text = "Once", .token = 7},
		{.end = true, .finish = SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN, .stats = true},
	};
	r = generate(with_stats, 2, false);
	assert_int_equal(r.rc, 1);
	expect(r.err, "[ngram K=2 | 3 prompt + 1 generated tokens");
	expect(r.err, "| SERVER_SHUTDOWN]");
	ctl_free(&r);
}

static void test_specctl__an_ended_job_exits_by_its_finish_reason(void **state)
{
	(void)state;
	static const struct {
		Specd__V1__FinishReason finish;
		Specd__V1__Code code;
		bool stats;
		int rc;
		const char *want;
	} cases[] = {
		{SPECD__V1__FINISH_REASON__STOP, SPECD__V1__CODE__OK, true, 0, "| STOP]"},
		{SPECD__V1__FINISH_REASON__LENGTH, SPECD__V1__CODE__OK, true, 0, "| LENGTH]"},
		{SPECD__V1__FINISH_REASON__EOS, SPECD__V1__CODE__OK, false, 0,
		 "[1 token received | EOS]"},
		{SPECD__V1__FINISH_REASON__CANCELLED_BY_CLIENT, SPECD__V1__CODE__OK, true, 0,
		 "| CANCELLED_BY_CLIENT]"},
		{SPECD__V1__FINISH_REASON__ERROR, SPECD__V1__CODE__OK, false, 1,
		 "[1 token received | ERROR]"},
		/* How the server ends a job the engine failed: an error envelope. */
		{SPECD__V1__FINISH_REASON__ERROR, SPECD__V1__CODE__INTERNAL, false, 1,
		 "specctl: INTERNAL: the engine failed"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct frame script[] = {
			{.text = "x", .token = 1},
			{.end = true, .finish = cases[i].finish, .stats = cases[i].stats,
			 .code = cases[i].code},
		};
		struct ctl_out r = generate(script, 2, false);
		if (r.rc != cases[i].rc || !strstr(r.err, cases[i].want))
			fail_msg("case %zu: exit %d (expected %d), stderr lacks '%s'?\n%s", i, r.rc,
				 cases[i].rc, cases[i].want, r.err);
		ctl_free(&r);
	}
}

static void test_specctl__json_has_the_finish_reason_and_an_unsigned_seed(void **state)
{
	(void)state;
	const struct frame shutdown[] = {
		{.text = "Once", .token = 7},
		{.end = true, .finish = SPECD__V1__FINISH_REASON__SERVER_SHUTDOWN},
	};
	struct ctl_out r = generate(shutdown, 2, true);
	assert_int_equal(r.rc, 1);
	expect(r.out, "\"text\": \"Once\"");
	expect(r.out, "\"finish_reason\": \"SERVER_SHUTDOWN\"");
	ctl_free(&r);
	/* Seeds past 2^63 - 1 print as they are, not negative. */
	const struct frame big_seed[] = {
		{.text = "a\"seed\": \"b", .token = 7}, /* text cannot pass for the member */
		{.end = true, .finish = SPECD__V1__FINISH_REASON__LENGTH, .stats = true,
		 .seed = UINT64_MAX},
	};
	r = generate(big_seed, 2, true);
	assert_int_equal(r.rc, 0);
	expect(r.out, "\"finish_reason\": \"LENGTH\"");
	expect(r.out, "\"text\": \"a\\\"seed\\\": \\\"b\"");
	expect(r.out, "\"seed\": 18446744073709551615\n");
	ctl_free(&r);
	const struct frame mid_seed[] = {
		{.end = true, .finish = SPECD__V1__FINISH_REASON__STOP, .stats = true,
		 .seed = UINT64_C(9223372036854775808)},
	};
	r = generate(mid_seed, 1, true);
	assert_int_equal(r.rc, 0);
	expect(r.out, "\"seed\": 9223372036854775808\n");
	ctl_free(&r);
}

static void test_specctl__integer_options_arrive_as_given(void **state)
{
	(void)state;
	const struct frame script[] = {
		{.end = true, .finish = SPECD__V1__FINISH_REASON__LENGTH, .stats = true},
	};
	struct fake f;
	fake_start(&f, script, 1);
	const char *args[] = {"--addr", g_sock, "generate", "--prompt", "hi", "--max-tokens",
			      "7", "--top-k", "40", "--seed", "18446744073709551615",
			      "--spec-tokens", "2", "--json", "--logprobs", "20", NULL};
	struct ctl_out r = ctl(args);
	assert_int_equal(r.rc, 0);
	assert_non_null(f.got);
	assert_true(f.got->has_max_tokens && f.got->max_tokens == 7);
	assert_non_null(f.got->sampling);
	assert_true(f.got->sampling->has_top_k && f.got->sampling->top_k == 40);
	assert_true(f.got->sampling->has_seed && f.got->sampling->seed == UINT64_MAX);
	assert_true(f.got->has_logprobs && f.got->logprobs == 20);
	assert_non_null(f.got->speculation);
	assert_int_equal(f.got->speculation->spec_tokens, 2);
	fake_join(&f);
	ctl_free(&r);
}

static void test_specctl__bad_numbers_and_addresses_are_usage_errors(void **state)
{
	(void)state;
	/* Nothing listens at g_nowhere: an argument let through would end in exit 3. */
	static const struct {
		const char *flag, *value, *want;
	} cases[] = {
		{"--top-k", "0.9", "--top-k expects an integer in 0..1000000000, got '0.9'"},
		{"--top-k", "5x", "--top-k expects an integer"},
		{"--max-tokens", "2.7", "--max-tokens expects an integer in 1..1000000000"},
		{"--max-tokens", "0", "--max-tokens expects an integer in 1..1000000000, got '0'"},
		{"-n", "1e3", "-n expects an integer"},
		{"--max-tokens", "1000000001", "--max-tokens expects an integer"},
		{"--spec-tokens", "+2", "--spec-tokens expects an integer in 1..32"},
		{"--spec-tokens", " 2", "--spec-tokens expects an integer"},
		{"--seed", "-1", "--seed expects an integer in 0..18446744073709551615, got '-1'"},
		{"--seed", " -1", "--seed expects an integer"},
		{"--seed", " 1", "--seed expects an integer"},
		{"--seed", "18446744073709551616", "--seed expects an integer"},
		{"--seed", "", "--seed expects an integer"},
		{"--seed", "7 ", "--seed expects an integer"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[] = {"--addr", g_nowhere, "generate", "--prompt", "hi",
				      cases[i].flag, cases[i].value, NULL};
		struct ctl_out r = ctl(args);
		if (r.rc != 2 || !strstr(r.err, cases[i].want))
			fail_msg("%s '%s': exit %d, expected 2 and '%s':\n%s", cases[i].flag,
				 cases[i].value, r.rc, cases[i].want, r.err);
		ctl_free(&r);
	}
	const char *logprobs[] = {"--addr", g_nowhere, "generate", "-p", "hi", "--json",
				  "--logprobs", "1.5", NULL};
	struct ctl_out r = ctl(logprobs);
	assert_int_equal(r.rc, 2);
	expect(r.err, "--logprobs expects an integer in 0..20, got '1.5'");
	ctl_free(&r);
	/* An address that does not parse is bad usage; one that parses but where nobody
	 * listens is "cannot connect". */
	const char *bad_addr[] = {"--addr", "foo", "health", NULL};
	r = ctl(bad_addr);
	assert_int_equal(r.rc, 2);
	expect(r.err, "--addr: 'foo'");
	ctl_free(&r);
	const char *bad_port[] = {"--addr", "localhost:99999", "health", NULL};
	r = ctl(bad_port);
	assert_int_equal(r.rc, 2);
	ctl_free(&r);
	assert_int_equal(setenv("SPECD_ADDR", "nohost", 1), 0);
	const char *from_env[] = {"health", NULL};
	r = ctl(from_env);
	unsetenv("SPECD_ADDR");
	assert_int_equal(r.rc, 2);
	expect(r.err, "$SPECD_ADDR: 'nohost'");
	ctl_free(&r);
	const char *nowhere[] = {"--addr", g_nowhere, "health", NULL};
	r = ctl(nowhere);
	assert_int_equal(r.rc, 3);
	ctl_free(&r);
}

static void test_specctl__help_gives_the_exit_codes(void **state)
{
	(void)state;
	const char *args[] = {"--help", NULL};
	struct ctl_out r = ctl(args);
	assert_int_equal(r.rc, 0);
	expect(r.out, "1 the server answered with an error or the job did not");
	expect(r.out, "ERROR or SERVER_SHUTDOWN");
	ctl_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_specctl__cancelled_in_the_queue_says_so_and_exits_0),
		cmocka_unit_test(test_specctl__server_shutdown_says_so_and_exits_1),
		cmocka_unit_test(test_specctl__an_ended_job_exits_by_its_finish_reason),
		cmocka_unit_test(test_specctl__json_has_the_finish_reason_and_an_unsigned_seed),
		cmocka_unit_test(test_specctl__integer_options_arrive_as_given),
		cmocka_unit_test(test_specctl__bad_numbers_and_addresses_are_usage_errors),
		cmocka_unit_test(test_specctl__help_gives_the_exit_codes),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
