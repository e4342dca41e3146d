package master

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/netinfo"
)

// ClusterSource is what `anvil init` was told about the cluster.
type ClusterSource struct {
	// File is a cluster file and Node this machine's host in it.
	File, Node string
	// AdvertiseAddress is this machine's address; unset means the address
	// of the default route's interface.
	AdvertiseAddress netip.Addr
	// Name, KubernetesVersion and Layout make a one-master cluster when
	// there is no file.
	Name              string
	KubernetesVersion string
	Layout            v1alpha1.Layout
}

// InitCluster is the cluster init runs with, and this machine's host in it:
// the file given; else the one an earlier init saved under root (a phase run
// alone, a re-run); else a one-master cluster of this machine alone, named
// after its hostname. Warnings are the file's.
func InitCluster(root hostfs.Root, src ClusterSource) (*v1alpha1.Cluster, string, v1alpha1.Warnings, error) {
	saved := root.Path(ClusterFile)
	switch ok, _ := fsutil.Exists(saved); {
	case src.File != "":
		c, warnings, err := v1alpha1.Load(src.File)
		if err != nil {
			return nil, "", nil, err
		}
		return c, src.Node, warnings, nil
	case ok:
		c, _, err := v1alpha1.Load(saved)
		if err != nil {
			return nil, "", nil, fmt.Errorf("the cluster file an earlier init saved: %w", err)
		}
		node := src.Node
		if node == "" && len(c.Masters()) == 1 {
			node = c.Masters()[0].Name
		}
		return c, node, nil, nil
	}
	c, node, err := singleMaster(src)
	return c, node, nil, err
}

// singleMaster is a one-master cluster of this machine.
func singleMaster(src ClusterSource) (*v1alpha1.Cluster, string, error) {
	adv := src.AdvertiseAddress
	if !adv.IsValid() {
		a, err := netinfo.DefaultRouteAddress()
		if err != nil {
			return nil, "", err
		}
		adv = a
	}
	node := src.Node
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, "", err
		}
		node = strings.ToLower(h)
	}
	c := &v1alpha1.Cluster{
		APIVersion:        v1alpha1.APIVersion,
		Kind:              v1alpha1.KindCluster,
		Name:              src.Name,
		KubernetesVersion: src.KubernetesVersion,
		Hosts:             []v1alpha1.Host{{Name: node, Address: adv, Role: v1alpha1.RoleMaster}},
	}
	c.ControlPlane.Layout = src.Layout
	c.Default()
	if _, err := v1alpha1.Validate(c); err != nil {
		return nil, "", fmt.Errorf("the flags make an invalid cluster: %w", err)
	}
	return c, node, nil
}
