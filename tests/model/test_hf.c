/* model/hf_*.c: Hugging Face folders that specd-gen-model --hf writes against their GGUF
 * twins (same greedy tokens and logits: bitwise for qwen2, whose GGUF RoPE pairing is
 * Hugging Face's; within 1e-5 for llama, whose twin permutes q/k rows and so sums the
 * attention dot products in another order), the same token ids for prompts, sharded
 * against single-file, both merge forms; and every corruption a clear error naming the
 * file and the key or tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/tokenizer.h"
#include "test_support.h"

#define STEPS 6
#define MAX_VOCAB 600

static char g_dir[512];

/* Generates OUT.gguf and its folder DIR under g_dir; extra flags after the name. */
static void gen(const char *name, const char *const *args)
{
	char out[700], dir[700];
	const char *argv[36];
	int n = 0;
	snprintf(out, sizeof(out), "%s/%s.gguf", g_dir, name);
	snprintf(dir, sizeof(dir), "%s/%s", g_dir, name);
	argv[n++] = "--hf";
	argv[n++] = dir;
	for (int i = 0; args[i] && n < 35; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	assert_int_equal(ts_gen_model(out, argv), 0);
}

static int setup_models(void **state)
{
	(void)state;
	if (!ts_mkdtemp(g_dir, sizeof(g_dir)))
		return -1;
	const char *llama[] = {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
			       "--ffn", "96", "--vocab", "520", "--ctx", "64", "--seed", "3", NULL};
	const char *llama16[] = {"--dim", "64", "--layers", "2", "--heads", "2", "--kv-heads", "1",
				 "--ffn", "128", "--vocab", "300", "--ctx", "64", "--type", "f16",
				 "--tied", "--seed", "4", NULL};
	const char *qwen[] = {"--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
			      "--kv-heads", "1", "--ffn", "128", "--vocab", "400", "--ctx", "64",
			      "--type", "bf16", "--tied", "--seed", "5", NULL};
	const char *qwen3[] = {"--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4",
			       "--kv-heads", "1", "--ffn", "128", "--vocab", "400", "--ctx", "64",
			       "--type", "bf16", "--tied", "--seed", "5", "--hf-shards", "3", NULL};
	gen("llama", llama);
	gen("llama16", llama16);
	gen("qwen", qwen);
	gen("qwen3", qwen3);
	return 0;
}

static int teardown_models(void **state)
{
	(void)state;
	ts_rmtree(g_dir);
	return 0;
}

static void path_of(const char *name, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%s", g_dir, name);
}

static struct model *load(const char *name)
{
	char path[700];
	struct model_config cfg = {.n_slots = 1, .n_ctx = 48, .max_batch = 16};
	struct model *m = NULL;
	struct specd_error err;
	path_of(name, path, sizeof(path));
	enum specd_status st = model_load(path, &cfg, &m, &err);
	if (st != SPECD_OK)
		fprintf(stderr, "model_load %s: %s\n", path, err.msg);
	assert_int_equal(st, SPECD_OK);
	return m;
}

/* Prefills `prompt` and decodes STEPS greedy tokens; logits of each step into
 * logits (STEPS, n_vocab), the tokens into toks. */
static void greedy(struct model *m, const uint32_t *prompt, uint32_t n, float *logits,
		   uint32_t *toks)
{
	uint32_t vocab = model_hparams(m)->n_vocab, slots[16] = {0}, pos[16], last;
	struct specd_error err;
	for (uint32_t i = 0; i < n; i++)
		pos[i] = i;
	last = n - 1;
	struct model_batch b = {.n_tokens = n, .tokens = prompt, .slots = slots, .pos = pos,
				.n_out = 1, .out_idx = &last, .logits = logits};
	assert_int_equal(model_forward(m, &b, &err), SPECD_OK);
	for (int s = 0; s < STEPS; s++) {
		const float *l = logits + (size_t)s * vocab;
		uint32_t best = 0, p = n + (uint32_t)s, zero = 0;
		for (uint32_t v = 1; v < vocab; v++)
			best = l[v] > l[best] ? v : best;
		toks[s] = best;
		if (s + 1 == STEPS)
			break;
		struct model_batch one = {.n_tokens = 1, .tokens = &toks[s], .slots = slots,
					  .pos = &p, .n_out = 1, .out_idx = &zero,
					  .logits = logits + (size_t)(s + 1) * vocab};
		assert_int_equal(model_forward(m, &one, &err), SPECD_OK);
	}
}

/* The two models give the same greedy tokens, logits equal bitwise (tol 0) or within
 * tol; and their tokenizers the same ids for a few prompts. */
static void compare(const char *a_name, const char *b_name, float tol)
{
	static const char *const prompts[] = {
		"hello world", "  the cat sat on 12345 mats!\n", "<|im_start|>user\nhi<|im_end|>",
		"caf\xc3\xa9 \xe2\x96\x81 done", "",
	};
	struct model *a = load(a_name), *b = load(b_name);
	uint32_t vocab = model_hparams(a)->n_vocab;
	assert_int_equal(vocab, model_hparams(b)->n_vocab);
	float *la = calloc((size_t)STEPS * vocab, sizeof(float));
	float *lb = calloc((size_t)STEPS * vocab, sizeof(float));
	uint32_t ta[STEPS], tb[STEPS], prompt[] = {7, 290, 42, 260, 99};
	greedy(a, prompt, 5, la, ta);
	greedy(b, prompt, 5, lb, tb);
	assert_memory_equal(ta, tb, sizeof(ta));
	if (tol == 0.0f) {
		assert_memory_equal(la, lb, (size_t)STEPS * vocab * sizeof(float));
	} else {
		for (size_t i = 0; i < (size_t)STEPS * vocab; i++)
			assert_true(la[i] - lb[i] <= tol && lb[i] - la[i] <= tol);
	}
	free(la);
	free(lb);

	struct tok *tka = NULL, *tkb = NULL;
	struct specd_error err;
	assert_int_equal(tok_load_gguf(model_gguf(a), &tka, &err), SPECD_OK);
	assert_int_equal(tok_load_gguf(model_gguf(b), &tkb, &err), SPECD_OK);
	assert_int_equal(tok_vocab_size(tka), tok_vocab_size(tkb));
	assert_int_equal(tok_bos(tka), tok_bos(tkb));
	assert_int_equal(tok_eos(tka), tok_eos(tkb));
	assert_int_equal(tok_add_bos(tka), tok_add_bos(tkb));
	for (size_t p = 0; p < sizeof(prompts) / sizeof(prompts[0]); p++) {
		int32_t ia[128], ib[128];
		size_t na = 0, nb = 0, len = strlen(prompts[p]);
		assert_int_equal(tok_encode_special(tka, prompts[p], len, true, ia, 128, &na), SPECD_OK);
		assert_int_equal(tok_encode_special(tkb, prompts[p], len, true, ib, 128, &nb), SPECD_OK);
		assert_int_equal(na, nb);
		assert_memory_equal(ia, ib, na * sizeof(int32_t));
	}
	struct gguf_str ca, cb;
	assert_true(gguf_get_str(model_gguf(a), "tokenizer.chat_template", &ca));
	assert_true(gguf_get_str(model_gguf(b), "tokenizer.chat_template", &cb));
	assert_int_equal(ca.len, cb.len);
	assert_memory_equal(ca.ptr, cb.ptr, ca.len);
	tok_destroy(tka);
	tok_destroy(tkb);
	model_destroy(a);
	model_destroy(b);
}

static void test_hf__llama_f32_matches_gguf_twin(void **state)
{
	(void)state;
	compare("llama", "llama.gguf", 1e-5f);
}

static void test_hf__llama_f16_tied_matches_gguf_twin(void **state)
{
	(void)state;
	compare("llama16", "llama16.gguf", 1e-5f);
}

static void test_hf__qwen2_bf16_bitwise_equals_gguf_twin(void **state)
{
	(void)state;
	compare("qwen", "qwen.gguf", 0.0f);
}

static void test_hf__sharded_bitwise_equals_single_file(void **state)
{
	(void)state;
	compare("qwen3", "qwen", 0.0f);
	compare("qwen3", "qwen.gguf", 0.0f);
}

static void test_hf__view_has_gguf_names_and_halves_rope(void **state)
{
	(void)state;
	char path[700];
	struct gguf_file *f = NULL;
	struct specd_error err;
	struct gguf_str s;
	path_of("qwen3", path, sizeof(path));
	assert_int_equal(model_file_open(path, &f, &err), SPECD_OK);
	assert_true(gguf_get_str(f, MODEL_KEY_ROPE_LAYOUT, &s));
	assert_int_equal(s.len, 6);
	assert_memory_equal(s.ptr, "halves", 6);
	const struct gguf_tensor *t = gguf_find_tensor(f, "blk.1.attn_q.weight");
	assert_non_null(t);
	assert_int_equal(t->type, KERN_BF16);
	assert_int_equal(t->ne[0], 64);
	assert_int_equal(t->ne[1], 64);
	t = gguf_find_tensor(f, "blk.0.ffn_norm.weight"); /* bf16 on disk, f32 in the view */
	assert_non_null(t);
	assert_int_equal(t->type, KERN_F32);
	assert_null(gguf_find_tensor(f, "output.weight")); /* tied */
	gguf_close(f);

	char name[64];
	assert_true(model_file_gguf_name("model.layers.12.mlp.down_proj.weight", name, sizeof(name)));
	assert_string_equal(name, "blk.12.ffn_down.weight");
	assert_true(model_file_hf_name("blk.3.attn_k.bias", name, sizeof(name)));
	assert_string_equal(name, "model.layers.3.self_attn.k_proj.bias");
	assert_false(model_file_gguf_name("model.layers.1.self_attn.rotary_emb.inv_freq", name,
					  sizeof(name)));
	assert_false(model_file_gguf_name("model.layers.x.mlp.up_proj.weight", name, sizeof(name)));
}

/* ---- corrupted folders ---- */

static char *slurp(const char *path, size_t *len)
{
	char *p = ts_read_file(path, len);
	assert_non_null(p);
	return p;
}

static void spit(const char *path, const void *p, size_t len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, len, fp), len);
	fclose(fp);
}

