/* The backend interface: every computation of the forward pass goes through one
 * struct kern_ops table (DESIGN.md §5). The CPU backend (kernels/cpu/) is the
 * reference every other backend is tested against; model/ calls only the kern_*
 * wrappers below and never knows which backend runs.
 *
 * Batch invariance (the property speculative decoding's exactness rests on): every
 * op computes each output row with one fixed reduction order that does not depend on
 * how many rows are computed together, so row i of an n-row call is bitwise equal to
 * the same row computed alone. A backend never splits a reduction dimension and never
 * picks an algorithm by row count.
 *
 * Memory: all float and weight pointers are in the backend's address space (host
 * memory for the CPU backend, device memory for CUDA), allocated with kern_alloc and
 * filled with kern_upload / kern_upload_mat; kern_download brings results back. The
 * integer arrays an op reads or writes (get_rows' ids, rope's positions, attention's
 * mask, argmax's and sample's out) and sample's per-row floats (u, probe_p) are host
 * memory in every backend: a device backend uploads and downloads them itself. A
 * backend whose ops_host_memory is set computes on host memory, so callers may use a
 * file's mapping in place and pass their own buffers.
 * Activations are row-major; `ld*` arguments are the stride between rows, in
 * elements. Ops never allocate: a backend reserves what it needs when it is created,
 * and what depends on the shapes a caller will use with kern_reserve (the CPU matmul's
 * buffer for its quantised activations under KERN_ACT_Q8); a call larger than was
 * reserved grows that buffer (once per new size).
 *
 * Errors: every op returns SPECD_OK or SPECD_INVAL for arguments it cannot run with
 * (a head size above KERN_MAX_HEAD_DIM, a row shorter than its stride, a visible row
 * past the cache), and that CPU matmul SPECD_NOMEM when its buffer cannot grow; it
 * writes no output then. Threads: one kern_ctx is used by one
 * thread at a time (the compute thread); distinct contexts are independent. */
#ifndef SPECD_KERNELS_KERN_H
#define SPECD_KERNELS_KERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/status.h"
#include "kernels/dtype.h"

#define KERN_MAX_HEAD_DIM 256 /* largest attention head size the ops accept */

/* A weight matrix of n_out rows, each n_in elements of `type` (GGUF's layout: ne[0] =
 * n_in). row_bytes may exceed the packed row size, so a shard can address a block
 * of rows of a bigger matrix in place. n_in must be a multiple of the type's block. */
struct kern_mat {
	enum kern_dtype type;
	size_t n_in;
	size_t n_out;
	size_t row_bytes;
	const void *data;
};

/* A kern_mat for a packed matrix (row_bytes = kern_dtype_row_bytes(type, n_in)). */
static inline struct kern_mat kern_mat_packed(enum kern_dtype type, size_t n_in, size_t n_out,
					      const void *data)
{
	struct kern_mat m = {
		.type = type,
		.n_in = n_in,
		.n_out = n_out,
		.row_bytes = kern_dtype_row_bytes(type, n_in),
		.data = data,
	};
	return m;
}

/* The bytes src's rows take packed (row_bytes = kern_dtype_row_bytes(type, n_in)), or
 * 0 when src cannot be packed: no data or rows, rows shorter than their type needs, or
 * a size past SIZE_MAX. What a backend's upload_mat checks before kern_mat_pack. */
static inline size_t kern_mat_packed_size(const struct kern_mat *src)
{
	size_t rb = kern_dtype_row_bytes(src->type, src->n_in);
	if (!src->data || rb == 0 || src->row_bytes < rb || src->n_out == 0 ||
	    src->n_out > SIZE_MAX / rb)
		return 0;
	return rb * src->n_out;
}

/* src's rows into dst (kern_mat_packed_size(src) bytes of host memory), packed: the
 * data of kern_mat_packed(src->type, src->n_in, src->n_out, dst). */
static inline void kern_mat_pack(const struct kern_mat *src, void *dst)
{
	size_t rb = kern_dtype_row_bytes(src->type, src->n_in);
	for (size_t o = 0; o < src->n_out; o++)
		memcpy((unsigned char *)dst + o * rb,
		       (const unsigned char *)src->data + o * src->row_bytes, rb);
}

/* The two RoPE layouts of model/arch.h, kept here so kernels need not see model/. */
enum kern_rope_layout {
	KERN_ROPE_ADJACENT, /* rotate (x[2i], x[2i+1]) */
	KERN_ROPE_HALVES,   /* rotate (x[i], x[i + d/2]) */
};

