package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// execCluster runs anvil with args and returns stdout, stderr and the exit
// code main would use.
func execCluster(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(stdin), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		errOut.WriteString(err.Error())
		return out.String(), errOut.String(), exitCode(err)
	}
	return out.String(), errOut.String(), 0
}

func TestClusterNeedsAFile(t *testing.T) {
	for _, sub := range []string{"apply", "reset", "status", "kubeconfig"} {
		if _, errOut, code := execCluster(t, "", "cluster", sub); code == 0 || !strings.Contains(errOut, `"file" not set`) {
			t.Errorf("cluster %s without -f: exit %d, %q", sub, code, errOut)
		}
	}
}

// An unreachable host fails apply with its name and phase, and the exit
// status is not 0.
func TestClusterApplyNamesHostAndPhase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now: connection refused
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	key := filepath.Join(dir, "id")
	for _, f := range []string{kh, key} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kube := filepath.Join(dir, "kube", "v1.37.2")
	if err := os.MkdirAll(kube, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kube, "manifest.json"), []byte(`{"kubernetesVersion":"v1.37.2","files":[{"name":"kubectl","sha256":"00","size":1}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	file := writeClusterFile(t, `apiVersion: anvil.dev/v1alpha1
kind: Cluster
name: t
ssh:
  user: root
  port: `+strconv.Itoa(port)+`
  identityFile: `+key+`
  knownHosts: `+kh+`
hosts:
  - name: m1
    address: 127.0.0.1
    role: master
    runtime: none
`)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := execCluster(t, "", "cluster", "apply", "-f", file, "--dry-run", "--anvil-binary", self, "--kube-dir", filepath.Join(dir, "kube"), "--connect-timeout", "2s")
	if code != 1 || !strings.Contains(errOut, "m1: connect:") {
		t.Errorf("exit %d, want 1 naming m1 and connect:\n%s", code, errOut)
	}
}

func TestClusterHelperHash(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := execCluster(t, "", "cluster", "helper", "hash", p)
	sum := sha256.Sum256([]byte("hello"))
	if code != 0 || !strings.Contains(out, hex.EncodeToString(sum[:])+"  "+p+"\n") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestClusterResetAsks(t *testing.T) {
	file := writeClusterFile(t, "apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: t\nhosts:\n  - {name: m1, address: 10.0.0.1, role: master}\n")
	_, errOut, code := execCluster(t, "no\n", "cluster", "reset", "-f", file)
	if code != 1 || !strings.Contains(errOut, "reset cancelled; nothing was changed") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// Every cluster command shows how it is used.
func TestClusterHelpHasExamples(t *testing.T) {
	for _, sub := range []string{"apply", "reset", "status", "kubeconfig"} {
		out, _, code := execCluster(t, "", "cluster", sub, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "anvil cluster "+sub+" -f cluster.yaml") {
			t.Errorf("anvil cluster %s --help (exit %d):\n%s", sub, code, out)
		}
	}
	out, _, _ := execCluster(t, "", "cluster", "apply", "--help")
	for _, want := range []string{"--dry-run", "--accept-new-host-keys", "--concurrency", "connect", "join-masters", "credentials"} {
		if !strings.Contains(out, want) {
			t.Errorf("anvil cluster apply --help does not mention %s", want)
		}
	}
}
