package master_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func specNamed(t *testing.T, cs []component.Spec, name string) component.Spec {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %s", name)
	return component.Spec{}
}

// TestSecureDefaults pins the flags the issue asks for, so a refactor
// cannot quietly drop one.
func TestSecureDefaults(t *testing.T) {
	cs, err := master.Components(testPlan(t, testCluster(), "lab-m1", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cs); !slices.Equal(got, []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "approver"}) {
		t.Fatalf("components %v", got)
	}
	want := map[string]map[string]string{
		"kube-apiserver": {
			"authorization-mode":               "Node,RBAC",
			"enable-admission-plugins":         "NodeRestriction,DenyServiceExternalIPs",
			"profiling":                        "false",
			"audit-policy-file":                "/etc/anvil/audit-policy.yaml",
			"audit-log-path":                   "/var/log/anvil/audit/kube-apiserver.log",
			"audit-log-maxage":                 "30",
			"audit-log-maxbackup":              "10",
			"audit-log-maxsize":                "100",
			"encryption-provider-config":       "/etc/anvil/encryption-config.yaml",
			"tls-min-version":                  "VersionTLS12",
			"authentication-config":            "/etc/anvil/authentication-config.yaml",
			"service-account-lookup":           "true",
			"service-account-issuer":           "https://kubernetes.default.svc.cluster.local",
			"service-account-key-file":         "/etc/kubernetes/pki/sa.pub",
			"service-account-signing-key-file": "/etc/kubernetes/pki/sa.key",
			"kubelet-client-certificate":       "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
			"kubelet-client-key":               "/etc/kubernetes/pki/apiserver-kubelet-client.key",
			"requestheader-client-ca-file":     "/etc/kubernetes/pki/front-proxy-ca.crt",
			"proxy-client-cert-file":           "/etc/kubernetes/pki/front-proxy-client.crt",
			"etcd-servers":                     "https://127.0.0.1:2379",
			"etcd-cafile":                      "/etc/kubernetes/pki/etcd/ca.crt",
			"etcd-certfile":                    "/etc/kubernetes/pki/apiserver-etcd-client.crt",
			"etcd-keyfile":                     "/etc/kubernetes/pki/apiserver-etcd-client.key",
			"advertise-address":                "10.0.0.11",
			"secure-port":                      "6443",
		},
		"kube-controller-manager": {
			"use-service-account-credentials":  "true",
			"bind-address":                     "127.0.0.1",
			"profiling":                        "false",
			"cluster-signing-cert-file":        "/etc/kubernetes/pki/cluster-signing-ca.crt",
			"cluster-signing-key-file":         "/etc/kubernetes/pki/ca.key",
			"root-ca-file":                     "/etc/kubernetes/pki/ca.crt",
			"service-account-private-key-file": "/etc/kubernetes/pki/sa.key",
			"kubeconfig":                       "/etc/kubernetes/controller-manager.conf",
			"authentication-kubeconfig":        "/etc/kubernetes/controller-manager.conf",
			"authorization-kubeconfig":         "/etc/kubernetes/controller-manager.conf",
			"controllers":                      "*,bootstrapsigner,tokencleaner",
			"terminated-pod-gc-threshold":      "1000",
			"leader-elect":                     "true",
		},
		"kube-scheduler": {
			"bind-address":              "127.0.0.1",
			"config":                    "/etc/anvil/kube-scheduler.yaml",
			"authentication-kubeconfig": "/etc/kubernetes/scheduler.conf",
			"authorization-kubeconfig":  "/etc/kubernetes/scheduler.conf",
			"leader-elect":              "true",
		},
		"etcd": {"config": "/etc/anvil/etcd.yaml"},
	}
	for name, flags := range want {
		c := specNamed(t, cs, name)
		for f, v := range flags {
			if got, ok := c.Arg(f); !ok || got != v {
				t.Errorf("%s --%s = %q (set %v), want %q", name, f, got, ok, v)
			}
		}
		for _, a := range c.Args {
			if n := strings.Count(strings.Join(c.ArgStrings(), " "), "--"+a.Name+"="); n != 1 {
				t.Errorf("%s: --%s appears %d times", name, a.Name, n)
			}
		}
	}
	// No deprecated way of turning profiling off or naming the kubeconfig.
	s := specNamed(t, cs, "kube-scheduler")
	for _, f := range []string{"profiling", "kubeconfig"} {
		if _, ok := s.Arg(f); ok {
			t.Errorf("kube-scheduler has the deprecated --%s", f)
		}
	}
	if e := specNamed(t, cs, "etcd"); !e.Notify || e.Binary != "/usr/local/bin/anvil" || !slices.Equal(e.Subcommand, []string{"etcd"}) {
		t.Errorf("etcd: notify %v, command %s %v", e.Notify, e.Binary, e.Subcommand)
	}
	if a := specNamed(t, cs, "kube-apiserver"); a.Binary != "/opt/anvil/bin/v1.37.2/kube-apiserver" || !slices.Equal(a.Requires, []string{"etcd"}) {
		t.Errorf("apiserver: binary %s, requires %v", a.Binary, a.Requires)
	}
}

