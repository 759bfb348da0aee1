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
				       q4_0 = {"q4_0", KERN_QK, 18}, q4_1 = {"q4_1", KERN_QK, 20},
				       q5_0 = {"q5_0", KERN_QK, 22}, q5_1 = {"q5_1", KERN_QK, 24},
				       q4_k = {"q4_k", KERN_QK_K, 144},
				       q5_k = {"q5_k", KERN_QK_K, 176},
				       q6_k = {"q6_k", KERN_QK_K, 210};
	switch (t) {
	case KERN_F32: return &f32;
	case KERN_F16: return &f16;
	case KERN_BF16: return &bf16;
	case KERN_Q8_0: return &q8_0;
	case KERN_Q4_0: return &q4_0;
	case KERN_Q4_1: return &q4_1;
	case KERN_Q5_0: return &q5_0;
	case KERN_Q5_1: return &q5_1;
	case KERN_Q4_K: return &q4_k;
	case KERN_Q5_K: return &q5_k;
	case KERN_Q6_K: return &q6_k;
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
					      KERN_Q8_0, KERN_Q4_0, KERN_Q4_1, KERN_Q5_0,
					      KERN_Q5_1, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
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

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K/Q5_K: bytes
 * 0..7 hold the 6-bit scale (0..3) and min (4..7) of sub-blocks 0..3 in their low
 * bits; sub-blocks 4..7 keep their low 4 bits in bytes 8..11 and their top 2 bits in
 * the spare top bits of bytes 0..7. */
static void kq_scale_min(const uint8_t *q, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4;
		*m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
	}
}

