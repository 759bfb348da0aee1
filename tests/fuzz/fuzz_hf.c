/* libFuzzer target: a Hugging Face folder (model/hf_open.c, hf_tokenizer.c,
 * safetensors.c), through everything specd does with one before serving
 * (fuzz_model.h). The input is the folder's files joined by NUL bytes, in the order
 * config.json, tokenizer.json, tokenizer_config.json, model.safetensors (JSON holds no
 * NUL; the shard, last, may); a file whose part is missing is absent. Each input is
 * written to a private temporary folder, which model_file_open reads. Seeds: folders
 * from specd-gen-model --hf (scripts/test.sh joins them). Build: cmake
 * -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON; run: fuzz_hf CORPUS. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_model.h"
#include "model/gguf.h"
#include "model/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const g_names[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
				      "model.safetensors"};
enum { N_FILES = sizeof(g_names) / sizeof(g_names[0]) };

static char g_dir[256];

static void put(const char *name, const uint8_t *p, size_t n, int present)
{
	char path[320];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	if (!present) {
		unlink(path);
		return;
	}
	FILE *fp = fopen(path, "wb");
	if (!fp || (n && fwrite(p, 1, n, fp) != n) || fclose(fp) != 0)
		abort(); /* the fuzzer's own disk: not a finding about specd */
}

static void remove_dir(void)
{
	for (int i = 0; i < N_FILES; i++)
		put(g_names[i], NULL, 0, 0);
	rmdir(g_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!g_dir[0]) {
		const char *tmp = getenv("TMPDIR");
		snprintf(g_dir, sizeof(g_dir), "%s/specd-fuzz-hf-XXXXXX", tmp ? tmp : "/tmp");
		if (!mkdtemp(g_dir))
			abort();
		atexit(remove_dir);
	}
	size_t at = 0;
	for (int i = 0; i < N_FILES; i++) {
		const uint8_t *nul = i + 1 < N_FILES && at < size ? memchr(data + at, 0, size - at)
								   : NULL;
		size_t end = nul ? (size_t)(nul - data) : size;
		put(g_names[i], data + at, end - at, at < size || i == 0);
		at = nul ? end + 1 : size;
	}
	struct gguf_file *f = NULL;
	struct specd_error err;
	if (model_file_open(g_dir, &f, &err) != SPECD_OK)
		return 0;
	fuzz_use_model_file(f);
	gguf_close(f);
	return 0;
}
