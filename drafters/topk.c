/* The best few ids of a logits row (drafter_int.h): how tree drafters (Medusa, EAGLE)
 * pick each node's candidates. One pass over the vocabulary, insertion into a short
 * sorted list, so the order is exact and ties fall to the lower id. */
#include <math.h>
#include <string.h>

#include "drafter_int.h"

void draft_top_n(const float *logits, uint32_t n_vocab, uint32_t n, int32_t *out)
{
	for (uint32_t r = 0; r < n; r++)
		out[r] = -1;
	for (uint32_t v = 0; v < n_vocab; v++) {
		float x = logits[v];
		if (isnan(x))
			continue;
		uint32_t r = n;
		while (r > 0 && (out[r - 1] < 0 || x > logits[out[r - 1]]))
			r--;
		if (r == n)
			continue;
		memmove(out + r + 1, out + r, (n - r - 1) * sizeof(*out));
		out[r] = (int32_t)v;
	}
}
