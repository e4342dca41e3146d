package podnet

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetNS runs fn on an OS thread inside the network namespace at path, or
// here when path is "". Whatever fn opens there (sockets, /proc/sys/net
// files) and the processes it starts belong to that namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			// Locked and untouched: the thread ends with the goroutine.
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = fn()
		// Back before the thread is let go. The runtime never ends the
		// process's main thread, which may be this one, and the process
		// is seen in the namespace its main thread is in. If the way back
		// fails, the thread stays locked and ends with this goroutine.
		if rerr := netns.Set(orig); rerr == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// netlinkHandle is a netlink handle on the namespace at path ("" = this
// one); its sockets stay in that namespace whatever thread uses them.
func netlinkHandle(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in network namespace %s: %w", path, err)
	}
	return h, nil
}
