# The single-node cluster of hack/start-cluster.sh (sourced, not run): its fixed names,
# addresses and paths, shared by the start and stop scripts, hack/build-images.sh and the
# e2e tests. Fixed ports and addresses: one such cluster per machine.
#
# Addresses: the node IP sits on a link the start script creates (a dummy interface, or a
# port-less bridge where the kernel has no dummy driver), so nothing depends on the machine's
# own addresses and pods reach host processes bound to it (emulators, CoreDNS).
NODE_NAME=esm-node
NODE_IP=10.201.0.1
NODE_LINK=esmnode0
CLUSTER_CIDR=10.244.0.0/16     # KCM --cluster-cidr; the node gets the first /24
POD_CIDR=10.244.0.0/24         # what the CNI bridge hands out (matches the node's podCIDR)
POD_GATEWAY=10.244.0.1
CNI_BRIDGE=esmcni0
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
ETCD_PORT=12379
ETCD_PEER_PORT=12380

ROOT=${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
# The binaries of hack/install-control-plane.sh and hack/install-node.sh (the pin is theirs).
CLUSTER_BIN=$ROOT/k8s/$(sed -n 's/^K8S_VERSION=//p' "$(dirname "${BASH_SOURCE[0]}")/gobuild.sh")
# Persistent between runs: logs of the last run. Everything else is removed on stop.
CLUSTER_STATE=${ESM_CLUSTER_STATE:-$ROOT/cluster}
# Runtime files (sockets, runc state), gone on reboot.
CLUSTER_RUN=/run/esm-cluster
CONTAINERD_SOCK=$CLUSTER_RUN/containerd.sock
KUBECONFIG_ADMIN=$CLUSTER_STATE/admin.kubeconfig
PAUSE_IMAGE=localhost/esm-operator/pause:dev
