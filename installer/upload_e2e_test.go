package installer

import (
	"context"
	"path"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
)

// uploadOnly runs apply's phases up to and including upload.
func uploadOnly(t testing.TB, o Options, bin string, kube []string, cache string) (*ApplyResult, error) {
	t.Helper()
	r, err := newRun(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	b, err := loadBundle(bin, kube, r.cluster.KubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := newCompressor(cache)
	if err != nil {
		t.Fatal(err)
	}
	b.addArchives(r.cluster.Images, o.ClusterFile)
	r.apply = &applyState{o: ApplyOptions{Options: o}, bundle: b, compressor: comp}
	r.factsReq = b.factsRequest()
	phases := applyPhases()
	for i, p := range phases {
		if p.Name == "upload" {
			phases = phases[:i+1]
			break
		}
	}
	err = r.do(context.Background(), "apply", phases)
	o.Progress.Close()
	return &ApplyResult{Plan: r.planned, BytesUploaded: r.apply.uploaded.Load()}, err
}

// uploadE2E: binaries land verified and linked, a second upload sends
// nothing, and what decides is the content: a new mtime alone uploads
// nothing, a changed byte with size and mtime kept uploads that file. It
// works on the first master alone; the apply after it finds the binaries
// there and uploads to the other hosts.
func uploadE2E(t *testing.T, e *e2e) {
	l, bin, kube := e.l, e.bin, e.kube
	m1 := l.Masters()[0].Name
	var others []string
	for _, h := range l.Hosts {
		if h.Name != m1 {
			others = append(others, h.Name)
		}
	}
	file := rewrite(t, l, withoutHosts(others...))
	cache := e.cache
	b, err := loadBundle(bin, kube, v1alpha1.DefaultKubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	dir := binDir(b.version)
	// m1 is a master that runs pods: it gets every file of the build.
	p, err := b.forHost(v1alpha1.Host{Name: m1, Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeContainerd})
	if err != nil {
		t.Fatal(err)
	}
	upload := func(t *testing.T) *ApplyResult {
		t.Helper()
		o, _ := options(t, file)
		res, err := uploadOnly(t, o, bin, kube, cache)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	uploaded := func(res *ApplyResult) []string {
		var out []string
		for _, s := range res.Plan {
			if s.Change {
				out = append(out, s.Do)
			}
		}
		return out
	}

	t.Run("first upload", func(t *testing.T) {
		res := upload(t)
		if res.BytesUploaded == 0 {
			t.Fatal("nothing uploaded")
		}
		var raw int64
		for _, f := range p.files {
			raw += f.Size
		}
		t.Logf("uploaded %s for %s", human.Bytes(res.BytesUploaded), human.Bytes(raw))
		sums := onHost(t, l, m1, "cd "+dir+" && find . -type f ! -name '.*' -exec sha256sum {} +")
		for _, f := range p.files {
			if !strings.Contains(sums, f.SHA256+"  ./"+f.Name) {
				t.Errorf("%s on the host is not %s:\n%s", f.Name, f.SHA256, sums)
			}
		}
		for _, ln := range p.links {
			if target := onHost(t, l, m1, "readlink "+ln.path()); target != ln.target(b.version) {
				t.Errorf("link %s -> %q, want %s", ln.path(), target, ln.target(b.version))
			}
		}
		if m := onHost(t, l, m1, "cat "+path.Join(dir, images.ManifestFile)); m+"\n" != string(p.manifest) {
			t.Errorf("manifest on the host:\n%s\nwant:\n%s", m, p.manifest)
		}
		// What anvil init checks before it runs anything: the installed
		// tree verifies against its manifest.
		if out := onHost(t, l, m1, "/usr/local/bin/anvil images list --dir "+hostfs.BinDir); strings.Contains(out, "mismatch") || strings.Contains(out, "missing") {
			t.Errorf("anvil images list on the host:\n%s", out)
		}
		if left := onHost(t, l, m1, "ls -A "+dir+" | grep '^\\.' ; true"); left != "" {
			t.Errorf("temporary files left: %s", left)
		}
	})

	t.Run("second upload sends nothing", func(t *testing.T) {
		res := upload(t)
		if res.BytesUploaded != 0 || len(uploaded(res)) != 0 {
			t.Errorf("uploaded %d bytes: %v", res.BytesUploaded, uploaded(res))
		}
	})

	t.Run("a new mtime alone changes nothing", func(t *testing.T) {
		onHost(t, l, m1, "touch -d '2001-01-01' "+dir+"/kube-scheduler "+dir+"/kubectl")
		res := upload(t)
		if res.BytesUploaded != 0 {
			t.Errorf("uploaded %d bytes for a touch: %v", res.BytesUploaded, uploaded(res))
		}
	})

	t.Run("a changed byte with size and mtime kept is uploaded", func(t *testing.T) {
		f := dir + "/kube-scheduler"
		onHost(t, l, m1, "touch -r "+f+" /tmp/ref && printf 'X' | dd of="+f+" bs=1 seek=4096 conv=notrunc status=none && touch -r /tmp/ref "+f+" && rm /tmp/ref")
		res := upload(t)
		got := uploaded(res)
		if len(got) != 1 || !strings.Contains(got[0], "kube-scheduler") || strings.Contains(got[0], "kube-apiserver") {
			t.Errorf("uploaded %v, want kube-scheduler alone", got)
		}
		if sum := onHost(t, l, m1, "sha256sum "+f+" | cut -c1-64"); sum != fileSHA(p, "kube-scheduler") {
			t.Errorf("kube-scheduler after the upload: %s", sum)
		}
	})
}

func fileSHA(p *hostPayload, name string) string {
	for _, f := range p.files {
		if f.Name == name {
			return f.SHA256
		}
	}
	return ""
}
