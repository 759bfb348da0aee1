/* Loading Medusa heads (medusa.h): the safetensors file is mapped read-only, its
 * header parsed by the model module's reader, each head's tensors found by the
 * reference repository's names and checked against the target before anything runs. */
#include "medusa_int.h"

#include <stdio.h>

#include "common/alloc.h"
#include "model/gguf.h"
#include "model/safetensors.h"
#include "model/llama.h"

/* Names are tried with this prefix and bare (Medusa's own saved head files). */
static const char *const k_prefixes[] = {"medusa_head.", ""};

struct loader {
	const char *prefix;
	struct medusa_heads *h;
	struct specd_error *err;
};

/* The tensors of head i, block or layer j. */
enum part { PART_WEIGHT, PART_BIAS, PART_LM };

static const struct safetensors_tensor *find(const struct loader *l, enum part part, uint32_t i,
				       uint32_t j, char *name, size_t cap)
{
	snprintf(name, cap, "%s%u.%u.%s", l->prefix, i, j,
		 part == PART_WEIGHT ? "linear.weight" : part == PART_BIAS ? "linear.bias"
									    : "weight");
	return safetensors_file_find(l->h->file, name);
}

/* The target's LM head from its file: output.weight, or token_embd.weight when tied. */
static enum specd_status shared_lm(struct loader *l, const struct model *target,
				   struct kern_mat *out)
{
	const struct gguf_tensor *t = model_lm_head(target);

	if (!t || t->ne[0] != l->h->dim || t->ne[1] != l->h->n_vocab)
		return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: the heads share the target's "
				    "LM head, and the target has none of %u x %u", l->h->file->path,
				    l->h->n_vocab, l->h->dim);
	*out = kern_mat_packed(t->type, (size_t)t->ne[0], (size_t)t->ne[1], t->data);
	return SPECD_OK;
}

static enum specd_status load_head(struct loader *l, const struct model *target, uint32_t i)
{
	struct medusa_head *hd = &l->h->head[i];
	const struct safetensors_tensor *t;
	char name[160], what[64];
	enum specd_status st;
	uint32_t dim = l->h->dim;

	snprintf(what, sizeof(what), "the target's hidden size %u", dim);
	for (uint32_t j = 0; (t = find(l, PART_WEIGHT, i, j, name, sizeof(name))); j++) {
		if (j == MEDUSA_MAX_LAYERS)
			return specd_errorf(l->err, SPECD_INVAL, "medusa: %s: head %u has more than "
					    "%d residual blocks", l->h->file->path, i,
					    MEDUSA_MAX_LAYERS);
		if ((st = safetensors_file_matrix(l->h->file, t, dim, dim, what, &hd->block[j].w,
						  l->err)) != SPECD_OK)
			return st;
		t = find(l, PART_BIAS, i, j, name, sizeof(name));
		if ((st = safetensors_file_vector(l->h->file, t, dim, what, &hd->block[j].bias,
						  l->err)) != SPECD_OK)
			return st;
		hd->n_layers = j + 1;
	}
	if ((t = find(l, PART_LM, i, hd->n_layers, name, sizeof(name)))) {
		snprintf(what, sizeof(what), "the target's vocabulary %u x hidden size %u",
			 l->h->n_vocab, dim);
		return safetensors_file_matrix(l->h->file, t, l->h->n_vocab, dim, what, &hd->lm,
					       l->err);
	}
	hd->shared_lm = true;
	return shared_lm(l, target, &hd->lm);
}

void medusa_heads_destroy(struct medusa_heads *h)
{
	if (!h)
		return;
	safetensors_file_close(h->file);
	specd_free(h);
}

enum specd_status medusa_heads_load(const char *path, const struct model *target,
				    struct medusa_heads **out, struct specd_error *err)
{
	struct medusa_heads *h;
	enum specd_status st;

	if (!path || !*path)
		return specd_errorf(err, SPECD_INVAL, "medusa: no heads file (--heads FILE)");
	if (!(h = specd_calloc(1, sizeof(*h))))
		return specd_errorf(err, SPECD_NOMEM, "medusa: out of memory");
	h->dim = model_hparams(target)->dim;
	h->n_vocab = model_hparams(target)->n_vocab;
	if ((st = safetensors_file_open(path, "medusa", &h->file, err)) != SPECD_OK)
		goto fail;
	struct loader l = {.h = h, .err = err};
	char name[160];
	for (size_t p = 0; p < sizeof(k_prefixes) / sizeof(k_prefixes[0]) && !h->n_heads; p++) {
		l.prefix = k_prefixes[p];
		while (h->n_heads < MEDUSA_MAX_HEADS &&
		       find(&l, PART_WEIGHT, h->n_heads, 0, name, sizeof(name)))
			h->n_heads++;
	}
	if (h->n_heads == 0) {
		st = specd_errorf(err, SPECD_INVAL, "medusa: %s holds no Medusa heads (no tensor "
				  "medusa_head.0.0.linear.weight)", path);
		goto fail;
	}
	for (uint32_t i = 0; i < h->n_heads; i++)
		if ((st = load_head(&l, target, i)) != SPECD_OK)
			goto fail;
	*out = h;
	return SPECD_OK;
fail:
	medusa_heads_destroy(h);
	return st;
}
