// Command pause is the process that holds a pod's namespaces open: the
// sandbox (pause) image's only program, built by anvil and tagged as
// registry.k8s.io/pause so that containerd and the kubelet use it without
// pulling anything. Like upstream's pause.c it does nothing but wait: it
// exits 0 on SIGINT or SIGTERM and, as the pod's PID 1 when the pod shares
// its process namespace, reaps every child that is handed to it, so no
// zombie outlives its parent.
//
// It may import only the standard library: its build's input hash covers
// this directory and go.mod, not the rest of anvil.
//
// It never does anything but wait and reap.
package main
