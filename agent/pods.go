package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/podnet"
)

// On a machine that runs pods (runtime containerd) the kubelet registers
// the Node, renews its Lease and posts its status; the agent does none of
// that. It keeps learning where the apiservers are and renewing its own
// certificate, and adds what the kubelet does not do: the pod network
// (package podnet) and the import of image archives dropped into
// /var/lib/anvil/images.
//
//	runPods ─┬─ learn loop, rotation (as with runtime none)
//	         ├─ images: scan the directory every imagePoll; a listing that
//	         │          stayed the same for one poll and differs from the
//	         │          last imported one is imported (node.ImportImages);
//	         │          after each import the image mirror is told what
//	         │          the archives hold, and containerd's registry hosts
//	         │          name it for their registries (retried every poll
//	         │          until it succeeds)
//	         ├─ mirror: serve the imported images on 127.0.0.1:MirrorPort
//	         │          (node.Mirror), for pods that always pull
//	         └─ podnet: find the interface holding the node IP, then
//	                    podnet.Controller.Run with a clientset on the
//	                    agent's rotating certificate

// imagePoll is how often the images directory is looked at.
const imagePoll = 3 * time.Second

func (a *Agent) runPods(ctx context.Context) {
	a.log.Info("the kubelet owns the Node; the agent runs the pod network and imports image archives", "network", a.cfg.Network)
	var wg sync.WaitGroup
	wg.Go(func() { a.learnLoop(ctx) })
	if a.cfg.RotateCertificates == nil || *a.cfg.RotateCertificates {
		wg.Go(func() { a.rotationLoop(ctx) })
	}
	mirror := node.NewMirror(a.cfg.Root)
	wg.Go(func() { a.serveMirror(ctx, mirror) })
	wg.Go(func() { a.imageLoop(ctx, mirror) })
	if a.cfg.RunsPodNetwork() {
		wg.Go(func() { a.podnetLoop(ctx) })
	}
	wg.Wait()
}

// imageLoop imports archives as they appear; it is also the heartbeat
// /healthz judges the agent's loops by.
func (a *Agent) imageLoop(ctx context.Context, mirror *node.Mirror) {
	w := a.imageWatcher()
	stale := false
	for {
		a.beat()
		if w.pass(ctx) {
			stale = true
		}
		if stale {
			if err := a.refreshMirror(ctx, mirror); err != nil {
				a.log.Warn("image mirror not up to date; trying again", "in", imagePoll, "err", err)
			} else {
				stale = false
			}
		}
		if !backoff.Sleep(ctx, imagePoll) {
			return
		}
	}
}

func (a *Agent) imageWatcher() *imageWatcher {
	root := a.cfg.Root
	o := node.ImportOptions{
		Root: root, Ctr: filepath.Join(a.cfg.BinDir, images.Ctr), Address: root.Path(node.ContainerdSocket),
		Dirs: []string{root.Path(node.ImagesDir)},
	}
	return &imageWatcher{
		dir: root.Path(node.ImagesDir), log: a.log,
		importAll: func(ctx context.Context) (node.ImportResult, error) { return node.ImportImages(ctx, o) },
	}
}

// refreshMirror has the mirror serve the images the archives name, as
// containerd holds them, and names the mirror in containerd's registry
// hosts for their registries. An archive that cannot be read, or an image
// containerd lacks, leaves only that image out.
func (a *Agent) refreshMirror(ctx context.Context, mirror *node.Mirror) error {
	root := a.cfg.Root
	archives, _ := filepath.Glob(filepath.Join(root.Path(node.ImagesDir), "*.tar"))
	named := map[string]bool{}
	for _, f := range archives {
		names, err := node.ArchiveImageNames(f)
		if err != nil {
			continue // ImportImages reported it
		}
		for _, n := range names {
			named[n] = true
		}
	}
	all, err := node.ContainerdImages(ctx, filepath.Join(a.cfg.BinDir, images.Ctr), root.Path(node.ContainerdSocket))
	if err != nil {
		return err
	}
	var served []node.MirroredImage
	var registries []string
	for _, img := range all {
		if named[img.Name] {
			served = append(served, img)
			registries = append(registries, node.ImageRegistry(img.Name))
		}
	}
	slices.Sort(registries)
	registries = slices.Compact(registries)
	setErr := mirror.Set(served)
	if setErr != nil {
		a.log.Warn("image mirror leaves images out", "err", setErr)
	}
	if err := node.WriteRegistryHosts(root, registries); err != nil {
		return err
	}
	a.log.Info("image mirror serves the imported images", "address", node.MirrorAddress(), "images", mirror.Images(), "registries", registries)
	return nil
}

