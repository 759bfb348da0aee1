/* specd-dump-hidden: the data tools/train-heads trains Medusa heads on (self-distillation).
 * The target reads prompts and writes its own continuations; for every position the
 * file keeps the target's final hidden state (after the output norm: what Medusa heads
 * read, drafters/medusa.h), the token there and the target's greedy choice after it,
 * plus the LM head the target computes with, so the trainer needs nothing else. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/dtype.h"
#include "kernels/kern.h"
#include "model/chat.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

#define TOOL "specd-dump-hidden"
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define PROGRESS_EVERY 10 /* prompts between progress lines */
#define F16_MAX 65504.0f

struct opts {
	const char *model, *prompts, *out;
	bool chat;
	unsigned long tokens, ctx, threads;
	struct sampler_params sp;
	enum kern_dtype dtype; /* KERN_F16 or KERN_F32: hidden and lm_head */
};

/* The prompt file's non-empty lines, tokenized. */
struct prompts {
	char *text;      /* the whole file, lines NUL-terminated in place */
	char **line;     /* (n) into text */
	int32_t **ids;   /* (n) token ids, owned; NULL for a line that gave none */
	size_t *n_ids;   /* (n) */
	size_t n, longest;
};

/* The growing index tensors: one entry per position, and sequence offsets. */
struct index {
	int32_t *tokens, *next; /* (cap) host */
	size_t n, cap;
	int32_t *seq_start;     /* (seq_cap) host; n_seqs + 1 used once a sequence is open */
	size_t n_seqs, seq_cap;
};

/* The output under its temporary name. Hidden rows stream into the data section right
 * after a header area reserved up front (the header's size depends on counts known at
 * the end); the header is written last, padded with spaces to the reserved size. */
struct writer {
	FILE *f;
	char *tmp;          /* temporary path, owned; renamed over the output at the end */
	size_t reserve;     /* bytes kept for the JSON header, a multiple of 8 */
	enum kern_dtype dtype;
	size_t dim;
	uint8_t *packed;    /* (max_batch, dim) in dtype, host */
	uint64_t hidden_bytes;
	uint64_t n_over;    /* hidden values beyond f16's range (written as inf) */
};

struct dump {
	const struct opts *o;
	struct gguf_file *file;
	struct tok *tok;
	struct kern_ctx *kern;
	struct model *m;
	struct sampler *sampler; /* NULL when greedy */
	const struct model_hparams *hp;
	const struct gguf_tensor *lm; /* the LM head in the model's file */
	uint32_t mb, n_ctx;
	uint32_t *b_tok, *b_pos, *b_slot, *b_idx; /* (mb) the batch */
	float *logits;  /* (mb, n_vocab) host */
	float *hidden;  /* (mb, dim) host */
	struct index ix;
	struct writer w;
	uint64_t generated;
	size_t n_dumped, n_skipped;
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

/* ---- prompts ---- */

static enum specd_status prompts_read(const char *path, struct prompts *p, struct specd_error *err)
{
	FILE *f = fopen(path, "rb");
	size_t len = 0, cap = 0;
	char *text = NULL;

	if (!f)
		return specd_errorf(err, SPECD_IO, "cannot open the prompt file %s: %s", path,
				    strerror(errno));
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = (len + 4096 + 1) * 2;
			char *grown = specd_realloc_array(text, cap, 1);
			if (!grown) {
				fclose(f);
				specd_free(text);
				return specd_errorf(err, SPECD_NOMEM, "out of memory reading %s", path);
			}
			text = grown;
		}
		size_t got = fread(text + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		specd_free(text);
		return specd_errorf(err, SPECD_IO, "cannot read the prompt file %s", path);
	}
	text[len] = '\0';
	p->text = text;
	size_t lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	if (!(p->line = specd_calloc(lines, sizeof(*p->line))))
		return specd_errorf(err, SPECD_NOMEM, "out of memory reading %s", path);
	for (char *s = text; s <= text + len;) {
		char *e = memchr(s, '\n', (size_t)(text + len - s));
		if (!e)
			e = text + len;
		*e = '\0';
		if (e > s && e[-1] == '\r')
			e[-1] = '\0';
		if (*s)
			p->line[p->n++] = s;
		s = e + 1;
	}
	if (p->n == 0)
		return specd_errorf(err, SPECD_INVAL, "the prompt file %s holds no prompt (one per "
				    "line)", path);
	return SPECD_OK;
}

