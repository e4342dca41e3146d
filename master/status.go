package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// Status is what `anvil status` reports about this machine.
type Status struct {
	Node              string            `json:"node"`
	Role              v1alpha1.Role     `json:"role"`
	Layout            v1alpha1.Layout   `json:"layout"`
	KubernetesVersion string            `json:"kubernetesVersion"`
	Initialized       time.Time         `json:"initialized"`
	Components        []ComponentStatus `json:"components"`
	Etcd              *EtcdStatus       `json:"etcd,omitempty"`
	Certificates      *CertSummary      `json:"certificates,omitempty"`
	// AddonDrift lists the add-on objects (kind/namespace/name) that a
	// re-apply from this master (anvil addons apply) would change: anvil's
	// fields edited or objects deleted. Masters only, when healthy;
	// AddonError says why it could not be found out.
	AddonDrift []string `json:"addonDrift,omitempty"`
	AddonError string   `json:"addonError,omitempty"`
	// BackupSigningKey is the key this master signs backups with
	// (ed25519:…); empty on workers and on masters that have none.
	BackupSigningKey string `json:"backupSigningKey,omitempty"`
	// Replaced are the components (the agent included) whose process runs
	// a binary replaced since it started: an apply uploaded a new anvil,
	// and `anvil upgrade --to VERSION` (or the next apply) restarts them.
	Replaced []string `json:"replacedBinaries,omitempty"`
	// Healthy is true when every component is running and healthy.
	Healthy bool `json:"healthy"`
}

// ComponentStatus is one component.
type ComponentStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Healthy  bool      `json:"healthy"`
	Problem  string    `json:"problem,omitempty"`
	Version  string    `json:"version"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Uptime   int64     `json:"uptimeSeconds,omitempty"`
	Restarts int       `json:"restarts"`
}

// EtcdStatus is the etcd cluster as the local member sees it.
type EtcdStatus struct {
	Members  []EtcdMemberStatus `json:"members"`
	Leader   string             `json:"leader,omitempty"`
	Revision int64              `json:"revision,omitempty"`
	DBSize   int64              `json:"dbSizeBytes,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// EtcdMemberStatus is one etcd member.
type EtcdMemberStatus struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
}

// CertSummary is the soonest certificate expiry.
type CertSummary struct {
	Soonest     string    `json:"soonest"`
	Expires     time.Time `json:"expires"`
	ResidualDay int       `json:"residualDays"`
	Expired     []string  `json:"expired,omitempty"`
	// Warnings are CAs within 90 days of their end and due certificates
	// anvil cannot renew here (an external CA's).
	Warnings []string `json:"warnings,omitempty"`
}

// ErrNotInitialized means no init or join ran on this machine.
var ErrNotInitialized = errors.New("this machine is not part of a cluster (no anvil init or join ran here)")

// ReadStatus collects the status of this machine's components.
func ReadStatus(ctx context.Context, root hostfs.Root) (*Status, error) {
	st, err := ReadNodeState(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, err
	}
	c, _, err := v1alpha1.Load(root.Path(ClusterFile))
	if err != nil {
		return nil, err
	}
	out := &Status{Node: st.Node, Role: st.Role, Layout: st.Layout, KubernetesVersion: st.KubernetesVersion, Initialized: st.Initialized, Healthy: true}
	h, ok := c.Host(st.Node)
	if !ok {
		return nil, fmt.Errorf("node %q is not in %s", st.Node, root.Path(ClusterFile))
	}
	p := Plan{Cluster: c, Node: h, KubernetesVersion: st.KubernetesVersion}
	if st.Layout == v1alpha1.LayoutProcess {
		p.Root = root
	}
	var cs []component.Spec
	if h.IsMaster() {
		if cs, err = Components(p); err != nil {
			return nil, err
		}
	}
	out.Components = componentStates(ctx, root, st.Layout, cs)
	if rs, err := replacedComponents(ctx, p, st.Layout, root); err == nil {
		for _, r := range rs {
			out.Replaced = append(out.Replaced, r.Name)
		}
	}
	probe := supervise.NewProber()
	defer probe.Close()
	for i, c := range cs {
		cst := &out.Components[i]
		cst.Version = st.KubernetesVersion
		if c.Name == "etcd" {
			cst.Version = images.Releases()[0].Etcd + " (anvil " + buildinfo.Version() + ")"
		}
		if c.Health.Ready != nil {
			if err := probe.Check(ctx, *c.Health.Ready, 3*time.Second); err != nil {
				cst.Problem = err.Error()
			} else {
				cst.Healthy = true
			}
		}
		if !cst.Since.IsZero() {
			cst.Uptime = int64(time.Since(cst.Since).Seconds())
		}
		out.Healthy = out.Healthy && cst.Healthy
	}
	if h.IsMaster() {
		if pub, err := pki.ReadBackupSigningPublicKey(root.PKI()); err == nil {
			out.BackupSigningKey = envelope.FormatSigningKey(pub)
		}
		out.Etcd = etcdStatus(ctx, root)
		if out.Etcd.Error != "" {
			out.Healthy = false
		}
	}
	if h.IsMaster() && out.Healthy && st.Role == v1alpha1.RoleMaster {
		if out.AddonDrift, err = reapplyAddons(ctx, root, p, true); err != nil {
			out.AddonError = err.Error()
		}
	}
	if exp, err := pki.CheckExpiration(root.PKI(), pki.Options{KubeconfigDir: root.Kubernetes()}); err == nil {
		out.Certificates = certSummary(exp)
		now := time.Now()
		_, cannot := pki.Due(exp, now)
		if w := append(cannot, pki.CAWarnings(exp, now)...); len(w) > 0 {
			if out.Certificates == nil {
				out.Certificates = &CertSummary{}
			}
			out.Certificates.Warnings = w
		}
	}
	return out, nil
}

