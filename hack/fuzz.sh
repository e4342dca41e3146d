#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time (default 20s each).
# A target that fails has its whole output printed (the failing input and
# why), the others their last lines.
set -euo pipefail
t=${1:-20s}
status=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "fuzz $pkg $name for $t"
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" >"$out" 2>&1; then
    tail -3 "$out"
  else
    status=1
    grep -v '^fuzz: elapsed' "$out" | tail -n 80
  fi
done < <(grep -rHoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | grep -v '/images/kube/' | sed -E 's/:func /:/')
exit $status