static void kq_scale_min_pack(uint8_t *q, const uint8_t sc[8], const uint8_t m[8])
{
	for (int j = 0; j < 4; j++) {
		q[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
		q[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
		q[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (m[j + 4] & 0x0f) << 4);
	}
}

bool kern_group_ints(enum kern_dtype t, const void *block, unsigned g, int8_t q[KERN_QK],
		     float mul[2], float *off)
{
	const uint8_t *s = block;
	*off = 0.0f;
	switch (t) {
	case KERN_F32:
	case KERN_F16:
	case KERN_BF16: return false;
	case KERN_Q8_0:
		mul[0] = kern_f16_to_f32(rd16(s));
		memcpy(q, s + 2, KERN_QK);
		break;
	case KERN_Q4_0:
	case KERN_Q4_1:
	case KERN_Q5_0:
	case KERN_Q5_1: {
		/* Q5_x: Q4_x's nibbles plus a fifth bit per weight in the u32 qh before them */
		bool has_min = t == KERN_Q4_1 || t == KERN_Q5_1;
		bool five = t == KERN_Q5_0 || t == KERN_Q5_1;
		mul[0] = kern_f16_to_f32(rd16(s));
		if (has_min)
			*off = kern_f16_to_f32(rd16(s + 2));
		const uint8_t *p = s + (has_min ? 4 : 2);
		uint32_t qh = five ? rd32(p) : 0;
		const uint8_t *qs = p + (five ? 4 : 0);
		int bias = has_min ? 0 : five ? 16 : 8;
		for (int j = 0; j < KERN_QK / 2; j++) {
			q[j] = (int8_t)(((qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4) - bias);
			q[j + 16] = (int8_t)(((qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - bias);
		}
		break;
	}
	case KERN_Q4_K:
	case KERN_Q5_K: {
		bool five = t == KERN_Q5_K;
		int sc, m;
		kq_scale_min(s + 4, (int)g, &sc, &m);
		mul[0] = kern_f16_to_f32(rd16(s)) * (float)sc;
		*off = -(kern_f16_to_f32(rd16(s + 2)) * (float)m);
		const uint8_t *qs = s + (five ? 48 : 16) + 32 * (g / 2);
		for (int l = 0; l < 32; l++) {
			int v = g & 1 ? qs[l] >> 4 : qs[l] & 0x0f;
			if (five)
				v |= ((s[16 + l] >> g) & 1) << 4;
			q[l] = (int8_t)v;
		}
		break;
	}
	case KERN_Q6_K: {
		unsigned half = g / 4, i = g % 4;
		const uint8_t *ql = s + 64 * half + 32 * (i & 1), *qh = s + 128 + 32 * half;
		const int8_t *sc = (const int8_t *)(s + 192) + 8 * half + 2 * i;
		float d = kern_f16_to_f32(rd16(s + 208));
		mul[0] = d * (float)sc[0];
		mul[1] = d * (float)sc[1];
		for (int l = 0; l < 32; l++) {
			int lo = i >= 2 ? ql[l] >> 4 : ql[l] & 0x0f;
			q[l] = (int8_t)((lo | ((qh[l] >> (2 * i)) & 3) << 4) - 32);
		}
		return true;
	}
	}
	mul[1] = mul[0];
	return true;
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
	default: {
		/* Quantised: each group of 32 as the integers it multiplies; the float the
		 * reference computes is mul * q (+ off, where the type has one). */
		bool has_off = kern_dtype_has_offset(t);
		size_t block = kern_dtype_block(t), bytes = kern_dtype_block_bytes(t);
		for (size_t b = 0; b < n / block; b++, s += bytes) {
			for (unsigned g = 0; g < block / KERN_QK; g++, dst += KERN_QK) {
				int8_t q[KERN_QK];
				float mul[2], off;
				kern_group_ints(t, s, g, q, mul, &off);
				for (int i = 0; i < KERN_QK; i++)
					dst[i] = has_off ? mul[i / 16] * (float)q[i] + off
							 : mul[i / 16] * (float)q[i];
			}
		}
		return;
	}
	}
}

bool kern_kblock_scales(enum kern_dtype t, const void *block, int16_t sc[16], float *d,
			float mins[8])
{
	const uint8_t *s = block;
	memset(sc, 0, 16 * sizeof(sc[0]));
	for (int i = 0; i < 8; i++)
		mins[i] = 0.0f;
	if (t == KERN_Q6_K) {
		for (int i = 0; i < 16; i++)
			sc[i] = (int8_t)s[192 + i];
		*d = kern_f16_to_f32(rd16(s + 208));
		return true;
	}
	if (t != KERN_Q4_K && t != KERN_Q5_K)
		return false;
	float dmin = kern_f16_to_f32(rd16(s + 2));
	for (int i = 0; i < 8; i++) {
		int scale, m;
		kq_scale_min(s + 4, i, &scale, &m);
		sc[i] = (int16_t)scale;
		mins[i] = -(dmin * (float)m);
	}
	*d = kern_f16_to_f32(rd16(s));
	return true;
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Q5_0 as Q4_0 (scale from the max-magnitude weight, which maps to -16) and Q5_1 as
 * Q4_1, with 31 levels. */
static void quant_q5(const float *src, uint8_t *o, size_t n, bool has_min)
{
	size_t bytes = has_min ? 24 : 22;
	for (size_t b = 0; b < n / KERN_QK; b++, o += bytes) {
		const float *x = src + b * KERN_QK;
		float d, id, base;
		if (has_min) {
			float min = x[0], max = x[0];
			for (int j = 1; j < KERN_QK; j++) {
				min = fminf(min, x[j]);
				max = fmaxf(max, x[j]);
			}
			d = (max - min) / 31.0f;
			base = min;
			wr16(o, kern_f32_to_f16(d));
			wr16(o + 2, kern_f32_to_f16(min));
		} else {
			float amax = 0, max = 0;
			for (int j = 0; j < KERN_QK; j++) {
				if (fabsf(x[j]) > amax) {
					amax = fabsf(x[j]);
					max = x[j];
				}
			}
			d = max / -16.0f;
			base = 0.0f;
			wr16(o, kern_f32_to_f16(d));
		}
		id = d ? 1.0f / d : 0.0f;
		uint8_t *p = o + (has_min ? 4 : 2);
		uint32_t qh = 0;
		for (int j = 0; j < KERN_QK / 2; j++) {
			int lo, hi;
			if (has_min) {
				lo = (int)fminf(31.0f, (x[j] - base) * id + 0.5f);
				hi = (int)fminf(31.0f, (x[j + 16] - base) * id + 0.5f);
			} else {
				lo = (int)fminf(31.0f, x[j] * id + 16.5f);
				hi = (int)fminf(31.0f, x[j + 16] * id + 16.5f);
			}
			p[4 + j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
			qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
		}
		wr32(p, qh);
	}
}

/* Q4_K / Q5_K: each sub-block of 32 gets scale (max - min) / levels and min
 * min(0, smallest weight); the 8 scales and 8 mins are then quantised to 6 bits
 * against d = max scale / 63 and dmin = max min / 63, and the weights against the
 * quantised values, so dequantisation reproduces what was chosen here. */
static void quant_q45_k(const float *src, uint8_t *o, size_t n, bool five)
{
	size_t bytes = five ? 176 : 144;
	int levels = five ? 31 : 15;
	for (size_t b = 0; b < n / KERN_QK_K; b++, o += bytes) {
		const float *x = src + b * KERN_QK_K;
		float scale[8], mins[8], max_scale = 0, max_min = 0;
		for (int s = 0; s < 8; s++) {
			float lo = 0.0f, hi = x[32 * s];
			for (int l = 0; l < 32; l++) {
				lo = fminf(lo, x[32 * s + l]);
				hi = fmaxf(hi, x[32 * s + l]);
			}
			scale[s] = (hi - lo) / (float)levels;
			mins[s] = -lo;
			max_scale = fmaxf(max_scale, scale[s]);
			max_min = fmaxf(max_min, mins[s]);
		}
		uint16_t dh = kern_f32_to_f16(max_scale / 63.0f);
		uint16_t mh = kern_f32_to_f16(max_min / 63.0f);
		float d = kern_f16_to_f32(dh), dmin = kern_f16_to_f32(mh);
		uint8_t sc[8], mq[8];
		for (int s = 0; s < 8; s++) {
			sc[s] = (uint8_t)clampi(d ? (int)lrintf(scale[s] / d) : 0, 0, 63);
			mq[s] = (uint8_t)clampi(dmin ? (int)lrintf(mins[s] / dmin) : 0, 0, 63);
		}
		wr16(o, dh);
		wr16(o + 2, mh);
		kq_scale_min_pack(o + 4, sc, mq);
		uint8_t *qh = five ? o + 16 : NULL;
		uint8_t *qs = o + (five ? 48 : 16);
		if (five)
			memset(qh, 0, 32);
		for (int s = 0; s < 8; s++) {
			float ds = d * (float)sc[s], ms = dmin * (float)mq[s];
			float ids = ds ? 1.0f / ds : 0.0f;
			for (int l = 0; l < 32; l++) {
				int q = clampi((int)lrintf((x[32 * s + l] + ms) * ids), 0, levels);
				uint8_t *byte = &qs[32 * (s / 2) + l];
				if (s % 2 == 0)
					*byte = (uint8_t)(q & 0x0f);
				else
					*byte |= (uint8_t)((q & 0x0f) << 4);
				if (five)
					qh[l] |= (uint8_t)((q >> 4) << s);
			}
		}
	}
}

/* Q6_K: each sub-block of 16 gets the signed scale that maps its max-magnitude weight
 * to -32, quantised to int8 against d = the largest |scale| / 127. */
static void quant_q6_k(const float *src, uint8_t *o, size_t n)
{
	for (size_t b = 0; b < n / KERN_QK_K; b++, o += 210) {
		const float *x = src + b * KERN_QK_K;
		float scale[16], amax_scale = 0;
		for (int s = 0; s < 16; s++) {
			float amax = 0, max = 0;
			for (int l = 0; l < 16; l++) {
				if (fabsf(x[16 * s + l]) > amax) {
					amax = fabsf(x[16 * s + l]);
					max = x[16 * s + l];
				}
			}
			scale[s] = max / -32.0f;
			amax_scale = fmaxf(amax_scale, fabsf(scale[s]));
		}
		uint16_t dh = kern_f32_to_f16(amax_scale / 127.0f);
		float d = kern_f16_to_f32(dh);
		int8_t sc[16];
		for (int s = 0; s < 16; s++)
			sc[s] = (int8_t)clampi(d ? (int)lrintf(scale[s] / d) : 0, -128, 127);
		uint8_t *ql = o, *qh = o + 128;
		memset(o, 0, 192);
		for (int i = 0; i < KERN_QK_K; i++) {
			float ds = d * (float)sc[i / 16];
			int q = clampi(ds ? (int)lrintf(x[i] / ds) : 0, -32, 31) + 32;
			/* inverse of dequant_q6_k's placement */
			int half = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
			uint8_t *lb = &ql[64 * half + l + 32 * (quarter & 1)];
			*lb |= (uint8_t)(quarter < 2 ? (q & 0x0f) : (q & 0x0f) << 4);
			qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * quarter));
		}
		memcpy(o + 192, sc, 16);
		wr16(o + 208, dh);
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
	case KERN_Q5_0:
	case KERN_Q5_1:
		quant_q5(src, o, n, t == KERN_Q5_1);
		return;
	case KERN_Q4_K:
	case KERN_Q5_K:
		quant_q45_k(src, o, n, t == KERN_Q5_K);
		return;
	case KERN_Q6_K:
		quant_q6_k(src, o, n);
		return;
	}
}
