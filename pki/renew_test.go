package pki

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRenew(t *testing.T) {
	tests := []struct {
		names []string
		want  []string // result names, in order
	}{
		{[]string{"apiserver"}, []string{"apiserver"}},
		{[]string{"admin.conf", "etcd-peer"}, []string{"etcd-peer", "admin.conf"}},
		{[]string{RenewAll}, slices.Delete(RenewableNames(), 0, 1)},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.names, ","), func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			h.ensure(t, cfg, h.opts())
			before := snapshot(t, h.root)

			res, err := Renew(h.pki, cfg, tt.names, h.opts())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res {
				got = append(got, r.Name)
				if r.Action != Renewed {
					t.Errorf("%s: %s", r.Name, r.Action)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("renewed %v, want %v", got, tt.want)
			}

			// Exactly the renewed files changed: a certificate and a new key
			// per leaf, the file per kubeconfig; never a CA.
			var wantChanged []string
			for _, r := range res {
				wantChanged = append(wantChanged, r.Path)
				if strings.HasSuffix(r.Path, ".crt") {
					wantChanged = append(wantChanged, strings.TrimSuffix(r.Path, ".crt")+".key")
				}
			}
			slices.Sort(wantChanged)
			after := snapshot(t, h.root)
			gotChanged := slices.DeleteFunc(changed(before, after), func(p string) bool { return after[p].mode.IsDir() })
			if !slices.Equal(gotChanged, wantChanged) {
				t.Errorf("changed %v\nwant %v", gotChanged, wantChanged)
			}
			// And the next generate keeps all of it.
			for _, r := range h.ensure(t, cfg, h.opts()) {
				if r.Action != Kept {
					t.Errorf("generate after renew: %s %s", r.Name, r.Action)
				}
			}
		})
	}
}

func TestRenewRefuses(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	tests := []struct {
		name  string
		names []string
		opts  Options
		want  string
	}{
		{"nothing", nil, h.opts(), "nothing to renew"},
		{"unknown", []string{"apiserver", "kubelet"}, h.opts(), `unknown certificate "kubelet": use one of all, apiserver,`},
		{"a CA", []string{"etcd-ca"}, h.opts(), `"etcd-ca" is a CA: anvil never renews CAs`},
		{"kubeconfig without its directory", []string{"admin.conf"}, Options{}, "no kubeconfig directory"},
	}
	before := snapshot(t, h.root)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Renew(h.pki, cfg, tt.names, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			requireUnchanged(t, before, snapshot(t, h.root))
		})
	}
}

func TestRenewExternalCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	os.Remove(h.file("etcd/ca.key"))
	if _, err := Renew(h.pki, cfg, []string{"apiserver"}, h.opts()); err != nil {
		t.Errorf("renewing a leaf of a CA whose key is here: %v", err)
	}
	_, err := Renew(h.pki, cfg, []string{"etcd-server"}, h.opts())
	if err == nil || !strings.Contains(err.Error(), "externally managed") {
		t.Errorf("err = %v", err)
	}
}

func TestRenewForeignLeaf(t *testing.T) {
	h, other := newTestHost(t), newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	other.ensure(t, cfg, other.opts())
	copyFile(t, filepath.Join(other.kube, "scheduler.conf"), filepath.Join(h.kube, "scheduler.conf"))
	_, err := Renew(h.pki, cfg, []string{"scheduler.conf"}, h.opts())
	if !errors.Is(err, ErrNeedsForce) {
		t.Fatalf("err = %v", err)
	}
	opts := h.opts()
	opts.Force = true
	if _, err := Renew(h.pki, cfg, []string{"scheduler.conf"}, opts); err != nil {
		t.Fatal(err)
	}
}
