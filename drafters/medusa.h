/* Medusa (Cai et al. 2401.10774): N heads on the target's final hidden state, head i
 * guessing the token i + 2 positions past that state (the target's own LM head gives
 * i + 1). Each head is num_layers residual blocks x <- x + SiLU(W x + b) followed by an
 * LM head (its own, or the target's shared one). Top candidates per head form a token
 * tree that the engine verifies in one target forward (drafters/verify.h).
 *
 * The heads file is safetensors with the reference repository's tensor names
 * (FasterDecoding/Medusa; "medusa_head." may be left out, as its saved head files do):
 *   medusa_head.{i}.{j}.linear.weight  (dim, dim)   j < num_layers
 *   medusa_head.{i}.{j}.linear.bias    (dim)        optional (zeros)
 *   medusa_head.{i}.{num_layers}.weight (n_vocab, dim) optional: absent, the head uses
 *                                        the target's LM head (output.weight, or the
 *                                        tied token_embd.weight)
 * in F32, F16 or BF16. Heads whose hidden size or vocabulary differ from the target's
 * are refused, with the tensor and both sizes named.
 *
 * Threads: the compute thread (as every drafter). */
#ifndef SPECD_DRAFTERS_MEDUSA_H
#define SPECD_DRAFTERS_MEDUSA_H

#include <stdint.h>

#include "common/status.h"

#define MEDUSA_MAX_HEADS 16
#define MEDUSA_MAX_RANK 10 /* candidates taken from one head, at most */

/* The static tree Medusa proposes with k nodes and n_heads heads: the k root paths most
 * likely under a fixed prior (a candidate of rank r, 0-based, from a head is right with
 * weight 1 / (r + 2), independently per level), best first, so every prefix of the
 * order is itself the best tree of its size, every parent comes before its children
 * and siblings come in rank order. Node i is candidate rank[i] of head depth[i] (the
 * level, 0-based) below node parent[i] (-1: the root). Arrays of k entries. Errors:
 * SPECD_INVAL (k or n_heads 0, k > 64, n_heads > MEDUSA_MAX_HEADS). */
enum specd_status draft_medusa_tree(uint32_t k, uint32_t n_heads, int32_t *parent,
				    uint32_t *depth, uint32_t *rank);

#endif