static enum specd_status prompts_tokenize(struct dump *d, struct prompts *p,
					  struct specd_error *err)
{
	if (!(p->ids = specd_calloc(p->n, sizeof(*p->ids))) ||
	    !(p->n_ids = specd_calloc(p->n, sizeof(*p->n_ids))))
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	for (size_t i = 0; i < p->n; i++) {
		enum specd_status st;
		if (d->o->chat) {
			st = chat_user_prompt(d->tok, d->file, p->line[i], &p->ids[i], &p->n_ids[i],
					      err);
		} else {
			size_t len = strlen(p->line[i]);
			bool bos = tok_add_bos(d->tok);
			size_t cap = tok_encode_bound(len, bos);
			if (!(p->ids[i] = specd_malloc_array(cap ? cap : 1, sizeof(int32_t))))
				return specd_errorf(err, SPECD_NOMEM, "out of memory");
			st = tok_encode(d->tok, p->line[i], len, bos, p->ids[i], cap, &p->n_ids[i]);
			if (st != SPECD_OK)
				specd_errorf(err, st, "cannot encode prompt %zu: %s", i + 1,
					     specd_status_str(st));
		}
		if (st != SPECD_OK)
			return st;
		if (p->n_ids[i] > p->longest)
			p->longest = p->n_ids[i];
	}
	return SPECD_OK;
}

static void prompts_free(struct prompts *p)
{
	for (size_t i = 0; p->ids && i < p->n; i++)
		specd_free(p->ids[i]);
	specd_free(p->ids);
	specd_free(p->n_ids);
	specd_free(p->line);
	specd_free(p->text);
}

/* ---- index tensors ---- */

static bool index_push(struct index *ix, int32_t token, int32_t next)
{
	if (ix->n == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 4096;
		int32_t *t = specd_realloc_array(ix->tokens, cap, sizeof(int32_t));
		if (t)
			ix->tokens = t;
		int32_t *x = t ? specd_realloc_array(ix->next, cap, sizeof(int32_t)) : NULL;
		if (!x)
			return false;
		ix->next = x;
		ix->cap = cap;
	}
	ix->tokens[ix->n] = token;
	ix->next[ix->n++] = next;
	return true;
}

/* Opens a sequence at the current position (and keeps seq_start's closing entry). */
static bool index_open_seq(struct index *ix)
{
	if (ix->n_seqs + 2 > ix->seq_cap) {
		size_t cap = ix->seq_cap ? ix->seq_cap * 2 : 256;
		int32_t *s = specd_realloc_array(ix->seq_start, cap, sizeof(int32_t));
		if (!s)
			return false;
		ix->seq_start = s;
		ix->seq_cap = cap;
	}
	ix->seq_start[ix->n_seqs++] = (int32_t)ix->n;
	return true;
}

static void index_free(struct index *ix)
{
	specd_free(ix->tokens);
	specd_free(ix->next);
	specd_free(ix->seq_start);
}

/* ---- the output file ---- */

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static const char *st_dtype(enum kern_dtype t)
{
	return t == KERN_F16 ? "F16" : "F32";
}

/* Creates the temporary file next to `out` (so the final rename stays on one file
 * system) and skips the header area. */
static enum specd_status writer_open(struct writer *w, const char *out, size_t reserve,
				     enum kern_dtype dtype, size_t dim, uint32_t mb,
				     struct specd_error *err)
{
	size_t len = strlen(out);
	int fd;