/* A fresh copy of folder `from` in g_dir/case, returned in dir. */
static void copy_folder(const char *from, char *dir, size_t cap)
{
	static const char *const files[] = {
		"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
		"model.safetensors.index.json", "model-00001-of-00003.safetensors",
		"model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
	};
	char src[800], dst[800];
	snprintf(dir, cap, "%s/case", g_dir);
	ts_rmtree(dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		size_t len;
		snprintf(src, sizeof(src), "%s/%s/%s", g_dir, from, files[i]);
		if (access(src, F_OK) != 0)
			continue;
		char *p = slurp(src, &len);
		snprintf(dst, sizeof(dst), "%s/%s", dir, files[i]);
		spit(dst, p, len);
		free(p);
	}
}

/* Opens dir, which must fail with `code` and a message holding every substring. */
static void expect_open_error(const char *dir, enum specd_status code, ...)
{
	struct gguf_file *f = NULL;
	struct specd_error err;
	va_list ap;
	enum specd_status st = model_file_open(dir, &f, &err);
	if (st != code)
		fprintf(stderr, "got %s: %s\n", specd_status_str(st), st ? err.msg : "");
	assert_int_equal(st, code);
	assert_null(f);
	va_start(ap, code);
	for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
		if (!strstr(err.msg, s))
			fprintf(stderr, "'%s' not in: %s\n", s, err.msg);
		assert_non_null(strstr(err.msg, s));
	}
	va_end(ap);
}

