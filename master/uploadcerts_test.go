package master

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"anvil.dev/anvil/internal/hostfs"
)

func writeShared(t *testing.T, root hostfs.Root, tag string) {
	t.Helper()
	for _, f := range sharedFiles() {
		p := root.Path(f)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(tag+" "+f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUploadDownloadCerts(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	src := hostfs.Root(t.TempDir())
	writeShared(t, src, "cluster")
	key, err := NewCertificateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := UploadCerts(ctx, cs, src, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := cs.CoreV1().Secrets("kube-system").Get(ctx, CertsSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range s.Data {
		if strings.Contains(string(v), "cluster ") {
			t.Fatalf("%s is stored in the clear", k)
		}
	}
	if len(s.OwnerReferences) != 1 {
		t.Fatalf("the upload has no owning token: %v", s.OwnerReferences)
	}

	parsed, err := ParseCertificateKey(key.Reveal())
	if err != nil || parsed != key {
		t.Fatalf("key round trip: %v", err)
	}
	if strings.Contains(key.String(), key.Reveal()) {
		t.Fatal("String reveals the key")
	}

	dst := hostfs.Root(t.TempDir())
	if err := DownloadCerts(ctx, cs, dst, key, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range sharedFiles() {
		b, err := os.ReadFile(dst.Path(f))
		if err != nil || string(b) != "cluster "+f {
			t.Errorf("%s: %q %v", f, b, err)
		}
		// Keys, certificates (CIS 1.1.20) and sa.pub alike.
		fi, _ := os.Stat(dst.Path(f))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}

	other, _ := NewCertificateKey()
	if err := DownloadCerts(ctx, cs, hostfs.Root(t.TempDir()), other, false); !errors.Is(err, ErrWrongCertificateKey) {
		t.Errorf("wrong key: %v", err)
	}

	// A machine that holds another cluster's CA is refused, unchanged.
	foreign := hostfs.Root(t.TempDir())
	writeShared(t, foreign, "other")
	if err := DownloadCerts(ctx, cs, foreign, key, false); err == nil || !strings.Contains(err.Error(), "different CA") {
		t.Errorf("foreign CA: %v", err)
	}
	if b, _ := os.ReadFile(foreign.Path(sharedFiles()[0])); !strings.HasPrefix(string(b), "other ") {
		t.Error("a refused download changed files")
	}

	// Swapping two ciphertexts is detected (the name is authenticated).
	a, b := secretKey(sharedFiles()[0]), secretKey(sharedFiles()[1])
	s.Data[a], s.Data[b] = s.Data[b], s.Data[a]
	cs.CoreV1().Secrets("kube-system").Update(ctx, s, metav1.UpdateOptions{})
	if err := DownloadCerts(ctx, cs, hostfs.Root(t.TempDir()), key, false); !errors.Is(err, ErrWrongCertificateKey) {
		t.Errorf("swapped ciphertexts accepted: %v", err)
	}

	cs.CoreV1().Secrets("kube-system").Delete(ctx, CertsSecretName, metav1.DeleteOptions{})
	if err := DownloadCerts(ctx, cs, hostfs.Root(t.TempDir()), key, false); !errors.Is(err, ErrCertsExpired) {
		t.Errorf("expired: %v", err)
	}
}
