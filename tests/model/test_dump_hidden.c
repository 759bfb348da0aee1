/* specd-dump-hidden (tools/dump_hidden.c), the training data of tools/train-heads, on
 * stories260K: the file's tensors and their shapes, sequence offsets that add up, the
 * prompt's own token ids, greedy next tokens that are the generated ones, hidden rows and
 * greedy choices bitwise those of a fresh model_forward, f16 rows the f32 ones rounded,
 * the dequantised LM head, seeded sampling that repeats; and bad arguments that fail
 * with a message and leave no file behind. Skips when stories260K is absent. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "test_support.h"

#define GEN 12
#define DIM 64
#define VOCAB 512

static const char *const k_prompts[] = {"Once upon a time", "The little dog"};

static char g_dir[512], g_model[600], g_prompts[700];

/* A dump read back: the whole file, its JSON header and the data section. */
struct dump_file {
	unsigned char *bytes;
	size_t size;
	json_t *hdr;
	const unsigned char *data;
};

/* One tensor of a dump: dtype name, shape, bytes (in dump_file.bytes). */
struct dump_tensor {
	const char *dtype;
	size_t n_dims, shape[2];
	const unsigned char *p;
	size_t nbytes;
};

static char *run_tool(const char *const *args, int *rc)
{
	char *text = ts_run_built("tools/specd-dump-hidden", NULL, args, rc);
	assert_non_null(text);
	return text;
}

/* Runs the tool on the two prompts with extra flags; fails the test unless it exits 0. */
static void dump(const char *out, const char *const *extra)
{
	char tokens[16];
	const char *args[24] = {"-m", g_model, "-p", g_prompts, "-o", out, "--tokens", tokens};
	size_t n = 8;
	snprintf(tokens, sizeof(tokens), "%d", GEN);
	for (; *extra && n < 23; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	int rc;
	char *text = run_tool(args, &rc);
	if (rc != 0)
		fprintf(stderr, "%s", text);
	free(text);
	assert_int_equal(rc, 0);
}

static void dump_read(const char *path, struct dump_file *f)
{
	f->bytes = ts_read_file(path, &f->size);
	assert_non_null(f->bytes);
	assert_true(f->size > 8);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)f->bytes[i] << (8 * i);
	assert_true(hlen % 8 == 0 && 8 + hlen <= f->size);
	json_error_t je;
	f->hdr = json_loadb((const char *)f->bytes + 8, hlen, 0, &je);
	assert_non_null(f->hdr);
	f->data = f->bytes + 8 + hlen;
}

static void dump_free(struct dump_file *f)
{
	json_decref(f->hdr);
	free(f->bytes);
}

static struct dump_tensor tensor(const struct dump_file *f, const char *name)
{
	struct dump_tensor t = {0};
	json_t *e = json_object_get(f->hdr, name);
	assert_non_null(e);
	t.dtype = json_string_value(json_object_get(e, "dtype"));
	assert_non_null(t.dtype);
	json_t *shape = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
	t.n_dims = json_array_size(shape);
	assert_true(t.n_dims == 1 || t.n_dims == 2);
	for (size_t d = 0; d < t.n_dims; d++)
		t.shape[d] = (size_t)json_integer_value(json_array_get(shape, d));
	size_t a = (size_t)json_integer_value(json_array_get(offs, 0));
	size_t b = (size_t)json_integer_value(json_array_get(offs, 1));
	assert_true(a <= b && f->data + b <= f->bytes + f->size);
	t.p = f->data + a;
	t.nbytes = b - a;
	size_t elems = t.shape[0] * (t.n_dims == 2 ? t.shape[1] : 1);
	size_t es = strcmp(t.dtype, "F16") == 0 ? 2 : 4;
	assert_int_equal(t.nbytes, elems * es);
	return t;
}

static int32_t i32_at(const struct dump_tensor *t, size_t i)
{
	int32_t v;
	memcpy(&v, t->p + 4 * i, 4);
	return v;
}

static float f32_at(const struct dump_tensor *t, size_t i)
{
	float v;
	memcpy(&v, t->p + 4 * i, 4);
	return v;
}

