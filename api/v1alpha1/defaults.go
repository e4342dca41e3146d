package v1alpha1

import (
	"net/netip"
	"slices"
	"time"
)

// Defaults for what an operator may leave out of a cluster file.
const (
	DefaultKubernetesVersion = "v1.37.2"
	DefaultAPIServerPort     = 6443
	DefaultLayout            = LayoutSystemd
	DefaultSSHUser           = "root"
	DefaultSSHPort           = 22
	DefaultKnownHosts        = "~/.ssh/known_hosts"
	DefaultServiceCIDR       = "10.96.0.0/12"
	DefaultPodCIDR           = "10.244.0.0/16"
	DefaultClusterDomain     = "cluster.local"
	// DefaultQuotaBackendBytes is etcd's own default.
	DefaultQuotaBackendBytes = 2 << 30
	DefaultSnapshotCount     = 10000
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = 1000 * time.Millisecond
	DefaultKeyAlgorithm      = ECDSAP256
	DefaultCAValidityDays    = 3650
	DefaultCertValidityDays  = 365
	DefaultBackupRetain      = 7
	DefaultBackupDir         = "/var/lib/anvil/backups"
)

// Defaulted is a defaulted copy of c, for a caller that needs every
// default but must not change the cluster it was given (Default sets
// fields of each host, so the hosts are copied too).
func (c *Cluster) Defaulted() *Cluster {
	cc := *c
	cc.Hosts = slices.Clone(c.Hosts)
	cc.Default()
	return &cc
}

// Default fills in every field the operator left out. Zero values mean "not
// set", so running it twice changes nothing. It never invents what has no
// sensible default (names, addresses, roles); Validate reports those.
func (c *Cluster) Default() {
	setIfZero(&c.KubernetesVersion, DefaultKubernetesVersion)
	c.ControlPlane.defaults(c.Masters())
	c.defaultSSH()
	c.Networking.defaults()
	c.Etcd.defaults()
	c.PKI.defaults()
	c.Backup.defaults()
}

func (cp *ControlPlane) defaults(masters []Host) {
	setIfZero(&cp.Port, DefaultAPIServerPort)
	setIfZero(&cp.Layout, DefaultLayout)
	if cp.Endpoint == "" {
		switch {
		case cp.VIP.IsValid():
			cp.Endpoint = cp.VIP.String()
		case len(masters) > 0 && masters[0].Address.IsValid():
			cp.Endpoint = masters[0].Address.String()
		}
	}
}

// defaultSSH gives every host a complete ssh block: its own fields first,
// then the cluster-wide ones, then anvil's. Hosts are done before the
// cluster-wide block because sudo's default follows each host's own user: a
// host that overrides a non-root cluster user with root must not inherit a
// sudo that was only ever implied by the cluster user.
func (c *Cluster) defaultSSH() {
	for i := range c.Hosts {
		c.Hosts[i].SSH = c.Hosts[i].SSH.inherit(c.SSH).complete()
		setIfZero(&c.Hosts[i].Runtime, RuntimeContainerd)
	}
	c.SSH = c.SSH.complete()
}

// inherit fills fields unset in s from cluster. The bastion is taken whole:
// merging two jump hosts field by field would mix their credentials.
func (s SSH) inherit(cluster SSH) SSH {
	setIfZero(&s.User, cluster.User)
	setIfZero(&s.Port, cluster.Port)
	setIfZero(&s.IdentityFile, cluster.IdentityFile)
	setIfZero(&s.KnownHosts, cluster.KnownHosts)
	if s.Bastion == nil && cluster.Bastion != nil {
		b := *cluster.Bastion
		s.Bastion = &b
	}
	if s.Sudo == nil && cluster.Sudo != nil {
		v := *cluster.Sudo
		s.Sudo = &v
	}
	return s
}

// complete fills what is still unset with anvil's defaults.
func (s SSH) complete() SSH {
	setIfZero(&s.User, DefaultSSHUser)
	setIfZero(&s.Port, DefaultSSHPort)
	setIfZero(&s.KnownHosts, DefaultKnownHosts)
	if s.Sudo == nil {
		// Provisioning writes under /etc and starts units, which a
		// non-root login can only do through sudo.
		v := s.User != "root"
		s.Sudo = &v
	}
	if s.Bastion != nil {
		b := *s.Bastion
		setIfZero(&b.Port, DefaultSSHPort)
		setIfZero(&b.User, s.User)
		s.Bastion = &b
	}
	return s
}

func (n *Networking) defaults() {
	setIfZero(&n.ServiceCIDR, netip.MustParsePrefix(DefaultServiceCIDR))
	setIfZero(&n.PodCIDR, netip.MustParsePrefix(DefaultPodCIDR))
	setIfZero(&n.ClusterDomain, DefaultClusterDomain)
	setIfZero(&n.Network, PodNetworkHostGW)
}

func (e *Etcd) defaults() {
	setIfZero(&e.QuotaBackendBytes, DefaultQuotaBackendBytes)
	setIfZero(&e.SnapshotCount, DefaultSnapshotCount)
	setIfZero(&e.HeartbeatInterval, Duration{DefaultHeartbeatInterval})
	setIfZero(&e.ElectionTimeout, Duration{DefaultElectionTimeout})
}

func (p *PKI) defaults() {
	setIfZero(&p.KeyAlgorithm, DefaultKeyAlgorithm)
	setIfZero(&p.CAValidity, Days(DefaultCAValidityDays))
	setIfZero(&p.CertValidity, Days(DefaultCertValidityDays))
}

func (b *Backup) defaults() {
	setIfZero(&b.Retain, DefaultBackupRetain)
	setIfZero(&b.Dir, DefaultBackupDir)
}

func setIfZero[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}
