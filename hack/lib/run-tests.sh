#!/usr/bin/env bash
# Builds every test target of the crate (`cargo test --no-run`) and runs the test binaries
# side by side, ESM_TEST_JOBS at a time (default 3), the longest first; then the doc tests.
# Each binary's output goes to a log, printed whole when the binary fails and summed up
# otherwise. Exits non-zero when any binary failed, after all have run (like --no-fail-fast).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

jobs=${ESM_TEST_JOBS:-3}
logs=$(mktemp -d "${TMPDIR:-/tmp}/esm-tests.XXXXXX")

# name<TAB>executable of every test binary, from cargo's JSON messages.
listing=$(cargo test --locked --no-run --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    if not message["profile"]["test"]:
        continue
    target = message["target"]
    kind = target["kind"][0]
    name = target["name"] if kind == "test" else kind + "-" + target["name"]
    print(name + "\t" + message["executable"])
')
# The slowest binaries first, so they do not start last.
slow_first='^(pods|in_process|controller|stream_mappings|tumbling_windows|sqs|scaling)\b'
ordered=$(grep -E "$slow_first" <<<"$listing" || true; grep -vE "$slow_first" <<<"$listing" || true)

started=$SECONDS
running=0
while IFS=$'\t' read -r name executable; do
  [[ -n $name ]] || continue
  (
    "$executable" >"$logs/$name.log" 2>&1 && echo 0 >"$logs/$name.rc" || echo $? >"$logs/$name.rc"
  ) &
  if ((++running >= jobs)); then
    wait -n || true
    ((running--))
  fi
done <<<"$ordered"
wait

failed=()
while IFS=$'\t' read -r name _; do
  [[ -n $name ]] || continue
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo "missing")
  if [[ $rc == 0 ]]; then
    printf '%-22s %s\n' "$name" "$(grep -E '^test result' "$logs/$name.log" | tail -1)"
  else
    failed+=("$name")
    printf '\n----- %s FAILED (exit %s); its output: -----\n' "$name" "$rc"
    cat "$logs/$name.log"
  fi
done <<<"$ordered"

echo "doc tests:"
cargo test --locked --doc --quiet || failed+=("doc tests")

echo "test binaries ran in $((SECONDS - started)) s ($jobs at a time); logs in $logs"
if ((${#failed[@]} > 0)); then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