/* One layer's K or V cache: float rows of n_kv_heads * head_dim, grouped in slots
 * (one per sequence). Row r of slot s starts at base + s * slot_stride + r * row_stride. */
struct kern_kv_view {
	const float *k;
	const float *v;
	size_t slot_stride; /* floats between slots */
	size_t row_stride;  /* floats between rows of one slot */
	size_t n_rows;      /* rows per slot; no visible row may reach it */
};

/* Which cache rows each token of a batch attends to. Token t sees, in this order,
 * rows [0, n_prefix[t]) of its slot, then the rows row[u] of the batch tokens u whose
 * bit u is set in its tree mask, in increasing u. Because the order of a token's
 * visible rows fixes its reduction order, a token sees bitwise the same result
 * whether its earlier rows came from a causal batch or a tree.
 *   causal: n_prefix[t] = pos[t] + 1 and tree = NULL (its own row is the last seen);
 *   tree:   n_prefix[t] = the slot's committed length and tree[t] = the bits of its
 *           ancestors in the batch and of itself (so every u with a bit is in t's slot
 *           and row[u] >= n_prefix[t]). */
struct kern_attn_mask {
	const uint32_t *slot;     /* (n_tokens) the KV slot of each token */
	const uint32_t *n_prefix; /* (n_tokens) */
	const uint32_t *row;      /* (n_tokens) cache row of token u's K/V; NULL allowed without tree */
	const uint64_t *tree;     /* (n_tokens, tree_words) bit u of word u/64, or NULL */
	size_t tree_words;        /* >= ceil(n_tokens / 64) when tree is set */
};

/* Attention of n_tokens queries against a layer's cache (grouped-query: query head h
 * reads KV head h / (n_heads / n_kv_heads)). q and out rows hold n_heads * head_dim
 * floats; each head's output is softmax(q . k * scale) weighted sum of v over the
 * visible rows. The K/V of the batch's own tokens must already be in the cache. */
struct kern_attn {
	size_t n_tokens;
	size_t n_heads;
	size_t n_kv_heads; /* divides n_heads */
	size_t head_dim;   /* <= KERN_MAX_HEAD_DIM */
	float scale;       /* usually 1 / sqrt(head_dim) */
	const float *q;    /* (n_tokens, ldq) */
	size_t ldq;
	float *out;        /* (n_tokens, ldo); must not alias q or the cache */
	size_t ldo;
	struct kern_kv_view kv;
	struct kern_attn_mask mask;
};

/* The sampler's transform (model/sampler.h, where it is described; its struct
 * sampler_params without the seed): temperature, then top-k, then top-p, then min-p,
 * "most likely" ordering by logit descending, then id ascending. */
struct kern_sample_params {
	float temperature; /* 0: greedy (so is top_k 1); otherwise > 0 and finite */
	uint32_t top_k;    /* 0: off (values >= n are off too) */
	float top_p;       /* 1: off; otherwise in (0, 1) */
	float min_p;       /* 0: off; otherwise in (0, 1]: keep p >= min_p * the largest p */
};

/* One token per row of logits already in the backend's memory, drawn with a uniform u
 * the caller brings (the host sampler's PRNG stays the only one): row r gives exactly
 * what model/sampler.c's sampler_sample gives for its logits when its draw is u[r]
 * (greedy: the argmax, lowest id on ties, no draw). A device backend computes the
 * transform in its own order of float sums, so a token may differ from the CPU's only
 * where u[r] lies within rounding of a boundary of the cumulative distribution (or
 * the top-p mass lands within rounding of the cut).
 *
 * The verifier's numbers come with it: with probe, probe_p[r] is the transformed
 * probability of token probe[r] (speculative sampling's p(d) for a drafted d), and
 * exclude_probe draws from that distribution with probe[r]'s mass removed (its
 * residual norm(max(0, p - q)) for a one-hot q; when nothing is left, from p itself,
 * as drafters/verify.c does). A probe >= n means none for that row. */
struct kern_sample_rows {
	size_t rows;
	size_t n;                 /* logits per row, 1 .. UINT32_MAX - 1 */
	const float *x;           /* (rows, ldx) logits, backend memory; not written */
	size_t ldx;
	struct kern_sample_params params;
	const float *u;           /* (rows) host, each in [0, 1); may be NULL when greedy */
	const uint32_t *probe;    /* (rows) host, or NULL */
	bool exclude_probe;
	void *work;               /* kern_sample_work_bytes(rows, n) of backend memory,
				   * overlapping nothing else; may be NULL when greedy */
	uint32_t *out;            /* (rows) host: the tokens */
	float *probe_p;           /* (rows) host, or NULL (needs probe) */
};

