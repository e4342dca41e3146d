package podnet

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"anvil.dev/anvil/internal/backoff"
)

// watchKernel starts a pass as soon as the kernel changes what the pod
// network programmed or stands on: the interface going down takes every
// route through it with it, and without this they would come back only at
// the next resync. It resubscribes (with backoff) if the kernel drops the
// subscription, e.g. after its socket buffer overflowed, and starts a pass
// then, since events were lost.
func (c *Controller) watchKernel(ctx context.Context) {
	bo := backoff.Backoff{Base: time.Second, Max: time.Minute}
	for {
		start := time.Now()
		err := c.subscribe(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Minute {
			bo.Reset()
		}
		c.log.Warn("kernel notifications stopped; subscribing again", "err", err)
		c.kick()
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
	}
}

// subscribe listens to route, link and address notifications until ctx
// ends (nil) or the kernel ends the subscription (its error).
func (c *Controller) subscribe(ctx context.Context) error {
	var ns *netns.NsHandle
	if c.cfg.NetNS != "" {
		h, err := netns.GetFromPath(c.cfg.NetNS)
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w", c.cfg.NetNS, err)
		}
		defer h.Close()
		ns = &h
	}
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	routes := make(chan netlink.RouteUpdate, 64)
	links := make(chan netlink.LinkUpdate, 16)
	addrs := make(chan netlink.AddrUpdate, 16)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: report}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: report}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: report}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	// A subscription that ends closes its channel; the last error the
	// library reported says why.
	ended := func() error {
		select {
		case err := <-errc:
			return err
		default:
			return fmt.Errorf("netlink subscription closed")
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-routes:
			if !ok {
				return ended()
			}
			if c.routeMatters(u) {
				c.kick()
			}
		case u, ok := <-links:
			if !ok {
				return ended()
			}
			if u.Link != nil && u.Link.Attrs().Name == c.cfg.Interface {
				c.kick()
			}
		case _, ok := <-addrs:
			if !ok {
				return ended()
			}
			// Addresses change seldom on a node (pods' are in their
			// own namespaces), and any of the interface's may move a
			// next hop on or off its subnets.
			c.kick()
		}
	}
}

// routeMatters tells a route notification that may need a pass: one of
// anvil's routes gone, another program's route into the cluster's pod
// CIDR (it may have replaced one of anvil's), or a connected route (an
// interface's subnet appeared, so next hops may be reachable again). The
// notifications of anvil's own additions are not among them.
func (c *Controller) routeMatters(u netlink.RouteUpdate) bool {
	switch {
	case u.Protocol == RouteProtocol:
		return u.Type == unix.RTM_DELROUTE
	case u.Type == unix.RTM_NEWROUTE && u.Protocol == unix.RTPROT_KERNEL && u.Scope == netlink.SCOPE_LINK:
		return true
	}
	dst := routeDst(u.Route)
	for _, p := range c.cfg.ClusterPodCIDRs {
		if p.Overlaps(dst) && dst.Bits() > 0 {
			return true
		}
	}
	// Another program's route that covers a Service CIDR (a default
	// route included) appeared or went: anvil's route to it may be
	// needed no more, or again.
	for _, p := range c.cfg.ServiceCIDRs {
		if p.Overlaps(dst) {
			return true
		}
	}
	return false
}
