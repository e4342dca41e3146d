package cis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/cis"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/podnet"
)

// fakeHost is a machine held in memory: its processes, and its files by
// path with their modes, owners and contents. It is what Gather is tested
// over; ShellHost, which reads a real machine, has tests of its own.
type fakeHost struct {
	procs []cis.Process
	files map[string]cis.File
	data  map[string][]byte
	// fail makes every method fail, as a lost connection would.
	fail error
}

func newFakeHost() *fakeHost {
	return &fakeHost{files: map[string]cis.File{}, data: map[string][]byte{}}
}

func (h *fakeHost) Processes(context.Context) ([]cis.Process, error) {
	if h.fail != nil {
		return nil, h.fail
	}
	return slices.Clone(h.procs), nil
}

func (h *fakeHost) Stat(_ context.Context, paths ...string) ([]cis.File, error) {
	if h.fail != nil {
		return nil, h.fail
	}
	var out []cis.File
	for _, p := range paths {
		if f, ok := h.files[p]; ok {
			out = append(out, f)
		}
	}
	return out, nil
}

func (h *fakeHost) Tree(_ context.Context, dir string) ([]cis.File, error) {
	if h.fail != nil {
		return nil, h.fail
	}
	var out []cis.File
	for p, f := range h.files {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (h *fakeHost) ReadFile(_ context.Context, p string) ([]byte, error) {
	if h.fail != nil {
		return nil, h.fail
	}
	b, ok := h.data[p]
	if !ok {
		return nil, fmt.Errorf("read %s: %w", p, fs.ErrNotExist)
	}
	return b, nil
}

// put adds a file owned by root, with data.
func (h *fakeHost) put(p string, mode fs.FileMode, data []byte) {
	h.files[p] = cis.File{Path: p, Mode: mode, Owner: "root", Group: "root", Size: int64(len(data))}
	if !mode.IsDir() {
		h.data[p] = data
	}
}

// dir adds a directory owned by root.
func (h *fakeHost) dir(p string, perm fs.FileMode) { h.put(p, fs.ModeDir|perm, nil) }

// chmod changes a file's permission bits.
func (h *fakeHost) chmod(t *testing.T, p string, perm fs.FileMode) {
	t.Helper()
	f, ok := h.files[p]
	if !ok {
		t.Fatalf("the fake host has no %s", p)
	}
	f.Mode = f.Mode.Type() | perm
	h.files[p] = f
}

// chown changes a file's owner and group.
func (h *fakeHost) chown(t *testing.T, p, owner, group string) {
	t.Helper()
	f, ok := h.files[p]
	if !ok {
		t.Fatalf("the fake host has no %s", p)
	}
	f.Owner, f.Group = owner, group
	h.files[p] = f
}

// proc returns the component whose program is prog (its base name, or
// "anvil etcd"), to change its command line.
func (h *fakeHost) proc(t *testing.T, prog string) *cis.Process {
	t.Helper()
	for i := range h.procs {
		p := &h.procs[i]
		if p.PID < firstComponentPID {
			continue
		}
		name := path.Base(p.Args[0])
		if name == "anvil" && len(p.Args) > 1 {
			name += " " + p.Args[1]
		}
		if name == prog {
			return p
		}
	}
	t.Fatalf("the fake host runs no %s", prog)
	return nil
}

// replaceFile rewrites a file's content, keeping its mode and owner.
func (h *fakeHost) replaceFile(t *testing.T, p string, edit func(string) string) {
	t.Helper()
	b, ok := h.data[p]
	if !ok {
		t.Fatalf("the fake host has no %s", p)
	}
	s := edit(string(b))
	if s == string(b) {
		t.Fatalf("the edit of %s changed nothing:\n%s", p, b)
	}
	h.data[p] = []byte(s)
	f := h.files[p]
	f.Size = int64(len(s))
	h.files[p] = f
}

// Paths the fixture and the tests share.
const (
	// firstComponentPID is etcd's; the other components' follow, the
	// processes that are none of them come before.
	firstComponentPID = 100

	clusterCA = hostfs.PKIDir + "/ca.crt"
	etcdCA    = hostfs.PKIDir + "/etcd/ca.crt"
	adminConf = hostfs.KubernetesDir + "/admin.conf"
)

// renderedMaster is lab-m1 of mastertest's cluster as anvil makes it in
// layout: the files anvil renders (units, manifests or process specs, and
// the control plane's configuration) with their modes; every file the
// components declare they read (certificates, keys, kubeconfigs) as pki
// writes them, 0600 in 0700 directories; the two CAs real certificates;
// the admin kubeconfigs; podnet's CNI config list; and the components
// running with the command lines anvil declares, as root, beside a few
// processes that are none of them.
func renderedMaster(t *testing.T, layout v1alpha1.Layout) *fakeHost {
	t.Helper()
	c := mastertest.Cluster()
	c.ControlPlane.Layout = layout
	p, err := master.NewPlan(c, "lab-m1", "")
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHost()
	cs, err := master.Components(p)
	if err != nil {
		t.Fatal(err)
	}
	h.dir(hostfs.PKIDir, 0o700)
	for _, comp := range cs {
		for _, f := range comp.Files {
			perm := f.Mode.Perm()
			switch {
			case f.Dir:
				h.dir(f.Path, perm)
			default:
				h.put(f.Path, perm, []byte("declared by "+comp.Name))
			}
		}
	}
	// The components declare the files in the PKI's subdirectories,
	// pki makes the directories.
	for p := range h.files {
		if d := path.Dir(p); strings.HasPrefix(d, hostfs.PKIDir+"/") {
			h.dir(d, 0o700)
		}
	}
	tree, err := master.RenderNode(p, layout, func(string) ([]byte, error) { return nil, fs.ErrNotExist })
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tree {
		h.put(f.Path, f.Mode, f.Data)
	}
	for _, ca := range []string{clusterCA, etcdCA} {
		if _, ok := h.files[ca]; !ok {
			t.Fatalf("no component declares %s: the fixture is out of date", ca)
		}
		h.put(ca, 0o600, selfSignedCA(t, path.Base(path.Dir(ca))))
	}
	for _, kc := range []string{adminConf, hostfs.KubernetesDir + "/super-admin.conf"} {
		h.put(kc, 0o600, []byte("kubeconfig"))
	}
	h.dir(path.Dir(podnet.CNIConfigPath), 0o755)
	h.put(podnet.CNIConfigPath, 0o600, []byte(`{"cniVersion":"1.0.0"}`))

	// The processes: PID 1 and sshd, a short-lived `anvil etcd members`
	// (not the member), then each component as its layout runs it.
	h.procs = []cis.Process{
		{PID: 1, Args: []string{"/sbin/init"}},
		{PID: 50, Args: []string{"sshd: root@notty"}},
		{PID: 60, Args: []string{"/usr/local/bin/anvil", "etcd", "members", "--root", "/"}},
	}
	for i, comp := range cs {
		args := comp.Command()
		if layout == v1alpha1.LayoutStaticPod {
			args[0] = comp.Image.Binary
		}
		pid := firstComponentPID + i
		h.procs = append(h.procs, cis.Process{PID: pid, Args: args})
		h.dir("/proc/"+strconv.Itoa(pid), 0o555)
	}
	return h
}

// selfSignedCA is a CA certificate of a key of its own, PEM-encoded.
func selfSignedCA(t *testing.T, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// gatherRun gathers h's facts and runs the benchmark over them.
func gatherRun(t *testing.T, h cis.Host) (*cis.Facts, cis.Report) {
	t.Helper()
	f, err := cis.Gather(context.Background(), h, cis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := cis.Run(f)
	r.Host, r.Layout = "lab-m1", f.Layout
	return f, r
}

// result is item number's outcome in r.
func result(t *testing.T, r cis.Report, number string) cis.ItemResult {
	t.Helper()
	for _, it := range r.Results {
		if it.Number == number {
			return it
		}
	}
	t.Fatalf("the report has no item %s", number)
	return cis.ItemResult{}
}
