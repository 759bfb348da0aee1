/* Element types of weight and activation tensors, numbered as GGUF/ggml numbers them
 * so a file's type id is used as is. Block layouts (per the GGUF format docs):
 *   Q8_0: 32 weights = f16 scale d + 32 x int8 q;            w = d * q
 *   Q4_0: 32 weights = f16 d + 16 bytes of nibbles;          w = d * (nib - 8)
 *   Q4_1: 32 weights = f16 d + f16 m + 16 bytes of nibbles;  w = d * nib + m
 * In Q4_0/Q4_1, byte j holds weight j in its low nibble and weight j + 16 in its high. */
#ifndef SPECD_KERNELS_DTYPE_H
#define SPECD_KERNELS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kern_dtype {
	KERN_F32 = 0,
	KERN_F16 = 1,
	KERN_Q4_0 = 2,
	KERN_Q4_1 = 3,
	KERN_Q8_0 = 8,
	KERN_BF16 = 30,
};

#define KERN_QK 32 /* weights per block of Q8_0, Q4_0, Q4_1 */

/* True for the types this build can compute with. */
bool kern_dtype_known(uint32_t type_id);
const char *kern_dtype_name(enum kern_dtype t); /* "f32", "q8_0", ...; "?" if unknown */
/* Parses "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1" (case-insensitive). */
bool kern_dtype_parse(const char *text, enum kern_dtype *out);
/* Weights per block (1 for float types) and bytes per block. */
size_t kern_dtype_block(enum kern_dtype t);
size_t kern_dtype_block_bytes(enum kern_dtype t);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block size. */
size_t kern_dtype_row_bytes(enum kern_dtype t, size_t n);

/* Scalar conversions, exact per IEEE (round to nearest even on narrowing). */
float kern_f16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
float kern_bf16_to_f32(uint16_t b);
uint16_t kern_f32_to_bf16(float f);

/* Row conversions between a tensor type and f32, n a multiple of the block size.
 * Quantisation follows the reference rounding (scale from the max-magnitude weight). */
void kern_dequant_row(enum kern_dtype t, const void *src, float *dst, size_t n);
void kern_quant_row(enum kern_dtype t, const float *src, void *dst, size_t n);

#endif
