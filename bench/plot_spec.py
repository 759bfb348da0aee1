#!/usr/bin/env python3
"""The figures of bench/run-spec.sh: reads OUT_DIR/runs.tsv and the stderr of each run,
writes OUT_DIR/spec-bench.json (every run's figures, the losslessness check, per-setup
aggregates), OUT_DIR/spec-bench.md (the tables) and OUT_DIR/spec-bench.png (speedup
against K, one line per method; overall and per prompt).

usage: plot_spec.py [--command CMD] [--tokens N] OUT_DIR
       plot_spec.py --best-k METHOD OUT_DIR   (prints the K with the highest speedup)

A run's speedup is its decode tokens/s over that of none on the same prompt in the same
block of runs, interpolated in time between the none runs before and after it (the
background load on a shared machine drifts). Per setup and prompt: medians over rounds;
overall: the geometric mean over prompts of those medians. Matplotlib is installed with
pip (or Debian's python3-matplotlib) when missing.
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

PROMPT_ORDER = ["code", "edit", "summarise", "story"]
RE_PROMPT = re.compile(r"^specd-run: prompt (\d+) tokens in ([0-9.]+) s")
RE_GEN = re.compile(r"^specd-run: generated (\d+) tokens in ([0-9.]+) s .*stopped: (.*)$")
RE_STEPS = re.compile(r"^specd-run: steps (\d+), drafted (\d+), accepted (\d+) .*"
                      r"mean acceptance length ([0-9.]+) tokens/step")
RE_BYPOS = re.compile(r"^specd-run: acceptance by position:(.*)$")
RE_TIME = re.compile(r"^specd-run: time: prefill ([0-9.]+) s, draft ([0-9.]+) s, "
                     r"verify ([0-9.]+) s, decode ([0-9.]+) s")
RE_RANK = re.compile(r"^specd-run: draft rank: (\d+) proposals, (\d+) drafted ahead "
                     r"\(pipelining\), ([0-9.]+) s waited")


def parse_log(path):
    """The figures specd-run printed on stderr; missing ones stay absent."""
    r = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if m := RE_PROMPT.match(line):
                r["prompt_tokens"], r["prefill_s"] = int(m[1]), float(m[2])
            elif m := RE_GEN.match(line):
                r["generated"], r["decode_s"], r["stopped"] = int(m[1]), float(m[2]), m[3]
            elif m := RE_STEPS.match(line):
                r["steps"], r["drafted"], r["accepted"] = int(m[1]), int(m[2]), int(m[3])
                r["mean_accept_len"] = float(m[4])
            elif m := RE_BYPOS.match(line):
                r["accept_by_position"] = {int(p): float(v.rstrip("%")) / 100.0
                                           for p, v in (x.split(":") for x in m[1].split())}
            elif m := RE_TIME.match(line):
                r["draft_s"], r["verify_s"] = float(m[2]), float(m[3])
            elif m := RE_RANK.match(line):
                r["rank_proposals"], r["rank_ahead"] = int(m[1]), int(m[2])
                r["rank_wait_s"] = float(m[3])
    if r.get("decode_s"):
        # From the 3-decimal seconds, not the 1-decimal rate specd-run prints.
        r["tokens_per_s"] = r["generated"] / r["decode_s"]
    return r


def load_runs(out):
    runs = []
    with open(os.path.join(out, "runs.tsv"), encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            run = {"round": int(row["round"]), "prompt": row["prompt"], "setup": row["setup"],
                   "method": row["method"], "k": int(row["k"]), "placement": row["placement"],
                   "pipeline": None if row["pipeline"] == "-" else row["pipeline"],
                   "start": float(row["start"]), "end": float(row["end"]),
                   "rc": int(row["rc"]), "stdout": os.path.relpath(row["stdout"], out),
                   "stderr": os.path.relpath(row["stderr"], out)}
            run.update(parse_log(row["stderr"]))
            with open(row["stdout"], encoding="utf-8", errors="replace") as t:
                run["_text"] = t.read()
            runs.append(run)
    return runs


def check_lossless(runs):
    """Marks each run with whether its text equals the first none run's on its prompt."""
    ref = {}
    for r in runs:
        if r["method"] == "none" and r["rc"] == 0 and r["prompt"] not in ref:
            ref[r["prompt"]] = r["_text"]
    for r in runs:
        want = ref.get(r["prompt"])
        if want is None or r["rc"] != 0:
            r["matches_none"] = None
            continue
        r["matches_none"] = r["_text"] == want
        if not r["matches_none"]:
            n = next((i for i, (a, b) in enumerate(zip(r["_text"], want)) if a != b),
                     min(len(r["_text"]), len(want)))
            r["first_difference_at_char"] = n


