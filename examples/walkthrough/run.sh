#!/usr/bin/env bash
# The kcore walkthrough: a one-node cluster (`kcored up`) running a web application
# that keeps users in a database, reached through an Ingress for k8s-test.local.
#
#   sudo examples/walkthrough/run.sh            # build, start, deploy, demo; Ctrl-C stops
#
# Environment: KCORE_DATA (state directory, default /var/lib/kcore), KCORE_LISTEN (API
# server address, default 127.0.0.1:6443), KCORE_INGRESS (default 0.0.0.0:80).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (namespaces, cgroups, mounts, netlink)" >&2; exit 1; }
# kubectl from PATH, else the pinned one the tests use (fetched into target/tools/bin).
if ! command -v kubectl >/dev/null; then
  tools="$(tests/fetch-clients.sh)"
  export PATH="$tools:$PATH"
fi
missing=()
for p in nft:nftables ip:iproute2 curl:curl make:make; do
  command -v "${p%%:*}" >/dev/null || missing+=("${p##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then apt-get install -y --no-install-recommends "${missing[@]}"; fi
modprobe overlay 2>/dev/null || true; modprobe veth 2>/dev/null || true; modprobe bridge 2>/dev/null || true

DATA=${KCORE_DATA:-/var/lib/kcore}
LISTEN=${KCORE_LISTEN:-127.0.0.1:6443}
INGRESS=${KCORE_INGRESS:-0.0.0.0:80}
TARGET=${CARGO_TARGET_DIR:-target}

echo "==> building kcored, kcore and the demo application (a static binary)"
cargo build --release --locked -p kcored --bins
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p kcore-demo \
  --target "$(rustc -vV | sed -n 's/^host: //p')"
DEMO=$(ls "$TARGET"/*/release/kcore-demo | head -1)
KCORE="$TARGET/release/kcore"
KCORED="$TARGET/release/kcored"

echo "==> building the images kcore.local/demo:v1 and :v2 into $DATA from examples/walkthrough/Dockerfile"
CONTEXT=$(mktemp -d)
cp "$DEMO" "$CONTEXT/kcore-demo"
cp /bin/busybox "$CONTEXT/busybox"   # Debian's busybox-static
for v in v1 v2; do
  "$KCORE" image --root "$DATA" build -f examples/walkthrough/Dockerfile \
    -t "kcore.local/demo:$v" --build-arg "APP_VERSION=$v" "$CONTEXT"
done
rm -rf "$CONTEXT"

echo "==> starting kcored up (log: $DATA/kcored.log)"
mkdir -p "$DATA"
"$KCORED" up --data-dir "$DATA" --listen "$LISTEN" --ingress-listen "$INGRESS" >"$DATA/kcored.log" 2>&1 &
KCORED_PID=$!
trap 'echo "==> stopping kcored"; kill -TERM $KCORED_PID 2>/dev/null; wait $KCORED_PID 2>/dev/null || true' EXIT
export KUBECONFIG="$DATA/apiserver/admin.kubeconfig"
for _ in $(seq 100); do
  kubectl get nodes >/dev/null 2>&1 && break
  kill -0 $KCORED_PID 2>/dev/null || { cat "$DATA/kcored.log"; exit 1; }
  sleep 0.2
done
kubectl wait --for=condition=Ready node --all --timeout=60s
kubectl get nodes -o wide

echo "==> deploying examples/walkthrough/app.yaml"
kubectl apply -f examples/walkthrough/app.yaml
kubectl rollout status deployment/db --timeout=120s
kubectl rollout status deployment/web --timeout=120s
kubectl get pods -l app=web -o wide

PORT=${INGRESS##*:}
URL="http://127.0.0.1:$PORT"
echo "==> through the Ingress (Host: k8s-test.local)"
curl -sS -H 'Host: k8s-test.local' -X POST --data '{"name":"ada"}' "$URL/users"
curl -sS -H 'Host: k8s-test.local' -X POST --data '{"name":"grace"}' "$URL/users"
curl -sS -H 'Host: k8s-test.local' "$URL/users"
curl -sS -H 'Host: k8s-test.local' "$URL/"

echo "==> scaling to 3 and rolling out v2"
kubectl scale deployment/web --replicas=3
kubectl rollout status deployment/web --timeout=120s
kubectl set image deployment/web web=kcore.local/demo:v2
kubectl rollout status deployment/web --timeout=120s
curl -sS -H 'Host: k8s-test.local' "$URL/"
kubectl get pods -l app=web
kubectl logs deployment/web --tail=5

cat <<MSG

The cluster is up. In another shell:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -o wide
  kubectl logs -f deployment/web
  curl -H 'Host: k8s-test.local' $URL/users
Press Ctrl-C here to stop kcored (it removes the node's pods and networking).
MSG
wait $KCORED_PID
