package v1alpha1

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// problem is what a test expects of one FieldError: where, and what kind.
// The message is checked for a fragment only, so rewording stays cheap.
type problem struct {
	line   int
	path   string
	reason Reason
	text   string
}

func checkProblems(t *testing.T, got FieldErrors, want []problem) {
	t.Helper()
	matched := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if matched[i] || g.Path != w.path || g.Reason != w.reason || (w.line != 0 && g.Line != w.line) {
				continue
			}
			if !strings.Contains(g.Message, w.text) {
				t.Errorf("%s: message %q does not contain %q", g.Path, g.Message, w.text)
			}
			matched[i], found = true, true
			break
		}
		if !found {
			t.Errorf("missing problem: line %d, %s (%s) %q", w.line, w.path, w.reason, w.text)
		}
	}
	for i, g := range got {
		if !matched[i] {
			t.Errorf("unexpected problem: %v (%s)", g, g.Reason)
		}
	}
}

const header = "apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: t\n"

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []problem
	}{
		{"empty file", "", []problem{{0, "", ReasonSyntax, "holds no cluster"}}},
		{"only comments", "# nothing\n", []problem{{0, "", ReasonSyntax, "holds no cluster"}}},
		{"only a document marker", "---\n", []problem{{0, "", ReasonSyntax, "holds no cluster"}}},
		{"two documents", header + "---\nname: other\n", []problem{{4, "", ReasonSyntax, "second YAML document"}}},
		{"syntax error with line", header + "hosts: [\n", []problem{{4, "", ReasonSyntax, "did not find expected node content"}}},
		{"not a mapping", "- a\n- b\n", []problem{{1, "", ReasonInvalid, "expected a mapping, found a list"}}},
		{"unknown field with suggestion", header + "hosts:\n  - name: a\n    adress: 10.0.0.1\n",
			[]problem{{6, "hosts[0].adress", ReasonUnknownField, `did you mean "address"?`}}},
		{"misspelt case", header + "networking:\n  serviceCidr: 10.96.0.0/12\n",
			[]problem{{5, "networking.serviceCidr", ReasonUnknownField, `did you mean "serviceCIDR"?`}}},
		{"swapped letters", header + "hosts:\n  - nmae: a\n",
			[]problem{{5, "hosts[0].nmae", ReasonUnknownField, `did you mean "name"?`}}},
		{"field one level too high", header + "hosts:\n  - name: a\n    user: ubuntu\n",
			[]problem{{6, "hosts[0].user", ReasonUnknownField, `did you mean "user" under "ssh"?`}}},
		{"unknown field far from any", header + "flavour: vanilla\n",
			[]problem{{4, "flavour", ReasonUnknownField, "known fields here: apiVersion, kind, name"}}},
		{"bad IP", header + "hosts:\n  - address: 10.0.0.300\n",
			[]problem{{5, "hosts[0].address", ReasonInvalid, `"10.0.0.300" is not an IP address`}}},
		{"IP with prefix length", header + "controlPlane:\n  vip: 10.0.0.5/24\n",
			[]problem{{5, "controlPlane.vip", ReasonInvalid, "drop the /24"}}},
		{"bad CIDR", header + "networking:\n  podCIDR: 10.244.0.0/33\n",
			[]problem{{5, "networking.podCIDR", ReasonInvalid, `"10.244.0.0/33" is not a CIDR prefix`}}},
		{"CIDR without length", header + "networking:\n  serviceCIDR: 10.96.0.0\n",
			[]problem{{5, "networking.serviceCIDR", ReasonInvalid, "add the prefix length"}}},
		{"bad duration", header + "etcd:\n  electionTimeout: 2x\n",
			[]problem{{5, "etcd.electionTimeout", ReasonInvalid, `"2x" is not a duration`}}},
		{"duration without unit", header + "pki:\n  caValidity: 365\n",
			[]problem{{5, "pki.caValidity", ReasonInvalid, `"365" is not a duration`}}},
		{"bad size", header + "etcd:\n  quotaBackendBytes: 2GB\n",
			[]problem{{5, "etcd.quotaBackendBytes", ReasonInvalid, `"2GB" is not a size`}}},
		{"port out of range", header + "controlPlane:\n  port: 70000\n",
			[]problem{{5, "controlPlane.port", ReasonInvalid, "70000 is out of range (0 to 65535)"}}},
		{"negative port", header + "ssh:\n  port: -22\n",
			[]problem{{5, "ssh.port", ReasonInvalid, "-22 is out of range"}}},
		{"not a number", header + "backup:\n  retain: seven\n",
			[]problem{{5, "backup.retain", ReasonInvalid, `"seven" is not a whole number`}}},
		{"fraction", header + "etcd:\n  snapshotCount: 1.5\n",
			[]problem{{5, "etcd.snapshotCount", ReasonInvalid, `"1.5" is not a whole number`}}},
		{"bad bool", header + "ssh:\n  sudo: yes\n",
			[]problem{{5, "ssh.sudo", ReasonInvalid, `"yes" is not a boolean`}}},
		{"list where a mapping belongs", header + "controlPlane: [a, b]\n",
			[]problem{{4, "controlPlane", ReasonInvalid, "expected a mapping, found a list"}}},
		{"mapping where a list belongs", header + "hosts:\n  name: a\n",
			[]problem{{4, "hosts", ReasonInvalid, "expected a list, found a mapping"}}},
		{"scalar where a mapping belongs", header + "hosts:\n  - m1\n",
			[]problem{{5, "hosts[0]", ReasonInvalid, `expected a mapping, found "m1"`}}},
		{"mapping where a scalar belongs", header + "hosts:\n  - address: {ip: 10.0.0.1}\n",
			[]problem{{5, "hosts[0].address", ReasonInvalid, "expected an IP address, found a mapping"}}},
		{"duplicate key", header + "hosts:\n  - name: a\n    name: b\n",
			[]problem{{6, "hosts[0].name", ReasonDuplicate, "first set on line 5"}}},
		{"duplicate map key", header + "hosts:\n  - labels:\n      a: x\n      a: y\n",
			[]problem{{7, "hosts[0].labels.a", ReasonDuplicate, "first set on line 6"}}},
		{"duplicate top-level key", header + "name: again\n",
			[]problem{{4, "name", ReasonDuplicate, "first set on line 3"}}},
		{"non-string key", header + "hosts:\n  - ? [a]\n    : b\n",
			[]problem{{5, "hosts[0]", ReasonInvalid, "keys must be strings"}}},
		{"merge of a scalar", header + "ssh:\n  <<: plain\n",
			[]problem{{5, "ssh", ReasonInvalid, "a merge (<<) takes a mapping"}}},
		{"merge of itself", header + "ssh: &s\n  <<: *s\n",
			[]problem{{4, "ssh", ReasonInvalid, "includes the mapping it is part of"}}},
		{"alias cycle bounded by the types", header + "hosts: &h [*h]\n",
			[]problem{{4, "hosts[0]", ReasonInvalid, "expected a mapping, found a list"}}},
		{"map key with dots is quoted", header + "hosts:\n  - labels:\n      example.com/x: [a]\n",
			[]problem{{6, `hosts[0].labels["example.com/x"]`, ReasonInvalid, "expected a string, found a list"}}},
		{"every problem at once", header +
			"controlPlane:\n  port: 70000\n" +
			"hosts:\n  - adress: 10.0.0.1\n  - address: 10.0.0.300\n    address: 10.0.0.3\n" +
			"networking:\n  serviceCIDR: nope\n" +
			"etcd:\n  heartbeatInterval: fast\n",
			[]problem{
				{5, "controlPlane.port", ReasonInvalid, "out of range"},
				{7, "hosts[0].adress", ReasonUnknownField, "address"},
				{8, "hosts[1].address", ReasonInvalid, "not an IP address"},
				{9, "hosts[1].address", ReasonDuplicate, "first set on line 8"},
				{11, "networking.serviceCIDR", ReasonInvalid, "not a CIDR prefix"},
				{13, "etcd.heartbeatInterval", ReasonInvalid, "not a duration"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode("cluster.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Decode returned a cluster with its errors")
			}
			var errs FieldErrors
			if !errors.As(err, &errs) {
				t.Fatalf("error %v is not FieldErrors", err)
			}
			for _, e := range errs {
				if e.File != "cluster.yaml" {
					t.Errorf("%v: file %q, want cluster.yaml", e, e.File)
				}
			}
			checkProblems(t, errs, tt.want)
		})
	}
}

