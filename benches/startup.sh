#!/usr/bin/env bash
# Start-up figures of `kcored up`: time to a Ready node, idle RSS, pod start-up latency
# (create → Running, image present) for 1, 10 and 100 pods at once, p50 / p99, then 110 pods
# at once (the kubelet's maxPods) over 5 rounds with kcored's RSS after each.
#
#   sudo benches/startup.sh
exec "$(dirname "$0")/cluster-bench.sh" startup
