#!/usr/bin/env bash
# The daemon under load: one cluster (SmolLM2-135M, ngram, 16 KV slots, drafter on the
# leader), then 1, 4 and 16 concurrent clients (bench/serve_bench.c), each with
# speculation as the cluster runs it and turned off per request, the two alternating in
# rounds so both see the same background load. Prints one JSON line per run and a
# Markdown table; docs/performance.md quotes it.
#   bench/run-serve.sh BUILD_DIR [OUT_DIR] [ROUNDS] [MAX_TOKENS] [K]
# K: a fixed K (default 4: every sequence drafts 4 as the batch allows), or `auto`: the
# selector chooses K up to 4 at start-up and the online selector plans each sequence's K
# per step (speculation.adapt).
# Needs specd, specd-bench-serve and mpirun; the model comes from tools/fetch-models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: bench/run-serve.sh BUILD_DIR [OUT_DIR] [ROUNDS] [MAX_TOKENS]}
out=${2:-${TMPDIR:-/tmp}/specd-serve-bench}
rounds=${3:-2}
max_tokens=${4:-64}
k=${5:-4}
if [ "$k" = auto ]; then
	spec_conf="{method: ngram, num_speculative_tokens: auto, max_speculative_tokens: 4}"
	label="ngram adaptive, K <= 4"
else
	spec_conf="{method: ngram, num_speculative_tokens: $k}"
	label="ngram K=$k"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export SPECD_MODELS=${SPECD_MODELS:-$HOME/.cache/specd/models}
"$root/tools/fetch-models" smollm2-135m >&2
model=$SPECD_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$out"
sock=$out/specd.sock
cat >"$out/cluster.yaml" <<EOF
cluster: {name: serve-bench}
server:
  listen: unix:$sock
  limits: {jobs: 64, connections: 64, max_tokens: 512}
target: {model: $model, tensor_parallel: 1, slots: 16, context: 1024, threads: 1}
draft: {placement: leader}
speculation: $spec_conf
EOF
rm -f "$sock"
SPECD_LOG_LEVEL=warn mpirun --oversubscribe --bind-to none -np 1 "$build/daemon/specd" \
	--cluster "$out/cluster.yaml" >"$out/specd.log" 2>&1 &
mpirun_pid=$!
trap 'kill $mpirun_pid 2>/dev/null || true' EXIT
ctl() { "$build/daemon/specctl" --addr "unix:$sock" "$@"; }
for _ in $(seq 600); do
	ctl health >/dev/null 2>&1 && break
	kill -0 $mpirun_pid 2>/dev/null || { cat "$out/specd.log" >&2; exit 1; }
	sleep 0.2
done
ctl health >/dev/null || { echo "the daemon did not come up" >&2; exit 1; }
prompts=("$root"/bench/prompts/*.txt)
: >"$out/serve.jsonl"
for r in $(seq "$rounds"); do
	for clients in 1 4 16; do
		requests=$((clients * 2 > 8 ? clients * 2 : 8))
		for spec in on off; do
			echo "round $r: $clients clients, speculation $spec" >&2
			"$build/bench/specd-bench-serve" --addr "unix:$sock" --clients "$clients" \
				--requests "$requests" --max-tokens "$max_tokens" --spec "$spec" \
				--label "round$r" "${prompts[@]}" | tee -a "$out/serve.jsonl"
		done
	done
done
ctl shutdown >/dev/null
wait $mpirun_pid
trap - EXIT
python3 - "$out/serve.jsonl" "$label" <<'EOF' | tee "$out/serve.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| clients | speculation | requests/s | tokens/s | TTFT p50 (s) | TTFT p90 (s) | tokens/s on/off |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for c in sorted({r["clients"] for r in runs}):
    med = {}
    for spec in (True, False):
        rs = [r for r in runs if r["clients"] == c and r["spec"] == spec]
        med[spec] = {k: statistics.median(r[k] for r in rs)
                     for k in ("requests_per_s", "tokens_per_s", "ttft_p50_s", "ttft_p90_s")}
    # The ratio of medians of runs taken side by side, round by round.
    ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(
        [r for r in runs if r["clients"] == c and r["spec"]],
        [r for r in runs if r["clients"] == c and not r["spec"]])]
    for spec in (True, False):
        m = med[spec]
        print(f"| {c} | {sys.argv[2] if spec else 'off'} | {m['requests_per_s']:.2f} | "
              f"{m['tokens_per_s']:.1f} | {m['ttft_p50_s']:.3f} | {m['ttft_p90_s']:.3f} | "
              + (f"{statistics.median(ratios):.2f}x |" if spec else "|"))
EOF