static const char *meta(const struct dump_file *f, const char *key)
{
	const char *v = json_string_value(json_object_get(json_object_get(f->hdr, "__metadata__"),
							 key));
	assert_non_null(v);
	return v;
}

static int setup(void **state)
{
	(void)state;
	if (!ts_model_path("stories260K.gguf", g_model, sizeof(g_model)))
		g_model[0] = '\0';
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	/* A blank line between the prompts is skipped. */
	char text[256];
	snprintf(text, sizeof(text), "%s\n\n%s\r\n", k_prompts[0], k_prompts[1]);
	return ts_write_file(g_dir, "prompts.txt", text, g_prompts, sizeof(g_prompts)) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

/* Every name in g_dir that holds `part`. */
static int files_with(const char *part)
{
	DIR *d = opendir(g_dir);
	struct dirent *e;
	int n = 0;
	assert_non_null(d);
	while ((e = readdir(d)))
		n += strstr(e->d_name, part) != NULL;
	closedir(d);
	return n;
}

/* Checks a greedy f32 dump against stories260K run afresh. */
static void check_against_model(const struct dump_file *f, bool greedy)
{
	struct dump_tensor hid = tensor(f, "hidden"), next = tensor(f, "next");
	struct dump_tensor toks = tensor(f, "tokens"), seq = tensor(f, "seq_start");
	struct dump_tensor lm = tensor(f, "lm_head");
	size_t n = hid.shape[0];
	struct specd_error err;
	struct model *m;
	struct tok *tok;
	struct model_config cfg = {.n_slots = 1, .n_ctx = 64};

	assert_int_equal(model_load(g_model, &cfg, &m, &err), SPECD_OK);
	assert_int_equal(tok_load_gguf(model_gguf(m), &tok, &err), SPECD_OK);
	assert_string_equal(hid.dtype, "F32");
	assert_int_equal(hid.n_dims, 2);
	assert_int_equal(hid.shape[1], DIM);
	assert_string_equal(next.dtype, "I32");
	assert_string_equal(toks.dtype, "I32");
	assert_string_equal(seq.dtype, "I32");
	assert_int_equal(next.shape[0], n);
	assert_int_equal(toks.shape[0], n);
	assert_int_equal(seq.shape[0], 3);
	assert_int_equal(lm.n_dims, 2);
	assert_int_equal(lm.shape[0], VOCAB);
	assert_int_equal(lm.shape[1], DIM);
	assert_string_equal(meta(f, "model"), "stories260K.gguf");
	assert_string_equal(meta(f, "dim"), "64");
	assert_string_equal(meta(f, "n_vocab"), "512");
	assert_string_equal(meta(f, "prompts"), "2");
	assert_int_equal(i32_at(&seq, 0), 0);
	assert_int_equal(i32_at(&seq, 2), (int32_t)n);

	size_t generated = 0;
	for (size_t s = 0; s < 2; s++) {
		size_t a = (size_t)i32_at(&seq, s), b = (size_t)i32_at(&seq, s + 1);
		int32_t ids[64];
		size_t n_ids = 0;
		const char *p = k_prompts[s];
		assert_int_equal(tok_encode(tok, p, strlen(p), tok_add_bos(tok), ids, 64, &n_ids),
				 SPECD_OK);
		/* The prompt, then 1..GEN generated tokens (stories260K never stops this early). */
		assert_true(b > a + n_ids && b <= a + n_ids + GEN);
		generated += b - a - n_ids;
		for (size_t i = 0; i < n_ids; i++)
			assert_int_equal(i32_at(&toks, a + i), ids[i]);
		if (greedy)
			for (size_t t = a + n_ids - 1; t + 1 < b; t++)
				assert_int_equal(i32_at(&next, t), i32_at(&toks, t + 1));

		/* The same tokens afresh, in one batch: bitwise the same rows (batch
		 * invariance), and next is each row's argmax. */
		uint32_t len = (uint32_t)(b - a), tk[64], pos[64], slot[64] = {0}, idx[64];
		static float logits[64 * VOCAB], hidden[64 * DIM];
		assert_true(len <= 64);
		for (uint32_t i = 0; i < len; i++) {
			tk[i] = (uint32_t)i32_at(&toks, a + i);
			pos[i] = idx[i] = i;
		}
		assert_int_equal(kv_truncate(model_kv(m), 0, 0), SPECD_OK);
		struct model_batch mb = {.n_tokens = len, .tokens = tk, .slots = slot, .pos = pos,
					 .n_out = len, .out_idx = idx, .logits = logits,
					 .hidden = hidden};
		assert_int_equal(model_forward(m, &mb, &err), SPECD_OK);
		assert_memory_equal(hid.p + a * DIM * 4, hidden, (size_t)len * DIM * 4);
		for (uint32_t i = 0; i < len; i++)
			assert_int_equal(i32_at(&next, a + i),
					 sampler_argmax(logits + (size_t)i * VOCAB, VOCAB));
	}
	char gen[24];
	snprintf(gen, sizeof(gen), "%zu", generated);
	assert_string_equal(meta(f, "generated"), gen);

	/* The LM head the model computes with, dequantised. */
	const struct model_hparams *hp = model_hparams(m);
	const struct gguf_tensor *w = gguf_find_tensor(model_gguf(m), hp->tied_output
								    ? "token_embd.weight"
								    : "output.weight");
	assert_non_null(w);
	size_t rb = kern_dtype_row_bytes(w->type, DIM);
	float row[DIM];
	for (size_t r = 0; r < VOCAB; r++) {
		kern_dequant_row(w->type, (const uint8_t *)w->data + r * rb, row, DIM);
		for (size_t c = 0; c < DIM; c++)
			assert_true(f32_at(&lm, r * DIM + c) == row[c]);
	}
	tok_destroy(tok);
	model_destroy(m);
}

static void test_dump_hidden__greedy_f32_equals_a_fresh_forward(void **state)
{
	(void)state;
	if (!g_model[0])
		skip();
	char out[700];
	snprintf(out, sizeof(out), "%s/greedy.safetensors", g_dir);
	dump(out, (const char *[]){"--dtype", "f32", NULL});
	struct dump_file f;
	dump_read(out, &f);
	check_against_model(&f, true);
	assert_string_equal(meta(&f, "temperature"), "0");
	dump_free(&f);
	assert_int_equal(files_with(".tmp-"), 0);
}

static void test_dump_hidden__f16_is_f32_rounded(void **state)
{
	(void)state;
	if (!g_model[0])
		skip();
	char o32[700], o16[700];
	snprintf(o32, sizeof(o32), "%s/h32.safetensors", g_dir);
	snprintf(o16, sizeof(o16), "%s/h16.safetensors", g_dir);
	dump(o32, (const char *[]){"--dtype", "f32", NULL});
	dump(o16, (const char *[]){NULL}); /* f16 is the default */
	struct dump_file a, b;
	dump_read(o32, &a);
	dump_read(o16, &b);
	static const char *const floats[] = {"hidden", "lm_head"};
	for (int k = 0; k < 2; k++) {
		struct dump_tensor x = tensor(&a, floats[k]), y = tensor(&b, floats[k]);
		assert_string_equal(y.dtype, "F16");
		assert_int_equal(x.shape[0], y.shape[0]);
		assert_int_equal(x.shape[1], y.shape[1]);
		for (size_t i = 0; i < x.shape[0] * x.shape[1]; i++) {
			uint16_t h;
			memcpy(&h, y.p + 2 * i, 2);
			assert_int_equal(h, kern_f32_to_f16(f32_at(&x, i)));
		}
	}
	static const char *const ints[] = {"next", "tokens", "seq_start"};
	for (int k = 0; k < 3; k++) {
		struct dump_tensor x = tensor(&a, ints[k]), y = tensor(&b, ints[k]);
		assert_int_equal(x.nbytes, y.nbytes);
		assert_memory_equal(x.p, y.p, x.nbytes);
	}
	dump_free(&a);
	dump_free(&b);
}

/* Sampled continuations: next is still the greedy choice at each position, and a seed
 * gives the same file again. */
static void test_dump_hidden__sampling_is_seeded_and_next_stays_greedy(void **state)
{
	(void)state;
	if (!g_model[0])
		skip();
	char o1[700], o2[700];
	snprintf(o1, sizeof(o1), "%s/s1.safetensors", g_dir);
	snprintf(o2, sizeof(o2), "%s/s2.safetensors", g_dir);
	const char *args[] = {"--dtype", "f32", "--temperature", "1.5", "--seed", "7", NULL};
	dump(o1, args);
	dump(o2, args);
	struct dump_file a, b;
	dump_read(o1, &a);
	dump_read(o2, &b);
	assert_int_equal(a.size, b.size);
	assert_memory_equal(a.bytes, b.bytes, a.size);
	assert_string_equal(meta(&a, "temperature"), "1.5");
	check_against_model(&a, false);
	dump_free(&a);
	dump_free(&b);
}

static void expect_failure(const char *const *args, const char *message, const char *out)
{
	int rc;
	char *text = run_tool(args, &rc);
	if (!strstr(text, message))
		fprintf(stderr, "expected '%s' in: %s\n", message, text);
	assert_non_null(strstr(text, message));
	free(text);
	assert_true(rc != 0 && rc != -1);
	if (out)
		assert_null(fopen(out, "rb"));
}

static void test_dump_hidden__bad_arguments_fail_with_a_message(void **state)
{
	(void)state;
	char out[700], missing[700], empty[700], nodir[700];
	snprintf(out, sizeof(out), "%s/bad.safetensors", g_dir);
	snprintf(missing, sizeof(missing), "%s/no-such-model.gguf", g_dir);
	snprintf(nodir, sizeof(nodir), "%s/no-such-dir/out.safetensors", g_dir);
	assert_true(ts_write_file(g_dir, "empty.txt", "\n\r\n\n", empty, sizeof(empty)));

	expect_failure((const char *[]){"-m", missing, "-p", g_prompts, "-o", out, NULL},
		       "no-such-model.gguf", out);
	expect_failure((const char *[]){"-m", missing, "-p", empty, "-o", out, NULL},
		       "holds no prompt", out);
	expect_failure((const char *[]){"-m", missing, "-p", "/nonexistent/prompts.txt", "-o", out,
					NULL},
		       "cannot open the prompt file", out);
	expect_failure((const char *[]){"-m", missing, "-p", g_prompts, NULL}, "required", NULL);
	expect_failure((const char *[]){"-m", missing, "-p", g_prompts, "-o", out, "--dtype", "q8_0",
					NULL},
		       "bad value 'q8_0' for --dtype", out);
	expect_failure((const char *[]){"-m", missing, "-p", g_prompts, "-o", out, "--tokens", "-3",
					NULL},
		       "bad value '-3' for --tokens", out);
	if (g_model[0]) {
		expect_failure((const char *[]){"-m", g_model, "-p", g_prompts, "-o", nodir, NULL},
			       "cannot write", nodir);
		/* stories260K has no chat template. */
		expect_failure((const char *[]){"-m", g_model, "-p", g_prompts, "-o", out, "--chat",
						NULL},
			       "--chat", out);
		/* Every prompt too long for the context: the run fails after the output was
		 * opened, and its temporary file is gone. */
		expect_failure((const char *[]){"-m", g_model, "-p", g_prompts, "-o", out, "--ctx",
						"2", NULL},
			       "no prompt fits", out);
	}
	assert_int_equal(files_with(".tmp-"), 0);

	int rc;
	char *text = run_tool((const char *[]){"--help", NULL}, &rc);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(text, "usage: specd-dump-hidden"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dump_hidden__greedy_f32_equals_a_fresh_forward),
		cmocka_unit_test(test_dump_hidden__f16_is_f32_rounded),
		cmocka_unit_test(test_dump_hidden__sampling_is_seeded_and_next_stays_greedy),
		cmocka_unit_test(test_dump_hidden__bad_arguments_fail_with_a_message),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
