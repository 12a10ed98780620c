#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (docs/fuzzing.md).
#
#   bash fuzz/run.sh smoke               every target briefly (CI: .ci/run)
#   bash fuzz/run.sh long [EXECUTIONS]   every target for EXECUTIONS runs (default 10000000), one
#                                        after the other, printing each one's executions and time
#   bash fuzz/run.sh one TARGET ARGS...  one target with libFuzzer arguments of your own
#
# Stable Rust only: cargo-fuzz needs nightly `-Z` flags, which RUSTC_BOOTSTRAP=1 unlocks on the
# stable compiler. The targets run without a sanitizer (`--sanitizer none`): the project forbids
# `unsafe`, and AddressSanitizer cost more than half the executions per second (docs/fuzzing.md).
# The fuzz build lives in its own target directory, so it never invalidates the main build.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-smoke}"
targets=(jwt config record fly_response manifest)
cargo_fuzz_version="0.13.2"

export RUSTC_BOOTSTRAP=1
fuzz_target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
# Generated corpora and crash artifacts: outside the clone (the committed seeds stay read-only).
work_dir="$fuzz_target_dir/work"
artifacts_dir="$PWD/fuzz/artifacts"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# cargo fuzz run TARGET with the seeds, the dictionary and a writable corpus; extra args go to libFuzzer.
run_target() {
  local target="$1"
  shift
  mkdir -p "$work_dir/corpus/$target" "$artifacts_dir/$target"
  local dict=()
  if [[ -f "fuzz/dict/$target.dict" ]]; then dict=("-dict=fuzz/dict/$target.dict"); fi
  cargo fuzz run --fuzz-dir fuzz --sanitizer none --target-dir "$fuzz_target_dir" "$target" \
    "$work_dir/corpus/$target" "fuzz/corpus/$target" -- \
    "-artifact_prefix=$artifacts_dir/$target/" "${dict[@]}" -print_final_stats=1 "$@"
}

build_all() {
  local target
  for target in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir fuzz --sanitizer none --target-dir "$fuzz_target_dir" "$target"
  done
}

case "$mode" in
  smoke)
    build_all
    mkdir -p "$work_dir"
    for target in "${targets[@]}"; do
      echo "== fuzz smoke: $target"
      log="$work_dir/$target-smoke.log"
      if ! run_target "$target" -max_total_time=15 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz smoke: $target FAILED (log $log, inputs in fuzz/artifacts/$target)"
        exit 1
      fi
      grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
    done
    echo "fuzz smoke: ${#targets[@]} targets passed"
    ;;
  long)
    executions="${2:-10000000}"
    build_all
    summary=()
    mkdir -p "$work_dir"
    for target in "${targets[@]}"; do
      echo "== fuzz long: $target, $executions executions"
      log="$work_dir/$target-long.log"
      start=$(date +%s)
      run_target "$target" "-runs=$executions" >"$log" 2>&1 || {
        tail -n 60 "$log"
        echo "fuzz long: $target FAILED (log $log, inputs in fuzz/artifacts/$target)"
        exit 1
      }
      seconds=$(($(date +%s) - start))
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
      rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
      last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
      echo "$target: executions=$runs seconds=$seconds exec/s=$rate last: $last"
      summary+=("$target executions=$runs seconds=$seconds exec_per_s=$rate")
    done
    printf '%s\n' "== fuzz long: summary" "${summary[@]}"
    ;;
  one)
    target="${2:?usage: fuzz/run.sh one TARGET [libFuzzer args]}"
    shift 2
    build_all
    run_target "$target" "$@"
    ;;
  *)
    echo "usage: $0 smoke | long [EXECUTIONS] | one TARGET [ARGS...]" >&2
    exit 2
    ;;
esac
