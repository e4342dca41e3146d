#!/usr/bin/env bash
# Reads `go test -v` output, keeps the whole log in bin/test.log, shows each
# test's result line (top-level tests and subtests) as it finishes, and ends
# with a summary, so a CI log shows exactly which tests ran.
set -uo pipefail
mkdir -p bin
log=bin/test.log
: >"$log"
while IFS= read -r line; do
  printf '%s\n' "$line" >>"$log"
  case "$line" in
    *"--- PASS"*|*"--- FAIL"*|*"--- SKIP"*|ok\ *|FAIL*|panic:*|*"[build failed]"*|*"[setup failed]"*) printf '%s\n' "$line" ;;
  esac
done
pass=$(grep -cE -- '--- PASS' "$log" || true)
skip=$(grep -cE -- '--- SKIP' "$log" || true)
fail=$(grep -cE -- '--- FAIL' "$log" || true)
pkgfail=$(grep -cE '^(FAIL|.*\[build failed\]|.*\[setup failed\])' "$log" || true)
echo
echo "==== test summary: $pass passed, $fail failed, $skip skipped (tests and subtests); $pkgfail package failures; full log in $log ===="
if [ "$skip" -gt 0 ]; then
  echo "skipped:"; grep -E -- '--- SKIP' "$log"
fi
[ "$fail" -eq 0 ] && [ "$pkgfail" -eq 0 ]