/* Edits dir/name (JSON) with fn. */
static void edit_json(const char *dir, const char *name, void (*fn)(json_t *))
{
	char path[800];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	json_t *root = json_load_file(path, 0, NULL);
	assert_non_null(root);
	fn(root);
	assert_int_equal(json_dump_file(root, path, JSON_COMPACT), 0);
	json_decref(root);
}

/* Rewrites model.safetensors with its header edited by fn (data section kept). */
static void edit_header(const char *dir, void (*fn)(json_t *))
{
	char path[800];
	size_t len;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	uint8_t *p = (uint8_t *)slurp(path, &len);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | p[i];
	json_t *root = json_loadb((const char *)p + 8, (size_t)n, 0, NULL);
	assert_non_null(root);
	fn(root);
	char *text = json_dumps(root, JSON_COMPACT);
	size_t tl = strlen(text), nl = (tl + 7) / 8 * 8;
	uint8_t *q = malloc(8 + nl + len - 8 - n);
	for (int i = 0; i < 8; i++)
		q[i] = (uint8_t)((uint64_t)nl >> (8 * i));
	memcpy(q + 8, text, tl);
	memset(q + 8 + tl, ' ', nl - tl);
	memcpy(q + 8 + nl, p + 8 + n, len - 8 - n);
	spit(path, q, 8 + nl + len - 8 - n);
	free(q);
	free(text);
	free(p);
	json_decref(root);
}

