#!/usr/bin/env bash
# Runs one cluster bench (`startup`, `storage`) against a release `kcored up`:
#
#   sudo benches/cluster-bench.sh <bench>       (benches/startup.sh and storage.sh call this)
#
# KCORE_BENCH_PROFILE=debug builds and runs debug binaries instead (on a loaded machine,
# where a release build would not finish in time; say so with the figures), and
# KCORED_BIN=<path> runs another kcored (an older build, to compare) with the same bench.
#
# Everything runs in a network namespace made for the run (a veth with 192.0.2.50 and a
# default route through it), with its own state directory; both are removed at the end.
#
# The state directory is on a fresh ext4 file system with a journal (an 8 GiB sparse file on
# a loop device) made for the run, as /var/lib/kcore is on a usual host, so that the figures
# do not depend on the host's file system and its history. KCORE_BENCH_FS=host puts it under
# /tmp instead. (On an ext4 without a journal, as some VM images have, every new inode scans
# past the inodes deleted in the last minutes, and a pod creates and deletes dozens.)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: cluster-bench.sh <bench>}
[ "$(id -u)" = 0 ] || { echo "$NAME bench: needs root" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
HOST=$(rustc -vV | sed -n 's/^host: //p')

PROFILE=${KCORE_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) BUILD=(--release) BENCH_CMD=(bench) ;;
  debug) BUILD=() BENCH_CMD=(test) ;;
  *) echo "$NAME bench: KCORE_BENCH_PROFILE is release or debug" >&2; exit 1 ;;
esac
cargo build "${BUILD[@]}" --locked -p kcored --bins
CARGO_TARGET_DIR="$TARGET/demo-static" RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p kcore-demo --target "$HOST"
BENCH=$(cargo "${BENCH_CMD[@]}" --locked -p kcore-benches --bench "$NAME" --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$BENCH" ] || { echo "$NAME bench: could not find the bench executable" >&2; exit 1; }

NS=kcore-bench-$$
DATA=$(mktemp -d "/tmp/kcore-$NAME-XXXXXX")
LOG="$TARGET/$NAME-kcored.log"
FS=${KCORE_BENCH_FS:-ext4}
cleanup() {
  cp "$DATA/kcored.log" "$LOG" 2>/dev/null && echo "kcored's log: $LOG"
  ip netns del "$NS" 2>/dev/null || true
  for m in $(awk -v d="$DATA" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$DATA" "$DATA.img"
}
trap cleanup EXIT
case "$FS" in
  ext4)
    truncate -s 8G "$DATA.img"
    mkfs.ext4 -q -F "$DATA.img"
    mount -o loop "$DATA.img" "$DATA"
    chmod 700 "$DATA"
    echo "state directory: a fresh ext4 with a journal on a loop device (KCORE_BENCH_FS=host: /tmp)"
    ;;
  host) echo "state directory: $DATA on the host's $(df --output=fstype "$DATA" | tail -1)" ;;
  *) echo "$NAME bench: KCORE_BENCH_FS is ext4 or host" >&2; exit 1 ;;
esac
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth0p
ip -n "$NS" addr add 192.0.2.50/24 dev eth0
ip -n "$NS" link set eth0p up
ip -n "$NS" link set eth0 up
ip -n "$NS" route add default dev eth0

"$TARGET/$PROFILE/kcore" image --root "$DATA" build -t kcore.local/demo:v1 \
  --add "$TARGET/demo-static/$HOST/release/kcore-demo:/bin/kcore-demo" --entrypoint /bin/kcore-demo >/dev/null
KCORED="$(realpath "${KCORED_BIN:-$TARGET/$PROFILE/kcored}")" KCORE_DATA="$DATA" KCORE_NODE_IP=192.0.2.50 \
  nsenter --net="/run/netns/$NS" "$BENCH"
