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
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the build (-X main.version) with the image's tag.
var version = "unknown"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (anvil)", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	// A child that exited before the handler was in place sent its SIGCHLD
	// to nobody: reap once now.
	reap()
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
		os.Exit(0)
	}
}

// reap collects every child that has exited. Signals coalesce, so one
// SIGCHLD may stand for several children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
