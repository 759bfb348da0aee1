/* Prompt text -> ids (tok_encode): the SentencePiece-style merge loop. Symbols are the
 * UTF-8 characters of the normalised text in a linked list; candidate pairs sit in a
 * max-heap by (score, leftmost), so a text of n characters costs O(n log n). */
#include "tokenizer_int.h"

#include <assert.h>
#include <string.h>

#include "common/alloc.h"

struct tok_sym {
	int32_t prev, next; /* neighbours in the list, -1 at the ends */
	uint32_t start;     /* byte offset in the normalised text */
	uint32_t len;       /* bytes; 0 once merged into its left neighbour */
};

struct tok_pair {
	float score;
	int32_t left;  /* the left symbol; its index is also its position in the text */
	uint32_t len;  /* bytes of the merged piece, to spot pairs that went stale */
};

/* Whether a should leave the heap before b: higher score, then the leftmost. */
static bool tok_pair_before(const struct tok_pair *a, const struct tok_pair *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void tok_heap_push(struct tok_pair *heap, size_t *n, struct tok_pair p)
{
	size_t i = (*n)++;

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!tok_pair_before(&p, &heap[parent]))
			break;
		heap[i] = heap[parent];
		i = parent;
	}
	heap[i] = p;
}

static struct tok_pair tok_heap_pop(struct tok_pair *heap, size_t *n)
{
	struct tok_pair top = heap[0], last = heap[--(*n)];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= *n)
			break;
		if (c + 1 < *n && tok_pair_before(&heap[c + 1], &heap[c]))
			c++;
		if (!tok_pair_before(&heap[c], &last))
			break;
		heap[i] = heap[c];
		i = c;
	}
	if (*n > 0)
		heap[i] = last;
	return top;
}

/* Queues the merge of symbols l and r when their concatenation is a piece. */
static void tok_try_pair(const struct tok *t, const char *text, const struct tok_sym *sym,
			 int32_t l, int32_t r, struct tok_pair *heap, size_t *n_heap)
{
	uint32_t len;
	int32_t id;

	if (l < 0 || r < 0)
		return;
	len = sym[l].len + sym[r].len;
	id = tok_lookup(t, text + sym[l].start, len);
	if (id < 0)
		return;
	tok_heap_push(heap, n_heap, (struct tok_pair){ .score = t->scores[id], .left = l,
						      .len = len });
}

size_t tok_encode_bound(size_t len, bool add_bos)
{
	/* Worst case: every byte a space whose "▁" falls back to 3 byte tokens, plus the
	 * prefixed one and BOS. */
	if (len > (SIZE_MAX - 8) / 3)
		return SIZE_MAX;
	return 3 * (len + 1) + (add_bos ? 1 : 0);
}

/* Appends id, or only counts it once the caller's array is full. */
static void tok_emit(int32_t *ids, size_t cap, size_t *n, int32_t id)
{
	if (*n < cap)
		ids[*n] = id;
	(*n)++;
}

enum specd_status tok_encode(const struct tok *t, const char *text, size_t len, bool add_bos,
			     int32_t *ids, size_t cap, size_t *n_out)
{
	if (t->bpe && t->n_user_defined > 0)
		return tok_encode_parts(t, text, len, add_bos, false, ids, cap, n_out);
	return tok_encode_text(t, text, len, add_bos, ids, cap, n_out);
}