func names(cs []component.Spec) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestExtraArgsPolicy: an operator may add or change ordinary flags, but
// not the ones naming certificates, keys, CAs, encryption, authentication
// or etcd endpoints.
func TestExtraArgsPolicy(t *testing.T) {
	t.Run("tls-private-key-file is refused", func(t *testing.T) {
		c := testCluster()
		c.Components.APIServer.ExtraArgs = map[string]string{"tls-private-key-file": "/tmp/mine.key", "v": "4"}
		_, err := master.Components(testPlan(t, c, "lab-m1", ""))
		var fe *component.FlagError
		if !errors.As(err, &fe) || !errors.Is(err, component.ErrProtectedFlag) {
			t.Fatalf("got %v, want a protected-flag error", err)
		}
		if fe.Component != "kube-apiserver" || fe.Flag != "tls-private-key-file" {
			t.Errorf("error names %s --%s", fe.Component, fe.Flag)
		}
		if msg := err.Error(); !strings.Contains(msg, "components.apiServer.extraArgs") || !strings.Contains(msg, "--tls-private-key-file") {
			t.Errorf("message %q does not say where and what", msg)
		}
	})
	for _, tc := range []struct {
		component string
		set       func(c *clusterArgs, args map[string]string)
		flags     []string
	}{
		{"kube-apiserver", func(c *clusterArgs, a map[string]string) { c.api = a },
			[]string{"etcd-servers", "etcd-cafile", "client-ca-file", "tls-cert-file", "encryption-provider-config", "authentication-config", "anonymous-auth", "service-account-key-file", "kubelet-client-key"}},
		{"kube-controller-manager", func(c *clusterArgs, a map[string]string) { c.cm = a },
			[]string{"cluster-signing-key-file", "root-ca-file", "kubeconfig", "service-account-private-key-file"}},
		{"kube-scheduler", func(c *clusterArgs, a map[string]string) { c.sched = a },
			[]string{"authentication-kubeconfig", "config", "tls-private-key-file"}},
	} {
		for _, f := range tc.flags {
			t.Run(tc.component+"/"+f, func(t *testing.T) {
				var ca clusterArgs
				tc.set(&ca, map[string]string{f: "x"})
				_, err := master.Components(testPlan(t, ca.cluster(), "lab-m1", ""))
				var fe *component.FlagError
				if !errors.As(err, &fe) || fe.Component != tc.component || fe.Flag != f || !errors.Is(err, component.ErrProtectedFlag) {
					t.Fatalf("got %v", err)
				}
			})
		}
	}

	t.Run("ordinary flags are added or changed in place", func(t *testing.T) {
		c := testCluster()
		c.Components.APIServer.ExtraArgs = map[string]string{"v": "4", "profiling": "true", "audit-log-maxage": "90", "max-requests-inflight": "800"}
		c.Components.Scheduler.ExtraArgs = map[string]string{"v": "3"}
		cs, err := master.Components(testPlan(t, c, "lab-m1", ""))
		if err != nil {
			t.Fatal(err)
		}
		base, err := master.Components(testPlan(t, testCluster(), "lab-m1", ""))
		if err != nil {
			t.Fatal(err)
		}
		got := specNamed(t, cs, "kube-apiserver").ArgStrings()
		want := specNamed(t, base, "kube-apiserver").ArgStrings()
		for i, a := range want {
			switch {
			case strings.HasPrefix(a, "--profiling="):
				want[i] = "--profiling=true"
			case strings.HasPrefix(a, "--audit-log-maxage="):
				want[i] = "--audit-log-maxage=90"
			}
		}
		want = append(want, "--max-requests-inflight=800", "--v=4")
		if !slices.Equal(got, want) {
			t.Errorf("merged args\n got %q\nwant %q", got, want)
		}
		if v, _ := specNamed(t, cs, "kube-scheduler").Arg("v"); v != "3" {
			t.Errorf("scheduler --v=%q", v)
		}
	})
}

