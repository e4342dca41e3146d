package cis_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/cis"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

// rendered are the outcomes on a master as anvil renders it that are not
// PASS: the exceptions anvil makes on purpose and the item left to
// judgement. Every other item passes, in every layout.
func rendered() map[string]cis.Status {
	return map[string]cis.Status{
		"1.1.12": cis.Exception, // etcd's data directory is root's: etcd runs as root
		"1.2.1":  cis.Exception, // anonymous requests, on the health endpoints and cluster-info only
		"1.2.9":  cis.Exception, // EventRateLimit: alpha configuration, a per-cluster judgement
		"1.2.11": cis.Exception, // AlwaysPullImages: nodes run imported images no registry serves
		"1.2.20": cis.Info,      // --request-timeout "as appropriate"
	}
}

// TestRenderedMaster runs the benchmark over a master as anvil makes it,
// in each layout: only the expected exceptions, nothing fails, and the
// definitions found are the layout's own (the names package component
// renders are the ones the benchmark looks for).
func TestRenderedMaster(t *testing.T) {
	for _, tc := range []struct {
		layout v1alpha1.Layout
		// apiserverSpec is how 1.1.1 names the apiserver's definition.
		apiserverSpec string
	}{
		{v1alpha1.LayoutSystemd, "/etc/systemd/system/kube-apiserver.service 600 root:root"},
		{v1alpha1.LayoutStaticPod, "/etc/kubernetes/manifests/kube-apiserver.yaml 600 root:root"},
		{v1alpha1.LayoutProcess, "/etc/anvil/processes/kube-apiserver.json 600 root:root"},
	} {
		t.Run(string(tc.layout), func(t *testing.T) {
			f, r := gatherRun(t, renderedMaster(t, tc.layout))
			if f.Layout != string(tc.layout) {
				t.Errorf("layout %q, want %q", f.Layout, tc.layout)
			}
			want := rendered()
			for _, it := range r.Results {
				w, ok := want[it.Number]
				if !ok {
					w = cis.Pass
				}
				if it.Status != w {
					t.Errorf("%s %s, want %s: %s", it.Number, it.Status, w, strings.Join(it.Found, "; "))
				}
			}
			if got := result(t, r, "1.1.1").Found; len(got) != 1 || got[0] != tc.apiserverSpec {
				t.Errorf("1.1.1 found %q, want %q", got, tc.apiserverSpec)
			}
			// etcd's configuration file is part of its definition.
			if got := result(t, r, "1.1.7").Found; len(got) != 2 || !strings.HasPrefix(got[1], master.EtcdConfigFile+" 600 ") {
				t.Errorf("1.1.7 found %q, want etcd's definition and %s", got, master.EtcdConfigFile)
			}
			if t.Failed() {
				t.Log(r.String())
			}
		})
	}
}

