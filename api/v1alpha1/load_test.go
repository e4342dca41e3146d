package v1alpha1

import (
	"errors"
	"strings"
	"testing"
)

// master is a host that keeps "at least one master" quiet in the files below.
const master = "hosts:\n  - name: m1\n    address: 10.0.0.11\n    role: master\n"

// TestLoadEveryProblemOnce is issue 19's first item: decode and validation
// problems come out of one run together, in file order, each once. Before,
// a file with an unknown key reported only that, and its invalid name and
// roles surfaced on the next run.
func TestLoadEveryProblemOnce(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []problem // in the order Load must report them
	}{
		{"one of each kind", "" +
			"apiVersion: anvil.dev/v1alpha1\n" + // 1
			"kind: Cluster\n" + // 2
			"name: Example_1\n" + // 3: invalid name
			"flavour: vanilla\n" + // 4: unknown field
			"controlPlane:\n" + // 5
			"  port: high\n" + // 6: wrong type
			"hosts:\n" + // 7
			"  - name: m1\n" + // 8
			"    address: 10.0.0.11\n" + // 9
			"    role: master\n" + // 10
			"  - name: m2\n" + // 11
			"    address: 10.0.0.300\n" + // 12: unparsable address
			"    role: wroker\n" + // 13: invalid role
			"  - name: m1\n" + // 14: duplicate host
			"    address: 10.0.0.13\n" + // 15
			"    role: master\n" + // 16
			"  - name: w1\n" + // 17: missing address
			"    role: worker\n" + // 18
			"networking:\n" + // 19
			"  serviceCIDR: 10.96.0.0\n" + // 20: bad prefix
			"etcd:\n" + // 21
			"  electionTimeout: 2x\n", // 22: bad duration
			[]problem{
				{3, "name", ReasonInvalid, `"Example_1" is not a DNS label`},
				{4, "flavour", ReasonUnknownField, "unknown field"},
				{6, "controlPlane.port", ReasonInvalid, `"high" is not a whole number`},
				{12, "hosts[1].address", ReasonInvalid, `"10.0.0.300" is not an IP address`},
				{13, "hosts[1].role", ReasonNotSupported, `"wroker" is not a role`},
				{14, "hosts[2].name", ReasonDuplicate, `"m1" is also the name of hosts[0]`},
				{17, "hosts[3].address", ReasonRequired, "required"},
				{20, "networking.serviceCIDR", ReasonInvalid, "add the prefix length"},
				{22, "etcd.electionTimeout", ReasonInvalid, `"2x" is not a duration`},
			}},
		{"validation problems before and after a decode problem", "apiVersion: anvil.dev/v1alpha1\nkind: Cluster\n" +
			"name: T\n" + // 3
			"hosts:\n" + // 4
			"  - name: M1\n" + // 5
			"    adress: 10.0.0.11\n" + // 6
			"    role: master\n" + // 7
			"backup:\n" + // 8
			"  dir: backups\n", // 9
			[]problem{
				{3, "name", ReasonInvalid, "not a DNS label"},
				{5, "hosts[0].name", ReasonInvalid, "not a valid node name"},
				{6, "hosts[0].adress", ReasonUnknownField, `did you mean "address"?`},
				{9, "backup.dir", ReasonInvalid, "not an absolute path"},
			}},
		{"problems on one line in column order", header + master +
			"    taints: [{key: -x, effect: Never}, {key: ok, effect: [NoSchedule]}]\n", // 8
			[]problem{
				{8, "hosts[0].taints[0].key", ReasonInvalid, "not a valid taint key"},
				{8, "hosts[0].taints[0].effect", ReasonNotSupported, `"Never"`},
				{8, "hosts[0].taints[1].effect", ReasonInvalid, "expected a string, found a list"},
			}},

		// A rejected field gets the decoder's message and nothing else: no
		// "required" for the value left unset, and no comparison with the
		// default put in its place.
		{"misspelt key is not also missing", header + "hosts:\n  - name: m1\n    adress: 10.0.0.11\n    role: master\n",
			[]problem{{6, "hosts[0].adress", ReasonUnknownField, `did you mean "address"?`}}},
		{"misspelt key beside the real one", header + master + "  - name: m2\n    address: 10.0.0.11\n    adress: 10.0.0.12\n    role: worker\n",
			[]problem{
				{9, "hosts[1].address", ReasonDuplicate, "is also hosts[0].address"},
				{10, "hosts[1].adress", ReasonUnknownField, `did you mean "address"?`},
			}},
		{"address of the wrong type", header + "hosts:\n  - name: m1\n    address: {ip: 10.0.0.11}\n    role: master\n",
			[]problem{{6, "hosts[0].address", ReasonInvalid, "expected an IP address, found a mapping"}}},
		{"name of the wrong type", header + "hosts:\n  - name: [m1]\n    address: 10.0.0.11\n    role: master\n",
			[]problem{{5, "hosts[0].name", ReasonInvalid, "expected a string, found a list"}}},
		{"the only master's role of the wrong type", header + "hosts:\n  - name: m1\n    address: 10.0.0.11\n    role: [master]\n",
			[]problem{{7, "hosts[0].role", ReasonInvalid, "expected a string, found a list"}}},
		{"a host of the wrong shape", header + master + "  - w1\n",
			[]problem{{8, "hosts[1]", ReasonInvalid, `expected a mapping, found "w1"`}}},
		{"hosts of the wrong shape", header + "hosts:\n  name: m1\n",
			[]problem{{4, "hosts", ReasonInvalid, "expected a list, found a mapping"}}},
		{"bad serviceCIDR is not compared with podCIDR", header + master + "networking:\n  serviceCIDR: nope\n  podCIDR: 10.100.0.0/16\n",
			[]problem{{9, "networking.serviceCIDR", ReasonInvalid, "not a CIDR prefix"}}},
		{"bad heartbeat is not compared with electionTimeout", header + master + "etcd:\n  heartbeatInterval: fast\n  electionTimeout: 300ms\n",
			[]problem{{9, "etcd.heartbeatInterval", ReasonInvalid, "not a duration"}}},
		{"bad caValidity is not compared with certValidity", header + master + "pki:\n  caValidity: long\n  certValidity: 4000d\n",
			[]problem{{9, "pki.caValidity", ReasonInvalid, "not a duration"}}},
		{"bad port", header + master + "ssh:\n  port: 70000\n",
			[]problem{{9, "ssh.port", ReasonInvalid, "out of range"}}},
		{"taints with rejected effects are not duplicates", header + master + "    taints: [{key: a, effect: [x]}, {key: a, effect: [y]}]\n",
			[]problem{
				{8, "hosts[0].taints[0].effect", ReasonInvalid, "expected a string"},
				{8, "hosts[0].taints[1].effect", ReasonInvalid, "expected a string"},
			}},
		{"a merge of a scalar hides what it would have brought", header + master + "    ssh:\n      <<: plain\n",
			[]problem{{9, "hosts[0].ssh", ReasonInvalid, "a merge (<<) takes a mapping"}}},

		// Nothing to validate: the file is not one mapping.
		{"syntax error", header + "hosts: [\n", []problem{{4, "", ReasonSyntax, "did not find expected node content"}}},
		{"not a mapping", "- a\n- b\n", []problem{{1, "", ReasonInvalid, "expected a mapping, found a list"}}},
		{"empty", "", []problem{{0, "", ReasonSyntax, "holds no cluster"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := load("cluster.yaml", []byte(tt.in))
			if err == nil || c != nil {
				t.Fatalf("load = %v, %v; want only an error", c, err)
			}
			var got FieldErrors
			if !errors.As(err, &got) {
				t.Fatalf("error %v is not FieldErrors", err)
			}
			checkProblems(t, got, tt.want)
			checkFileOrder(t, got)
			if len(got) != len(tt.want) {
				return
			}
			for i, w := range tt.want {
				if g := got[i]; g.Path != w.path || g.Line != w.line {
					t.Errorf("problem %d is %s:%d, want %s:%d", i, g.Path, g.Line, w.path, w.line)
				}
			}
		})
	}
}

