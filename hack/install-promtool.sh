#!/usr/bin/env bash
# Builds the pinned promtool (Prometheus' rule and metrics checker, used by
# tests/observability.rs) from its Go module, into
#
#   $ROOT/prometheus/<version>/promtool
#
# ROOT = ${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
#
# First run on 2 cores with a cold Go build cache: ~6 min (promtool links in Prometheus'
# service discovery, hence its size). Idempotent: a stamp file records the pin, so a second
# run takes a second. Progress goes to stderr; the LAST line of stdout is the binary:
#
#   export PROMTOOL=$(hack/install-promtool.sh | tail -1)
set -euo pipefail

# Prometheus' Go module is versioned v0.3MM.P for release v3.MM.P.
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0

LOG_PREFIX=install-promtool
BIN_SUBDIR=prometheus/$PROMETHEUS_MODULE_VERSION
# shellcheck source=lib/gobuild.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/gobuild.sh"
lock_cache

if up_to_date promtool "$PROMETHEUS_MODULE_VERSION"; then
  log "promtool $PROMETHEUS_VERSION: up to date"
else
  log "building promtool $PROMETHEUS_VERSION (first time: ~6 min on 2 cores; less if the Go build cache is warm)"
  need_go "Go >= 1.26 is needed to build Prometheus $PROMETHEUS_VERSION"
  dir=$SRC/promtool-tools
  tool_wrapper "$dir" 1.26.0 github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" \
    github.com/prometheus/prometheus/cmd/promtool
  # As Prometheus' release builds (promu) stamp it, so 'promtool --version' tells the truth.
  build_date=$(module_time github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION")
  build promtool "$PROMETHEUS_MODULE_VERSION" "$dir" github.com/prometheus/prometheus/cmd/promtool "" \
    "An older v0.3xx pin of github.com/prometheus/prometheus is the fallback if this one stops building with this Go." \
    "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    "-X github.com/prometheus/common/version.BuildDate=$build_date"
fi

echo "$BIN/promtool"
