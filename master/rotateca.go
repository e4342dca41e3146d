package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/pki"
)

// A master's part of a CA rotation stage (package pki describes the
// stages): its PKI files changed, cluster-info republished with the new
// cluster CA bundle, the components that read a changed file restarted one
// at a time (the VIP handed over first), then its node stack and agent. The
// masters take turns through the renewal Lease, so no two restart at once
// and a renewal never runs beside a rotation.

// RotationSecretName holds the next CAs, sealed with a certificate key,
// while the other masters fetch them at the trust stage.
const RotationSecretName = "anvil-ca-rotation"

// RotateCAOptions are RotateCA's.
type RotateCAOptions struct {
	Root  hostfs.Root
	Stage string
	// Prepare, at the trust stage on the first master, makes the next CAs
	// here and uploads them sealed with Key; the other masters fetch them
	// with Key.
	Prepare bool
	Key     CertificateKey
	// Wait bounds the wait for the other masters' turn; zero is five
	// minutes.
	Wait time.Duration
	Log  *slog.Logger
	Task *progress.Task
}

// RotateCAResult is what RotateCA did on one master.
type RotateCAResult struct {
	Node  string `json:"node"`
	Stage string `json:"stage"`
	// Changed are the PKI files and kubeconfigs written.
	Changed []string `json:"changed,omitempty"`
	// Restarted are the control-plane components restarted, in order.
	Restarted []string `json:"restarted,omitempty"`
	// NodeStack is the node's part (kubelet, kube-proxy, agent).
	NodeStack *agent.RotateCAResult `json:"nodeStack,omitempty"`
	Took      time.Duration         `json:"took"`
}

