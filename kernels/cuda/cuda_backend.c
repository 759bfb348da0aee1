/* The CUDA backend object: the struct kern_ops table over the kernels of cuda_*.cu,
 * its one stream, its device memory (cudaMalloc, zeroed) and the staging ring that
 * puts the ops' host integer arrays (positions, masks, ids) on the device. Every op
 * checks its arguments here, on the host, exactly where the CPU backend does, then
 * queues its kernels; kern_sync and kern_download wait for them. */
#include <string.h>

#include <cuda_runtime_api.h>

#include "common/alloc.h"
#include "common/log.h"
#include "cuda_device.h"
#include "cuda_launch.h"
#include "kernels/kern.h"
#include "kernels/sample.h"

#define STAGE_DEFAULT (8u << 20)
#define STAGE_ALIGN 256
#define STAGE_CACHE 16
#define MAT_ALIGN 16               /* row pitch of device matrices (16-byte loads) */
#define DEQUANT_CHUNK (64u << 20)  /* host bytes dequantised per upload step */
#define MAX_GRID_Y 65535           /* rows per call of the one-block-per-row kernels */

/* A host array already on the device: reused while its bytes are unchanged, so a
 * forward uploads its positions and mask once, not once per layer. */
struct stage_entry {
	const void *host;
	size_t bytes, off;
	bool valid;
};

struct cuda_backend {
	struct kern_ctx base; /* first: ops receive &base */
	int device;
	cudaStream_t stream;
	unsigned char *stage_dev;  /* (stage_cap) device */
	unsigned char *stage_host; /* (stage_cap) pinned host: what stage_dev holds */
	size_t stage_cap, stage_used;
	struct stage_entry cache[STAGE_CACHE];
	unsigned cache_next;
	void *attn_host; /* (attn_cap) host: a batch's flattened visible rows */
	size_t attn_cap;
	bool matmul_reference; /* kern_cuda_config.matmul_reference */
	bool dequant_at_load;  /* kern_cuda_config.dequant_at_load */
	cudaEvent_t *marks;    /* (KERN_MARKS) the profiler's timestamps, made at its first */
	uint32_t n_marks, made_marks;
};

static struct cuda_backend *backend_of(struct kern_ctx *ctx)
{
	return (struct cuda_backend *)(void *)ctx;
}

