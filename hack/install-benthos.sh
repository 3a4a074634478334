#!/usr/bin/env bash
# Builds the peer of `hack/bench.sh peer`: Benthos v4.27.0 (github.com/benthosdev/benthos/v4,
# MIT; cmd/benthos with every plugin, as its release binaries are) from its Go module, into
#
#   $ROOT/benthos/<version>/benthos
#
# ROOT = ${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
#
# First run on 2 cores with a cold Go build cache: ~30 min (it compiles every Benthos plugin and
# their SDKs). Idempotent: a stamp file records the pin, so a second run takes a second. Not a
# test dependency: only hack/bench.sh peer runs it. Progress goes to stderr; the LAST line of
# stdout is the binary:
#
#   BENTHOS=$(hack/install-benthos.sh | tail -1)
set -euo pipefail

BENTHOS_VERSION=v4.27.0

LOG_PREFIX=install-benthos
BIN_SUBDIR=benthos/$BENTHOS_VERSION
# shellcheck source=lib/gobuild.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/gobuild.sh"
lock_cache

if up_to_date benthos "$BENTHOS_VERSION"; then
  log "benthos $BENTHOS_VERSION: up to date"
else
  log "building benthos $BENTHOS_VERSION (first time: ~30 min on 2 cores)"
  need_go "Go >= 1.24 is needed to build the Benthos $BENTHOS_VERSION wrapper module"
  dir=$SRC/benthos-tools
  mkdir -p "$dir/peercred"
  # `go install github.com/benthosdev/benthos/v4/cmd/benthos@v4.27.0` is not possible here: a
  # module with replace lines cannot be installed by version, so a wrapper module requires it
  # and repeats Benthos' own replace line. inet.af/peercred (required through
  # github.com/AthenZ/athenz, and never compiled into cmd/benthos) is refused by the module proxy
  # here: a go.mod-only stub stands in so the module graph resolves.
  printf 'module inet.af/peercred\n\ngo 1.16\n' >"$dir/peercred/go.mod"
  printf '%s\n' "module esm-operator/benthos-tools" "" "go 1.24" "" \
    "require github.com/benthosdev/benthos/v4 $BENTHOS_VERSION" "" "replace (" \
    "	github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3" \
    "	inet.af/peercred => ./peercred" ")" "" \
    "tool github.com/benthosdev/benthos/v4/cmd/benthos" >"$dir/go.mod.new"
  tidy_wrapper "$dir" "Benthos $BENTHOS_VERSION"
  # -checklinkname=0: a parquet-go dependency reaches into the runtime with go:linkname, which
  # Go >= 1.23 refuses to link unless told to. cgo stays off, as in Benthos' release builds.
  # The version stamps as its releases set them: built from a dependency module, its own
  # lookup of the module version finds nothing ('benthos --version' would say "unknown").
  build benthos "$BENTHOS_VERSION" "$dir" github.com/benthosdev/benthos/v4/cmd/benthos "" \
    "Benthos $BENTHOS_VERSION was released for Go 1.21; if a newer Go refuses it, try GOTOOLCHAIN=go1.22.12." \
    "-checklinkname=0" \
    "-X github.com/benthosdev/benthos/v4/internal/cli.Version=${BENTHOS_VERSION#v}" \
    "-X github.com/benthosdev/benthos/v4/internal/cli.DateBuilt=$(module_time github.com/benthosdev/benthos/v4 "$BENTHOS_VERSION")"
fi

echo "$BIN/benthos"
