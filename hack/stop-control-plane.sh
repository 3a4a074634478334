#!/usr/bin/env bash
# Stops what hack/start-control-plane.sh STATE started (pids in STATE/pids), in
# reverse order, TERM then KILL after 10s. Keeps STATE (logs) unless --clean.
#
#   hack/stop-control-plane.sh STATE etcd kube-apiserver
#       stops only the named components and keeps their data: hack/start-control-plane.sh
#       STATE starts them again on the same ports (a restart, for tests/restarts.rs).
set -euo pipefail

STATE=${1:?usage: stop-control-plane.sh STATE [--clean | COMPONENT...]}
[[ -f $STATE/pids ]] || { echo "[stop-control-plane] nothing to stop in $STATE" >&2; exit 0; }

log() { printf '[stop-control-plane] %s\n' "$*" >&2; }
# shellcheck source=lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
if [[ ${2:-} == --clean || -z ${2:-} ]]; then
  stop_processes "$STATE/pids"   # controller-manager first, etcd last
  if [[ ${2:-} == --clean ]]; then rm -rf "$STATE"; fi
else
  stop_processes "$STATE/pids" "${@:2}"
fi
