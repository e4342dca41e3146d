#!/usr/bin/env bash
# make conformance: the upstream Kubernetes conformance suite against a lab
# cluster, offline. Builds the suite's e2e test binary and the images its
# tests use (anvil images build --conformance, cached by input hash), brings
# up a lab (3 masters and 2 workers by default) and makes it a cluster with
# `anvil cluster apply` from a copy of the lab's cluster file that lists the
# suite's images (so the apply puts them on every node and each node's agent
# imports them: nothing is pulled), runs e2e.test from this machine, and
# writes the JUnit report and a summary under OUT (bin/conformance):
#
#   OUT/report/junit_01.xml   the suite's JUnit report
#   OUT/e2e.log               the suite's output
#   OUT/summary.txt           passed / failed / skipped, each skip's reason
#
# FOCUS and SKIP are the suite's regular expressions (FOCUS defaults to every
# [Conformance] test, SKIP to the accepted skips of hack/conformance-skips);
# NAME, MASTERS, WORKERS and KUBE_VERSION choose the lab and the version.
# The lab is removed at the end, also when something failed, unless KEEP=1.
# Needs root (the lab, debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lab.sh
. hack/lab.sh

NAME=${NAME:-conf}
MASTERS=${MASTERS:-3}
WORKERS=${WORKERS:-2}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
FOCUS=${FOCUS:-'\[Conformance\]'}
# The accepted skips, each with why this machine cannot run it, are in
# hack/conformance-skips; they are SKIP's default and the summary lists the
# tests they left out. SKIP= (empty) runs them too.
ACCEPTED_SKIPS=$(grep -v -e '^#' -e '^[[:space:]]' -e '^$' hack/conformance-skips | paste -sd'|')
SKIP=${SKIP-$ACCEPTED_SKIPS}
KEEP=${KEEP:-}
OUT=${OUT:-bin/conformance}
# TIMEOUT bounds the suite's run (ginkgo's --timeout).
TIMEOUT=${TIMEOUT:-6h}
# PROCS is how many e2e.test processes the ginkgo CLI runs at once; tests
# marked [Serial] run alone at the end whatever it is.
PROCS=${PROCS:-4}
ANVIL=bin/anvil
KUBECTL=bin/kube/$KUBE_VERSION/kubectl

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

hack/deps.sh
make --no-print-directory anvil kube KUBE_VERSION="$KUBE_VERSION" >&2

start=$(date +%s)
"$ANVIL" images build --conformance --version "$KUBE_VERSION" --source images --out "$OUT" >&2
dir=$OUT/$KUBE_VERSION
e2e=$dir/e2e.test
ginkgo=$dir/ginkgo
images=()
for f in "$dir"/images/*.tar; do
  images+=("$(realpath "$f")")
done
echo "(conformance build in $(( $(date +%s) - start ))s)" >&2

cleanup() {
  rc=$?
  if [ -n "$KEEP" ]; then
    echo "KEEP is set: the lab $NAME stays (remove it with: $ANVIL lab down --name $NAME)" >&2
  else
    "$ANVIL" lab down --name "$NAME" >&2 || echo "could not remove the lab $NAME: $ANVIL lab down --name $NAME" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

start=$(date +%s)
labUp

# The lab's cluster file with the suite's images added: the apply uploads
# them to every node with a runtime, whose agent imports them.
conf="${file%.*}-conformance.yaml"
if grep -q '^images:' "$file"; then
  echo "$file already lists images:; the conformance run adds its own" >&2
  exit 1
fi
{
  cat "$file"
  echo
  echo "# The images the conformance suite runs, built by anvil images build --conformance."
  echo "images:"
  for f in "${images[@]}"; do
    echo "  - $f"
  done
} > "$conf.tmp"
mv "$conf.tmp" "$conf"

"$ANVIL" cluster apply -f "$conf" --kubeconfig "$kubeconfig" --kube-dir bin/kube >&2
echo "(lab and cluster in $(( $(date +%s) - start ))s)" >&2

# Every node's agent imports the archives as they arrive: wait until each
# node's containerd has every image the suite needs.
want=$(for f in "${images[@]}"; do tar -xOf "$f" manifest.json | grep -o '"RepoTags":\[[^]]*\]' | sed 's/^"RepoTags"://' | grep -o '"[^"]*"' | tr -d '"'; done | sort -u)
nodes=$("$KUBECTL" --kubeconfig "$kubeconfig" get nodes -o jsonpath='{.items[*].metadata.name}')
for n in $nodes; do
  for i in $(seq 1 120); do
    have=$("$ANVIL" lab ssh "$n" -- ctr -n k8s.io images ls -q 2>/dev/null || true)
    missing=$(comm -23 <(echo "$want") <(echo "$have" | sort -u))
    [ -z "$missing" ] && break
    if [ "$i" -eq 120 ]; then
      echo "node $n has not imported: $missing" >&2
      exit 1
    fi
    sleep 2
  done
done
echo "every node has the suite's images" >&2

rm -rf "$OUT/report"
mkdir -p "$OUT/report"
start=$(date +%s)
echo "running the suite (focus: $FOCUS${SKIP:+, skip: $SKIP}; $PROCS processes); follow it with: tail -f $OUT/e2e.log" >&2
set +e
"$ginkgo" --procs="$PROCS" --focus="$FOCUS" ${SKIP:+--skip="$SKIP"} \
  --timeout="$TIMEOUT" --no-color -v "$e2e" -- \
  --kubeconfig="$(realpath "$kubeconfig")" --provider=skeleton \
  --report-dir="$(realpath "$OUT/report")" > "$OUT/e2e.log" 2>&1
suite=$?
set -e
echo "(suite in $(( $(date +%s) - start ))s, exit $suite)" >&2

if [ ! -s "$OUT/report/junit_01.xml" ]; then
  echo "the suite wrote no $OUT/report/junit_01.xml: see $OUT/e2e.log" >&2
  exit 1
fi
accepted=()
if [ -n "$SKIP" ] && [ "$SKIP" = "$ACCEPTED_SKIPS" ]; then
  accepted=(-accepted hack/conformance-skips -focus "$FOCUS")
fi
go run ./hack/junitsummary "${accepted[@]}" "$OUT/report/junit_01.xml" > "$OUT/summary.txt" || true
cat "$OUT/summary.txt"
echo
echo "Report:  $OUT/report/junit_01.xml, $OUT/e2e.log, $OUT/summary.txt"
exit "$suite"
