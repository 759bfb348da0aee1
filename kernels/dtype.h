/* Element types of weight and activation tensors, numbered as GGUF/ggml numbers them
 * so a file's type id is used as is. Block layouts (per the GGUF format docs):
 *   Q8_0: 32 weights = f16 scale d + 32 x int8 q;            w = d * q
 *   Q4_0: 32 weights = f16 d + 16 bytes of nibbles;          w = d * (nib - 8)
 *   Q4_1: 32 weights = f16 d + f16 m + 16 bytes of nibbles;  w = d * nib + m
 * In Q4_0/Q4_1, byte j holds weight j in its low nibble and weight j + 16 in its high.
 *   Q5_0: 32 weights = f16 d + u32 qh (bit j: 5th bit of weight j) + 16 bytes of nibbles
 *         as Q4_0;                                           w = d * (q - 16)
 *   Q5_1: 32 weights = f16 d + f16 m + u32 qh + 16 nibbles;  w = d * q + m
 * K-quants: super-blocks of 256 weights (KERN_QK_K), split into sub-blocks with scales
 * quantised against one or two f16 super-scales:
 *   Q4_K: f16 d, f16 dmin, 12 bytes packing 8 (6-bit scale, 6-bit min) pairs, 128 bytes of
 *         nibbles. Sub-block s (32 weights) has w = d * sc_s * q - dmin * m_s. Each 64
 *         weights share 32 bytes: sub-block 2k in the low nibbles, 2k+1 in the high.
 *   Q5_K: as Q4_K plus 32 bytes qh before the nibbles: bit 2k of qh[l] is the 5th bit
 *         of weight l of sub-block 2k, bit 2k+1 that of sub-block 2k+1.
 *   Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales (one per
 *         16 weights), f16 d last; w = d * sc * (q - 32). Each half of 128 weights uses
 *         64 ql and 32 qh bytes: weight l + 32 i (i = 0..3, l = 0..31) takes ql[l + 32
 *         (i & 1)]'s low (i < 2) or high nibble and bits 2i..2i+1 of qh[l]. */
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
	KERN_Q5_0 = 6,
	KERN_Q5_1 = 7,
	KERN_Q8_0 = 8,
	KERN_Q4_K = 12,
	KERN_Q5_K = 13,
	KERN_Q6_K = 14,
	KERN_BF16 = 30,
};

#define KERN_QK 32   /* weights per block of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 */
#define KERN_QK_K 256 /* weights per super-block of the K-quants */

/* True for the types this build can compute with. */
bool kern_dtype_known(uint32_t type_id);
const char *kern_dtype_name(enum kern_dtype t); /* "f32", "q8_0", ...; "?" if unknown */
/* Parses a name kern_dtype_name gives ("f32", "q4_1", "q6_k", ...; case-insensitive). */
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
 * Quantisation follows the reference rounding (scale from the max-magnitude weight);
 * for the K-quants it is a plain one (per-sub-block min/max, no search for the
 * error-minimising scale), good for generated test models, not for real ones. */
void kern_dequant_row(enum kern_dtype t, const void *src, float *dst, size_t n);

/* True for the quantised types whose weights add an offset per group (Q4_1, Q5_1:
 * m; Q4_K, Q5_K: -dmin * m): kern_group_ints' off. */
static inline bool kern_dtype_has_offset(enum kern_dtype t)
{
	return t == KERN_Q4_1 || t == KERN_Q5_1 || t == KERN_Q4_K || t == KERN_Q5_K;
}

/* Group g (weights 32g..32g+31) of one block of a quantised type t (g < 8 for the
 * K-quants, 0 otherwise) as the integers its dequantisation multiplies: weight i is
 * mul[i / 16] * q[i] + *off, which for every type is the float kern_dequant_row gives
 * (Q6_K: mul = d * sc of each 16; Q4_K/Q5_K: mul = d * sc, off = -(dmin * m); Q4_1/Q5_1:
 * mul = d, off = m; the rest: off = 0, offsets such as Q4_0's -8 folded into q).
 * kern_dequant_row is this, group by group. Returns false for a float type (nothing
 * written). */
bool kern_group_ints(enum kern_dtype t, const void *block, unsigned g, int8_t q[KERN_QK],
		     float mul[2], float *off);
/* The integer scales of one K-quant super-block (Q4_K, Q5_K, Q6_K): sc[i] of sub-block
 * i (Q4_K/Q5_K: 8 of 32 weights, sc[8..15] zero; Q6_K: 16 of 16), *d the f16 super-scale
 * and mins[i] = -(dmin * m_i) (Q6_K: zeros), so that with kern_group_ints' q a weight
 * is d * sc * q + mins, as kern_dequant_row computes it. False for other types. */
bool kern_kblock_scales(enum kern_dtype t, const void *block, int16_t sc[16], float *d,
			float mins[8]);
void kern_quant_row(enum kern_dtype t, const float *src, void *dst, size_t n);

#endif