// componentStates reads the state, PID, start time and restart count of cs
// from whatever runs them.
func componentStates(ctx context.Context, root hostfs.Root, l v1alpha1.Layout, cs []component.Spec) []ComponentStatus {
	out := make([]ComponentStatus, len(cs))
	for i, c := range cs {
		out[i] = ComponentStatus{Name: c.Name, State: "unknown"}
	}
	switch l {
	case v1alpha1.LayoutProcess:
		st, err := supervise.ReadStatus(root)
		for i := range out {
			out[i].State = "stopped"
			if err != nil {
				out[i].Problem = err.Error()
				continue
			}
			if p, ok := st.Process(out[i].Name); ok {
				out[i].State, out[i].PID, out[i].Restarts, out[i].Since = string(p.State), p.PID, p.Restarts, p.StartedAt
			}
		}
	case v1alpha1.LayoutSystemd:
		var units []string
		for _, c := range cs {
			units = append(units, c.UnitName())
		}
		states, err := layout.SystemdStates(ctx, units)
		for i, c := range cs {
			if err != nil {
				out[i].Problem = err.Error()
				continue
			}
			j := slices.IndexFunc(states, func(s layout.UnitState) bool { return s.Name == c.UnitName() })
			if j < 0 {
				continue
			}
			s := states[j]
			out[i].State, out[i].PID, out[i].Restarts, out[i].Since = s.ActiveState+"/"+s.SubState, int(s.MainPID), int(s.Restarts), s.Since
		}
	case v1alpha1.LayoutStaticPod:
		for i := range out {
			out[i].State = "static pod"
		}
	}
	return out
}

func etcdStatus(ctx context.Context, root hostfs.Root) *EtcdStatus {
	out := &EtcdStatus{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, root)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	sr, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		out.Error = err.Error()
	} else {
		out.Revision, out.DBSize = sr.Header.Revision, sr.DbSize
	}
	for _, m := range ml.Members {
		ms := EtcdMemberStatus{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner}
		if sr != nil && m.ID == sr.Leader {
			ms.Leader, out.Leader = true, m.Name
		}
		out.Members = append(out.Members, ms)
	}
	return out
}

func certSummary(exp pki.Expiration) *CertSummary {
	var s *CertSummary
	for _, e := range append(exp.Certificates, exp.CertificateAuthorities...) {
		if e.Missing || e.Expires.IsZero() {
			continue
		}
		if e.ResidualSeconds <= 0 {
			if s == nil {
				s = &CertSummary{}
			}
			s.Expired = append(s.Expired, e.Name)
		}
		if s == nil || s.Expires.IsZero() || e.Expires.Before(s.Expires) {
			exp := s
			if exp == nil {
				exp = &CertSummary{}
			}
			exp.Soonest, exp.Expires = e.Name, e.Expires
			exp.ResidualDay = int(e.ResidualSeconds / 86400)
			s = exp
		}
	}
	return s
}
