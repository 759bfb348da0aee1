/* specd-gen-heads: writes random Medusa heads (drafters/medusa.h) as safetensors with
 * the Medusa repository's tensor names, sized for a model or for given sizes, so tests
 * and benches can run --method medusa without trained heads (DESIGN.md §8: no weights
 * are committed). Deterministic from a seed. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/model_file.h"

struct opts {
	const char *out, *model;
	unsigned long dim, vocab, heads, layers;
	bool shared, bare;
	double scale;
	unsigned long long seed;
	enum kern_dtype type;
};

/* One tensor of the file: its name, shape and the value scale of its entries. */
struct plan {
	char name[96];
	unsigned long rows, cols; /* cols 0: a vector of rows entries */
	double amp;
};

/* A 64-bit LCG (Knuth's MMIX constants); the top 24 bits make a uniform float. */
static float uniform_pm1(unsigned long long *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 40) / (double)(1u << 24) * 2.0 - 1.0);
}

static const char *st_dtype(enum kern_dtype t)
{
	return t == KERN_F16 ? "F16" : t == KERN_BF16 ? "BF16" : "F32";
}

static size_t plan_heads(const struct opts *o, struct plan *p)
{
	const char *pre = o->bare ? "" : "medusa_head.";
	double a = o->scale / sqrt((double)o->dim);
	size_t n = 0;

	for (unsigned long i = 0; i < o->heads; i++) {
		for (unsigned long j = 0; j < o->layers; j++) {
			p[n] = (struct plan){.rows = o->dim, .cols = o->dim, .amp = a};
			snprintf(p[n++].name, sizeof(p->name), "%s%lu.%lu.linear.weight", pre, i, j);
			p[n] = (struct plan){.rows = o->dim, .cols = 0, .amp = 0.1 * o->scale};
			snprintf(p[n++].name, sizeof(p->name), "%s%lu.%lu.linear.bias", pre, i, j);
		}
		if (o->shared)
			continue;
		p[n] = (struct plan){.rows = o->vocab, .cols = o->dim, .amp = 1.0 / sqrt((double)o->dim)};
		snprintf(p[n++].name, sizeof(p->name), "%s%lu.%lu.weight", pre, i, o->layers);
	}
	return n;
}

static size_t plan_bytes(const struct opts *o, const struct plan *p)
{
	return kern_dtype_row_bytes(o->type, 1) * p->rows * (p->cols ? p->cols : 1);
}

/* The JSON header, padded with spaces to a multiple of 8 as safetensors writers do. */
static char *header(const struct opts *o, const struct plan *p, size_t n, size_t *len)
{
	json_t *root = json_object();
	size_t off = 0;

	json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
	for (size_t i = 0; i < n; i++) {
		size_t b = plan_bytes(o, &p[i]);
		json_t *shape = p[i].cols ? json_pack("[I,I]", (json_int_t)p[i].rows,
						      (json_int_t)p[i].cols)
					  : json_pack("[I]", (json_int_t)p[i].rows);
		json_object_set_new(root, p[i].name,
				    json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype(o->type),
					      "shape", shape, "data_offsets", (json_int_t)off,
					      (json_int_t)(off + b)));
		off += b;
	}
	char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (!text)
		return NULL;
	size_t tl = strlen(text), padded = (tl + 7) / 8 * 8;
	char *h = specd_malloc_array(padded + 1, 1);
	if (h) {
		memcpy(h, text, tl);
		memset(h + tl, ' ', padded - tl);
		*len = padded;
	}
	free(text);
	return h;
}

static int write_heads(const struct opts *o)
{
	struct plan *p = specd_malloc_array(o->heads * (2 * o->layers + 1), sizeof(*p));
	float *row = specd_malloc_array(o->vocab > o->dim ? o->vocab : o->dim, sizeof(float));
	uint8_t *packed = specd_malloc_array(o->dim > o->vocab ? o->dim : o->vocab, 4);
	char *hdr = NULL;
	size_t n, hlen = 0;
	int rc = 1;
	FILE *f = NULL;

	if (!p || !row || !packed)
		goto out;
	n = plan_heads(o, p);
	if (!(hdr = header(o, p, n, &hlen)))
		goto out;
	if (!(f = fopen(o->out, "wb"))) {
		fprintf(stderr, "specd-gen-heads: %s: %s\n", o->out, strerror(errno));
		goto out;
	}
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((unsigned long long)hlen >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(hdr, 1, hlen, f);
	unsigned long long rng = o->seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t t = 0; t < n; t++) {
		unsigned long rows = p[t].cols ? p[t].rows : 1;
		unsigned long cols = p[t].cols ? p[t].cols : p[t].rows;
		for (unsigned long r = 0; r < rows; r++) {
			for (unsigned long c = 0; c < cols; c++)
				row[c] = (float)(p[t].amp * uniform_pm1(&rng));
			kern_quant_row(o->type, row, packed, cols);
			fwrite(packed, 1, kern_dtype_row_bytes(o->type, cols), f);
		}
	}
	if (ferror(f) || fclose(f) != 0) {
		f = NULL;
		fprintf(stderr, "specd-gen-heads: cannot write %s\n", o->out);
		goto out;
	}
	f = NULL;
	rc = 0;
out:
	if (f)
		fclose(f);
	specd_free(hdr);
	specd_free(p);
	specd_free(row);
	specd_free(packed);
	return rc;
}