static json_t *entry(json_t *root, const char *name)
{
	json_t *e = json_object_get(root, name);
	assert_non_null(e);
	return e;
}

static void drop_hidden_size(json_t *c)
{
	json_object_del(c, "hidden_size");
}

static void mistral(json_t *c)
{
	json_object_set_new(c, "model_type", json_string("mistral"));
}

static void rope_scaling(json_t *c)
{
	json_object_set_new(c, "rope_scaling", json_pack("{s:s,s:f}", "type", "linear", "factor", 2.0));
}

static void attention_bias(json_t *c)
{
	json_object_set_new(c, "attention_bias", json_true());
}

static void mlp_bias(json_t *c)
{
	json_object_set_new(c, "mlp_bias", json_true());
}

static void gelu(json_t *c)
{
	json_object_set_new(c, "hidden_act", json_string("gelu"));
}

static void swish(json_t *c)
{
	json_object_set_new(c, "hidden_act", json_string("swish"));
}

static void partial_rotary(json_t *c)
{
	json_object_set_new(c, "partial_rotary_factor", json_real(0.5));
}

/* Appends an f32 vector of n zeros named `name` to dir/model.safetensors: a tensor
 * the generator never writes (an o_proj bias, a q_norm), its data after the rest. */
static void append_tensor(const char *dir, const char *name, size_t n)
{
	char path[800];
	size_t len;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	uint8_t *p = (uint8_t *)slurp(path, &len);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | p[i];
	json_t *root = json_loadb((const char *)p + 8, (size_t)hl, 0, NULL);
	assert_non_null(root);
	size_t data = len - 8 - hl;
	json_object_set_new(root, name, json_pack("{s:s,s:[I],s:[I,I]}", "dtype", "F32", "shape",
						  (json_int_t)n, "data_offsets", (json_int_t)data,
						  (json_int_t)(data + 4 * n)));
	char *text = json_dumps(root, JSON_COMPACT);
	size_t tl = strlen(text), nl = (tl + 7) / 8 * 8;
	uint8_t *q = calloc(1, 8 + nl + data + 4 * n);
	assert_non_null(q);
	for (int i = 0; i < 8; i++)
		q[i] = (uint8_t)((uint64_t)nl >> (8 * i));
	memcpy(q + 8, text, tl);
	memset(q + 8 + tl, ' ', nl - tl);
	memcpy(q + 8 + nl, p + 8 + hl, data);
	spit(path, q, 8 + nl + data + 4 * n);
	free(q);
	free(text);
	free(p);
	json_decref(root);
}

static void wider(json_t *c)
{
	json_object_set_new(c, "intermediate_size", json_integer(256));
}

static void metaspace(json_t *t)
{
	json_object_set_new(t, "pre_tokenizer", json_pack("{s:s,s:s}", "type", "Metaspace",
							  "replacement", "\xe2\x96\x81"));
}

static void merges_as_pairs(json_t *t)
{
	json_t *merges = json_object_get(json_object_get(t, "model"), "merges");
	for (size_t i = 0; i < json_array_size(merges); i++) {
		const char *m = json_string_value(json_array_get(merges, i));
		const char *sp = strchr(m, ' ');
		json_t *pair = json_pack("[s%,s]", m, (size_t)(sp - m), sp + 1);
		json_array_set_new(merges, i, pair);
	}
}

/* Llama 3's shape: ignore_merges, and the BOS put first by a TemplateProcessing inside
 * a Sequence post_processor (here <|im_start|>, 518). "abc" becomes a piece (in place
 * of "Ġs", 274, whose merge goes) that the merges never make: they make [ab, c]. */
static void llama3_tokenizer(json_t *t)
{
	json_t *model = json_object_get(t, "model"), *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	json_object_set_new(model, "ignore_merges", json_true());
	json_object_del(vocab, "\xc4\xa0s");
	json_object_set_new(vocab, "abc", json_integer(274));
	for (size_t i = 0; i < json_array_size(merges); i++)
		if (strcmp(json_string_value(json_array_get(merges, i)), "\xc4\xa0 s") == 0)
			json_array_remove(merges, i);
	json_t *pp = json_loads(
		"{\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, {\"type\": "
		"\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<|im_start|>\", "
		"\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": "
		"{\"id\": \"<|im_end|>\", \"type_id\": 0}}], \"special_tokens\": {\"<|im_start|>\": "
		"{\"id\": \"<|im_start|>\", \"ids\": [518], \"tokens\": [\"<|im_start|>\"]}}}]}",
		0, NULL);
	assert_non_null(pp);
	json_object_set_new(t, "post_processor", pp);
}