func TestDecodeErrorFormat(t *testing.T) {
	_, err := Decode("cluster.yaml", []byte(header+"hosts:\n  - name: a\n    adress: 10.0.0.1\n  - address: 10.0.0.300\n"))
	want := "cluster.yaml:6: hosts[0].adress: unknown field (did you mean \"address\"?)\n" +
		"cluster.yaml:7: hosts[1].address: \"10.0.0.300\" is not an IP address"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "hosts[0].adress" {
		t.Errorf("errors.As(*FieldError) = %v", fe)
	}
}

func TestDecodeUndecodableFile(t *testing.T) {
	_, _, err := Load("testdata/undecodable.yaml")
	checkProblems(t, AsFieldErrors(err), []problem{
		{6, "controlPlane.port", ReasonInvalid, "70000 is out of range"},
		{9, "hosts[0].adress", ReasonUnknownField, `did you mean "address"?`},
		{14, "hosts[1].user", ReasonUnknownField, `"user" under "ssh"`},
		{16, "hosts[2].address", ReasonInvalid, `"10.0.0.300" is not an IP address`},
		{18, "hosts[2].role", ReasonDuplicate, "first set on line 17"},
		{20, "networking.serviceCIDR", ReasonInvalid, "add the prefix length"},
		{21, "networking.podCIDR", ReasonInvalid, "expected a CIDR prefix, found a list"},
		{23, "etcd.electionTimeout", ReasonInvalid, "not a duration"},
		{24, "etcd.quotaBackendBytes", ReasonInvalid, "not a size"},
		{26, "ssh.sudo", ReasonInvalid, "not a boolean"},
	})
}

