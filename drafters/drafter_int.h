/* drafters/ private: the ops tables of the built-in methods, for drafter.c's table. */
#ifndef SPECD_DRAFTERS_DRAFTER_INT_H
#define SPECD_DRAFTERS_DRAFTER_INT_H

#include "drafter.h"

extern const struct draft_ops draft_ngram_ops;
extern const struct draft_ops draft_model_ops;
extern const struct draft_ops draft_medusa_ops;
extern const struct draft_ops draft_eagle_ops;

#endif
