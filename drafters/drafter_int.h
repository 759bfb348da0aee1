/* drafters/ private: the ops tables of the built-in methods, for drafter.c's table. */
#ifndef SPECD_DRAFTERS_DRAFTER_INT_H
#define SPECD_DRAFTERS_DRAFTER_INT_H

#include "drafter.h"

extern const struct draft_ops draft_ngram_ops;
extern const struct draft_ops draft_model_ops;
extern const struct draft_ops draft_medusa_ops;
extern const struct draft_ops draft_eagle_ops;

/* topk.c: the n best ids of logits[0 .. n_vocab), best first, the lower id first among
 * equals, NaNs skipped; out[r] is -1 where fewer than n ids remain. */
void draft_top_n(const float *logits, uint32_t n_vocab, uint32_t n, int32_t *out);

#endif
