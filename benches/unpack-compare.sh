#!/bin/sh
# Layer unpack comparison: kcore-image vs GNU tar (tar -xf, tar -xzf,
# zstd -dc | tar -x) and umoci raw unpack, on one generated layer (~40,000
# entries, ~700 MB) and a 5-layer image (serial vs parallel), in one run.
#
#   sudo benches/unpack-compare.sh            # full size
#   KCORE_BENCH_SCALE=0.25 benches/unpack-compare.sh   # quicker, smaller layer
#
# Needs root (overlay layers, ownership), the Debian packages tar, zstd, umoci
# and time, and ~30 GB free where KCORE_BENCH_DIR points (default
# /var/tmp/kcore-bench-unpack; the generated fixture is cached there).
# KCORE_BENCH_ROUNDS (default 3) sets the interleaved comparison rounds.
# KCORE_BENCH_ONLY=image5 runs only the 5-layer image cases (serial and
# parallel, default threads per layer and one thread per layer), printing
# the wall and CPU time of every run.
# Prints criterion's report, then a summary with medians, peak RSS and the
# ratios against the issue's targets; the summary is also saved to
# $KCORE_BENCH_DIR/summary.txt.
set -eu
cd "$(dirname "$0")/.."
for tool in tar zstd umoci /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "missing $tool: apt-get install -y --no-install-recommends tar zstd umoci time" >&2
        exit 1
    }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
dir="${KCORE_BENCH_DIR:-/var/tmp/kcore-bench-unpack}"
mkdir -p "$dir"
export KCORE_BENCH_DIR="$dir"
log="$dir/bench.log"
cargo bench -p kcore-benches --bench unpack -- "$@" 2>&1 | tee "$log"
sed -n '/^== unpack summary/,$p' "$log" > "$dir/summary.txt"
echo "summary saved to $dir/summary.txt"
