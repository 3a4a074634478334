#!/usr/bin/env bash
# Builds the pinned control-plane binaries the integration tests run against
# (kube-apiserver, kube-controller-manager, kubectl, etcd, helm) from their Go
# modules, into the envtest layout:
#
#   $ROOT/k8s/<k8s version>/{kube-apiserver,kube-controller-manager,kubectl,etcd,helm}
#
# ROOT = ${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
#
# First run on 2 cores with a cold Go build cache: ~8 min in all (kube-apiserver
# ~4 min, kube-controller-manager ~1.5 min, kubectl, etcd, helm ~2 min together).
#
# Only the Go module proxy is needed (no release downloads). Idempotent: a binary
# whose stamp file matches its pin is skipped, so a second run takes seconds.
# Progress goes to stderr; the LAST line of stdout is the binary directory:
#
#   export KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1)
set -euo pipefail

ETCD_VERSION=v3.6.6           # what Kubernetes 1.35 uses (build/dependencies.yaml, kubeadm 3.6.6-0)
HELM_VERSION=v3.19.5

LOG_PREFIX=install-control-plane
# shellcheck source=lib/gobuild.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/gobuild.sh"
lock_cache

build_k8s "kube-apiserver ~4-5 min" "kube-controller-manager ~1.5 min" "kubectl ~30 s"

# ---------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 has its main package at the module root, but its
# go.mod replaces sibling modules with ../ paths, so build it from a wrapper.
if up_to_date etcd "$ETCD_VERSION"; then
  log "etcd $ETCD_VERSION: up to date"
else
  log "building etcd $ETCD_VERSION (first time: ~30 s on 2 cores)"
  need_go
  dir=$SRC/etcd-tools
  tool_wrapper "$dir" 1.24 go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
  build etcd "$ETCD_VERSION" "$dir" go.etcd.io/etcd/server/v3 "" \
    "Debian's etcd-server package is a fallback only if its version is one kube-apiserver $K8S_VERSION accepts (>= 3.5)."
fi

# ---------------------------------------------------------------- helm
if up_to_date helm "$HELM_VERSION"; then
  log "helm $HELM_VERSION: up to date"
else
  log "building helm $HELM_VERSION (first time: ~1 min on 2 cores)"
  need_go
  dir=$SRC/helm-tools
  tool_wrapper "$dir" 1.24.0 helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
  # As helm's Makefile: version, and the Kubernetes version helm assumes for
  # .Capabilities, derived from the client-go it is built with (v0.X -> 1.X).
  cg=$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
  cg_minor=${cg#v0.}; cg_minor=${cg_minor%%.*}
  build helm "$HELM_VERSION" "$dir" helm.sh/helm/v3/cmd/helm "" \
    "helm v4 (helm.sh/helm/v4/cmd/helm) is the fallback if v3 stops building with this Go." \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$cg_minor" \
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$cg_minor"
fi

log "all binaries in $BIN"
echo "$BIN"