	w->dtype = dtype;
	w->dim = dim;
	w->reserve = (reserve + 7) / 8 * 8;
	if (!(w->tmp = specd_malloc_array(len + 16, 1)) ||
	    !(w->packed = specd_malloc_array((size_t)mb * dim, kern_dtype_row_bytes(dtype, 1))))
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	snprintf(w->tmp, len + 16, "%s.tmp-XXXXXX", out);
	if ((fd = mkstemp(w->tmp)) < 0) {
		int e = errno;
		specd_free(w->tmp);
		w->tmp = NULL;
		return specd_errorf(err, SPECD_IO, "cannot write %s: %s", out, strerror(e));
	}
	/* mkstemp makes the file 0600; the output gets what a plain create would give. */
	mode_t mask = umask(0);
	umask(mask);
	if (fchmod(fd, 0666 & ~mask) != 0 || !(w->f = fdopen(fd, "wb"))) {
		int e = errno;
		close(fd);
		return specd_errorf(err, SPECD_IO, "cannot write %s: %s", w->tmp, strerror(e));
	}
	if (fseeko(w->f, (off_t)(8 + w->reserve), SEEK_SET) != 0)
		return specd_errorf(err, SPECD_IO, "cannot write %s: %s", w->tmp, strerror(errno));
	return SPECD_OK;
}

/* Converts rows x (rows, dim) f32 to the output's dtype and appends them. */
static enum specd_status writer_rows(struct writer *w, const float *x, size_t rows,
				     struct specd_error *err)
{
	size_t n = rows * w->dim;
	kern_quant_row(w->dtype, x, w->packed, n);
	size_t bytes = kern_dtype_row_bytes(w->dtype, n);
	if (fwrite(w->packed, 1, bytes, w->f) != bytes)
		return specd_errorf(err, SPECD_IO, "cannot write %s: %s", w->tmp, strerror(errno));
	return SPECD_OK;
}

/* The LM head the target multiplies its final hidden state by: output.weight, or the
 * token embedding when the model ties them (model_hparams.tied_output). */
static const struct gguf_tensor *lm_head_tensor(const struct dump *d)
{
	const struct gguf_tensor *t = model_lm_head(d->m);
	return t && t->ne[0] == d->hp->dim && t->ne[1] == d->hp->n_vocab ? t : NULL;
}

/* Appends the LM head dequantised (n_vocab rows of dim) in the output's dtype. */
static enum specd_status writer_lm_head(struct writer *w, const struct gguf_tensor *t,
					float *row, struct specd_error *err)
{
	size_t row_bytes = kern_dtype_row_bytes(t->type, w->dim);
	for (uint64_t r = 0; r < t->ne[1]; r++) {
		enum specd_status st;
		kern_dequant_row(t->type, (const uint8_t *)t->data + r * row_bytes, row, w->dim);
		if ((st = writer_rows(w, row, 1, err)) != SPECD_OK)
			return st;
	}
	return SPECD_OK;
}

static enum specd_status writer_ints(struct writer *w, const int32_t *v, size_t n,
				     struct specd_error *err)
{
	uint8_t le[4];
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)v[i];
		for (int b = 0; b < 4; b++)
			le[b] = (uint8_t)(u >> (8 * b));
		if (fwrite(le, 1, 4, w->f) != 4)
			return specd_errorf(err, SPECD_IO, "cannot write %s: %s", w->tmp,
					    strerror(errno));
	}
	return SPECD_OK;
}

static json_t *tensor_entry(const char *dtype, uint64_t rows, uint64_t cols, uint64_t *off,
			    uint64_t bytes)
{
	json_t *shape = cols ? json_pack("[I,I]", (json_int_t)rows, (json_int_t)cols)
			     : json_pack("[I]", (json_int_t)rows);
	json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", dtype, "shape", shape,
			      "data_offsets", (json_int_t)*off, (json_int_t)(*off + bytes));
	*off += bytes;
	return e;
}