/* Logs a failed runtime call once, where it is first seen. */
static enum specd_status check(cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return SPECD_OK;
	LOG_ERROR("cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
	return SPECD_CUDA;
}

/* Takes `bytes` of the ring at *off. When the ring wraps, copies queued out of
 * stage_host and kernels reading stage_dev may still be pending: wait for them, and
 * forget every cached array. */
static enum specd_status ring_take(struct cuda_backend *be, size_t bytes, size_t *off)
{
	size_t o = (be->stage_used + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
	if (bytes > be->stage_cap) {
		LOG_ERROR("cuda: an op's %zu bytes of host arrays or results, the stage holds %zu "
			  "(kern_cuda_config.stage_bytes)", bytes, be->stage_cap);
		return SPECD_INVAL;
	}
	if (o + bytes > be->stage_cap) {
		enum specd_status st = check(cudaStreamSynchronize(be->stream), "stage sync");
		if (st != SPECD_OK)
			return st;
		for (unsigned i = 0; i < STAGE_CACHE; i++)
			be->cache[i].valid = false;
		o = 0;
	}
	be->stage_used = o + bytes;
	*off = o;
	return SPECD_OK;
}

/* Puts `bytes` of host memory on the device; *dev is valid for the ops queued after
 * this call (the ring is reused only after a wait). */
static enum specd_status stage(struct cuda_backend *be, const void *host, size_t bytes,
			       const void **dev)
{
	for (unsigned i = 0; i < STAGE_CACHE; i++) {
		struct stage_entry *e = &be->cache[i];
		if (e->valid && e->host == host && e->bytes == bytes &&
		    memcmp(be->stage_host + e->off, host, bytes) == 0) {
			*dev = be->stage_dev + e->off;
			return SPECD_OK;
		}
	}
	size_t off;
	enum specd_status st = ring_take(be, bytes, &off);
	if (st != SPECD_OK)
		return st;
	memcpy(be->stage_host + off, host, bytes);
	st = check(cudaMemcpyAsync(be->stage_dev + off, be->stage_host + off, bytes,
				   cudaMemcpyHostToDevice, be->stream), "stage upload");
	if (st != SPECD_OK)
		return st;
	struct stage_entry *e = &be->cache[be->cache_next++ % STAGE_CACHE];
	*e = (struct stage_entry){.host = host, .bytes = bytes, .off = off, .valid = true};
	*dev = be->stage_dev + off;
	return SPECD_OK;
}

static void cuda_destroy(struct kern_ctx *ctx)
{
	struct cuda_backend *be = backend_of(ctx);
	if (be->stream)
		cudaStreamSynchronize(be->stream);
	cudaFree(be->stage_dev);
	cudaFreeHost(be->stage_host);
	if (be->stream)
		cudaStreamDestroy(be->stream);
	for (uint32_t i = 0; i < be->made_marks; i++)
		cudaEventDestroy(be->marks[i]);
	specd_free(be->marks);
	specd_free(be->attn_host);
	specd_free(be);
}

static enum specd_status cuda_alloc(struct kern_ctx *ctx, size_t bytes, void **out)
{
	struct cuda_backend *be = backend_of(ctx);
	void *p = NULL;
	if (bytes > SIZE_MAX - (STAGE_ALIGN - 1)) { /* kern_sample_work_bytes' SIZE_MAX */
		LOG_ERROR("cuda: cannot allocate %zu bytes on device %d", bytes, be->device);
		return SPECD_NOMEM;
	}
	size_t n = (bytes + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
	cudaError_t e = cudaMalloc(&p, n ? n : STAGE_ALIGN);
	if (e == cudaErrorMemoryAllocation) {
		cudaGetLastError();
		LOG_ERROR("cuda: cannot allocate %zu bytes on device %d", bytes, be->device);
		return SPECD_NOMEM;
	}
	enum specd_status st = check(e, "cudaMalloc");
	if (st == SPECD_OK)
		st = check(cudaMemsetAsync(p, 0, n, be->stream), "cudaMemsetAsync");
	if (st != SPECD_OK) {
		cudaFree(p);
		return st;
	}
	*out = p;
	return SPECD_OK;
}

static void cuda_free_mem(struct kern_ctx *ctx, void *p)
{
	(void)ctx;
	if (p)
		cudaFree(p); /* waits for the device, so no queued op still reads p */
}

/* A copy between host and device that has finished when it returns: the host side
 * may be reused (upload) or read (download) at once. */
static enum specd_status transfer(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes,
				  enum cudaMemcpyKind kind, const char *what)
{
	struct cuda_backend *be = backend_of(ctx);
	if (bytes == 0)
		return SPECD_OK;
	if (!dst || !src)
		return SPECD_INVAL;
	enum specd_status st = check(cudaMemcpyAsync(dst, src, bytes, kind, be->stream), what);
	return st != SPECD_OK ? st : check(cudaStreamSynchronize(be->stream), what);
}

static enum specd_status cuda_upload(struct kern_ctx *ctx, void *dst, const void *src,
				     size_t bytes)
{
	return transfer(ctx, dst, src, bytes, cudaMemcpyHostToDevice, "upload");
}

static enum specd_status cuda_download(struct kern_ctx *ctx, void *dst, const void *src,
				       size_t bytes)
{
	return transfer(ctx, dst, src, bytes, cudaMemcpyDeviceToHost, "download");
}

/* The kernels' name for a weight type; false for one they do not read. */
static bool wtype_of(enum kern_dtype t, enum cuda_wtype *out)
{
	static const struct {
		enum kern_dtype t;
		enum cuda_wtype w;
	} map[] = {
		{KERN_F32, CUDA_W_F32},   {KERN_F16, CUDA_W_F16},   {KERN_BF16, CUDA_W_BF16},
		{KERN_Q8_0, CUDA_W_Q8_0}, {KERN_Q4_0, CUDA_W_Q4_0}, {KERN_Q4_1, CUDA_W_Q4_1},
		{KERN_Q5_0, CUDA_W_Q5_0}, {KERN_Q5_1, CUDA_W_Q5_1}, {KERN_Q4_K, CUDA_W_Q4_K},
		{KERN_Q5_K, CUDA_W_Q5_K}, {KERN_Q6_K, CUDA_W_Q6_K},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (map[i].t == t) {
			*out = map[i].w;
			return true;
		}
	}
	return false;
}

static bool float_type(enum kern_dtype t)
{
	return t == KERN_F32 || t == KERN_F16 || t == KERN_BF16;
}

/* Rows dequantised on the host to f32, DEQUANT_CHUNK bytes at a time. */
static enum specd_status upload_dequant(struct cuda_backend *be, const struct kern_mat *src,
					unsigned char *dst, size_t pitch)
{
	size_t per = DEQUANT_CHUNK / pitch ? DEQUANT_CHUNK / pitch : 1;
	if (per > src->n_out)
		per = src->n_out;
	unsigned char *buf = specd_malloc_array(per, pitch);
	if (!buf)
		return SPECD_NOMEM;
	enum specd_status st = SPECD_OK;
	for (size_t r0 = 0; r0 < src->n_out && st == SPECD_OK; r0 += per) {
		size_t n = src->n_out - r0 < per ? src->n_out - r0 : per;
		for (size_t r = 0; r < n; r++)
			kern_dequant_row(src->type,
					 (const unsigned char *)src->data + (r0 + r) * src->row_bytes,
					 (float *)(void *)(buf + r * pitch), src->n_in);
		st = check(cudaMemcpyAsync(dst + r0 * pitch, buf, n * pitch, cudaMemcpyHostToDevice,
					   be->stream), "weight upload");
		if (st == SPECD_OK)
			st = check(cudaStreamSynchronize(be->stream), "weight upload sync");
	}
	specd_free(buf);
	return st;
}

static enum specd_status cuda_upload_mat(struct kern_ctx *ctx, const struct kern_mat *src,
					 struct kern_mat *out)
{
	struct cuda_backend *be = backend_of(ctx);
	size_t rb = kern_dtype_row_bytes(src->type, src->n_in);
	if (kern_mat_packed_size(src) == 0)
		return SPECD_INVAL;
	enum cuda_wtype wt;
	bool as_stored = wtype_of(src->type, &wt) && (float_type(src->type) || !be->dequant_at_load);
	enum kern_dtype type = as_stored ? src->type : KERN_F32;
	size_t packed = kern_dtype_row_bytes(type, src->n_in);
	size_t pitch = (packed + MAT_ALIGN - 1) / MAT_ALIGN * MAT_ALIGN;
	if (src->n_out > SIZE_MAX / pitch)
		return SPECD_INVAL;
	void *dst;
	enum specd_status st = cuda_alloc(ctx, pitch * src->n_out, &dst);
	if (st != SPECD_OK)
		return st;
	if (type == src->type) {
		st = check(cudaMemcpy2DAsync(dst, pitch, src->data, src->row_bytes, rb, src->n_out,
					     cudaMemcpyHostToDevice, be->stream), "weight upload");
		if (st == SPECD_OK)
			st = check(cudaStreamSynchronize(be->stream), "weight upload sync");
	} else {
		st = upload_dequant(be, src, dst, pitch);
	}
	if (st != SPECD_OK) {
		cudaFree(dst);
		return st;
	}
	struct kern_mat m = {
		.type = type, .n_in = src->n_in, .n_out = src->n_out, .row_bytes = pitch, .data = dst,
	};
	*out = m;
	return SPECD_OK;
}

enum specd_status kern_cuda_dequant_host(enum kern_dtype t, const void *row, size_t n,
					 float *out)
{
	enum cuda_wtype wt;
	if (float_type(t) || !wtype_of(t, &wt))
		return SPECD_UNSUPPORTED;
	if (!row || !out || n % kern_dtype_block(t))
		return SPECD_INVAL;
	return cuda_dequant_row_host(wt, row, n, out) == 0 ? SPECD_OK : SPECD_UNSUPPORTED;
}

/* A matrix as the device kernels read it: a type they know, 16-byte rows. */
static bool device_mat(const struct kern_mat *w, struct cuda_wmat *out)
{
	if (!w || !w->data || w->n_in == 0 || !wtype_of(w->type, &out->type) ||
	    w->n_in % kern_dtype_block(w->type) ||
	    w->row_bytes < kern_dtype_row_bytes(w->type, w->n_in) || w->row_bytes % MAT_ALIGN ||
	    (uintptr_t)w->data % MAT_ALIGN)
		return false;
	out->n_in = w->n_in;
	out->n_out = w->n_out;
	out->row_bytes = w->row_bytes;
	out->data = w->data;
	return true;
}

static enum specd_status cuda_matmul(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				     size_t ldx, size_t rows, const struct kern_mat *w,
				     const float *bias)
{
	struct cuda_backend *be = backend_of(ctx);
	struct cuda_wmat dw;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !device_mat(w, &dw) || ldx < w->n_in || ldy < w->n_out)
		return SPECD_INVAL;
	return check(cuda_launch_matmul(be->stream, y, ldy, x, ldx, rows, &dw, bias,
					be->matmul_reference), "matmul");
}

static enum specd_status cuda_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
				       const struct kern_mat *table, const uint32_t *ids,
				       size_t rows)
{
	struct cuda_backend *be = backend_of(ctx);
	struct cuda_wmat dt;
	const void *dids;
	if (rows == 0)
		return SPECD_OK;
	if (!y || !ids || !device_mat(table, &dt) || ldy < table->n_in || rows > MAX_GRID_Y)
		return SPECD_INVAL;
	for (size_t r = 0; r < rows; r++) {
		if (ids[r] >= table->n_out)
			return SPECD_INVAL;
	}
	enum specd_status st = stage(be, ids, rows * sizeof(uint32_t), &dids);
	if (st != SPECD_OK)
		return st;
	return check(cuda_launch_get_rows(be->stream, y, ldy, &dt, dids, rows), "get_rows");
}

static enum specd_status cuda_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				      size_t ldx, size_t rows, size_t n, const float *w, float eps)
{
	struct cuda_backend *be = backend_of(ctx);
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !w || n == 0 || ldx < n || ldy < n || rows > MAX_GRID_Y)
		return SPECD_INVAL;
	return check(cuda_launch_rmsnorm(be->stream, y, ldy, x, ldx, rows, n, w, eps), "rmsnorm");
}