static void merges_not_ignored(json_t *t)
{
	json_object_set_new(json_object_get(t, "model"), "ignore_merges", json_false());
}

static void no_add_bos(json_t *c)
{
	json_object_del(c, "add_bos_token");
}

static void add_bos_false(json_t *c)
{
	json_object_set_new(c, "add_bos_token", json_false());
}

static void byte_fallback(json_t *t)
{
	json_object_set_new(json_object_get(t, "model"), "byte_fallback", json_true());
}

/* A template whose special token has no id in its special_tokens. */
static void template_without_ids(json_t *t)
{
	json_t *tp = json_array_get(json_object_get(json_object_get(t, "post_processor"),
						    "processors"), 1);
	json_object_set_new(tp, "special_tokens", json_object());
}

static void dtype_f64(json_t *h)
{
	json_object_set_new(entry(h, "model.norm.weight"), "dtype", json_string("F64"));
}

static void offsets_past_end(json_t *h)
{
	json_t *o = json_object_get(entry(h, "lm_head.weight"), "data_offsets");
	json_int_t b = json_integer_value(json_array_get(o, 0));
	json_int_t e = json_integer_value(json_array_get(o, 1));
	json_array_set_new(o, 0, json_integer(b + 1000000));
	json_array_set_new(o, 1, json_integer(e + 1000000));
}

static void offsets_overlap(json_t *h)
{
	json_t *a = json_object_get(entry(h, "model.layers.0.mlp.up_proj.weight"), "data_offsets");
	json_t *b = json_object_get(entry(h, "model.layers.0.mlp.gate_proj.weight"), "data_offsets");
	json_object_set(entry(h, "model.layers.0.mlp.up_proj.weight"), "data_offsets", b);
	(void)a;
}

static void shape_not_span(json_t *h)
{
	json_object_set_new(entry(h, "model.layers.1.self_attn.v_proj.weight"), "shape",
			    json_pack("[I,I]", (json_int_t)16, (json_int_t)64));
}

static void shape_rank5(json_t *h)
{
	json_object_set_new(entry(h, "model.layers.1.self_attn.o_proj.weight"), "shape",
			    json_pack("[I,I,I,I,I]", (json_int_t)1, (json_int_t)1, (json_int_t)1,
				      (json_int_t)64, (json_int_t)64));
}

static void test_hf__config_errors_name_file_and_key(void **state)
{
	(void)state;
	char dir[700], path[800];
	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", drop_hidden_size);
	expect_open_error(dir, SPECD_INVAL, "config.json", "'hidden_size'", "missing", NULL);

	copy_folder("llama", dir, sizeof(dir));
	assert_true(ts_write_file(dir, "config.json", "{\"model_type\": \"llama\",", path, sizeof(path)));
	expect_open_error(dir, SPECD_INVAL, "config.json", "not JSON", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", mistral);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "mistral", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", rope_scaling);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "rope_scaling", NULL);

	copy_folder("llama", dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/config.json", dir);
	unlink(path);
	expect_open_error(dir, SPECD_IO, "config.json", "cannot open", NULL);
}

/* config.json keys and tensors that change the output beyond what the loader computes
 * are refused at open, naming the file and the key or tensor: before, they were
 * accepted and ignored. What changes nothing opens. */
