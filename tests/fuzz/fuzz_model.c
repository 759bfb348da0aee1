/* The model-file fuzz targets' common use of an accepted file (fuzz_model.h). */
#include "fuzz_model.h"

#include <stdint.h>
#include <string.h>

#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/tokenizer.h"

static volatile uint8_t g_sink;

void fuzz_touch(const void *p, size_t n)
{
	if (n)
		g_sink ^= ((const uint8_t *)p)[0] ^ ((const uint8_t *)p)[n - 1];
}

static void use_keys(const struct gguf_file *f)
{
	for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
		struct gguf_str k, s;
		enum gguf_value_type type, elem, got;
		char name[256];
		uint64_t count = 0;
		const void *arr = NULL;
		if (!gguf_key_at(f, i, &k, &type))
			__builtin_trap();
		if (k.len >= sizeof(name) || memchr(k.ptr, '\0', k.len))
			continue;
		memcpy(name, k.ptr, k.len);
		name[k.len] = '\0';
		if (!gguf_get_type(f, name, &got) || got != type)
			__builtin_trap();
		if (type == GGUF_TYPE_STRING && gguf_get_str(f, name, &s))
			fuzz_touch(s.ptr, s.len);
		if (type != GGUF_TYPE_ARRAY || !gguf_get_arr(f, name, &elem, &count, &arr))
			continue;
		if (elem == GGUF_TYPE_STRING) {
			for (uint64_t j = 0; j < count && j < 4096; j++)
				if (gguf_get_arr_str(f, name, j, &s))
					fuzz_touch(s.ptr, s.len);
		} else if (count && arr) {
			fuzz_touch(arr, 1);
		}
	}
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		if (!t || gguf_find_tensor(f, t->name) != t)
			__builtin_trap();
		fuzz_touch(t->data, t->nbytes);
	}
}

static void use_tokenizer(const struct gguf_file *f)
{
	static const char text[] =
		"Hello, world!\n  <|im_start|> caf\xc3\xa9 \xf0\x9f\x99\x82 12345 \xff\xfe";
	struct tok *t = NULL;
	struct specd_error err;
	int32_t ids[256];
	size_t n = 0;
	if (tok_load_gguf(f, &t, &err) != SPECD_OK)
		return;
	if (tok_encode(t, text, sizeof(text) - 1, true, ids, 256, &n) == SPECD_OK) {
		char out[4096];
		size_t len;
		tok_decode(t, ids, n, out, sizeof(out), &len);
	}
	if (tok_encode_special(t, text, sizeof(text) - 1, false, ids, 256, &n) != SPECD_OK)
		n = 0;
	int32_t prev = -1;
	for (size_t i = 0; i < n; i++) {
		const char *piece;
		size_t len;
		if (tok_token_text(t, prev, ids[i], &piece, &len) == SPECD_OK)
			fuzz_touch(piece, len);
		prev = ids[i];
	}
	tok_destroy(t);
}

static void use_model(const struct gguf_file *f)
{
	static struct kern_ctx *cpu; /* one for the process: a backend per input is slow */
	static float logits[4096];
	if (!cpu && kern_cpu_create(NULL, &cpu) != SPECD_OK)
		return;
	struct model_config cfg = {.n_slots = 1, .n_ctx = 8, .max_batch = 2, .kern = cpu};
	struct model *m = NULL;
	struct specd_error err;
	if (model_load_gguf(f, &cfg, &m, &err) != SPECD_OK)
		return;
	const struct model_hparams *hp = model_hparams(m);
	uint32_t toks[2] = {1 % hp->n_vocab, 7 % hp->n_vocab}, slots[2] = {0, 0};
	uint32_t pos[2] = {0, 1}, out_idx[1] = {1};
	struct model_batch b = {.n_tokens = 2, .tokens = toks, .slots = slots, .pos = pos,
				.n_out = hp->n_vocab <= 4096 ? 1 : 0, .out_idx = out_idx,
				.logits = logits};
	model_forward(m, &b, &err);
	model_destroy(m);
}

void fuzz_use_model_file(const struct gguf_file *f)
{
	use_keys(f);
	use_tokenizer(f);
	use_model(f);
}