func TestDecodeValues(t *testing.T) {
	c, err := Decode("anchors.yaml", mustRead(t, "testdata/anchors.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Hosts); got != 5 {
		t.Fatalf("%d hosts, want 5", got)
	}
	m2, _ := c.Host("m2")
	if m2.Role != RoleMaster || m2.Address != netip.MustParseAddr("10.1.0.12") || m2.Labels["topology.kubernetes.io/zone"] != "a" {
		t.Errorf("m2 did not merge its anchor: %+v", m2)
	}
	m3, _ := c.Host("m3")
	if m3.Labels["topology.kubernetes.io/zone"] != "b" {
		t.Errorf("m3's own label lost to the merge: %v", m3.Labels)
	}
	w2, _ := c.Host("w2")
	if w2.SSH.Port != 2222 || w2.SSH.Sudo == nil || *w2.SSH.Sudo || w2.SSH.Bastion == nil || w2.SSH.Bastion.Address != "jump.example.com" {
		t.Errorf("w2's aliased ssh block: %+v", w2.SSH)
	}
	if c.Networking.ServiceCIDR != netip.MustParsePrefix("fd00:96::/108") {
		t.Errorf("serviceCIDR %v", c.Networking.ServiceCIDR)
	}
	if c.Etcd.QuotaBackendBytes != 4<<30 || c.Etcd.ElectionTimeout.Duration != 2500*time.Millisecond {
		t.Errorf("etcd %+v", c.Etcd)
	}
	if c.PKI.CAValidity != Days(3650) || c.PKI.CertValidity != Days(90) {
		t.Errorf("pki %+v", c.PKI)
	}
	if got := c.Components.APIServer.ExtraArgs["audit-log-maxage"]; got != "30" {
		t.Errorf("a number in extraArgs decoded as %q, want its text", got)
	}
	c.Default()
	if warnings, err := Validate(c); err != nil || warnings != nil {
		t.Errorf("Validate: warnings %v, err %v", warnings, err)
	}
}

func TestLoad(t *testing.T) {
	for _, file := range []string{"testdata/minimal.yaml", "testdata/anchors.yaml"} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, warnings, err := Load(file)
			if err != nil || len(warnings) > 0 {
				t.Fatalf("Load: warnings %v, err %v", warnings, err)
			}
			if c.KubernetesVersion == "" || c.ControlPlane.Endpoint == "" {
				t.Errorf("Load did not default: %+v", c)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, _, err := Load("testdata/nope.yaml")
		if !errors.Is(err, fs.ErrNotExist) || AsFieldErrors(err) != nil {
			t.Errorf("err = %v, want a not-exist I/O error", err)
		}
	})
}

// TestLoadGolden pins the whole report for files with many mistakes, so
// that a change of wording or order is a visible diff. Run with -update to
// accept a change.
func TestLoadGolden(t *testing.T) {
	for _, name := range []string{"invalid", "mixed"} {
		t.Run(name, func(t *testing.T) {
			file := "testdata/" + name + ".yaml"
			_, warnings, err := Load(file)
			if err == nil {
				t.Fatalf("Load accepted %s", file)
			}
			var b strings.Builder
			for _, w := range warnings {
				b.WriteString("warning: " + w.Error() + "\n")
			}
			b.WriteString(err.Error() + "\n")
			golden := "testdata/" + name + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := string(mustRead(t, golden)); b.String() != want {
				t.Errorf("report differs from %s (run go test ./api/v1alpha1 -run TestLoadGolden -update to accept):\n%s", golden, b.String())
			}
		})
	}
}