static json_t *metadata(const struct dump *d)
{
	char dim[24], vocab[24], prompts[24], gen[24], temp[32];
	snprintf(dim, sizeof(dim), "%u", d->hp->dim);
	snprintf(vocab, sizeof(vocab), "%u", d->hp->n_vocab);
	snprintf(prompts, sizeof(prompts), "%zu", d->n_dumped);
	snprintf(gen, sizeof(gen), "%llu", (unsigned long long)d->generated);
	snprintf(temp, sizeof(temp), "%g", (double)d->o->sp.temperature);
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "model", base_name(d->o->model), "dim", dim,
			 "n_vocab", vocab, "prompts", prompts, "generated", gen, "temperature",
			 temp);
}

/* The JSON header of the finished file, padded with spaces to w->reserve bytes. */
static enum specd_status writer_header(const struct dump *d, char **out,
				       struct specd_error *err)
{
	const struct writer *w = &d->w;
	const struct index *ix = &d->ix;
	const char *dt = st_dtype(w->dtype);
	size_t es = kern_dtype_row_bytes(w->dtype, 1);
	uint64_t off = 0, n = ix->n, dim = d->hp->dim, v = d->hp->n_vocab;
	json_t *root = json_object();

	if (!root)
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	json_object_set_new(root, "__metadata__", metadata(d));
	json_object_set_new(root, "hidden", tensor_entry(dt, n, dim, &off, n * dim * es));
	json_object_set_new(root, "lm_head", tensor_entry(dt, v, dim, &off, v * dim * es));
	json_object_set_new(root, "next", tensor_entry("I32", n, 0, &off, n * 4));
	json_object_set_new(root, "tokens", tensor_entry("I32", n, 0, &off, n * 4));
	json_object_set_new(root, "seq_start",
			    tensor_entry("I32", ix->n_seqs + 1, 0, &off, (ix->n_seqs + 1) * 4));
	char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	size_t tl = strlen(text);
	if (tl > w->reserve) {
		free(text);
		return specd_errorf(err, SPECD_INTERNAL, "the header (%zu bytes) outgrew the %zu "
				    "bytes kept for it", tl, w->reserve);
	}
	char *h = specd_malloc_array(w->reserve, 1);
	if (h) {
		memcpy(h, text, tl);
		memset(h + tl, ' ', w->reserve - tl);
	}
	free(text);
	if (!h)
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	*out = h;
	return SPECD_OK;
}

/* Writes what follows the hidden rows, then the header, and renames the file over the
 * output. */
static enum specd_status writer_finish(struct dump *d, struct specd_error *err)
{
	struct writer *w = &d->w;
	struct index *ix = &d->ix;
	char *hdr = NULL;
	enum specd_status st;

	ix->seq_start[ix->n_seqs] = (int32_t)ix->n;
	if ((st = writer_lm_head(w, d->lm, d->hidden, err)) != SPECD_OK ||
	    (st = writer_ints(w, ix->next, ix->n, err)) != SPECD_OK ||
	    (st = writer_ints(w, ix->tokens, ix->n, err)) != SPECD_OK ||
	    (st = writer_ints(w, ix->seq_start, ix->n_seqs + 1, err)) != SPECD_OK ||
	    (st = writer_header(d, &hdr, err)) != SPECD_OK)
		goto out;
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((uint64_t)w->reserve >> (8 * i));
	if (fseeko(w->f, 0, SEEK_SET) != 0 || fwrite(le, 1, 8, w->f) != 8 ||
	    fwrite(hdr, 1, w->reserve, w->f) != w->reserve || fflush(w->f) != 0 ||
	    fsync(fileno(w->f)) != 0) {
		st = specd_errorf(err, SPECD_IO, "cannot write %s: %s", w->tmp, strerror(errno));
		goto out;
	}
	int rc = fclose(w->f);
	w->f = NULL;
	if (rc != 0 || rename(w->tmp, d->o->out) != 0) {
		st = specd_errorf(err, SPECD_IO, "cannot write %s: %s", d->o->out, strerror(errno));
		goto out;
	}
	specd_free(w->tmp);
	w->tmp = NULL;
out:
	specd_free(hdr);
	return st;
}

