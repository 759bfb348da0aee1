#!/usr/bin/env bash
# Installs the Debian 12 packages specd needs to build, test and run. Idempotent: when
# everything is present it says so in one line and touches nothing. Run as root.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
	build-essential cmake ninja-build pkg-config git ca-certificates
	openmpi-bin libopenmpi-dev
	libyaml-dev libprotobuf-c-dev protobuf-c-compiler
	libcmocka-dev libpcre2-dev libjansson-dev
	python3 python3-pip curl
	clang libclang-rt-14-dev
	iproute2 iptables
)
# gcc ships ASan/UBSan/LSan; clang and its runtime are for the libFuzzer targets;
# iproute2 and iptables for the emulated two-node cluster (bench/netns-cluster.sh).

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	say "dependencies: all ${#PACKAGES[@]} Debian packages present"
	exit 0
fi
[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
say "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
say "dependencies installed"
