#!/usr/bin/env bash
# Speculative decoding on real models: decode tokens/s of none, ngram, draft_model (by
# default the Qwen2.5-Coder 0.5B drafting for the 1.5B), medusa (given heads) and eagle
# (a given EAGLE checkpoint folder, dynamic tree) for each
# K, and of a dedicated draft rank with pipelining off and on, over the fixed prompts in
# bench/prompts/, greedy, one compute thread per process (--threads). docs/performance.md
# quotes it.
#
#   bench/run-spec.sh BUILD_DIR OUT_DIR [-n TOKENS] [-r ROUNDS] [-k "K..."]
#       [-m "METHOD..."] [--rank-k "K... | best"] [--none-every N] [--prompts DIR]
#       [--target NAME] [--draft NAME] [--heads FILE] [--medusa-k "K..."]
#       [--eagle DIR] [--eagle-k "K..."] [--activations f32|q8] [--threads N]
#
#   -n TOKENS       new tokens per run (default 32)
#   -r ROUNDS       rounds (default 1); every round runs every setup on every prompt
#   -k "K..."       K values for ngram and draft_model (default "1 2 3 4 5 6 7 8")
#   -m "METHOD..."  of none ngram draft_model medusa eagle rank (default none ngram draft_model
#                   rank; none always runs: it is the baseline)
#   --target NAME   the target, a tools/fetch-models name (default qwen2.5-coder-1.5b)
#   --draft NAME    draft_model's model, likewise, or a GGUF file (default
#                   qwen2.5-coder-0.5b)
#   --heads FILE    medusa's heads (tools/train-heads, specd-gen-heads)
#   --medusa-k "K..." medusa's tree sizes (default "4 8 16 32")
#   --eagle DIR     eagle's checkpoint folder (tools/train-eagle, specd-gen-heads --eagle)
#   --eagle-k "K..." eagle's tree sizes (default "4 8 16"; dynamic tree, width 4, depth 5)
#   --activations A specd-run's --activations for every run (default: specd-run's, q8)
#   --threads N     compute threads of every process (default 1)
#   --rank-k "..."  K values for the draft rank, pipelining off and on; "best" is the
#                   draft_model K with the highest speedup in the first phase
#                   (default "4 best")
#   --none-every N  rerun none after every N setups of a prompt block (default 16)
#   --prompts DIR   the prompt files, one prompt a *.txt (default bench/prompts)
#
# The runs go in two phases: none, ngram and draft_model with the drafter inside the
# leader; then, with the best K known, the draft rank (mpirun -np 2). In each round each
# prompt is one block: none first, last, and after every N setups, the setups between
# alternating methods, so drifting background load (other jobs on the machine) is
# measured by the baseline it is divided by: a run's speedup is its tokens/s over none's,
# interpolated in time between the none runs before and after it in the same block.
# Each run's stdout (the text) is compared with none's for the same prompt (greedy
# speculation must be lossless). OUT_DIR gets runs.tsv (one line a run), out/ (stdout
# and stderr of every run) and, from bench/plot_spec.py, spec-bench.json, spec-bench.md
# and spec-bench.png.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

usage() { sed -n '9,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
build=$(cd "$1" && pwd) || die "no build folder $1"
out=$2
shift 2
tokens=32
rounds=1
ks="1 2 3 4 5 6 7 8"
methods="none ngram draft_model rank"
rank_ks="4 best"
none_every=16
prompts=$SPECD_ROOT/bench/prompts
target_name=qwen2.5-coder-1.5b
draft_name=qwen2.5-coder-0.5b
heads=
medusa_ks="4 8 16 32"
eagle=
eagle_ks="4 8 16"
activations=
threads=1
while [ $# -gt 0 ]; do
	case $1 in
	-n) tokens=$2 ;;
	-r) rounds=$2 ;;
	-k) ks=$2 ;;
	-m) methods=$2 ;;
	--rank-k) rank_ks=$2 ;;
	--none-every) none_every=$2 ;;
	--prompts) prompts=$2 ;;
	--target) target_name=$2 ;;
	--draft) draft_name=$2 ;;
	--heads) heads=$2 ;;
	--medusa-k) medusa_ks=$2 ;;
	--eagle) eagle=$2 ;;
	--eagle-k) eagle_ks=$2 ;;
	--activations) activations=$2 ;;
	--threads) threads=$2 ;;
	*) usage ;;
	esac
	shift 2 || usage
