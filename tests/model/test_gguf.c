/* model/gguf: files written by the writer read back equal (v2 and v3, every value and
 * tensor type); every kind of malformed file is refused with a message naming the key
 * or tensor at fault, without reading out of bounds; the real stories260K file opens;
 * specd-gen-model writes the shapes it is asked for, byte-identical per seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "model/gguf.h"
#include "test_support.h"

/* ---- a byte builder for hand-made files ---- */

struct bb {
	uint8_t *p;
	size_t len, cap;
};

static void bb_raw(struct bb *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void bb_u32(struct bb *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	bb_raw(b, x, 4);
}

static void bb_u64(struct bb *b, uint64_t v)
{
	bb_u32(b, (uint32_t)v);
	bb_u32(b, (uint32_t)(v >> 32));
}

static void bb_str(struct bb *b, const char *s)
{
	bb_u64(b, strlen(s));
	bb_raw(b, s, strlen(s));
}

static void bb_header(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	bb_raw(b, "GGUF", 4);
	bb_u32(b, version);
	bb_u64(b, n_tensors);
	bb_u64(b, n_kv);
}

static void bb_kv_u32(struct bb *b, const char *key, uint32_t v)
{
	bb_str(b, key);
	bb_u32(b, GGUF_TYPE_U32);
	bb_u32(b, v);
}

static void bb_tinfo(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		     uint32_t type, uint64_t offset)
{
	bb_str(b, name);
	bb_u32(b, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		bb_u64(b, ne[i]);
	bb_u32(b, type);
	bb_u64(b, offset);
}

static void bb_pad(struct bb *b, size_t align)
{
	static const uint8_t z[64];
	while (b->len % align)
		bb_raw(b, z, 1);
}

static void bb_zeros(struct bb *b, size_t n)
{
	static const uint8_t z[256];
	while (n) {
		size_t k = n < sizeof(z) ? n : sizeof(z);
		bb_raw(b, z, k);
		n -= k;
	}
}

/* Opens an exactly-sized heap copy (so a sanitizer sees any over-read) and expects
 * failure with `code` and a message containing every needle. */
static void expect_fail_at(const uint8_t *p, size_t n, enum specd_status code, const char *n1,
			   const char *n2, int line)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n)
		memcpy(copy, p, n);
	struct gguf_file *f = (struct gguf_file *)(uintptr_t)0x1;
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = gguf_open_memory(copy, n, &f, &err);
	if (st == SPECD_OK || st != code || (n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
		print_error("line %d: status %s, message \"%s\"; wanted %s with \"%s\" \"%s\"\n", line,
			    specd_status_name(st), err.msg, specd_status_name(code), n1 ? n1 : "",
			    n2 ? n2 : "");
	assert_int_equal(st, code);
	assert_int_equal(err.code, code);
	assert_true(f == (struct gguf_file *)(uintptr_t)0x1); /* out untouched */
	if (n1)
		assert_non_null(strstr(err.msg, n1));
	if (n2)
		assert_non_null(strstr(err.msg, n2));
	free(copy);
}

#define expect_fail(b, code, n1, n2) expect_fail_at((b)->p, (b)->len, code, n1, n2, __LINE__)

static struct gguf_file *open_ok(const void *p, size_t n)
{
	struct gguf_file *f = NULL;
	struct specd_error err;
	specd_error_clear(&err);
	enum specd_status st = gguf_open_memory(p, n, &f, &err);
	if (st != SPECD_OK)
		print_error("open failed: %s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	assert_non_null(f);
	return f;
}

/* ---- writer round trips ---- */

static const enum kern_dtype all_types[] = {KERN_F32, KERN_F16, KERN_BF16, KERN_Q8_0, KERN_Q4_0, KERN_Q4_1};

static void fill_bytes(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

static char scratch[512];

static void setup_dir(void)
{
	if (!scratch[0])
		assert_true(ts_mkdtemp(scratch, sizeof(scratch)));
}

static void path_in(char *buf, size_t size, const char *name)
{
	setup_dir();
	snprintf(buf, size, "%s/%s", scratch, name);
}

/* Reads a whole file into a malloc'd buffer. */
static uint8_t *slurp(const char *path, size_t *n)
{
	uint8_t *p = ts_read_file(path, n);
	assert_non_null(p);
	return p;
}

static const uint64_t shapes[][4] = {{64, 1, 1, 1}, {32, 3, 1, 1}, {96, 2, 2, 1}, {32, 1, 2, 3}};

/* Writes a file with every value type and one tensor of each type and rank. */
static void write_everything(const char *path, uint32_t version, uint32_t alignment)
{
	struct gguf_writer *w = NULL;
	struct specd_error err;
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	if (alignment)
		assert_int_equal(gguf_writer_set_u32(w, "general.alignment", alignment), SPECD_OK);
	assert_int_equal(gguf_writer_set_u8(w, "t.u8", 200), SPECD_OK);
	assert_int_equal(gguf_writer_set_i8(w, "t.i8", -100), SPECD_OK);
	assert_int_equal(gguf_writer_set_u16(w, "t.u16", 60000), SPECD_OK);
	assert_int_equal(gguf_writer_set_i16(w, "t.i16", -30000), SPECD_OK);
	assert_int_equal(gguf_writer_set_u32(w, "t.u32", 4000000000u), SPECD_OK);
	assert_int_equal(gguf_writer_set_i32(w, "t.i32", -2000000000), SPECD_OK);
	assert_int_equal(gguf_writer_set_u64(w, "t.u64", UINT64_MAX), SPECD_OK);
	assert_int_equal(gguf_writer_set_i64(w, "t.i64", INT64_MIN), SPECD_OK);
	assert_int_equal(gguf_writer_set_f32(w, "t.f32", 1.5e-5f), SPECD_OK);
	assert_int_equal(gguf_writer_set_f64(w, "t.f64", 1e300), SPECD_OK);
	assert_int_equal(gguf_writer_set_bool(w, "t.bool", true), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "t.str", "placeholder"), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "t.str", "h\xc3\xa9llo"), SPECD_OK); /* replaces */
	assert_int_equal(gguf_writer_set_strn(w, "t.strn", "a\0b", 3), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "t.empty", ""), SPECD_OK);
	const char *strs[] = {"<unk>", "", "\xe2\x96\x81the", "x"};
	assert_int_equal(gguf_writer_set_arr_str(w, "t.arr_str", strs, 4), SPECD_OK);
	assert_int_equal(gguf_writer_set_arr_str(w, "t.arr_str_empty", NULL, 0), SPECD_OK);
	const int32_t i32s[] = {-1, 0, 7, INT32_MAX};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_i32", GGUF_TYPE_I32, i32s, 4), SPECD_OK);
	const float f32s[] = {0.5f, -2.0f, 3.25f};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_f32", GGUF_TYPE_F32, f32s, 3), SPECD_OK);
	const uint8_t bools[] = {1, 0, 1};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_bool", GGUF_TYPE_BOOL, bools, 3), SPECD_OK);
	const uint64_t u64s[] = {1, UINT64_MAX};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_u64", GGUF_TYPE_U64, u64s, 2), SPECD_OK);
	const double f64s[] = {1.0 / 3};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_f64", GGUF_TYPE_F64, f64s, 1), SPECD_OK);
	const int8_t i8s[] = {-128, 127, 0};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_i8", GGUF_TYPE_I8, i8s, 3), SPECD_OK);
	const uint16_t u16s[] = {65535, 1};
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_u16", GGUF_TYPE_U16, u16s, 2), SPECD_OK);
	assert_int_equal(gguf_writer_set_arr(w, "t.arr_empty", GGUF_TYPE_U32, NULL, 0), SPECD_OK);

	for (size_t t = 0; t < sizeof(all_types) / sizeof(all_types[0]); t++) {
		for (size_t s = 0; s < 4; s++) {
			char name[64];
			uint64_t n = shapes[s][0] * shapes[s][1] * shapes[s][2] * shapes[s][3];
			size_t nbytes = kern_dtype_row_bytes(all_types[t], (size_t)shapes[s][0]) * (n / shapes[s][0]);
			uint8_t *data = malloc(nbytes);
			assert_non_null(data);
			fill_bytes(data, nbytes, (unsigned)(t * 4 + s));
			snprintf(name, sizeof(name), "blk.%zu.%s.w%zu", s, kern_dtype_name(all_types[t]), s);
			assert_int_equal(gguf_writer_add_tensor(w, name, all_types[t], (uint32_t)s + 1, shapes[s], data),
					 SPECD_OK);
			free(data);
		}
	}
	specd_error_clear(&err);
	enum specd_status st = gguf_writer_write(w, path, version, &err);
	if (st != SPECD_OK)
		print_error("%s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	gguf_writer_destroy(w);
}

static void check_str(const struct gguf_str *s, const char *want, size_t len)
{
	assert_int_equal(s->len, len);
	if (len)
		assert_memory_equal(s->ptr, want, len);
}

static void check_everything(const struct gguf_file *f, uint32_t version, uint32_t alignment)
{
	uint32_t u32;
	int32_t i32;
	uint64_t u64;
	int64_t i64;
	float f32;
	double f64;
	bool b;
	struct gguf_str s;
	enum gguf_value_type et;
	uint64_t count;
	const void *data;

	assert_int_equal(gguf_version(f), version);
	assert_int_equal(gguf_alignment(f), alignment);
	assert_int_equal(gguf_kv_count(f), 24 + (alignment != GGUF_DEFAULT_ALIGNMENT));
	assert_true(gguf_get_u32(f, "t.u8", &u32) && u32 == 200);
	assert_true(gguf_get_i32(f, "t.i8", &i32) && i32 == -100);
	assert_true(gguf_get_u32(f, "t.u16", &u32) && u32 == 60000);
	assert_true(gguf_get_i32(f, "t.i16", &i32) && i32 == -30000);
	assert_true(gguf_get_u32(f, "t.u32", &u32) && u32 == 4000000000u);
	assert_true(gguf_get_i32(f, "t.i32", &i32) && i32 == -2000000000);
	assert_true(gguf_get_u64(f, "t.u64", &u64) && u64 == UINT64_MAX);
	assert_true(gguf_get_i64(f, "t.i64", &i64) && i64 == INT64_MIN);
	assert_true(gguf_get_f32(f, "t.f32", &f32) && f32 == 1.5e-5f);
	assert_true(gguf_get_f64(f, "t.f64", &f64) && f64 == 1e300);
	assert_true(gguf_get_bool(f, "t.bool", &b) && b);
	assert_true(gguf_get_str(f, "t.str", &s));
	check_str(&s, "h\xc3\xa9llo", 6);
	assert_true(gguf_get_str(f, "t.strn", &s));
	check_str(&s, "a\0b", 3);
	assert_true(gguf_get_str(f, "t.empty", &s));
	assert_int_equal(s.len, 0);
	assert_true(gguf_get_type(f, "t.f64", &et) && et == GGUF_TYPE_F64);

	assert_true(gguf_get_arr(f, "t.arr_str", &et, &count, &data));
	assert_int_equal(et, GGUF_TYPE_STRING);
	assert_int_equal(count, 4);
	assert_null(data);
	assert_true(gguf_get_arr_str(f, "t.arr_str", 0, &s));
	check_str(&s, "<unk>", 5);
	assert_true(gguf_get_arr_str(f, "t.arr_str", 1, &s));
	assert_int_equal(s.len, 0);
	assert_true(gguf_get_arr_str(f, "t.arr_str", 2, &s));
	check_str(&s, "\xe2\x96\x81the", 6);
	assert_true(gguf_get_arr_str(f, "t.arr_str", 3, &s));
	check_str(&s, "x", 1);
	assert_false(gguf_get_arr_str(f, "t.arr_str", 4, &s));
	assert_false(gguf_get_arr_str(f, "t.arr_i32", 0, &s));
	assert_true(gguf_get_arr(f, "t.arr_str_empty", &et, &count, NULL) && count == 0);

	int32_t i32s[4];
	assert_true(gguf_get_arr(f, "t.arr_i32", &et, &count, &data));
	assert_int_equal(et, GGUF_TYPE_I32);
	assert_int_equal(count, 4);
	memcpy(i32s, data, sizeof(i32s));
	assert_true(i32s[0] == -1 && i32s[1] == 0 && i32s[2] == 7 && i32s[3] == INT32_MAX);
	float f32s[3];
	assert_true(gguf_get_arr(f, "t.arr_f32", &et, &count, &data) && et == GGUF_TYPE_F32 && count == 3);
	memcpy(f32s, data, sizeof(f32s));
	assert_true(f32s[0] == 0.5f && f32s[1] == -2.0f && f32s[2] == 3.25f);
	assert_true(gguf_get_arr(f, "t.arr_bool", &et, &count, &data) && et == GGUF_TYPE_BOOL && count == 3);
	assert_memory_equal(data, "\1\0\1", 3);
	uint64_t u64s[2];
	assert_true(gguf_get_arr(f, "t.arr_u64", &et, &count, &data) && et == GGUF_TYPE_U64 && count == 2);
	memcpy(u64s, data, sizeof(u64s));
	assert_true(u64s[0] == 1 && u64s[1] == UINT64_MAX);
	double d;
	assert_true(gguf_get_arr(f, "t.arr_f64", &et, &count, &data) && et == GGUF_TYPE_F64 && count == 1);
	memcpy(&d, data, 8);
	assert_true(d == 1.0 / 3);
	assert_true(gguf_get_arr(f, "t.arr_i8", &et, &count, &data) && et == GGUF_TYPE_I8 && count == 3);
	assert_memory_equal(data, "\x80\x7f\0", 3);
	assert_true(gguf_get_arr(f, "t.arr_u16", &et, &count, &data) && et == GGUF_TYPE_U16 && count == 2);
	assert_memory_equal(data, "\xff\xff\x01\x00", 4);
	assert_true(gguf_get_arr(f, "t.arr_empty", &et, &count, &data) && et == GGUF_TYPE_U32 && count == 0);

	/* keys in the order they were first set */
	struct gguf_str k;
	uint64_t first = alignment != GGUF_DEFAULT_ALIGNMENT;
	assert_true(gguf_key_at(f, first, &k, &et));
	check_str(&k, "t.u8", 4);
	assert_int_equal(et, GGUF_TYPE_U8);
	assert_false(gguf_key_at(f, gguf_kv_count(f), &k, &et));

	size_t size;
	const uint8_t *base = gguf_mapping(f, &size);
	assert_int_equal(gguf_tensor_count(f), 24);
	for (size_t t = 0; t < 6; t++) {
		for (size_t sh = 0; sh < 4; sh++) {
			char name[64];
			snprintf(name, sizeof(name), "blk.%zu.%s.w%zu", sh, kern_dtype_name(all_types[t]), sh);
			const struct gguf_tensor *x = gguf_find_tensor(f, name);
			assert_non_null(x);
			assert_ptr_equal(x, gguf_tensor_at(f, t * 4 + sh));
			assert_string_equal(x->name, name);
			assert_int_equal(x->type, all_types[t]);
			assert_int_equal(x->n_dims, sh + 1);
			uint64_t n = 1;
			for (int j = 0; j < 4; j++) {
				assert_int_equal(x->ne[j], shapes[sh][j]);
				n *= shapes[sh][j];
			}
			assert_int_equal(x->n_elements, n);
			size_t nbytes = kern_dtype_row_bytes(all_types[t], (size_t)shapes[sh][0]) * (n / shapes[sh][0]);
			assert_int_equal(x->nbytes, nbytes);
			assert_int_equal(x->offset % alignment, 0);
			assert_int_equal(((const uint8_t *)x->data - base) % alignment, 0);
			assert_ptr_equal(x->data, base + gguf_data_offset(f) + x->offset);
			uint8_t *want = malloc(nbytes);
			assert_non_null(want);
			fill_bytes(want, nbytes, (unsigned)(t * 4 + sh));
			assert_memory_equal(x->data, want, nbytes);
			free(want);
		}
	}
	assert_null(gguf_find_tensor(f, "blk.0.f32"));
	assert_null(gguf_tensor_at(f, 24));
}

static void roundtrip(uint32_t version, uint32_t alignment)
{
	char path[600];
	struct gguf_file *f = NULL;
	struct specd_error err;
	path_in(path, sizeof(path), "everything.gguf");
	write_everything(path, version, alignment);
	assert_int_equal(gguf_open(path, &f, &err), SPECD_OK);
	check_everything(f, version, alignment ? alignment : GGUF_DEFAULT_ALIGNMENT);
	gguf_close(f);
	/* and the same bytes through the in-memory path */
	size_t n;
	uint8_t *p = slurp(path, &n);
	f = open_ok(p, n);
	check_everything(f, version, alignment ? alignment : GGUF_DEFAULT_ALIGNMENT);
	gguf_close(f);
	free(p);
}

static void test_gguf__roundtrip_v3_every_type(void **state)
{
	(void)state;
	roundtrip(3, 0);
}

static void test_gguf__roundtrip_v2_every_type(void **state)
{
	(void)state;
	roundtrip(2, 0);
}

static void test_gguf__roundtrip_custom_alignment(void **state)
{
	(void)state;
	roundtrip(3, 256);
	roundtrip(3, 1);
}

static void test_gguf__integer_getters_convert_only_when_the_value_fits(void **state)
{
	(void)state;
	struct bb b = {0};
	bb_header(&b, 3, 0, 5);
	bb_str(&b, "neg");
	bb_u32(&b, GGUF_TYPE_I8);
	bb_raw(&b, "\xff", 1);
	bb_str(&b, "big");
	bb_u32(&b, GGUF_TYPE_U64);
	bb_u64(&b, 1ull << 40);
	bb_str(&b, "small");
	bb_u32(&b, GGUF_TYPE_I64);
	bb_u64(&b, 42);
	bb_kv_u32(&b, "u", 3000000000u);
	bb_str(&b, "s");
	bb_u32(&b, GGUF_TYPE_STRING);
	bb_str(&b, "7");
	struct gguf_file *f = open_ok(b.p, b.len);
	uint32_t u32 = 99;
	int32_t i32 = 99;
	uint64_t u64 = 99;
	int64_t i64 = 99;
	float fl = 9;
	bool bo = false;
	struct gguf_str s;
	assert_false(gguf_get_u32(f, "neg", &u32));
	assert_false(gguf_get_u64(f, "neg", &u64));
	assert_true(gguf_get_i32(f, "neg", &i32) && i32 == -1);
	assert_true(gguf_get_i64(f, "neg", &i64) && i64 == -1);
	assert_false(gguf_get_u32(f, "big", &u32));
	assert_false(gguf_get_i32(f, "big", &i32));
	assert_true(gguf_get_u64(f, "big", &u64) && u64 == 1ull << 40);
	assert_true(gguf_get_u32(f, "small", &u32) && u32 == 42);
	assert_false(gguf_get_i32(f, "u", &i32));
	assert_true(gguf_get_i64(f, "u", &i64) && i64 == 3000000000);
	/* wrong kinds: no conversion, *out untouched */
	u32 = 99;
	assert_false(gguf_get_u32(f, "s", &u32));
	assert_false(gguf_get_f32(f, "u", &fl));
	assert_false(gguf_get_bool(f, "u", &bo));
	assert_false(gguf_get_str(f, "u", &s));
	assert_false(gguf_get_arr(f, "s", NULL, NULL, NULL));
	assert_false(gguf_get_u32(f, "missing", &u32));
	assert_false(gguf_has_key(f, "missing"));
	assert_true(gguf_has_key(f, "s"));
	assert_int_equal(u32, 99);
	assert_true(fl == 9 && !bo);
	assert_int_equal(gguf_tensor_count(f), 0);
	gguf_close(f);
	free(b.p);
}

/* ---- malformed files ---- */

static void test_gguf__rejects_bad_headers(void **state)
{
	(void)state;
	struct bb b = {0};
	expect_fail(&b, SPECD_INVAL, "bad magic", NULL); /* empty */
	bb_raw(&b, "GGML", 4);
	bb_u32(&b, 3);
	bb_zeros(&b, 16);
	expect_fail(&b, SPECD_INVAL, "bad magic", NULL);
	b.len = 0;
	bb_header(&b, 1, 0, 0);
	expect_fail(&b, SPECD_UNSUPPORTED, "version 1", "32-bit");
	b.len = 0;
	bb_header(&b, 4, 0, 0);
	expect_fail(&b, SPECD_UNSUPPORTED, "version 4", NULL);
	b.len = 0;
	bb_raw(&b, "GGUF\0\0\0\3", 8); /* version 3 written big-endian */
	bb_zeros(&b, 16);
	expect_fail(&b, SPECD_UNSUPPORTED, "big-endian", NULL);
	b.len = 0;
	bb_header(&b, 3, 0, 0);
	b.len -= 3; /* key count cut short */
	expect_fail(&b, SPECD_INVAL, "header (key count) is truncated", NULL);
	b.len = 0;
	bb_header(&b, 3, 0, UINT64_MAX);
	expect_fail(&b, SPECD_INVAL, "claims 18446744073709551615 keys", NULL);
	b.len = 0;
	bb_header(&b, 3, 1ull << 60, 0);
	bb_zeros(&b, 1000);
	expect_fail(&b, SPECD_INVAL, "tensors but the file can hold at most 30", NULL);
	free(b.p);
}

static void test_gguf__rejects_bad_keys_naming_them(void **state)
{
	(void)state;
	struct bb b = {0};
	/* key length 2^64-1 */
	bb_header(&b, 3, 0, 1);
	bb_u64(&b, UINT64_MAX);
	bb_zeros(&b, 20);
	expect_fail(&b, SPECD_INVAL, "key #0 (name)", "runs past the end");
	/* key name cut short */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_kv_u32(&b, "llama.block_count", 5);
	b.len -= 14;
	expect_fail(&b, SPECD_INVAL, "key #0 (name)", NULL);
	/* value cut short */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_kv_u32(&b, "llama.block_count", 5);
	b.len -= 1;
	expect_fail(&b, SPECD_INVAL, "key 'llama.block_count': u32 value is truncated", NULL);
	/* unknown value type */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "general.weird");
	bb_u32(&b, 13);
	bb_zeros(&b, 8);
	expect_fail(&b, SPECD_INVAL, "key 'general.weird': unknown value type 13", NULL);
	/* empty key and NUL inside a key */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_kv_u32(&b, "", 1);
	expect_fail(&b, SPECD_INVAL, "key #0 has an empty name", NULL);
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_u64(&b, 3);
	bb_raw(&b, "a\0b", 3);
	bb_u32(&b, GGUF_TYPE_U8);
	bb_raw(&b, "\1", 1);
	expect_fail(&b, SPECD_INVAL, "key #0 'a?b' contains a NUL byte", NULL);
	/* a string value whose length runs off the end */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "general.name");
	bb_u32(&b, GGUF_TYPE_STRING);
	bb_u64(&b, 1000);
	bb_raw(&b, "short", 5);
	expect_fail(&b, SPECD_INVAL, "key 'general.name': string value", "runs past the end");
	/* bool that is neither 0 nor 1 */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.add_bos_token");
	bb_u32(&b, GGUF_TYPE_BOOL);
	bb_raw(&b, "\2", 1);
	expect_fail(&b, SPECD_INVAL, "key 'tokenizer.ggml.add_bos_token': bool value 2", NULL);
	/* duplicate keys */
	b.len = 0;
	bb_header(&b, 3, 0, 3);
	bb_kv_u32(&b, "llama.block_count", 5);
	bb_kv_u32(&b, "llama.context_length", 5);
	bb_kv_u32(&b, "llama.block_count", 6);
	expect_fail(&b, SPECD_INVAL, "duplicate key 'llama.block_count'", "#0 and #2");
	/* the header promises more keys than there are */
	b.len = 0;
	bb_header(&b, 3, 0, 2);
	bb_kv_u32(&b, "llama.block_count", 5);
	bb_zeros(&b, 14);
	expect_fail(&b, SPECD_INVAL, "key #1 has an empty name", NULL);
	free(b.p);
}

