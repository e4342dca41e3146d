package component_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/component"
)

// confinedBase is what every confined unit carries whatever the component,
// written out here rather than taken from the renderer so that dropping a
// directive fails a test.
var confinedBase = []string{
	"NoNewPrivileges=yes",
	"ProtectSystem=strict",
	"ProtectHome=yes",
	"PrivateTmp=yes",
	"PrivateDevices=yes",
	"PrivateMounts=yes",
	"ProtectKernelModules=yes",
	"ProtectKernelLogs=yes",
	"ProtectControlGroups=yes",
	"ProtectClock=yes",
	"ProtectHostname=yes",
	"RestrictSUIDSGID=yes",
	"RestrictRealtime=yes",
	"RestrictNamespaces=yes",
	"LockPersonality=yes",
	"MemoryDenyWriteExecute=yes",
	"SystemCallArchitectures=native",
	"SystemCallFilter=@system-service",
	"SystemCallErrorNumber=EPERM",
	"UMask=0077",
}

// notSandbox are the [Service] settings that say how to run the
// component rather than how to confine it.
var notSandbox = []string{"Type", "NotifyAccess", "WatchdogSec", "User", "Environment", "ExecStart",
	"Restart", "RestartSec", "LimitNOFILE", "KillMode", "Delegate", "OOMScoreAdjust",
	"TimeoutStartSec", "Nice", "IOSchedulingClass"}

