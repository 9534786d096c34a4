/*
 * Latency histogram: constant-time insertion, percentiles by a walk over
 * the bins (no samples are kept, nothing is sorted).
 */
#include "rt.h"

static unsigned int hist_bin(uint64_t ns)
{
    if (ns < HIST_FINE_BINS * HIST_FINE_NS)
        return (unsigned int)(ns / HIST_FINE_NS);
    if (ns < HIST_FINE_BINS * HIST_FINE_NS + HIST_COARSE_BINS * HIST_COARSE_NS)
        return HIST_FINE_BINS +
               (unsigned int)((ns - HIST_FINE_BINS * HIST_FINE_NS) / HIST_COARSE_NS);
    return HIST_NBINS - 1;
}

/* Upper edge of bin b (the overflow bin has none). */
static uint64_t hist_upper_ns(unsigned int b)
{
    if (b < HIST_FINE_BINS)
        return (b + 1) * HIST_FINE_NS;
    if (b < HIST_FINE_BINS + HIST_COARSE_BINS)
        return HIST_FINE_BINS * HIST_FINE_NS + (b - HIST_FINE_BINS + 1) * HIST_COARSE_NS;
    return ~0ull;
}

void hist_add(struct hist *h, uint64_t ns)
{
    h->bin[hist_bin(ns)]++;
    h->count++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned int b = 0; b < HIST_NBINS; b++)
        dst->bin[b] += src->bin[b];
    dst->count += src->count;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t hist_percentile_ns(const struct hist *h, unsigned int pct)
{
    uint64_t want = (h->count * pct + 99) / 100;    /* rank, 1-based */
    uint64_t seen = 0;

    if (h->count == 0)
        return 0;
    if (want == 0)
        want = 1;
    for (unsigned int b = 0; b < HIST_NBINS; b++) {
        seen += h->bin[b];
        if (seen >= want) {
            uint64_t up = hist_upper_ns(b);
            return up < h->max_ns ? up : h->max_ns;
        }
    }
    return h->max_ns;
}
