#!/usr/bin/env bash
# Builds the pinned Toxiproxy server (Shopify's TCP fault-injecting proxy, used by
# tests/network_faults.rs between the poller and the emulators, the target and the
# kube-apiserver) from its Go module, into
#
#   $ROOT/toxiproxy/<version>/toxiproxy-server
#
# ROOT = ${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
#
# First run on 2 cores with a cold Go build cache: ~1 min. Idempotent: a stamp file records the
# pin, so a second run takes a second. Progress goes to stderr; the LAST line of stdout is the
# binary:
#
#   export ESM_TOXIPROXY=$(hack/install-toxiproxy.sh | tail -1)
set -euo pipefail

TOXIPROXY_VERSION=v2.5.0

LOG_PREFIX=install-toxiproxy
BIN_SUBDIR=toxiproxy/$TOXIPROXY_VERSION
# shellcheck source=lib/gobuild.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/gobuild.sh"
lock_cache

if up_to_date toxiproxy-server "$TOXIPROXY_VERSION"; then
  log "toxiproxy-server $TOXIPROXY_VERSION: up to date"
else
  log "building toxiproxy-server $TOXIPROXY_VERSION (first time: ~1 min on 2 cores)"
  need_go "Go >= 1.17 is needed to build Toxiproxy $TOXIPROXY_VERSION"
  dir=$SRC/toxiproxy-tools
  # The same as `go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0`, through a
  # wrapper module so go.sum pins the dependencies and the binary gets its real name.
  tool_wrapper "$dir" 1.17 github.com/Shopify/toxiproxy/v2 "$TOXIPROXY_VERSION" \
    github.com/Shopify/toxiproxy/v2/cmd/server
  # As Toxiproxy's release builds stamp it, so 'toxiproxy-server --version' tells the truth.
  build toxiproxy-server "$TOXIPROXY_VERSION" "$dir" github.com/Shopify/toxiproxy/v2/cmd/server "" \
    "An older v2.x pin of github.com/Shopify/toxiproxy/v2 is the fallback if this one stops building with this Go." \
    "-X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION#v}"
fi

echo "$BIN/toxiproxy-server"
