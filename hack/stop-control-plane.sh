#!/usr/bin/env bash
# Stops what hack/start-control-plane.sh STATE started (pids in STATE/pids), in
# reverse order, TERM then KILL after 10s. Keeps STATE (logs) unless --clean.
set -euo pipefail

STATE=${1:?usage: stop-control-plane.sh STATE [--clean]}
[[ -f $STATE/pids ]] || { echo "[stop-control-plane] nothing to stop in $STATE" >&2; exit 0; }

log() { printf '[stop-control-plane] %s\n' "$*" >&2; }
# shellcheck source=lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
stop_processes "$STATE/pids"   # controller-manager first, etcd last
if [[ ${2:-} == --clean ]]; then rm -rf "$STATE"; fi