def add_speedups(runs):
    """Each run's tokens/s over none's, interpolated in time within its (round, prompt)."""
    for r in runs:
        if "tokens_per_s" not in r:
            continue
        if r["method"] == "none":
            r["speedup"] = 1.0
            continue
        mid = (r["start"] + r["end"]) / 2
        base = [((b["start"] + b["end"]) / 2, b["tokens_per_s"]) for b in runs
                if b["method"] == "none" and b["round"] == r["round"]
                and b["prompt"] == r["prompt"] and "tokens_per_s" in b]
        before = max((b for b in base if b[0] <= mid), default=None)
        after = min((b for b in base if b[0] > mid), default=None)
        if before and after:
            w = (mid - before[0]) / (after[0] - before[0])
            ref = before[1] + w * (after[1] - before[1])
        elif before or after:
            ref = (before or after)[1]
        else:
            continue
        r["none_tokens_per_s"] = ref
        r["speedup"] = r["tokens_per_s"] / ref


def setup_key(setup):
    """Order: none, ngram by K, draft_model by K, medusa by K, eagle by K, then the rank
    setups by K."""
    if setup == "none":
        return (0, 0, "")
    name, k = setup.split(":")
    return ({"ngram": 1, "draft_model": 2, "medusa": 3, "eagle": 4}.get(name, 5), int(k), name)


def sum_of(runs, key):
    return sum(r.get(key, 0) for r in runs)


