#!/usr/bin/env bash
# Runs the benchmarks of docs/benchmarks.md and prints their figures as tables. Not part of the
# test suite: it asserts nothing about time. Run it on a quiet machine; it takes ~15 min.
#
#   hack/bench.sh                  # 1. engine micro-benchmark, 2.-4. loopback benchmarks
#   hack/bench.sh engine           # only the micro-benchmark
#   hack/bench.sh loopback [NAME...]  # only the loopback ones (names: benches/loopback.rs)
#   hack/bench.sh pods             # 5. on the real node of hack/start-cluster.sh (root; not in "all")
#   hack/bench.sh peer             # 6. side by side with Benthos v4.27.0 (~30 min, plus ~30 min
#                                  #    to build Benthos once; not in "all")
#
# Sizes of the loopback runs: BENCH_* variables, see benches/loopback.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh

what=${1:-all}
[[ $# -gt 0 ]] && shift

engine() {
  printf '\n## 1. Engine micro-benchmark (records per CPU-second of one thread)\n\n'
  printf '| engine | filter | batch size | records/s per core |\n|---|---|---|---|\n'
  # criterion prints "NAME\n time: [...]\n thrpt: [low estimate high]": keep the estimate.
  local errors="${TMPDIR:-/tmp}/esm-bench-engine.err"
  cargo bench --locked --bench engine 2>"$errors" | tee "${TMPDIR:-/tmp}/esm-bench-engine.txt" | awk '
    /^(sqs|kinesis)_engine\// { split($1, id, "/"); name = id[1]; filter = id[2]; batch = id[3] }
    /thrpt:/ && name != "" {
      printf "| %s | %s | %s | %s %s |\n", name, filter == "filter" ? "1 pattern" : "none", batch, $4, $5
      name = ""
    }
    /heap allocations/ { tables = 1 }
    tables { print }' || { echo "hack/bench.sh: the engine benchmark failed:" >&2; tail -30 "$errors" >&2; exit 1; }
}

loopback() {
  printf '\n## 2.-4. Loopback: poller, scale, controller\n\n'
  KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1)
  export KUBEBUILDER_ASSETS
  hack/emulators.sh install
  cargo bench --locked --bench loopback -- "$@"
}

peer() {
  printf '\n## 6. Side by side with the peer (Benthos v4.27.0)\n\n'
  BENTHOS=$(hack/install-benthos.sh | tail -1)
  export BENTHOS
  KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1)
  export KUBEBUILDER_ASSETS
  hack/emulators.sh install
  cargo bench --locked --bench peer
}

case $what in
  all) engine; loopback ;;
  engine) engine ;;
  loopback) loopback "$@" ;;
  pods) exec hack/bench-pods.sh ;;
  peer) peer ;;
  *) echo "usage: hack/bench.sh [all | engine | loopback [NAME...] | pods | peer]" >&2; exit 2 ;;
esac