// serveMirror serves the image mirror until ctx ends; when its port is
// taken it says so and tries again.
func (a *Agent) serveMirror(ctx context.Context, mirror *node.Mirror) {
	srv := &http.Server{Handler: mirror, ReadHeaderTimeout: 10 * time.Second}
	bo := backoff.New(time.Second, time.Minute)
	for {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", node.MirrorAddress())
		if err == nil {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			err = srv.Serve(l)
			if errors.Is(err, http.ErrServerClosed) {
				return
			}
		}
		d := bo.Next()
		a.log.Error("image mirror not serving; pods that always pull the imported images fail until it does", "address", node.MirrorAddress(), "in", d.Round(time.Second), "err", err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// fileStamp is what tells a file changed without reading it.
type fileStamp struct {
	size  int64
	mtime time.Time
}

// imageWatcher imports the archives of one directory into containerd, and
// reads them only when the directory changed and then held still for a
// poll (an archive still being copied is not imported half-written).
type imageWatcher struct {
	dir       string
	log       *slog.Logger
	importAll func(ctx context.Context) (node.ImportResult, error)

	prev     map[string]fileStamp // the listing of the last pass
	imported map[string]fileStamp // the listing the last import saw
	// warned are the archives already reported as not images, as they
	// were then: each is logged once until it changes.
	warned map[string]fileStamp
}

// scan lists the directory's archives.
func (w *imageWatcher) scan() map[string]fileStamp {
	out := map[string]fileStamp{}
	matches, _ := filepath.Glob(filepath.Join(w.dir, "*.tar"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.Mode().IsRegular() {
			out[m] = fileStamp{size: fi.Size(), mtime: fi.ModTime()}
		}
	}
	return out
}

// pass imports when the listing held still since the last pass and is
// not the one last imported; it reports whether it imported.
func (w *imageWatcher) pass(ctx context.Context) bool {
	cur := w.scan()
	stable := w.prev != nil && maps.Equal(cur, w.prev)
	w.prev = cur
	if !stable || (w.imported != nil && maps.Equal(cur, w.imported)) {
		return false
	}
	res, err := w.importAll(ctx)
	if err != nil {
		w.log.Warn("image archives not imported; trying again when the directory changes", "dir", w.dir, "err", err)
		w.imported = cur
		return false
	}
	w.imported = cur
	if w.warned == nil {
		w.warned = map[string]fileStamp{}
	}
	for _, p := range res.Problems {
		file := problemFile(p, cur)
		if st, ok := w.warned[file]; ok && st == cur[file] {
			continue
		}
		w.warned[file] = cur[file]
		w.log.Warn("skipping a file in the images directory", "file", file, "err", p)
	}
	if len(res.Imported) > 0 {
		w.log.Info("image archives imported into containerd", "namespace", node.ImageNamespace, "archives", res.Imported)
	}
	return true
}

// problemFile names the archive an import problem is about.
func problemFile(err error, files map[string]fileStamp) string {
	msg := err.Error()
	for _, f := range slices.Sorted(maps.Keys(files)) {
		if strings.Contains(msg, f) {
			return f
		}
	}
	return msg
}

// podnetLoop runs the pod network once the node's interface is known.
func (a *Agent) podnetLoop(ctx context.Context) {
	bo := backoff.New(time.Second, time.Minute)
	for {
		ctl, err := a.newPodnet()
		if err == nil {
			a.podnet.Store(ctl)
			if err = ctl.Run(ctx); err == nil || ctx.Err() != nil {
				return
			}
		}
		d := bo.Next()
		a.log.Error("pod network not running; retrying", "in", d.Round(time.Second), "err", err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (a *Agent) newPodnet() (*podnet.Controller, error) {
	iface, err := nodeInterface(a.cfg.NodeIP)
	if err != nil {
		return nil, err
	}
	cs, err := a.clientset()
	if err != nil {
		return nil, err
	}
	var svc []netip.Prefix
	if a.cfg.ServiceCIDR.IsValid() {
		svc = []netip.Prefix{a.cfg.ServiceCIDR}
	}
	return podnet.New(podnet.Config{
		NodeName: a.cfg.NodeName, Interface: iface, ClusterPodCIDRs: []netip.Prefix{a.cfg.PodCIDR}, ServiceCIDRs: svc,
		Client: cs, Root: a.cfg.Root, Log: a.o.Log,
	})
}

// nodeInterface is the interface holding the node's InternalIP: nodeIP,
// or the default route's address.
func nodeInterface(nodeIP netip.Addr) (string, error) {
	ifaces, ips, err := netFacts(nodeIP)
	if err != nil {
		return "", err
	}
	if name, ok := interfaceHolding(ifaces, ips[0]); ok {
		return name, nil
	}
	return "", fmt.Errorf("no interface holds the node IP %s", ips[0])
}

func interfaceHolding(ifaces []Interface, ip netip.Addr) (string, bool) {
	for _, it := range ifaces {
		for _, s := range it.Addresses {
			if p, err := netip.ParsePrefix(s); err == nil && p.Addr() == ip {
				return it.Name, true
			}
		}
	}
	return "", false
}

// clientset is a client-go clientset on the agent's own connection: the
// same TLS (its current certificate at every handshake, so a renewal is
// picked up by the next connection) and the same choice of apiserver,
// failing over with it.
func (a *Agent) clientset() (kubernetes.Interface, error) {
	cfg := &rest.Config{
		Host:      a.cli.server(),
		UserAgent: "anvil-agent (" + a.cfg.NodeName + ") podnet",
		Transport: &failoverTransport{cli: a.cli},
		QPS:       5, Burst: 10,
	}
	return kubernetes.NewForConfig(cfg)
}

// failoverTransport sends each request to the apiserver the agent uses
// now; a GET (lists and watches, all podnet sends) that gets no answer is
// tried on the next server, as the agent's own requests are.
type failoverTransport struct {
	cli *apiClient
}

func (t *failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	servers := t.cli.serverList()
	cur := t.cli.cur.Load()
	start := int(cur % int64(len(servers)))
	var err error
	for i := range servers {
		idx := (start + i) % len(servers)
		r := req.Clone(req.Context())
		if err = pointAt(r, servers[idx]); err != nil {
			return nil, err
		}
		var resp *http.Response
		resp, err = t.cli.tr.RoundTrip(r)
		if err == nil {
			if i > 0 {
				t.cli.failover(servers, cur, start, idx)
			}
			return resp, nil
		}
		if req.Method != http.MethodGet || req.Context().Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

// pointAt sends r to server (https://host:port).
func pointAt(r *http.Request, server string) error {
	u, err := r.URL.Parse(server)
	if err != nil {
		return err
	}
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, ""
	return nil
}

// PodNetworkStatus is the pod network's state; ok is false when the
// agent runs none.
func (a *Agent) PodNetworkStatus() (podnet.Status, bool) {
	ctl := a.podnet.Load()
	if ctl == nil {
		return podnet.Status{}, false
	}
	return ctl.Status(), true
}