/* The k best ids of each row of logits already in the backend's memory: how the tree
 * drafters (Medusa, EAGLE) pick each node's candidates without the rows leaving a
 * device. Best first, the lower id first among equals, NaN never taken (the
 * reference is kernels/sample.h kern_top_n); -1 (and a val of -inf) past the row's
 * non-NaN values. ids and vals are exact on every backend; lse is
 * log(sum(exp(row))) as kern_log_norm computes it, a device's within rounding of it
 * (its own order of sums), NaN when the row holds a NaN or a +inf or nothing above
 * -inf (the max subtracted from itself). */
#define KERN_TOPK_MAX 16
struct kern_topk_rows {
	size_t rows;
	size_t n;       /* logits per row, 1 .. INT32_MAX */
	const float *x; /* (rows, ldx) logits, backend memory; not written */
	size_t ldx;
	uint32_t k;     /* 1 .. KERN_TOPK_MAX */
	int32_t *ids;   /* (rows, k) host */
	float *vals;    /* (rows, k) host, or NULL: the logits of those ids */
	float *lse;     /* (rows) host, or NULL */
};

/* Bytes of scratch kern_sample needs, in every backend (SIZE_MAX if it overflows). */
static inline size_t kern_sample_work_bytes(size_t rows, size_t n)
{
	size_t r = rows > 4 ? rows : 4;
	return n > SIZE_MAX / sizeof(float) / r ? SIZE_MAX : r * n * sizeof(float);
}

struct kern_ctx;

/* The table a backend fills with designated initializers. Destination first, then
 * sources; `rows` counts independent rows. */
