#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time (default 20s each).
set -euo pipefail
t=${1:-20s}
status=0
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "fuzz $pkg $name for $t"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" 2>&1 | tail -3; then status=1; fi
done < <(grep -rHoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | grep -v '/images/kube/' | sed -E 's/:func /:/')
exit $status