// fullCluster sets every field, so that the round trip covers them all;
// TestFullClusterIsFull keeps it that way when fields are added.
func fullCluster() *Cluster {
	yes, no := true, false
	return &Cluster{
		APIVersion:        APIVersion,
		Kind:              KindCluster,
		Name:              "full",
		KubernetesVersion: "v1.37.2",
		ControlPlane: ControlPlane{
			Endpoint: "k8s.example.com", Port: 8443,
			VIP: netip.MustParseAddr("10.0.0.10"), Layout: LayoutStaticPod,
		},
		SSH: SSH{
			User: "ubuntu", Port: 2222, IdentityFile: "~/.ssh/id", KnownHosts: "/etc/ssh/known",
			Bastion: &Bastion{Address: "jump", Port: 22, User: "j", IdentityFile: "~/.ssh/j"},
			Sudo:    &yes,
		},
		Hosts: []Host{{
			Name: "m1", Address: netip.MustParseAddr("10.0.0.11"), InternalAddress: netip.MustParseAddr("fd00::11"),
			Role:    RoleMaster,
			SSH:     SSH{User: "root", Port: 22, IdentityFile: "k", KnownHosts: "kh", Bastion: &Bastion{Address: "10.9.9.9", Port: 2200, User: "b", IdentityFile: "bk"}, Sudo: &no},
			Labels:  map[string]string{"example.com/role": "db", "plain": ""},
			Taints:  []Taint{{Key: "k", Value: "v", Effect: NoExecute}},
			Runtime: RuntimeNone,
		}},
		Networking: Networking{
			ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"), PodCIDR: netip.MustParsePrefix("10.244.0.0/16"),
			ClusterDomain: "example.internal",
			Network:       PodNetworkNone,
		},
		Etcd: Etcd{QuotaBackendBytes: 3 << 30, SnapshotCount: 5000,
			HeartbeatInterval: Duration{150 * time.Millisecond}, ElectionTimeout: Duration{90 * time.Second}},
		PKI: PKI{KeyAlgorithm: RSA2048, CAValidity: Days(7300), CertValidity: Duration{8759 * time.Hour},
			CertSANs: []string{"a.example.com", "10.0.0.100"}},
		Backup: Backup{Schedule: "hourly", Retain: 3, Dir: "/srv/backups",
			Recipients: []string{"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}, AllowUnencrypted: true,
			SigningPublicKey: "ed25519:iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="},
		Components: Components{
			APIServer: Component{ExtraArgs: map[string]string{"v": "2", "audit-log-path": "-", "profiling": "true"},
				AllowInsecure: []string{"profiling"}},
			ControllerManager: Component{ExtraArgs: map[string]string{"node-cidr-mask-size": "24", "bind-address": "0.0.0.0"},
				AllowInsecure: []string{"bind-address"}},
			Scheduler: Component{ExtraArgs: map[string]string{"profiling": "false", "tls-min-version": "VersionTLS11"},
				AllowInsecure: []string{"tls-min-version"}},
		},
		Images: []string{"/srv/images/app.tar"},
	}
}

func TestFullClusterIsFull(t *testing.T) {
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		if v.IsZero() {
			t.Errorf("fullCluster leaves %s unset; set it so the round trip covers it", path)
			return
		}
		switch v.Kind() {
		case reflect.Pointer:
			if v.Elem().Kind() == reflect.Struct {
				walk(path, v.Elem())
			}
		case reflect.Slice:
			walk(path+"[0]", v.Index(0))
		case reflect.Struct:
			if _, ok := v.Addr().Interface().(interface{ UnmarshalText([]byte) error }); ok {
				return
			}
			for i := range v.NumField() {
				if f := v.Type().Field(i); f.IsExported() {
					walk(fieldPath(path, f.Name), v.Field(i))
				}
			}
		}
	}
	walk("", reflect.ValueOf(fullCluster()).Elem())
}

func TestRoundTrip(t *testing.T) {
	example, err := Decode("example", []byte(ExampleClusterFile))
	if err != nil {
		t.Fatal(err)
	}
	example.Default()
	for name, in := range map[string]*Cluster{"full": fullCluster(), "defaulted example": example} {
		t.Run(name, func(t *testing.T) {
			data, err := yaml.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Decode("roundtrip.yaml", data)
			if err != nil {
				t.Fatalf("Decode of marshalled cluster: %v\n%s", err, data)
			}
			out.src, in.src = nil, nil
			if !reflect.DeepEqual(in, out) {
				t.Errorf("round trip changed the cluster:\nin:  %+v\nout: %+v\nyaml:\n%s", in, out, data)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"adress", "address", 1}, {"nmae", "name", 1}, {"kitten", "sitting", 3}, {"", "abc", 3}, {"ca", "abc", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDecodeExpansionIsBounded feeds a "billion laughs" of merge keys: each
// level merges the one below three times, 3^30 pairs in all if expanded.
func TestDecodeExpansionIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(header + "ssh: &l0 {user: root}\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "x%d: &l%d {<<: [*l%d, *l%d, *l%d]}\n", i, i, i-1, i-1, i-1)
	}
	b.WriteString("etcd: *l30\n")
	_, err := Decode("bomb.yaml", []byte(b.String()))
	found := false
	for _, e := range AsFieldErrors(err) {
		found = found || strings.Contains(e.Message, "expands to more than")
	}
	if !found {
		t.Errorf("Decode of a merge bomb did not report the expansion: %v", err)
	}
}