/* Closes and removes the temporary file, if any: nothing half-written stays behind. */
static void writer_discard(struct writer *w)
{
	if (w->f)
		fclose(w->f);
	if (w->tmp)
		unlink(w->tmp);
	specd_free(w->tmp);
	specd_free(w->packed);
	memset(w, 0, sizeof(*w));
}

/* ---- the target ---- */

/* KV rows per prompt: the longest prompt plus what may be generated, capped by the
 * model's training context (its `<arch>.context_length`), unless --ctx says. */
static uint32_t context_rows(const struct dump *d, size_t longest)
{
	uint64_t want = d->o->ctx ? d->o->ctx : (uint64_t)longest + d->o->tokens;
	struct gguf_str arch;
	uint32_t train = 0;
	char key[96];

	if (!d->o->ctx && gguf_get_str(d->file, "general.architecture", &arch)) {
		snprintf(key, sizeof(key), "%.*s.context_length", (int)arch.len, arch.ptr);
		if (gguf_get_u32(d->file, key, &train) && train && want > train)
			want = train;
	}
	if (want < 1)
		want = 1;
	return want > UINT32_MAX ? UINT32_MAX : (uint32_t)want;
}

static enum specd_status open_target(struct dump *d, size_t longest, struct specd_error *err)
{
	struct kern_cpu_config kc = {.n_threads = (unsigned)d->o->threads};
	enum specd_status st;

	if ((st = kern_cpu_create(&kc, &d->kern)) != SPECD_OK)
		return specd_errorf(err, st, "cannot create the CPU backend");
	struct model_config cfg = {
		.n_slots = 1, .n_ctx = context_rows(d, longest), .kern = d->kern,
	};
	if ((st = model_load_gguf(d->file, &cfg, &d->m, err)) != SPECD_OK)
		return st;
	d->hp = model_hparams(d->m);
	d->mb = model_max_batch(d->m);
	d->n_ctx = kv_n_ctx(model_kv(d->m));
	if (!(d->b_tok = specd_malloc_array(d->mb, sizeof(uint32_t))) ||
	    !(d->b_pos = specd_malloc_array(d->mb, sizeof(uint32_t))) ||
	    !(d->b_slot = specd_calloc(d->mb, sizeof(uint32_t))) ||
	    !(d->b_idx = specd_malloc_array(d->mb, sizeof(uint32_t))) ||
	    !(d->logits = specd_malloc_array((size_t)d->mb * d->hp->n_vocab, sizeof(float))) ||
	    !(d->hidden = specd_malloc_array((size_t)d->mb * d->hp->dim, sizeof(float))))
		return specd_errorf(err, SPECD_NOMEM, "out of memory for a batch of %u", d->mb);
	for (uint32_t i = 0; i < d->mb; i++)
		d->b_idx[i] = i;
	if (d->o->sp.temperature > 0.0f &&
	    (st = sampler_create((int32_t)d->hp->n_vocab, &d->o->sp, &d->sampler, err)) != SPECD_OK)
		return st;
	if (!(d->lm = lm_head_tensor(d)))
		return specd_errorf(err, SPECD_INVAL, "%s has no LM head of %u x %u (%s)",
				    d->o->model, d->hp->n_vocab, d->hp->dim,
				    d->hp->tied_output ? "token_embd.weight" : "output.weight");
	return SPECD_OK;
}

/* One forward of b_tok[0..c) at positions pos0.., every row out; records each
 * position's hidden row, token and greedy next token. */
