#!/usr/bin/env bash
# The main job on a real node (`hack/quickstart.sh --pods` runs this): the cluster of
# hack/start-cluster.sh, the images of hack/build-images.sh, the chart installed with the local
# image, the example target as a Deployment behind a Service, the AWS emulators on the node IP
# with a Service each, one mapping per source naming the target by its Service — and then
# `kubectl get pods,esm` as the records arrive. Stops the cluster when it ends unless
# --keep-running. Needs root.
#
#   hack/quickstart.sh --pods [--keep-running]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP_RUNNING=
case "${1:-}" in
  --keep-running) KEEP_RUNNING=1 ;;
  "") ;;
  *) echo "usage: hack/quickstart.sh --pods [--keep-running]" >&2; exit 2 ;;
esac

source hack/lib/env.sh
source hack/lib/cluster.sh
source hack/lib/say.sh
source hack/lib/manifests.sh
STATE=$(mktemp -d "${TMPDIR:-/tmp}/esm-quickstart-pods.XXXXXX")
NS=quickstart
started=$SECONDS

fail() {
  printf '\n\033[31mquickstart --pods failed: %s\033[0m\n' "$1" >&2
  [[ -n ${2:-} ]] && printf '    what to do: %s\n' "$2" >&2
  kubectl get pods,esm -n "$NS" >&2 2>/dev/null || true
  exit 1
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  bold "stopping everything the quickstart started"
  hack/emulators.sh stop --state "$STATE/emulators" >/dev/null 2>&1 || true
  [[ -n ${CLUSTER_STARTED:-} ]] && { hack/stop-cluster.sh >/dev/null 2>&1 || true; }
  rm -rf "$STATE"
  note "done in $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || fail "a real node needs root" "run it as root, or run hack/quickstart.sh (no node, no root)"

bold "1/7 binaries: control plane and node (first time: ~20 min from Go modules on 2 cores; then cached)"
hack/install-control-plane.sh >/dev/null || fail "building the control-plane binaries failed"
hack/install-node.sh >/dev/null || fail "building the node binaries failed"
hack/emulators.sh install || fail "installing the emulators failed" "check that PyPI, npm and Maven Central are reachable"

bold "2/7 the cluster (hack/start-cluster.sh, ~30 s)"
exports=$(hack/start-cluster.sh) || fail "the cluster did not start" "see the messages above; hack/stop-cluster.sh cleans up"
CLUSTER_STARTED=1
eval "$exports"
kubectl get nodes

bold "3/7 the images (hack/build-images.sh: cargo build --release, first time ~5 min)"
hack/build-images.sh operator target || fail "building the images failed"

bold "4/7 the operator: helm install with the local image"
helm install esm-operator charts/esm-operator -n esm-system --create-namespace \
  --set image.repository=localhost/esm-operator/esm-operator --set image.tag=dev \
  --set logFormat=plain --wait --timeout 5m >/dev/null || fail "helm install failed" "kubectl -n esm-system describe pods"
kubectl -n esm-system get pods

bold "5/7 the emulators on the node IP, the example target, one mapping per source"
exports=$(hack/emulators.sh start moto kinesis dynamodb --bind "$NODE_IP" --state "$STATE/emulators") ||
  fail "the emulators did not start"
eval "$exports"
PYTHON=$ESM_CACHE_DIR/emulators/venv/bin/python
exports=$("$PYTHON" hack/quickstart/seed.py create) || fail "creating the queues, stream and table failed"
eval "$exports"
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic aws --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test >/dev/null
declare -A ENDPOINT
for name in moto kinesis dynamodb; do
  var=ESM_${name^^}_ENDPOINT
  ENDPOINT[$name]=$(host_service "$NS" "$name" "${!var}")
done
RECORDS=$STATE/records
mkdir -p "$RECORDS" && chmod 0777 "$RECORDS"
manifest target.yaml "RECORDS_DIR=$RECORDS" | kubectl -n "$NS" apply -f - >/dev/null
# Ready before the mappings: a batch sent to a target that is not listening yet is retried
# (SQS: after the queue's visibility timeout, a minute here).
kubectl -n "$NS" rollout status deploy/target --timeout=300s >/dev/null || fail "the example target did not become Ready"
aws() { printf 'region: us-east-1, endpointUrl: "%s", credentialsSecretRef: {name: aws}' "${ENDPOINT[$1]}"; }
kubectl apply -n "$NS" -f - <<YAML
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: orders}
spec:
  source: {sqs: {queueUrl: "$QUICKSTART_SQS_URL", $(aws moto)}}
  target: {service: {name: target, port: 8080, path: /orders}}
  targetResponseTypes: [ReportBatchItemFailures]
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: payments}
spec:
  source: {sqs: {queueUrl: "$QUICKSTART_FIFO_URL", $(aws moto)}}
  target: {service: {name: target, port: 8080, path: /payments}}
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: clicks}
spec:
  source: {kinesis: {streamArn: "$QUICKSTART_KINESIS_ARN", $(aws kinesis)}}
  target: {service: {name: target, port: 8080, path: /clicks}}
  startingPosition: TRIM_HORIZON
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: carts}
spec:
  source: {dynamodbStreams: {streamArn: "$QUICKSTART_DYNAMODB_STREAM_ARN", $(aws dynamodb)}}
  target: {service: {name: target, port: 8080, path: /carts}}
  startingPosition: TRIM_HORIZON
