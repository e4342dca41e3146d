#!/usr/bin/env bash
# with-clock.sh DATE CMD...: runs CMD with this machine's clock set to DATE,
# then puts the clock back where it would have been (the time CMD took is
# measured on the monotonic clock, which setting the date leaves alone).
# It changes the clock of the whole machine: only for a machine that runs
# nothing else, such as a throwaway VM. Go's build cache trims entries by
# age, so a clock years ahead would empty the shared cache under any build
# running beside it: CMD gets a cache of its own. Used to show that anvil's tests do
# not depend on today's date:
#   hack/with-clock.sh 2030-12-31T12:00:00Z go test -short -count=1 ./...
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DATE CMD..." >&2
  exit 2
fi
when=$1; shift
target=$(date -u -d "$when" +%s) || { echo "$0: cannot read the date $when" >&2; exit 2; }
mono() { awk '{print $1}' /proc/uptime; }
wall0=$(date -u +%s.%N); mono0=$(mono)
restore() {
  local now
  now=$(awk -v w="$wall0" -v a="$mono0" -v b="$(mono)" 'BEGIN { printf "%.3f", w + (b - a) }')
  date -u -s "@$now" >/dev/null
  echo "with-clock: clock restored to $(date -u +%FT%TZ)" >&2
}
cache=$(mktemp -d /tmp/with-clock-gocache.XXXXXX)
trap 'restore; rm -rf "$cache"' EXIT
export GOCACHE=$cache
date -u -s "@$target" >/dev/null
echo "with-clock: clock set to $(date -u +%FT%TZ)" >&2
"$@"
