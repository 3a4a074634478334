#!/usr/bin/env bash
# The pod benchmarks of docs/benchmarks.md (`hack/bench.sh pods` runs this; root): on the
# real node of hack/start-cluster.sh,
#   1. cluster start-up time (hack/start-cluster.sh, binaries already built),
#   2. apply -> first record delivered by a poller pod, over BENCH_MAPPINGS (20) mappings
#      applied one after another, each to a standard queue that already holds a message,
#   3. a poller pod's RSS and CPU per record, reading BENCH_RECORDS (20000) Kinesis records.
# Prints the figures; asserts nothing about time. Starts the cluster when none runs (and stops
# it at the end); uses the images of hack/build-images.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh
source hack/lib/cluster.sh
source hack/lib/manifests.sh
BIN=$CLUSTER_BIN
MAPPINGS=${BENCH_MAPPINGS:-20}
RECORDS=${BENCH_RECORDS:-20000}
NS=bench-pods
STATE=$(mktemp -d "${TMPDIR:-/tmp}/esm-bench-pods.XXXXXX")
[[ $(id -u) == 0 ]] || { echo "hack/bench.sh pods: needs root (a real node)" >&2; exit 1; }

started_cluster=
cleanup() {
  hack/emulators.sh stop --state "$STATE/emulators" >/dev/null 2>&1 || true
  if [[ -n $started_cluster ]]; then hack/stop-cluster.sh >/dev/null 2>&1 || true
  else kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; fi
  rm -rf "$STATE"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

printf '\n## 5. A real node: start-up, apply -> first delivery, a poller pod\n\n'
if [[ ! -s $CLUSTER_RUN/pids ]]; then
  t0=$(now_ms)
  exports=$(hack/start-cluster.sh 2>"$STATE/start.log") || { cat "$STATE/start.log" >&2; exit 1; }
  started_cluster=1
  printf -- '- cluster start-up (hack/start-cluster.sh, binaries built): %s s in all, %s s from the first process to the default ServiceAccount\n' \
    "$(( ($(now_ms) - t0) / 1000 ))" "$(<"$CLUSTER_STATE/startup-seconds")"
else
  exports=$(printf 'export KUBECONFIG=%s\nexport PATH=%s:$PATH\n' "$KUBECONFIG_ADMIN" "$BIN")
  printf -- '- cluster start-up: a cluster was running (see %s/startup-seconds)\n' "$CLUSTER_STATE"
fi
eval "$exports"
hack/build-images.sh operator target >/dev/null 2>&1
helm status esm-operator -n esm-system >/dev/null 2>&1 ||
  helm install esm-operator charts/esm-operator -n esm-system --create-namespace --wait --timeout 5m \
    --set image.repository=localhost/esm-operator/esm-operator --set image.tag=dev >/dev/null

eval "$(hack/emulators.sh start moto kinesis --bind "$NODE_IP" --state "$STATE/emulators" 2>/dev/null)"
PYTHON=$ESM_CACHE_DIR/emulators/venv/bin/python
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic aws --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test >/dev/null
declare -A ENDPOINT
for name in moto kinesis; do
  var=ESM_${name^^}_ENDPOINT
  ENDPOINT[$name]=$(host_service "$NS" "$name" "${!var}")
done
mkdir -p "$STATE/records" && chmod 0777 "$STATE/records"
manifest target.yaml "RECORDS_DIR=$STATE/records" | kubectl -n "$NS" apply -f - >/dev/null
kubectl -n "$NS" rollout status deploy/target --timeout=300s >/dev/null

# 2. Queues holding one message each; then one mapping at a time, timed to its first record.
urls=$("$PYTHON" - "$MAPPINGS" <<'PY'
import os, sys, boto3
sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=os.environ["ESM_MOTO_ENDPOINT"],
                   aws_access_key_id="test", aws_secret_access_key="test")
for i in range(int(sys.argv[1])):
    url = sqs.create_queue(QueueName=f"bench-{i}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=f"first-{i}")
    print(url)
PY
)
latencies=()
i=0
for url in $urls; do
  t0=$(now_ms)
  kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: bench-$i}
