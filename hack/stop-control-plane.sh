#!/usr/bin/env bash
# Stops what hack/start-control-plane.sh STATE started (pids in STATE/pids), in
# reverse order, TERM then KILL after 10s. Keeps STATE (logs) unless --clean.
set -euo pipefail

STATE=${1:?usage: stop-control-plane.sh STATE [--clean]}
[[ -f $STATE/pids ]] || { echo "[stop-control-plane] nothing to stop in $STATE" >&2; exit 0; }

# tac: controller-manager first, etcd last.
tac "$STATE/pids" | while read -r name pid; do
  # Only signal the pid if it still runs the binary we started (pids get reused).
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${name:0:15}" ]] || continue
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  echo "[stop-control-plane] stopped $name (pid $pid)" >&2
done
rm -f "$STATE/pids"
if [[ ${2:-} == --clean ]]; then rm -rf "$STATE"; fi
