package master

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"anvil.dev/anvil/internal/netinfo"
	"anvil.dev/anvil/internal/sdnotify"
)

// VIPLease is the Lease in kube-system whose holder carries the VIP.
const VIPLease = "anvil-vip"

// VIPHealthPort serves the VIP manager's /healthz on loopback (unused by
// any Kubernetes component).
const VIPHealthPort = 10262

// VIPOptions configure `anvil vip`.
type VIPOptions struct {
	// Address is the floating control-plane address.
	Address netip.Addr
	// NodeAddress picks the interface the VIP goes on: the one holding it.
	NodeAddress netip.Addr
	// Kubeconfig talks to this master's own apiserver, so that a master
	// whose apiserver is down cannot keep the VIP.
	Kubeconfig string
	// Identity is this master's name in the Lease.
	Identity string
	// HealthAddress serves /healthz (127.0.0.1:VIPHealthPort when empty).
	HealthAddress string
	// Timings of the election; a dead holder's VIP moves within about
	// LeaseDuration + RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// RunVIP holds the VIP while this master leads the election on VIPLease,
// and drops it the moment it stops leading, until ctx ends. The holder
// re-announces the address with gratuitous ARP when it takes it, and checks
// every RetryPeriod that it is still on the interface.
func RunVIP(ctx context.Context, o VIPOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	log := o.Log.With("component", "vip", "vip", o.Address)
	o.LeaseDuration = cmp.Or(o.LeaseDuration, 4*time.Second)
	o.RenewDeadline = cmp.Or(o.RenewDeadline, 3*time.Second)
	o.RetryPeriod = cmp.Or(o.RetryPeriod, time.Second)
	link, ifi, err := linkWith(o.NodeAddress)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: o.Address.AsSlice(), Mask: net.CIDRMask(o.Address.BitLen(), o.Address.BitLen())}, Label: ifi.Name}
	// Whatever an earlier run left: only the leader may have it.
	dropVIP(link, addr, log)

	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("read %s: %w", o.Kubeconfig, err)
	}
	cfg.Timeout = o.RenewDeadline
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: VIPLease, Namespace: metav1.NamespaceSystem},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	stopHealth, err := ServeHealth(ctx, cmp.Or(o.HealthAddress, net.JoinHostPort("127.0.0.1", strconv.Itoa(VIPHealthPort))))
	if err != nil {
		return err
	}
	defer stopHealth()
	sdnotify.Ready("waiting to hold " + o.Address.String())
	for ctx.Err() == nil {
		// A leader that cannot put the address on its interface gives the
		// Lease up, so that a master that can takes it, and stands aside
		// for a lease duration.
		rctx, cancel := context.WithCancel(ctx)
		var failed atomic.Bool
		leaderelection.RunOrDie(rctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   o.LeaseDuration,
			RenewDeadline:   o.RenewDeadline,
			RetryPeriod:     o.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            VIPLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					if err := holdVIP(lctx, link, ifi, addr, o, log); err != nil {
						log.Error("cannot hold the VIP: giving the lease up", "err", err)
						sdnotify.Status("cannot hold " + o.Address.String() + ": " + err.Error())
						failed.Store(true)
						cancel()
					}
				},
				OnStoppedLeading: func() {
					dropVIP(link, addr, log)
					if !failed.Load() {
						sdnotify.Status("standing by for " + o.Address.String())
					}
				},
			},
		})
		cancel()
		if failed.Load() {
			select {
			case <-ctx.Done():
			case <-time.After(o.LeaseDuration):
			}
		}
	}
	dropVIP(link, addr, log)
	return nil
}

// ServeHealth answers /healthz while an anvil daemon (the VIP manager, the
// approver) runs; it is a liveness check of the process, not of the
// apiserver, so a down apiserver does not make the daemon restart in a
// loop.
func ServeHealth(ctx context.Context, addr string) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health endpoint %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

// holdVIP puts the address on the interface, announces it, and keeps it
// there while lctx (the leadership) lasts.
func holdVIP(lctx context.Context, link netlink.Link, ifi *net.Interface, addr *netlink.Addr, o VIPOptions, log *slog.Logger) error {
	announce := func() error {
		if err := netlink.AddrReplace(link, addr); err != nil {
			return err
		}
		if err := netinfo.GratuitousARP(ifi, o.Address); err != nil {
			log.Warn("gratuitous ARP failed", "err", err)
		}
		return nil
	}
	if err := announce(); err != nil {
		return fmt.Errorf("add %s to %s: %w", o.Address, ifi.Name, err)
	}
	log.Info("holding the VIP", "interface", ifi.Name)
	sdnotify.Status("holding " + o.Address.String())
	// Neighbours that missed the first announcement get two more.
	for i, t := 0, time.NewTicker(o.RetryPeriod); ; i++ {
		select {
		case <-lctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			if i < 2 || !hasAddr(link, addr) {
				if err := announce(); err != nil {
					log.Error("cannot put the VIP back", "interface", ifi.Name, "err", err)
				}
			}
		}
	}
}

func dropVIP(link netlink.Link, addr *netlink.Addr, log *slog.Logger) {
	if !hasAddr(link, addr) {
		return
	}
	if err := netlink.AddrDel(link, addr); err != nil {
		log.Error("cannot remove the VIP", "err", err)
		return
	}
	log.Info("released the VIP")
}

func hasAddr(link netlink.Link, addr *netlink.Addr) bool {
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range list {
		if a.IPNet.IP.Equal(addr.IPNet.IP) {
			return true
		}
	}
	return false
}

// linkWith finds the interface that holds a.
func linkWith(a netip.Addr) (netlink.Link, *net.Interface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				ifi, err := net.InterfaceByIndex(l.Attrs().Index)
				if err != nil {
					return nil, nil, err
				}
				return l, ifi, nil
			}
		}
	}
	return nil, nil, errors.New("no interface holds " + a.String() + ": the VIP goes on the interface of the node's address")
}