static void test_gguf__rejects_bad_arrays_naming_the_key(void **state)
{
	(void)state;
	struct bb b = {0};
	/* nested array */
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.merges");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u64(&b, 1);
	bb_zeros(&b, 32);
	expect_fail(&b, SPECD_UNSUPPORTED, "key 'tokenizer.ggml.merges': nested arrays", NULL);
	/* unknown element type */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.scores");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, 77);
	bb_u64(&b, 1);
	bb_zeros(&b, 32);
	expect_fail(&b, SPECD_INVAL, "key 'tokenizer.ggml.scores': unknown array element type 77", NULL);
	/* element count whose byte size overflows 64 bits */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.scores");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, GGUF_TYPE_F32);
	bb_u64(&b, (1ull << 62) + 1);
	bb_zeros(&b, 32);
	expect_fail(&b, SPECD_INVAL, "key 'tokenizer.ggml.scores': array of 4611686018427387905 f32",
		    "runs past the end");
	/* more strings than the file could hold */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.tokens");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, GGUF_TYPE_STRING);
	bb_u64(&b, UINT64_MAX / 2);
	bb_zeros(&b, 64);
	expect_fail(&b, SPECD_INVAL, "key 'tokenizer.ggml.tokens': array of 9223372036854775807 strings",
		    "cannot fit");
	/* a string element runs off the end */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "tokenizer.ggml.tokens");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, GGUF_TYPE_STRING);
	bb_u64(&b, 3);
	bb_str(&b, "<unk>");
	bb_u64(&b, UINT64_MAX);
	bb_zeros(&b, 16);
	expect_fail(&b, SPECD_INVAL, "key 'tokenizer.ggml.tokens': string element 1", "runs past the end");
	/* a bool array holding 3 */
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "x.flags");
	bb_u32(&b, GGUF_TYPE_ARRAY);
	bb_u32(&b, GGUF_TYPE_BOOL);
	bb_u64(&b, 3);
	bb_raw(&b, "\1\0\3", 3);
	expect_fail(&b, SPECD_INVAL, "key 'x.flags': bool value 3 (element 2)", NULL);
	free(b.p);
}