// RotateCA runs one stage of a CA rotation on this master. Run again after
// it finished, it changes nothing.
func RotateCA(ctx context.Context, o RotateCAOptions) (*RotateCAResult, error) {
	start := time.Now()
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !slices.Contains(pki.RotateStages(), o.Stage) {
		return nil, fmt.Errorf("unknown stage %q: use one of %v", o.Stage, pki.RotateStages())
	}
	st, p, err := installedMaster(o.Root, "a worker has no CA: run anvil certs rotate-ca there without --prepare, after the masters")
	if err != nil {
		return nil, err
	}
	if st.Layout == v1alpha1.LayoutProcess {
		p.Root = o.Root
	}
	if p, err = p.Complete(); err != nil {
		return nil, err
	}
	res := &RotateCAResult{Node: st.Node, Stage: o.Stage}
	dir, kubeconfigs := o.Root.Path(hostfs.PKIDir), o.Root.Path(hostfs.KubernetesDir)
	cp := &ControlPlane{Plan: p, Layout: st.Layout, Root: o.Root, Anvil: p.AnvilBinary, Log: log, Task: o.Task}
	cs, err := cp.Client(pki.AdminKubeconfig)
	if err != nil {
		return nil, err
	}
	cfg, err := pki.ConfigFromCluster(p.Cluster, p.Node.Name)
	if err != nil {
		return nil, err
	}
	if err := checkSigningFlag(o.Root, st.Node); err != nil {
		return nil, err
	}
	if o.Stage == pki.RotateTrust {
		if err := o.fetchNextCAs(ctx, cs, dir, cfg); err != nil {
			return nil, err
		}
	}
	release, err := takeRenewTurn(ctx, cp.adminClient, st.Node, o.Wait, renewTurnPause, time.Time{}, log)
	if err != nil {
		return nil, err
	}
	defer release()
	o.Task.Say("%s: CA rotation, stage %s", st.Node, o.Stage)
	switch o.Stage {
	case pki.RotateTrust:
		res.Changed, err = pki.TrustNext(dir, kubeconfigs)
	case pki.RotateReissue:
		// Every master holds the next CAs once the trust stage is done.
		if err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, RotationSecretName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			log.Warn("delete the uploaded next CAs", "secret", RotationSecretName, "err", err)
		}
		res.Changed, err = pki.SwitchToNext(dir, cfg, pki.Options{KubeconfigDir: kubeconfigs})
	case pki.RotateDrop:
		res.Changed, err = pki.DropPrevious(dir, kubeconfigs)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", st.Node, err)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return res, err
	}
	// The files to restart for are recorded before the restarts, so a run
	// that stops among them restarts them all when run again.
	restart, err := pendingRestarts(o.Root, res.Changed)
	if err != nil {
		return res, err
	}
	if len(restart) > 0 {
		log.Info("CA rotation: files changed", "stage", o.Stage, "count", len(restart))
		restarted, err := cp.restartReaders(ctx, restart, log)
		res.Restarted = restarted
		if err != nil {
			return res, fmt.Errorf("%s: restart to read the rotated certificates: %w", st.Node, err)
		}
		if err := os.Remove(o.Root.Path(RotationRestartFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
	}
	// A fresh client: the apiserver may now present a certificate of the
	// new CA, which admin.conf trusts since the trust stage.
	if cs, err = cp.Client(pki.AdminKubeconfig); err != nil {
		return res, err
	}
	if err := publishCABundle(ctx, cs, bundle); err != nil {
		return res, err
	}
	nr, err := agent.RotateCA(ctx, agent.RotateCAOptions{
		Root: o.Root, Stage: o.Stage, Bundle: bundle, Layout: st.Layout, Log: log,
		Mint: func(nodeName string) ([]byte, []byte, error) {
			caCert, caKey, err := readCA(dir)
			if err != nil {
				return nil, nil, err
			}
			c, err := agent.MintCredentials(agent.MintOptions{NodeName: nodeName, Server: p.localAPIServerURL(), CACert: caCert, CAKey: caKey})
			return c.CertPEM, c.KeyPEM, err
		},
	})
	res.NodeStack = nr
	if err != nil {
		return res, err
	}
	res.Took = time.Since(start)
	return res, nil
}

// RotationRestartFile lists the files a CA rotation stage changed whose
// readers are not restarted yet.
const RotationRestartFile = hostfs.StateDir + "/ca-rotation-restart.json"

// pendingRestarts adds changed to what RotationRestartFile lists, writes it,
// and returns the union.
func pendingRestarts(root hostfs.Root, changed []string) ([]string, error) {
	var all []string
	p := root.Path(RotationRestartFile)
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &all); err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, c := range changed {
		if !slices.Contains(all, c) {
			all = append(all, c)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(all)
	if err != nil {
		return nil, err
	}
	return all, fsutil.WriteFile(p, b, 0o600, 0o700)
}

// checkSigningFlag refuses a rotation where the installed controller-
// manager signs from ca.crt (an older anvil installed it): with two CAs in
// ca.crt it would stop signing.
func checkSigningFlag(root hostfs.Root, node string) error {
	for _, f := range []string{"/etc/systemd/system/kube-controller-manager.service", hostfs.KubernetesDir + "/manifests/kube-controller-manager.yaml"} {
		b, err := os.ReadFile(root.Path(f))
		if err != nil {
			continue
		}
		if !strings.Contains(string(b), pki.ClusterSigningCertFile) {
			return fmt.Errorf("%s: the controller-manager (%s) signs from ca.crt, as an older anvil installed it: run anvil cluster apply with this anvil first", node, root.Path(f))
		}
	}
	return nil
}

// fetchNextCAs puts the next CAs here, unless they are here or in use: the
// first master makes and uploads them, the others download them.
func (o RotateCAOptions) fetchNextCAs(ctx context.Context, cs kubernetes.Interface, dir string, cfg pki.Config) error {
	rs, err := pki.ReadRotation(dir)
	if err != nil {
		return err
	}
	files := nextCAFiles()
	if o.Prepare && rs.Done != pki.RotateReissue {
		// Uploaded again on a re-run: the others fetch them with this
		// run's key.
		if err := pki.PrepareRotation(dir, cfg, time.Now()); err != nil {
			return err
		}
		return uploadFiles(ctx, cs, o.Root, o.Key, time.Now(), RotationSecretName, files)
	}
	if rs.Prepared || rs.Done != "" {
		return nil
	}
	plain, err := downloadFiles(ctx, cs, o.Key, RotationSecretName, files)
	if errors.Is(err, ErrCertsExpired) {
		return fmt.Errorf("the next CAs are not uploaded (Secret %s/%s): the trust stage runs on the first master first, with --prepare, and the others follow within %s", metav1.NamespaceSystem, RotationSecretName, CertsTTL)
	}
	if err != nil {
		return err
	}
	return writeFiles(o.Root, plain)
}

// nextCAFiles are the next CAs' host paths.
func nextCAFiles() []string {
	var out []string
	for _, f := range pki.NextCAFiles() {
		out = append(out, filepath.Join(hostfs.PKIDir, f))
	}
	return out
}

// publishCABundle writes bundle into cluster-info (keeping the server it
// names, re-signed for the live tokens), which joining nodes check
// against their CA hash and running nodes read their trust from.
func publishCABundle(ctx context.Context, cs kubernetes.Interface, bundle []byte) error {
	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read cluster-info: %w", err)
	}
	kc, err := clientcmd.Load([]byte(cm.Data[bootstrapapi.KubeConfigKey]))
	if err != nil {
		return fmt.Errorf("cluster-info: %w", err)
	}
	var server string
	for _, c := range kc.Clusters {
		if string(c.CertificateAuthorityData) == string(bundle) {
			return nil
		}
		server = c.Server
	}
	if err := EnsureClusterInfo(ctx, cs, bundle, server, time.Now()); err != nil {
		return fmt.Errorf("publish the CA bundle in cluster-info: %w", err)
	}
	return nil
}
