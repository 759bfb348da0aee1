/* The leader <-> draft rank link itself (drafters/remote.h, under mpirun -np 2): rank 0
 * is the leader's remote drafter, rank 1 either the real server (draft_serve) or a fake
 * draft rank that answers on purpose what the leader must refuse. A reply the leader
 * refuses (an id past the vocabulary, a proposal longer than its K, more q rows than
 * announced) loses the link: the propose gives nothing, the leader never receives on
 * the link again (so no later step takes the q rows still queued for its own) and a
 * sampled job's output stays plain sampling's. The hello: a draft rank of another
 * protocol version or message layout is refused with both named, from either side; a
 * method number past the enum is refused; a draft rank that takes longer to make its
 * drafter than the per-message deadline is waited for (the hello's own deadline). */
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "drafters/drafter.h"
#include "drafters/engine.h"
#include "drafters/remote.h"
#include "drafters/remote_int.h"
#include "model/sampler.h"
#include "spec_fixture.h"
#include "test_mpi.h"
#include "test_support.h"

#define VOCAB 300
/* Small enough that every q message the leader leaves unreceived goes eagerly (under
 * Open MPI's 4 KiB), so no send lingers past the link that carried it. */
#define K 2
#define N_SLOTS 2
#define CTX 64
#define MAX_OUT 24
/* Per message, on both sides of the fake's links: long enough that no message of a
 * case that must succeed misses it on a loaded two-core machine under sanitizers (at
 * 0.3 s one did, once, in a full run beside other suites). */
#define DEADLINE_S 1.0

static int g_rank;
static char g_dir[512], g_target[600];
static struct model *g_t;
/* Rank 0: the link of the test running, while rank 1 serves on it. */
static struct draft_link *g_open;

/* What the fake draft rank answers. After the first misbehaving answer it answers
 * properly, so a leader that asked again would get rows and tokens it could use. */
enum fake_mode {
	FAKE_BAD_ID,       /* the first propose: an id past the vocabulary, then its q rows */
	FAKE_LONG_BATCH,   /* the first batch: a proposal of K + 1, then its q rows */
	FAKE_EXTRA_Q,      /* the first propose: one q row more than the answer announces */
	FAKE_OLD_VERSION,  /* the hello answered as protocol 1 */
	FAKE_SLOW_HELLO,   /* the hello answered after 4 per-message deadlines */
};

static const int32_t k_prompt[] = {1, 5, 6, 7, 5, 6, 7, 5};
static const struct sampler_params k_sampled = {.temperature = 0.8f, .top_p = 1.0f,
						.seed = 77};