done
has_method() { case " $methods " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

run=$build/daemon/specd-run
[ -x "$run" ] || die "$run is missing: build specd-run first"
command -v mpirun >/dev/null || ! has_method rank || die "mpirun is missing (needed for the rank setups)"
mpirun="mpirun -np 2 --allow-run-as-root --oversubscribe --bind-to none"

# The models: the same helper the tests use, a no-op when the cache already holds them.
target=$("$SPECD_ROOT/tools/fetch-models" "$target_name") || die "cannot get $target_name"
draft=
if has_method draft_model || has_method rank; then
	if [ -f "$draft_name" ]; then
		draft=$(cd "$(dirname "$draft_name")" && pwd)/$(basename "$draft_name")
	else
		draft=$("$SPECD_ROOT/tools/fetch-models" "$draft_name") || die "cannot get $draft_name"
	fi
fi
if has_method medusa; then
	[ -f "$heads" ] || die "medusa needs --heads FILE (tools/train-heads)"
	heads=$(cd "$(dirname "$heads")" && pwd)/$(basename "$heads")
fi
if has_method eagle; then
	[ -f "$eagle/config.json" ] || die "eagle needs --eagle DIR (tools/train-eagle)"
	eagle=$(cd "$eagle" && pwd)
fi

mkdir -p "$out/out"
out=$(cd "$out" && pwd)
tsv=$out/runs.tsv
printf 'round\tprompt\tsetup\tmethod\tk\tplacement\tpipeline\tstart\tend\trc\tstdout\tstderr\n' >"$tsv"
prompt_names=()
for f in "$prompts"/*.txt; do
	prompt_names+=("$(basename "$f" .txt)")
done
[ ${#prompt_names[@]} -gt 0 ] || die "no prompts in $prompts"

n_runs=0
# run_setup ROUND PROMPT SETUP: one specd-run, recorded as a line of runs.tsv. SETUP is
# none, ngram:K, draft_model:K, medusa:K, eagle:K, rank-off:K or rank-on:K.
run_setup() {
	local r=$1 p=$2 setup=$3 method k=0 placement=leader pipeline=- args start end rc base
	case $setup in
	none) method=none ;;
	ngram:* | draft_model:* | medusa:* | eagle:*) method=${setup%%:*} k=${setup#*:} ;;
	rank-*) method=draft_model placement=rank pipeline=${setup%%:*} k=${setup#*:}
		pipeline=${pipeline#rank-} ;;
	*) die "unknown setup $setup" ;;
	esac
	args=(-m "$target" --chat -p "$(cat "$prompts/$p.txt")" -n "$tokens" --threads "$threads"
		--method "$method")
	[ "$method" = none ] || args+=(--spec-tokens "$k")
	[ -z "$activations" ] || args+=(--activations "$activations")
	[ "$method" != draft_model ] || args+=(--draft "$draft")
	[ "$method" != medusa ] || args+=(--heads "$heads")
	[ "$method" != eagle ] || args+=(--eagle "$eagle")
	[ "$placement" = leader ] || args+=(--placement rank --pipeline "$pipeline")
	n_runs=$((n_runs + 1))
	base=$out/out/$(printf '%03d' "$n_runs").r$r.$p.${setup/:/-k}
	start=$(date +%s.%N)
	rc=0
	if [ "$placement" = leader ]; then
		SPECD_LOG_LEVEL=warn "$run" "${args[@]}" >"$base.txt" 2>"$base.log" || rc=$?
	else
		# shellcheck disable=SC2086 # mpirun is a command line
		SPECD_LOG_LEVEL=warn $mpirun "$run" "${args[@]}" >"$base.txt" 2>"$base.log" || rc=$?
	fi
	end=$(date +%s.%N)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p" "$setup" "$method" \
		"$k" "$placement" "$pipeline" "$start" "$end" "$rc" "$base.txt" "$base.log" >>"$tsv"
	say "round $r $p $setup: rc $rc, $(sed -n 's/^specd-run: generated .*(\(.*\)).*/\1/p' \
		"$base.log" | head -1), $(printf '%.0f' "$(echo "$end - $start" | bc)") s"
}

