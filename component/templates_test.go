package component_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/component"
)

// odd is a made-up component exercising what the real ones do not: a
// non-root user, environment, and argument values systemd would otherwise
// split, expand or treat as a command separator.
func odd() component.Spec {
	return component.Spec{
		Name:       "odd",
		Binary:     "/opt/odd/bin/odd",
		Subcommand: []string{"serve"},
		Args: []component.Arg{
			{Name: "greeting", Value: `hello "world" \ back`},
			{Name: "percent", Value: "100%d"},
			{Name: "dollar", Value: "$HOME and ${PATH}"},
			{Name: "semicolon", Value: ";"},
			{Name: "tab", Value: "a\tb"},
			{Name: "empty", Value: ""},
		},
		Env:     []component.EnvVar{{Name: "GODEBUG", Value: "x509sha1=0"}, {Name: "NOTE", Value: "two words"}},
		User:    "odd",
		Restart: component.RestartPolicy{Delay: 1500 * time.Millisecond, MaxDelay: time.Minute},
		Health:  component.Health{Ready: &component.Probe{URL: "http://127.0.0.1:9000/ready"}},
		Files: []component.File{
			{Path: "/var/lib/odd", Mode: 0o700, Dir: true, Writable: true},
			{Path: `/srv/odd data/100% "done"`, Mode: 0o700, Dir: true, Writable: true},
		},
		Image: component.Image{Ref: "localhost/odd:v1", Binary: "/usr/local/bin/odd"},
	}
}

func TestSystemdQuoting(t *testing.T) {
	c := odd()
	u, err := component.SystemdUnit(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{c.Binary}, c.Subcommand...)
	want = append(want, c.ArgStrings()...)
	if got := execStartWords(t, u); !slices.Equal(got, want) {
		t.Errorf("ExecStart reads back as\n%q\nwant\n%q\n%s", got, want, u)
	}
	s := string(u)
	for _, line := range []string{
		"User=odd",
		`Environment=GODEBUG=x509sha1=0`,
		`Environment="NOTE=two words"`,
		"RestartSec=1500ms",
		"Type=exec",
		"Restart=always",
	} {
		if !strings.Contains(s, "\n"+line+"\n") {
			t.Errorf("unit lacks %q:\n%s", line, s)
		}
	}
	if got, want := serviceWords(t, u, "ReadWritePaths"), []string{`/srv/odd data/100% "done"`, "/var/lib/odd"}; !slices.Equal(got, want) {
		t.Errorf("ReadWritePaths reads back as %q, want %q", got, want)
	}
	for _, absent := range []string{"LimitNOFILE", "WatchdogSec", "NotifyAccess"} {
		if strings.Contains(s, absent) {
			t.Errorf("unit has %s:\n%s", absent, s)
		}
	}
}

