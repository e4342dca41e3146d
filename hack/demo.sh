#!/usr/bin/env bash
# The main command: bring up a lab of bare-metal-like machines on this host
# (Debian, systemd, sshd; 3 masters and 2 workers by default), provision them
# with `anvil cluster apply` over SSH from the lab's cluster file, and print
# `kubectl get nodes -o wide` through the admin kubeconfig the apply fetched,
# then run a sample Deployment of anvil's test image (built here, shipped to
# every node by the apply) and show its pods Running on the workers.
#
#   hack/demo.sh          bring it up (again: a second run changes nothing)
#   hack/demo.sh clean    remove the lab, and the cluster with it
#
# NAME, MASTERS, WORKERS and KUBE_VERSION choose the lab and the version.
# Needs root (the lab boots machines with systemd-nspawn); installs what a
# fresh Debian 12 lacks (hack/deps.sh, and the lab's own packages).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lab.sh
. hack/lab.sh

NAME=${NAME:-demo}
MASTERS=${MASTERS:-3}
WORKERS=${WORKERS:-2}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ANVIL=bin/anvil
KUBECTL=bin/kube/$KUBE_VERSION/kubectl

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$@"
fi

if [ "${1:-}" = clean ]; then
  # The machines go, and the cluster, its kubeconfig and keys with them.
  [ -x "$ANVIL" ] || make --no-print-directory anvil >&2
  "$ANVIL" lab down --name "$NAME"
  exit 0
fi

hack/deps.sh
make --no-print-directory anvil kube KUBE_VERSION="$KUBE_VERSION" >&2

start=$(date +%s)
labUp

# The machines are reached as root with the lab's key; their host keys are
# checked against the lab's known_hosts. Progress goes to stderr.
"$ANVIL" cluster apply -f "$file" --kubeconfig "$kubeconfig" --kube-dir bin/kube
echo "(lab and cluster in $(( $(date +%s) - start ))s)"

echo
echo "\$ kubectl --kubeconfig $kubeconfig get nodes -o wide"
"$KUBECTL" --kubeconfig "$kubeconfig" get nodes -o wide

# A sample workload: the test image is already in every node's containerd
# (the apply shipped it; nothing is pulled), named in the build's payload.
image=$(grep -o '"image": *"localhost/anvil/testapp:[^"]*"' "bin/kube/$KUBE_VERSION/payload.json" | sed 's/.*"\(localhost[^"]*\)"$/\1/' | head -n1)
if [ -z "$image" ]; then
  echo "bin/kube/$KUBE_VERSION/payload.json names no testapp image" >&2
  exit 1
fi
replicas=$WORKERS
[ "$replicas" -gt 0 ] || replicas=1
k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }
if ! k get deployment web >/dev/null 2>&1; then
  k create deployment web --image="$image" --replicas="$replicas" --port=8080 >&2
fi
k rollout status deployment/web --timeout=180s >&2
echo
echo "\$ kubectl --kubeconfig $kubeconfig get pods -o wide"
k get pods -o wide

# The Deployment behind a NodePort Service: kube-proxy on every node routes
# it to a pod, wherever the pod runs.
if ! k get service web >/dev/null 2>&1; then
  k expose deployment web --type=NodePort --port=80 --target-port=8080 >&2
fi
port=$(k get service web -o jsonpath='{.spec.ports[0].nodePort}')
addr=$(k get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
echo
echo "\$ curl http://$addr:$port/"
answer=""
for _ in $(seq 1 30); do
  if answer=$(curl -fsS -m 3 "http://$addr:$port/" 2>/dev/null); then
    break
  fi
  sleep 1
done
if [ -z "$answer" ]; then
  echo "the Service web gave no answer on http://$addr:$port/ within 30s" >&2
  exit 1
fi
echo "$answer"
echo
echo "Status:   $ANVIL cluster status -f $file"
echo "On a machine: $ANVIL lab ssh $NAME-m1"
echo "Remove:   make demo-clean (or hack/demo.sh clean)"
