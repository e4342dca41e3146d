package hostfs

import "path/filepath"

// Standard locations, relative to the host's root.
const (
	KubernetesDir = "/etc/kubernetes"
	PKIDir        = "/etc/kubernetes/pki"
	ManifestsDir  = "/etc/kubernetes/manifests"
	AnvilConfDir  = "/etc/anvil"
	StateDir      = "/var/lib/anvil"
	EtcdDataDir   = "/var/lib/anvil/etcd"
	BackupDir     = "/var/lib/anvil/backups"
	LogDir        = "/var/log/anvil"
	RunDir        = "/run/anvil"
	BinDir        = "/opt/anvil/bin"
	LinkDir       = "/usr/local/bin"
	UnitDir       = "/etc/systemd/system"
)

// Root is the directory every host path is resolved under; "" or "/" is the
// real root.
type Root string

// Path returns p (an absolute host path) under the root.
func (r Root) Path(p string) string {
	if r == "" || r == "/" {
		return filepath.Clean(p)
	}
	return filepath.Join(string(r), p)
}

// Join is Path(filepath.Join(elem...)).
func (r Root) Join(elem ...string) string { return r.Path(filepath.Join(elem...)) }

func (r Root) PKI() string         { return r.Path(PKIDir) }
func (r Root) Kubernetes() string  { return r.Path(KubernetesDir) }
func (r Root) Manifests() string   { return r.Path(ManifestsDir) }
func (r Root) AnvilConf() string   { return r.Path(AnvilConfDir) }
func (r Root) State() string       { return r.Path(StateDir) }
func (r Root) EtcdData() string    { return r.Path(EtcdDataDir) }
func (r Root) Backups() string     { return r.Path(BackupDir) }
func (r Root) Logs() string        { return r.Path(LogDir) }
func (r Root) Run() string         { return r.Path(RunDir) }
func (r Root) Bin(v string) string { return r.Join(BinDir, v) }
func (r Root) Units() string       { return r.Path(UnitDir) }
func (r Root) Kubeconfig(name string) string {
	return r.Join(KubernetesDir, name)
}