static void test_gguf__rejects_bad_alignment(void **state)
{
	(void)state;
	struct bb b = {0};
	const uint32_t bad[] = {0, 3, 48};
	for (size_t i = 0; i < 3; i++) {
		b.len = 0;
		bb_header(&b, 3, 0, 1);
		bb_kv_u32(&b, "general.alignment", bad[i]);
		expect_fail(&b, SPECD_INVAL, "general.alignment", "is not a power of two");
	}
	b.len = 0;
	bb_header(&b, 3, 0, 1);
	bb_str(&b, "general.alignment");
	bb_u32(&b, GGUF_TYPE_U64);
	bb_u64(&b, 32);
	expect_fail(&b, SPECD_INVAL, "'general.alignment' has type u64, not u32", NULL);
	free(b.p);
}

/* One tensor info then data, for the tensor cases below. */
static void one_tensor(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		       uint32_t type, uint64_t offset, size_t data_bytes)
{
	b->len = 0;
	bb_header(b, 3, 1, 0);
	bb_tinfo(b, name, n_dims, ne, type, offset);
	bb_pad(b, 32);
	bb_zeros(b, data_bytes);
}

static void test_gguf__rejects_bad_tensor_infos_naming_the_tensor(void **state)
{
	(void)state;
	struct bb b = {0};
	const uint64_t ne5[5] = {32, 1, 1, 1, 1};
	one_tensor(&b, "blk.0.attn_q.weight", 5, ne5, KERN_F32, 0, 1024);
	expect_fail(&b, SPECD_INVAL, "tensor 'blk.0.attn_q.weight': n_dims 5 is outside 1..4", NULL);
	one_tensor(&b, "blk.0.attn_k.weight", 0, ne5, KERN_F32, 0, 1024);
	expect_fail(&b, SPECD_INVAL, "tensor 'blk.0.attn_k.weight': n_dims 0", NULL);
	const uint64_t huge[3] = {1ull << 32, 1ull << 30, 4};
	one_tensor(&b, "token_embd.weight", 3, huge, KERN_F32, 0, 64);
	expect_fail(&b, SPECD_INVAL, "tensor 'token_embd.weight': element count overflows at dimension 2", NULL);
	const uint64_t zero[2] = {32, 0};
	one_tensor(&b, "output.weight", 2, zero, KERN_F32, 0, 64);
	expect_fail(&b, SPECD_INVAL, "tensor 'output.weight': dimension 1 is 0", NULL);
	const uint64_t ne2[2] = {256, 2};
	one_tensor(&b, "blk.3.ffn_up.weight", 2, ne2, 10, 0, 4096);
	expect_fail(&b, SPECD_UNSUPPORTED, "tensor 'blk.3.ffn_up.weight': type id 10 (q2_K)", NULL);
	one_tensor(&b, "blk.3.ffn_down.weight", 2, ne2, 250, 0, 4096);
	expect_fail(&b, SPECD_UNSUPPORTED, "tensor 'blk.3.ffn_down.weight': type id 250 (unknown)", NULL);
	const uint64_t ne33[2] = {33, 2};
	one_tensor(&b, "blk.1.attn_v.weight", 2, ne33, KERN_Q8_0, 0, 4096);
	expect_fail(&b, SPECD_INVAL, "tensor 'blk.1.attn_v.weight': row length 33 is not a multiple of the q8_0 block size 32",
		    NULL);
	/* overflow in bytes though not in elements: 2^61 f32 weights are 2^63 bytes */
	const uint64_t rows[2] = {1ull << 31, 1ull << 30};
	one_tensor(&b, "big", 2, rows, KERN_F32, 0, 64);
	expect_fail(&b, SPECD_INVAL, "tensor 'big': byte size overflows", NULL);
	one_tensor(&b, "", 1, ne2, KERN_F32, 0, 64);
	expect_fail(&b, SPECD_INVAL, "tensor #0 has an empty name", NULL);
	/* info cut short in the middle of the dimensions */
	one_tensor(&b, "blk.2.ffn_gate.weight", 2, ne2, KERN_F32, 0, 0);
	b.len = 24 + 8 + strlen("blk.2.ffn_gate.weight") + 4 + 8 + 3;
	expect_fail(&b, SPECD_INVAL, "tensor 'blk.2.ffn_gate.weight': info is truncated", NULL);
	free(b.p);
}

