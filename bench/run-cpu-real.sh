#!/usr/bin/env bash
# Plain decoding on the real models (tools/fetch-models) on the CPU, side by side in one
# run: specd with f32 and with 8-bit activations (target.activations), the latter also
# with the weights in huge pages (target.huge_pages), optionally an older specd build
# (BEFORE, run with BEFORE_ARGS) and llama.cpp's llama-bench (LLAMA_BENCH) on the same
# file and thread count. Rounds alternate the programs, so load drifts hit all alike. Prints
# each program's decode tokens/s per round and the median, then the n = 1..5 forward cost
# curve of specd's runs. Markdown on stdout; docs/performance.md.
#
# usage: bench/run-cpu-real.sh BUILD_DIR [ROUNDS]
#   MODELS="file.gguf ..." (default: the three files tools/fetch-models gets, in
#   SPECD_MODELS or ~/.cache/specd/models), THREADS=1, BEFORE=OTHER_BUILD_DIR,
#   BEFORE_ARGS="--activations q8" (flags that build's specd-bench-kernels takes),
#   LLAMA_BENCH=path/to/llama-bench (llama.cpp; built from its source, e.g. the copy in
#   the llama-cpp-python sdist: cmake -DGGML_NATIVE=ON, target llama-bench).
set -euo pipefail

build=${1:?usage: bench/run-cpu-real.sh BUILD_DIR [ROUNDS]}
rounds=${2:-3}
dir=${SPECD_MODELS:-$HOME/.cache/specd/models}
models=${MODELS:-$dir/SmolLM2-135M-Instruct.Q4_1.gguf $dir/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf $dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
threads=${THREADS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# specd-bench-kernels: one decode measurement (16 steps x 3 after a 32-token prefix)
# and the forward curve; prints "tokens/s curve..." on one line.
specd_once() { # BENCH ACT MODEL [MORE FLAGS]
	"$1" --model "$3" --threads "$threads" --activations "$2" "${@:4}" --reps 3 --decode 16 \
		--curve 5 --bw-mb 256 >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
	local tps curve
	tps=$(awk -F'|' '/^\| .*\.gguf/ {print $(NF-3)}' "$tmp/out" | tr -d ' ')
	curve=$(awk '/^\| 1\.00/ {print}' "$tmp/out" | tr -d '|' | xargs)
	echo "$tps $curve"
}

# An older build: BEFORE_ARGS as it takes them (none: its defaults).
before_once() { # MODEL
	# shellcheck disable=SC2086 # BEFORE_ARGS is a list of flags
	"$BEFORE/bench/specd-bench-kernels" --model "$1" --threads "$threads" ${BEFORE_ARGS:-} --reps 3 \
		--decode 16 --curve 5 --bw-mb 256 >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; return 1; }
	awk -F'|' '/^\| .*\.gguf/ {print $(NF-3)}' "$tmp/out" | tr -d ' '
}

llama_once() { # MODEL: tg32 tokens/s, median of llama-bench's 3 repetitions' mean
	"$LLAMA_BENCH" -m "$1" -t "$threads" -p 0 -n 32 -r 3 -o csv 2>/dev/null |
		awk -F',' 'NR == 1 {for (i = 1; i <= NF; i++) if ($i ~ /avg_ts/) c = i}
			   NR > 1 && c {gsub(/"/, "", $c); printf "%.1f\n", $c}' | tail -1
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo "# plain decoding, $threads thread(s), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $models; do
	[ -s "$m" ] || { echo "# $m: missing (tools/fetch-models)"; continue; }
	f32="" q8="" q8h="" bef="" lc="" cf="" cq="" ch=""
	for _ in $(seq 1 "$rounds"); do
		read -r t c <<<"$(specd_once "$build/bench/specd-bench-kernels" f32 "$m")"
		f32="$f32 $t" cf=$c
		read -r t c <<<"$(specd_once "$build/bench/specd-bench-kernels" q8 "$m")"
		q8="$q8 $t" cq=$c
		read -r t c <<<"$(specd_once "$build/bench/specd-bench-kernels" q8 "$m" --huge-pages on)"
		q8h="$q8h $t" ch=$c
		[ -z "${BEFORE:-}" ] || bef="$bef $(before_once "$m")"
		[ -z "${LLAMA_BENCH:-}" ] || lc="$lc $(llama_once "$m")"
	done
	echo
	echo "## $(basename "$m") (load after: $(cut -d' ' -f1 /proc/loadavg))"
	echo
	echo "| program | tokens/s per round | median |"
	echo "| --- | --- | --- |"
	[ -z "$bef" ] || echo "| specd before (${BEFORE_ARGS:-its defaults}) | ${bef# } | $(median <<<"$bef") |"
	echo "| specd, f32 activations | ${f32# } | $(median <<<"$f32") |"
	echo "| specd, q8 activations | ${q8# } | $(median <<<"$q8") |"
	echo "| specd, q8 activations, huge pages | ${q8h# } | $(median <<<"$q8h") |"
	[ -z "$lc" ] || echo "| llama.cpp (llama-bench tg32) | ${lc# } | $(median <<<"$lc") |"
	echo
	echo "forward over n = 1..5 tokens relative to n = 1 (last round): f32 $cf; q8 $cq;"
	echo "q8 in huge pages $ch"
done