struct kern_ops {
	const char *name;
	/* Backend pointers are ordinary host pointers (the CPU): the memory ops below are
	 * then malloc and memcpy, and callers may skip them. */
	bool host_memory;
	void (*destroy)(struct kern_ctx *ctx);
	/* Memory in the backend's address space, zeroed, aligned to 64 bytes. Errors:
	 * SPECD_NOMEM (SPECD_CUDA for a device error). *out written only on success. */
	enum specd_status (*alloc)(struct kern_ctx *ctx, size_t bytes, void **out);
	/* Frees what alloc returned (after the ops using it have finished); NULL is a no-op. */
	void (*free)(struct kern_ctx *ctx, void *p);
	/* Host -> backend; src may be reused as soon as it returns. */
	enum specd_status (*upload)(struct kern_ctx *ctx, void *dst, const void *src,
				    size_t bytes);
	/* Backend -> host, after every op issued so far: dst holds the data on return. */
	enum specd_status (*download)(struct kern_ctx *ctx, void *dst, const void *src,
				      size_t bytes);
	/* The backend's own copy of a weight matrix in host memory, in a form its matmul
	 * and get_rows take: out->type may differ from src->type (CUDA dequantises a type
	 * its kernels do not read, or every quantised one with dequant_at_load, to f32,
	 * exactly the CPU's values) and out->row_bytes from src's. Free out->data with free. Errors: SPECD_INVAL (a
	 * matrix the backend cannot hold), those of alloc. */
	enum specd_status (*upload_mat)(struct kern_ctx *ctx, const struct kern_mat *src,
					struct kern_mat *out);
	/* y[r, o] = sum_i x[r, i] * W[o, i] (+ bias[o] when bias is not NULL), for r < rows,
	 * o < w->n_out, i < w->n_in. y must not alias x. */
	enum specd_status (*matmul)(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				    size_t ldx, size_t rows, const struct kern_mat *w,
				    const float *bias);
	/* y[r, :] = row ids[r] of `table` as floats (embedding lookup); ids < n_out. */
	enum specd_status (*get_rows)(struct kern_ctx *ctx, float *y, size_t ldy,
				      const struct kern_mat *table, const uint32_t *ids,
				      size_t rows);
	/* y[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * w[i]; y may equal x. */
	enum specd_status (*rmsnorm)(struct kern_ctx *ctx, float *y, size_t ldy, const float *x,
				     size_t ldx, size_t rows, size_t n, const float *w, float eps);
	/* A residual add and the next norm in one op: x[r, i] += d[r, i], then y[r] the
	 * rmsnorm of the new x[r] (as rmsnorm computes it): bitwise add then rmsnorm. y
	 * may equal d (the sublayer's output, used up by the add) when ldy == ldd, so that
	 * each element is read before it is written on every backend (SPECD_INVAL
	 * otherwise); x may alias neither. */
	enum specd_status (*add_rmsnorm)(struct kern_ctx *ctx, float *y, size_t ldy, float *x,
					 size_t ldx, const float *d, size_t ldd, size_t rows,
					 size_t n, const float *w, float eps);
	/* In place: rotates each of the n_heads heads (head_dim floats, contiguous) of row
	 * r by angles pos[r] * freq_base^(-2j / head_dim), pairs chosen by `layout`. */
	enum specd_status (*rope)(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				  size_t n_heads, size_t head_dim, const uint32_t *pos,
				  float freq_base, enum kern_rope_layout layout);
	enum specd_status (*attention)(struct kern_ctx *ctx, const struct kern_attn *a);
	/* gate[i] = silu(gate[i]) * up[i] for i < n (SwiGLU). */
	enum specd_status (*silu_mul)(struct kern_ctx *ctx, float *gate, const float *up,
				      size_t n);
	/* y[i] += x[i] for i < n (the residual). */
	enum specd_status (*add)(struct kern_ctx *ctx, float *y, const float *x, size_t n);
	/* In place, each row of n floats becomes its softmax. */
	enum specd_status (*softmax)(struct kern_ctx *ctx, float *x, size_t ldx, size_t rows,
				     size_t n);
	/* out[r] (host memory) = index of the largest of row r's n floats (the lowest index
	 * on ties; NaN never wins). n >= 1. Returns once out is written. Errors:
	 * SPECD_INVAL for bad arguments (CUDA also n >= 2^31 or more than 65535 rows). */
	enum specd_status (*argmax)(struct kern_ctx *ctx, uint32_t *out, const float *x,
				    size_t ldx, size_t rows, size_t n);
	/* Draws one token per row (struct kern_sample_rows). Returns once out (and
	 * probe_p) are written. Errors: SPECD_INVAL for bad arguments (parameters out of
	 * range, a u outside [0, 1), missing work; CUDA also n >= 2^31 or more than
	 * 65535 rows) or a row with no logit above -inf (what sampler_sample refuses);
	 * nothing is written then. */
	enum specd_status (*sample)(struct kern_ctx *ctx, const struct kern_sample_rows *s);
	/* The k best ids of each row (struct kern_topk_rows). Returns once ids, vals and
	 * lse are written. Errors: SPECD_INVAL for bad arguments (CUDA also more than
	 * 65535 rows); nothing is written then. */
	enum specd_status (*topk)(struct kern_ctx *ctx, const struct kern_topk_rows *t);
	/* Scatter: row r of src (n floats; rows ld_src apart) becomes row idx[r] of dst
	 * (rows ld_dst apart), for r < rows: one call writes a batch's keys (or values)
	 * into a layer's cache, wherever each token's slot and row are. idx is host
	 * memory; its rows must be distinct, and src must not overlap dst. */
	enum specd_status (*set_rows)(struct kern_ctx *ctx, float *dst, size_t ld_dst,
				      const uint32_t *idx, const float *src, size_t ld_src,
				      size_t rows, size_t n);
	/* Copy within the backend's memory (memmove on the CPU; the CUDA backend needs
	 * dst and src not to overlap). */
	enum specd_status (*copy)(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
	/* Waits until every op issued so far has finished (a no-op on the CPU). */
	enum specd_status (*sync)(struct kern_ctx *ctx);
	/* Optional (NULL: nothing to set aside): reserves what ops on up to `rows` rows of
	 * up to `n_in` values need beyond what the backend holds from create, so that
	 * they allocate nothing (the CPU matmul's quantised activations under
	 * KERN_ACT_Q8). Only grows. Errors: SPECD_NOMEM. */
	enum specd_status (*reserve)(struct kern_ctx *ctx, size_t rows, size_t n_in);
	/* Optional, for the op profiler (kern_prof_create); NULL in a backend whose ops
	 * are done when they return, which the host clock then times. mark takes the
	 * next of KERN_MARKS timestamps on the backend's own timeline, the moment every
	 * op issued before it has finished (CUDA: an event on the stream), numbered from
	 * 0 since the last mark_clear; SPECD_NOMEM when all are taken. mark_time waits
	 * for mark id and gives its seconds after mark 0. mark_clear frees every mark. */
	enum specd_status (*mark)(struct kern_ctx *ctx, uint32_t *id);
	enum specd_status (*mark_time)(struct kern_ctx *ctx, uint32_t id, double *seconds);
	void (*mark_clear)(struct kern_ctx *ctx);
};

/* Timestamps a backend with mark holds between two mark_clear calls. */
#define KERN_MARKS 4096u

/* The common head of every backend object; a backend's own state follows it. */
struct kern_ctx {
	const struct kern_ops *ops;
};

/* The CPU backend. Its matmul and attention run on a pool of n_threads threads made
 * at create (the calling thread is one of them; the others sleep between ops). Threads
 * split a matmul's output features and attention's (token, head) pairs, never a
 * reduction, so results do not depend on n_threads.
 *
 * Instruction sets: the inner loops come in scalar (the reference), AVX2+FMA+F16C and
 * AVX-512 versions, chosen at create as the best the CPU has, capped by SPECD_ISA and
 * by `isa`. Batch invariance holds bitwise within one ISA: a row's result is the same
 * whatever the number of rows and threads it is computed with. With f32 activations
 * (below) results differ between ISAs (each sums in its own fixed order), by float
 * rounding only: weights are dequantised to exactly the reference's values. With 8-bit
 * activations every ISA gives the same bits (NaN aside, below). Two processes, or two
 * backends, agree bitwise when they use the same ISA and activations. */
/* How a CPU matmul on quantised weights (Q8_0, Q4_x, Q5_x, Q4_K, Q5_K, Q6_K) reads its
 * activations; float weights (f32, f16, bf16) always take them as f32.
 *   KERN_ACT_F32: as f32, against weights dequantised to exactly the reference's
 *     floats: results equal the reference up to float rounding (the default).
 *   KERN_ACT_Q8: each row's activations rounded to 8 bits, to the nearest multiple of
 *     m / 127 where m is the largest magnitude of their span (32 values for blocks of
 *     32, as llama.cpp's Q8_0; 256 for the K-quants, as its Q8_K), so each moves by at
 *     most m / 254 (while m >= about 1.5e-36, where m / 127 is still a normal float);
 *     then multiplied with the weights' integers in integer arithmetic and scaled once
 *     per block: faster decoding (docs/performance.md), logits closer to the float64
 *     reference than llama.cpp's on the models tested (test_real_models.c). Every ISA
 *     computes the same integers and the same float operations in the same order, so
 *     scalar, AVX2 and AVX-512 agree bitwise, and batch invariance holds as above (a
 *     NaN result only up to its sign and payload, which x86 takes from whichever NaN
 *     operand comes first). Rounding is not continuous: where two setups feed a matmul
 *     inputs that differ by float rounding (T = 1 vs T = 2 shards), now and then an
 *     activation rounds to the next grid step and that row's logits move by about
 *     1e-2, where f32 keeps them within about 1e-6 (tests/parallel/test_tp_mpi.c); and
 *     where a shard's slice of a row ends inside a span (its heads end inside a block
 *     of the O projection, which it then reads with zeros for the other shard's
 *     columns), its span has its own scale and every row is off by about the
 *     rounding's size. */
enum kern_act {
	KERN_ACT_F32 = 0,
	KERN_ACT_Q8,
};

/* "f32", "q8"; NULL for a value out of range. */
const char *kern_act_name(enum kern_act act);
/* The value named name ("f32", "q8"). Errors: SPECD_INVAL (another name). */
enum specd_status kern_act_parse(const char *name, enum kern_act *out);

struct kern_cpu_config {
	unsigned n_threads; /* 0 or 1: the calling thread only */
	/* "scalar", "avx2" or "avx512": use no ISA above this one; NULL: no cap. */
	const char *isa;
	enum kern_act act; /* activations of quantised matmuls; 0: KERN_ACT_F32 */
};

/* Creates the CPU backend. cfg may be NULL (defaults). Errors: SPECD_NOMEM,
 * SPECD_INVAL (an unknown isa name or act), SPECD_INTERNAL (a thread could not be started).
 * *out is written only on success; free it with kern_destroy. */
enum specd_status kern_cpu_create(const struct kern_cpu_config *cfg, struct kern_ctx **out);

/* The instruction set a CPU backend computes with ("scalar", "avx2", "avx512"), or
 * NULL when ctx is another kind of backend. */
const char *kern_cpu_isa_of(const struct kern_ctx *ctx);
/* How a CPU backend's quantised matmuls read activations ("f32", "q8"), or NULL when
 * ctx is another kind of backend. */
const char *kern_cpu_act_of(const struct kern_ctx *ctx);

/* The CUDA backend (kernels/cuda/): one device, one stream, ops issued
 * asynchronously on it (kern_sync and kern_download wait). Matmul is the backend's
 * own kernel, not cuBLAS: each warp owns a few output features and reads their weight
 * rows once for up to 16 rows of x (decode and verification are bound by that read);
 * each lane sums a fixed stride of the row in f32 and a fixed shuffle tree combines
 * the lanes, so an element's reduction order depends only on n_in (batch-invariant,
 * no split-K). Weights keep their file's type on the device: f32, f16, bf16, or
 * quantised blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) that the matmul
 * dequantises in registers to exactly kern_dequant_row's values, so its results are
 * bitwise those over the matrix dequantised to f32 (dequant_at_load). Results
 * agree with the CPU backend within float rounding (different summation orders), and
 * bitwise with themselves whatever the row count.
 *
 * Built only with SPECD_CUDA; elsewhere kern_cuda_create returns SPECD_UNSUPPORTED. */
struct kern_cuda_config {
	int device; /* CUDA device index */
	/* Bytes reserved for the host integer arrays ops upload (positions, masks, ids)
	 * between two syncs; 0: 8 MiB. A batch needing more fails with SPECD_INVAL. */
	size_t stage_bytes;
	/* true: the earlier matmul kernel (one warp per output feature, 8 rows of x per
	 * pass), bitwise the same results and slower; for before/after comparisons
	 * (specd-gpu-check). */
	bool matmul_reference;
	/* true: quantised matrices are dequantised to f32 by kern_upload_mat (4-8x the
	 * memory and the bytes each matmul reads; the same results, bitwise), for
	 * before/after comparisons of reading the blocks as stored. */
	bool dequant_at_load;
};

/* Creates the CUDA backend on cfg->device (cfg may be NULL: device 0). Errors:
 * SPECD_UNSUPPORTED (built without CUDA, or no device: the message says which, with
 * the runtime's words), SPECD_INVAL (a device index out of range), SPECD_CUDA,
 * SPECD_NOMEM; err (may be NULL) says why. *out is written only on success; free it
 * with kern_destroy. Compute thread: the backend binds the device to that thread. */
enum specd_status kern_cuda_create(const struct kern_cuda_config *cfg, struct kern_ctx **out,
				   struct specd_error *err);

/* The CUDA kernels' dequantiser (kernels/cuda/cuda_dequant.cuh) compiled for the host:
 * the n weights of one row of quantised type t into out, for testing the device's
 * reading of blocks against kern_dequant_row without a GPU. Errors: SPECD_UNSUPPORTED
 * (built without CUDA, or a type the kernels do not read as stored), SPECD_INVAL (n
 * not a whole number of blocks). Any thread. */
enum specd_status kern_cuda_dequant_host(enum kern_dtype t, const void *row, size_t n,
					 float *out);

/* The emulated device backend (kernels/emu/), for testing the device paths of model/
 * (weights uploaded at load, the KV cache and activations in backend memory, logits
 * downloaded) on machines without a GPU. Its memory behaves as a device's:
 * ops_host_memory is false, and the pointers kern_alloc hands out lie in a window of
 * addresses the host cannot read or write, so host code that dereferences one faults
 * at once. Every op checks each backend pointer it is given against the live
 * allocations (a pointer outside them, or a freed one, or bytes running past the end
 * of the block where the op's extent is known, fail the op with SPECD_INVAL and a log
 * line naming the op and the argument; nothing is written then), then computes with
 * an inner CPU backend on the bytes behind the window. Results are therefore bitwise
 * those of a CPU backend created with the same cpu config; upload_mat keeps the
 * matrix's type, as the CPU does. Its marks (kern_ops.mark) are the host clock, its
 * ops having finished when they return, for testing the profiler's device path. Freeing a pointer that starts no live block logs
 * and does nothing; freed memory reads as zero when reallocated and its pages go
 * back to the system. */
struct kern_emu_config {
	struct kern_cpu_config cpu; /* the CPU backend that computes */
	size_t window_bytes;        /* device address space; 0: 16 GiB */
};

/* Creates the emulated backend (cfg may be NULL: the CPU's defaults and a 16 GiB
 * window, reserved address space only). Errors: SPECD_NOMEM, SPECD_INVAL (an unknown
 * cpu.isa), SPECD_INTERNAL (the window cannot be mapped, or a thread could not be
 * started). Allocations beyond the window fail with SPECD_NOMEM. *out is written only
 * on success; free it with kern_destroy. Threads: as the CPU backend's. */
enum specd_status kern_emu_create(const struct kern_emu_config *cfg, struct kern_ctx **out);

/* What an emulated backend has done since it was created, for tests of what a device
 * path costs: ops a GPU would launch a kernel for (every compute op and copy, even
 * one with nothing to do) and bytes downloaded to the host. Zeroes for any other
 * backend. */
struct kern_emu_stats {
	uint64_t launches;
	uint64_t downloaded;
};
struct kern_emu_stats kern_emu_stats(const struct kern_ctx *ctx);

/* The op profiler: where a forward's time goes, op by op, on any backend. */
enum kern_op {
	KERN_OP_UPLOAD, KERN_OP_DOWNLOAD, KERN_OP_UPLOAD_MAT, KERN_OP_MATMUL, KERN_OP_GET_ROWS,
	KERN_OP_RMSNORM, KERN_OP_ADD_RMSNORM, KERN_OP_ROPE, KERN_OP_ATTENTION, KERN_OP_SILU_MUL,
	KERN_OP_ADD, KERN_OP_SOFTMAX, KERN_OP_ARGMAX, KERN_OP_SAMPLE, KERN_OP_TOPK,
	KERN_OP_SET_ROWS, KERN_OP_COPY, KERN_OP_SYNC,
	KERN_OP_COUNT
};

/* "matmul", "add_rmsnorm", ...: the kern_ops member's name; "?" out of range. */
const char *kern_op_name(enum kern_op op);

/* What the ops called while profiling was on took, in seconds. */
struct kern_profile {
	uint64_t calls[KERN_OP_COUNT];
	/* On the backend's timeline: from the moment the work issued before the call had
	 * finished to the moment the call's own had. On a backend without marks, the
	 * host's time in the call. */
	double busy[KERN_OP_COUNT];
	/* On the calling thread: the time the call took to return (on CUDA, what issuing
	 * the kernels cost the host, unless the op waits; timing included). */
	double host[KERN_OP_COUNT];
	/* The backend's timeline from the first call's start to the last call's end: span
	 * minus the sum of busy is when the backend waited for the host (kernel launches,
	 * the model's own host code, the host waiting on a download). The waits the
	 * profiler makes itself to read back full marks are left out. */
	double span;
};

/* Wraps `inner`, taking it over: a backend with inner's name, memory and results that
 * forwards every op to it and, between kern_prof_start and kern_prof_stop, times each
 * call both ways (struct kern_profile). Off, it costs a branch an op. Backend-specific
 * queries (kern_cpu_isa_of, kern_emu_stats) see the wrapper, not inner: ask inner.
 * Errors: SPECD_NOMEM (inner is then destroyed). kern_destroy frees both. Threads: as
 * inner's. */
enum specd_status kern_prof_create(struct kern_ctx *inner, struct kern_ctx **out);
/* Zeroes the profile and starts timing. SPECD_INVAL when ctx is not a profiler. */
enum specd_status kern_prof_start(struct kern_ctx *ctx);
/* Waits for the ops issued so far and writes the profile since kern_prof_start
 * (zeroes before it); timing goes on. Errors: SPECD_INVAL (not a profiler), those of
 * the inner backend's marks; *out is then the profile without the unread calls. */
enum specd_status kern_prof_read(struct kern_ctx *ctx, struct kern_profile *out);
/* Stops timing (the profile stays readable). A no-op on any other backend. */
void kern_prof_stop(struct kern_ctx *ctx);
/* Prints p as lines "profile WHAT: ..." to `to`: a step's span on the backend, the ops'
 * busy time and the idle rest, then per op its calls, busy time and share, and host
 * time a call; `steps` is how many steps p covers (per-step figures). */
void kern_prof_print(FILE *to, const char *what, const struct kern_profile *p,
		     uint32_t steps);

/* Frees a backend of any kind; NULL is a no-op. */
static inline void kern_destroy(struct kern_ctx *ctx)
{
	if (ctx)
		ctx->ops->destroy(ctx);
}

static inline const char *kern_name(const struct kern_ctx *ctx)
{
	return ctx->ops->name;
}

static inline bool kern_host_memory(const struct kern_ctx *ctx)
{
	return ctx->ops->host_memory;
}

static inline enum specd_status kern_alloc(struct kern_ctx *ctx, size_t bytes, void **out)
{
	return ctx->ops->alloc(ctx, bytes, out);
}

static inline void kern_free(struct kern_ctx *ctx, void *p)
{
	ctx->ops->free(ctx, p);
}

static inline enum specd_status kern_upload(struct kern_ctx *ctx, void *dst, const void *src,
					    size_t bytes)
{
	return ctx->ops->upload(ctx, dst, src, bytes);
}

static inline enum specd_status kern_download(struct kern_ctx *ctx, void *dst,
					      const void *src, size_t bytes)
{
	return ctx->ops->download(ctx, dst, src, bytes);
}

static inline enum specd_status kern_upload_mat(struct kern_ctx *ctx,
						const struct kern_mat *src,
						struct kern_mat *out)
{
	return ctx->ops->upload_mat(ctx, src, out);
}

static inline enum specd_status kern_matmul(struct kern_ctx *ctx, float *y, size_t ldy,
					    const float *x, size_t ldx, size_t rows,
					    const struct kern_mat *w, const float *bias)
{
	return ctx->ops->matmul(ctx, y, ldy, x, ldx, rows, w, bias);
}

static inline enum specd_status kern_get_rows(struct kern_ctx *ctx, float *y, size_t ldy,
					      const struct kern_mat *table, const uint32_t *ids,
					      size_t rows)
{
	return ctx->ops->get_rows(ctx, y, ldy, table, ids, rows);
}

static inline enum specd_status kern_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy,
					     const float *x, size_t ldx, size_t rows, size_t n,
					     const float *w, float eps)
{
	return ctx->ops->rmsnorm(ctx, y, ldy, x, ldx, rows, n, w, eps);
}