static int setup(void **state)
{
	(void)state;
	MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
	if (!ts_mpi_shared_dir(g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_target, sizeof(g_target), "%s/target.gguf", g_dir);
	const char *t[] = {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
			   "--ffn", "64", "--vocab", "300", "--ctx", "64", "--seed", "41", NULL};
	if (!ts_mpi_gen_model(g_target, t))
		return -1;
	g_t = fx_load(g_target, N_SLOTS, CTX);
	return 0;
}

/* Rank 0: a test that failed while rank 1 serves would leave it waiting for ever; once
 * cmocka has said why, the job ends. The pause lets mpirun forward what cmocka wrote
 * before the abort tears the job down (without it the reason was lost). */
static int teardown_test(void **state)
{
	(void)state;
	if (g_rank != 0 || !g_open)
		return 0;
	fflush(stdout);
	fprintf(stderr, "a test failed while the draft rank served: ending the job\n");
	fflush(stderr);
	specd_sleep(1.0);
	MPI_Abort(MPI_COMM_WORLD, 1);
	return 0;
}

/* Rank 0: the end of a test's link. */
static void link_close(struct drafter *d, struct draft_link *l)
{
	draft_destroy(d);
	draft_link_destroy(l);
	g_open = NULL;
}

/* Rank 0: takes the n messages of `tag` that the fake sent and the leader, by design,
 * never receives (the q rows behind a refused reply, a hello answered too late), before
 * the link is freed. Open MPI gives the next link the freed communicators' context ids,
 * and a message still on its way when they are freed is delivered into that link: a
 * fake descheduled between its refused reply and its q rows once made the next test's
 * q receive take them (its K rows fit, so nothing was refused). */
static void take_left(struct draft_link *l, int tag, int n)
{
	static float left[(K + 1) * VOCAB];
	for (int i = 0; i < n; i++)
		assert_int_equal(par_comm_recv(l->comm, left, sizeof(left), RD_DRAFT, tag, NULL),
				 SPECD_OK);
}

static int teardown(void **state)
{
	(void)state;
	model_destroy(g_t);
	ts_mpi_remove_shared_dir(g_dir);
	return 0;
}

/* Rank 1: the q rows of an answer, sent whether or not the leader takes them (a send
 * it never matches ends at the fake's short deadline). */
static void fake_send_q(struct draft_link *l, uint32_t rows)
{
	static float q[(K + 1) * VOCAB];
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
		q[i] = 1.0f / VOCAB;
	par_comm_send(l->comm, q, (size_t)rows * VOCAB * sizeof(float), RD_LEADER, RD_TAG_Q,
		      NULL);
}

static void fake_hello(struct draft_link *l, enum fake_mode mode)
{
	struct rd_rep rep = {.status = SPECD_OK, .version = RD_VERSION,
			     .req_bytes = sizeof(struct rd_req),
			     .rep_bytes = sizeof(struct rd_rep)};
	if (mode == FAKE_OLD_VERSION)
		rep.version = 1;
	if (mode == FAKE_SLOW_HELLO)
		specd_sleep(4 * DEADLINE_S); /* a draft model read from a slow disk */
	par_comm_send(l->comm, &rep, sizeof(rep), RD_LEADER, RD_TAG_REPLY, NULL);
}

/* A single propose: k tokens (id 5 each), sampled (k q rows). */
static void fake_propose(struct draft_link *l, const struct rd_req *req, enum fake_mode mode,
			 bool first)
{
	struct rd_rep rep = {.status = SPECD_OK, .n = req->k, .q_rows = req->k};
	for (uint32_t i = 0; i < req->k; i++)
		rep.tokens[i] = 5;
	if (first && mode == FAKE_BAD_ID)
		rep.tokens[0] = VOCAB + 3;
	par_comm_send(l->comm, &rep, sizeof(rep), RD_LEADER, RD_TAG_REPLY, NULL);
	fake_send_q(l, req->k + (first && mode == FAKE_EXTRA_Q));
}

/* A batch: every sequence gets its k tokens (id 5) and k q rows. */
static void fake_batch(struct draft_link *l, const struct rd_req *req, const int32_t *body,
		       enum fake_mode mode, bool first)
{
	enum { PROP_BYTES = sizeof(struct rd_batch_prop) + 2 * K * sizeof(int32_t) };
	static unsigned char buf[sizeof(struct rd_rep) + N_SLOTS * PROP_BYTES];
	const struct rd_batch_seq *ent = (const struct rd_batch_seq *)(const void *)body;
	struct rd_rep *head = (struct rd_rep *)(void *)buf;
	struct rd_batch_prop *bp = (struct rd_batch_prop *)(void *)(head + 1);
	int32_t *tok = (int32_t *)(void *)(bp + req->n_seqs);

	assert_true(req->n_seqs <= N_SLOTS);
	memset(buf, 0, sizeof(buf));
	head->status = SPECD_OK;
	head->n = req->n_seqs;
	for (uint32_t i = 0, at = 0; i < req->n_seqs; at += ent[i++].k) {
		bp[i] = (struct rd_batch_prop){.n = ent[i].k, .q_rows = ent[i].k};
		for (uint32_t j = 0; j < ent[i].k; j++)
			tok[at + j] = 5;
	}
	if (first && mode == FAKE_LONG_BATCH)
		bp[0].n = bp[0].q_rows = ent[0].k + 1;
	size_t bytes = sizeof(*head) + req->n_seqs * sizeof(*bp) + 2 * (size_t)req->k * 4;
	par_comm_send(l->comm, buf, bytes, RD_LEADER, RD_TAG_REPLY, NULL);
	for (uint32_t i = 0; i < req->n_seqs; i++)
		fake_send_q(l, bp[i].q_rows);
}

/* Rank 1: a draft rank answering as `mode` says until the leader's stop. */
static void fake_serve(struct draft_link *l, enum fake_mode mode)
{
	static int32_t body[4096];
	static float hidden[4096];
	bool first = true;
	for (;;) {
		struct rd_req req;
		assert_int_equal(par_comm_bcast_idle(l->comm, &req, sizeof(req), RD_LEADER, NULL),
				 SPECD_OK);
		if (req.n_hidden && req.dim) {
			assert_true((uint64_t)req.n_hidden * req.dim <= 4096);
			assert_int_equal(par_comm_bcast(l->comm, hidden, (size_t)req.n_hidden *
							req.dim * sizeof(float), RD_LEADER, NULL),
					 SPECD_OK);
		}
		if (req.n_new > RD_INLINE) {
			assert_true(req.n_new <= 4096);
			assert_int_equal(par_comm_bcast(l->comm, body, (size_t)req.n_new * 4,
							RD_LEADER, NULL), SPECD_OK);
		} else {
			memcpy(body, req.tokens, req.n_new * sizeof(int32_t));
		}
		switch (req.op) {
		case RD_STOP:
			return;
		case RD_HELLO:
			fake_hello(l, mode);
			break;
		case RD_PROPOSE:
			fake_propose(l, &req, mode, first);
			first = false;
			break;
		case RD_PROPOSE_BATCH:
			fake_batch(l, &req, body, mode, first);
			first = false;
			break;
		default:
			break;
		}
	}
}

/* Both ranks: a link with the fake draft rank of `mode` on rank 1, which serves until
 * the leader destroys it; rank 0 gets the remote drafter (NULL: on rank 1, or create
 * failed, with *st and err saying why). */
static struct drafter *fake_open(enum fake_mode mode, double hello_deadline_s,
				 struct draft_link **link, enum specd_status *st,
				 struct specd_error *err)
{
	struct draft_link_config lc = {.leader = 0, .draft = 1, .deadline_s = DEADLINE_S,
				       .hello_deadline_s = hello_deadline_s};
	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, link, NULL), SPECD_OK);
	if (g_rank == 1) {
		fake_serve(*link, mode);
		draft_link_destroy(*link);
		return NULL;
	}
	struct draft_config dc = {.method = DRAFT_METHOD_DRAFT_MODEL, .k_max = K,
				  .n_slots = N_SLOTS, .n_ctx = CTX, .target = g_t};
	struct draft_remote_config rc = {.link = *link};
	struct drafter *d = NULL;
	g_open = *link;
	*st = draft_remote_create(&rc, &dc, &d, err);
	return d;
}