YAML

bold "6/7 records in, and the poller pods delivering them"
"$PYTHON" hack/quickstart/seed.py put || fail "putting records failed"
note "put 10 SQS messages, 10 FIFO messages (2 groups), 10 Kinesis records, 7 DynamoDB changes"
declare -A expected=([aws:sqs]=20 [aws:kinesis]=10 [aws:dynamodb]=7)
count() { if [[ -f $RECORDS/records.jsonl ]]; then grep -c "\"eventSource\":\"$1\"" "$RECORDS/records.jsonl" || true; else echo 0; fi; }
timeout=${QUICKSTART_TIMEOUT:-300}
deadline=$((SECONDS + timeout))
while :; do
  line="" done_all=1
  for source in aws:sqs aws:kinesis aws:dynamodb; do
    got=$(count "$source")
    line+="$source $got/${expected[$source]}   "
    ((got >= expected[$source])) || done_all=
  done
  printf '\n    %s (%d s)\n' "$line" "$((SECONDS - started))"
  kubectl get pods,esm -n "$NS" | sed 's/^/      /'
  [[ -n $done_all ]] && break
  ((SECONDS < deadline)) || fail "not every record arrived within $timeout s" "kubectl describe esm -n $NS; kubectl logs -n $NS -l app.kubernetes.io/name=esm-poller"
  sleep 3
done

bold "7/7 status and the operator's metrics (through its Service)"
for _ in $(seq 30); do
  [[ $(kubectl get esm -n "$NS" -o jsonpath='{.items[*].status.lastProcessingResult}') == "OK OK OK OK" ]] && break
  sleep 1
done
kubectl get pods,esm -n "$NS"
ip=$(kubectl -n esm-system get service esm-operator-metrics -o jsonpath='{.spec.clusterIP}')
curl -fsS "http://$ip:8080/metrics" | grep -E '^esm_controller_reconciles_total' | sed 's/^/      /' || true

if [[ -n $KEEP_RUNNING ]]; then
  bold "still running; explore with:"
  note "export KUBECONFIG=$KUBECONFIG_ADMIN PATH=$ESM_CLUSTER_BIN:\$PATH"
  note "kubectl get pods,esm -n $NS; kubectl logs -n $NS deploy/esm-orders"
  note "Ctrl-C stops everything (the cluster too)"
  while :; do sleep 3600; done
fi
bold "quickstart --pods passed: every source delivered its records through poller pods"
