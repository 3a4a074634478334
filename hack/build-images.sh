#!/usr/bin/env bash
# Builds the project's container images without Docker or a registry, and imports them into
# the containerd of hack/start-cluster.sh when it runs:
#
#   localhost/esm-operator/esm-operator:dev   the operator: controller and poller (one image)
#   localhost/esm-operator/target:dev         the example target service (examples/target.rs)
#   localhost/esm-operator/pause:dev          the pod sandbox (hack/images/pause.c)
#
#   hack/build-images.sh [operator] [target] [pause]    (default: operator target)
#
# Each image is one layer assembled from `cargo build --release` output (the binary, the
# shared libraries `ldd` names, a CA bundle, /etc/passwd with the nonroot user) as an OCI
# archive in $ESM_CACHE_DIR/images/<name>.tar; `ctr images import` loads it. The operator
# image keeps the Dockerfile's contract: ENTRYPOINT /esm-operator, CMD controller, USER
# 65532:65532, port 8080 (docs/operations.md, "Images"). Other clusters can load the
# archives too, e.g. `kind load image-archive $ESM_CACHE_DIR/images/esm-operator.tar`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LOG_PREFIX=build-images
log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
source hack/lib/env.sh
# shellcheck source=lib/cluster.sh
source hack/lib/cluster.sh
# shellcheck source=lib/oci.sh
source hack/lib/oci.sh

OPERATOR_IMAGE=localhost/esm-operator/esm-operator:dev
TARGET_IMAGE=localhost/esm-operator/target:dev
OUT=$ESM_CACHE_DIR/images
mkdir -p "$OUT"
(($#)) || set -- operator target
for image in "$@"; do
  case $image in operator | target | pause) ;; *) die "unknown image '$image' (operator, target, pause)" ;; esac
done

# rootfs_for BINARY DIR NAME: DIR holds BINARY as /NAME and what it needs to run as nonroot.
rootfs_for() {
  local binary=$1 dir=$2 name=$3 lib
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
  chmod 1777 "$dir/tmp"
  install -m 0755 "$binary" "$dir/$name"
  # The libraries the dynamic loader resolves, at the same paths (glibc build of the binary).
  for lib in $(ldd "$binary" | grep -oE '/[^ ]+' | sort -u); do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/" || die "no CA bundle at /etc/ssl/certs/ca-certificates.crt (Debian: ca-certificates)"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  chown 65532:65532 "$dir/home/nonroot"
}

# config ENTRYPOINT CMD: the image config, as the Dockerfile's (user 65532, port 8080).
config() {
  printf '{"Entrypoint":%s,"Cmd":%s,"User":"65532:65532","ExposedPorts":{"8080/tcp":{}},"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/"}' "$1" "$2"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archives=()
if [[ " $* " == *" operator "* || " $* " == *" target "* ]]; then
  log "cargo build --release (first time ~5 min on 2 cores)"
  cargo build --release --locked --bin esm-operator --example target >&2
fi
for image in "$@"; do
  case $image in
    operator)
      rootfs_for "$CARGO_TARGET_DIR/release/esm-operator" "$work/operator" esm-operator
      archive=$OUT/esm-operator.tar
      oci_image "$archive" "$OPERATOR_IMAGE" "$work/operator" "$(config '["/esm-operator"]' '["controller"]')"
      ;;
    target)
      # Listens on all addresses of the pod (the example's default is loopback).
      rootfs_for "$CARGO_TARGET_DIR/release/examples/target" "$work/target" target
      archive=$OUT/target.tar
      oci_image "$archive" "$TARGET_IMAGE" "$work/target" "$(config '["/target"]' '["--addr","0.0.0.0:8080"]')"
      ;;
    pause)
      mkdir -p "$work/pause"
      gcc -static -O2 -o "$work/pause/pause" hack/images/pause.c || die "gcc -static failed (Debian: gcc and libc6-dev)"
      strip "$work/pause/pause"
      archive=$OUT/pause.tar
      oci_image "$archive" "$PAUSE_IMAGE" "$work/pause" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
      ;;
  esac
  archives+=("$archive")
  log "built $image: $archive ($(du -h "$archive" | cut -f1))"
done

if [[ -S $CONTAINERD_SOCK ]]; then
  for archive in "${archives[@]}"; do
    oci_import "$CONTAINERD_SOCK" "$archive" || die "ctr images import $archive failed"
  done
  log "imported into the cluster's containerd ($CONTAINERD_SOCK)"
else
  log "no cluster running (hack/start-cluster.sh): archives left in $OUT"
fi