static void test_gguf__rejects_bad_tensor_data_naming_the_tensor(void **state)
{
	(void)state;
	struct bb b = {0};
	const uint64_t ne[1] = {8}; /* 32 bytes of f32 */
	one_tensor(&b, "blk.0.attn_norm.weight", 1, ne, KERN_F32, 16, 64);
	expect_fail(&b, SPECD_INVAL, "tensor 'blk.0.attn_norm.weight': data offset 16 is not a multiple of the alignment 32",
		    NULL);
	one_tensor(&b, "output_norm.weight", 1, ne, KERN_F32, 32, 48);
	expect_fail(&b, SPECD_INVAL, "tensor 'output_norm.weight': data [32, +32) lies outside", NULL);
	one_tensor(&b, "output_norm.weight", 1, ne, KERN_F32, UINT64_MAX - 31, 64);
	expect_fail(&b, SPECD_INVAL, "tensor 'output_norm.weight': data [18446744073709551584, +32) lies outside", NULL);
	/* data section itself missing */
	one_tensor(&b, "token_embd.weight", 1, ne, KERN_F32, 0, 0);
	b.len -= 1; /* drop part of the padding */
	expect_fail(&b, SPECD_INVAL, "past the end of the file", "tensor 'token_embd.weight' has no data");

	/* two tensors sharing bytes */
	const uint64_t ne16[1] = {16}; /* 64 bytes */
	b.len = 0;
	bb_header(&b, 3, 2, 0);
	bb_tinfo(&b, "blk.0.attn_q.bias", 1, ne16, KERN_F32, 0);
	bb_tinfo(&b, "blk.0.attn_k.bias", 1, ne16, KERN_F32, 32);
	bb_pad(&b, 32);
	bb_zeros(&b, 128);
	expect_fail(&b, SPECD_INVAL, "tensors 'blk.0.attn_q.bias' [0, +64) and 'blk.0.attn_k.bias' [32, +64) overlap",
		    NULL);
	/* duplicate names */
	b.len = 0;
	bb_header(&b, 3, 2, 0);
	bb_tinfo(&b, "blk.0.attn_q.bias", 1, ne16, KERN_F32, 0);
	bb_tinfo(&b, "blk.0.attn_q.bias", 1, ne16, KERN_F32, 64);
	bb_pad(&b, 32);
	bb_zeros(&b, 128);
	expect_fail(&b, SPECD_INVAL, "duplicate tensor name 'blk.0.attn_q.bias'", NULL);
	/* the same two, apart: fine */
	b.len = 0;
	bb_header(&b, 3, 2, 0);
	bb_tinfo(&b, "blk.0.attn_q.bias", 1, ne16, KERN_F32, 64);
	bb_tinfo(&b, "blk.0.attn_k.bias", 1, ne16, KERN_F32, 0);
	bb_pad(&b, 32);
	bb_zeros(&b, 128);
	struct gguf_file *f = open_ok(b.p, b.len);
	assert_int_equal(gguf_find_tensor(f, "blk.0.attn_q.bias")->offset, 64);
	gguf_close(f);
	free(b.p);
}

