#!/usr/bin/env bash
# Runs every kcore test on a fresh Debian machine with the Rust toolchain.
#
# Installs what the tests need with apt when it is missing, then runs the cargo tests
# with the root-only tests enabled (they are `#[ignore = "needs root"]` and run here with
# `--include-ignored`). Must run as root: the tests make namespaces, mounts and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole script is one block, read before it runs: editing this file while a run
# is in progress cannot change what that run does.
{

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: must run as root (the tests create namespaces, mounts and cgroups)" >&2
    exit 1
fi

# Debian packages the tests use.
#   busybox-static   a static test rootfs          iproute2, kmod   ip(8), modprobe
#   zstd             zstd layers                    nftables         Service rules (nft)
#   skopeo, docker-registry, apache2-utils, openssl  registry pull tests (push, htpasswd, tokens)
#   etcd-server      the etcd storage backend       protobuf-compiler, libprotobuf-dev  etcd-client
#   etcd-client      etcdctl: the HA e2e's snapshot save and restore (crates/daemon/tests/ha.rs)
#   python3-venv     the official Python client     curl             raw HTTP checks
#   util-linux       unshare(1), nsenter(1)
#   gcc, g++, valgrind   the C ABI tests (bindings/c/tests/run.sh): C99 and C++ header
#                        checks, programs linked to libkcore.so and libkcore.a, a leak check
#   python3-dev      libpython for the kcore wheel (bindings/python, python/run-tests.sh)
#   make             building jemalloc, kcored's allocator (tikv-jemalloc-sys)
#   runc             the runtime tests compare kcore-runc with runc in the same test
#   criu             checkpoint/restore tests (skipped, with the reason, where `criu check`
#                    fails: Debian 12's 3.17 on kernel 6.x; KCORE_CRIU names another CRIU)
#   podman, containerd, docker.io   the engines' end-to-end tests on kcore-runc
#                    (crates/runtime/tests/engines.rs: podman, ctr, dockerd --add-runtime)
PACKAGES=(busybox-static iproute2 kmod zstd nftables skopeo docker-registry apache2-utils
    openssl etcd-server etcd-client protobuf-compiler libprotobuf-dev python3-venv python3-dev curl
    util-linux gcc g++ valgrind make runc criu podman containerd docker.io)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Install without starting the packages' services (dockerd, containerd, etcd, the
    # registry): the tests start their own, privately; a host dockerd would add docker0
    # and firewall rules to the root network namespace. policy-rc.d is Debian's switch.
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    status=0
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
    if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$status" -eq 0 ] || exit "$status"
fi
# Load the modules the tests use where they are modules (best effort: they may be built
# in, absent or disabled). The tests themselves never load modules: each checks for
# exactly the kernel feature it uses and prints why it skips when the host lacks it.
for m in overlay vxlan veth bridge nf_tables; do modprobe "$m" 2>/dev/null || true; done

# The clients the end-to-end tests drive, pinned, in a directory of the project's own
# (target/tools/bin, first on PATH): kubectl 1.35 and Helm 4.
tools="$(tests/fetch-clients.sh)"
export PATH="$tools:$PATH"
echo "tests/run.sh: $(kubectl version --client 2>/dev/null | head -1); helm $(helm version --short 2>/dev/null)"

# A CRIU that passes `criu check` for the checkpoint tests: the installed one, else
# Debian 13's unpacked under target/tools/criu (Debian 12's fails on kernel 6.x). The
# tests, kcore-runc (--criu) and the engines use $KCORE_CRIU; without one that works
# they print why they skip.
if [ -z "${KCORE_CRIU:-}" ] && ! criu check >/dev/null 2>&1; then
    if criu_bin="$(tests/criu-from-trixie.sh target/tools/criu)"; then
        export KCORE_CRIU="$criu_bin"
    else
        echo "tests/run.sh: no CRIU passes \`criu check\` here: checkpoint tests will skip"
    fi
fi
[ -n "${KCORE_CRIU:-}" ] && echo "tests/run.sh: checkpoint tests use $KCORE_CRIU"

# The official Kubernetes Python client, in a venv of our own.
VENV="${KCORE_VENV:-$PWD/target/kcore-venv}"
if ! "$VENV/bin/python" -c "import kubernetes" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes
fi
export KCORE_PYTHON="$VENV/bin/python"

# What the tests must leave as they found it: mounts, named network namespaces,
# cgroups, and the links and nftables tables of the root network namespace.
snapshot() {
    awk '{print $5}' /proc/self/mountinfo | sort
    { ls /run/netns 2>/dev/null || true; } | sed 's/^/netns /'
    { find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -name '*kcore*' 2>/dev/null || true; } | sed 's/^/cgroup /'
    ip -o link show | awk -F': ' '{print "link " $2}'
    if command -v nft >/dev/null; then { nft list tables 2>/dev/null || true; } | sed 's/^/nft /'; fi
}
before="$(mktemp)"; after="$(mktemp)"
trap 'rm -f "$before" "$after"' EXIT
snapshot | sort >"$before"

export RUST_BACKTRACE=1
# A one-off build from a clean clone gains nothing from incremental artefacts, which
# would double the disk the build needs.
export CARGO_INCREMENTAL=0
# Every test: Rust unit, integration and doc tests with the root-only ones included; the
# kcored end-to-end tests (real kubectl, one and three nodes, crash and restart); the C
# ABI tests (bindings/c/tests/run.sh, run by bindings/c/tests/c_abi.rs: header current,
# C99/C++ compile, both libraries, valgrind); the Python wheel's stubtest, mypy and
# pytest (python/run-tests.sh, run by bindings/python/tests/python_wheel.rs).
# --no-fail-fast: every test binary runs even when an earlier one fails.
log="$PWD/target/tests-run.log"
set +e
cargo test --workspace --locked --no-fail-fast --features kcore-apiserver/etcd,kcored/etcd,kcore/testing \
    -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One line per test binary: passed, failed, ignored; then the failures by name.
echo
echo "tests/run.sh: summary per test binary"
awk '
    # "Running unittests src/lib.rs (target/debug/deps/kcore_ns-<hash>)" names the crate;
    # its integration tests ("Running tests/spawn.rs (...)") follow it.
    /^ *Running / {
        path = ($2 == "unittests") ? $3 : $2
        dep = $NF; gsub(/^\(|\)$/, "", dep); k = split(dep, parts, "/"); dep = parts[k]
        sub(/-[0-9a-f]+$/, "", dep)
        if (path == "src/lib.rs" || crate == "") crate = dep
        bin = crate " " path
    }
    /^ *Doc-tests / { bin = "doc-tests " $2 }
    /^test result: / {
        passed = $4; failed = $6; ignored = $8
        total_p += passed; total_f += failed
        printf "  %-6s %5d passed %4d failed %4d ignored  %s\n", (failed > 0 ? "FAIL" : "ok"), passed, failed, ignored, bin
    }
    /^---- .* stdout ----$/ { failures[++n] = bin ": " $2 }
    END {
        printf "  total: %d passed, %d failed\n", total_p, total_f
        for (i = 1; i <= n; i++) print "  failed: " failures[i]
    }
' "$log"

snapshot | sort >"$after"
if ! diff -u "$before" "$after"; then
    echo "tests/run.sh: FAILED: the tests left mounts, namespaces, cgroups, links or nft tables behind (diff above)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "tests/run.sh: FAILED: cargo test exited with $status (failures listed above)" >&2
    exit "$status"
fi
echo "tests/run.sh: all tests passed and nothing was left behind"
exit 0
}
