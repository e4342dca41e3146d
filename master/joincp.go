package master

import (
	"anvil.dev/anvil/etcd"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/netinfo"
	"anvil.dev/anvil/pki"
)

// JoinOptions are the inputs of `anvil join --control-plane`.
type JoinOptions struct {
	InitOptions
	// Endpoint is an apiserver of the cluster (https://host:port).
	Endpoint       string
	Token          pki.Token
	CAHash         pki.CAHash
	CertificateKey CertificateKey
}

// joinState is what a control-plane join learns on its way.
type joinState struct {
	o         JoinOptions
	info      *agent.ClusterInfo
	bootstrap kubernetes.Interface
	learnerID uint64
	promoted  bool
	etcdPeers []string
	// newHost is set when this master was not in the cluster file yet.
	newHost bool
}

// JoinPhases is the control-plane join, top to bottom: discover and verify
// the cluster with the token, fetch the cluster file and the sealed shared
// secrets, make this master's own certificates, join etcd as a learner and
// promote it once it has caught up, then run the same control plane as init.
func JoinPhases() []Phase {
	return []Phase{
		{"discovery", "fetch cluster-info, check its signature and the CA hash before any credential is sent", joinDiscoveryPhase},
		{"cluster-file", "read the cluster file the cluster was made with", joinClusterFilePhase},
		{"preflight", "check that this machine can run a control plane", preflightPhase},
		{"download-certs", "fetch and decrypt the shared CAs, service-account keys and encryption config", joinDownloadCertsPhase},
		{"certs", "issue this master's own certificates from the shared CAs", certsPhase},
		{"kubeconfig", "write this master's kubeconfigs", kubeconfigPhase},
		{"etcd-member", "add this master to etcd as a learner (replacing a stale member of the same name)", joinEtcdMemberPhase},
		{"config", "write component configs and the layout's units or specs", configPhase},
		{"etcd", "start the member, wait until it has caught up, promote it to a voter", joinEtcdPhase},
		{"control-plane", "start kube-apiserver, kube-controller-manager, kube-scheduler (and the VIP manager)", controlPlanePhase},
		{"wait", "wait for /readyz, both /healthz and both leader leases", waitPhase},
		{"agent", "install and start the node agent, with node credentials from the CA", agentPhase},
		{"mark-control-plane", "label and taint this master's Node as control plane", markControlPlanePhase},
		{"cluster-config", "record this master in the anvil ConfigMap", joinRecordPhase},
		{"finish", "mark the machine as a master of the cluster", finishPhase},
	}
}

// JoinControlPlane runs the control-plane join. On failure it stops what it
// started, and a re-run converges: a stale etcd member of this master is
// replaced, never duplicated.
func JoinControlPlane(ctx context.Context, o JoinOptions) (res *InitResult, err error) {
	if o.Token.IsZero() || o.CAHash.IsZero() {
		return nil, errors.New("a control-plane join needs a token and the CA hash")
	}
	r := newRun(o.InitOptions)
	r.join = &joinState{o: o}
	defer func() {
		if err != nil {
			r.rollback(err)
		}
	}()
	for _, p := range JoinPhases() {
		start := time.Now()
		r.progress(p.Name, p.Description)
		if err := p.Run(ctx, r); err != nil {
			return nil, fmt.Errorf("join phase %s: %w", p.Name, err)
		}
		r.log.Debug("phase done", "phase", p.Name, "elapsed", time.Since(start))
	}
	r.result.Elapsed = time.Since(r.started)
	return &r.result, nil
}

func joinDiscoveryPhase(ctx context.Context, r *initRun) error {
	j := r.join
	info, err := agent.Discover(ctx, agent.DiscoveryOptions{Endpoint: j.o.Endpoint, Token: j.o.Token, CAHash: j.o.CAHash, Log: r.log})
	if err != nil {
		return err
	}
	j.info = info
	cfg := &rest.Config{
		Host:            info.Endpoint,
		BearerToken:     j.o.Token.Reveal(),
		TLSClientConfig: rest.TLSClientConfig{CAData: info.CAPEM},
		Timeout:         15 * time.Second,
	}
	j.bootstrap, err = kubernetes.NewForConfig(cfg)
	return err
}

