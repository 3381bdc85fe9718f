#!/usr/bin/env bash
# Container cycle benchmark: kcore-runc vs runc vs crun, in the same run.
#
#   sudo benches/runc-compare.sh [CYCLES]      (default 50; needs root, runc, crun,
#                                               busybox-static at /bin/busybox)
#
# One cycle is `<runtime> run` of a busybox `/bin/true` bundle in the foreground:
# create + start + wait for exit + delete, with new pid/net/ipc/uts/mount
# namespaces and the runtime's default cgroup. Exec latency is `<runtime> exec ID
# /bin/true` into a running container of the same bundle (running `sleep`), timed
# until the exec'd process exited and the runtime returned. Every runtime gets the same bundle
# and its own state root. crun refuses hybrid-cgroup hosts (v1 controllers plus
# /sys/fs/cgroup/unified), so its cycles run in a private mount namespace where
# the unified mount is detached; kcore-runc and runc run on the host as it is.
# Prints the median, p90 and mean per runtime, the ratios, and each runtime's
# peak RSS (from /usr/bin/time, when installed).
set -euo pipefail

N=${1:-50}
WARMUP=3
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in runc crun /bin/busybox unshare; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y runc crun busybox-static)" >&2; exit 1; }
done

echo "building kcore-runc (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p kcore-runtime --bin kcore-runc)
KR=$TARGET/release/kcore-runc

WORK=$(mktemp -d /tmp/kcore-runc-bench.XXXXXX)
cleanup() {
    for rt in kcore runc crun; do
        for id in $(ls "$WORK/state-$rt" 2>/dev/null); do
            case $rt in
                kcore) "$KR" --root "$WORK/state-$rt" delete --force "$id" || true ;;
                *) "$rt" --root "$WORK/state-$rt" delete --force "$id" || true ;;
            esac
        done
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"
ln -s busybox "$B/rootfs/bin/true"
ln -s busybox "$B/rootfs/bin/sh"
ln -s busybox "$B/rootfs/bin/sleep"
cat > "$B/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/true"],
    "env": ["PATH=/bin"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "bench",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON

# cycles NAME BINARY ROUND COUNT: runs WARMUP + COUNT cycles, appending one duration
# (µs) per line to $WORK/NAME.times
cycles() {
    local name=$1 bin=$2 round=$3 count=$4 root=$WORK/state-$1 i t0 t1
    mkdir -p "$root"
    for ((i = 0; i < WARMUP + count; i++)); do
        t0=$(date +%s%N)
        "$bin" --root "$root" run --bundle "$B" "bench-$name-$$-$round-$i" > /dev/null
        t1=$(date +%s%N)
        if ((i >= WARMUP)); then echo $(((t1 - t0) / 1000)) >> "$WORK/$name.times"; fi
    done
}
# exec_lat NAME BINARY ROUND COUNT: starts one container running `sleep` and times
# WARMUP + COUNT execs of /bin/true into it, appending one duration (µs) per line to
# $WORK/NAME.exec
exec_lat() {
    local name=$1 bin=$2 round=$3 count=$4 root=$WORK/state-$1 id="exec-$1-$$-$3" i t0 t1
    mkdir -p "$root"
    "$bin" --root "$root" run -d --bundle "$EB" "$id" > /dev/null 2>&1 < /dev/null
    for ((i = 0; i < WARMUP + count; i++)); do
        t0=$(date +%s%N)
        "$bin" --root "$root" exec "$id" /bin/true > /dev/null
        t1=$(date +%s%N)
        if ((i >= WARMUP)); then echo $(((t1 - t0) / 1000)) >> "$WORK/$name.exec"; fi
    done
    "$bin" --root "$root" delete --force "$id" > /dev/null 2>&1
}
# peak_rss NAME BINARY: max resident set (KiB) over 5 cycles, or "n/a"
peak_rss() {
    local name=$1 bin=$2 root=$WORK/state-$1 i max=0 kb
    [ -x /usr/bin/time ] || { echo n/a; return; }
    for ((i = 0; i < 5; i++)); do
        kb=$( { /usr/bin/time -f '%M' "$bin" --root "$root" run --bundle "$B" "rss-$name-$$-$i" > /dev/null; } 2>&1 | tail -1)
        ((kb > max)) && max=$kb
    done
    echo "$max"
}
# The exec bundle: the same rootfs and config, running `sleep` instead of `true`.
EB=$WORK/exec-bundle
mkdir -p "$EB"
# (runc refuses a symlinked rootfs: the root path is made absolute instead)
sed -e 's|"args": \["/bin/true"\]|"args": ["/bin/sleep", "100000"]|' \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$B/rootfs\"|" "$B/config.json" > "$EB/config.json"
grep -q '/bin/sleep' "$EB/config.json" && grep -q "\"$B/rootfs\"" "$EB/config.json" ||
    { echo "exec bundle: config not rewritten" >&2; exit 1; }

export -f cycles exec_lat peak_rss
export WORK B EB N WARMUP

# The runtimes take turns in ROUNDS rounds, so load changes on the machine hit all three.
ROUNDS=5
echo "running $N cycles each in $ROUNDS rounds (+$WARMUP warm-up per round)..." >&2
: > "$WORK/kcore.times"; : > "$WORK/runc.times"; : > "$WORK/crun.times"
: > "$WORK/kcore.exec"; : > "$WORK/runc.exec"; : > "$WORK/crun.exec"
for ((r = 0; r < ROUNDS; r++)); do
    count=$(((N + ROUNDS - 1 - r) / ROUNDS))
    cycles kcore "$KR" "$r" "$count"
    cycles runc "$(command -v runc)" "$r" "$count"
    unshare --mount --propagation private bash -c \
        "umount -l /sys/fs/cgroup/unified 2>/dev/null || true; cycles crun \"\$(command -v crun)\" $r $count"
    exec_lat kcore "$KR" "$r" "$count"
    exec_lat runc "$(command -v runc)" "$r" "$count"
    unshare --mount --propagation private bash -c \
        "umount -l /sys/fs/cgroup/unified 2>/dev/null || true; exec_lat crun \"\$(command -v crun)\" $r $count"
done
RSS_KCORE=$(peak_rss kcore "$KR")
RSS_RUNC=$(peak_rss runc "$(command -v runc)")
RSS_CRUN=$(unshare --mount --propagation private bash -c \
    'umount -l /sys/fs/cgroup/unified 2>/dev/null || true; peak_rss crun "$(command -v crun)"')

# stats FILE -> "median p90 mean" in ms
stats() {
    sort -n "$1" | awk '{ a[NR] = $1; s += $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        p = a[int(NR * 0.9 + 0.5)]
        printf "%.2f %.2f %.2f", m / 1000, p / 1000, s / NR / 1000 }'
}
read -r K_MED K_P90 K_MEAN <<< "$(stats "$WORK/kcore.times")"
read -r R_MED R_P90 R_MEAN <<< "$(stats "$WORK/runc.times")"
read -r C_MED C_P90 C_MEAN <<< "$(stats "$WORK/crun.times")"

