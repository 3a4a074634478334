#!/usr/bin/env bash
# Stops the cluster of hack/start-cluster.sh and puts the host back as it was: pods removed
# through the CRI (so CNI releases their addresses and veths), processes stopped, mounts under
# the cluster's directories unmounted, KUBE-* and CNI-* iptables chains removed (kubelet's
# too, which `kube-proxy --cleanup` would leave), the bridge and the node-IP link deleted,
# sysctls and host paths restored, kubelet's cgroups removed. Keeps the logs
# ($CLUSTER_STATE/logs). Safe to run when nothing (or only part of it) runs.
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_PREFIX=stop-cluster
log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/cluster.sh
source "$HACK/lib/cluster.sh"
# shellcheck source=lib/procs.sh
source "$HACK/lib/procs.sh"

[[ $(id -u) == 0 ]] || die "needs root (as hack/start-cluster.sh)"
[[ -d $CLUSTER_RUN ]] || { log "no cluster on this machine"; exit 0; }
exec 8>"$CLUSTER_RUN/lock"
flock -w 60 8 || die "another hack/start-cluster.sh or hack/stop-cluster.sh holds $CLUSTER_RUN/lock"
PIDS=$CLUSTER_RUN/pids
BIN=$CLUSTER_BIN

# 1. Nothing may start new pods: controllers, scheduler, kubelet, kube-proxy, CoreDNS.
stop_processes "$PIDS" kube-controller-manager kube-scheduler kubelet kube-proxy coredns

# 2. kubelet leaves its pods running: remove them through the CRI.
if [[ -S $CONTAINERD_SOCK && -x $BIN/crictl ]]; then
  crictl=("$BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s)
  "${crictl[@]}" rmp --all --force >/dev/null 2>&1 || log "warning: crictl rmp --all failed; killing what remains"
fi
stop_processes "$PIDS" containerd
# What CRI could not remove: containers through runc, then their shims.
if [[ -d $CLUSTER_RUN/runc ]]; then
  for id in $(runc --root "$CLUSTER_RUN/runc" list -q 2>/dev/null); do
    runc --root "$CLUSTER_RUN/runc" kill "$id" KILL 2>/dev/null || true
    runc --root "$CLUSTER_RUN/runc" delete --force "$id" 2>/dev/null || true
  done
fi
for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
  kill -KILL "$pid" 2>/dev/null || true
done

# 3. The control plane last.
stop_processes "$PIDS"

# 4. Mounts: pod volumes and containerd's rootfs and netns mounts, deepest first.
mounts() { findmnt -rn -o TARGET | grep -E "^($CLUSTER_STATE|$CLUSTER_RUN|/run/netns/cni-)" | sort -r; }
for target in $(mounts); do umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true; done
for ns in /run/netns/cni-*; do [[ -e $ns ]] && rm -f "$ns"; done
[[ -z $(mounts) ]] || log "warning: still mounted: $(mounts | tr '\n' ' ')"

# 5. iptables: every KUBE-* and CNI-* chain and every rule that jumps to one, per table, in
#    one iptables-restore each (atomic); tables without any are left untouched.
for family in iptables ip6tables; do
  command -v "$family-save" >/dev/null || continue
  saved=$("$family-save" 2>/dev/null) || continue
  grep -qE '^:(KUBE|CNI)-|-j (KUBE|CNI)-' <<<"$saved" || continue
  grep -vE '^:(KUBE|CNI)-|^-A (KUBE|CNI)-|-j (KUBE|CNI)-' <<<"$saved" | "$family-restore" ||
    log "warning: $family-restore failed; see $family-save"
done

# 6. Links: the pod bridge and the node-IP link (veths went with the pods' namespaces).
for link in "$CNI_BRIDGE" "$NODE_LINK"; do
  ip link show "$link" >/dev/null 2>&1 && ip link delete "$link"
done

# 7. Sysctls and the host paths that did not exist before the start.
if [[ -f $CLUSTER_RUN/host ]]; then
  while read -r what key value; do
    [[ $what == sysctl ]] && sysctl -qw "$key=$value"
  done <"$CLUSTER_RUN/host"
  for path in /var/lib/cni /var/log/containers /run/netns; do
    grep -qx "existed $path" "$CLUSTER_RUN/host" || rm -rf "$path"
  done
fi

# 8. kubelet's cgroups (cgroupfs driver: a kubepods tree under each hierarchy).
for tree in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d $tree ]] && find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null
done

# 9. State, but the logs of this run.
if [[ -d $CLUSTER_STATE ]]; then
  find "$CLUSTER_STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
fi
exec 8>&-
rm -rf "$CLUSTER_RUN"
log "cluster stopped; host restored"