static enum specd_status forward_record(struct dump *d, uint32_t c, uint32_t pos0,
					struct specd_error *err)
{
	for (uint32_t i = 0; i < c; i++)
		d->b_pos[i] = pos0 + i;
	struct model_batch b = {
		.n_tokens = c, .tokens = d->b_tok, .slots = d->b_slot, .pos = d->b_pos,
		.n_out = c, .out_idx = d->b_idx, .logits = d->logits, .hidden = d->hidden,
	};
	enum specd_status st = model_forward(d->m, &b, err);
	if (st != SPECD_OK)
		return st;
	if (d->w.dtype == KERN_F16)
		for (size_t i = 0; i < (size_t)c * d->hp->dim; i++)
			d->w.n_over += fabsf(d->hidden[i]) > F16_MAX;
	if ((st = writer_rows(&d->w, d->hidden, c, err)) != SPECD_OK)
		return st;
	for (uint32_t i = 0; i < c; i++) {
		int32_t next = sampler_argmax(d->logits + (size_t)i * d->hp->n_vocab,
					      (int32_t)d->hp->n_vocab);
		if (!index_push(&d->ix, (int32_t)d->b_tok[i], next))
			return specd_errorf(err, SPECD_NOMEM, "out of memory after %zu positions",
					    d->ix.n);
	}
	return SPECD_OK;
}

/* Prefills one prompt, then generates from it until EOS, --tokens or the context. */
static enum specd_status dump_prompt(struct dump *d, const int32_t *ids, size_t n,
				     struct specd_error *err)
{
	struct kv_cache *kv = model_kv(d->m);
	uint32_t c = 0, V = d->hp->n_vocab;
	enum specd_status st;

	if ((st = kv_truncate(kv, 0, 0)) != SPECD_OK)
		return specd_errorf(err, st, "cannot reset the KV slot");
	if (!index_open_seq(&d->ix))
		return specd_errorf(err, SPECD_NOMEM, "out of memory");
	for (size_t s = 0; s < n; s += c) {
		c = n - s < d->mb ? (uint32_t)(n - s) : d->mb;
		for (uint32_t i = 0; i < c; i++)
			d->b_tok[i] = (uint32_t)ids[s + i];
		if ((st = forward_record(d, c, (uint32_t)s, err)) != SPECD_OK)
			return st;
	}
	const float *last = d->logits + (size_t)(c - 1) * V;
	for (unsigned long g = 0; g < d->o->tokens; g++) {
		int32_t next = d->ix.next[d->ix.n - 1];
		if (g_stop)
			return specd_errorf(err, SPECD_CANCELLED, "interrupted");
		if (d->sampler && (st = sampler_sample(d->sampler, last, &next)) != SPECD_OK)
			return specd_errorf(err, st, "cannot sample a token");
		if (tok_is_end(d->tok, next) || kv_len(kv, 0) >= d->n_ctx)
			break;
		d->b_tok[0] = (uint32_t)next;
		if ((st = forward_record(d, 1, kv_len(kv, 0), err)) != SPECD_OK)
			return st;
		last = d->logits;
		d->generated++;
	}
	d->n_dumped++;
	return SPECD_OK;
}

static void progress(const struct dump *d, size_t done, size_t total, double t0)
{
	double s = specd_now() - t0;
	fprintf(stderr, TOOL ": %zu/%zu prompts, %zu positions, %.0f tok/s\n", done, total,
		d->ix.n, s > 0 ? (double)d->ix.n / s : 0.0);
}

static enum specd_status dump_all(struct dump *d, const struct prompts *p,
				  struct specd_error *err)
{
	double t0 = specd_now();
	enum specd_status st;

	for (size_t i = 0; i < p->n; i++) {
		if (g_stop)
			return specd_errorf(err, SPECD_CANCELLED, "interrupted");
		if (p->n_ids[i] == 0 || p->n_ids[i] > d->n_ctx) {
			fprintf(stderr, TOOL ": prompt %zu skipped: %zu tokens (the context is %u)\n",
				i + 1, p->n_ids[i], d->n_ctx);
			d->n_skipped++;
		} else if ((st = dump_prompt(d, p->ids[i], p->n_ids[i], err)) != SPECD_OK) {
			return st;
		}
		if ((i + 1) % PROGRESS_EVERY == 0 || i + 1 == p->n)
			progress(d, i + 1, p->n, t0);
	}
	if (d->n_dumped == 0)
		return specd_errorf(err, SPECD_INVAL, "no prompt fits the context of %u tokens",
				    d->n_ctx);
	return SPECD_OK;
}