// TestChecks changes one thing on a master as anvil renders it and looks
// at what the benchmark makes of it: a flag set, unset or wrong, given
// twice; a file too open or someone else's; a configuration file that
// says otherwise; a difference anvil makes on purpose against one it does
// not.
func TestChecks(t *testing.T) {
	const (
		apiserver = "kube-apiserver"
		manager   = "kube-controller-manager"
		scheduler = "kube-scheduler"
		etcd      = "anvil etcd"
	)
	addArgs := func(prog string, args ...string) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) {
			p := h.proc(t, prog)
			p.Args = append(p.Args, args...)
		}
	}
	dropArg := func(prog, name string) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) {
			p := h.proc(t, prog)
			var keep []string
			for _, a := range p.Args {
				if !strings.HasPrefix(a, "--"+name+"=") {
					keep = append(keep, a)
				}
			}
			if len(keep) == len(p.Args) {
				t.Fatalf("%s has no --%s", prog, name)
			}
			p.Args = keep
		}
	}
	chmod := func(p string, perm fs.FileMode) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) { h.chmod(t, p, perm) }
	}
	chown := func(p, owner, group string) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) { h.chown(t, p, owner, group) }
	}
	edit := func(p, old, new string) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) {
			h.replaceFile(t, p, func(s string) string { return strings.Replace(s, old, new, 1) })
		}
	}
	both := func(fs ...func(*testing.T, *fakeHost)) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) {
			for _, f := range fs {
				f(t, h)
			}
		}
	}
	const (
		unit       = hostfs.UnitDir + "/kube-apiserver.service"
		etcdData   = hostfs.EtcdDataDir
		cniLock    = "/var/lib/cni/networks/anvil/lock"
		cniAddress = "/var/lib/cni/networks/anvil/10.244.0.2"
	)
	// host-local's files on a node that ran a pod.
	hostLocal := func(lockPerm fs.FileMode, lockData string) func(*testing.T, *fakeHost) {
		return func(t *testing.T, h *fakeHost) {
			h.dir("/var/lib/cni/networks", 0o755)
			h.dir("/var/lib/cni/networks/anvil", 0o755)
			h.put(cniLock, lockPerm, []byte(lockData))
			h.put(cniAddress, 0o600, []byte("container-id"))
		}
	}

	for _, tc := range []struct {
		name   string
		change func(*testing.T, *fakeHost)
		item   string
		want   cis.Status
		// found is a regexp one of the item's findings matches.
		found string
	}{
		// Flags: set, unset, a wrong value, given twice.
		{"a flag that must be set is not", dropArg(apiserver, "kubelet-certificate-authority"), "1.2.5", cis.Fail, `^--kubelet-certificate-authority not set$`},
		{"one of two flags that must be set is not", dropArg(apiserver, "etcd-keyfile"), "1.2.23", cis.Fail, `^--etcd-keyfile not set$`},
		{"a flag that must not be set is", addArgs(apiserver, "--token-auth-file=/etc/tokens.csv"), "1.2.2", cis.Fail, `^--token-auth-file=/etc/tokens.csv$`},
		{"a flag that must not be set is, value apart", addArgs(apiserver, "--token-auth-file", "/etc/tokens.csv"), "1.2.2", cis.Fail, `^--token-auth-file=/etc/tokens.csv$`},
		{"a wrong value", addArgs(manager, "--profiling=true"), "1.3.2", cis.Fail, `^--profiling=false --profiling=true$`},
		{"the last of a flag given twice counts", addArgs(manager, "--profiling=true", "--profiling=false"), "1.3.2", cis.Pass, ``},
		{"a boolean spelled another way", addArgs(manager, "--use-service-account-credentials=True"), "1.3.3", cis.Pass, ``},
		{"a bare boolean flag is true", addArgs(manager, "--profiling"), "1.3.2", cis.Fail, `--profiling=true$`},
		{"a flag whose default passes, unset", dropArg(apiserver, "service-account-lookup"), "1.2.21", cis.Pass, `^--service-account-lookup not set$`},
		{"a flag whose default fails, unset", dropArg(apiserver, "profiling"), "1.2.15", cis.Fail, `^--profiling not set$`},
		{"a flag that must not be true, spelled another way", edit(master.EtcdConfigFile, "auto-tls: false", `auto-tls: "TRUE"`), "2.3", cis.Fail, `^--auto-tls=TRUE \(from /etc/anvil/etcd.yaml\)$`},
		{"a number below the least", addArgs(apiserver, "--audit-log-maxage=7"), "1.2.17", cis.Fail, `--audit-log-maxage=7$`},
		{"a number that is none", addArgs(apiserver, "--audit-log-maxbackup=ten"), "1.2.18", cis.Fail, `--audit-log-maxbackup=ten$`},
		{"a number above the least", addArgs(apiserver, "--audit-log-maxsize=200"), "1.2.19", cis.Pass, ``},
		{"audit to standard output", addArgs(apiserver, "--audit-log-path=-"), "1.2.16", cis.Fail, ``},
		{"an address everywhere", addArgs(scheduler, "--bind-address=0.0.0.0"), "1.4.2", cis.Fail, `--bind-address=0.0.0.0$`},

		// Lists: an element present or absent, across repeats.
		{"a list flag given twice adds up", addArgs(apiserver, "--enable-admission-plugins=AlwaysAdmit"), "1.2.10", cis.Fail, `AlwaysAdmit`},
		{"a list flag given twice keeps the first's elements", addArgs(apiserver, "--enable-admission-plugins=EventRateLimit"), "1.2.14", cis.Pass, ``},
		{"a default plugin turned off", addArgs(apiserver, "--disable-admission-plugins=ServiceAccount"), "1.2.12", cis.Fail, `^--disable-admission-plugins=ServiceAccount$`},
		{"another plugin turned off", addArgs(apiserver, "--disable-admission-plugins=ServiceAccount"), "1.2.13", cis.Pass, ``},
		{"AlwaysAllow", both(dropArg(apiserver, "authorization-mode"), addArgs(apiserver, "--authorization-mode=AlwaysAllow")), "1.2.6", cis.Fail, `^authorizers: AlwaysAllow$`},
		{"no authorization mode is AlwaysAllow", dropArg(apiserver, "authorization-mode"), "1.2.6", cis.Fail, `^authorizers: AlwaysAllow$`},
		{"Node left out", both(dropArg(apiserver, "authorization-mode"), addArgs(apiserver, "--authorization-mode=RBAC")), "1.2.7", cis.Fail, `^authorizers: RBAC$`},
		{"a weak cipher", addArgs(apiserver, "--tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA"), "1.2.29", cis.Fail, `not among the benchmark's strong ciphers: TLS_RSA_WITH_AES_128_CBC_SHA$`},
		{"no cipher list", dropArg(apiserver, "tls-cipher-suites"), "1.2.29", cis.Fail, `^--tls-cipher-suites not set$`},
		{"a feature gate off", addArgs(manager, "--feature-gates=RotateKubeletServerCertificate=false"), "1.3.6", cis.Fail, `RotateKubeletServerCertificate=false`},
		{"a feature gate off, then on", addArgs(manager, "--feature-gates=RotateKubeletServerCertificate=false,RotateKubeletServerCertificate=true"), "1.3.6", cis.Pass, ``},
		{"another feature gate", addArgs(manager, "--feature-gates=SomeGate=false"), "1.3.6", cis.Pass, `keeps its default, true$`},

		// A component that is not running fails every item of its flags.
		{"the scheduler not running", func(t *testing.T, h *fakeHost) {
			h.proc(t, scheduler).Args = []string{"/bin/sleep", "1"}
		}, "1.4.1", cis.Fail, `^kube-scheduler is not running`},

		// Configuration files stand for flags.
		{"profiling on in the scheduler's configuration", edit(master.SchedulerConfigFile, "enableProfiling: false", "enableProfiling: true"), "1.4.1", cis.Fail, `^--profiling=true \(from /etc/anvil/kube-scheduler.yaml enableProfiling\)$`},
		{"profiling left to the scheduler's default", edit(master.SchedulerConfigFile, "enableProfiling: false\n", ""), "1.4.1", cis.Fail, `^--profiling not set$`},
		{"the scheduler's flag does not count beside its configuration", both(edit(master.SchedulerConfigFile, "enableProfiling: false\n", ""), addArgs(scheduler, "--profiling=false")), "1.4.1", cis.Fail, `^--profiling not set$`},
		{"etcd without client certificates", edit(master.EtcdConfigFile, "client-cert-auth: true", "client-cert-auth: false"), "2.2", cis.Fail, `^--client-cert-auth=false \(from /etc/anvil/etcd.yaml\)$`},
		{"etcd's peers with auto-TLS", edit(master.EtcdConfigFile, "auto-tls: false\ntls-min-version", "auto-tls: true\ntls-min-version"), "2.6", cis.Fail, `^--peer-auto-tls=true`},
		{"etcd's flags do not count beside its configuration", addArgs(etcd, "--auto-tls=true"), "2.3", cis.Pass, `^--auto-tls=false \(from /etc/anvil/etcd.yaml\)$`},
		{"etcd's configuration file missing", func(t *testing.T, h *fakeHost) {
			delete(h.files, master.EtcdConfigFile)
			delete(h.data, master.EtcdConfigFile)
		}, "2.1", cis.Fail, `etcd's configuration file /etc/anvil/etcd.yaml: no such file$`},
		{"etcd's configuration file not YAML", edit(master.EtcdConfigFile, "name:", "\tname: ["), "2.4", cis.Fail, `etcd's configuration file /etc/anvil/etcd.yaml: yaml: `},
		{"anvil etcd without --config reads its default file", dropArg(etcd, "config"), "2.1", cis.Pass, `^--cert-file=\S+ \(from /etc/anvil/etcd.yaml\)$`},
		{"encryption at rest off", dropArg(apiserver, "encryption-provider-config"), "1.2.27", cis.Fail, `^--encryption-provider-config not set$`},
		{"encryption at rest off, providers", dropArg(apiserver, "encryption-provider-config"), "1.2.28", cis.Fail, `Secrets are stored as they are$`},
		{"identity first", func(t *testing.T, h *fakeHost) {
			h.replaceFile(t, master.EncryptionConfigFile, func(s string) string {
				return strings.Replace(s, "providers:\n", "providers:\n      - identity: {}\n", 1)
			})
		}, "1.2.28", cis.Fail, `: identity, secretbox, identity \(the first encrypts every write\)$`},
		{"etcd trusts the cluster CA", edit(master.EtcdConfigFile, "trusted-ca-file: "+etcdCA, "trusted-ca-file: "+clusterCA), "2.7", cis.Fail, `/etc/kubernetes/pki/ca.crt holds a CA of the apiserver's clients`},
		{"etcd's CA unreadable", edit(master.EtcdConfigFile, "trusted-ca-file: "+etcdCA, "trusted-ca-file: /nonexistent/ca.crt"), "2.7", cis.Fail, `^/nonexistent/ca.crt: no such file$`},
		{"anonymous requests everywhere", dropArg(apiserver, "authentication-config"), "1.2.1", cis.Fail, `^anonymous requests allowed on every path \(the default of --anonymous-auth \(true\)\)$`},
		{"anonymous requests off", both(dropArg(apiserver, "authentication-config"), addArgs(apiserver, "--anonymous-auth=false")), "1.2.1", cis.Pass, `^anonymous requests refused`},
		{"anonymous requests on a path anvil does not allow", edit(master.AuthenticationConfigFile, "path: /livez", "path: /metrics"), "1.2.1", cis.Fail, `/metrics`},
		{"EventRateLimit on", addArgs(apiserver, "--enable-admission-plugins=NodeRestriction,DenyServiceExternalIPs,EventRateLimit"), "1.2.9", cis.Pass, ``},

		// Files: modes and owners, where anvil differs on purpose and
		// where it does not.
		{"a unit too open", chmod(unit, 0o644), "1.1.1", cis.Fail, `^/etc/systemd/system/kube-apiserver.service 644 root:root$`},
		{"a unit someone else's", chown(unit, "debian", "root"), "1.1.2", cis.Fail, `^/etc/systemd/system/kube-apiserver.service 600 debian:root$`},
		{"a unit more closed", chmod(unit, 0o400), "1.1.1", cis.Pass, ``},
		{"etcd's configuration too open", chmod(master.EtcdConfigFile, 0o640), "1.1.7", cis.Fail, `^/etc/anvil/etcd.yaml 640 root:root$`},
		{"the scheduler's unit missing, its configuration there", func(t *testing.T, h *fakeHost) {
			delete(h.files, hostfs.UnitDir+"/kube-scheduler.service")
		}, "1.1.5", cis.Fail, `^no unit, static pod manifest or process spec of kube-scheduler$`},
		{"the controller-manager's unit missing", func(t *testing.T, h *fakeHost) {
			delete(h.files, hostfs.UnitDir+"/kube-controller-manager.service")
		}, "1.1.4", cis.Fail, `^no unit, static pod manifest or process spec of kube-controller-manager$`},
		{"admin.conf group-readable", chmod(adminConf, 0o640), "1.1.13", cis.Fail, `^/etc/kubernetes/admin.conf 640 root:root$`},
		{"super-admin.conf absent (not the first master)", func(t *testing.T, h *fakeHost) {
			delete(h.files, hostfs.KubernetesDir+"/super-admin.conf")
		}, "1.1.14", cis.Pass, `^/etc/kubernetes/admin.conf 600 root:root$`},
		{"admin.conf absent", func(t *testing.T, h *fakeHost) { delete(h.files, adminConf) }, "1.1.13", cis.Fail, `^/etc/kubernetes/admin.conf: no such file$`},
		{"the scheduler's kubeconfig too open", chmod(hostfs.KubernetesDir+"/scheduler.conf", 0o644), "1.1.15", cis.Fail, `scheduler.conf 644`},
		{"the manager's kubeconfig someone else's", chown(hostfs.KubernetesDir+"/controller-manager.conf", "root", "adm"), "1.1.18", cis.Fail, `controller-manager.conf 600 root:adm`},
		{"a PKI key too open", chmod(hostfs.PKIDir+"/sa.key", 0o644), "1.1.21", cis.Fail, `^/etc/kubernetes/pki/sa.key 644 root:root$`},
		{"a PKI certificate too open", chmod(clusterCA, 0o644), "1.1.20", cis.Fail, `^/etc/kubernetes/pki/ca.crt 644 root:root$`},
		{"a PKI directory someone else's", chown(hostfs.PKIDir+"/etcd", "etcd", "etcd"), "1.1.19", cis.Fail, `^/etc/kubernetes/pki/etcd 700 etcd:etcd$`},
		{"etcd's data open to others", chmod(etcdData, 0o755), "1.1.11", cis.Fail, `^/var/lib/anvil/etcd 755 root:root$`},
		{"etcd's data open to others is no exception", chmod(etcdData, 0o755), "1.1.12", cis.Fail, `^etcd runs as root$`},
		{"etcd's data etcd's", chown(etcdData, "etcd", "etcd"), "1.1.12", cis.Pass, `^/var/lib/anvil/etcd 700 etcd:etcd$`},
		{"etcd as another user is no exception", chown("/proc/100", "etcd", "etcd"), "1.1.12", cis.Fail, `^etcd runs as etcd$`},
		{"the CNI configuration too open", chmod("/etc/cni/net.d/10-anvil.conflist", 0o644), "1.1.9", cis.Fail, `10-anvil.conflist 644`},
		{"host-local's lock", hostLocal(0o750, ""), "1.1.9", cis.Exception, `^/var/lib/cni/networks/anvil/lock 750 root:root$`},
		{"host-local's lock, not empty", hostLocal(0o750, "something"), "1.1.9", cis.Fail, ``},
		{"host-local's lock, too open even so", hostLocal(0o755, ""), "1.1.9", cis.Fail, ``},
		{"host-local's files root's", hostLocal(0o750, ""), "1.1.10", cis.Pass, `^/var/lib/cni/networks/anvil/10.244.0.2 600 root:root$`},
		{"a reservation someone else's", both(hostLocal(0o750, ""), chown(cniAddress, "nobody", "nogroup")), "1.1.10", cis.Fail, `10.244.0.2 600 nobody:nogroup$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := renderedMaster(t, v1alpha1.LayoutSystemd)
			tc.change(t, h)
			_, r := gatherRun(t, h)
			it := result(t, r, tc.item)
			if it.Status != tc.want {
				t.Errorf("%s %s, want %s; found:\n%s", it.Number, it.Status, tc.want, strings.Join(it.Found, "\n"))
			}
			if tc.found != "" {
				re := regexp.MustCompile(tc.found)
				matched := false
				for _, f := range it.Found {
					matched = matched || re.MatchString(f)
				}
				if !matched {
					t.Errorf("%s found nothing matching %s:\n%s", it.Number, tc.found, strings.Join(it.Found, "\n"))
				}
			}
			switch {
			case it.Status == cis.Exception && it.Why == "":
				t.Errorf("%s is an exception with no reason", it.Number)
			case it.Status == cis.Fail && it.Why != "":
				t.Errorf("%s fails with a reason, as if it were an exception: %s", it.Number, it.Why)
			}
		})
	}
}

// TestGatherErrors: a host that cannot be read, and a master where it is
// not clear which process is the component.
func TestGatherErrors(t *testing.T) {
	t.Run("the host fails", func(t *testing.T) {
		h := renderedMaster(t, v1alpha1.LayoutSystemd)
		h.fail = errors.New("connection lost")
		if _, err := cis.Gather(context.Background(), h, cis.Options{}); err == nil || !strings.Contains(err.Error(), "connection lost") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("two apiservers", func(t *testing.T) {
		h := renderedMaster(t, v1alpha1.LayoutSystemd)
		p := *h.proc(t, "kube-apiserver")
		p.PID = 999
		h.procs = append(h.procs, p)
		_, err := cis.Gather(context.Background(), h, cis.Options{})
		if err == nil || !strings.Contains(err.Error(), "two kube-apiserver processes") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestGatherUnderRoot: anvil's own paths are looked for under
// Options.Root, the components' flags' paths as they are.
func TestGatherUnderRoot(t *testing.T) {
	h := renderedMaster(t, v1alpha1.LayoutSystemd)
	const root = "/srv/m1"
	moved := newFakeHost()
	moved.procs = h.procs
	for p, f := range h.files {
		if strings.HasPrefix(p, "/proc/") {
			moved.files[p] = f
			continue
		}
		f.Path = root + p
		moved.files[f.Path] = f
	}
	for p, b := range h.data {
		moved.data[root+p] = b
	}
	f, err := cis.Gather(context.Background(), moved, cis.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if want := root + hostfs.PKIDir; f.PKIDir != want {
		t.Errorf("PKI dir %s, want %s", f.PKIDir, want)
	}
	if want := []string{root + adminConf, root + hostfs.KubernetesDir + "/super-admin.conf"}; fmt.Sprint(f.AdminKubeconfigs) != fmt.Sprint(want) {
		t.Errorf("admin kubeconfigs %v, want %v", f.AdminKubeconfigs, want)
	}
	r := cis.Run(f)
	if got := result(t, r, "1.1.1"); got.Status != cis.Pass || got.Found[0] != root+"/etc/systemd/system/kube-apiserver.service 600 root:root" {
		t.Errorf("1.1.1 %s %q", got.Status, got.Found)
	}
	// The flags name the files without the root: they are not there.
	if got := result(t, r, "2.7"); got.Status != cis.Fail {
		t.Errorf("2.7 %s %q", got.Status, got.Found)
	}
}
