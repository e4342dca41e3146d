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
  # What each failed test and subtest logged itself (a top-level test its
  # last 100 lines, then each subtest its last 60, nearest the end of the
  # log where a reader looks first), so the CI log says why.
  awk '
    /^=== (RUN|CONT|NAME) / { cur = $3; next }
    /^ *--- FAIL: / { failed[nf++] = $3; next }
    /^ *(--- |ok |FAIL|PASS)/ { next }
    cur != "" { buf[cur, cnt[cur]++] = $0 }
    END {
      for (pass = 0; pass < 2; pass++)
        for (f = 0; f < nf; f++) {
          name = failed[f]; sub_ = name ~ /\//
          if (sub_ != pass || cnt[name] == 0) continue
          keep = sub_ ? 60 : 100; n = cnt[name]; from = n > keep ? n - keep : 0
          print "---- output of " name " (failed):"
          for (i = from; i < n; i++) print buf[name, i]
        }
    }
  ' "$log"
fi
if [ "$skip" -gt 0 ]; then
  echo "skipped:"; grep -E -- '--- SKIP' "$log"
fi
[ "$fail" -eq 0 ] && [ "$pkgfail" -eq 0 ]
