#!/usr/bin/env bash
# The whole test suite from a fresh clone: install what is missing, build (with the
# CUDA backend when nvcc is there: it must compile and link even without a GPU), run
# every test but `heavy` and `gpu`, then rebuild under ASan+UBSan and run the unit and
# MPI tests again, then fuzz what comes from outside (client frames, model files,
# cluster files) for a bounded time each (clang's libFuzzer). Exit status 0 only if all
# of it passed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SPECD_ROOT/scripts/install-deps.sh"
ensure_models

configure_and_build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPECD_WERROR=ON
say "running the test suite (everything but heavy and gpu)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -LE 'heavy|gpu' -j 2

SAN_DIR=${SAN_DIR:-$SPECD_ROOT/build-asan}
configure_and_build "$SAN_DIR" -DCMAKE_BUILD_TYPE=Debug -DSPECD_CUDA=OFF \
	-DSPECD_SANITIZE=address,undefined -DSPECD_WERROR=ON
say "running the unit and MPI tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir "$SAN_DIR" --output-on-failure -L 'unit|mpi' -LE 'heavy|gpu|slow' -j 2
FUZZ_DIR=${FUZZ_DIR:-$SPECD_ROOT/build-fuzz}
FUZZ_TARGETS="fuzz_frames fuzz_safetensors fuzz_gguf fuzz_hf fuzz_config"
BUILD_TARGETS="$FUZZ_TARGETS" configure_and_build "$FUZZ_DIR" -DCMAKE_C_COMPILER=clang \
	-DSPECD_FUZZ=ON -DSPECD_CUDA=OFF -DSPECD_SANITIZE=address,undefined \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

# Seeds of a target into $2: the committed corpus, tiny generated models (llama and qwen2,
# SentencePiece and byte-level BPE vocabularies, a Hugging Face folder), the shipped
# cluster files. Each command is checked (set -e does not reach into a function called
# left of ||).
fuzz_seeds() {
	local gen="$BUILD_DIR/tools/specd-gen-model"
	local small="--dim 16 --layers 1 --heads 2 --kv-heads 1 --ffn 16 --ctx 32"
	case $1 in
	fuzz_gguf)
		"$gen" -o "$2/llama_f32_tied.gguf" $small --vocab 260 --type f32 --tied &&
		"$gen" -o "$2/qwen2_q8_0.gguf" --arch qwen2 --dim 32 --layers 2 --heads 2 \
			--kv-heads 1 --ffn 32 --ctx 32 --vocab 260 --type q8_0 &&
		"$gen" -o "$2/bpe_f16.gguf" $small --vocab 300 --type f16 --hf "$2/hf" &&
		rm -rf "$2/hf" ;;
	fuzz_hf) # the folder's files joined by NUL bytes (tests/fuzz/fuzz_hf.c)
		"$gen" -o "$2/twin.gguf" $small --vocab 300 --type f16 --hf "$2/hf" &&
		(cd "$2/hf" && cat config.json && printf '\0' && cat tokenizer.json &&
			printf '\0' && cat tokenizer_config.json && printf '\0' &&
			cat model.safetensors) >"$2/bpe_f16" &&
		rm -rf "$2/hf" "$2/twin.gguf" ;;
	fuzz_config) cp "$SPECD_ROOT"/configs/*.yaml "$2"/ ;;
	*) cp "$SPECD_ROOT/tests/fuzz/corpus/${1#fuzz_}"/* "$2"/ ;;
	esac >"$FUZZ_DIR/$1.seeds.log" 2>&1 ||
		{ cat "$FUZZ_DIR/$1.seeds.log"; die "could not make the seeds of $1"; }
}

for target in $FUZZ_TARGETS; do
	say "fuzzing $target for ${FUZZ_SECONDS} s"
	# The corpus, and a scratch TMPDIR for what a target writes (fuzz_hf's folder),
	# which a crash (libFuzzer's _Exit) would otherwise leave behind.
	corpus=$(mktemp -d)
	scratch=$(mktemp -d)
	trap 'rm -rf "$corpus" "$scratch"' EXIT
	fuzz_seeds "$target" "$corpus"
	TMPDIR="$scratch" "$FUZZ_DIR/tests/fuzz/$target" -max_total_time="$FUZZ_SECONDS" \
		-print_final_stats=1 "$corpus" 2>"$FUZZ_DIR/$target.log" ||
		{ tail -50 "$FUZZ_DIR/$target.log"; die "$target found a crash (see above)"; }
	grep -E '^stat::number_of_executed_units' "$FUZZ_DIR/$target.log" | sed 's/^/    /'
	rm -rf "$corpus" "$scratch"
done
say "all tests passed"