/* A small valid file from the writer, in memory. */
static uint8_t *small_file(size_t *n)
{
	char path[600];
	struct gguf_writer *w = NULL;
	struct specd_error err;
	float x[64];
	for (int i = 0; i < 64; i++)
		x[i] = (float)i;
	path_in(path, sizeof(path), "small.gguf");
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), SPECD_OK);
	assert_int_equal(gguf_writer_set_u32(w, "llama.block_count", 1), SPECD_OK);
	assert_int_equal(gguf_writer_set_u32(w, "llama.context_length", 16), SPECD_OK);
	const char *toks[] = {"<unk>", "<s>", "a"};
	assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), SPECD_OK);
	assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_F32, x, 3), SPECD_OK);
	const uint64_t ne1[1] = {32}, ne2[2] = {32, 2};
	assert_int_equal(gguf_writer_add_tensor(w, "output_norm.weight", KERN_F32, 1, ne1, x), SPECD_OK);
	uint8_t q[68];
	kern_quant_row(KERN_Q8_0, x, q, 64);
	assert_int_equal(gguf_writer_add_tensor(w, "output.weight", KERN_Q8_0, 2, ne2, q), SPECD_OK);
	assert_int_equal(gguf_writer_write(w, path, 3, &err), SPECD_OK);
	gguf_writer_destroy(w);
	return slurp(path, n);
}

static size_t find(const uint8_t *p, size_t n, const char *s)
{
	size_t k = strlen(s);
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(p + i, s, k) == 0)
			return i;
	fail_msg("'%s' not in the file", s);
	return 0;
}

static void test_gguf__rejects_mutations_of_a_written_file(void **state)
{
	(void)state;
	size_t n;
	uint8_t *p = small_file(&n);
	gguf_close(open_ok(p, n));
	uint8_t *m = malloc(n);
	assert_non_null(m);
	/* output.weight's type field: after name, n_dims, 2 x ne */
	size_t info = find(p, n, "output.weight") + strlen("output.weight");
	memcpy(m, p, n);
	m[info + 4 + 16] = 11; /* q3_K */
	expect_fail_at(m, n, SPECD_UNSUPPORTED, "tensor 'output.weight': type id 11 (q3_K)", NULL, __LINE__);
	/* its offset, moved onto the other tensor's data */
	memcpy(m, p, n);
	memset(m + info + 4 + 16 + 4, 0, 8);
	expect_fail_at(m, n, SPECD_INVAL, "overlap", "output.weight", __LINE__);
	/* its first dimension, made 16 (not a whole block) */
	memcpy(m, p, n);
	m[info + 4] = 16;
	expect_fail_at(m, n, SPECD_INVAL, "tensor 'output.weight': row length 16", NULL, __LINE__);
	/* a key renamed into a duplicate (shorter by 3 bytes: the rest shifts up) */
	{
		size_t at = find(p, n, "llama.context_length");
		memcpy(m, p, at - 8);
		uint64_t len = 17;
		memcpy(m + at - 8, &len, 8);
		memcpy(m + at, "llama.block_count", 17);
		memcpy(m + at + 17, p + at + 20, n - at - 20);
		expect_fail_at(m, n - 3, SPECD_INVAL, "duplicate key 'llama.block_count'", NULL, __LINE__);
	}
	/* tokens array count raised past what follows */
	memcpy(m, p, n);
	size_t tok = find(p, n, "tokenizer.ggml.tokens") + strlen("tokenizer.ggml.tokens");
	m[tok + 4 + 4] = 200;
	expect_fail_at(m, n, SPECD_INVAL, "key 'tokenizer.ggml.tokens'", NULL, __LINE__);
	/* the version field */
	memcpy(m, p, n);
	m[4] = 1;
	expect_fail_at(m, n, SPECD_UNSUPPORTED, "version 1", NULL, __LINE__);
	free(m);
	free(p);
}

static void test_gguf__truncation_at_every_offset_fails_cleanly(void **state)
{
	(void)state;
	size_t n;
	uint8_t *p = small_file(&n);
	for (size_t len = 0; len < n; len++) {
		uint8_t *c = malloc(len ? len : 1);
		assert_non_null(c);
		memcpy(c, p, len);
		struct gguf_file *f = NULL;
		struct specd_error err;
		specd_error_clear(&err);
		enum specd_status st = gguf_open_memory(c, len, &f, &err);
		/* The very end is padding after the last tensor: a file cut there still holds
		 * every byte of every tensor and may open. */
		if (st == SPECD_OK) {
			const struct gguf_tensor *t = gguf_tensor_at(f, gguf_tensor_count(f) - 1);
			assert_true(len >= gguf_data_offset(f) + t->offset + t->nbytes);
			gguf_close(f);
		} else {
			assert_int_equal(st, SPECD_INVAL);
			assert_null(f);
			assert_true(strlen(err.msg) > 10);
		}
		free(c);
	}
	free(p);
}