# block ROUND PROMPT SETUP...: none, the setups with none after every $none_every, none.
block() {
	local r=$1 p=$2 i=0 s
	shift 2
	run_setup "$r" "$p" none
	for s in "$@"; do
		run_setup "$r" "$p" "$s"
		i=$((i + 1))
		if [ $((i % none_every)) -eq 0 ] && [ $i -lt $# ]; then
			run_setup "$r" "$p" none
		fi
	done
	run_setup "$r" "$p" none
}

# all_rounds SETUP...: each round, one block of the setups on each prompt.
all_rounds() {
	local r p
	for r in $(seq 1 "$rounds"); do
		for p in "${prompt_names[@]}"; do
			block "$r" "$p" "$@"
		done
	done
}

say "speculation bench: $target_name, ${#prompt_names[@]} prompts, $rounds round(s), $tokens tokens, K: $ks"
say "load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
phase1=()
for k in $ks; do
	! has_method ngram || phase1+=("ngram:$k")
	! has_method draft_model || phase1+=("draft_model:$k")
done
if has_method medusa; then
	for k in $medusa_ks; do phase1+=("medusa:$k"); done
fi
if has_method eagle; then
	for k in $eagle_ks; do phase1+=("eagle:$k"); done
fi
all_rounds "${phase1[@]}"

if has_method rank; then
	resolved=()
	for k in $rank_ks; do
		if [ "$k" = best ]; then
			has_method draft_model || die "--rank-k best needs the draft_model method"
			k=$(python3 "$SPECD_ROOT/bench/plot_spec.py" --best-k draft_model "$out") ||
				die "cannot tell the best draft_model K"
			say "best draft_model K: $k"
		fi
		case " ${resolved[*]} " in *" $k "*) ;; *) resolved+=("$k") ;; esac
	done
	phase2=()
	for k in "${resolved[@]}"; do
		phase2+=("rank-off:$k" "rank-on:$k")
	done
	all_rounds "${phase2[@]}"
fi

say "load: $(cut -d' ' -f1-3 /proc/loadavg)"
cmdline="bench/run-spec.sh BUILD_DIR OUT_DIR -n $tokens -r $rounds -k \"$ks\" -m \"$methods\""
cmdline+=" --rank-k \"$rank_ks\" --none-every $none_every --target $target_name"
[ "$threads" = 1 ] || cmdline+=" --threads $threads"
[ -z "$activations" ] || cmdline+=" --activations $activations"
! has_method draft_model || cmdline+=" --draft $(basename "$draft_name")"
! has_method medusa || cmdline+=" --heads $(basename "$heads") --medusa-k \"$medusa_ks\""
! has_method eagle || cmdline+=" --eagle $(basename "$eagle") --eagle-k \"$eagle_ks\""
python3 "$SPECD_ROOT/bench/plot_spec.py" --command "$cmdline" --tokens "$tokens" --threads "$threads" \
	--target "$(basename "$target")" --draft "${draft:+$(basename "$draft")}" "$out" ||
	die "plot_spec.py failed"
say "wrote $out/spec-bench.json, $out/spec-bench.md, $out/spec-bench.png"
