package master_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func noFiles(string) ([]byte, error) { return nil, fs.ErrNotExist }

func configFile(t *testing.T, files []component.OutputFile, path string) []byte {
	t.Helper()
	for _, f := range files {
		if f.Path == path {
			return f.Data
		}
	}
	t.Fatalf("no %s among the config files", path)
	return nil
}

// TestEtcdConfigLoadsWithEmbed reads the rendered etcd.yaml with etcd's own
// loader, as `anvil etcd` does, and checks every value arrived: a misspelled
// key would be ignored by the loader and leave etcd's default.
func TestEtcdConfigLoadsWithEmbed(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	p := testPlan(t, testCluster(), "lab-m1", root)
	p.Etcd = master.EtcdMember{
		InitialCluster: []etcd.Peer{
			{Name: "lab-m2", PeerURL: "https://10.0.0.12:2380"},
			{Name: "lab-m1", PeerURL: "https://10.0.0.11:2380"},
		},
		State: master.EtcdExistingCluster,
	}
	files, err := master.ConfigFiles(p, noFiles)
	if err != nil {
		t.Fatal(err)
	}
	data := configFile(t, files, master.EtcdConfigFile)
	path := filepath.Join(t.TempDir(), "etcd.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := embed.ConfigFromFile(path)
	if err != nil {
		t.Fatalf("embed.ConfigFromFile: %v\n%s", err, data)
	}

	pki := root.Path("/etc/kubernetes/pki/etcd")
	urls := func(us []url.URL) string {
		var s []string
		for _, u := range us {
			s = append(s, u.String())
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"name", cfg.Name, "lab-m1"},
		{"data-dir", cfg.Dir, root.Path("/var/lib/anvil/etcd")},
		// etcd sorts the URLs it reads.
		{"listen-client-urls", urls(cfg.ListenClientUrls), "https://10.0.0.11:2379,https://127.0.0.1:2379"},
		{"advertise-client-urls", urls(cfg.AdvertiseClientUrls), "https://10.0.0.11:2379"},
		{"listen-peer-urls", urls(cfg.ListenPeerUrls), "https://10.0.0.11:2380"},
		{"initial-advertise-peer-urls", urls(cfg.AdvertisePeerUrls), "https://10.0.0.11:2380"},
		{"listen-metrics-urls", urls(cfg.ListenMetricsUrls), "http://127.0.0.1:2381"},
		{"listen-client-http-urls", urls(cfg.ListenClientHttpUrls), "https://127.0.0.1:2382"},
		{"initial-cluster", cfg.InitialCluster, "lab-m2=https://10.0.0.12:2380,lab-m1=https://10.0.0.11:2380"},
		{"initial-cluster-state", cfg.ClusterState, "existing"},
		{"initial-cluster-token", cfg.InitialClusterToken, "anvil-lab"},
		{"client cert-file", cfg.ClientTLSInfo.CertFile, pki + "/server.crt"},
		{"client key-file", cfg.ClientTLSInfo.KeyFile, pki + "/server.key"},
		{"client trusted-ca-file", cfg.ClientTLSInfo.TrustedCAFile, pki + "/ca.crt"},
		{"client-cert-auth", cfg.ClientTLSInfo.ClientCertAuth, true},
		{"client auto-tls", cfg.ClientAutoTLS, false},
		{"peer cert-file", cfg.PeerTLSInfo.CertFile, pki + "/peer.crt"},
		{"peer key-file", cfg.PeerTLSInfo.KeyFile, pki + "/peer.key"},
		{"peer trusted-ca-file", cfg.PeerTLSInfo.TrustedCAFile, pki + "/ca.crt"},
		{"peer-client-cert-auth", cfg.PeerTLSInfo.ClientCertAuth, true},
		{"peer auto-tls", cfg.PeerAutoTLS, false},
		{"tls-min-version", cfg.TlsMinVersion, "TLS1.2"},
		{"cipher-suites", len(cfg.CipherSuites), 6},
		{"quota-backend-bytes", cfg.QuotaBackendBytes, int64(8 << 30)},
		{"snapshot-count", cfg.SnapshotCount, uint64(10000)},
		{"heartbeat-interval", cfg.TickMs, uint(100)},
		{"election-timeout", cfg.ElectionMs, uint(1000)},
		{"logger", cfg.Logger, "zap"},
		{"log-level", cfg.LogLevel, "info"},
		{"log-outputs", strings.Join(cfg.LogOutputs, ","), "stderr"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// Every key must be one etcd knows, including those whose value equals
	// etcd's default (auto-tls: false), which the checks above cannot see.
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	known := etcdConfigKeys()
	for k, v := range doc {
		if !known[k] {
			t.Errorf("etcd does not know the key %q", k)
		}
		if sub, ok := v.(map[string]any); ok {
			for sk := range sub {
				if !securityConfigKeys()[sk] {
					t.Errorf("etcd does not know the key %s.%s", k, sk)
				}
			}
		}
	}
}

// etcdConfigKeys are the keys embed.ConfigFromFile reads: embed.Config's
// json tags, and those of its unexported configJSON
// (go.etcd.io/etcd/server/v3@v3.7.3/embed/config.go).
func etcdConfigKeys() map[string]bool {
	keys := map[string]bool{}
	for _, k := range []string{
		"listen-peer-urls", "listen-client-urls", "listen-client-http-urls",
		"initial-advertise-peer-urls", "advertise-client-urls", "cors", "host-whitelist",
		"client-transport-security", "peer-transport-security", "feature-gates",
	} {
		keys[k] = true
	}
	t := reflect.TypeOf(embed.Config{})
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
			keys[tag] = true
		}
	}
	return keys
}

// securityConfigKeys are etcd's securityConfig keys, used by both
// client-transport-security and peer-transport-security.
func securityConfigKeys() map[string]bool {
	return map[string]bool{
		"cert-file": true, "key-file": true, "client-cert-file": true, "client-key-file": true,
		"client-cert-auth": true, "trusted-ca-file": true, "auto-tls": true,
		"allowed-cn": true, "allowed-hostname": true, "skip-client-san-verification": true,
	}
}

// TestEncryptionKeyIsKept: the first render makes a 32-byte secretbox key;
// every later render keeps the file byte for byte, since a new key would
// make every stored Secret unreadable.
func TestEncryptionKeyIsKept(t *testing.T) {
	p := testPlan(t, testCluster(), "lab-m1", "")
	first, err := master.ConfigFiles(p, noFiles)
	if err != nil {
		t.Fatal(err)
	}
	enc := configFile(t, first, master.EncryptionConfigFile)
	var doc struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Resources  []struct {
			Resources []string               `yaml:"resources"`
			Providers []map[string]yaml.Node `yaml:"providers"`
		} `yaml:"resources"`
	}
	if err := yaml.Unmarshal(enc, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != "apiserver.config.k8s.io/v1" || doc.Kind != "EncryptionConfiguration" ||
		len(doc.Resources) != 1 || !slices.Equal(doc.Resources[0].Resources, []string{"secrets"}) {
		t.Fatalf("unexpected document:\n%s", enc)
	}
	provs := doc.Resources[0].Providers
	if len(provs) != 2 {
		t.Fatalf("providers: %v", provs)
	}
	sb, ok := provs[0]["secretbox"]
	if _, id := provs[1]["identity"]; !ok || !id {
		t.Fatalf("want secretbox then identity:\n%s", enc)
	}
	var keys struct {
		Keys []struct{ Name, Secret string } `yaml:"keys"`
	}
	if err := sb.Decode(&keys); err != nil || len(keys.Keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	raw, err := base64.StdEncoding.DecodeString(keys.Keys[0].Secret)
	if err != nil || len(raw) != 32 {
		t.Fatalf("key is %d bytes (%v), want 32", len(raw), err)
	}
	if f := outputFile(first, master.EncryptionConfigFile); !f.Secret || f.Mode != 0o600 {
		t.Errorf("encryption config: secret %v, mode %v", f.Secret, f.Mode)
	}

	second, err := master.ConfigFiles(p, func(path string) ([]byte, error) {
		if path == master.EncryptionConfigFile {
			return enc, nil
		}
		return nil, fs.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}
	if again := configFile(t, second, master.EncryptionConfigFile); !bytes.Equal(again, enc) {
		t.Errorf("re-render changed the encryption config:\n%s\nthen\n%s", enc, again)
	}
	other, err := master.ConfigFiles(p, noFiles)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(configFile(t, other, master.EncryptionConfigFile), enc) {
		t.Error("two fresh renders made the same key")
	}
}

func TestUnusableEncryptionConfigIsNotReplaced(t *testing.T) {
	p := testPlan(t, testCluster(), "lab-m1", "")
	for _, tc := range []struct{ name, doc string }{
		{"garbage", "{{{"},
		{"wrong kind", "apiVersion: v1\nkind: ConfigMap\n"},
		{"identity first", "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n"},
		{"no secrets", "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [configmaps]\n  providers:\n  - aescbc: {keys: [{name: a, secret: b}]}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := master.ConfigFiles(p, func(string) ([]byte, error) { return []byte(tc.doc), nil })
			if !errors.Is(err, master.ErrEncryptionConfig) {
				t.Fatalf("got %v, want ErrEncryptionConfig", err)
			}
		})
	}
	// An operator's rotation (a new aescbc key first) is kept as it is.
	rotated := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {keys: [{name: k2, secret: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=}]}\n  - secretbox: {keys: [{name: key1, secret: b}]}\n  - identity: {}\n"
	files, err := master.ConfigFiles(p, func(string) ([]byte, error) { return []byte(rotated), nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := string(configFile(t, files, master.EncryptionConfigFile)); got != rotated {
		t.Errorf("rotated config rewritten:\n%s", got)
	}
	if _, err := master.ConfigFiles(p, func(string) ([]byte, error) { return nil, fs.ErrPermission }); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("unreadable config: got %v", err)
	}
}

// TestConfigFilesGolden pins the documents the apiserver, scheduler and
// etcd read; their keys follow k8s.io/apiserver, k8s.io/kube-scheduler and
// etcd v3.7.3 (see configfiles.go). The encryption config holds a random
// key and is checked by TestEncryptionKeyIsKept instead.
func TestConfigFilesGolden(t *testing.T) {
	files, err := master.ConfigFiles(testPlan(t, testCluster(), "lab-m1", ""), noFiles)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == master.EncryptionConfigFile || f.Mode.IsDir() {
			continue
		}
		t.Run(filepath.Base(f.Path), func(t *testing.T) {
			checkGolden(t, filepath.Join("testdata", filepath.Base(f.Path)), f.Data)
		})
	}
}

func outputFile(files []component.OutputFile, path string) component.OutputFile {
	for _, f := range files {
		if f.Path == path {
			return f
		}
	}
	return component.OutputFile{}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update if intended):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}
