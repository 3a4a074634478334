#!/usr/bin/env bash
# Builds every test target of the crate (`cargo test --no-run`) and runs the test binaries
# side by side, ESM_TEST_JOBS at a time (default 3), the longest first; then the doc tests.
# Each binary's output goes to a log; once all have run, every log is printed whole in
# cargo's own shape (`Running <binary>`, then libtest's `running N tests` and one line per
# test), so a reader or a CI parser sees each test, followed by a one-line-per-binary summary.
# Exits non-zero when any binary failed, after all have run (like --no-fail-fast).
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
slow_first='^(pods|in_process|controller|stream_mappings|tumbling_windows|sqs|scaling|restarts)\b'
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
summary=()
while IFS=$'\t' read -r name executable; do
  [[ -n $name ]] || continue
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo "missing")
  printf '     Running %s (%s)\n' "$name" "$executable"
  cat "$logs/$name.log"
  if [[ $rc == 0 ]]; then
    summary+=("$(printf '%-22s %s' "$name" "$(grep -E '^test result' "$logs/$name.log" | tail -1)")")
  else
    failed+=("$name")
    summary+=("$(printf '%-22s FAILED (exit %s)' "$name" "$rc")")
  fi
done <<<"$ordered"

echo "   Doc-tests esm_operator"
cargo test --locked --doc 2>&1 | tee "$logs/doc-tests.log" || failed+=("doc tests")

echo
echo "summary, one line per test binary:"
printf '%s\n' "${summary[@]}"
echo "test binaries ran in $((SECONDS - started)) s ($jobs at a time); logs in $logs"
# The closing line in the plain shape CI readers count ("N passed, N failed"), summed over
# every binary and the doc tests: the doc tests' own "0 passed" must not be the last word.
python3 - "$logs" <<'COUNT'
import pathlib, re, sys
passed = failed = 0
for log in pathlib.Path(sys.argv[1]).glob("*.log"):
    for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed", log.read_text(errors="replace"), re.M):
        passed += int(m[1]); failed += int(m[2])
print(f"tests: {passed} passed, {failed} failed")
COUNT
if ((${#failed[@]} > 0)); then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
