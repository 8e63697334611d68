#!/usr/bin/env bash
# Builds the native test programs under AddressSanitizer + UBSan (build-asan/)
# and runs each one (`npm run test:native`). Prints each program's output,
# then one line "N passed, N failed" for them all, which .ci/run reads.
#
# A program fails the run if it exits non-zero, if it prints no summary line,
# or if it ran fewer checks than its floor below (a program whose tests were
# compiled out or skipped must not pass). Sanitizers decide the exit status:
# UBSan is built without recovery (-fno-sanitize-recover=all, CMakeLists.txt)
# and aborts at its first finding; LeakSanitizer runs at exit, after the
# program's own summary line, and turns a leak into exit status 23 here, so
# a leak fails the run although the summary said "0 failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

# Floors: a little under today's counts (tap_test 294, view_test 130, point_map_test 67, copy_test 31,
# batch_ingest_test 40, nbd_source_test 38, microscan_test 58, direct_append_test 14). Raise them when tests are added; lower them only with the tests removed.
declare -A floor=([tap_test]=288 [view_test]=120 [point_map_test]=63 [copy_test]=28 [batch_ingest_test]=36 [nbd_source_test]=35 [microscan_test]=54 [direct_append_test]=12)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=23:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-exitcode=23}

npm run --silent build:asan || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for prog in tap_test view_test point_map_test copy_test batch_ingest_test nbd_source_test microscan_test direct_append_test; do
  echo "--- $prog"
  ./build-asan/$prog > "$out" 2>&1
  status=$?
  cat "$out"
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
  p=$(awk '{print $1}' <<<"$summary")
  f=$(awk '{print $3}' <<<"$summary")
  p=${p:-0}
  f=${f:-0}
  passed=$((passed + p))
  failed=$((failed + f))
  if [ -z "$summary" ]; then
    echo "$prog: FAILED: no summary line (exit status $status)"
    failed=$((failed + 1))
  elif [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    # every check passed, yet the program failed: a sanitizer (23: a leak), a crash, a signal
    echo "$prog: FAILED: exit status $status with $f failed checks (a sanitizer finding or a crash; see above)"
    failed=$((failed + 1))
  elif [ "$status" -ne 0 ]; then
    echo "$prog: FAILED: exit status $status"
  fi
  if [ "$p" -lt "${floor[$prog]}" ]; then
    echo "$prog: FAILED: only $p checks passed, the floor is ${floor[$prog]}"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
