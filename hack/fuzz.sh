#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), one after the other, each for a
# bounded time, and prints per target: executions, executions per second, coverage, crashes.
# Exits non-zero if a target crashed (its reproducer is in fuzz/artifacts/TARGET/). Not part of
# hack/test.sh or CI: it needs nightly and minutes per target; CI replays the committed seeds
# and reproducers through the same checks instead (tests/fuzz_corpus.rs). See docs/fuzzing.md.
#
#   hack/fuzz.sh                      # every target, 60 s each
#   hack/fuzz.sh 120 filter_pattern   # one target, 120 s
#
# The fuzzer writes what it finds to $ESM_CACHE_DIR/fuzz-corpus/TARGET, kept between runs (so
# later runs start from earlier coverage); the committed seeds in fuzz/corpus/TARGET are only
# read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
shift $(( $# > 0 ? 1 : 0 ))

rustup toolchain list | grep -q '^nightly' || {
  echo "hack/fuzz.sh: cargo-fuzz needs a nightly toolchain (libFuzzer's instrumentation): rustup toolchain install nightly" >&2
  exit 1
}

fuzz_root=$ESM_CACHE_DIR/cargo-fuzz
if [[ ! -x $fuzz_root/bin/cargo-fuzz ]]; then
  echo "==> installing cargo-fuzz into $fuzz_root (first time ~2 min)" >&2
  cargo install cargo-fuzz --locked --root "$fuzz_root"
fi
export PATH=$fuzz_root/bin:$PATH
# The fuzz crate builds the whole library (and its AWS and Kubernetes dependencies) with
# coverage instrumentation: a target dir of its own, outside the checkout.
fuzz_target_dir=$ESM_CACHE_DIR/target-fuzz
# No sanitizer: the library forbids unsafe code, so AddressSanitizer would only slow the runs.
fuzz=(cargo +nightly fuzz)
build_flags=(--sanitizer none --target-dir "$fuzz_target_dir")

targets=("$@")
if (( ${#targets[@]} == 0 )); then
  mapfile -t targets < <("${fuzz[@]}" list)
fi

echo "==> building the fuzz targets (first time ~40 min on 2 busy cores)" >&2
"${fuzz[@]}" build "${build_flags[@]}" >&2

logs=$ESM_CACHE_DIR/fuzz-logs
mkdir -p "$logs"
summary=()
crashed=0
for target in "${targets[@]}"; do
  work=$ESM_CACHE_DIR/fuzz-corpus/$target
  mkdir -p "$work" "fuzz/artifacts/$target"
  echo "==> $target: ${seconds}s (log: $logs/$target.log)" >&2
  status=0
  "${fuzz[@]}" run "${build_flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -dict=fuzz/json.dict \
    >"$logs/$target.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -1)
  coverage=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$logs/$target.log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  # libFuzzer stops at the first crash (a panic, a timeout, running out of memory) and writes
  # its input to fuzz/artifacts/TARGET/.
  crashes=$(grep -c 'Test unit written to' "$logs/$target.log" || true)
  if (( status != 0 || crashes > 0 )); then
    crashed=1
    grep -m1 -E "panicked at|ERROR: libFuzzer|==ERROR" -A2 "$logs/$target.log" >&2 || tail -20 "$logs/$target.log" >&2
    grep 'Test unit written to' "$logs/$target.log" >&2 || true
  fi
  summary+=("$(printf '%-24s %12s %10s %-22s %8s %8s' "$target" "${runs:-?}" "${rate:-?}" "${coverage:-?}" "$corpus" "$crashes")")
done

printf '\n%-24s %12s %10s %-22s %8s %8s\n' target executions exec/s coverage corpus crashes
printf '%s\n' "${summary[@]}"
exit "$crashed"