spec:
  source: {sqs: {queueUrl: "$url", region: us-east-1, endpointUrl: "${ENDPOINT[moto]}", credentialsSecretRef: {name: aws}}}
  target: {service: {name: target, port: 8080}}
YAML
  until grep -q "\"first-$i\"" "$STATE/records/records.jsonl" 2>/dev/null; do
    (($(now_ms) - t0 < 300000)) || { echo "bench-$i: no delivery in 300 s" >&2; exit 1; }
    sleep 0.1
  done
  latencies+=($(($(now_ms) - t0)))
  i=$((i + 1))
done
printf '%s\n' "${latencies[@]}" | sort -n >"$STATE/latencies"
pct() { awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100 + 0.5) + 1; printf "%.1f", v[i] / 1000 }' "$STATE/latencies"; }
printf -- '- apply -> first record delivered by a poller pod, %d mappings one after another: p50 %s s, p99 %s s, min %s s\n' \
  "$MAPPINGS" "$(pct 50)" "$(pct 99)" "$(pct 0)"
kubectl delete esm --all -n "$NS" --wait=true >/dev/null

# 3. One Kinesis mapping (one poller pod) reading RECORDS records put beforehand.
stream=$("$PYTHON" - "$RECORDS" <<'PY'
import os, sys, time, boto3
k = boto3.client("kinesis", region_name="us-east-1", endpoint_url=os.environ["ESM_KINESIS_ENDPOINT"],
                 aws_access_key_id="test", aws_secret_access_key="test")
k.create_stream(StreamName="bench", ShardCount=2)
while k.describe_stream_summary(StreamName="bench")["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
    time.sleep(0.2)
n = int(sys.argv[1])
for start in range(0, n, 500):
    k.put_records(StreamName="bench", Records=[
        {"PartitionKey": f"k{i % 50}", "Data": b'{"n": %d, "pad": "%s"}' % (i, b"x" * 100)}
        for i in range(start, min(n, start + 500))])
print("bench")
PY
)
kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata: {name: bench-kinesis}
spec:
  source: {kinesis: {streamName: "$stream", region: us-east-1, endpointUrl: "${ENDPOINT[kinesis]}", credentialsSecretRef: {name: aws}}}
  target: {service: {name: target, port: 8080}}
  startingPosition: TRIM_HORIZON
  batchSize: 500
YAML
# The poller's process through the CRI: its CPU ticks (utime + stime) and memory (/proc).
pod=
until [[ -n $pod ]]; do pod=$(kubectl -n "$NS" get pods -l esm.dev/mapping=bench-kinesis -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true); sleep 0.5; done
kubectl -n "$NS" wait --for=condition=Ready "pod/$pod" --timeout=300s >/dev/null
crictl=("$BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK")
cid=$("${crictl[@]}" ps -q --label "io.kubernetes.pod.name=$pod" 2>/dev/null | head -1)
pid=$("${crictl[@]}" inspect "$cid" 2>/dev/null | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["info"]["pid"])')
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
delivered() { grep -c '"aws:kinesis"' "$STATE/records/records.jsonl" 2>/dev/null || true; }
t0=$(now_ms)
while (($(delivered) + 0 < RECORDS)); do
  (($(now_ms) - t0 < 600000)) || { echo "bench-kinesis: not every record in 600 s" >&2; exit 1; }
  sleep 0.5
done
cpu_ms=$(( $(ticks) * 1000 / $(getconf CLK_TCK) ))
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
rss=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
printf -- '- a poller pod (Kinesis, 2 shards, batch 500, %d records of ~130 bytes; the target a pod too): CPU %d ms in all since start = %.1f us per record; RSS %d MiB (peak %d MiB)\n' \
  "$RECORDS" "$cpu_ms" "$(awk -v c="$cpu_ms" -v n="$RECORDS" 'BEGIN { print c * 1000 / n }')" $((rss / 1024)) $((hwm / 1024))
