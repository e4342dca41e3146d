#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time (default 20s each).
# A target that fails has its whole output printed (the failing input and
# why), the others their last lines. A failure that names no failing input
# (Go writes one to testdata/fuzz/ for every real finding) is the fuzzing
# harness's own, such as a worker it lost: that target runs once more, and
# fails the run only if it fails again.
set -euo pipefail
t=${1:-20s}
status=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fuzz() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" "$1" >"$out" 2>&1; }
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "fuzz $pkg $name for $t"
  if fuzz "$pkg" "$name"; then
    tail -3 "$out"
    continue
  fi
  grep -v '^fuzz: elapsed' "$out" | tail -n 80
  if ! grep -q 'Failing input written to' "$out"; then
    echo "fuzz $pkg $name: failed without a failing input (the harness's own failure): once more"
    if fuzz "$pkg" "$name"; then
      tail -3 "$out"
      continue
    fi
    grep -v '^fuzz: elapsed' "$out" | tail -n 80
  fi
  status=1
done < <(grep -rHoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | grep -v '/images/kube/' | sed -E 's/:func /:/')
exit $status