// sandboxLines are the unit's confining [Service] settings, as NAME=value,
// sorted.
func sandboxLines(t *testing.T, unitFile []byte) []string {
	t.Helper()
	opts, err := unit.DeserializeOptions(strings.NewReader(string(unitFile)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range opts {
		if o.Section == "Service" && !slices.Contains(notSandbox, o.Name) {
			out = append(out, o.Name+"="+o.Value)
		}
	}
	slices.Sort(out)
	return out
}

// podNetworkAgent is the agent of a machine that runs anvil's pod network,
// which the fixture's master does not.
func podNetworkAgent(t *testing.T) component.Spec {
	t.Helper()
	c, err := agent.Component(agent.ComponentOptions{AnvilBinary: "/usr/local/bin/anvil", KubernetesVersion: "v1.37.2", PodNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renderedUnit is a service unit anvil writes.
type renderedUnit struct {
	file       string // its name, such as anvil-etcd.service
	data       []byte
	unconfined bool // as declared
}

// everyUnit renders, by a name for the tests, each service the fixture's
// master runs, the agent of a machine that runs anvil's pod network, and
// the scheduled backup's service.
func everyUnit(t *testing.T) map[string]renderedUnit {
	t.Helper()
	all := nodeComponents(t, "")
	out := map[string]renderedUnit{}
	for _, c := range append(slices.Clone(all), podNetworkAgent(t)) {
		u, err := component.SystemdUnit(c, all)
		if err != nil {
			t.Fatal(err)
		}
		name := c.Name
		if _, dup := out[name]; dup {
			name += "-pod-network"
		}
		out[name] = renderedUnit{file: c.UnitName(), data: u, unconfined: c.Sandbox.Unconfined}
	}
	j := backupJob()
	u, err := component.OneshotUnit(j)
	if err != nil {
		t.Fatal(err)
	}
	out["backup"] = renderedUnit{file: j.ServiceName(), data: u, unconfined: j.Sandbox.Unconfined}
	return out
}

// TestSandboxDirectives pins each unit's confinement: what it may write,
// which capabilities it keeps, which sockets it may open, and whether it
// may write kernel tunables.
func TestSandboxDirectives(t *testing.T) {
	const inet = "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
	want := map[string]struct {
		readWrite string // ReadWritePaths=, "" for none
		caps      string // CapabilityBoundingSet=
		families  string // RestrictAddressFamilies=
		sysctls   bool   // no ProtectKernelTunables=
	}{
		"etcd":                    {readWrite: "/var/lib/anvil/etcd", families: inet},
		"kube-apiserver":          {readWrite: "/var/log/anvil/audit", families: inet},
		"kube-controller-manager": {families: inet},
		"kube-scheduler":          {families: inet},
		"approver":                {families: inet},
		"vip":                     {caps: "CAP_NET_ADMIN CAP_NET_RAW", families: inet + " AF_PACKET"},
		"agent":                   {readWrite: "/var/lib/anvil/agent", families: inet},
		"agent-pod-network":       {readWrite: "/etc/cni/net.d /var/lib/anvil/agent", caps: "CAP_NET_ADMIN", families: inet, sysctls: true},
		"backup":                  {readWrite: "/var/lib/anvil/backups", families: inet},
	}
	units := everyUnit(t)
	if len(units) != len(want) {
		t.Fatalf("%d units, %d expectations: add the new one here", len(units), len(want))
	}
	for _, name := range slices.Sorted(maps.Keys(units)) {
		u := units[name]
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			exp := slices.Clone(confinedBase)
			if w.readWrite != "" {
				exp = append(exp, "ReadWritePaths="+w.readWrite)
			}
			if !w.sysctls {
				exp = append(exp, "ProtectKernelTunables=yes")
			}
			exp = append(exp, "CapabilityBoundingSet="+w.caps, "RestrictAddressFamilies="+w.families)
			slices.Sort(exp)
			if got := sandboxLines(t, u.data); !slices.Equal(got, exp) {
				t.Errorf("sandbox\n got %q\nwant %q\n%s", got, exp, u.data)
			}
		})
	}
}

// TestSandboxRules covers what the real components do not: a low port, a
// writable file inside a writable directory, writable paths under /home
// and /tmp or holding a control character, misspelt capabilities, a
// delegated cgroup and an unconfined unit. (Quoting is TestSystemdQuoting's,
// and systemd reads it back in TestUnitsPassSystemdAnalyzeVerify.)
func TestSandboxRules(t *testing.T) {
	spec := func(edit func(*component.Spec)) component.Spec {
		c := component.Spec{Name: "x", Binary: "/usr/bin/x"}
		edit(&c)
		return c
	}
	render := func(t *testing.T, c component.Spec) []string {
		t.Helper()
		u, err := component.SystemdUnit(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sandboxLines(t, u)
	}
	t.Run("a port below 1024 keeps CAP_NET_BIND_SERVICE", func(t *testing.T) {
		got := render(t, spec(func(c *component.Spec) {
			c.Ports = []component.Port{{Name: "https", Number: 443}, {Name: "http", Number: 80}}
			c.Capabilities = []string{"NET_RAW"}
		}))
		if !slices.Contains(got, "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW") {
			t.Errorf("sandbox %q", got)
		}
	})
	t.Run("writable paths: what is inside another is left out", func(t *testing.T) {
		got := render(t, spec(func(c *component.Spec) {
			c.Files = []component.File{
				{Path: "/var/lib/xy", Dir: true, Writable: true},
				{Path: "/var/lib/x/log", Writable: true},
				{Path: "/var/lib/x", Dir: true, Writable: true},
				{Path: "/etc/x/config", Mode: 0o600},
				{Path: "/var/lib/xy", Dir: true, Writable: true},
			}
		}))
		if !slices.Contains(got, "ReadWritePaths=/var/lib/x /var/lib/xy") {
			t.Errorf("sandbox %q", got)
		}
	})
	t.Run("a path under /home or /tmp stays the host's", func(t *testing.T) {
		got := render(t, spec(func(c *component.Spec) {
			c.Files = []component.File{{Path: "/home/ops/backups", Dir: true, Writable: true}, {Path: "/var/tmp/x", Writable: true}}
		}))
		if !slices.Contains(got, "ProtectHome=read-only") || slices.Contains(got, "PrivateTmp=yes") {
			t.Errorf("sandbox %q", got)
		}
	})
	t.Run("nothing writable, no ReadWritePaths", func(t *testing.T) {
		for _, l := range render(t, spec(func(c *component.Spec) {})) {
			if strings.HasPrefix(l, "ReadWritePaths=") {
				t.Errorf("sandbox has %s", l)
			}
		}
	})
	t.Run("unconfined", func(t *testing.T) {
		if got := render(t, spec(func(c *component.Spec) {
			c.Sandbox.Unconfined = true
			c.Delegate = true
		})); len(got) != 0 {
			t.Errorf("an unconfined unit has %q", got)
		}
	})
	for _, tc := range []struct {
		name string
		edit func(*component.Spec)
		want string
	}{
		{"a writable path with a control character", func(c *component.Spec) {
			c.Files = []component.File{{Path: "/var/lib/x\ty", Dir: true, Writable: true}}
		}, "writable path"},
		{"CAP_ written out", func(c *component.Spec) { c.Capabilities = []string{"CAP_NET_ADMIN"} }, "capability"},
		{"a lowercase capability", func(c *component.Spec) { c.Capabilities = []string{"net_admin"} }, "capability"},
		{"a delegated cgroup", func(c *component.Spec) { c.Delegate = true }, "unconfined"},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			_, err := component.SystemdUnit(spec(tc.edit), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
}
