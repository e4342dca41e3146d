package installer

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/lab/labtest"
)

// supportBundleE2E stops a worker for good (the plug pulled), takes the
// cluster's support bundle, and checks that every other host has its
// section, the stopped one is named in unreachable.txt, and no secret of
// the cluster (the keys and kubeconfig credentials on every host, the
// encryption config's secrets, every token and certificate key the applies
// handled) appears in any file of it. The worker is started again after.
func supportBundleE2E(t *testing.T, l *labtest.Lab, clusterFile, stopped string, handled []string) {
	secrets := append(clusterSecrets(t, l, stopped), handled...)
	l.Stop(t, stopped, true)
	t.Cleanup(func() { l.Start(t, stopped) })
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	o, _ := options(t, clusterFile)
	o.ConnectTimeout = 3 * time.Second
	res, err := SupportBundle(context.Background(), SupportBundleOptions{Options: o, Output: out, Since: time.Hour})
	o.Progress.Close()
	if err != nil {
		t.Fatal(err)
	}
	files := untar(t, out)
	for _, h := range l.Hosts {
		if h.Name == stopped {
			continue
		}
		for _, want := range []string{"versions.txt", "units.txt", "kernel/cmdline", "journal/anvil-agent.service.log", "journal/kubelet.service.log"} {
			if _, ok := files[h.Name+"/"+want]; !ok {
				t.Errorf("no %s/%s in the bundle", h.Name, want)
			}
		}
		// anvil status and etcd are a master's.
		for _, want := range []string{"status.json", "etcd.json"} {
			if _, ok := files[h.Name+"/"+want]; h.Role == "master" && !ok {
				t.Errorf("no %s for master %s", want, h.Name)
			}
		}
	}
	if _, ok := files[stopped+"/versions.txt"]; ok {
		t.Errorf("the stopped %s has a section", stopped)
	}
	if u := files["unreachable.txt"]; !strings.HasPrefix(u, stopped+" ") || strings.Count(u, "\n") != 1 {
		t.Errorf("unreachable.txt = %q, want %s alone", u, stopped)
	}
	if _, ok := res.Unreachable[stopped]; !ok || len(res.Hosts) != len(l.Hosts)-1 {
		t.Errorf("result: %+v", res)
	}
	for _, want := range []string{"cluster/nodes.yaml", "cluster/events.yaml"} {
		if _, ok := files[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
	if len(secrets) < 10 {
		t.Fatalf("only %d secrets found on the hosts: the search is broken", len(secrets))
	}
	for name, data := range files {
		for _, s := range secrets {
			if strings.Contains(data, s) {
				t.Errorf("%s holds a secret (%.12s…)", name, s)
			}
		}
	}
}

// secretRE finds the secrets in keys, kubeconfigs and the encryption
// config: the lines of a private key's body and credential fields' values.
var secretRE = regexp.MustCompile(`(?m)^\s*(?:client-key-data|client-certificate-data|token|secret):\s*"?([A-Za-z0-9+/=._-]{16,})"?\s*$`)

// clusterSecrets reads every secret on the hosts but skip, as root.
func clusterSecrets(t *testing.T, l *labtest.Lab, skip string) []string {
	var out []string
	for _, h := range l.Hosts {
		if h.Name == skip {
			continue
		}
		all := onHost(t, l, h.Name, `find /etc/kubernetes /etc/anvil /var/lib/anvil/agent -type f \( -name "*.key" -o -name "*.conf" -o -name kubeconfig -o -name "encryption-config.yaml" \) -exec cat {} + 2>/dev/null; true`)
		for _, m := range secretRE.FindAllStringSubmatch(all, -1) {
			out = append(out, m[1])
		}
		inKey := false
		for line := range strings.Lines(all) {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "-----BEGIN") && strings.HasSuffix(line, "PRIVATE KEY-----"):
				inKey = true
			case strings.HasPrefix(line, "-----END"):
				inKey = false
			case inKey && len(line) >= 16:
				out = append(out, line)
			}
		}
	}
	return out
}
