/* Speculation statistics per job (definitions in metrics.h): counted by the engine
 * after each verify, read by specd-run and later by the daemon's status and the
 * selector's online adaptation. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void draft_metrics_init(struct draft_metrics *m, uint32_t k)
{
	memset(m, 0, sizeof(*m));
	m->k = k;
}

void draft_metrics_add_step(struct draft_metrics *m, uint32_t n_drafted, uint32_t n_accepted)
{
	m->steps++;
	m->drafted += n_drafted;
	m->accepted += n_accepted;
	m->emitted += n_accepted + 1;
	for (uint32_t i = 0; i < n_drafted && i < DRAFT_MAX_TOKENS; i++) {
		m->proposed_at[i]++;
		if (i < n_accepted)
			m->accepted_at[i]++;
	}
}

void draft_metrics_add_tree(struct draft_metrics *m, uint32_t n_nodes, uint32_t depth,
			    uint32_t n_accepted)
{
	draft_metrics_add_step(m, depth, n_accepted);
	m->drafted += n_nodes - depth;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0.0;
}

double draft_metrics_acceptance_rate(const struct draft_metrics *m)
{
	return ratio((double)m->accepted, (double)m->drafted);
}

double draft_metrics_mean_accept_len(const struct draft_metrics *m)
{
	return ratio((double)m->emitted, (double)m->steps);
}

double draft_metrics_position_rate(const struct draft_metrics *m, uint32_t i)
{
	if (i < 1 || i > DRAFT_MAX_TOKENS)
		return 0.0;
	return ratio((double)m->accepted_at[i - 1], (double)m->proposed_at[i - 1]);
}

double draft_metrics_efficiency(const struct draft_metrics *m)
{
	return ratio((double)m->emitted, (double)m->steps * (double)(m->k + 1));
}

double draft_metrics_tokens_per_s(const struct draft_metrics *m)
{
	return ratio((double)m->generated, m->t_decode);
}

/* snprintf that keeps counting past the end of buf. */
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(*len < cap ? buf + *len : NULL, *len < cap ? cap - *len : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*len += (size_t)n;
}

size_t draft_metrics_format(const struct draft_metrics *m, const char *prefix, char *buf,
			    size_t cap)
{
	size_t len = 0;
	const char *p = prefix ? prefix : "";

	if (cap)
		buf[0] = '\0';
	put(buf, cap, &len, "%ssteps %llu, drafted %llu, accepted %llu (%.1f%%), "
	    "mean acceptance length %.2f tokens/step, system efficiency %.1f%% (K=%u)\n", p,
	    (unsigned long long)m->steps, (unsigned long long)m->drafted,
	    (unsigned long long)m->accepted, 100.0 * draft_metrics_acceptance_rate(m),
	    draft_metrics_mean_accept_len(m), 100.0 * draft_metrics_efficiency(m), m->k);
	if (m->drafted) {
		put(buf, cap, &len, "%sacceptance by position:", p);
		for (uint32_t i = 1; i <= m->k && i <= DRAFT_MAX_TOKENS; i++)
			if (m->proposed_at[i - 1])
				put(buf, cap, &len, " %u:%.0f%%", i,
				    100.0 * draft_metrics_position_rate(m, i));
		put(buf, cap, &len, "\n");
	}
	put(buf, cap, &len, "%stime: prefill %.3f s, draft %.3f s, verify %.3f s, decode %.3f s; "
	    "%.1f tokens/s\n", p, m->t_prefill, m->t_draft, m->t_verify, m->t_decode,
	    draft_metrics_tokens_per_s(m));
	return len;
}
