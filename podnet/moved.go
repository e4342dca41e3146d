package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// A node's pod range can change under it: a Node deleted and registered
// again (kubectl delete node, then the kubelet restarting) is given the
// next free range by the controller-manager, not the one it had. Two
// things of the old range then stay on the node and break it. The bridge
// keeps the old range's gateway address, and the CNI bridge plugin
// refuses to set up any new pod on a bridge with another address ("already
// has an IP address different from …"). And the pods that ran through the
// change (the pod garbage collector had not yet deleted them) keep
// addresses no other node routes to any more. fromFormerRange finds both;
// the controller removes the addresses and deletes the pods, whose
// controllers make them again in the new range.

// staleAddrs are the addresses of the bridge (addrs) inside the cluster's
// pod CIDRs but in none of the node's own ranges.
func staleAddrs(addrs, own, cluster []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		if inAny(a.Addr(), cluster) && !inAny(a.Addr(), own) {
			out = append(out, a)
		}
	}
	return out
}

// strandedPods are the pods of pods (this node's) with an address inside
// the cluster's pod CIDRs but in none of the node's own ranges; pods on
// the host's network and pods already being deleted are not.
func strandedPods(pods []corev1.Pod, own, cluster []netip.Prefix) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if p.Spec.HostNetwork || p.DeletionTimestamp != nil {
			continue
		}
		ips := p.Status.PodIPs
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip.IP)
			if err == nil && inAny(a, cluster) && !inAny(a, own) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// dropStaleBridgeAddrs removes from the bridge the addresses of a former
// pod range; a node that has no bridge yet has nothing to remove.
func (c *Controller) dropStaleBridgeAddrs(k kernelRoutes, own []netip.Prefix) error {
	link, err := k.h.LinkByName(BridgeName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", BridgeName, err)
	}
	addrs, err := k.ifaceAddrs(link)
	if err != nil {
		return err
	}
	for _, a := range staleAddrs(addrs, own, c.cfg.ClusterPodCIDRs) {
		addr, err := netlink.ParseAddr(a.String())
		if err != nil {
			return fmt.Errorf("bridge %s address %s: %w", BridgeName, a, err)
		}
		if err := k.h.AddrDel(link, addr); err != nil {
			return fmt.Errorf("remove %s from bridge %s (a former pod range of node %s): %w", a, BridgeName, c.cfg.NodeName, err)
		}
		c.log.Info("bridge address of a former pod range removed, so new pods can be set up in the node's range",
			"bridge", BridgeName, "address", a, "cidrs", own)
	}
	return nil
}

// deleteStrandedPods deletes this node's pods whose addresses are of a
// former pod range: nothing routes to them. Their controllers make them
// again, in the node's range.
func (c *Controller) deleteStrandedPods(ctx context.Context, own []netip.Prefix) error {
	list, err := c.cfg.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", c.cfg.NodeName).String(),
	})
	if err != nil {
		return fmt.Errorf("list the pods of node %s: %w", c.cfg.NodeName, err)
	}
	var errs []error
	for _, p := range strandedPods(list.Items, own, c.cfg.ClusterPodCIDRs) {
		if p.Spec.NodeName != c.cfg.NodeName {
			continue
		}
		uid := p.UID
		err := c.cfg.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil:
			c.log.Warn("pod deleted: its address is of a former pod range of this node, which nothing routes to any more; its controller makes it again",
				"pod", p.Namespace+"/"+p.Name, "ip", p.Status.PodIP, "cidrs", own)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("delete pod %s/%s (address %s outside node %s's pod range %v): %w", p.Namespace, p.Name, p.Status.PodIP, c.cfg.NodeName, own, err))
		}
	}
	return errors.Join(errs...)
}
