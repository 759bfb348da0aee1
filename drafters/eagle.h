/* The EAGLE drafter (Li et al. 2401.15077, EAGLE-2 2406.16858): one decoder layer
 * (model/eagle.h) that reads the target's final hidden states and drafts a token tree
 * from them, which the engine verifies in one target forward (drafters/verify.h).
 *
 * The layer keeps its own KV cache per slot, one entry per position, built from the
 * target's own hidden states: the engine hands them over with every propose
 * (draft_seq.hidden: the prompt's last DRAFT_HIDDEN_ROWS, then each step's accepted
 * path), and the drafter feeds what its cache lacks before drafting. Draft entries
 * beyond them (the tree) are dropped at commit, so the cache rolls back with the
 * target's. Should rows be missing (the method was not the one proposing for a while),
 * it starts its cache over from the rows it has: fewer context, same exactness.
 *
 * Trees: the dynamic tree of EAGLE-2 expands, level by level, the `width` nodes of
 * highest path probability under the draft, each to its `width` best tokens, for
 * `depth` levels, and keeps the k nodes of highest path probability (a child's never
 * exceeds its parent's, so the k form a tree). The static tree (eagle_static) has the
 * fixed shape of draft_medusa_tree(k, depth), each node taking the token of its rank
 * under its parent's draft distribution. Proposals are deterministic (q one-hot,
 * distinct siblings), so sampling stays exact under the tree rule of verify.h.
 *
 * Threads: the compute thread (as every drafter). */
#ifndef SPECD_DRAFTERS_EAGLE_H
#define SPECD_DRAFTERS_EAGLE_H

#define EAGLE_DEFAULT_WIDTH 4
#define EAGLE_DEFAULT_DEPTH 5
#define EAGLE_MAX_WIDTH 10  /* as MEDUSA_MAX_RANK: the static tree's ranks */
#define EAGLE_MAX_DEPTH 16

#endif