static void test_hf__refuses_what_the_forward_would_ignore(void **state)
{
	(void)state;
	char dir[700];

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", attention_bias);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "key 'attention_bias' is true",
			  "(o_proj) is not supported", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", mlp_bias);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "key 'mlp_bias' is true",
			  "MLP biases are not supported", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", gelu);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "key 'hidden_act' is 'gelu'",
			  "other than silu are not supported", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", partial_rotary);
	expect_open_error(dir, SPECD_UNSUPPORTED, "config.json", "'partial_rotary_factor' is 0.5",
			  "partial rotary embedding is not supported", NULL);

	/* A bias where the loader reads none, and a tensor of no known part. */
	copy_folder("llama", dir, sizeof(dir));
	append_tensor(dir, "model.layers.1.self_attn.o_proj.bias", 64);
	expect_open_error(dir, SPECD_UNSUPPORTED, "model.safetensors",
			  "'model.layers.1.self_attn.o_proj.bias'", "bias there is not supported", NULL);
	copy_folder("llama", dir, sizeof(dir));
	append_tensor(dir, "model.layers.0.mlp.down_proj.bias", 64);
	expect_open_error(dir, SPECD_UNSUPPORTED, "'model.layers.0.mlp.down_proj.bias'",
			  "bias there is not supported", NULL);
	copy_folder("llama", dir, sizeof(dir));
	append_tensor(dir, "model.layers.0.self_attn.q_norm.weight", 16);
	expect_open_error(dir, SPECD_UNSUPPORTED, "model.safetensors",
			  "'model.layers.0.self_attn.q_norm.weight' is not supported", NULL);

	/* Changing nothing: Qwen2 has its q/k/v biases whatever attention_bias says (and
	 * transformers reads mlp_bias for llama only), swish is silu, and rotary_emb.inv_freq
	 * is a buffer transformers recomputes from rope_theta. */
	copy_folder("qwen", dir, sizeof(dir));
	edit_json(dir, "config.json", attention_bias);
	edit_json(dir, "config.json", mlp_bias);
	edit_json(dir, "config.json", swish);
	compare("case", "qwen", 0.0f);
	copy_folder("llama", dir, sizeof(dir));
	append_tensor(dir, "model.layers.0.self_attn.rotary_emb.inv_freq", 8);
	compare("case", "llama", 0.0f);
}

static void test_hf__tokenizer_errors_and_merge_forms(void **state)
{
	(void)state;
	char dir[700], path[800];
	copy_folder("llama", dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	unlink(path);
	expect_open_error(dir, SPECD_IO, "tokenizer.json", "cannot open", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "tokenizer.json", metaspace);
	expect_open_error(dir, SPECD_UNSUPPORTED, "tokenizer.json", "Metaspace", NULL);
	/* as SentencePiece-style files are: refused for that, not for byte_fallback */
	edit_json(dir, "tokenizer.json", byte_fallback);
	expect_open_error(dir, SPECD_UNSUPPORTED, "tokenizer.json", "Metaspace", NULL);

	/* The [a, b] form gives exactly the "a b" form's tokenizer. */
	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "tokenizer.json", merges_as_pairs);
	compare("case", "llama", 0.0f);
}

/* dir's tokenizer as the view hands it over; "abc" encoded into ids (count returned). */
static size_t encode_abc(const char *dir, bool *add_bos, int32_t *bos, int32_t *ids)
{
	struct gguf_file *f = NULL;
	struct tok *t = NULL;
	struct specd_error err;
	size_t n = 0;
	assert_int_equal(model_file_open(dir, &f, &err), SPECD_OK);
	assert_int_equal(tok_load_gguf(f, &t, &err), SPECD_OK);
	gguf_close(f);
	*add_bos = tok_add_bos(t);
	*bos = tok_bos(t);
	assert_int_equal(tok_encode(t, "abc", 3, false, ids, 8, &n), SPECD_OK);
	tok_destroy(t);
	return n;
}

/* Llama 3's tokenizer.json: the template's BOS where tokenizer_config.json is silent
 * (its add_bos_token wins where it speaks), and ignore_merges; the EOS the template
 * appends is not added to a prompt. BPE options that change ids are refused. */
static void test_hf__llama3_template_bos_and_ignore_merges(void **state)
{
	(void)state;
	char dir[700];
	int32_t ids[8], bos;
	bool add_bos;
	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "tokenizer.json", llama3_tokenizer);
	edit_json(dir, "tokenizer_config.json", no_add_bos);
	assert_int_equal(encode_abc(dir, &add_bos, &bos, ids), 1);
	assert_int_equal(ids[0], 274);
	assert_true(add_bos);
	assert_int_equal(bos, 518);

	edit_json(dir, "tokenizer_config.json", add_bos_false);
	edit_json(dir, "tokenizer.json", merges_not_ignored);
	assert_int_equal(encode_abc(dir, &add_bos, &bos, ids), 2);
	assert_int_equal(ids[0], 283); /* "ab" */
	assert_int_equal(ids[1], 99);  /* "c" */
	assert_false(add_bos);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "tokenizer.json", llama3_tokenizer);
	edit_json(dir, "tokenizer.json", template_without_ids);
	edit_json(dir, "tokenizer_config.json", no_add_bos);
	expect_open_error(dir, SPECD_UNSUPPORTED, "tokenizer.json", "'<|im_start|>'", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "tokenizer.json", byte_fallback);
	expect_open_error(dir, SPECD_UNSUPPORTED, "tokenizer.json", "'byte_fallback'", NULL);
}

