#!/bin/sh
# The dedicated draft rank: decode tokens/s with pipelined drafting on and off (and the
# drafter inside the leader for reference), greedy, on a generated ~30M-parameter q8_0
# target with a q4_0 copy of itself as the draft model (close to the target, so most
# guesses are right: where pipelining can pay), and with the target as its own draft
# (every guess right: the most pipelining can give). docs/performance.md quotes it.
#   bench/run-draft-rank.sh BUILD_DIR [ROUNDS] [TOKENS] [K]
# Rounds alternate the three setups so all see the same background load.
set -eu
build=${1:?usage: bench/run-draft-rank.sh BUILD_DIR [ROUNDS] [TOKENS] [K]}
rounds=${2:-3}
tokens=${3:-128}
k=${4:-4}
dir=${TMPDIR:-/tmp}
target=$dir/specd-bench-dr-30M-q8_0.gguf
draft=$dir/specd-bench-dr-30M-q4_0.gguf
gen="$build/tools/specd-gen-model"
[ -f "$target" ] || "$gen" -o "$target" --params 30M --type q8_0 --ctx 1024 --seed 5 >/dev/null 2>&1
[ -f "$draft" ] || "$gen" -o "$draft" --params 30M --type q4_0 --ctx 1024 --seed 5 >/dev/null 2>&1
run="$build/daemon/specd-run"
mpirun="mpirun --allow-run-as-root --oversubscribe --bind-to none"
i=0
while [ $i -lt "$rounds" ]; do
	for d in "$draft" "$target"; do
	# one thread a process, as the tables were made (specd-run's default is auto)
	common="-m $target -p hello -n $tokens --method draft_model --draft $d --spec-tokens $k --threads 1"
	for setup in leader "rank off" "rank on"; do
		case $setup in
		leader) log=$(SPECD_LOG_LEVEL=warn $run $common 2>&1 >/dev/null) ;;
		*) log=$(SPECD_LOG_LEVEL=warn $mpirun -np 2 $run $common --placement rank \
			--pipeline "${setup#rank }" 2>&1 >/dev/null) ;;
		esac
		tps=$(printf '%s\n' "$log" | sed -n 's/.*generated .* (\([0-9.]*\) tokens\/s).*/\1/p')
		acc=$(printf '%s\n' "$log" | sed -n 's/.*mean acceptance length \([0-9.]*\).*/\1/p')
		ahead=$(printf '%s\n' "$log" | sed -n 's/.*draft rank: \([0-9]*\) proposals, \([0-9]*\) drafted ahead.*/\2\/\1/p')
		printf 'draft=%-5s placement=%-6s pipeline=%-3s tokens/s=%-7s accept_len=%s ahead=%s\n' \
			"$([ "$d" = "$target" ] && echo self || echo q4_0)" "${setup%% *}" \
			"$(echo "$setup" | cut -s -d' ' -f2)" "$tps" "$acc" "${ahead:--}"
	done
	done
	i=$((i + 1))
done