static void dump_fini(struct dump *d)
{
	writer_discard(&d->w);
	index_free(&d->ix);
	sampler_destroy(d->sampler);
	specd_free(d->b_tok);
	specd_free(d->b_pos);
	specd_free(d->b_slot);
	specd_free(d->b_idx);
	specd_free(d->logits);
	specd_free(d->hidden);
	model_destroy(d->m);
	kern_destroy(d->kern);
	tok_destroy(d->tok);
	gguf_close(d->file);
}

static int run(const struct opts *o)
{
	struct dump d = {.o = o};
	struct prompts p = {0};
	struct specd_error err = {0};
	enum specd_status st;
	int rc = EXIT_FAILURE;
	double t0 = specd_now();

	if ((st = prompts_read(o->prompts, &p, &err)) != SPECD_OK) {
		fprintf(stderr, TOOL ": %s\n", err.msg);
		rc = st == SPECD_INVAL ? EXIT_USAGE : EXIT_FAILURE;
		goto out;
	}
	if ((st = model_file_open(o->model, &d.file, &err)) != SPECD_OK ||
	    (st = tok_load_gguf(d.file, &d.tok, &err)) != SPECD_OK)
		goto fail;
	if ((st = prompts_tokenize(&d, &p, &err)) != SPECD_OK) {
		if (o->chat && st == SPECD_UNSUPPORTED)
			fprintf(stderr, TOOL ": --chat: %s has no ChatML chat template\n", o->model);
		goto fail;
	}
	if ((st = open_target(&d, p.longest, &err)) != SPECD_OK)
		goto fail;
	/* The header holds six entries and the metadata; the model's name may need
	 * escaping (up to 6 bytes a byte). */
	size_t reserve = 2048 + 6 * strlen(base_name(o->model));
	if ((st = writer_open(&d.w, o->out, reserve, o->dtype, d.hp->dim, d.mb, &err)) != SPECD_OK)
		goto fail;
	fprintf(stderr, TOOL ": %s: dim %u, vocab %u, context %u; %zu prompts (longest %zu "
			"tokens), up to %lu tokens each%s\n",
		o->model, d.hp->dim, d.hp->n_vocab, d.n_ctx, p.n, p.longest, o->tokens,
		o->chat ? ", chat template" : "");
	if ((st = dump_all(&d, &p, &err)) != SPECD_OK ||
	    (st = writer_finish(&d, &err)) != SPECD_OK)
		goto fail;
	fprintf(stderr, TOOL ": wrote %s: %zu positions of %zu sequences (%llu generated, %zu "
			"prompts skipped) in %.1f s\n",
		o->out, d.ix.n, d.ix.n_seqs, (unsigned long long)d.generated, d.n_skipped,
		specd_now() - t0);
	if (d.w.n_over)
		fprintf(stderr, TOOL ": warning: %llu hidden values exceed f16's range and were "
				"stored as inf; use --dtype f32\n", (unsigned long long)d.w.n_over);
	rc = EXIT_SUCCESS;
	goto out;
fail:
	if (st == SPECD_CANCELLED) {
		fprintf(stderr, TOOL ": interrupted; %s not written\n", o->out);
		rc = EXIT_INTERRUPTED;
	} else {
		fprintf(stderr, TOOL ": %s\n", err.msg);
	}
out:
	dump_fini(&d);
	prompts_free(&p);
	return rc;
}

/* ---- arguments ---- */