static enum specd_status cuda_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy, float *x,
					  size_t ldx, const float *d, size_t ldd, size_t rows,
					  size_t n, const float *w, float eps)
{
	struct cuda_backend *be = backend_of(ctx);
	if (rows == 0)
		return SPECD_OK;
	if (!y || !x || !d || !w || n == 0 || ldx < n || ldy < n || ldd < n ||
	    (y == d && ldy != ldd) || rows > MAX_GRID_Y)
		return SPECD_INVAL;
	return check(cuda_launch_add_rmsnorm(be->stream, y, ldy, x, ldx, d, ldd, rows, n, w, eps),
		     "add_rmsnorm");
}

static enum specd_status cuda_rope(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				   size_t n_heads, size_t head_dim, const uint32_t *pos,
				   float freq_base, enum kern_rope_layout layout)
{
	struct cuda_backend *be = backend_of(ctx);
	const void *dpos;
	if (rows == 0)
		return SPECD_OK;
	if (!x || !pos || head_dim == 0 || head_dim % 2 != 0 || ldx < n_heads * head_dim ||
	    !(freq_base > 0.0f) || (layout != KERN_ROPE_ADJACENT && layout != KERN_ROPE_HALVES) ||
	    rows > MAX_GRID_Y)
		return SPECD_INVAL;
	enum specd_status st = stage(be, pos, rows * sizeof(uint32_t), &dpos);
	if (st != SPECD_OK)
		return st;
	return check(cuda_launch_rope(be->stream, x, ldx, rows, n_heads, head_dim, dpos, freq_base,
				      layout == KERN_ROPE_HALVES), "rope");
}

