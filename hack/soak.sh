#!/usr/bin/env bash
# The chaos soak of docs/reliability.md (tests/chaos_soak.rs): a Kinesis mapping resharded every
# 3 minutes and an SQS FIFO mapping under random faults (Toxiproxy network faults on the
# emulators, the target and the kube-apiserver; kube-apiserver + etcd, ElasticMQ and poller
# restarts; a failing target), one every few seconds, then the ledger. Not part of the test
# suite (30 minutes by default).
#
#   hack/soak.sh [SECONDS] [SEED]   # default 1800 s; the seed replays a run's faults
#
# Prints the SOAK and LEDGER lines; exits non-zero when a record was lost or a key's order broke.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh

export ESM_SOAK_SECONDS=${1:-1800}
[[ $ESM_SOAK_SECONDS =~ ^[0-9]+$ ]] || { echo "hack/soak.sh: SECONDS must be a whole number: $1" >&2; exit 2; }
if [[ $# -ge 2 ]]; then
  [[ $2 =~ ^[0-9]+$ ]] || { echo "hack/soak.sh: SEED must be a whole number: $2" >&2; exit 2; }
  export ESM_SOAK_SEED=$2
fi

KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1)
export KUBEBUILDER_ASSETS
hack/emulators.sh install
ESM_TOXIPROXY=$(hack/install-toxiproxy.sh | tail -1)
export ESM_TOXIPROXY

log=${TMPDIR:-/tmp}/esm-soak.log
echo "hack/soak.sh: ${ESM_SOAK_SECONDS} s of faults, then the drain; full output in $log" >&2
set +e
cargo test --locked --test chaos_soak -- --ignored --nocapture 2>&1 | tee "$log" |
  grep -E '^(SOAK|LEDGER)|panicked|test result'
codes=("${PIPESTATUS[@]}")
set -e
exit "${codes[0]}"
