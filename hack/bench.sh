#!/usr/bin/env bash
# Runs the benchmarks of docs/benchmarks.md and prints their figures as tables. Not part of the
# test suite: it asserts nothing about time. Run it on a quiet machine; it takes ~15 min.
#
#   hack/bench.sh                  # 1. engine micro-benchmark, 2.-4. loopback benchmarks
#   hack/bench.sh engine           # only the micro-benchmark
#   hack/bench.sh loopback [NAME...]  # only the loopback ones (names: benches/loopback.rs)
#
# Sizes of the loopback runs: BENCH_* variables, see benches/loopback.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export ESM_CACHE_DIR=${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ESM_CACHE_DIR/target}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_EC2_METADATA_DISABLED=true

what=${1:-all}
[[ $# -gt 0 ]] && shift

engine() {
  printf '\n## 1. Engine micro-benchmark (records per CPU-second of one thread)\n\n'
  printf '| engine | filter | batch size | records/s per core |\n|---|---|---|---|\n'
  # criterion prints "NAME\n time: [...]\n thrpt: [low estimate high]": keep the estimate.
  cargo bench --locked --bench engine 2>/dev/null | tee "${TMPDIR:-/tmp}/esm-bench-engine.txt" | awk '
    /^(sqs|kinesis)_engine\// { split($1, id, "/"); name = id[1]; filter = id[2]; batch = id[3] }
    /thrpt:/ && name != "" {
      printf "| %s | %s | %s | %s %s |\n", name, filter == "filter" ? "1 pattern" : "none", batch, $4, $5
      name = ""
    }
    /heap allocations/ { tables = 1 }
    tables { print }'
}

loopback() {
  printf '\n## 2.-4. Loopback: poller, scale, controller\n\n'
  hack/install-control-plane.sh >/dev/null
  hack/emulators.sh install
  cargo bench --locked --bench loopback -- "$@"
}

case $what in
  all) engine; loopback ;;
  engine) engine ;;
  loopback) loopback "$@" ;;
  *) echo "usage: hack/bench.sh [all | engine | loopback [NAME...]]" >&2; exit 2 ;;
esac