def summarise(rs):
    """Aggregates of one setup's runs (on one prompt or all)."""
    ok = [r for r in rs if "tokens_per_s" in r]
    a = {"runs": len(rs), "failed": len(rs) - len(ok)}
    if ok:
        a["median_tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in ok)
        sp = [r["speedup"] for r in ok if "speedup" in r]
        if sp:
            a["median_speedup"] = statistics.median(sp)
            a["speedups"] = sp
    if sum_of(ok, "drafted"):
        a["drafted"] = sum_of(ok, "drafted")
        a["accepted"] = sum_of(ok, "accepted")
        a["acceptance"] = a["accepted"] / a["drafted"]
    if sum_of(ok, "steps"):
        a["mean_accept_len"] = (sum(r["mean_accept_len"] * r["steps"] for r in ok)
                                / sum_of(ok, "steps"))
    if any("rank_proposals" in r for r in ok):
        a["rank_proposals"] = sum_of(ok, "rank_proposals")
        a["rank_ahead"] = sum_of(ok, "rank_ahead")
        a["rank_wait_s"] = sum_of(ok, "rank_wait_s")
    checked = [r["matches_none"] for r in rs if r.get("matches_none") is not None]
    a["lossless"] = all(checked) if checked else None
    return a


def aggregate(runs):
    prompts = sorted({r["prompt"] for r in runs},
                     key=lambda p: (PROMPT_ORDER.index(p) if p in PROMPT_ORDER else 99, p))
    setups = sorted({r["setup"] for r in runs}, key=setup_key)
    agg = {}
    for s in setups:
        first = next(r for r in runs if r["setup"] == s)
        per = {p: summarise([r for r in runs if r["setup"] == s and r["prompt"] == p])
               for p in prompts}
        meds = [per[p]["median_speedup"] for p in prompts if "median_speedup" in per[p]]
        overall = summarise([r for r in runs if r["setup"] == s])
        overall.pop("median_tokens_per_s", None)  # not comparable across prompts
        overall.pop("median_speedup", None)
        overall.pop("speedups", None)
        if len(meds) == len(prompts):
            overall["geomean_speedup"] = math.exp(sum(math.log(x) for x in meds) / len(meds))
        agg[s] = {"method": first["method"], "k": first["k"], "placement": first["placement"],
                  "pipeline": first["pipeline"], "per_prompt": per, "overall": overall}
    return prompts, setups, agg


def best_k(agg, method):
    cands = [(a["overall"].get("geomean_speedup", 0.0), a["k"]) for a in agg.values()
             if a["method"] == method and a["placement"] == "leader"]
    if not cands:
        raise SystemExit(f"plot_spec.py: no {method} runs to choose a K from")
    return max(cands)[1]


def label(a):
    if a["placement"] == "rank":
        return f"draft_model, draft rank, pipelining {a['pipeline']}"
    return a["method"] if a["method"] != "draft_model" else "draft_model (in the leader)"


def threads_text(meta):
    n = meta.get("threads", 1)
    return "one compute thread per process" if n == 1 else f"{n} compute threads per process"


def fmt(x, spec, none="—"):
    return none if x is None else format(x, spec)


def write_markdown(path, meta, prompts, setups, agg):
    lines = [f"Speculative decoding on {meta['target']} (draft {meta['draft']}), greedy, "
             f"{meta['tokens']} new tokens per run, {meta['rounds']} round(s), "
             f"{threads_text(meta)}; {meta['when']}.", "",
             "Speedup over `none` (decode tokens/s ratio, measured side by side; per prompt "
             "the median over rounds, overall the geometric mean over prompts), acceptance "
             "(accepted / drafted), mean acceptance length (tokens per verify step) and "
             "whether the text equals `none`'s:", ""]
    head = ["method", "K", "overall"] + prompts + ["acceptance", "accept len", "lossless"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in setups:
        a = agg[s]
        o = a["overall"]
        cells = [label(a), str(a["k"]) if a["k"] else "—",
                 fmt(o.get("geomean_speedup"), ".2f")]
        cells += [fmt(a["per_prompt"][p].get("median_speedup"), ".2f") for p in prompts]
        cells += [fmt(o.get("acceptance") and 100 * o["acceptance"], ".0f") + (
            " %" if o.get("acceptance") is not None else ""),
            fmt(o.get("mean_accept_len") if a["method"] != "none" else None, ".2f"),
            {True: "yes", False: "**NO**", None: "—"}[o["lossless"]]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Decode tokens/s (median over rounds) and, for speculation, acceptance "
              "and mean acceptance length, per prompt:", ""]
    head = ["method", "K"] + prompts
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in setups:
        a = agg[s]
        cells = [label(a), str(a["k"]) if a["k"] else "—"]
        for p in prompts:
            pp = a["per_prompt"][p]
            c = fmt(pp.get("median_tokens_per_s"), ".2f")
            if pp.get("acceptance") is not None:
                c += f" ({100 * pp['acceptance']:.0f} %, {pp['mean_accept_len']:.2f})"
            cells.append(c)
        lines.append("| " + " | ".join(cells) + " |")
    rank = [s for s in setups if agg[s]["placement"] == "rank"]
    if rank:
        lines += ["", "Draft rank: proposals drafted ahead while the target verified "
                  "(pipelining hits) and seconds the leader waited for proposals, all "
                  "prompts and rounds:", "",
                  "| K | pipelining | drafted ahead / proposals | waited (s) |",
                  "| --- | --- | --- | --- |"]
        for s in rank:
            o = agg[s]["overall"]
            lines.append(f"| {agg[s]['k']} | {agg[s]['pipeline']} | "
                         f"{o.get('rank_ahead', 0)} / {o.get('rank_proposals', 0)} | "
                         f"{o.get('rank_wait_s', 0):.1f} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def import_pyplot():
    """matplotlib.pyplot with the Agg backend, installing matplotlib when missing."""
    try:
        import matplotlib
    except ImportError:
        print("plot_spec.py: installing matplotlib (pip)", file=sys.stderr)
        rc = subprocess.call([sys.executable, "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "matplotlib"],
                             stdout=sys.stderr)
        if rc != 0:
            print("plot_spec.py: pip failed; trying apt-get python3-matplotlib",
                  file=sys.stderr)
            subprocess.call(["apt-get", "install", "-y", "-q", "python3-matplotlib"],
                            stdout=sys.stderr)
            sys.path.append("/usr/lib/python3/dist-packages")
        import importlib
        importlib.invalidate_caches()
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plot(path, meta, prompts, agg):
    plt = import_pyplot()
    panels = ["overall"] + prompts
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), sharey=True)
    styles = {"ngram": ("tab:blue", "o", "-"),
              "draft_model": ("tab:orange", "s", "-"),
              "medusa": ("tab:purple", "D", "-"),
              "eagle": ("tab:brown", "P", "-"),
              "off": ("tab:green", "^", "none"),
              "on": ("tab:red", "v", "none")}
    lines = {}
    for a in agg.values():
        if a["method"] == "none":
            continue
        name = label(a)
        style = styles[a["pipeline"] if a["placement"] == "rank" else a["method"]]
        lines.setdefault(name, (style, []))[1].append(a)
    for ax, panel in zip(axes, panels):
        for name, (style, items) in lines.items():
            items = sorted(items, key=lambda a: a["k"])
            if panel == "overall":
                pts = [(a["k"], a["overall"].get("geomean_speedup")) for a in items]
            else:
                pts = [(a["k"], a["per_prompt"][panel].get("median_speedup")) for a in items]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=style[0],
                        marker=style[1], linestyle=style[2], label=name)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(sorted({a["k"] for a in agg.values() if a["k"]}))
        ax.set_title(panel if panel != "overall" else "overall (geometric mean)")
        ax.set_xlabel("K (tokens drafted per step)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over none (decode tokens/s)")
    handles = {}
    for ax in axes:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles),
               fontsize=9)
    fig.suptitle(f"Speculative decoding, {meta['target']} (draft {meta['draft']}), "
                 f"greedy, {threads_text(meta)}, {meta['when']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="the folder bench/run-spec.sh wrote")
    ap.add_argument("--best-k", metavar="METHOD", help="print METHOD's best K and stop")
    ap.add_argument("--command", default="", help="the command line, for the record")
    ap.add_argument("--tokens", type=int, default=0, help="new tokens per run")
    ap.add_argument("--threads", type=int, default=1, help="compute threads per process")
    ap.add_argument("--target", default="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
                    help="the target, as the tables name it")
    ap.add_argument("--draft", default="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
                    help="draft_model's model, as the tables name it")
    a = ap.parse_args()
    runs = load_runs(a.out)
    check_lossless(runs)
    add_speedups(runs)
    prompts, setups, agg = aggregate(runs)
    if a.best_k:
        print(best_k(agg, a.best_k))
        return 0
    t0, t1 = min(r["start"] for r in runs), max(r["end"] for r in runs)
    when = datetime.datetime.fromtimestamp(t0, datetime.timezone.utc)
    meta = {"command": a.command, "tokens": a.tokens, "threads": a.threads,
            "rounds": max(r["round"] for r in runs),
            "target": a.target, "draft": a.draft,
            "when": when.strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": round(t1 - t0, 1), "machine": platform.machine(),
            "cpus": os.cpu_count(), "prompts": prompts}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            meta["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f
                               if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mismatched = [r for r in runs if r.get("matches_none") is False]
    failed = [r for r in runs if r["rc"] != 0 or "tokens_per_s" not in r]
    doc = {"meta": meta,
           "lossless": {"checked": sum(r.get("matches_none") is not None for r in runs),
                        "mismatched": [{k: r[k] for k in ("round", "prompt", "setup",
                                                          "first_difference_at_char",
                                                          "stdout")}
                                       for r in mismatched]},
           "failed": [{k: r[k] for k in ("round", "prompt", "setup", "rc", "stderr")}
                      for r in failed],
           "aggregates": agg,
           "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]}
    with open(os.path.join(a.out, "spec-bench.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    write_markdown(os.path.join(a.out, "spec-bench.md"), meta, prompts, setups, agg)
    write_plot(os.path.join(a.out, "spec-bench.png"), meta, prompts, agg)
    for r in mismatched:
        print(f"plot_spec.py: round {r['round']} {r['prompt']} {r['setup']}: the text differs "
              f"from none's at character {r['first_difference_at_char']}", file=sys.stderr)
    for r in failed:
        print(f"plot_spec.py: round {r['round']} {r['prompt']} {r['setup']}: failed "
              f"(rc {r['rc']}, see {r['stderr']})", file=sys.stderr)
    return 1 if mismatched or failed else 0


if __name__ == "__main__":
    sys.exit(main())