static void test_hf__safetensors_errors_name_file_and_tensor(void **state)
{
	(void)state;
	char dir[700], path[800];
	size_t len;

	copy_folder("llama", dir, sizeof(dir));
	edit_header(dir, dtype_f64);
	expect_open_error(dir, SPECD_UNSUPPORTED, "model.safetensors", "'model.norm.weight'", "F64", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_header(dir, offsets_past_end);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "'lm_head.weight'", "past", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_header(dir, offsets_overlap);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "overlap", "mlp.", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_header(dir, shape_not_span);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "'model.layers.1.self_attn.v_proj.weight'",
			  "shape holds", NULL);

	copy_folder("llama", dir, sizeof(dir));
	edit_header(dir, shape_rank5);
	expect_open_error(dir, SPECD_UNSUPPORTED, "'model.layers.1.self_attn.o_proj.weight'", "rank 5", NULL);

	/* Header length past the end of the file; a header that is not JSON. */
	copy_folder("llama", dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	uint8_t *p = (uint8_t *)slurp(path, &len);
	p[6] = 1;
	spit(path, p, len);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "header length", NULL);
	p[6] = 0;
	p[8] = '[';
	p[9] = '}';
	spit(path, p, len);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "not JSON", NULL);
	spit(path, p, 5);
	expect_open_error(dir, SPECD_INVAL, "model.safetensors", "8-byte", NULL);
	free(p);
}

static void test_hf__missing_shard_and_index_errors(void **state)
{
	(void)state;
	char dir[700], path[800];
	copy_folder("qwen3", dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/model-00002-of-00003.safetensors", dir);
	unlink(path);
	expect_open_error(dir, SPECD_IO, "model-00002-of-00003.safetensors", "cannot open",
			  "model.safetensors.index.json", NULL);

	/* An index naming a tensor its file lacks. */
	copy_folder("qwen3", dir, sizeof(dir));
	assert_true(ts_write_file(dir, "model.safetensors.index.json",
				  "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00003.safetensors\"}}",
				  path, sizeof(path)));
	expect_open_error(dir, SPECD_INVAL, "model.safetensors.index.json", "'model.norm.weight'",
			  "model-00001-of-00003.safetensors", NULL);

	copy_folder("qwen3", dir, sizeof(dir));
	assert_true(ts_write_file(dir, "model.safetensors.index.json",
				  "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}",
				  path, sizeof(path)));
	expect_open_error(dir, SPECD_INVAL, "weight_map['model.norm.weight']", NULL);

	/* No weights at all. */
	copy_folder("qwen3", dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	unlink(path);
	expect_open_error(dir, SPECD_IO, "model.safetensors", NULL);
}

static void test_hf__mismatched_shapes_fail_at_load(void **state)
{
	(void)state;
	char dir[700];
	struct model *m = NULL;
	struct specd_error err;
	copy_folder("llama", dir, sizeof(dir));
	edit_json(dir, "config.json", wider);
	assert_int_equal(model_load(dir, NULL, &m, &err), SPECD_INVAL);
	assert_null(m);
	assert_non_null(strstr(err.msg, "ffn_gate.weight"));
	assert_non_null(strstr(err.msg, "shape"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hf__llama_f32_matches_gguf_twin),
		cmocka_unit_test(test_hf__llama_f16_tied_matches_gguf_twin),
		cmocka_unit_test(test_hf__qwen2_bf16_bitwise_equals_gguf_twin),
		cmocka_unit_test(test_hf__sharded_bitwise_equals_single_file),
		cmocka_unit_test(test_hf__view_has_gguf_names_and_halves_rope),
		cmocka_unit_test(test_hf__config_errors_name_file_and_key),
		cmocka_unit_test(test_hf__refuses_what_the_forward_would_ignore),
		cmocka_unit_test(test_hf__tokenizer_errors_and_merge_forms),
		cmocka_unit_test(test_hf__llama3_template_bos_and_ignore_merges),
		cmocka_unit_test(test_hf__safetensors_errors_name_file_and_tensor),
		cmocka_unit_test(test_hf__missing_shard_and_index_errors),
		cmocka_unit_test(test_hf__mismatched_shapes_fail_at_load),
	};
	return cmocka_run_group_tests(tests, setup_models, teardown_models);
}
