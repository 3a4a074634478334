#!/usr/bin/env bash
# Starts a real single-node Kubernetes cluster on this machine: etcd, kube-apiserver (PKI,
# ServiceAccount tokens, Node+RBAC authorization, NodeRestriction), kube-controller-manager
# (all default controllers, node CIDR allocation), kube-scheduler, a containerd of its own,
# kubelet, kube-proxy (iptables) and CoreDNS (a host process behind the kube-dns Service).
# Pods run for real: this is what the e2e tests (tests/pods.rs) and `hack/quickstart.sh --pods`
# run on. Facts it is built on: docs/operations.md ("A real node on one machine").
#
#   eval "$(hack/start-cluster.sh)"     # prints export lines (KUBECONFIG, PATH, ...)
#   hack/stop-cluster.sh                # stops it and puts the host back as it was
#
# Needs root (network links, iptables, mounts, cgroups). Fixed addresses and ports
# (hack/lib/cluster.sh): one cluster per machine; a second start fails and says so.
# Builds what is missing first (hack/install-control-plane.sh, hack/install-node.sh: the
# first time ~15 min on 2 cores); start-up then takes ~30 s. Logs: $CLUSTER_STATE/logs.
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_PREFIX=start-cluster
log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/cluster.sh
source "$HACK/lib/cluster.sh"
# shellcheck source=lib/procs.sh
source "$HACK/lib/procs.sh"

[[ $(id -u) == 0 ]] || die "needs root: it creates a network link, iptables rules, mounts and cgroups, and runs containerd and kubelet"
[[ -d /sys/fs/cgroup ]] && [[ -n $(ls /sys/fs/cgroup) ]] || die "no cgroup file system under /sys/fs/cgroup: kubelet cannot run pods here"
for tool in openssl ip iptables containerd ctr runc gcc flock; do
  command -v "$tool" >/dev/null || die "'$tool' is missing (hack/install-node.sh installs the Debian packages containerd, runc, containernetworking-plugins and iptables)"
done

mkdir -p "$CLUSTER_RUN"
exec 8>"$CLUSTER_RUN/lock"
flock -n 8 || die "another hack/start-cluster.sh or hack/stop-cluster.sh is running"
if [[ -s $CLUSTER_RUN/pids ]]; then
  if any_process_alive "$CLUSTER_RUN/pids"; then
    die "a cluster is already running on this machine: hack/stop-cluster.sh first (one cluster per machine: fixed ports $API_PORT, 10250, ...)"
  fi
  # Left by a run that ended without stopping (killed, or a machine image taken while it ran):
  # none of its processes runs, but its links, iptables chains and mounts may remain.
  log "a cluster was not stopped, and none of its processes runs: cleaning up after it"
  exec 8>&-
  "$HACK/stop-cluster.sh"
  mkdir -p "$CLUSTER_RUN"
  exec 8>"$CLUSTER_RUN/lock"
  flock -n 8 || die "another hack/start-cluster.sh or hack/stop-cluster.sh is running"
fi

started=$SECONDS
BIN=$("$HACK/install-control-plane.sh" | tail -1)
"$HACK/install-node.sh" | tail -1 >/dev/null
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns crictl; do
  [[ -x $BIN/$b ]] || die "$BIN/$b missing: hack/install-control-plane.sh and hack/install-node.sh build it"
done
log "binaries ready ($((SECONDS - started)) s)"
up_since=$SECONDS

STATE=$CLUSTER_STATE
PIDS=$CLUSTER_RUN/pids
rm -rf "$STATE"
mkdir -p "$STATE"/{logs,pki,cni/net.d,cni/ipam,kubelet,pod-logs,containerd}

