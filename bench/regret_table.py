#!/usr/bin/env python3
"""The regret table of bench/run-regret.sh: reads its runs.tsv and prints Markdown.

For each scenario (link x prompt) every run's speed-up is its tokens/s (the job's Stats,
prefill included) over plain decoding's, interpolated in time between the plain runs that
bracket it on the same cluster; a choice's speed-up is the median over its rounds (the range is shown). The best
fixed choice is the sweep's (method, K) with the highest median speed-up (plain decoding
included); regret = 1 - speed-up / the best's.

    bench/regret_table.py runs.tsv [more-runs.tsv...]

A later file's rows of a (link, setup) replace an earlier file's rows of the same pair (a
setup rerun on its own).
"""
import csv
import statistics
import sys
from collections import defaultdict


def interpolated_none(nones, t):
    """Plain decoding's tokens/s at time t from the (t, tokens/s) runs around it."""
    before = [n for n in nones if n[0] <= t]
    after = [n for n in nones if n[0] >= t]
    if before and after:
        (t0, v0), (t1, v1) = before[-1], after[0]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return (before or after)[-1 if before else 0][1]


def median(runs):
    return statistics.median(r["speedup"] for r in runs)


def spread(runs):
    """The median speed-up, with the range when there are several rounds."""
    if len(runs) == 1:
        return "%.2fx" % runs[0]["speedup"]
    lo, hi = min(r["speedup"] for r in runs), max(r["speedup"] for r in runs)
    return "%.2fx (%.2f–%.2f)" % (median(runs), lo, hi)


def main(paths):
    rows = []
    for path in paths:
        new = list(csv.DictReader(open(path), delimiter="\t"))
        redone = {(r["link"], r["setup"]) for r in new}
        rows = [r for r in rows if (r["link"], r["setup"]) not in redone] + new
    for r in rows:
        r["t"] = float(r["t"])
        r["tokens_per_s"] = float(r["tokens_per_s"])
    nones = defaultdict(list)
    for r in rows:
        if r["method"] == "none":
            nones[(r["link"], r["setup"], r["prompt"])].append((r["t"], r["tokens_per_s"]))
    scen = defaultdict(list)
    for r in rows:
        if r["method"] == "none":
            continue
        base = interpolated_none(sorted(nones[(r["link"], r["setup"], r["prompt"])]), r["t"])
        r["speedup"] = r["tokens_per_s"] / base if base > 0 else 0.0
        scen[(r["link"], r["prompt"])].append(r)
    rounds = max(int(r.get("round") or 1) for r in rows) if rows else 1

    print("| link | prompt | best fixed (sweep) | its speed-up | selector ran | selector "
          "speed-up | selector regret | rule table ran | rule speed-up | rule regret | "
          "lossless |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    sel_regrets, rule_regrets = [], []
    for (link, prompt), rs in sorted(scen.items()):
        choices = defaultdict(list)  # a fixed (method, K), or the selector's or rule's setup
        for r in rs:
            fixed = r["setup"] in ("draft_model", "ngram")
            choices["%s K %s" % (r["method"], r["k"]) if fixed else r["setup"]].append(r)
        best_name, best = "none", 1.0
        for name, got in choices.items():
            if name not in ("selector", "rule") and median(got) > best:
                best_name, best = name, median(got)
        lossless = all(r["same_text"] != "no" for r in rs)
        cells = []
        for setup, acc in (("selector", sel_regrets), ("rule", rule_regrets)):
            got = choices.get(setup)
            if not got:
                cells += ["—", "—", "—"]
                continue
            regret = 1.0 - median(got) / best
            acc.append(regret)
            ran = sorted({r["ran"].replace("/", " K ") for r in got})
            cells += ["; ".join(ran), spread(got), "%+.0f %%" % (100 * regret)]
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            link, prompt, best_name, spread(choices[best_name]) if best_name != "none"
            else "1.00x", *cells, "yes" if lossless else "NO"))
    if sel_regrets and rule_regrets:
        print()
        print("Mean regret: selector %.0f %%, worst %.0f %%; rule table %.0f %%, worst %.0f %%." % (
            100 * sum(sel_regrets) / len(sel_regrets), 100 * max(sel_regrets),
            100 * sum(rule_regrets) / len(rule_regrets), 100 * max(rule_regrets)))
    print()
    print("Speed-ups are medians over %d round%s (the range in brackets)." % (
        rounds, "" if rounds == 1 else "s"))
    print()
    print("Every run, speed-up over plain decoding (interpolated):")
    print()
    print("| link | prompt | setup | round | method | K | tokens/s | speed-up | drafted | "
          "accepted | same text |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (link, prompt), rs in sorted(scen.items()):
        for r in rs:
            print("| %s | %s | %s | %s | %s | %s | %.2f | %.2fx | %s | %s | %s |" % (
                link, prompt, r["setup"], r.get("round") or 1, r["ran"].split("/")[0],
                r["ran"].split("/")[-1], r["tokens_per_s"], r["speedup"], r["drafted"],
                r["accepted"], r["same_text"]))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