// joinClusterFilePhase takes the cluster file given (the installer passes
// the operator's) or the one in kube-system/anvil-config, and adds this
// machine to it when it is a new master.
func joinClusterFilePhase(ctx context.Context, r *initRun) error {
	j := r.join
	c := r.o.Cluster
	if c == nil {
		cm, err := j.bootstrap.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read the cluster file from kube-system/%s: %w", ConfigMapName, err)
		}
		if c, err = v1alpha1.Decode(ConfigMapName, []byte(cm.Data[ConfigMapKey])); err != nil {
			return err
		}
		c.Default()
	}
	if _, ok := c.Host(r.o.Node); !ok {
		addr := r.o.AdvertiseAddress
		if !addr.IsValid() {
			a, err := netinfo.DefaultRouteAddress()
			if err != nil {
				return err
			}
			addr = a
		}
		c.Hosts = append(c.Hosts, v1alpha1.Host{Name: r.o.Node, Address: addr, Role: v1alpha1.RoleMaster})
		c.Default()
		j.newHost = true
	}
	if _, err := v1alpha1.Validate(c); err != nil {
		return fmt.Errorf("the cluster file with this master in it: %w", err)
	}
	return r.setCluster(c)
}

func joinDownloadCertsPhase(ctx context.Context, r *initRun) error {
	return DownloadCerts(ctx, r.join.bootstrap, r.o.Root, r.join.o.CertificateKey, r.o.Force)
}

// joinEtcdMemberPhase adds this master as a learner, through the members
// that are already there, and points its etcd config at them.
func joinEtcdMemberPhase(ctx context.Context, r *initRun) error {
	j := r.join
	port := strconv.Itoa(etcd.ClientPort)
	for _, m := range r.o.Cluster.Masters() {
		if m.Name != r.o.Node {
			j.etcdPeers = append(j.etcdPeers, "https://"+net.JoinHostPort(m.NodeAddress().String(), port))
		}
	}
	if len(j.etcdPeers) == 0 {
		return errors.New("the cluster file names no other master to join")
	}
	cli, err := etcd.Dial(ctx, r.o.Root, j.etcdPeers...)
	if err != nil {
		return err
	}
	defer cli.Close()
	// A new member starts empty: data from an earlier, unfinished attempt
	// belongs to a member that AddLearner replaces.
	if err := os.RemoveAll(r.o.Root.EtcdData()); err != nil {
		return err
	}
	res, err := etcd.AddLearner(ctx, cli, r.o.Node, r.plan.etcdPeerURL(), r.o.Force)
	if err != nil {
		return err
	}
	if res.Replaced != "" {
		r.progress("etcd-member", "replaced the stale etcd member "+res.Replaced)
	}
	j.learnerID = res.ID
	r.plan.Etcd = EtcdMember{Name: r.o.Node, InitialCluster: res.InitialCluster, State: EtcdExistingCluster, Token: r.plan.Etcd.Token}
	r.createdData = true
	return nil
}

// joinEtcdPhase starts the learner, waits until it serves, and promotes it
// once it has caught up with the leader.
func joinEtcdPhase(ctx context.Context, r *initRun) error {
	cs, err := r.components(Etcd)
	if err != nil {
		return err
	}
	if err := r.start(ctx, cs); err != nil {
		return err
	}
	if err := r.waitReady(ctx, cs, r.o.Timeout); err != nil {
		return err
	}
	cli, err := etcd.Dial(ctx, r.o.Root, r.join.etcdPeers...)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := etcd.PromoteWhenReady(ctx, cli, r.join.learnerID, r.o.Timeout); err != nil {
		return err
	}
	r.join.promoted = true
	r.progress("etcd", "promoted to a voting member")
	return nil
}

// withdrawLearner removes the learner a failed join added: etcd allows one
// learner at a time, so a dead one would block the next master's join.
func (j *joinState) withdrawLearner(ctx context.Context, r *initRun) {
	if j.learnerID == 0 || j.promoted {
		return
	}
	cli, err := etcd.Dial(ctx, r.o.Root, j.etcdPeers...)
	if err != nil {
		r.log.Error("rollback: cannot reach etcd to remove the learner", "err", err)
		return
	}
	defer cli.Close()
	if _, err := cli.MemberRemove(ctx, j.learnerID); err != nil {
		r.log.Error("rollback: cannot remove the learner", "err", err)
		return
	}
	r.progress("rollback", "removed this master's etcd learner")
}

// joinRecordPhase writes the cluster file with this master in it back to
// the anvil ConfigMap, so later joins and status see it.
func joinRecordPhase(ctx context.Context, r *initRun) error {
	if !r.join.newHost {
		return nil
	}
	cs, err := r.client(pki.AdminKubeconfig)
	if err != nil {
		return err
	}
	for range 5 {
		cm, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur, err := v1alpha1.Decode(ConfigMapName, []byte(cm.Data[ConfigMapKey]))
		if err != nil {
			return err
		}
		if _, ok := cur.Host(r.o.Node); ok {
			return nil
		}
		h, _ := r.o.Cluster.Host(r.o.Node)
		cur.Hosts = append(cur.Hosts, h)
		b, err := yaml.Marshal(cur)
		if err != nil {
			return err
		}
		cm.Data[ConfigMapKey] = string(b)
		_, err = cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, cm, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return errors.New("the anvil ConfigMap kept changing under this update")
}
