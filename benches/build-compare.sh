#!/usr/bin/env bash
# Dockerfile build benchmark: `kcore image build` against `podman build`, same run.
#
#   sudo benches/build-compare.sh [ROUNDS]     (default 5; needs root, podman, runc,
#                                               busybox-static at /bin/busybox)
#
# One Dockerfile (FROM scratch, busybox copied in and installed by a RUN step, two more
# RUN steps that write files, COPY of a context directory, ENV/WORKDIR/CMD) is built:
#   cold    — into an empty store (a new --root each round), no cache;
#   rebuild — the same build again into that store, nothing changed (all cached).
# podman runs with a private root/runroot, cgroupfs, runc (crun refuses hybrid cgroup
# hosts), `--network=none` (kcore's RUN default is loopback only) and the storage
# driver in $PODMAN_DRIVER (default overlay). Prints the median per builder and phase
# and the ratios (goal: cold ≥ 1.5× faster, rebuild ≥ 5× faster than podman).
set -euo pipefail

ROUNDS=${1:-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
DRIVER=${PODMAN_DRIVER:-overlay}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in podman runc /bin/busybox; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y podman runc busybox-static)" >&2; exit 1; }
done

echo "building kcore (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p kcored --bin kcore)
KCORE=$TARGET/release/kcore

WORK=$(mktemp -d /tmp/kcore-build-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CTX=$WORK/context
mkdir -p "$CTX/app"
cp /bin/busybox "$CTX/busybox"
for i in $(seq 1 100); do head -c 4096 /dev/urandom > "$CTX/app/data-$i"; done
cat > "$CTX/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /srv/gen && for i in $(seq 1 200); do echo "line $i" > /srv/gen/f$i; done
RUN sh -c 'cat /srv/gen/* | wc -l > /srv/count'
COPY app/ /srv/app/
ENV MODE=bench
WORKDIR /srv
CMD ["cat", "/srv/count"]
DOCKERFILE

podman_in() {
    local root=$1; shift
    mkdir -p "$root"
    printf '[storage]\ndriver = "%s"\ngraphroot = "%s/root"\nrunroot = "%s/runroot"\n' \
        "$DRIVER" "$root" "$root" > "$root/storage.conf"
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n[network]\nnetwork_config_dir = "%s/cni"\n' \
        "$root" > "$root/containers.conf"
    CONTAINERS_STORAGE_CONF=$root/storage.conf CONTAINERS_CONF=$root/containers.conf \
        XDG_CONFIG_HOME=$root/xdg podman --root "$root/root" --runroot "$root/runroot" \
        --tmpdir "$root/libpod" --cgroup-manager cgroupfs --events-backend file \
        --runtime runc "$@"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

declare -a k_cold k_re p_cold p_re
for r in $(seq 1 "$ROUNDS"); do
    store=$WORK/kcore-$r
    t0=$(now_ms)
    "$KCORE" image --root "$store" build -f "$CTX/Dockerfile" -t bench:1 --no-cache "$CTX" >/dev/null 2>&1
    t1=$(now_ms)
    "$KCORE" image --root "$store" build -f "$CTX/Dockerfile" -t bench:1 "$CTX" >/dev/null 2>&1
    t2=$(now_ms)
    k_cold+=($((t1 - t0))); k_re+=($((t2 - t1)))
    rm -rf "$store"

    proot=$WORK/podman-$r
    t0=$(now_ms)
    podman_in "$proot" build --format docker --network=none --layers --no-cache -t bench:1 \
        -f "$CTX/Dockerfile" "$CTX" >/dev/null 2>&1
    t1=$(now_ms)
    podman_in "$proot" build --format docker --network=none --layers -t bench:1 \
        -f "$CTX/Dockerfile" "$CTX" >/dev/null 2>&1
    t2=$(now_ms)
    p_cold+=($((t1 - t0))); p_re+=($((t2 - t1)))
    podman_in "$proot" system reset --force >/dev/null 2>&1 || true
    rm -rf "$proot"
    echo "round $r: kcore cold ${k_cold[-1]} ms, rebuild ${k_re[-1]} ms; podman cold ${p_cold[-1]} ms, rebuild ${p_re[-1]} ms" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
kc=$(median "${k_cold[@]}"); kr=$(median "${k_re[@]}")
pc=$(median "${p_cold[@]}"); pr=$(median "${p_re[@]}")
echo "median of $ROUNDS rounds (podman storage driver: $DRIVER)"
printf '%-8s %10s %10s\n' "" cold rebuild
printf '%-8s %8s ms %8s ms\n' kcore "$kc" "$kr" podman "$pc" "$pr"
awk -v kc="$kc" -v kr="$kr" -v pc="$pc" -v pr="$pr" 'BEGIN {
    printf "kcore is %.2fx faster cold (goal >= 1.5x), %.1fx faster on a rebuild (goal >= 5x)\n", pc / kc, pr / kr }'