static inline enum specd_status kern_add_rmsnorm(struct kern_ctx *ctx, float *y, size_t ldy,
						 float *x, size_t ldx, const float *d, size_t ldd,
						 size_t rows, size_t n, const float *w, float eps)
{
	return ctx->ops->add_rmsnorm(ctx, y, ldy, x, ldx, d, ldd, rows, n, w, eps);
}

static inline enum specd_status kern_rope(struct kern_ctx *ctx, float *x, size_t ldx,
					  size_t rows, size_t n_heads, size_t head_dim,
					  const uint32_t *pos, float freq_base,
					  enum kern_rope_layout layout)
{
	return ctx->ops->rope(ctx, x, ldx, rows, n_heads, head_dim, pos, freq_base, layout);
}

static inline enum specd_status kern_attention(struct kern_ctx *ctx, const struct kern_attn *a)
{
	return ctx->ops->attention(ctx, a);
}

static inline enum specd_status kern_silu_mul(struct kern_ctx *ctx, float *gate,
					      const float *up, size_t n)
{
	return ctx->ops->silu_mul(ctx, gate, up, n);
}

static inline enum specd_status kern_add(struct kern_ctx *ctx, float *y, const float *x,
					 size_t n)
{
	return ctx->ops->add(ctx, y, x, n);
}

