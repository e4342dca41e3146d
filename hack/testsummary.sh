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
if [ "$fail" -gt 0 ]; then
  # What each failed test logged (its last 150 lines), so the CI log says why.
  awk '
    /^=== (RUN|CONT|NAME) / { cur = $3; sub(/\/.*/, "", cur); next }
    /^--- FAIL: / { name = $3; n = cnt[name]; from = n > 150 ? n - 150 : 0
      print "---- output of " name " (failed):"
      for (i = from; i < n; i++) print buf[name, i]
      next }
    /^(--- |ok |FAIL|PASS)/ { next }
    cur != "" { buf[cur, cnt[cur]++] = $0 }
  ' "$log"
fi
if [ "$skip" -gt 0 ]; then
  echo "skipped:"; grep -E -- '--- SKIP' "$log"
fi
[ "$fail" -eq 0 ] && [ "$pkgfail" -eq 0 ]
