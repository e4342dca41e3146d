# Sourced by hack/demo.sh and hack/conformance.sh, which set ANVIL, NAME,
# MASTERS and WORKERS: the lab they bring up and the cluster file it writes.

# clusterFile is where `anvil lab status` says the lab's cluster file is.
clusterFile() {
  "$ANVIL" lab status --name "$NAME" -o json | grep -o '"clusterFile": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'
}

# labUp brings up the lab NAME (again: a lab that is up stays as it is) and
# sets file to its cluster file and kubeconfig to where an apply of it
# writes the admin kubeconfig.
labUp() {
  "$ANVIL" lab up --name "$NAME" --masters "$MASTERS" --workers "$WORKERS" >&2
  file=$(clusterFile)
  if [ -z "$file" ]; then
    echo "anvil lab status --name $NAME names no cluster file" >&2
    exit 1
  fi
  kubeconfig="${file%.*}.kubeconfig"
}