/* Flattens each token's visible rows (kern.h struct kern_attn_mask) into the host
 * buffer: n_tokens cuda_attn_token records, then the tree rows they point at. Checks
 * the mask as the CPU backend does. *bytes is the size to stage. */
static enum specd_status attn_flatten(struct cuda_backend *be, const struct kern_attn *a,
				      size_t *bytes)
{
	const struct kern_attn_mask *m = &a->mask;
	size_t n = a->n_tokens;
	if (m->tree && (!m->row || m->tree_words * 64 < n))
		return SPECD_INVAL;
	size_t need = n * sizeof(struct cuda_attn_token) + (m->tree ? n * n : 0) * sizeof(uint32_t);
	if (need > be->attn_cap) {
		/* Grows to the largest batch seen; the forward's first call sizes it. */
		void *p = specd_malloc_array(need, 1);
		if (!p)
			return SPECD_NOMEM;
		specd_free(be->attn_host);
		be->attn_host = p;
		be->attn_cap = need;
	}
	struct cuda_attn_token *tok = be->attn_host;
	uint32_t *extra = (uint32_t *)(tok + n);
	uint32_t n_extra = 0;
	for (size_t t = 0; t < n; t++) {
		if (m->n_prefix[t] > a->kv.n_rows)
			return SPECD_INVAL;
		tok[t] = (struct cuda_attn_token){
			.slot = m->slot[t], .n_prefix = m->n_prefix[t], .off = n_extra, .n_extra = 0,
		};
		for (size_t u = 0; m->tree && u < n; u++) {
			if (!((m->tree[t * m->tree_words + u / 64] >> (u % 64)) & 1u))
				continue;
			if (m->slot[u] != m->slot[t] || m->row[u] >= a->kv.n_rows)
				return SPECD_INVAL;
			extra[n_extra++] = m->row[u];
			tok[t].n_extra++;
		}
		if (tok[t].n_prefix + tok[t].n_extra == 0) /* a softmax over nothing */
			return SPECD_INVAL;
	}
	*bytes = n * sizeof(struct cuda_attn_token) + n_extra * sizeof(uint32_t);
	return SPECD_OK;
}

