/* libFuzzer target: the bytes of a GGUF model file, through everything specd does with
 * one before serving (model/gguf_read.c, tokenizer_gguf.c, llama_load.c): the parser,
 * every key and tensor it accepts, the vocabulary, the model load on the CPU backend,
 * and a forward of two tokens. A file it accepts must keep the parser's contract:
 * every tensor's bytes inside the mapping, past the data offset, as many as its shape
 * says; every key readable through the getters. Seeds: models from specd-gen-model
 * (scripts/test.sh makes them). Build: cmake -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON;
 * run: fuzz_gguf CORPUS. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kern.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t g_sink;

static void touch(const void *p, size_t n)
{
	if (n)
		g_sink ^= ((const uint8_t *)p)[0] ^ ((const uint8_t *)p)[n - 1];
}

static void check_tensors(const struct gguf_file *f, size_t size)
{
	uint64_t off = gguf_data_offset(f);
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i);
		const uint8_t *p = t->data, *base = gguf_mapping(f, NULL);
		if (!t || gguf_find_tensor(f, t->name) != t || (size_t)(p - base) < off ||
		    t->nbytes > size - (size_t)(p - base) ||
		    t->nbytes != kern_dtype_row_bytes(t->type, t->ne[0]) *
					 (t->n_elements / (t->ne[0] ? t->ne[0] : 1)))
			__builtin_trap();
		touch(t->data, t->nbytes);
	}
}

static void check_keys(const struct gguf_file *f)
{
	for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
		struct gguf_str k;
		enum gguf_value_type type;
		char name[256];
		if (!gguf_key_at(f, i, &k, &type))
			__builtin_trap();
		if (k.len >= sizeof(name) || memchr(k.ptr, '\0', k.len))
			continue;
		memcpy(name, k.ptr, k.len);
		name[k.len] = '\0';
		enum gguf_value_type elem, got;
		uint64_t count = 0;
		const void *arr = NULL;
		struct gguf_str s;
		if (!gguf_get_type(f, name, &got) || got != type)
			__builtin_trap();
		if (type == GGUF_TYPE_STRING && gguf_get_str(f, name, &s))
			touch(s.ptr, s.len);
		if (type != GGUF_TYPE_ARRAY || !gguf_get_arr(f, name, &elem, &count, &arr))
			continue;
		if (elem == GGUF_TYPE_STRING) {
			for (uint64_t j = 0; j < count && j < 4096; j++)
				if (gguf_get_arr_str(f, name, j, &s))
					touch(s.ptr, s.len);
		} else if (count && arr) {
			touch(arr, 1);
		}
	}
}

static void use_tokenizer(const struct gguf_file *f)
{
	struct tok *t = NULL;
	struct specd_error err;
	if (tok_load_gguf(f, &t, &err) != SPECD_OK)
		return;
	static const char text[] = "Hello, world!\n  <|im_start|> caf\xc3\xa9 \xf0\x9f\x99\x82 12345";
	int32_t ids[256];
	size_t n = 0;
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
			touch(piece, len);
		prev = ids[i];
	}
	tok_destroy(t);
}

static void use_model(const struct gguf_file *f)
{
	static struct kern_ctx *cpu;
	if (!cpu && kern_cpu_create(NULL, &cpu) != SPECD_OK)
		return;
	struct model_config cfg = {.n_slots = 1, .n_ctx = 8, .max_batch = 2, .kern = cpu};
	struct model *m = NULL;
	struct specd_error err;
	if (model_load_gguf(f, &cfg, &m, &err) != SPECD_OK)
		return;
	const struct model_hparams *hp = model_hparams(m);
	static float logits[2 * 4096];
	uint32_t toks[2] = {1 % hp->n_vocab, 7 % hp->n_vocab}, slots[2] = {0, 0};
	uint32_t pos[2] = {0, 1}, out_idx[1] = {1};
	struct model_batch b = {.n_tokens = 2, .tokens = toks, .slots = slots, .pos = pos,
				.n_out = hp->n_vocab <= 4096 ? 1 : 0, .out_idx = out_idx,
				.logits = logits};
	model_forward(m, &b, &err);
	model_destroy(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gguf_file *f = NULL;
	struct specd_error err;
	if (gguf_open_memory(data, size, &f, &err) != SPECD_OK)
		return 0;
	check_tensors(f, size);
	check_keys(f);
	use_tokenizer(f);
	use_model(f);
	gguf_close(f);
	return 0;
}
