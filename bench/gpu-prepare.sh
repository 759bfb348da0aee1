#!/bin/sh
# Run HERE (a machine with apt and the model cache) before bench/gpu-check.sh runs on
# the GPU machine, which has CUDA, cmake and gcc but no jansson or PCRE2 headers and
# no network: unpacks Debian's libjansson-dev and libpcre2-dev (static libraries and
# headers) into DIR/deps and copies stories260K.gguf into DIR/models. DIR defaults to
# build-gpu-carry (ignored by git, so name it in the device run's `carry`).
# usage: bench/gpu-prepare.sh [DIR]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/build-gpu-carry}
models=${SPECD_MODELS:-$HOME/.cache/specd/models}
mkdir -p "$dir/deps" "$dir/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download libjansson-dev libpcre2-dev >/dev/null 2>&1) ||
	{ echo "gpu-prepare: apt-get download libjansson-dev libpcre2-dev failed" >&2; exit 1; }
for f in "$tmp"/*.deb; do
	dpkg -x "$f" "$dir/deps"
done
# Only the static libraries are used; drop the shared-library links (their targets
# live in runtime packages not unpacked here).
find "$dir/deps" -name '*.so' -delete
if [ -f "$models/stories260K.gguf" ]; then
	cp "$models/stories260K.gguf" "$dir/models/"
else
	echo "gpu-prepare: $models/stories260K.gguf not found (tools/fetch-models); the check skips it" >&2
fi
du -sh "$dir"
echo "gpu-prepare: carry '$(basename "$dir")' and run: bench/gpu-check.sh \$OUT $(basename "$dir")"
