# Background processes of hack/start-control-plane.sh and hack/start-cluster.sh (sourced, not
# run): each is recorded as "name pid" in a pids file, so the matching stop script stops
# exactly what was started, newest first.

# start_process PIDS LOGDIR NAME BINARY ARGS...: runs BINARY in the background with its own
# log, detached from the terminal, and records its pid under NAME.
start_process() {
  local pids=$1 logs=$2 name=$3 binary=$4
  shift 4
  # 8>&- 9>&-: not the callers' lock files (a daemon holding them would block the stop script).
  nohup "$binary" "$@" >"$logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo "$name $!" >>"$pids"
  log "started $name (pid $!)"
}

# process_alive NAME PID: whether PID still runs the binary that was started under NAME
# (pids get reused).
process_alive() {
  local comm
  comm=$(cat "/proc/$2/comm" 2>/dev/null) || return 1
  [[ $comm == "${1:0:15}" ]]
}

# any_process_alive PIDS: whether any process recorded in PIDS still runs.
any_process_alive() {
  local name pid
  [[ -f $1 ]] || return 1
  while read -r name pid; do process_alive "$name" "$pid" && return 0; done <"$1"
  return 1
}

# stop_process NAME PID: TERM, then KILL after 10 s; only if PID still runs the binary that
# was started under NAME.
stop_process() {
  local name=$1 pid=$2
  process_alive "$name" "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  log "stopped $name (pid $pid)"
}

# stop_processes PIDS [NAME...]: stops the named processes of PIDS (all when none are named),
# in reverse start order, and forgets them.
stop_processes() {
  local pids=$1 name pid rest
  shift
  [[ -f $pids ]] || return 0
  rest=$(mktemp)
  while read -r name pid; do
    if (($# == 0)) || [[ " $* " == *" $name "* ]]; then stop_process "$name" "$pid"
    else echo "$name $pid" >>"$rest"; fi
  done < <(tac "$pids")
  if [[ -s $rest ]]; then tac "$rest" >"$pids"; else rm -f "$pids"; fi
  rm -f "$rest"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s; fails naming WHAT.
wait_until() {
  local seconds=$1 what=$2 i
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$what: not after ${seconds}s"
}
