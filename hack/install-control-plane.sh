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

K8S_VERSION=v1.35.4
K8S_STAGING_VERSION=v0.35.4   # every k8s.io staging module is published as v0.<minor>.<patch>
ETCD_VERSION=v3.6.6           # what Kubernetes 1.35 uses (build/dependencies.yaml, kubeadm 3.6.6-0)
HELM_VERSION=v3.19.5

ROOT=${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
BIN=$ROOT/k8s/$K8S_VERSION
SRC=$ROOT/src       # wrapper modules (go.mod/go.sum only)
STAMPS=$BIN/.stamps

# -mod=mod: the wrapper modules are generated, let go fix up go.sum as needed.
# -buildvcs=false: the wrappers are not in a VCS checkout anyway.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false"
# Static binaries, as Kubernetes' own release builds of these components are.
export CGO_ENABLED=0
# Same tags as hack/lib/golang.sh for non-debug builds (selinux only matters to kubelet).
K8S_TAGS=notest,grpcnotrace
# 2 cores: one build at a time, each with -p 2.
GOBUILD=(go build -p 2 -trimpath)

log() { printf '[install-control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Make INT/TERM run the EXIT trap too (it removes a half-written binary).
trap 'exit 130' INT
trap 'exit 143' TERM

# Only checked when something must be built: cached binaries need no Go.
need_go() { command -v go >/dev/null || die "go not found on PATH (Go >= 1.25 is needed to build Kubernetes $K8S_VERSION)"; }
mkdir -p "$BIN" "$STAMPS" "$SRC"

# Two runs at once (e.g. parallel test jobs) would build the same thing twice.
exec 9>"$ROOT/.lock"
if command -v flock >/dev/null; then
  flock 9
fi

# The pin and the build mode; not the Go version (a Go upgrade needs no rebuild).
stamp_of() { printf '%s %s cgo=%s\n' "$1" "$2" "$CGO_ENABLED"; }

# up_to_date NAME VERSION: the binary exists and was built from this pin.
up_to_date() {
  [[ -x $BIN/$1 && -f $STAMPS/$1 ]] && [[ $(<"$STAMPS/$1") == "$(stamp_of "$1" "$2")" ]]
}

# build NAME VERSION WRAPPER_DIR PACKAGE TAGS HINT LDFLAGS...: builds to a temp name
# and renames, so a failed or interrupted build leaves no half binary behind.
build() {
  local name=$1 version=$2 dir=$3 pkg=$4 tags=$5 hint=$6
  shift 6
  local tmp="$BIN/.$name.tmp.$$" start=$SECONDS
  trap 'rm -f "$tmp"' EXIT
  if ! (cd "$dir" && "${GOBUILD[@]}" -tags "$tags" -ldflags "-s -w $*" -o "$tmp" "$pkg"); then
    rm -f "$tmp"
    die "building $name $version failed (package $pkg in wrapper module $dir). Try: rm -rf '$dir' and rerun; check that the Go module proxy is reachable, that 'go version' is >= 1.25 and that there is disk space; add -x to GOFLAGS for detail. $hint"
  fi
  mv -f "$tmp" "$BIN/$name"
  trap - EXIT
  stamp_of "$name" "$version" >"$STAMPS/$name"
  log "built $name $version in $((SECONDS - start))s"
}

# module_time MODULE VERSION: release time of a module version (from the proxy's
# .info), used as buildDate so the binaries are reproducible.
module_time() {
  go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' | head -1
}

# ---------------------------------------------------------------- Kubernetes
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with ./staging
# paths, so it cannot be 'go install'ed by version. A wrapper module requires it
# and replaces each of those modules with its published v0.x twin instead.
k8s_wrapper() {
  local dir=$SRC/k8s-tools gomod staging
  need_go
  log "preparing wrapper module for k8s.io/kubernetes $K8S_VERSION (first time: <1 min of module downloads)"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  # Read the real list of replaced staging modules rather than hard-coding it.
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)
  [[ -n $staging ]] || die "found no staging replace lines in $gomod"
  mkdir -p "$dir"
  {
    printf 'module esm-operator/k8s-tools\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    printf 'tool (\n\tk8s.io/kubernetes/cmd/kube-apiserver\n\tk8s.io/kubernetes/cmd/kube-controller-manager\n\tk8s.io/kubernetes/cmd/kubectl\n)\n\nreplace (\n'
    local m
    for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
    printf ')\n'
  } >"$dir/go.mod.new"
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.in" || [[ ! -f $dir/go.sum ]]; then
    cp "$dir/go.mod.new" "$dir/go.mod"
    rm -f "$dir/go.sum"
    (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir (Kubernetes $K8S_VERSION wrapper module)"
    mv "$dir/go.mod.new" "$dir/go.mod.in"   # remembers what go.mod was generated from
  else
    rm -f "$dir/go.mod.new"
  fi
}

k8s_ldflags() {
  local date major minor pkg out=()
  date=$(module_time k8s.io/kubernetes "$K8S_VERSION")
  major=${K8S_VERSION#v}; major=${major%%.*}
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  # As hack/lib/version.sh does, so --version is right and kubectl sees no skew.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=("-X $pkg.gitVersion=$K8S_VERSION" "-X $pkg.gitMajor=$major" "-X $pkg.gitMinor=$minor"
      "-X $pkg.gitTreeState=clean" "-X $pkg.buildDate=$date")
  done
  echo "${out[*]}"
}

declare -A K8S_ETA=([kube-apiserver]="~4-5 min" [kube-controller-manager]="~1.5 min" [kubectl]="~30 s")
k8s_done=
for name in kube-apiserver kube-controller-manager kubectl; do
  if up_to_date "$name" "$K8S_VERSION"; then
    log "$name $K8S_VERSION: up to date"
    continue
  fi
  if [[ -z $k8s_done ]]; then
    k8s_wrapper
    K8S_LDFLAGS=$(k8s_ldflags)
    k8s_done=1
  fi
  log "building $name $K8S_VERSION (first time: ${K8S_ETA[$name]} on 2 cores; less if the Go build cache is warm)"
  # shellcheck disable=SC2086 # K8S_LDFLAGS is deliberately split into words
  build "$name" "$K8S_VERSION" "$SRC/k8s-tools" "k8s.io/kubernetes/cmd/$name" "$K8S_TAGS" \
    "If only Go is newer than Kubernetes $K8S_VERSION supports, try an older Go toolchain (GOTOOLCHAIN=go1.25.0)." \
    $K8S_LDFLAGS
done

# ---------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 has its main package at the module root, but its
# go.mod replaces sibling modules with ../ paths, so build it from a wrapper.
if up_to_date etcd "$ETCD_VERSION"; then
  log "etcd $ETCD_VERSION: up to date"
else
  log "building etcd $ETCD_VERSION (first time: ~30 s on 2 cores)"
  need_go
  dir=$SRC/etcd-tools
  mkdir -p "$dir"
  printf 'module esm-operator/etcd-tools\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' "$ETCD_VERSION" >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir (etcd $ETCD_VERSION wrapper module)"
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
  mkdir -p "$dir"
  printf 'module esm-operator/helm-tools\n\ngo 1.24.0\n\nrequire helm.sh/helm/v3 %s\n\ntool helm.sh/helm/v3/cmd/helm\n' "$HELM_VERSION" >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir (helm $HELM_VERSION wrapper module)"
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
