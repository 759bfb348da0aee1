/* Tensor element types: sizes, names, scalar reference conversions; see dtype.h.
 * The fast kernels read these layouts directly; this file is the reference they are
 * tested against and what the model writer quantises with. */
#include "dtype.h"

#include <math.h>
#include <string.h>
#include <strings.h>

struct dtype_info {
	const char *name;
	size_t block, block_bytes;
};

static const struct dtype_info *info(enum kern_dtype t)
{
	static const struct dtype_info f32 = {"f32", 1, 4}, f16 = {"f16", 1, 2},
				       bf16 = {"bf16", 1, 2}, q8_0 = {"q8_0", KERN_QK, 34},
				       q4_0 = {"q4_0", KERN_QK, 18}, q4_1 = {"q4_1", KERN_QK, 20};
	switch (t) {
	case KERN_F32: return &f32;
	case KERN_F16: return &f16;
	case KERN_BF16: return &bf16;
	case KERN_Q8_0: return &q8_0;
	case KERN_Q4_0: return &q4_0;
	case KERN_Q4_1: return &q4_1;
	}
	return NULL;
}

bool kern_dtype_known(uint32_t type_id)
{
	return info((enum kern_dtype)type_id) != NULL;
}

const char *kern_dtype_name(enum kern_dtype t)
{
	const struct dtype_info *i = info(t);
	return i ? i->name : "?";
}

bool kern_dtype_parse(const char *text, enum kern_dtype *out)
{
	static const enum kern_dtype all[] = {KERN_F32, KERN_F16, KERN_BF16,
					      KERN_Q8_0, KERN_Q4_0, KERN_Q4_1};
	for (size_t i = 0; text && i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcasecmp(text, info(all[i])->name) == 0) {
			*out = all[i];
			return true;
		}
	}
	return false;
}

size_t kern_dtype_block(enum kern_dtype t)
{
	const struct dtype_info *i = info(t);
	return i ? i->block : 0;
}

size_t kern_dtype_block_bytes(enum kern_dtype t)
{
	const struct dtype_info *i = info(t);
	return i ? i->block_bytes : 0;
}

size_t kern_dtype_row_bytes(enum kern_dtype t, size_t n)
{
	const struct dtype_info *i = info(t);
	if (!i || n % i->block)
		return 0;
	return n / i->block * i->block_bytes;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float kern_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	if (exp == 0x1f) /* inf / nan */
		return bits_f32(sign | 0x7f800000u | (man << 13));
	if (exp == 0) {
		if (man == 0)
			return bits_f32(sign);
		/* subnormal: value = man * 2^-24 */
		float v = (float)man * 0x1p-24f;
		return sign ? -v : v;
	}
	return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t kern_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t abs = u & 0x7fffffffu;
	if (abs >= 0x7f800000u) /* inf or nan */
		return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
	if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
		return sign | 0x7c00;
	if (abs < 0x38800000u) { /* below the smallest normal f16: subnormal or zero */
		float a = bits_f32(abs);
		/* a * 2^24 rounded to nearest even gives the subnormal mantissa */
		float m = nearbyintf(a * 0x1p24f);
		return sign | (uint16_t)m;
	}
	uint32_t exp = (abs >> 23) - 112;
	uint32_t man = abs & 0x7fffffu;
	uint32_t h = (exp << 10) | (man >> 13);
	uint32_t rest = man & 0x1fffu;
	if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
		h++; /* may carry into the exponent, which is still correct */
	return sign | (uint16_t)h;
}

float kern_bf16_to_f32(uint16_t b)
{
	return bits_f32((uint32_t)b << 16);
}

