#!/usr/bin/env bash
# The GPU machine's check, at most ~5 minutes on one H200 (16 cores): configures a
# build of only common, kernels, model and tools (SPECD_GPU_CHECK_ONLY: no MPI, YAML,
# protobuf-c or cmocka), builds specd-gpu-check and specd-gen-model for sm_90, then
# runs specd-gpu-check: every CUDA op against the CPU op, sampling on the device against
# the host sampler (same uniform draw, same token) and its time, greedy tokens on
# stories260K and on generated models (CUDA == CPU, batch invariance, speculative
# output == plain), and decode tokens/s, HBM share and K+1 verification cost on
# generated bf16 models of 1B and 3B parameters (8B when the budget allows), with the
# matmul alone at 1..17 rows against the reference kernel and one token's decode at
# contexts 128..1000; on the 1B model the whole bench runs a second time with the
# reference kernel (the figures before the batched matmul, from the same run), then
# the real engine with every drafting method on it (and on a larger model when the
# budget allows; a generated 60M draft model, random Medusa heads and EAGLE layer):
# tokens/s, tokens per forward and HBM share, each method's greedy output checked
# equal to plain decoding's, sampled runs with the tokens drawn on the device
# against the host verifier's, and each method's ops profiled; last, a Q4_K 1B model
# decoded with its blocks read as stored and dequantised to f32 at load, side by side.
#
# usage: bench/gpu-check.sh OUT_DIR [CARRY_DIR]
#   CARRY_DIR: what bench/gpu-prepare.sh made (deps/ for jansson and PCRE2, models/
#   with stories260K.gguf); default build-gpu-carry. Results: OUT_DIR/gpu-check.txt
#   (everything) and OUT_DIR/gpu-summary.txt (one line per step). Every step has a
#   timeout; a failed step is recorded and the next one runs. Exit: 0 all passed,
#   3 no CUDA device, 1 otherwise.
# Environment: BUDGET (seconds, default 290), JOBS (default 16), BENCH_PARAMS
#   (default "1B 3B 8B"), MODELS_TMP (generated models, default /tmp/specd-gpu-models),
#   BUILD_DIR (default build-gpu).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/gpu-check.sh OUT_DIR [CARRY_DIR]}
carry=${2:-build-gpu-carry}
case $carry in /*) ;; *) carry=$root/$carry ;; esac
budget=${BUDGET:-290}
jobs=${JOBS:-16}
bench_params=${BENCH_PARAMS:-1B 3B 8B}
gen_dir=${MODELS_TMP:-/tmp/specd-gpu-models}
build=${BUILD_DIR:-$root/build-gpu}
mkdir -p "$out" "$gen_dir"
res=$out/gpu-check.txt
sum=$out/gpu-summary.txt
: >"$res"
: >"$sum"
failed=0
no_device=0
SECONDS=0

log() {
	echo "[gpu-check ${SECONDS}s] $*" | tee -a "$res"
}

# step NAME TIMEOUT CMD...: runs CMD under the timeout (cut to what the budget has
# left), its output to the screen and the results file; records rc and seconds.
step() {
	local name=$1 limit=$2 left rc t0
	shift 2
	left=$((budget - SECONDS))
	if [ "$left" -lt 15 ]; then
		log "SKIP $name: ${left}s of the ${budget}s budget left"
		echo "SKIP $name (budget)" >>"$sum"
		return 99
	fi
	[ "$limit" -gt "$left" ] && limit=$left
	log "BEGIN $name (timeout ${limit}s)"
	t0=$SECONDS
	timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$res"
	rc=${PIPESTATUS[0]}
	log "END $name: rc=$rc in $((SECONDS - t0))s"
	case $rc in
	0) echo "PASS $name ($((SECONDS - t0))s)" >>"$sum" ;;
	3) echo "NO-DEVICE $name" >>"$sum"; no_device=1 ;;
	124|137) echo "TIMEOUT $name (${limit}s)" >>"$sum"; failed=$((failed + 1)) ;;
	*) echo "FAIL $name (rc $rc)" >>"$sum"; failed=$((failed + 1)) ;;
	esac
	return "$rc"
}

finish() {
	log "done: $failed failed steps; summary:"
	tee -a "$res" <"$sum"
	grep -E '^(bench|greedy tokens|result|load)|^(methods|sampled) .*tok/s' "$res" >>"$sum" 2>/dev/null
	if [ "$no_device" = 1 ]; then
		log "no CUDA device: nothing was checked on a GPU"
		exit 3
	fi
	[ "$failed" = 0 ] && exit 0
	exit 1
}

log "specd GPU check in $root, results in $res"
step environment 30 sh -c 'uname -a; nproc; free -g | head -2; (nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv || echo "nvidia-smi: none"); (command -v nvcc || ls /usr/local/cuda/bin/nvcc) && ${NVCC:-/usr/local/cuda/bin/nvcc} --version | tail -2; cmake --version | head -1; cc --version | head -1'

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
deps=()
[ -d "$carry/deps" ] && deps=(-DSPECD_DEPS_PREFIX="$carry/deps")
step configure 60 cmake -S "$root" -B "$build" "${gen[@]}" -DSPECD_GPU_CHECK_ONLY=ON \
	-DSPECD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release "${deps[@]}" ||
	finish
step build 170 cmake --build "$build" -j "$jobs" --target specd-gpu-check specd-gen-model \
	specd-gen-heads || finish
check=$build/tools/specd-gpu-check
genm=$build/tools/specd-gen-model
genh=$build/tools/specd-gen-heads

# methods TARGET: every drafting method through the engine on TARGET (its vocabulary
# 32000): a 60M draft model, three random Medusa heads and one random EAGLE layer
# sized for it. Random weights: the figures say what a method costs, not what it gains.
methods() {
	local target=$1 draft=$gen_dir/draft-60M-bf16.gguf heads=$gen_dir/medusa.safetensors
	local eagle=$gen_dir/eagle
	step gen-draft 30 "$genm" -o "$draft" --params 60M --type bf16 --vocab 32000 \
		--ctx 4096 &&
		step gen-medusa 60 "$genh" -o "$heads" -m "$target" --dtype bf16 &&
		step gen-eagle 60 "$genh" --eagle -o "$eagle" -m "$target" --dtype bf16 &&
		step methods 120 "$check" methods "$target" --draft "$draft" --heads "$heads" \
			--eagle "$eagle" -n 48 -k 2,4
	rm -rf "$draft" "$heads" "$eagle"
}

step ops 60 "$check" ops
step sample 40 "$check" sample
[ "$no_device" = 1 ] && finish

if [ -f "$carry/models/stories260K.gguf" ]; then
	step greedy-stories260K 40 "$check" greedy "$carry/models/stories260K.gguf" 48
else
	log "SKIP greedy-stories260K: $carry/models/stories260K.gguf missing (bench/gpu-prepare.sh)"
	echo "SKIP greedy-stories260K (no file)" >>"$sum"
fi

# Small generated models: llama f16 (adjacent RoPE), qwen2 q4_k (halves RoPE, Q/K/V
# biases, blocks read as stored), llama q8_0 with tied output.
small=(
	"llama-f16 --arch llama --params 60M --type f16 --vocab 32000"
	"qwen2-q4_k --arch qwen2 --dim 512 --layers 4 --heads 8 --kv-heads 2 --ffn 1536 --type q4_k --vocab 8000"
	"llama-q8_0-tied --arch llama --dim 256 --layers 3 --heads 4 --kv-heads 4 --ffn 768 --type q8_0 --tied"
)
for spec in "${small[@]}"; do
	set -- $spec
	name=$1
	shift
	if step "gen-$name" 30 "$genm" -o "$gen_dir/$name.gguf" "$@"; then
		step "greedy-$name" 40 "$check" greedy "$gen_dir/$name.gguf" 40
	fi
done

for p in $bench_params; do
	file=$gen_dir/llama-$p-bf16.gguf
	case $p in 1B) g=40 ;; 3B) g=90 ;; *) g=200 ;; esac
	if [ $((budget - SECONDS)) -lt $((g + 40)) ]; then
		log "SKIP $p: generation needs ~${g}s, $((budget - SECONDS))s left"
		echo "SKIP bench-$p (budget)" >>"$sum"
		continue
	fi
	step "gen-$p" "$g" "$genm" -o "$file" --params "$p" --type bf16 --vocab 32000 --ctx 4096 ||
		continue
	[ "$p" = 1B ] && step "greedy-$p" 40 "$check" greedy "$file" 12
	step "bench-$p" 60 "$check" bench "$file" 128
	[ "$p" = 1B ] && step "bench-$p-reference" 60 env SPECD_GPU_CHECK_REFERENCE=1 \
		"$check" bench "$file" 128
	# Every method on the 1B model; on a larger one too when the budget still holds
	# its draft, heads and layer (~100 s).
	if [ "$p" = 1B ] || [ $((budget - SECONDS)) -ge 160 ]; then
		methods "$file"
	fi
	rm -f "$file"
done

# A quantised 1B model (Q4_K, as Q4_K_M files mostly are): decode with the blocks read
# as stored, then with them dequantised to f32 at load, side by side.
file=$gen_dir/llama-1B-q4_k.gguf
if [ $((budget - SECONDS)) -ge 120 ]; then
	if step gen-1B-q4_k 60 "$genm" -o "$file" --params 1B --type q4_k --vocab 32000 \
		--ctx 4096; then
		step greedy-1B-q4_k 40 "$check" greedy "$file" 12
		step bench-1B-q4_k 45 "$check" bench "$file" 128
		step bench-1B-q4_k-at-load 45 env SPECD_GPU_CHECK_DEQUANT=1 "$check" bench "$file" 128
	fi
	rm -f "$file"
else
	log "SKIP 1B q4_k: $((budget - SECONDS))s left"
	echo "SKIP bench-1B-q4_k (budget)" >>"$sum"
fi
finish