static enum specd_status cuda_attention(struct kern_ctx *ctx, const struct kern_attn *a)
{
	struct cuda_backend *be = backend_of(ctx);
	if (!a)
		return SPECD_INVAL;
	if (a->n_tokens == 0)
		return SPECD_OK;
	const struct kern_attn_mask *m = &a->mask;
	if (!a->q || !a->out || !a->kv.k || !a->kv.v || !m->slot || !m->n_prefix ||
	    a->head_dim == 0 || a->head_dim > KERN_MAX_HEAD_DIM || a->n_heads == 0 ||
	    a->n_kv_heads == 0 || a->n_heads % a->n_kv_heads != 0 ||
	    a->ldq < a->n_heads * a->head_dim || a->ldo < a->n_heads * a->head_dim ||
	    a->kv.row_stride < a->n_kv_heads * a->head_dim)
		return SPECD_INVAL;
	size_t bytes;
	const void *dev;
	enum specd_status st = attn_flatten(be, a, &bytes);
	if (st == SPECD_OK)
		st = stage(be, be->attn_host, bytes, &dev);
	if (st != SPECD_OK)
		return st;
	const struct cuda_attn_token *tok = dev;
	struct cuda_attn_args args = {
		.n_tokens = a->n_tokens, .n_heads = a->n_heads, .n_kv_heads = a->n_kv_heads,
		.head_dim = a->head_dim, .scale = a->scale, .q = a->q, .ldq = a->ldq,
		.out = a->out, .ldo = a->ldo, .k = a->kv.k, .v = a->kv.v,
		.slot_stride = a->kv.slot_stride, .row_stride = a->kv.row_stride,
		.tok = tok, .extra = (const uint32_t *)(tok + a->n_tokens),
	};
	return check(cuda_launch_attention(be->stream, &args), "attention");
}

static enum specd_status cuda_silu_mul(struct kern_ctx *ctx, float *gate, const float *up,
				       size_t n)
{
	if (n == 0)
		return SPECD_OK;
	if (!gate || !up)
		return SPECD_INVAL;
	return check(cuda_launch_silu_mul(backend_of(ctx)->stream, gate, up, n), "silu_mul");
}