func TestMergeArgs(t *testing.T) {
	declared := []component.Arg{
		{Name: "secure-port", Value: "6443"},
		{Name: "profiling", Value: "false"},
		{Name: "service-account-issuer", Value: "a"},
		{Name: "service-account-issuer", Value: "b"},
	}
	t.Run("add and change", func(t *testing.T) {
		got, err := component.MergeArgs("x", declared, map[string]string{
			"v": "4", "profiling": "true", "audit-log-maxage": "9", "service-account-issuer": "c",
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []component.Arg{
			{Name: "secure-port", Value: "6443"},
			{Name: "profiling", Value: "true"},
			{Name: "service-account-issuer", Value: "c"},
			{Name: "audit-log-maxage", Value: "9"},
			{Name: "v", Value: "4"},
		}
		if !slices.Equal(got, want) {
			t.Errorf("got %v\nwant %v", got, want)
		}
		if !slices.Equal(declared[3:], []component.Arg{{Name: "service-account-issuer", Value: "b"}}) {
			t.Error("MergeArgs changed its input")
		}
	})
	t.Run("nothing extra", func(t *testing.T) {
		got, err := component.MergeArgs("x", declared, nil)
		if err != nil || !slices.Equal(got, declared) {
			t.Errorf("got %v, %v", got, err)
		}
	})
	t.Run("tls-private-key-file cannot be overridden", func(t *testing.T) {
		_, err := component.MergeArgs("kube-apiserver", declared, map[string]string{"tls-private-key-file": "/tmp/k", "v": "2"})
		var fe *component.FlagError
		if !errors.As(err, &fe) || !errors.Is(err, component.ErrProtectedFlag) {
			t.Fatalf("got %v", err)
		}
		if fe.Component != "kube-apiserver" || fe.Flag != "tls-private-key-file" {
			t.Errorf("names %s %s", fe.Component, fe.Flag)
		}
		if !strings.Contains(err.Error(), "kube-apiserver: extra argument --tls-private-key-file: cannot be set or changed: anvil manages keys") {
			t.Errorf("message: %v", err)
		}
	})
	t.Run("bad names and values", func(t *testing.T) {
		for _, extra := range []map[string]string{
			{"--v": "2"}, {"": "x"}, {"a b": "x"}, {"v": "2\nExecStartPre=/bin/evil"},
		} {
			_, err := component.MergeArgs("x", declared, extra)
			var fe *component.FlagError
			if !errors.As(err, &fe) || errors.Is(err, component.ErrProtectedFlag) {
				t.Errorf("%q: got %v", extra, err)
			}
		}
	})
}

func TestProtectedFlag(t *testing.T) {
	for _, f := range []string{
		"tls-cert-file", "tls-private-key-file", "tls-sni-cert-key", "client-ca-file", "root-ca-file",
		"requestheader-client-ca-file", "kubelet-certificate-authority", "kubelet-client-certificate",
		"kubelet-client-key", "proxy-client-cert-file", "proxy-client-key-file", "etcd-servers",
		"etcd-servers-overrides", "etcd-cafile", "etcd-certfile", "etcd-keyfile",
		"service-account-key-file", "service-account-signing-key-file", "service-account-private-key-file",
		"cluster-signing-cert-file", "cluster-signing-key-file", "cluster-signing-kubelet-serving-key-file",
		"encryption-provider-config", "encryption-provider-config-automatic-reload",
		"authentication-config", "anonymous-auth", "kubeconfig", "authentication-kubeconfig",
		"authorization-kubeconfig", "cert-dir", "config",
	} {
		if _, ok := component.ProtectedFlag(f); !ok {
			t.Errorf("--%s is not protected", f)
		}
	}
	for _, f := range []string{
		"v", "vmodule", "profiling", "audit-log-maxage", "max-requests-inflight", "feature-gates",
		"authorization-mode", "enable-admission-plugins", "service-node-port-range", "leader-elect",
		"node-monitor-grace-period", "tls-min-version", "tls-cipher-suites", "event-ttl",
		"service-account-issuer", "api-audiences", "requestheader-allowed-names",
	} {
		if why, ok := component.ProtectedFlag(f); ok {
			t.Errorf("--%s is protected (%s)", f, why)
		}
	}
}

func TestStartOrder(t *testing.T) {
	c := func(name string, req ...string) component.Spec {
		return component.Spec{Name: name, Requires: req}
	}
	got, err := component.StartOrder([]component.Spec{c("sched", "api"), c("agent"), c("api", "etcd"), c("etcd")})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range got {
		names = append(names, x.Name)
	}
	if want := []string{"etcd", "api", "sched", "agent"}; !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
	for _, bad := range [][]component.Spec{
		{c("a", "b"), c("b", "a")},
		{c("a", "missing")},
		{c("a"), c("a")},
	} {
		if _, err := component.StartOrder(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestValidateRefusesBrokenDeclarations(t *testing.T) {
	for name, mutate := range map[string]func(*component.Spec){
		"relative binary": func(c *component.Spec) { c.Binary = "odd" },
		"bad name":        func(c *component.Spec) { c.Name = "Odd_1" },
		"newline in arg":  func(c *component.Spec) { c.Args[0].Value = "a\nb" },
		"bad flag name":   func(c *component.Spec) { c.Args[0].Name = "--x" },
		"relative file":   func(c *component.Spec) { c.Files[0].Path = "var/lib" },
		"probe port":      func(c *component.Spec) { c.Health.Ready.URL = "http://127.0.0.1/ready" },
		"watchdog":        func(c *component.Spec) { c.Watchdog = time.Second },
		"self dependency": func(c *component.Spec) { c.Requires = []string{"odd"} },
	} {
		t.Run(name, func(t *testing.T) {
			c := odd()
			c.Args = slices.Clone(c.Args)
			c.Files = slices.Clone(c.Files)
			p := *c.Health.Ready
			c.Health.Ready = &p
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Error("no error")
			}
			if _, err := component.SystemdUnit(c, nil); err == nil {
				t.Error("unit rendered")
			}
		})
	}
}

func TestStaticPodMounts(t *testing.T) {
	c := odd()
	c.Files = []component.File{
		{Path: "/etc/pki", Mode: 0o700, Dir: true},
		{Path: "/etc/pki/a.crt", Mode: 0o644},
		{Path: "/etc/pki/sub", Mode: 0o700, Dir: true},
		{Path: "/etc/pki/sub/w", Mode: 0o700, Dir: true, Writable: true},
		{Path: "/etc/odd.yaml", Mode: 0o600},
	}
	pod, err := component.StaticPod(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		got = append(got, m.MountPath+map[bool]string{true: " ro", false: " rw"}[m.ReadOnly])
	}
	// The certificate and the read-only subdirectory come with /etc/pki; the
	// writable one needs its own read-write mount.
	want := []string{"/etc/odd.yaml ro", "/etc/pki ro", "/etc/pki/sub/w rw"}
	if !slices.Equal(got, want) {
		t.Errorf("mounts %v, want %v", got, want)
	}
	c.Image = component.Image{}
	if _, err := component.StaticPod(c); err == nil {
		t.Error("static pod without an image")
	}
}
