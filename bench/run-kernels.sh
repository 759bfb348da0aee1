#!/usr/bin/env bash
# Generates random models of about 50M, 150M and 500M parameters in f16 and q8_0 into a
# scratch folder (never the repository) and runs specd-bench-kernels on each with 1 and
# 2 threads: read bandwidth, plain-decode tokens/s against the bandwidth bound, and the
# cost of a forward over n = 1..9 tokens. Markdown on stdout; docs/performance.md.
#
# usage: bench/run-kernels.sh BUILD_DIR [SCRATCH_DIR] [REPEATS]
#   SIZES="50M 150M 500M" TYPES="f16 q8_0" THREADS="1 2" override the grid.
set -euo pipefail

build=${1:?usage: bench/run-kernels.sh BUILD_DIR [SCRATCH_DIR] [REPEATS]}
scratch=${2:-${TMPDIR:-/tmp}/specd-bench-kernels}
repeats=${3:-3}
sizes=${SIZES:-50M 150M 500M}
types=${TYPES:-f16 q8_0}
threads=${THREADS:-1 2}
gen=$build/tools/specd-gen-model
bench=$build/bench/specd-bench-kernels

mkdir -p "$scratch"
echo "# specd-bench-kernels, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in $sizes; do
	for type in $types; do
		model=$scratch/random-$size-$type.gguf
		if [ ! -s "$model" ]; then
			"$gen" -o "$model" --params "$size" --type "$type" --seed 1 >/dev/null 2>&1
		fi
		for t in $threads; do
			for r in $(seq 1 "$repeats"); do
				echo
				echo "## $size $type, $t threads, run $r (load $(cut -d' ' -f1 /proc/loadavg))"
				echo
				"$bench" --model "$model" --threads "$t"
			done
		done
	done
done
echo
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