echo
echo "container cycle (run: create + start + wait + delete of /bin/true), $N cycles each"
printf '%-12s %10s %10s %10s %14s\n' runtime "median ms" "p90 ms" "mean ms" "peak RSS KiB"
printf '%-12s %10s %10s %10s %14s\n' kcore-runc "$K_MED" "$K_P90" "$K_MEAN" "$RSS_KCORE"
printf '%-12s %10s %10s %10s %14s\n' "runc $(runc --version | awk 'NR==1{print $3}')" "$R_MED" "$R_P90" "$R_MEAN" "$RSS_RUNC"
printf '%-12s %10s %10s %10s %14s\n' "crun $(crun --version | awk 'NR==1{print $3}')" "$C_MED" "$C_P90" "$C_MEAN" "$RSS_CRUN"
awk -v k="$K_MED" -v r="$R_MED" -v c="$C_MED" 'BEGIN {
    printf "ratio (median): runc / kcore-runc = %.2fx, crun / kcore-runc = %.2fx\n", r / k, c / k }'

read -r KE_MED KE_P90 KE_MEAN <<< "$(stats "$WORK/kcore.exec")"
read -r RE_MED RE_P90 RE_MEAN <<< "$(stats "$WORK/runc.exec")"
read -r CE_MED CE_P90 CE_MEAN <<< "$(stats "$WORK/crun.exec")"
echo
echo "exec latency (exec of /bin/true into a running container), $N execs each"
printf '%-12s %10s %10s %10s\n' runtime "median ms" "p90 ms" "mean ms"
printf '%-12s %10s %10s %10s\n' kcore-runc "$KE_MED" "$KE_P90" "$KE_MEAN"
printf '%-12s %10s %10s %10s\n' runc "$RE_MED" "$RE_P90" "$RE_MEAN"
printf '%-12s %10s %10s %10s\n' crun "$CE_MED" "$CE_P90" "$CE_MEAN"
awk -v k="$KE_MED" -v r="$RE_MED" -v c="$CE_MED" 'BEGIN {
    printf "ratio (median): runc / kcore-runc = %.2fx, crun / kcore-runc = %.2fx\n", r / k, c / k }'
