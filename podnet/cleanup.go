package podnet

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"anvil.dev/anvil/internal/hostfs"
)

// CleanupOptions say where to clean.
type CleanupOptions struct {
	// Root prefixes the CNI files' paths.
	Root hostfs.Root
	// NetNS is the network namespace's path ("" = this one).
	NetNS string
}

// Cleanup removes what the pod network made, for `anvil reset`, after the
// kubelet and the container runtime have stopped: anvil's routes (those
// with RouteProtocol), its nftables table, the bridge anvil0, the CNI
// config list and host-local's reservations. IP forwarding stays on: other
// software may rely on it and turning it off is not ours to decide. It is
// not an error that something is already gone; it tries everything and
// returns every failure.
func Cleanup(ctx context.Context, o CleanupOptions) error {
	var errs []error
	if err := removeMasquerade(ctx, o.NetNS); err != nil {
		errs = append(errs, err)
	}
	h, err := netlinkHandle(o.NetNS)
	if err != nil {
		errs = append(errs, err)
	} else {
		defer h.Close()
		if err := (kernelRoutes{h: h}).removeAll(); err != nil {
			errs = append(errs, err)
		}
		if err := removeBridge(h); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCNIConfig(o.Root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeBridge deletes anvil0 if it is a bridge: the CNI bridge plugin
// made it from anvil's config; any other link of that name is not ours.
func removeBridge(h *netlink.Handle) error {
	link, err := h.LinkByName(BridgeName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", BridgeName, err)
	}
	if link.Type() != "bridge" {
		return nil
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", BridgeName, err)
	}
	return nil
}