static void test_gguf__byte_mutations_never_crash(void **state)
{
	(void)state;
	size_t n;
	uint8_t *p = small_file(&n);
	static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x20};
	unsigned ok = 0, failed = 0;
	for (size_t i = 0; i < n; i++) {
		for (size_t v = 0; v < sizeof(vals); v++) {
			uint8_t *c = malloc(n);
			assert_non_null(c);
			memcpy(c, p, n);
			c[i] = vals[v];
			struct gguf_file *f = NULL;
			struct specd_error err;
			specd_error_clear(&err);
			if (gguf_open_memory(c, n, &f, &err) == SPECD_OK) {
				/* whatever opened must be self-consistent */
				for (uint64_t t = 0; t < gguf_tensor_count(f); t++) {
					const struct gguf_tensor *x = gguf_tensor_at(f, t);
					assert_true((const uint8_t *)x->data + x->nbytes <= c + n);
					assert_ptr_equal(gguf_find_tensor(f, x->name), x);
				}
				gguf_close(f);
				ok++;
			} else {
				assert_true(err.msg[0] != '\0');
				failed++;
			}
			free(c);
		}
	}
	assert_true(failed > 0 && ok > 0);
	free(p);
}

static void test_gguf__allocation_failures_are_reported(void **state)
{
	(void)state;
	size_t n;
	uint8_t *p = small_file(&n);
	bool opened = false;
	for (long k = 1; k < 100 && !opened; k++) {
		struct gguf_file *f = NULL;
		struct specd_error err;
		specd_alloc_fail_after(k);
		enum specd_status st = gguf_open_memory(p, n, &f, &err);
		specd_alloc_fail_reset();
		if (st == SPECD_OK) {
			opened = true;
			gguf_close(f);
		} else {
			assert_int_equal(st, SPECD_NOMEM);
			assert_null(f);
		}
	}
	assert_true(opened);
	free(p);
}

static void test_gguf__real_files_errors_name_the_path(void **state)
{
	(void)state;
	char path[600];
	struct gguf_file *f = NULL;
	struct specd_error err;
	path_in(path, sizeof(path), "does-not-exist.gguf");
	assert_int_equal(gguf_open(path, &f, &err), SPECD_IO);
	assert_non_null(strstr(err.msg, "does-not-exist.gguf"));
	assert_int_equal(gguf_open(scratch, &f, &err), SPECD_INVAL); /* a folder */
	assert_non_null(strstr(err.msg, "not a regular file"));
	char buf[600];
	assert_true(ts_write_file(scratch, "empty.gguf", "", buf, sizeof(buf)));
	assert_int_equal(gguf_open(buf, &f, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "empty.gguf"));
	assert_true(ts_write_file(scratch, "text.gguf", "hello, this is not a model\n", buf, sizeof(buf)));
	assert_int_equal(gguf_open(buf, &f, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "text.gguf: not a GGUF file"));
	/* a written file cut inside its last tensor, through the mmap path */
	size_t n;
	uint8_t *p = small_file(&n);
	path_in(path, sizeof(path), "cut.gguf");
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n - 40, fp), n - 40);
	fclose(fp);
	assert_int_equal(gguf_open(path, &f, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "cut.gguf: tensor 'output.weight': data"));
	assert_non_null(strstr(err.msg, "truncated"));
	/* a written file with an unsupported tensor type, through the mmap path */
	size_t info = find(p, n, "output_norm.weight") + strlen("output_norm.weight");
	p[info + 4 + 8] = 10; /* q2_K */
	fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	fclose(fp);
	assert_int_equal(gguf_open(path, &f, &err), SPECD_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "tensor 'output_norm.weight': type id 10 (q2_K)"));
	free(p);
}

/* ---- writer behaviour ---- */

static void test_gguf_writer__rejects_bad_input(void **state)
{
	(void)state;
	struct gguf_writer *w = NULL;
	struct specd_error err;
	char path[600];
	float x[32] = {0};
	const uint64_t ne[2] = {32, 1}, ne33[1] = {33};
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 24), SPECD_INVAL);
	assert_int_equal(gguf_writer_set_u64(w, "general.alignment", 32), SPECD_INVAL);
	assert_int_equal(gguf_writer_set_u32(w, "", 1), SPECD_INVAL);
	assert_int_equal(gguf_writer_set_str(w, "k", NULL), SPECD_INVAL);
	assert_int_equal(gguf_writer_set_arr(w, "k", GGUF_TYPE_STRING, x, 1), SPECD_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "t", KERN_F32, 2, ne, x), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "t", KERN_F32, 2, ne, x), SPECD_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", KERN_Q8_0, 1, ne33, x), SPECD_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", (enum kern_dtype)16, 1, ne, x), SPECD_INVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", KERN_F32, 5, ne, x), SPECD_INVAL);
	path_in(path, sizeof(path), "w.gguf");
	assert_int_equal(gguf_writer_write(w, path, 1, &err), SPECD_INVAL);
	/* a streamed tensor whose bytes never come: the partial file is removed */
	assert_int_equal(gguf_writer_add_tensor(w, "later", KERN_F32, 1, ne, NULL), SPECD_OK);
	assert_int_equal(gguf_writer_write(w, path, 3, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "tensor 'later' has no data"));
	assert_int_equal(gguf_writer_begin(w, path, 3, &err), SPECD_OK);
	assert_int_equal(gguf_writer_stream(w, x, 16, &err), SPECD_OK);
	assert_int_equal(gguf_writer_finish(w, &err), SPECD_INVAL);
	assert_non_null(strstr(err.msg, "tensor 'later' got 16 of its 128 bytes"));
	struct stat sb;
	assert_int_equal(stat(path, &sb), -1);
	gguf_writer_destroy(w);
	/* an unwritable place */
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_write(w, "/nonexistent-dir/x.gguf", 3, &err), SPECD_IO);
	assert_non_null(strstr(err.msg, "/nonexistent-dir/x.gguf"));
	gguf_writer_destroy(w);
	gguf_writer_destroy(NULL);
	gguf_close(NULL);
}

static void test_gguf_writer__streams_in_any_chunks(void **state)
{
	(void)state;
	struct gguf_writer *w = NULL;
	struct specd_error err;
	char path[600];
	const uint64_t a[1] = {40}, b[2] = {32, 3}, c[1] = {3};
	uint8_t held[12], streamed[40 * 2 + 3 * 34];
	fill_bytes(held, sizeof(held), 1);
	fill_bytes(streamed, sizeof(streamed), 2);
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "a", KERN_F16, 1, a, NULL), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "c", KERN_F32, 1, c, held), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "b", KERN_Q8_0, 2, b, NULL), SPECD_OK);
	path_in(path, sizeof(path), "stream.gguf");
	assert_int_equal(gguf_writer_begin(w, path, 3, &err), SPECD_OK);
	/* chunks of 7 bytes straddle the boundary between a and b; c (held) goes between */
	for (size_t off = 0; off < sizeof(streamed); off += 7) {
		size_t k = sizeof(streamed) - off < 7 ? sizeof(streamed) - off : 7;
		assert_int_equal(gguf_writer_stream(w, streamed + off, k, &err), SPECD_OK);
	}
	assert_int_equal(gguf_writer_stream(w, held, 1, &err), SPECD_INVAL); /* one too many */
	gguf_writer_destroy(w);
	/* again, without the extra byte */
	assert_int_equal(gguf_writer_create(&w), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "a", KERN_F16, 1, a, NULL), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "c", KERN_F32, 1, c, held), SPECD_OK);
	assert_int_equal(gguf_writer_add_tensor(w, "b", KERN_Q8_0, 2, b, NULL), SPECD_OK);
	assert_int_equal(gguf_writer_begin(w, path, 2, &err), SPECD_OK);
	for (size_t off = 0; off < sizeof(streamed); off += 7) {
		size_t k = sizeof(streamed) - off < 7 ? sizeof(streamed) - off : 7;
		assert_int_equal(gguf_writer_stream(w, streamed + off, k, &err), SPECD_OK);
	}
	assert_int_equal(gguf_writer_finish(w, &err), SPECD_OK);
	gguf_writer_destroy(w);
	struct gguf_file *f = NULL;
	assert_int_equal(gguf_open(path, &f, &err), SPECD_OK);
	assert_int_equal(gguf_version(f), 2);
	assert_memory_equal(gguf_find_tensor(f, "a")->data, streamed, 80);
	assert_memory_equal(gguf_find_tensor(f, "b")->data, streamed + 80, 3 * 34);
	assert_memory_equal(gguf_find_tensor(f, "c")->data, held, 12);
	gguf_close(f);
}

