#!/usr/bin/env bash
# The whole test suite from a fresh clone: install what is missing, build (with the
# CUDA backend when nvcc is there: it must compile and link even without a GPU), run
# every test but `heavy` and `gpu`, then rebuild under ASan+UBSan and run the unit and
# MPI tests again, then fuzz the protocol decoding for a bounded time (clang's
# libFuzzer). Exit status 0 only if all of it passed.
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
BUILD_TARGETS="fuzz_frames fuzz_safetensors" configure_and_build "$FUZZ_DIR" -DCMAKE_C_COMPILER=clang -DSPECD_FUZZ=ON -DSPECD_CUDA=OFF \
	-DSPECD_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
for target in fuzz_frames fuzz_safetensors; do
	say "fuzzing $target for ${FUZZ_SECONDS} s"
	corpus=$(mktemp -d)
	cp "$SPECD_ROOT/tests/fuzz/corpus/${target#fuzz_}"/* "$corpus"/
	"$FUZZ_DIR/tests/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
		"$corpus" 2>"$FUZZ_DIR/$target.log" ||
		{ tail -50 "$FUZZ_DIR/$target.log"; die "$target found a crash (see above)"; }
	grep -E '^stat::number_of_executed_units' "$FUZZ_DIR/$target.log" | sed 's/^/    /'
	rm -rf "$corpus"
done
say "all tests passed"