type clusterArgs struct{ api, cm, sched map[string]string }

func (a clusterArgs) cluster() *v1alpha1.Cluster {
	c := testCluster()
	c.Components.APIServer.ExtraArgs = a.api
	c.Components.ControllerManager.ExtraArgs = a.cm
	c.Components.Scheduler.ExtraArgs = a.sched
	return c
}

func TestPlanRefusesWhatCannotRender(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(p *master.Plan)
		want   string
	}{
		{"unsupported version", func(p *master.Plan) { p.KubernetesVersion = "v1.20.0" }, "not supported"},
		{"bad etcd state", func(p *master.Plan) { p.Etcd.State = "joining" }, "initial cluster state"},
		{"no service CIDR", func(p *master.Plan) { p.Cluster.Networking.ServiceCIDR = netip.Prefix{} }, "serviceCIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := master.Plan{Cluster: testCluster()}
			p.Node, _ = p.Cluster.Host("lab-m1")
			tc.mutate(&p)
			_, err := master.Components(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
	if _, err := master.Components(testPlan(t, testCluster(), "lab-w1", "")); err == nil {
		t.Error("a worker got control-plane components")
	}
	if _, err := master.NewPlan(testCluster(), "nope", ""); err == nil {
		t.Error("an unknown node got a plan")
	}
}

// TestAuditLogDirFollowsExtraArgs: the directory the apiserver may write
// (and ConfigFiles makes) is that of the audit-log-path it runs with.
func TestAuditLogDirFollowsExtraArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		logPath string // "" keeps anvil's
		want    string // "" for no directory
	}{
		{"anvil's", "", master.AuditLogDir},
		{"an operator's", "/var/log/kubernetes/audit/audit.log", "/var/log/kubernetes/audit"},
		{"standard output", "-", ""},
		{"thrown away", "/dev/null", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testCluster()
			if tc.logPath != "" {
				c.Components.APIServer.ExtraArgs = map[string]string{"audit-log-path": tc.logPath}
			}
			p := testPlan(t, c, "lab-m1", "")
			cs, err := master.Components(p)
			if err != nil {
				t.Fatal(err)
			}
			var writable []string
			for _, f := range specNamed(t, cs, master.APIServer).Files {
				if f.Writable {
					writable = append(writable, f.Path)
				}
			}
			files, err := master.ConfigFiles(p, noFiles)
			if err != nil {
				t.Fatal(err)
			}
			var dirs []string
			for _, f := range files {
				if f.Mode.IsDir() && f.Path != hostfs.EtcdDataDir {
					dirs = append(dirs, f.Path)
				}
			}
			var want []string
			if tc.want != "" {
				want = []string{tc.want}
			}
			if !slices.Equal(writable, want) {
				t.Errorf("the apiserver writes %q, want %q", writable, want)
			}
			if !slices.Equal(dirs, want) {
				t.Errorf("ConfigFiles makes the directories %q, want %q", dirs, want)
			}
		})
	}
	t.Run("a relative path is refused", func(t *testing.T) {
		c := testCluster()
		c.Components.APIServer.ExtraArgs = map[string]string{"audit-log-path": "audit.log"}
		if _, err := master.Components(testPlan(t, c, "lab-m1", "")); err == nil || !strings.Contains(err.Error(), "audit-log-path") {
			t.Errorf("got %v, want an error about audit-log-path", err)
		}
	})
}