static inline enum specd_status kern_softmax(struct kern_ctx *ctx, float *x, size_t ldx,
					     size_t rows, size_t n)
{
	return ctx->ops->softmax(ctx, x, ldx, rows, n);
}

static inline enum specd_status kern_argmax(struct kern_ctx *ctx, uint32_t *out,
					    const float *x, size_t ldx, size_t rows, size_t n)
{
	return ctx->ops->argmax(ctx, out, x, ldx, rows, n);
}

static inline enum specd_status kern_sample(struct kern_ctx *ctx,
					    const struct kern_sample_rows *s)
{
	return ctx->ops->sample(ctx, s);
}

static inline enum specd_status kern_topk(struct kern_ctx *ctx, const struct kern_topk_rows *t)
{
	return ctx->ops->topk(ctx, t);
}

static inline enum specd_status kern_set_rows(struct kern_ctx *ctx, float *dst, size_t ld_dst,
					      const uint32_t *idx, const float *src,
					      size_t ld_src, size_t rows, size_t n)
{
	return ctx->ops->set_rows(ctx, dst, ld_dst, idx, src, ld_src, rows, n);
}

static inline enum specd_status kern_copy(struct kern_ctx *ctx, void *dst, const void *src,
					  size_t bytes)
{
	return ctx->ops->copy(ctx, dst, src, bytes);
}

static inline enum specd_status kern_sync(struct kern_ctx *ctx)
{
	return ctx->ops->sync(ctx);
}

static inline enum specd_status kern_reserve(struct kern_ctx *ctx, size_t rows, size_t n_in)
{
	return ctx->ops->reserve ? ctx->ops->reserve(ctx, rows, n_in) : SPECD_OK;
}

#endif