// checkFileOrder checks that problems come in file order, each once, and
// carry the file and, with the line, the column (go-yaml's syntax errors
// give only a line).
func checkFileOrder(t *testing.T, es FieldErrors) {
	t.Helper()
	seen := map[string]bool{}
	for i, e := range es {
		if e.File != "cluster.yaml" {
			t.Errorf("%v: file %q", e, e.File)
		}
		if e.Line > 0 && e.Column < 1 && e.Reason != ReasonSyntax {
			t.Errorf("%v: line %d without a column", e, e.Line)
		}
		if i > 0 {
			p := es[i-1]
			if p.Line > e.Line || (p.Line == e.Line && p.Column > e.Column) {
				t.Errorf("out of file order: %v (column %d) before %v (column %d)", p, p.Column, e, e.Column)
			}
		}
		if seen[e.Path] && e.Path != "" {
			t.Errorf("%s is reported twice", e.Path)
		}
		seen[e.Path] = true
	}
}

// TestLoadKeepsWarningsWithErrors: warnings belong to the same single run.
func TestLoadKeepsWarningsWithErrors(t *testing.T) {
	in := header + master + "  - name: m2\n    address: 10.0.0.12\n    role: master\n    flavour: x\n"
	_, warnings, err := load("cluster.yaml", []byte(in))
	checkProblems(t, AsFieldErrors(err), []problem{{11, "hosts[1].flavour", ReasonUnknownField, "unknown field"}})
	checkProblems(t, warnings, []problem{{4, "hosts", ReasonInvalid, "2 masters"}})
}

// TestDecodeStaysStrict: Decode alone still reports only what it finds and
// returns no cluster, as its callers (the join's ConfigMap, the installer's
// rewrites) expect.
func TestDecodeStaysStrict(t *testing.T) {
	c, err := Decode("cluster.yaml", []byte("apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: Bad_Name\nflavour: x\n"))
	if c != nil {
		t.Errorf("Decode returned a cluster with its errors")
	}
	checkProblems(t, AsFieldErrors(err), []problem{{4, "flavour", ReasonUnknownField, "unknown field"}})
}

func TestFieldErrorColumn(t *testing.T) {
	_, _, err := load("cluster.yaml", []byte(header+master+"    labels: {ok: a, bad key: b}\n"))
	es := AsFieldErrors(err)
	if len(es) != 1 || es[0].Line != 8 || es[0].Column != 21 {
		t.Fatalf("got %+v, want one problem at line 8, column 21", es)
	}
	if want := `cluster.yaml:8: hosts[0].labels["bad key"]: `; !strings.HasPrefix(es[0].Error(), want) {
		t.Errorf("Error() = %q, want it to start %q (the text keeps file:line)", es[0].Error(), want)
	}
}
