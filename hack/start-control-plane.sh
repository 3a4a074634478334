#!/usr/bin/env bash
# Starts a kubelet-less control plane (etcd + kube-apiserver + kube-controller-manager)
# on free loopback ports, with its state in STATE (arg 1, default a new temp dir):
#
#   STATE/kubeconfig   admin kubeconfig (static token, group system:masters)
#   STATE/pids         "name pid" per line, for hack/stop-control-plane.sh STATE
#   STATE/logs/*.log   one log per component
#
# Prints export lines on stdout, so:  eval "$(hack/start-control-plane.sh)"
# Binaries come from $KUBEBUILDER_ASSETS, else from hack/install-control-plane.sh.
#
# Run again on the STATE of a control plane some of whose components were stopped
# (hack/stop-control-plane.sh STATE etcd kube-apiserver), it starts those again on the same
# ports, with the same etcd data, certificates and token: a restart that every client of the
# control plane survives (tests/restarts.rs).
# The Rust test harness (tests/support/control_plane.rs) runs this script and
# hack/stop-control-plane.sh and reads the export lines: change both together.
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${1:-$(mktemp -d "${TMPDIR:-/tmp}/esm-control-plane.XXXXXX")}
mkdir -p "$STATE/logs" "$STATE/pki"
STATE=$(cd "$STATE" && pwd)
BIN=${KUBEBUILDER_ASSETS:-$("$HACK/install-control-plane.sh" | tail -1)}

log() { printf '[start-control-plane] %s\n' "$*" >&2; }
fail() {
  log "ERROR: $*"
  local f
  for f in "$STATE"/logs/*.log; do log "--- last lines of $f"; tail -n 15 "$f" >&2 || true; done
  "$HACK/stop-control-plane.sh" "$STATE" || true
  exit 1
}

for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [[ -x $BIN/$b ]] || { log "ERROR: $BIN/$b missing: run hack/install-control-plane.sh"; exit 1; }
done
# STATE/ports: the ports of a control plane started in STATE before; a restart keeps them.
[[ -s $STATE/ports || ! -s $STATE/pids ]] || { log "ERROR: $STATE/pids exists: already running? (hack/stop-control-plane.sh $STATE)"; exit 1; }

# A free loopback port: random pick, skipped when something answers on it.
# (A tiny race with other starters is accepted; tests use separate STATE dirs.)
used_ports=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ $used_ports == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
}
if [[ -s $STATE/ports ]]; then
  # shellcheck source=/dev/null
  source "$STATE/ports"
  log "restarting what is stopped of the control plane in $STATE"
else
  ETCD_PORT=$(free_port)
  ETCD_PEER_PORT=$(free_port)
  API_PORT=$(free_port)
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPI_PORT=%s\n' "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" >"$STATE/ports"
fi

# Service-account signing key and the admin token (static token file); a restart keeps both,
# so tokens and kubeconfigs handed out before stay valid.
[[ -f $STATE/pki/sa.key ]] || openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
if [[ -s $STATE/pki/tokens.csv ]]; then
  TOKEN=$(cut -d, -f1 "$STATE/pki/tokens.csv")
else
  TOKEN=$(openssl rand -hex 24)
  echo "$TOKEN,esm-admin,esm-admin,system:masters" >"$STATE/pki/tokens.csv"
fi

# shellcheck source=lib/procs.sh
source "$HACK/lib/procs.sh"
# start NAME ARGS...: starts component NAME unless it runs already (a restart starts only
# what was stopped).
start() {
  if [[ -f $STATE/pids ]] && awk -v n="$1" '$1 == n { found = 1 } END { exit !found }' "$STATE/pids"; then
    return
  fi
  start_process "$STATE/pids" "$STATE/logs" "$1" "$BIN/$1" "${@:2}"
}

# --unsafe-no-fsync: a throwaway test store; fsync would dominate test time.
start etcd \
  --name=esm \
  --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="esm=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --log-level=warn

# Start the apiserver only once etcd listens (else it logs a burst of dial errors).
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$ETCD_PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$ETCD_PORT") 2>/dev/null || fail "etcd is not listening on 127.0.0.1:$ETCD_PORT"

# No kubelet: the ServiceAccount admission plugin is off so pods need no token.
# --endpoint-reconciler-type=none: the "kubernetes" Endpoints may not hold a
# loopback address (it would fail every 10s), and nothing in-cluster needs it.
# --cert-dir: the apiserver self-signs a serving cert for 127.0.0.1/localhost there (and
# uses the one it finds there when it restarts: clients keep trusting it).
start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --cert-dir="$STATE/pki" \
  --secure-port="$API_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$STATE/pki/sa.key" \
  --service-account-signing-key-file="$STATE/pki/sa.key" \
  --token-auth-file="$STATE/pki/tokens.csv" \
  --authorization-mode=RBAC \
  --disable-admission-plugins=ServiceAccount \
  --endpoint-reconciler-type=none

# Wait for the self-signed serving cert, then write the kubeconfig that trusts it.
for _ in $(seq 100); do [[ -s $STATE/pki/apiserver.crt ]] && break; sleep 0.2; done
[[ -s $STATE/pki/apiserver.crt ]] || fail "kube-apiserver wrote no $STATE/pki/apiserver.crt"
cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: esm
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/pki/apiserver.crt
users:
- name: esm-admin
  user:
    token: $TOKEN
contexts:
- name: esm
  context: {cluster: esm, user: esm-admin, namespace: default}
current-context: esm
EOF
chmod 600 "$STATE/kubeconfig"
KUBECTL=("$BIN/kubectl" --kubeconfig="$STATE/kubeconfig")

log "waiting for kube-apiserver /readyz on 127.0.0.1:$API_PORT"
ready=
for _ in $(seq 120); do
  if "${KUBECTL[@]}" get --raw=/readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
[[ -n $ready ]] || fail "kube-apiserver not ready after 60s"

# Only the controllers a kubelet-less cluster needs: owner-reference GC,
# Deployments -> ReplicaSets (-> Pods that stay Pending), namespace deletion,
# and the default ServiceAccount per namespace. --secure-port=0: no serving.
start kube-controller-manager \
  --kubeconfig="$STATE/kubeconfig" \
  --controllers=garbagecollector,deployment,replicaset,namespace,serviceaccount \
  --use-service-account-credentials=false \
  --leader-elect=false \
  --secure-port=0 \
  --service-account-private-key-file="$STATE/pki/sa.key"

# The default ServiceAccount appears once the controller-manager runs its controllers.
log "waiting for kube-controller-manager (default ServiceAccount)"
ready=
for _ in $(seq 120); do
  if "${KUBECTL[@]}" -n default get serviceaccount default >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$(awk '$1 == "kube-controller-manager" {print $2}' "$STATE/pids")" 2>/dev/null || fail "kube-controller-manager exited"
  sleep 0.5
done
[[ -n $ready ]] || fail "kube-controller-manager did not create the default ServiceAccount after 60s"

log "control plane up in $STATE (stop: hack/stop-control-plane.sh $STATE)"
echo "export KUBECONFIG=$STATE/kubeconfig"
echo "export KUBEBUILDER_ASSETS=$BIN"
echo "export ESM_CONTROL_PLANE_STATE=$STATE"
echo "export PATH=$BIN:\$PATH"