/* Both ranks: fake_open for a fake whose hello succeeds; NULL on rank 1, once served. */
static struct drafter *fake_drafter(enum fake_mode mode, struct draft_link **link)
{
	enum specd_status st = SPECD_OK;
	struct specd_error err;
	struct drafter *d = fake_open(mode, 0, link, &st, &err);
	if (g_rank == 0 && st != SPECD_OK)
		fail_msg("hello: %s", err.msg);
	return d;
}

/* After the link was lost: the log said so once, and nothing more goes to the draft
 * rank but the stop (a propose gives nothing and asks nothing). */
static void assert_link_lost(struct drafter *d, struct draft_link *l, struct draft_seq *seq)
{
	const char *said = "the link is out of step: falling back to plain decoding";
	const char *log = ts_log_captured();
	const char *hit = strstr(log, said);
	if (!hit)
		fail_msg("log: %s", log);
	assert_null(strstr(hit + strlen(said), "falling back"));
	struct draft_link_stats a, b;
	draft_link_get_stats(l, &a);
	assert_true(a.dead);
	int32_t tok[K];
	float q[K * VOCAB];
	struct draft_proposal p = {.tokens = tok, .q = q};
	assert_int_equal(draft_propose(d, seq, K, &p, NULL), SPECD_OK);
	assert_int_equal(p.n, 0);
	assert_int_equal(draft_commit(d, seq, 0, 9, NULL), SPECD_OK);
	draft_link_get_stats(l, &b);
	assert_int_equal(b.requests, a.requests);
	assert_int_equal(b.proposals, a.proposals);
}