enum specd_status tok_encode_text(const struct tok *t, const char *text, size_t len,
				  bool add_bos, int32_t *ids, size_t cap, size_t *n_out)
{
	const unsigned char *in = (const unsigned char *)text;
	size_t n_spaces = 0, n_chars = 0, norm_len, n_heap = 0, n = 0;
	char *norm = NULL;
	struct tok_sym *sym = NULL;
	struct tok_pair *heap = NULL;
	void *ws = NULL;
	int32_t n_sym = 0;

	if ((len > 0 && !text) || (cap > 0 && !ids))
		return SPECD_INVAL;
	if (add_bos)
		tok_emit(ids, cap, &n, t->bos);
	if (len == 0)
		goto done;
	/* Offsets are 32-bit in the workspace (3 bytes per input byte at most); a prompt of
	 * gigabytes is no prompt. */
	if (len > ((size_t)1 << 30))
		return SPECD_INVAL;
	if (t->bpe) {
		enum specd_status st = tok_bpe_encode(t, text, len, ids, cap, &n);

		if (st != SPECD_OK)
			return st;
		goto done;
	}

	for (size_t i = 0; i < len; i += tok_utf8_char_len(in + i, len - i)) {
		n_spaces += in[i] == ' ';
		n_chars++;
	}
	n_chars += t->add_space_prefix ? 1 : 0;
	norm_len = len + n_spaces * (TOK_SPACE_MARK_LEN - 1) +
		   (t->add_space_prefix ? TOK_SPACE_MARK_LEN : 0);

	/* One block: symbols, then pairs (the initial n-1 plus at most two per merge),
	 * then the text. */
	{
		size_t sym_bytes = n_chars * sizeof(*sym);
		size_t heap_bytes = 3 * n_chars * sizeof(*heap);

		ws = specd_malloc_array(sym_bytes + heap_bytes + norm_len, 1);
		if (!ws)
			return SPECD_NOMEM;
		sym = ws;
		heap = (struct tok_pair *)((char *)ws + sym_bytes);
		norm = (char *)ws + sym_bytes + heap_bytes;
	}

	{
		size_t o = 0;

		if (t->add_space_prefix) {
			memcpy(norm, TOK_SPACE_MARK, TOK_SPACE_MARK_LEN);
			o = TOK_SPACE_MARK_LEN;
		}
		for (size_t i = 0; i < len; i++) {
			if (in[i] == ' ') {
				memcpy(norm + o, TOK_SPACE_MARK, TOK_SPACE_MARK_LEN);
				o += TOK_SPACE_MARK_LEN;
			} else {
				norm[o++] = (char)in[i];
			}
		}
	}
	for (size_t o = 0; o < norm_len; n_sym++) {
		size_t cl = tok_utf8_char_len((const unsigned char *)norm + o, norm_len - o);

		sym[n_sym] = (struct tok_sym){ .prev = n_sym - 1, .next = n_sym + 1,
					       .start = (uint32_t)o, .len = (uint32_t)cl };
		o += cl;
	}
	/* Spaces and the prefix are one character in either spelling, and "▁" starts with
	 * a lead byte, so the split matches the count the workspace was sized by. */
	assert((size_t)n_sym == n_chars);
	sym[n_sym - 1].next = -1;

	for (int32_t i = 0; i + 1 < n_sym; i++)
		tok_try_pair(t, norm, sym, i, i + 1, heap, &n_heap);
	while (n_heap > 0) {
		struct tok_pair p = tok_heap_pop(heap, &n_heap);
		struct tok_sym *l = &sym[p.left], *r;

		/* Stale: a side was merged elsewhere (lengths only grow, or drop to 0). */
		if (l->len == 0 || l->next < 0)
			continue;
		r = &sym[l->next];
		if (r->len == 0 || l->len + r->len != p.len)
			continue;
		l->len += r->len;
		r->len = 0;
		l->next = r->next;
		if (l->next >= 0)
			sym[l->next].prev = p.left;
		tok_try_pair(t, norm, sym, l->prev, p.left, heap, &n_heap);
		tok_try_pair(t, norm, sym, p.left, l->next, heap, &n_heap);
	}

	for (int32_t i = 0; i >= 0; i = sym[i].next) {
		int32_t id = tok_lookup(t, norm + sym[i].start, sym[i].len);

		if (id >= 0) {
			tok_emit(ids, cap, &n, id);
			continue;
		}
		for (uint32_t k = 0; k < sym[i].len; k++) {
			int32_t b = t->byte_id[(unsigned char)norm[sym[i].start + k]];

			tok_emit(ids, cap, &n, b >= 0 ? b : t->unk);
		}
	}
	specd_free(ws);
done:
	*n_out = n;
	return n <= cap ? SPECD_OK : SPECD_INVAL;
}
