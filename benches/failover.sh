#!/usr/bin/env bash
# Failover times of a highly available control plane (issue 27): leader failover with
# upstream's default Lease timings and with the tests' fast ones, a clean handover, and
# the agent's failover to another server; median and p90 of 10 samples each.
#
#   sudo benches/failover.sh
#
# Three etcd members (Debian's etcd-server) and three `kcored server`s run in network
# namespaces made for the run, plus one `kcored agent`; all removed at the end (the
# bench is crates/daemon/benches/failover.rs, on the `ha` test's cluster).
# KCORE_BENCH_PROFILE=debug builds and runs debug binaries (say so with the figures);
# KCORE_FAILOVER_SAMPLES (10) and KCORE_FAILOVER_CASES (default,fast,handover,agent)
# select less.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "failover bench: needs root" >&2; exit 1; }
command -v etcd >/dev/null && command -v etcdctl >/dev/null \
  || { echo "failover bench: needs etcd and etcdctl (Debian: etcd-server, etcd-client)" >&2; exit 1; }
case "${KCORE_BENCH_PROFILE:-release}" in
  release) exec cargo bench --locked -p kcored --features etcd --bench failover ;;
  debug) exec cargo test --locked -p kcored --features etcd --bench failover ;;
  *) echo "failover bench: KCORE_BENCH_PROFILE is release or debug" >&2; exit 1 ;;
esac