/* One refused single propose (an id past the vocabulary, or one q row more than
 * announced, which MPI refuses as too long): the propose gives nothing, no error. */
static void refused_single(enum fake_mode mode)
{
	struct draft_link *l;
	struct drafter *d = fake_drafter(mode, &l);
	if (!d)
		return;
	struct sampler *s;
	assert_int_equal(sampler_create(VOCAB, &k_sampled, &s, NULL), SPECD_OK);
	struct draft_seq seq = {.slot = 0, .tokens = k_prompt, .n_tokens = 8, .sampler = s};
	assert_int_equal(draft_reset(d, &seq, NULL), SPECD_OK);
	int32_t tok[K];
	/* Room for the row too many: Open MPI 4.1 writes a message longer than the
	 * receive past the buffer's end (single-copy and rendezvous paths) before it
	 * reports the truncation. */
	static float q[(K + 1) * VOCAB];
	struct draft_proposal p = {.tokens = tok, .q = q};
	struct specd_error err;
	ts_log_capture_begin();
	if (draft_propose(d, &seq, K, &p, &err) != SPECD_OK)
		fail_msg("a refused answer failed the propose: %s", err.msg);
	assert_int_equal(p.n, 0);
	assert_link_lost(d, l, &seq);
	ts_log_capture_end();
	sampler_destroy(s);
	/* the row too many was taken (and refused); a refused reply's rows were not */
	take_left(l, RD_TAG_Q, mode == FAKE_BAD_ID);
	link_close(d, l);
}

static void test_link__an_id_past_the_vocabulary_loses_it(void **state)
{
	(void)state;
	refused_single(FAKE_BAD_ID);
}

static void test_link__more_q_rows_than_announced_lose_it(void **state)
{
	(void)state;
	refused_single(FAKE_EXTRA_Q);
}

static void test_link__a_refused_batch_loses_it_for_every_sequence(void **state)
{
	(void)state;
	struct draft_link *l;
	struct drafter *d = fake_drafter(FAKE_LONG_BATCH, &l);
	if (!d)
		return;
	struct sampler *s[2];
	struct draft_seq seq[2];
	int32_t tok[2][K];
	static float q[2][K * VOCAB];
	struct draft_proposal p[2], *out[2];
	uint32_t k[2] = {K, K - 1};
	for (uint32_t i = 0; i < 2; i++) {
		assert_int_equal(sampler_create(VOCAB, &k_sampled, &s[i], NULL), SPECD_OK);
		seq[i] = (struct draft_seq){.slot = i, .tokens = k_prompt, .n_tokens = 8 - i,
					    .sampler = s[i]};
		assert_int_equal(draft_reset(d, &seq[i], NULL), SPECD_OK);
		p[i] = (struct draft_proposal){.tokens = tok[i], .q = q[i]};
		out[i] = &p[i];
	}
	struct specd_error err;
	ts_log_capture_begin();
	if (draft_propose_batch(d, seq, k, out, 2, &err) != SPECD_OK)
		fail_msg("a refused answer failed the batch: %s", err.msg);
	assert_int_equal(p[0].n, 0);
	assert_int_equal(p[1].n, 0);
	assert_true(p[0].q_onehot && p[1].q_onehot);
	assert_link_lost(d, l, &seq[1]);
	/* a later batch asks nothing either */
	assert_int_equal(draft_propose_batch(d, seq, k, out, 2, NULL), SPECD_OK);
	assert_int_equal(p[0].n + p[1].n, 0);
	ts_log_capture_end();
	struct draft_link_stats ls;
	draft_link_get_stats(l, &ls);
	assert_int_equal(ls.batches, 1);
	for (uint32_t i = 0; i < 2; i++)
		sampler_destroy(s[i]);
	take_left(l, RD_TAG_Q, 2); /* each sequence's rows, behind the refused reply */
	link_close(d, l);
}

/* Rank 0: one sampled job to its end with drafter d (NULL: plain sampling). */
static uint32_t sample_job(struct drafter *d, int32_t *out)
{
	uint32_t n = 0;
	assert_int_equal(fx_generate(g_t, d, K, NULL, k_prompt, 8, &k_sampled, MAX_OUT, -1, out,
				     MAX_OUT, &n, NULL, NULL), SPECD_OK);
	return n;
}

