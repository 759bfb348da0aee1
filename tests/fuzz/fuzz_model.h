/* What the model-file fuzz targets (fuzz_gguf.c, fuzz_hf.c) do with a file the reader
 * accepted: everything specd does with one before serving. */
#ifndef SPECD_TEST_FUZZ_MODEL_H
#define SPECD_TEST_FUZZ_MODEL_H

#include <stddef.h>

struct gguf_file;

/* Reads the first and last byte of n at p (so that ASan sees a span out of bounds). */
void fuzz_touch(const void *p, size_t n);

/* Every key through the getters (traps when one the file lists is not readable as its
 * type), every tensor's bytes touched, the vocabulary loaded with an encode, a decode
 * and each token's text, and the model loaded on the CPU backend (8 cache rows, batch 2)
 * with a forward of two tokens. */
void fuzz_use_model_file(const struct gguf_file *f);

#endif
