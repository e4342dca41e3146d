package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/netinfo"
	"anvil.dev/anvil/internal/phase"
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
	learner   *etcd.Learner
	// newHost is set when this master was not in the cluster file yet.
	newHost bool
}

// joinPhases is the control-plane join, top to bottom: discover and verify
// the cluster with the token, fetch the cluster file and the sealed shared
// secrets, make this master's own certificates, join etcd as a learner and
// promote it once it has caught up, then run the same control plane as init.
func joinPhases() []initPhase {
	return []initPhase{
		{Name: "discovery", Description: "fetch cluster-info, check its signature and the CA hash before any credential is sent", Run: joinDiscoveryPhase},
		{Name: "cluster-file", Description: "read the cluster file the cluster was made with", Run: joinClusterFilePhase},
		{Name: "preflight", Description: "check that this machine can run a control plane", Run: preflightPhase},
		{Name: "download-certs", Description: "fetch and decrypt the shared CAs, service-account keys and encryption config", Mutates: true, Run: joinDownloadCertsPhase},
		{Name: "certs", Description: "issue this master's own certificates from the shared CAs", Mutates: true, Run: certsPhase},
		{Name: "kubeconfig", Description: "write this master's kubeconfigs", Mutates: true, Run: kubeconfigPhase},
		{Name: "etcd-member", Description: "add this master to etcd as a learner (replacing a stale member of the same name)", Mutates: true, Run: joinEtcdMemberPhase},
		{Name: "config", Description: "write component configs and the layout's units or specs", Mutates: true, Run: configPhase},
		{Name: "kubelet", Description: kubeletPhaseHelp, Mutates: true, Run: kubeletPhase},
		{Name: "etcd", Description: "start the member, wait until it has caught up, promote it to a voter", Mutates: true, Run: joinEtcdPhase},
		{Name: "control-plane", Description: "start kube-apiserver, kube-controller-manager, kube-scheduler (and the VIP manager)", Mutates: true, Run: controlPlanePhase},
		{Name: "wait", Description: "wait for /readyz, both /healthz and both leader leases", Run: waitPhase},
		{Name: "node", Description: nodePhaseHelp, Mutates: true, Run: nodePhase},
		{Name: "agent", Description: agentPhaseHelp, Mutates: true, Run: agentPhase},
		{Name: "mark-control-plane", Description: markPhaseHelp, Mutates: true, Run: markControlPlanePhase},
		{Name: "cluster-config", Description: "record this master in the anvil ConfigMap", Mutates: true, Run: joinRecordPhase},
		{Name: "finish", Description: "mark the machine as a master of the cluster", Mutates: true, Run: finishPhase},
	}
}

// JoinPhaseHelp describes the control-plane join's phases for --help.
func JoinPhaseHelp() string { return phase.Help(joinPhases()) }

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
	if err := phase.Run(ctx, joinPhases(), r, phase.Options{Command: "join", Task: o.Task}); err != nil {
		return nil, err
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
	var peers []string
	port := strconv.Itoa(etcd.ClientPort)
	for _, m := range r.o.Cluster.Masters() {
		if m.Name != r.o.Node {
			peers = append(peers, "https://"+net.JoinHostPort(m.NodeAddress().String(), port))
		}
	}
	if len(peers) == 0 {
		return errors.New("the cluster file names no other master to join")
	}
	// A new member starts empty: data from an earlier, unfinished attempt
	// belongs to a member AddLearner replaces.
	if err := os.RemoveAll(r.o.Root.EtcdData()); err != nil {
		return err
	}
	l, err := etcd.JoinAsLearner(ctx, r.o.Root, peers, r.o.Node, r.plan.EtcdPeerURL(), r.o.Force)
	if err != nil {
		return err
	}
	if l.Added.Replaced != "" {
		r.o.Task.Say("replaced the stale etcd member %s", l.Added.Replaced)
	}
	r.join.learner = l
	r.plan.Etcd = EtcdMember{Name: r.o.Node, InitialCluster: l.Added.InitialCluster, State: EtcdExistingCluster, Token: r.plan.Etcd.Token}
	r.cp.Plan = r.plan
	r.createdData = true
	return nil
}

// joinEtcdPhase starts the learner, waits until it serves, and promotes it
// once it has caught up with the leader.
func joinEtcdPhase(ctx context.Context, r *initRun) error {
	cs, err := r.cp.Components(Etcd)
	if err != nil {
		return err
	}
	if err := r.start(ctx, cs); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, cs, r.o.Timeout); err != nil {
		return err
	}
	if err := r.join.learner.Promote(ctx, r.o.Timeout); err != nil {
		return err
	}
	r.o.Task.Say("promoted to a voting member")
	return nil
}

// withdrawLearner removes the learner a failed join added.
func (j *joinState) withdrawLearner(ctx context.Context, r *initRun) {
	removed, err := j.learner.Withdraw(ctx)
	if err != nil {
		r.log.Error("rollback: cannot remove the etcd learner", "err", err)
	}
	if removed {
		r.o.Task.Say("removed this master's etcd learner")
	}
}

// joinRecordPhase writes the cluster file with this master in it back to
// the anvil ConfigMap, so later joins and status see it.
func joinRecordPhase(ctx context.Context, r *initRun) error {
	if !r.join.newHost {
		return nil
	}
	cs, err := r.cp.Client(pki.AdminKubeconfig)
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
		b, err := PublishedClusterFile(cur)
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