static enum specd_status cuda_add(struct kern_ctx *ctx, float *y, const float *x, size_t n)
{
	if (n == 0)
		return SPECD_OK;
	if (!y || !x)
		return SPECD_INVAL;
	return check(cuda_launch_add(backend_of(ctx)->stream, y, x, n), "add");
}

static enum specd_status cuda_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
				       const uint32_t *idx, const float *src, size_t ld_src,
				       size_t rows, size_t n)
{
	struct cuda_backend *be = backend_of(ctx);
	const void *didx;
	if (rows == 0 || n == 0)
		return SPECD_OK;
	if (!dst || !idx || !src || ld_dst < n || ld_src < n || rows > MAX_GRID_Y)
		return SPECD_INVAL;
	enum specd_status st = stage(be, idx, rows * sizeof(uint32_t), &didx);
	if (st != SPECD_OK)
		return st;
	return check(cuda_launch_set_rows(be->stream, dst, ld_dst, didx, src, ld_src, rows, n),
		     "set_rows");
}

static enum specd_status cuda_softmax(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				      size_t n)
{
	if (rows == 0)
		return SPECD_OK;
	if (!x || n == 0 || ldx < n || rows > MAX_GRID_Y)
		return SPECD_INVAL;
	return check(cuda_launch_softmax(backend_of(ctx)->stream, x, ldx, rows, n), "softmax");
}

static enum specd_status cuda_argmax(struct kern_ctx *ctx, uint32_t *out, const float *x,
				     size_t ldx, size_t rows, size_t n)
{
	struct cuda_backend *be = backend_of(ctx);
	uint32_t *dout;
	if (rows == 0)
		return SPECD_OK;
	if (!out || !x || n == 0 || n > INT32_MAX || ldx < n || rows > MAX_GRID_Y)
		return SPECD_INVAL; /* n: the kernel's 32-bit index must not wrap */
	size_t off;
	enum specd_status st = ring_take(be, rows * sizeof(uint32_t), &off);
	if (st != SPECD_OK)
		return st;
	dout = (uint32_t *)(void *)(be->stage_dev + off); /* the op's own output */
	st = check(cuda_launch_argmax(be->stream, dout, x, ldx, rows, n), "argmax");
	if (st == SPECD_OK)
		st = cuda_download(ctx, out, dout, rows * sizeof(uint32_t));
	return st;
}

/* The picks come back through one ring region: ids, vals, then lse. */
static enum specd_status cuda_topk(struct kern_ctx *ctx, const struct kern_topk_rows *t)
{
	struct cuda_backend *be = backend_of(ctx);
	if (!kern_topk_rows_ok(t) || t->rows > MAX_GRID_Y)
		return SPECD_INVAL;
	if (t->rows == 0)
		return SPECD_OK;
	size_t nk = t->rows * t->k, bytes = 2 * nk * sizeof(float) + t->rows * sizeof(float), off;
	enum specd_status st = ring_take(be, bytes, &off);
	if (st != SPECD_OK)
		return st;
	unsigned char *host = be->stage_host + off, *dev = be->stage_dev + off;
	int32_t *dids = (int32_t *)(void *)dev;
	float *dvals = (float *)(void *)(dev + nk * sizeof(float));
	float *dlse = t->lse ? (float *)(void *)(dev + 2 * nk * sizeof(float)) : NULL;
	st = check(cuda_launch_topk(be->stream, dids, dvals, dlse, t->x, t->ldx, t->rows, t->n,
				    t->k), "topk");
	if (st == SPECD_OK)
		st = transfer(ctx, host, dev, bytes, cudaMemcpyDeviceToHost, "topk download");
	if (st != SPECD_OK)
		return st;
	memcpy(t->ids, host, nk * sizeof(int32_t));
	if (t->vals)
		memcpy(t->vals, host + nk * sizeof(float), nk * sizeof(float));
	if (t->lse)
		memcpy(t->lse, host + 2 * nk * sizeof(float), t->rows * sizeof(float));
	return SPECD_OK;
}

/* One ring region holds the row arrays both ways: u and probe up, then the kernel's
 * tokens and probe probabilities down (the pinned half is read only after the copy,
 * and written out only once every row is known good). */