uint16_t kern_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a quiet nan */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void kern_dequant_row(enum kern_dtype t, const void *src, float *dst, size_t n)
{
	const uint8_t *s = src;
	switch (t) {
	case KERN_F32:
		memcpy(dst, src, n * sizeof(float));
		return;
	case KERN_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = kern_f16_to_f32(rd16(s + 2 * i));
		return;
	case KERN_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = kern_bf16_to_f32(rd16(s + 2 * i));
		return;
	case KERN_Q8_0:
		for (size_t b = 0; b < n / KERN_QK; b++, s += 34) {
			float d = kern_f16_to_f32(rd16(s));
			for (int j = 0; j < KERN_QK; j++)
				dst[b * KERN_QK + j] = d * (float)(int8_t)s[2 + j];
		}
		return;
	case KERN_Q4_0:
		for (size_t b = 0; b < n / KERN_QK; b++, s += 18) {
			float d = kern_f16_to_f32(rd16(s));
			for (int j = 0; j < KERN_QK / 2; j++) {
				dst[b * KERN_QK + j] = d * (float)((s[2 + j] & 0x0f) - 8);
				dst[b * KERN_QK + j + 16] = d * (float)((s[2 + j] >> 4) - 8);
			}
		}
		return;
	case KERN_Q4_1:
		for (size_t b = 0; b < n / KERN_QK; b++, s += 20) {
			float d = kern_f16_to_f32(rd16(s));
			float m = kern_f16_to_f32(rd16(s + 2));
			for (int j = 0; j < KERN_QK / 2; j++) {
				dst[b * KERN_QK + j] = d * (float)(s[4 + j] & 0x0f) + m;
				dst[b * KERN_QK + j + 16] = d * (float)(s[4 + j] >> 4) + m;
			}
		}
		return;
	}
}

void kern_quant_row(enum kern_dtype t, const float *src, void *dst, size_t n)
{
	uint8_t *o = dst;
	switch (t) {
	case KERN_F32:
		memcpy(dst, src, n * sizeof(float));
		return;
	case KERN_F16:
		for (size_t i = 0; i < n; i++)
			wr16(o + 2 * i, kern_f32_to_f16(src[i]));
		return;
	case KERN_BF16:
		for (size_t i = 0; i < n; i++)
			wr16(o + 2 * i, kern_f32_to_bf16(src[i]));
		return;
	case KERN_Q8_0:
		for (size_t b = 0; b < n / KERN_QK; b++, o += 34) {
			const float *x = src + b * KERN_QK;
			float amax = 0;
			for (int j = 0; j < KERN_QK; j++)
				amax = fmaxf(amax, fabsf(x[j]));
			float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
			wr16(o, kern_f32_to_f16(d));
			for (int j = 0; j < KERN_QK; j++)
				o[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
		}
		return;
	case KERN_Q4_0:
		for (size_t b = 0; b < n / KERN_QK; b++, o += 18) {
			const float *x = src + b * KERN_QK;
			float amax = 0, max = 0;
			for (int j = 0; j < KERN_QK; j++) {
				if (fabsf(x[j]) > amax) {
					amax = fabsf(x[j]);
					max = x[j];
				}
			}
			float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
			wr16(o, kern_f32_to_f16(d));
			for (int j = 0; j < KERN_QK / 2; j++) {
				int lo = (int)fminf(15.0f, x[j] * id + 8.5f);
				int hi = (int)fminf(15.0f, x[j + 16] * id + 8.5f);
				o[2 + j] = (uint8_t)(lo | (hi << 4));
			}
		}
		return;
	case KERN_Q4_1:
		for (size_t b = 0; b < n / KERN_QK; b++, o += 20) {
			const float *x = src + b * KERN_QK;
			float min = x[0], max = x[0];
			for (int j = 1; j < KERN_QK; j++) {
				min = fminf(min, x[j]);
				max = fmaxf(max, x[j]);
			}
			float d = (max - min) / 15.0f, id = d ? 1.0f / d : 0.0f;
			wr16(o, kern_f32_to_f16(d));
			wr16(o + 2, kern_f32_to_f16(min));
			for (int j = 0; j < KERN_QK / 2; j++) {
				int lo = (int)fminf(15.0f, (x[j] - min) * id + 0.5f);
				int hi = (int)fminf(15.0f, (x[j + 16] - min) * id + 0.5f);
				o[4 + j] = (uint8_t)(lo | (hi << 4));
			}
		}
		return;
	}
}