fail() {
  log "ERROR: $*"
  local f
  for f in "$STATE"/logs/*.log; do log "--- last lines of $f"; tail -n 15 "$f" >&2 || true; done
  exec 8>&-
  "$HACK/stop-cluster.sh" || true
  exit 1
}
trap 'fail "interrupted"' INT TERM

# ---------------------------------------------------------------- host settings
# What the stop script restores: sysctls and which host paths existed before.
{
  for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    echo "sysctl $key $(sysctl -n "$key")"
  done
  # Paths kubelet and the CNI library write to whatever their configuration says.
  for path in /var/lib/cni /var/log/containers /run/netns; do
    [[ -e $path ]] && echo "existed $path"
  done
} >"$CLUSTER_RUN/host"
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
  die "net.bridge.bridge-nf-call-iptables is missing: load the br_netfilter module (modprobe br_netfilter)"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

# The node IP on a link of its own: a dummy interface, or (kernels without the dummy driver)
# a bridge with no ports, which holds a local address just the same.
if ! ip link add "$NODE_LINK" type dummy 2>/dev/null; then
  ip link add "$NODE_LINK" type bridge || fail "cannot create link $NODE_LINK (dummy or bridge)"
fi
ip addr add "$NODE_IP/32" dev "$NODE_LINK"
ip link set "$NODE_LINK" up

# ---------------------------------------------------------------- PKI
# One CA signs the serving certificate of the API server and every client identity.
PKI=$STATE/pki
printf '[req]\ndistinguished_name = dn\n[dn]\n' >"$PKI/openssl.cnf"
# cert NAME SUBJECT EXTENSIONS...: an EC key and a certificate signed by the CA.
cert() {
  local name=$1 subject=$2 ext=()
  shift 2
  for e in "$@"; do ext+=(-addext "$e"); done
  openssl req -x509 -config "$PKI/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$PKI/$name.key" -out "$PKI/$name.crt" -days 30 -subj "$subject" \
    -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    "${ext[@]}" 2>/dev/null || fail "openssl: cannot make the $name certificate"
}
client() { cert "$1" "$2" "extendedKeyUsage=clientAuth"; }
openssl req -x509 -config "$PKI/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 -subj "/CN=esm-cluster-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null ||
  fail "openssl: cannot make the CA"
cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" \
  "subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1"
client admin "/O=system:masters/CN=esm-admin"
client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
client controller-manager "/CN=system:kube-controller-manager"
client scheduler "/CN=system:kube-scheduler"
client kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
client kube-proxy "/CN=system:kube-proxy"
client coredns "/CN=esm:coredns"
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
  cat >"$STATE/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: esm
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: esm
  context: {cluster: esm, user: $1, namespace: default}
current-context: esm
KC
  chmod 600 "$STATE/$1.kubeconfig"
}
for identity in admin controller-manager scheduler kubelet kube-proxy coredns; do kubeconfig "$identity"; done
KUBECTL=("$BIN/kubectl" --kubeconfig="$KUBECONFIG_ADMIN")
start() { start_process "$PIDS" "$STATE/logs" "$1" "$BIN/$1" "${@:2}"; }
running() { kill -0 "$(awk -v n="$1" '$1 == n {print $2}' "$PIDS")" 2>/dev/null; }

# ---------------------------------------------------------------- control plane
# --unsafe-no-fsync: the cluster is thrown away on stop.
start etcd --name=esm --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="esm=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level=warn
wait_until 30 "etcd listening on 127.0.0.1:$ETCD_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"

start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true
wait_until 90 "kube-apiserver /readyz" "${KUBECTL[@]}" get --raw=/readyz

# CoreDNS reads Services, EndpointSlices, Namespaces (and Pods for `pods insecure`); it runs
# on the host as esm:coredns, behind the selector-less kube-dns Service.
"${KUBECTL[@]}" apply -f - >/dev/null <<YAML || fail "cannot create the kube-dns Service and CoreDNS's RBAC"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "esm:coredns"}
rules:
- {apiGroups: [""], resources: [services, namespaces, pods], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "esm:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "esm:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "esm:coredns"}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: esm-start-cluster}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"]}]
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
YAML

start kube-controller-manager \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SERVICE_CIDR"
start kube-scheduler --kubeconfig="$STATE/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false

# ---------------------------------------------------------------- containerd
# Its own instance (root, state, socket, runc root) next to any other containerd.
# restrict_oom_score_adj: runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which
# some VMs' bounding set lacks (every sandbox fails with "can't get final child's PID").
cat >"$STATE/containerd.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$CLUSTER_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CLUSTER_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
start_process "$PIDS" "$STATE/logs" containerd "$(command -v containerd)" --config "$STATE/containerd.toml"
wait_until 30 "containerd socket $CONTAINERD_SOCK" ctr --address "$CONTAINERD_SOCK" version
"$HACK/build-images.sh" pause || fail "cannot build and import the pause image"

# The pod network: one bridge, host-local addresses from the node's pod CIDR.
cat >"$STATE/cni/net.d/10-esm.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "esm",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

# ---------------------------------------------------------------- kubelet
# failCgroupV1: false and cgroupfs: cgroup v1 hosts (containerd 1.6 has no RuntimeConfig
# call; kubelet falls back with a warning). imageGCHighThresholdPercent 100: the images
# cannot be pulled again (no registry), so they are never collected. Low eviction
# thresholds: a busy disk must not evict the test pods.
cat >"$STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: ["$DNS_SERVICE_IP"]
clusterDomain: "$CLUSTER_DOMAIN"
resolvConf: ""
oomScoreAdj: 0
podLogsDir: "$STATE/pod-logs"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
serializeImagePulls: false
YAML
start kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"

# ---------------------------------------------------------------- kube-proxy
# Conntrack settings 0: leave the host's sysctls alone. nodePortAddresses primary: no
# route_localnet change.
cat >"$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$STATE/kube-proxy.kubeconfig"}
mode: iptables
hostnameOverride: "$NODE_NAME"
clusterCIDR: "$CLUSTER_CIDR"
bindAddress: "$NODE_IP"
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["primary"]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start kube-proxy --config="$STATE/kube-proxy.yaml"

# ---------------------------------------------------------------- CoreDNS
# Answers for the cluster domain only: pods here have no business resolving outside names.
cat >"$STATE/Corefile" <<CORE
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $STATE/coredns.kubeconfig
        pods insecure
    }
    cache 30
    loadbalance
}
CORE
start coredns -conf "$STATE/Corefile"

log "waiting for node $NODE_NAME to be Ready"
node_ready() { [[ $("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; }
wait_until 120 "node $NODE_NAME Ready (kubelet log: $STATE/logs/kubelet.log)" node_ready
for p in kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do running "$p" || fail "$p exited"; done
wait_until 60 "CoreDNS ready on 127.0.0.1:18181" bash -c "exec 3<>/dev/tcp/127.0.0.1/18181 && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q 200"
wait_until 60 "the default ServiceAccount (kube-controller-manager)" "${KUBECTL[@]}" -n default get serviceaccount default
echo "$((SECONDS - up_since))" >"$STATE/startup-seconds"
log "cluster up in $((SECONDS - up_since)) s (binaries: $BIN; logs: $STATE/logs; stop: hack/stop-cluster.sh)"
# For a shell (kubectl, crictl) and, as ESM_CLUSTER_*, for tests/pods.rs (hack/test.sh passes
# only those on, so that no other test sees this cluster's KUBECONFIG).
cat <<ENV
export KUBECONFIG=$KUBECONFIG_ADMIN
export CONTAINER_RUNTIME_ENDPOINT=unix://$CONTAINERD_SOCK
export PATH=$BIN:\$PATH
export ESM_CLUSTER_KUBECONFIG=$KUBECONFIG_ADMIN
export ESM_CLUSTER_SERVER=https://$NODE_IP:$API_PORT
export ESM_CLUSTER_NODE_IP=$NODE_IP
export ESM_CLUSTER_CRI=unix://$CONTAINERD_SOCK
export ESM_CLUSTER_BIN=$BIN
export ESM_CLUSTER_STATE=$STATE
ENV