static enum specd_status cuda_sample(struct kern_ctx *ctx, const struct kern_sample_rows *s)
{
	struct cuda_backend *be = backend_of(ctx);
	if (s && s->rows == 0)
		return SPECD_OK; /* as the CPU: nothing to do, whatever the rest says */
	if (!kern_sample_rows_ok(s) || s->rows > MAX_GRID_Y || s->n >= (1u << 31))
		return SPECD_INVAL;
	const struct kern_sample_params *p = &s->params;
	bool greedy = kern_sample_is_greedy(p);
	size_t rb = s->rows * sizeof(uint32_t), off;
	enum specd_status st = ring_take(be, 4 * rb, &off);
	if (st != SPECD_OK)
		return st;
	unsigned char *host = be->stage_host + off, *dev = be->stage_dev + off;
	if (!greedy)
		memcpy(host, s->u, rb);
	if (s->probe)
		memcpy(host + rb, s->probe, rb);
	struct cuda_sample_args a = {
		.rows = s->rows, .n = s->n, .x = s->x, .ldx = s->ldx, .greedy = greedy,
		.inv_t = greedy ? 1.0f : 1.0f / p->temperature,
		.top_k = p->top_k > 0 && p->top_k < s->n ? p->top_k : (uint32_t)s->n,
		.top_p = p->top_p, .min_p = p->min_p,
		.u = (const float *)(void *)dev,
		.probe = s->probe ? (const uint32_t *)(void *)(dev + rb) : NULL,
		.exclude_probe = s->exclude_probe, .e = s->work,
		.out = (uint32_t *)(void *)(dev + 2 * rb),
		.probe_p = s->probe_p ? (float *)(void *)(dev + 3 * rb) : NULL,
	};
	st = check(cudaMemcpyAsync(dev, host, 2 * rb, cudaMemcpyHostToDevice, be->stream),
		   "sample upload");
	if (st == SPECD_OK)
		st = check(cuda_launch_sample(be->stream, &a), "sample");
	if (st == SPECD_OK)
		st = transfer(ctx, host + 2 * rb, dev + 2 * rb, 2 * rb, cudaMemcpyDeviceToHost,
			      "sample download");
	if (st != SPECD_OK)
		return st;
	const uint32_t *tok = (const uint32_t *)(void *)(host + 2 * rb);
	for (size_t r = 0; r < s->rows; r++)
		if (tok[r] >= s->n)
			return SPECD_INVAL; /* a row with nothing above -inf */
	memcpy(s->out, tok, rb);
	if (s->probe_p)
		memcpy(s->probe_p, host + 3 * rb, rb);
	return SPECD_OK;
}

static enum specd_status cuda_copy(struct kern_ctx *ctx, void *dst, const void *src,
				   size_t bytes)
{
	if (bytes == 0)
		return SPECD_OK;
	if (!dst || !src)
		return SPECD_INVAL;
	return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
				     backend_of(ctx)->stream), "copy");
}

static enum specd_status cuda_sync(struct kern_ctx *ctx)
{
	return check(cudaStreamSynchronize(backend_of(ctx)->stream), "sync");
}

/* The profiler's timestamps: events on the stream, made as first needed and kept. */
static enum specd_status cuda_mark(struct kern_ctx *ctx, uint32_t *id)
{
	struct cuda_backend *be = backend_of(ctx);
	if (!be->marks && !(be->marks = specd_calloc(KERN_MARKS, sizeof(cudaEvent_t))))
		return SPECD_NOMEM;
	if (be->n_marks == KERN_MARKS)
		return SPECD_NOMEM;
	if (be->n_marks == be->made_marks) {
		enum specd_status st = check(cudaEventCreate(&be->marks[be->made_marks]),
					     "cudaEventCreate");
		if (st != SPECD_OK)
			return st;
		be->made_marks++;
	}
	enum specd_status st = check(cudaEventRecord(be->marks[be->n_marks], be->stream),
				     "cudaEventRecord");
	if (st == SPECD_OK)
		*id = be->n_marks++;
	return st;
}