/* The consequence that matters: every step after the refused answer is plain, and
 * none tests p/q against the rows queued behind it, so the text is plain sampling's. */
static void test_link__sampling_after_a_refused_answer_is_plain(void **state)
{
	(void)state;
	int32_t plain[MAX_OUT], spec[MAX_OUT];
	uint32_t n_plain = 0;
	if (g_rank == 0)
		n_plain = sample_job(NULL, plain);
	struct draft_link *l;
	struct drafter *d = fake_drafter(FAKE_BAD_ID, &l);
	if (!d)
		return;
	ts_log_capture_begin();
	uint32_t n = sample_job(d, spec);
	ts_log_capture_end();
	assert_int_equal(n, n_plain);
	assert_memory_equal(spec, plain, n * sizeof(int32_t));
	struct draft_link_stats ls;
	draft_link_get_stats(l, &ls);
	assert_true(ls.dead);
	assert_int_equal(ls.requests, 1);
	assert_int_equal(ls.proposals, 0);
	take_left(l, RD_TAG_Q, 1);
	link_close(d, l);
}

/* Rank 0: a hello as built by hand, and its answer. */
static enum specd_status raw_hello(struct draft_link *l, struct rd_req *req, struct rd_rep *rep)
{
	req->op = RD_HELLO;
	req->k_max = K;
	req->n_slots = 1;
	req->n_ctx = CTX;
	req->n_vocab = VOCAB;
	req->transport = DRAFT_Q_FULL;
	assert_int_equal(par_comm_bcast(l->comm, req, sizeof(*req), RD_LEADER, NULL), SPECD_OK);
	assert_int_equal(par_comm_recv(l->comm, rep, sizeof(*rep), RD_DRAFT, RD_TAG_REPLY, NULL),
			 SPECD_OK);
	rep->msg[RD_MSG_BYTES - 1] = '\0';
	return (enum specd_status)rep->status;
}

/* The real draft rank refuses hellos of another protocol, another layout and a method
 * past the enum (a shift by it would be undefined), says its own version, and still
 * makes the drafter of a good hello after them. */
static void test_hello__draft_rank_refuses_other_builds_and_methods(void **state)
{
	(void)state;
	struct draft_link_config lc = {.leader = 0, .draft = 1};
	struct draft_link *l;
	struct specd_error err;
	assert_int_equal(draft_link_create(MPI_COMM_WORLD, &lc, &l, NULL), SPECD_OK);
	if (g_rank == 1) {
		struct draft_server_config sc = {.target = g_t};
		/* the first refusal is what the draft rank ends with */
		assert_int_equal(draft_serve(l, &sc, &err), SPECD_PROTO);
		assert_non_null(strstr(err.msg, "draft protocol"));
		draft_link_destroy(l);
		return;
	}
	g_open = l;
	struct rd_rep rep;
	char want[160];
	struct rd_req req = {.version = RD_VERSION + 1, .req_bytes = sizeof(struct rd_req),
			     .rep_bytes = sizeof(struct rd_rep), .method = DRAFT_METHOD_NGRAM};
	assert_int_equal(raw_hello(l, &req, &rep), SPECD_PROTO);
	snprintf(want, sizeof(want), "the leader speaks draft protocol %u", RD_VERSION + 1);
	assert_non_null(strstr(rep.msg, want));
	snprintf(want, sizeof(want), "this rank %u", RD_VERSION);
	assert_non_null(strstr(rep.msg, want));
	assert_int_equal(rep.version, RD_VERSION);
	assert_int_equal(rep.req_bytes, sizeof(struct rd_req));
	assert_int_equal(rep.rep_bytes, sizeof(struct rd_rep));

	req = (struct rd_req){.version = RD_VERSION, .req_bytes = sizeof(struct rd_req) - 8,
			      .rep_bytes = sizeof(struct rd_rep), .method = DRAFT_METHOD_NGRAM};
	assert_int_equal(raw_hello(l, &req, &rep), SPECD_PROTO);
	assert_non_null(strstr(rep.msg, "same specd build"));

	req = (struct rd_req){.version = RD_VERSION, .req_bytes = sizeof(struct rd_req),
			      .rep_bytes = sizeof(struct rd_rep), .method = 40};
	assert_int_equal(raw_hello(l, &req, &rep), SPECD_INVAL);
	assert_non_null(strstr(rep.msg, "method 40"));

	struct draft_config dc = {.method = DRAFT_METHOD_NGRAM, .k_max = K, .n_slots = N_SLOTS,
				  .n_ctx = CTX, .target = g_t, .prompt_lookup_min = 1};
	struct draft_remote_config rc = {.link = l};
	struct drafter *d;
	if (draft_remote_create(&rc, &dc, &d, &err) != SPECD_OK)
		fail_msg("a good hello after bad ones: %s", err.msg);
	struct draft_seq seq = {.slot = 0, .tokens = k_prompt, .n_tokens = 8};
	int32_t tok[K];
	struct draft_proposal p = {.tokens = tok};
	assert_int_equal(draft_reset(d, &seq, NULL), SPECD_OK);
	assert_int_equal(draft_propose(d, &seq, K, &p, NULL), SPECD_OK);
	assert_true(p.n > 0); /* "5 6 7" repeats: prompt lookup continues it */
	assert_int_equal(tok[0], 6);
	link_close(d, l);
}