/* ---- a real file ---- */

static void test_gguf__opens_stories260k(void **state)
{
	(void)state;
	char path[600];
	if (!ts_model_path("stories260K.gguf", path, sizeof(path))) {
		print_message("stories260K.gguf not found (SPECD_MODELS or ../shared/models): skipped\n");
		skip();
	}
	struct gguf_file *f = NULL;
	struct specd_error err;
	enum specd_status st = gguf_open(path, &f, &err);
	if (st != SPECD_OK)
		print_error("%s\n", err.msg);
	assert_int_equal(st, SPECD_OK);
	struct gguf_str s;
	uint32_t u;
	assert_true(gguf_get_str(f, "general.architecture", &s));
	check_str(&s, "llama", 5);
	assert_true(gguf_get_u32(f, "llama.block_count", &u) && u == 5);
	assert_true(gguf_get_u32(f, "llama.embedding_length", &u) && u == 64);
	assert_true(gguf_get_u32(f, "llama.attention.head_count", &u) && u == 8);
	assert_true(gguf_get_u32(f, "llama.attention.head_count_kv", &u) && u == 4);
	assert_true(gguf_get_u32(f, "llama.feed_forward_length", &u) && u == 172);
	enum gguf_value_type et;
	uint64_t count;
	assert_true(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &count, NULL));
	assert_int_equal(et, GGUF_TYPE_STRING);
	assert_int_equal(count, 512);
	assert_true(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &s));
	check_str(&s, "<s>", 3);
	const struct gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
	assert_non_null(t);
	assert_int_equal(t->type, KERN_F32);
	assert_int_equal(t->ne[0], 64);
	assert_int_equal(t->ne[1], 512);
	assert_non_null(gguf_find_tensor(f, "blk.4.ffn_down.weight"));
	assert_null(gguf_find_tensor(f, "blk.5.ffn_down.weight"));
	gguf_close(f);
}

/* ---- the generator ---- */

static void gen_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/tools/specd-gen-model", ts_binary_dir());
}

static int run_gen(const char *const *args, char **out)
{
	const char *argv[40];
	char exe[600];
	size_t n = 0;
	gen_path(exe, sizeof(exe));
	argv[n++] = exe;
	while (*args && n < 39)
		argv[n++] = *args++;
	argv[n] = NULL;
	return ts_run(argv, out, 120);
}

static void expect_tensor(const struct gguf_file *f, const char *name, enum kern_dtype type,
			  uint64_t ne0, uint64_t ne1)
{
	const struct gguf_tensor *t = gguf_find_tensor(f, name);
	if (!t)
		fail_msg("tensor %s missing", name);
	assert_int_equal(t->type, type);
	assert_int_equal(t->ne[0], ne0);
	assert_int_equal(t->ne[1], ne1);
	assert_int_equal(t->n_dims, ne1 == 1 ? 1 : 2);
}

static void test_gen_model__writes_requested_shapes(void **state)
{
	(void)state;
	char path[600], *out = NULL;
	path_in(path, sizeof(path), "q.gguf");
	const char *args[] = {"-o", path, "--arch", "qwen2", "--dim", "128", "--layers", "3",
			      "--heads", "8", "--kv-heads", "2", "--ffn", "96", "--vocab", "300",
			      "--ctx", "64", "--type", "q4_0", "--tied", "--rope-theta", "1e6", NULL};
	int rc = run_gen(args, &out);
	if (rc != 0)
		print_error("%s\n", out ? out : "");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "params"));
	free(out);
	struct gguf_file *f = NULL;
	struct specd_error err;
	assert_int_equal(gguf_open(path, &f, &err), SPECD_OK);
	struct gguf_str s;
	uint32_t u;
	float fl;
	assert_true(gguf_get_str(f, "general.architecture", &s));
	check_str(&s, "qwen2", 5);
	assert_true(gguf_get_u32(f, "qwen2.embedding_length", &u) && u == 128);
	assert_true(gguf_get_u32(f, "qwen2.block_count", &u) && u == 3);
	assert_true(gguf_get_u32(f, "qwen2.attention.head_count", &u) && u == 8);
	assert_true(gguf_get_u32(f, "qwen2.attention.head_count_kv", &u) && u == 2);
	assert_true(gguf_get_u32(f, "qwen2.feed_forward_length", &u) && u == 96);
	assert_true(gguf_get_u32(f, "qwen2.context_length", &u) && u == 64);
	assert_true(gguf_get_u32(f, "qwen2.rope.dimension_count", &u) && u == 16);
	assert_true(gguf_get_f32(f, "qwen2.rope.freq_base", &fl) && fl == 1e6f);
	assert_true(gguf_get_f32(f, "qwen2.attention.layer_norm_rms_epsilon", &fl) && fl > 0);
	assert_true(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u) && u == 1);
	assert_true(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) && u == 2);
	assert_true(gguf_get_u32(f, "tokenizer.ggml.unknown_token_id", &u) && u == 0);
	assert_true(gguf_get_str(f, "tokenizer.ggml.model", &s));
	check_str(&s, "llama", 5);
	enum gguf_value_type et;
	uint64_t count;
	const void *data;
	assert_true(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &count, NULL) && count == 300);
	assert_true(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 3 + 0x41, &s));
	check_str(&s, "<0x41>", 6);
	assert_true(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 259, &s));
	check_str(&s, "\xe2\x96\x81", 3);
	assert_true(gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &count, &data));
	assert_true(et == GGUF_TYPE_I32 && count == 300);
	int32_t ty;
	memcpy(&ty, (const int32_t *)data + 10, 4);
	assert_int_equal(ty, 6); /* byte token */
	assert_true(gguf_get_arr(f, "tokenizer.ggml.scores", &et, &count, &data));
	float sc[2];
	memcpy(sc, (const float *)data + 260, 8);
	assert_true(sc[0] > sc[1]); /* descending */

	expect_tensor(f, "token_embd.weight", KERN_Q4_0, 128, 300);
	for (int l = 0; l < 3; l++) {
		char n[64];
#define BLK(suffix, type, a, b) \
	snprintf(n, sizeof(n), "blk.%d." suffix, l), expect_tensor(f, n, type, a, b)
		BLK("attn_norm.weight", KERN_F32, 128, 1);
		BLK("attn_q.weight", KERN_Q4_0, 128, 128);
		BLK("attn_k.weight", KERN_Q4_0, 128, 32);
		BLK("attn_v.weight", KERN_Q4_0, 128, 32);
		BLK("attn_q.bias", KERN_F32, 128, 1);
		BLK("attn_k.bias", KERN_F32, 32, 1);
		BLK("attn_v.bias", KERN_F32, 32, 1);
		BLK("attn_output.weight", KERN_Q4_0, 128, 128);
		BLK("ffn_norm.weight", KERN_F32, 128, 1);
		BLK("ffn_gate.weight", KERN_Q4_0, 128, 96);
		BLK("ffn_up.weight", KERN_Q4_0, 128, 96);
		BLK("ffn_down.weight", KERN_Q4_0, 96, 128);
#undef BLK
	}
	expect_tensor(f, "output_norm.weight", KERN_F32, 128, 1);
	assert_null(gguf_find_tensor(f, "output.weight")); /* --tied */
	assert_null(gguf_find_tensor(f, "blk.3.attn_q.weight"));
	assert_int_equal(gguf_tensor_count(f), 1 + 3 * 12 + 1);
	/* norms near 1 */
	const struct gguf_tensor *norm = gguf_find_tensor(f, "blk.0.ffn_norm.weight");
	float w0[128];
	memcpy(w0, norm->data, sizeof(w0));
	for (int i = 0; i < 128; i++)
		assert_true(w0[i] > 0.5f && w0[i] < 1.5f);
	gguf_close(f);
}