static void usage(FILE *to)
{
	fprintf(to,
		"usage: " TOOL " -m MODEL -p PROMPTS.txt -o OUT.safetensors [--chat]\n"
		"         [--tokens 128] [--temperature 0] [--seed 1] [--dtype f16|f32]\n"
		"         [--ctx N] [--threads 1]\n"
		"Runs the target MODEL (GGUF file or Hugging Face folder; CPU) on each non-empty\n"
		"line of PROMPTS.txt and generates up to --tokens tokens after it (stopping at EOS\n"
		"or the context), then writes one safetensors file for tools/train-heads:\n"
		"  hidden     (N, dim)      the final hidden state (after the output norm) at\n"
		"                           every position, prompt and generated\n"
		"  next       (N) I32       the target's greedy token after each position\n"
		"  tokens     (N) I32       the token at each position\n"
		"  seq_start  (S + 1) I32   each sequence's first position; the last is N\n"
		"  lm_head    (n_vocab, dim) the target's LM head, dequantised\n"
		"  __metadata__             model, dim, n_vocab, prompts, generated, temperature\n"
		"hidden and lm_head are --dtype (default f16).\n"
		"  --chat           each line is a user message in the model's ChatML template\n"
		"                   (with its default system prompt), as specd-run --chat\n"
		"  --temperature T  sample the continuation (default 0: greedy); next stays the\n"
		"  --seed S         greedy choice. The seed of the sampler (default 1)\n"
		"  --ctx N          KV rows per prompt (default: the longest prompt + --tokens,\n"
		"                   at most the model's context); longer prompts are skipped\n"
		"  --threads N      compute threads (default 1)\n"
		"The file is written under a temporary name and renamed when complete; an\n"
		"interrupted run (SIGINT, SIGTERM) leaves nothing behind. Exit status: 0 done,\n"
		"1 error, 2 usage, 130 interrupted.\n");
}

static bool parse_ul(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_temperature(const char *s, float *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0.0 || v > 100.0)
		return false;
	*out = (float)v;
	return true;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.tokens = 128, .threads = 1, .dtype = KERN_F16,
		.sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 1},
	};
	enum { O_CHAT = 256, O_TOKENS, O_TEMP, O_SEED, O_DTYPE, O_CTX, O_THREADS };
	static const struct option lo[] = {
		{"model", required_argument, NULL, 'm'}, {"prompts", required_argument, NULL, 'p'},
		{"out", required_argument, NULL, 'o'}, {"chat", no_argument, NULL, O_CHAT},
		{"tokens", required_argument, NULL, O_TOKENS},
		{"temperature", required_argument, NULL, O_TEMP},
		{"seed", required_argument, NULL, O_SEED}, {"dtype", required_argument, NULL, O_DTYPE},
		{"ctx", required_argument, NULL, O_CTX},
		{"threads", required_argument, NULL, O_THREADS},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	int c, li = 0;

	log_init_from_env();
	while ((c = getopt_long(argc, argv, "m:p:o:h", lo, &li)) != -1) {
		bool ok = true;
		unsigned long v = 0;
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'p': o.prompts = optarg; break;
		case 'o': o.out = optarg; break;
		case O_CHAT: o.chat = true; break;
		case O_TOKENS: ok = parse_ul(optarg, 0, 1ul << 24, &o.tokens); break;
		case O_TEMP: ok = parse_temperature(optarg, &o.sp.temperature); break;
		case O_SEED: ok = parse_ul(optarg, 0, ULONG_MAX, &v); o.sp.seed = v; break;
		case O_DTYPE:
			ok = kern_dtype_parse(optarg, &o.dtype) &&
			     (o.dtype == KERN_F16 || o.dtype == KERN_F32);
			break;
		case O_CTX: ok = parse_ul(optarg, 1, UINT32_MAX, &o.ctx); break;
		case O_THREADS: ok = parse_ul(optarg, 1, 1024, &o.threads); break;
		case 'h': usage(stdout); return EXIT_SUCCESS;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (!ok) {
			fprintf(stderr, TOOL ": bad value '%s' for --%s\n", optarg, lo[li].name);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !o.model || !o.prompts || !o.out) {
		fprintf(stderr, TOOL ": %s\n", optind != argc ? "unexpected arguments"
				: "-m MODEL, -p PROMPTS and -o OUT are required");
		usage(stderr);
		return EXIT_USAGE;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	return run(&o);
}
