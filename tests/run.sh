#!/usr/bin/env bash
# Runs every kcore test on a fresh Debian machine with the Rust toolchain.
#
# Installs what the tests need with apt when it is missing, then runs the cargo tests
# with the root-only tests enabled (they are `#[ignore = "needs root"]` and run here with
# `--include-ignored`). Must run as root: the tests make namespaces, mounts and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: must run as root (the tests create namespaces, mounts and cgroups)" >&2
    exit 1
fi

# Debian packages the tests use.
#   busybox-static  a static test rootfs            iproute2  ip(8) for cross-checks
#   kmod            modprobe overlay/vxlan          zstd      zstd layers and GNU tar anchor
#   e2fsprogs       lsattr/chattr cross-checks
PACKAGES=(busybox-static iproute2 kmod zstd)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
modprobe overlay 2>/dev/null || true

export RUST_BACKTRACE=1
# Rust: unit, integration and doc tests, the root-only ones included.
cargo test --workspace --locked -- --include-ignored
echo "tests/run.sh: all tests passed"