/* Both ranks: a hello to the fake draft rank of `mode`; on rank 0 its status (err
 * saying why), the drafter, if made, closed at once. */
static enum specd_status fake_hello_status(enum fake_mode mode, double hello_deadline_s,
					   struct specd_error *err)
{
	struct draft_link *l;
	enum specd_status st = SPECD_OK;
	struct drafter *d = fake_open(mode, hello_deadline_s, &l, &st, err);
	if (g_rank != 0)
		return SPECD_OK;
	/* an answer too late goes out in the end: the fake then waits for the stop */
	if (st != SPECD_OK && mode == FAKE_SLOW_HELLO) {
		specd_sleep(4 * DEADLINE_S);
		take_left(l, RD_TAG_REPLY, 1);
	}
	link_close(d, l);
	return st;
}

/* The leader refuses a draft rank that answers the hello as another protocol. */
static void test_hello__leader_refuses_a_draft_rank_of_another_build(void **state)
{
	(void)state;
	struct specd_error err;
	enum specd_status st = fake_hello_status(FAKE_OLD_VERSION, 0, &err);
	if (g_rank == 1)
		return;
	assert_int_equal(st, SPECD_PROTO);
	if (!strstr(err.msg, "draft rank 1 speaks draft protocol 1"))
		fail_msg("%s", err.msg);
	assert_non_null(strstr(err.msg, "same specd build"));
}

/* Making the drafter may take longer than any message: the hello waits for it under
 * its own deadline (by default far longer than DEADLINE_S), and a hello deadline as
 * short as the messages' still gives up. */
static void test_hello__waits_for_a_slow_drafter_under_its_deadline(void **state)
{
	(void)state;
	struct specd_error err;
	enum specd_status st = fake_hello_status(FAKE_SLOW_HELLO, 0, &err);
	if (st != SPECD_OK)
		fail_msg("a slow hello: %s", err.msg);
	st = fake_hello_status(FAKE_SLOW_HELLO, DEADLINE_S, &err);
	if (g_rank == 0)
		assert_int_equal(st, SPECD_TIMEOUT);
}

#define LINK_TEST(t) cmocka_unit_test_teardown(t, teardown_test)

int main(int argc, char **argv)
{
	if (!fx_mpi_init_pair(&argc, &argv))
		return 1;
	const struct CMUnitTest tests[] = {
		LINK_TEST(test_link__an_id_past_the_vocabulary_loses_it),
		LINK_TEST(test_link__more_q_rows_than_announced_lose_it),
		LINK_TEST(test_link__a_refused_batch_loses_it_for_every_sequence),
		LINK_TEST(test_link__sampling_after_a_refused_answer_is_plain),
		LINK_TEST(test_hello__draft_rank_refuses_other_builds_and_methods),
		LINK_TEST(test_hello__leader_refuses_a_draft_rank_of_another_build),
		LINK_TEST(test_hello__waits_for_a_slow_drafter_under_its_deadline),
	};
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	MPI_Finalize();
	return rc;
}
