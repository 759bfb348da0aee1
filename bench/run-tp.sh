#!/bin/sh
# Tensor-parallel decode tokens/s at T = 1 and T = 2 and the all-reduce cost, on a
# generated ~100M-parameter q8_0 model (docs/performance.md quotes its output).
#   bench/run-tp.sh BUILD_DIR [ROUNDS] [TOKENS]
# Rounds alternate T = 1 and T = 2 so both see the same background load; each round's
# line is specd-bench-tp's median over 3 repeats.
set -eu
build=${1:?usage: bench/run-tp.sh BUILD_DIR [ROUNDS] [TOKENS]}
rounds=${2:-3}
tokens=${3:-16}
model=${TMPDIR:-/tmp}/specd-bench-tp-100M.gguf
[ -f "$model" ] || "$build/tools/specd-gen-model" -o "$model" --params 100M --type q8_0 --seed 5
mpirun_flags="--allow-run-as-root --oversubscribe --bind-to none"
i=0
while [ $i -lt "$rounds" ]; do
	for t in 1 2; do
		SPECD_LOG_LEVEL=warn mpirun $mpirun_flags -np $t "$build/bench/specd-bench-tp" \
			"$model" "$tokens" 3 | grep '^T='
	done
	i=$((i + 1))
done