static enum specd_status cuda_mark_time(struct kern_ctx *ctx, uint32_t id, double *seconds)
{
	struct cuda_backend *be = backend_of(ctx);
	float ms = 0;
	if (id >= be->n_marks)
		return SPECD_INVAL;
	enum specd_status st = check(cudaEventSynchronize(be->marks[id]), "cudaEventSynchronize");
	if (st == SPECD_OK)
		st = check(cudaEventElapsedTime(&ms, be->marks[0], be->marks[id]),
			   "cudaEventElapsedTime");
	if (st == SPECD_OK)
		*seconds = ms * 1e-3;
	return st;
}

static void cuda_mark_clear(struct kern_ctx *ctx)
{
	backend_of(ctx)->n_marks = 0;
}

static const struct kern_ops cuda_ops = {
	.name = "cuda",
	.host_memory = false,
	.destroy = cuda_destroy,
	.alloc = cuda_alloc,
	.free = cuda_free_mem,
	.upload = cuda_upload,
	.download = cuda_download,
	.upload_mat = cuda_upload_mat,
	.matmul = cuda_matmul,
	.get_rows = cuda_get_rows,
	.rmsnorm = cuda_rmsnorm,
	.add_rmsnorm = cuda_add_rmsnorm,
	.rope = cuda_rope,
	.attention = cuda_attention,
	.silu_mul = cuda_silu_mul,
	.add = cuda_add,
	.set_rows = cuda_set_rows,
	.softmax = cuda_softmax,
	.argmax = cuda_argmax,
	.sample = cuda_sample,
	.topk = cuda_topk,
	.copy = cuda_copy,
	.sync = cuda_sync,
	.mark = cuda_mark,
	.mark_time = cuda_mark_time,
	.mark_clear = cuda_mark_clear,
};

enum specd_status kern_cuda_create(const struct kern_cuda_config *cfg, struct kern_ctx **out,
				   struct specd_error *err)
{
	char why[160];
	int count = 0;
	int device = cfg ? cfg->device : 0;
	enum specd_status st = kern_cuda_device_count(&count, why, sizeof(why));
	if (st != SPECD_OK)
		return specd_errorf(err, st, "cuda: %s", why);
	if (count == 0)
		return specd_errorf(err, SPECD_UNSUPPORTED, "no CUDA device: %s", why);
	if (device < 0 || device >= count)
		return specd_errorf(err, SPECD_INVAL, "cuda: device %d of %d", device, count);
	struct cuda_backend *be = specd_calloc(1, sizeof(*be));
	if (!be)
		return specd_errorf(err, SPECD_NOMEM, "cuda: out of memory");
	be->base.ops = &cuda_ops;
	be->device = device;
	be->stage_cap = cfg && cfg->stage_bytes ? cfg->stage_bytes : STAGE_DEFAULT;
	be->matmul_reference = cfg && cfg->matmul_reference;
	be->dequant_at_load = cfg && cfg->dequant_at_load;
	const char *what = "cudaSetDevice";
	cudaError_t e = cudaSetDevice(device);
	if (e == cudaSuccess) {
		what = "cudaStreamCreate";
		e = cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking);
	}
	if (e == cudaSuccess) {
		what = "cudaMalloc (stage)";
		e = cudaMalloc((void **)&be->stage_dev, be->stage_cap);
	}
	if (e == cudaSuccess) {
		what = "cudaMallocHost (stage)";
		e = cudaMallocHost((void **)&be->stage_host, be->stage_cap);
	}
	if (e != cudaSuccess) {
		specd_errorf(err, SPECD_CUDA, "cuda: device %d: %s: %s", device, what,
			     cudaGetErrorString(e));
		cudaGetLastError();
		cuda_destroy(&be->base);
		return SPECD_CUDA;
	}
	struct kern_cuda_device info;
	if (kern_cuda_device_info(device, &info) == SPECD_OK)
		LOG_INFO("cuda backend: device %d, %s (sm_%d%d), %zu MiB free of %zu", device,
			 info.name, info.cc_major, info.cc_minor, info.free_bytes >> 20,
			 info.total_bytes >> 20);
	*out = &be->base;
	return SPECD_OK;
}
