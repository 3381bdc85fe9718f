#!/usr/bin/env bash
# Persistent storage start-up: 10 StatefulSet pods (podManagementPolicy: Parallel) with new
# local-path claims, apply → Running, p50 / p99 over 5 rounds, against the same pods with an
# emptyDir in the same run.
#
#   sudo benches/storage.sh
exec "$(dirname "$0")/cluster-bench.sh" storage
