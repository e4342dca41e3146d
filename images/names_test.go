package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
)

// hostileNames are entry names a crafted bundle or payload might carry to
// reach outside the version directory or into the installer's shell
// scripts on hosts.
var hostileNames = []string{
	"a;rm -rf /", "../x", "$(id)", "`id`", "/etc/passwd", "images/../../etc/cron.d/x",
	"images/../x", "..", ".", "./x", "x/", "images//x", "x y", "x\ny", "x\x00", "'", "\"x\"",
	".hidden", "images/.x", "-rf", "Kubelet", "x\\y", "ü", "manifest.json", "payload.json", "",
}

func TestCheckEntryName(t *testing.T) {
	for _, ok := range []string{"kube-apiserver", "anvil", "containerd-shim-runc-v2", "cni/host-local", "images/pause.tar", "images/kube-apiserver.oci.tar", "a_b.c-1"} {
		if err := checkEntryName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range hostileNames {
		if err := checkEntryName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzEntryName: whatever name is accepted stays beneath the directory it
// is joined to and is one shell word as it is, with nothing to quote.
func FuzzEntryName(f *testing.F) {
	for _, s := range append(hostileNames, "kube-apiserver", "images/pause.tar", "cni/bridge") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkEntryName(name) != nil {
			return
		}
		if path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") {
			t.Errorf("%q accepted but leaves the directory", name)
		}
		if q := sshx.ShellQuote(name); q != name {
			t.Errorf("%q accepted but needs shell quoting (%s)", name, q)
		}
		if strings.HasPrefix(name, "-") || strings.Contains(name, "/-") {
			t.Errorf("%q accepted but a segment reads as an option", name)
		}
	})
}

// TestImportRefusesHostileNames plays whoever hands the operator a
// crafted airgap bundle: one hostile name in its index refuses the whole
// bundle, naming the entry, and nothing is written.
func TestImportRefusesHostileNames(t *testing.T) {
	for _, name := range hostileNames {
		t.Run(strconv.Quote(name), func(t *testing.T) {
			base := t.TempDir()
			bundle := filepath.Join(base, "crafted.tar.zst")
			if err := os.WriteFile(bundle, craftBundle(t, name), 0o644); err != nil {
				t.Fatal(err)
			}
			root := hostfs.Root(filepath.Join(base, "root"))
			_, err := Import(ImportOptions{Bundle: bundle, Root: root})
			var be *BundleError
			if !errors.As(err, &be) || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("import: %v, want a BundleError naming %q", err, name)
			}
			if ents, _ := os.ReadDir(root.Path(hostfs.BinDir)); len(ents) != 0 {
				t.Errorf("a refused bundle left %v", ents)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 1 {
				t.Errorf("beside the bundle now: %v", ents)
			}
		})
	}
}

// craftBundle is a bundle whose index lists kube-apiserver and name, both
// present with the right sums.
func craftBundle(t *testing.T, name string) []byte {
	t.Helper()
	data := []byte("#!/bin/sh\necho pwned\n")
	sum := sha256.Sum256(data)
	idx := BundleIndex{Format: BundleFormat, KubernetesVersion: DefaultVersion, Files: []File{
		{Name: KubeAPIServer, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))},
		{Name: name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))},
	}}
	head, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range []struct {
		name string
		data []byte
	}{{bundleIndexName, head}, {KubeAPIServer, data}, {name, data}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o755, Size: int64(len(e.data))}); err != nil {
			continue // a name tar cannot hold: the index still lists it
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReadPayloadRefusesHostileNames: a build directory whose payload
// lists a hostile name is refused by every reader (bundling, installing,
// the installer), with the entry named.
func TestReadPayloadRefusesHostileNames(t *testing.T) {
	for _, name := range hostileNames {
		t.Run(strconv.Quote(name), func(t *testing.T) {
			dir, m := fakePayloadBuild(t)
			m.Files = append(m.Files, File{Name: name, SHA256: m.Files[0].SHA256, Size: m.Files[0].Size})
			if err := WritePayload(dir, m); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadPayload(dir); err == nil || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Errorf("ReadPayload: %v, want an error naming %q", err, name)
			}
		})
	}
}