static void test_gen_model__same_seed_same_bytes(void **state)
{
	(void)state;
	char a[600], b[600], c[600], *out = NULL;
	path_in(a, sizeof(a), "s1.gguf");
	path_in(b, sizeof(b), "s2.gguf");
	path_in(c, sizeof(c), "s3.gguf");
	const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"};
	for (size_t t = 0; t < 6; t++) {
		const char *args_a[] = {"-o", a, "--type", types[t], "--seed", "7", "--gguf-version", "2", NULL};
		const char *args_b[] = {"-o", b, "--type", types[t], "--seed", "7", "--gguf-version", "2", NULL};
		const char *args_c[] = {"-o", c, "--type", types[t], "--seed", "8", "--gguf-version", "2", NULL};
		assert_int_equal(run_gen(args_a, &out), 0);
		free(out);
		assert_int_equal(run_gen(args_b, &out), 0);
		free(out);
		assert_int_equal(run_gen(args_c, &out), 0);
		free(out);
		size_t na, nb, nc;
		uint8_t *pa = slurp(a, &na), *pb = slurp(b, &nb), *pc = slurp(c, &nc);
		assert_int_equal(na, nb);
		assert_memory_equal(pa, pb, na);
		assert_int_equal(na, nc);
		assert_memory_not_equal(pa, pc, na);
		struct gguf_file *f = open_ok(pa, na);
		assert_int_equal(gguf_version(f), 2);
		enum kern_dtype want;
		assert_true(kern_dtype_parse(types[t], &want));
		expect_tensor(f, "blk.1.ffn_down.weight", want, 128, 64);
		expect_tensor(f, "output.weight", want, 64, 512);
		gguf_close(f);
		free(pa);
		free(pb);
		free(pc);
	}
}

/* --layers-of: the first N blocks of a model, byte for byte, with every key (the block
 * count lowered) and the tensors outside the blocks; asking for more blocks than there
 * are, or without --layers, is refused. */
static void test_gen_model__layers_of_keeps_the_first_blocks(void **state)
{
	(void)state;
	char full[600], part[600], *out = NULL;
	path_in(full, sizeof(full), "full4.gguf");
	path_in(part, sizeof(part), "first2.gguf");
	const char *gen[] = {"-o", full, "--layers", "4", "--type", "q8_0", "--seed", "3", NULL};
	assert_int_equal(run_gen(gen, &out), 0);
	free(out);
	const char *cut[] = {"-o", part, "--layers-of", full, "--layers", "2", NULL};
	assert_int_equal(run_gen(cut, &out), 0);
	assert_non_null(strstr(out, "the first 2 of 4 layers"));
	free(out);
	size_t nf, np;
	uint8_t *pf = slurp(full, &nf), *pp = slurp(part, &np);
	struct gguf_file *f = open_ok(pf, nf), *p = open_ok(pp, np);
	uint32_t blocks = 0;
	assert_true(gguf_get_u32(p, "llama.block_count", &blocks));
	assert_int_equal(blocks, 2);
	assert_int_equal(gguf_kv_count(p), gguf_kv_count(f));
	uint64_t kept = 0;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(f, i), *u;
		u = gguf_find_tensor(p, t->name);
		if (strncmp(t->name, "blk.2.", 6) == 0 || strncmp(t->name, "blk.3.", 6) == 0) {
			assert_null(u);
			continue;
		}
		if (!u)
			fail_msg("%s missing", t->name);
		assert_int_equal(u->type, t->type);
		assert_int_equal(u->nbytes, t->nbytes);
		assert_memory_equal(u->data, t->data, t->nbytes);
		kept++;
	}
	assert_int_equal(gguf_tensor_count(p), kept);
	gguf_close(f);
	gguf_close(p);
	free(pf);
	free(pp);

	const char *too_many[] = {"-o", part, "--layers-of", full, "--layers", "5", NULL};
	assert_int_equal(run_gen(too_many, &out), 1);
	assert_non_null(strstr(out, "5 layers asked, the model has 4"));
	free(out);
	const char *no_n[] = {"-o", part, "--layers-of", full, NULL};
	assert_int_equal(run_gen(no_n, &out), 2);
	assert_non_null(strstr(out, "needs -o OUT.gguf and --layers"));
	free(out);
}

static void test_gen_model__rejects_impossible_shapes(void **state)
{
	(void)state;
	char path[600], *out = NULL;
	path_in(path, sizeof(path), "bad.gguf");
	const char *small_vocab[] = {"-o", path, "--vocab", "256", NULL};
	assert_int_equal(run_gen(small_vocab, &out), 2);
	assert_non_null(strstr(out, "at least 260"));
	free(out);
	const char *heads[] = {"-o", path, "--dim", "64", "--heads", "3", NULL};
	assert_int_equal(run_gen(heads, &out), 2);
	assert_non_null(strstr(out, "multiple of heads"));
	free(out);
	const char *block[] = {"-o", path, "--ffn", "100", "--type", "q8_0", NULL};
	assert_int_equal(run_gen(block, &out), 2);
	assert_non_null(strstr(out, "block"));
	free(out);
	const char *type[] = {"-o", path, "--type", "q5_k", NULL};
	assert_int_equal(run_gen(type, &out), 2);
	free(out);
	const char *params[] = {"-o", path, "--params", "3M", NULL};
	assert_int_equal(run_gen(params, &out), 0);
	free(out);
	struct gguf_file *f = NULL;
	struct specd_error err;
	assert_int_equal(gguf_open(path, &f, &err), SPECD_OK);
	uint64_t total = 0;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++)
		total += gguf_tensor_at(f, i)->n_elements;
	assert_true(total > 2000000 && total < 4000000);
	gguf_close(f);
}

static int teardown_all(void **state)
{
	(void)state;
	if (scratch[0])
		ts_rmtree(scratch);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gguf__roundtrip_v3_every_type),
		cmocka_unit_test(test_gguf__roundtrip_v2_every_type),
		cmocka_unit_test(test_gguf__roundtrip_custom_alignment),
		cmocka_unit_test(test_gguf__integer_getters_convert_only_when_the_value_fits),
		cmocka_unit_test(test_gguf__rejects_bad_headers),
		cmocka_unit_test(test_gguf__rejects_bad_keys_naming_them),
		cmocka_unit_test(test_gguf__rejects_bad_arrays_naming_the_key),
		cmocka_unit_test(test_gguf__rejects_bad_alignment),
		cmocka_unit_test(test_gguf__rejects_bad_tensor_infos_naming_the_tensor),
		cmocka_unit_test(test_gguf__rejects_bad_tensor_data_naming_the_tensor),
		cmocka_unit_test(test_gguf__rejects_mutations_of_a_written_file),
		cmocka_unit_test(test_gguf__truncation_at_every_offset_fails_cleanly),
		cmocka_unit_test(test_gguf__byte_mutations_never_crash),
		cmocka_unit_test(test_gguf__allocation_failures_are_reported),
		cmocka_unit_test(test_gguf__real_files_errors_name_the_path),
		cmocka_unit_test(test_gguf_writer__rejects_bad_input),
		cmocka_unit_test(test_gguf_writer__streams_in_any_chunks),
		cmocka_unit_test(test_gguf__opens_stories260k),
		cmocka_unit_test(test_gen_model__writes_requested_shapes),
		cmocka_unit_test(test_gen_model__same_seed_same_bytes),
		cmocka_unit_test(test_gen_model__rejects_impossible_shapes),
		cmocka_unit_test(test_gen_model__layers_of_keeps_the_first_blocks),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