/* --dim and --vocab from a model's token embedding. */
static bool sizes_from_model(struct opts *o)
{
	struct gguf_file *g;
	struct specd_error err;

	if (model_file_open(o->model, &g, &err) != SPECD_OK) {
		fprintf(stderr, "specd-gen-heads: %s\n", err.msg);
		return false;
	}
	const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
	bool ok = t != NULL;
	if (ok) {
		o->dim = (unsigned long)t->ne[0];
		o->vocab = (unsigned long)t->ne[1];
	} else {
		fprintf(stderr, "specd-gen-heads: %s has no token_embd.weight\n", o->model);
	}
	gguf_close(g);
	return ok;
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: specd-gen-heads -o FILE.safetensors (-m MODEL | --dim D --vocab V)\n"
		"         [--heads 3] [--layers 1] [--shared] [--scale 1] [--seed 1]\n"
		"         [--type f32|f16|bf16] [--bare]\n"
		"Writes random Medusa heads: per head, --layers residual blocks\n"
		"(medusa_head.I.J.linear.weight and .bias) and an LM head (medusa_head.I.L.weight)\n"
		"unless --shared (the heads then use the target's LM head). --scale multiplies the\n"
		"blocks' weights (small: each head stays close to the target's own prediction).\n"
		"--bare leaves out the medusa_head. prefix, as Medusa's saved head files do.\n");
}

static bool parse_ul(const char *s, unsigned long lo, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	struct opts o = {.heads = 3, .layers = 1, .scale = 1.0, .seed = 1, .type = KERN_F32};
	enum { O_DIM = 256, O_VOCAB, O_HEADS, O_LAYERS, O_SHARED, O_SCALE, O_SEED, O_TYPE, O_BARE };
	static const struct option lo[] = {
		{"out", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 'm'},
		{"dim", required_argument, NULL, O_DIM}, {"vocab", required_argument, NULL, O_VOCAB},
		{"heads", required_argument, NULL, O_HEADS},
		{"layers", required_argument, NULL, O_LAYERS},
		{"shared", no_argument, NULL, O_SHARED}, {"scale", required_argument, NULL, O_SCALE},
		{"seed", required_argument, NULL, O_SEED}, {"type", required_argument, NULL, O_TYPE},
		{"bare", no_argument, NULL, O_BARE}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "o:m:h", lo, NULL)) != -1) {
		bool ok = true;
		unsigned long v = 0;
		char *end;
		switch (c) {
		case 'o': o.out = optarg; break;
		case 'm': o.model = optarg; break;
		case O_DIM: ok = parse_ul(optarg, 1, &o.dim); break;
		case O_VOCAB: ok = parse_ul(optarg, 1, &o.vocab); break;
		case O_HEADS: ok = parse_ul(optarg, 1, &o.heads) && o.heads <= 64; break;
		case O_LAYERS: ok = parse_ul(optarg, 1, &o.layers) && o.layers <= 64; break;
		case O_SHARED: o.shared = true; break;
		case O_BARE: o.bare = true; break;
		case O_SCALE:
			o.scale = strtod(optarg, &end);
			ok = end != optarg && !*end && isfinite(o.scale);
			break;
		case O_SEED: ok = parse_ul(optarg, 0, &v); o.seed = v; break;
		case O_TYPE:
			ok = kern_dtype_parse(optarg, &o.type) &&
			     (o.type == KERN_F32 || o.type == KERN_F16 || o.type == KERN_BF16);
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "specd-gen-heads: bad value '%s'\n", optarg);
			return 2;
		}
	}
	if (!o.out || optind != argc || (!o.model && (!o.dim || !o.vocab))) {
		usage(stderr);
		return 2;
	}
	if (o.model && !sizes_from_model(&o))
		return 1;
	return write_heads(&o);
}
