# Shared by the hack/install-*.sh scripts that build pinned tools from their Go modules
# (sourced, not run): the pinned Kubernetes version, the cache layout, and how a Go binary is
# built and stamped. One wrapper module and one set of flags for every Kubernetes binary, so the
# Go build cache is shared between them (kube-apiserver, kubelet, ... compile the same packages
# once).
#
# The caller sets LOG_PREFIX before sourcing, and BIN_SUBDIR when its binaries are not
# Kubernetes' (default k8s/<version>); every binary gets a stamp file in $BIN/.stamps naming its
# pin, so a second run skips what is built already.

K8S_VERSION=v1.35.4
K8S_STAGING_VERSION=v0.35.4   # every k8s.io staging module is published as v0.<minor>.<patch>

ROOT=${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
BIN=$ROOT/${BIN_SUBDIR:-k8s/$K8S_VERSION}
SRC=$ROOT/src       # wrapper modules (go.mod/go.sum only, plus CoreDNS's main.go)
STAMPS=$BIN/.stamps

# -mod=mod: the wrapper modules are generated, let go fix up go.sum as needed.
# -buildvcs=false: the wrappers are not in a VCS checkout anyway.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false"
# Static binaries, as Kubernetes' own release builds of these components are.
export CGO_ENABLED=0
# Same tags as hack/lib/golang.sh for non-debug builds (selinux only matters to kubelet).
K8S_TAGS=notest,grpcnotrace
# Every Kubernetes command built from the one wrapper module (go.mod `tool` lines).
K8S_COMMANDS=(kube-apiserver kube-controller-manager kubectl kubelet kube-proxy kube-scheduler)
# 2 cores: one build at a time, each with -p 2.
GOBUILD=(go build -p 2 -trimpath)

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Make INT/TERM run the EXIT trap too (it removes a half-written binary).
trap 'exit 130' INT
trap 'exit 143' TERM

# need_go [WHY]: only checked when something must be built, as cached binaries need no Go.
need_go() { command -v go >/dev/null || die "go not found on PATH (${1:-Go >= 1.25 is needed to build Kubernetes $K8S_VERSION})"; }

# Two runs at once (e.g. parallel test jobs, or the control-plane and node installs) would
# build the same thing twice: one build at a time per binary directory (the Kubernetes binaries
# share one), so the half-hour peer build of hack/bench.sh holds up no test dependency.
lock_cache() {
  mkdir -p "$BIN" "$STAMPS" "$SRC"
  exec 9>"$BIN/.lock"
  if command -v flock >/dev/null; then
    flock 9
  fi
}

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

# module_time MODULE VERSION: release time of a module version (from the proxy's .info
# file: 'go mod download -json' names that file but does not print the time itself),
# used as the build date so the binaries are reproducible.
module_time() {
  local info
  info=$(go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $info ]] || die "could not download $1@$2 from the Go module proxy"
  sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info"
}

# tidy_wrapper DIR WHAT: (re)writes DIR/go.mod from DIR/go.mod.new and runs go mod tidy, only
# when the generated go.mod changed (DIR/go.mod.in remembers what go.mod was generated from).
tidy_wrapper() {
  local dir=$1 what=$2
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.in" || [[ ! -f $dir/go.sum ]]; then
    cp "$dir/go.mod.new" "$dir/go.mod"
    rm -f "$dir/go.sum"
    (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir ($what wrapper module)"
    mv "$dir/go.mod.new" "$dir/go.mod.in"
  else
    rm -f "$dir/go.mod.new"
  fi
}

# tool_wrapper DIR GO_VERSION MODULE VERSION PACKAGE: a module that only requires MODULE at
# VERSION and names PACKAGE as its tool, so go resolves (and go.sum pins) its dependencies
# exactly as MODULE's own go.mod says.
tool_wrapper() {
  local dir=$1 go_version=$2 module=$3 version=$4 pkg=$5
  mkdir -p "$dir"
  printf 'module esm-operator/%s\n\ngo %s\n\nrequire %s %s\n\ntool %s\n' \
    "${dir##*/}" "$go_version" "$module" "$version" "$pkg" >"$dir/go.mod.new"
  tidy_wrapper "$dir" "$module $version"
}

# ---------------------------------------------------------------- Kubernetes
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with ./staging
# paths, so it cannot be 'go install'ed by version. A wrapper module requires it
# and replaces each of those modules with its published v0.x twin instead.
k8s_wrapper() {
  local dir=$SRC/k8s-tools gomod staging m cmd
  need_go
  log "preparing wrapper module for k8s.io/kubernetes $K8S_VERSION (first time: <1 min of module downloads)"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  # Read the real list of replaced staging modules rather than hard-coding it.
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)
  [[ -n $staging ]] || die "found no staging replace lines in $gomod"
  mkdir -p "$dir"
  {
    printf 'module esm-operator/k8s-tools\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes %s\n\ntool (\n' "$K8S_VERSION"
    for cmd in "${K8S_COMMANDS[@]}"; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$cmd"; done
    printf ')\n\nreplace (\n'
    for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
    printf ')\n'
  } >"$dir/go.mod.new"
  tidy_wrapper "$dir" "Kubernetes $K8S_VERSION"
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

# build_k8s "NAME ETA"...: builds each Kubernetes command that is not up to date; the wrapper
# module and ldflags are prepared once, and only if something must be built.
build_k8s() {
  local entry name eta prepared= ldflags
  for entry in "$@"; do
    name=${entry%% *} eta=${entry#* }
    if up_to_date "$name" "$K8S_VERSION"; then
      log "$name $K8S_VERSION: up to date"
      continue
    fi
    if [[ -z $prepared ]]; then
      k8s_wrapper
      ldflags=$(k8s_ldflags)
      prepared=1
    fi
    log "building $name $K8S_VERSION (first time: $eta on 2 cores; less if the Go build cache is warm)"
    # shellcheck disable=SC2086 # ldflags is deliberately split into words
    build "$name" "$K8S_VERSION" "$SRC/k8s-tools" "k8s.io/kubernetes/cmd/$name" "$K8S_TAGS" \
      "If only Go is newer than Kubernetes $K8S_VERSION supports, try an older Go toolchain (GOTOOLCHAIN=go1.25.0)." \
      $ldflags
  done
}
