package cis

import (
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Benchmark names the benchmark and the sections the table covers.
const Benchmark = "CIS Kubernetes Benchmark v1.10.0, sections 1.1–1.4 and 2"

// Status is an item's outcome.
type Status string

const (
	// Pass: the machine does what the item asks.
	Pass Status = "PASS"
	// Fail: it does not, and anvil has no reason to differ.
	Fail Status = "FAIL"
	// Exception: it does not, on purpose; Result.Why says why, and what
	// anvil does instead.
	Exception Status = "EXCEPTION"
	// Info: the item asks for a person's judgement ("as appropriate");
	// Result.Found says what is there to judge.
	Info Status = "INFO"
)

// Statuses lists them in the report's order.
func Statuses() []Status { return []Status{Pass, Fail, Exception, Info} }

// Result is one item's outcome on one machine.
type Result struct {
	Status Status
	// Found is what the check saw, one fact per line.
	Found []string
	// Why explains an exception or what an Info item leaves to judge.
	Why string
}

// Item is one recommendation of the benchmark.
type Item struct {
	Number string
	Title  string
	// Automated is the benchmark's own word; a manual item is still
	// checked where a check can decide it.
	Automated bool
	Check     func(*Facts) Result
}

func pass(found ...string) Result { return Result{Status: Pass, Found: found} }
func fail(found ...string) Result { return Result{Status: Fail, Found: found} }

// failOr is pass when ok, else fail, with the same findings.
func failOr(ok bool, found ...string) Result {
	if ok {
		return pass(found...)
	}
	return fail(found...)
}

// Items is the benchmark's sections 1.1 to 1.4 and 2, in its order and
// numbering.
func Items() []Item {
	return []Item{
		// 1.1 Control plane node configuration files. A component's
		// "pod specification file" is whatever defines it in anvil's
		// layout: its unit, static pod manifest or process spec, and the
		// configuration file its --config names.
		{"1.1.1", "Ensure that the API server pod specification file permissions are set to 600 or more restrictive", true, specMode(APIServer)},
		{"1.1.2", "Ensure that the API server pod specification file ownership is set to root:root", true, specOwner(APIServer)},
		{"1.1.3", "Ensure that the controller manager pod specification file permissions are set to 600 or more restrictive", true, specMode(ControllerManager)},
		{"1.1.4", "Ensure that the controller manager pod specification file ownership is set to root:root", true, specOwner(ControllerManager)},
		{"1.1.5", "Ensure that the scheduler pod specification file permissions are set to 600 or more restrictive", true, specMode(Scheduler)},
		{"1.1.6", "Ensure that the scheduler pod specification file ownership is set to root:root", true, specOwner(Scheduler)},
		{"1.1.7", "Ensure that the etcd pod specification file permissions are set to 600 or more restrictive", true, specMode(Etcd)},
		{"1.1.8", "Ensure that the etcd pod specification file ownership is set to root:root", true, specOwner(Etcd)},
		{"1.1.9", "Ensure that the Container Network Interface file permissions are set to 600 or more restrictive", false, cniMode},
		{"1.1.10", "Ensure that the Container Network Interface file ownership is set to root:root", false, cniOwner},
		{"1.1.11", "Ensure that the etcd data directory permissions are set to 700 or more restrictive", true, etcdDataMode},
		{"1.1.12", "Ensure that the etcd data directory ownership is set to etcd:etcd", true, etcdDataOwner},
		{"1.1.13", "Ensure that the default administrative credential file permissions are set to 600", true, pathsMode(func(f *Facts) []string { return f.AdminKubeconfigs }, 0o600)},
		{"1.1.14", "Ensure that the default administrative credential file ownership is set to root:root", true, pathsOwner(func(f *Facts) []string { return f.AdminKubeconfigs })},
		{"1.1.15", "Ensure that the scheduler.conf file permissions are set to 600 or more restrictive", true, pathsMode(func(f *Facts) []string { return f.SchedulerKubeconfigs }, 0o600)},
		{"1.1.16", "Ensure that the scheduler.conf file ownership is set to root:root", true, pathsOwner(func(f *Facts) []string { return f.SchedulerKubeconfigs })},
		{"1.1.17", "Ensure that the controller-manager.conf file permissions are set to 600 or more restrictive", true, pathsMode(func(f *Facts) []string { return f.ControllerManagerKubeconfigs }, 0o600)},
		{"1.1.18", "Ensure that the controller-manager.conf file ownership is set to root:root", true, pathsOwner(func(f *Facts) []string { return f.ControllerManagerKubeconfigs })},
		{"1.1.19", "Ensure that the Kubernetes PKI directory and file ownership is set to root:root", true, pkiOwner},
		{"1.1.20", "Ensure that the Kubernetes PKI certificate file permissions are set to 600 or more restrictive", false, pkiMode(".crt")},
		{"1.1.21", "Ensure that the Kubernetes PKI key file permissions are set to 600", false, pkiMode(".key")},

		// 1.2 API server.
		{"1.2.1", "Ensure that the --anonymous-auth argument is set to false", false, anonymousAuth},
		{"1.2.2", "Ensure that the --token-auth-file parameter is not set", true, flagUnset(APIServer, "token-auth-file")},
		{"1.2.3", "Ensure that the --DenyServiceExternalIPs is set", false, listHas(APIServer, "enable-admission-plugins", "DenyServiceExternalIPs")},
		{"1.2.4", "Ensure that the --kubelet-client-certificate and --kubelet-client-key arguments are set as appropriate", true, flagsSet(APIServer, "kubelet-client-certificate", "kubelet-client-key")},
		{"1.2.5", "Ensure that the --kubelet-certificate-authority argument is set as appropriate", true, flagsSet(APIServer, "kubelet-certificate-authority")},
		{"1.2.6", "Ensure that the --authorization-mode argument is not set to AlwaysAllow", true, authorizer("AlwaysAllow", false)},
		{"1.2.7", "Ensure that the --authorization-mode argument includes Node", true, authorizer("Node", true)},
		{"1.2.8", "Ensure that the --authorization-mode argument includes RBAC", true, authorizer("RBAC", true)},
		{"1.2.9", "Ensure that the admission control plugin EventRateLimit is set", false, eventRateLimit},
		{"1.2.10", "Ensure that the admission control plugin AlwaysAdmit is not set", true, listLacks(APIServer, "enable-admission-plugins", "AlwaysAdmit")},
		{"1.2.11", "Ensure that the admission control plugin AlwaysPullImages is set", false, alwaysPullImages},
		{"1.2.12", "Ensure that the admission control plugin ServiceAccount is set", true, listLacks(APIServer, "disable-admission-plugins", "ServiceAccount")},
		{"1.2.13", "Ensure that the admission control plugin NamespaceLifecycle is set", true, listLacks(APIServer, "disable-admission-plugins", "NamespaceLifecycle")},
		{"1.2.14", "Ensure that the admission control plugin NodeRestriction is set", true, listHas(APIServer, "enable-admission-plugins", "NodeRestriction")},
		{"1.2.15", "Ensure that the --profiling argument is set to false", true, flagIs(APIServer, "profiling", "false", false)},
		{"1.2.16", "Ensure that the --audit-log-path argument is set", true, auditLogPath},
		{"1.2.17", "Ensure that the --audit-log-maxage argument is set to 30 or as appropriate", true, flagAtLeast(APIServer, "audit-log-maxage", 30)},
		{"1.2.18", "Ensure that the --audit-log-maxbackup argument is set to 10 or as appropriate", true, flagAtLeast(APIServer, "audit-log-maxbackup", 10)},
		{"1.2.19", "Ensure that the --audit-log-maxsize argument is set to 100 or as appropriate", true, flagAtLeast(APIServer, "audit-log-maxsize", 100)},
		{"1.2.20", "Ensure that the --request-timeout argument is set as appropriate", false, requestTimeout},
		{"1.2.21", "Ensure that the --service-account-lookup argument is set to true", true, flagIs(APIServer, "service-account-lookup", "true", true)},
		{"1.2.22", "Ensure that the --service-account-key-file argument is set as appropriate", true, flagsSet(APIServer, "service-account-key-file")},
		{"1.2.23", "Ensure that the --etcd-certfile and --etcd-keyfile arguments are set as appropriate", true, flagsSet(APIServer, "etcd-certfile", "etcd-keyfile")},
		{"1.2.24", "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate", true, flagsSet(APIServer, "tls-cert-file", "tls-private-key-file")},
		{"1.2.25", "Ensure that the --client-ca-file argument is set as appropriate", true, flagsSet(APIServer, "client-ca-file")},
		{"1.2.26", "Ensure that the --etcd-cafile argument is set as appropriate", true, flagsSet(APIServer, "etcd-cafile")},
		{"1.2.27", "Ensure that the --encryption-provider-config argument is set as appropriate", false, encryptionConfig},
		{"1.2.28", "Ensure that encryption providers are appropriately configured", false, encryptionProviders},
		{"1.2.29", "Ensure that the API Server only makes use of Strong Cryptographic Ciphers", false, strongCiphersCheck},

		// 1.3 Controller manager.
		{"1.3.1", "Ensure that the --terminated-pod-gc-threshold argument is set as appropriate", false, flagsSet(ControllerManager, "terminated-pod-gc-threshold")},
		{"1.3.2", "Ensure that the --profiling argument is set to false", true, flagIs(ControllerManager, "profiling", "false", false)},
		{"1.3.3", "Ensure that the --use-service-account-credentials argument is set to true", true, flagIs(ControllerManager, "use-service-account-credentials", "true", false)},
		{"1.3.4", "Ensure that the --service-account-private-key-file argument is set as appropriate", true, flagsSet(ControllerManager, "service-account-private-key-file")},
		{"1.3.5", "Ensure that the --root-ca-file argument is set as appropriate", true, flagsSet(ControllerManager, "root-ca-file")},
		{"1.3.6", "Ensure that the RotateKubeletServerCertificate argument is set to true", true, rotateKubeletServerCertificate},
		{"1.3.7", "Ensure that the --bind-address argument is set to 127.0.0.1", true, flagIs(ControllerManager, "bind-address", "127.0.0.1", false)},

		// 1.4 Scheduler.
		{"1.4.1", "Ensure that the --profiling argument is set to false", true, flagIs(Scheduler, "profiling", "false", false)},
		{"1.4.2", "Ensure that the --bind-address argument is set to 127.0.0.1", true, flagIs(Scheduler, "bind-address", "127.0.0.1", false)},

		// 2 etcd, whose flags anvil's etcd reads from its configuration
		// file.
		{"2.1", "Ensure that the --cert-file and --key-file arguments are set as appropriate", true, flagsSet(Etcd, "cert-file", "key-file")},
		{"2.2", "Ensure that the --client-cert-auth argument is set to true", true, flagIs(Etcd, "client-cert-auth", "true", false)},
		{"2.3", "Ensure that the --auto-tls argument is not set to true", true, flagNot(Etcd, "auto-tls", "true")},
		{"2.4", "Ensure that the --peer-cert-file and --peer-key-file arguments are set as appropriate", true, flagsSet(Etcd, "peer-cert-file", "peer-key-file")},
		{"2.5", "Ensure that the --peer-client-cert-auth argument is set to true", true, flagIs(Etcd, "peer-client-cert-auth", "true", false)},
		{"2.6", "Ensure that the --peer-auto-tls argument is not set to true", true, flagNot(Etcd, "peer-auto-tls", "true")},
		{"2.7", "Ensure that a unique Certificate Authority is used for etcd", false, etcdCA},
	}
}

// Run checks every item against f.
func Run(f *Facts) Report {
	var r Report
	for _, it := range Items() {
		r.Results = append(r.Results, ItemResult{Item: it, Result: it.Check(f)})
	}
	return r
}

// withProc runs check over c's flags. It fails when c is not running, or
// when the configuration file that holds its settings could not be read
// (the flags left would not be what c runs with).
func withProc(c Component, check func(Flags) Result) func(*Facts) Result {
	return func(f *Facts) Result {
		r := f.Procs[c]
		if r == nil {
			return fail(string(c) + " is not running: no command line to check")
		}
		if file := configFile(c, r.Flags); file != "" {
			if p, bad := f.Problems[file]; bad {
				return fail(fmt.Sprintf("%s's configuration file %s: %s", c, file, p))
			}
		}
		return check(r.Flags)
	}
}

// sameValue compares a flag's value with the one an item asks for: as
// booleans when both are (the components' flag parsing takes "True", "1"
// and "t" for true), as strings otherwise.
func sameValue(v, want string) bool {
	a, errA := strconv.ParseBool(v)
	b, errB := strconv.ParseBool(want)
	if errA == nil && errB == nil {
		return a == b
	}
	return v == want
}

// flagsSet passes when every flag is set to something.
func flagsSet(c Component, names ...string) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		ok := true
		var found []string
		for _, n := range names {
			v, set := fl.Get(n)
			ok = ok && set && v != ""
			found = append(found, fl.Show(n))
		}
		return failOr(ok, found...)
	})
}

// flagUnset passes when the flag is not set.
func flagUnset(c Component, name string) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		_, set := fl.Get(name)
		return failOr(!set, fl.Show(name))
	})
}

// flagIs passes when the flag is want, or, with orUnset, when it is not
// set (its default being want).
func flagIs(c Component, name, want string, orUnset bool) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		v, set := fl.Get(name)
		return failOr((set && sameValue(v, want)) || (!set && orUnset), fl.Show(name))
	})
}

// flagNot passes when the flag is anything but bad (unset included).
func flagNot(c Component, name, bad string) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		v, set := fl.Get(name)
		return failOr(!set || !sameValue(v, bad), fl.Show(name))
	})
}

// flagAtLeast passes when the flag is a whole number of at least min.
func flagAtLeast(c Component, name string, min int) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		v, _ := fl.Get(name)
		n, err := strconv.Atoi(v)
		return failOr(err == nil && n >= min, fl.Show(name))
	})
}

// listHas passes when the comma-separated flag holds want.
func listHas(c Component, name, want string) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		return failOr(slices.Contains(fl.List(name), want), fl.Show(name))
	})
}

// listLacks passes when the comma-separated flag does not hold bad (an
// unset flag holds nothing).
func listLacks(c Component, name, bad string) func(*Facts) Result {
	return withProc(c, func(fl Flags) Result {
		return failOr(!slices.Contains(fl.List(name), bad), fl.Show(name))
	})
}

// filesCheck checks each of paths: a missing one fails, as does one ok
// rejects; found lists each as "PATH MODE OWNER:GROUP".
func filesCheck(f *Facts, paths []string, ok func(File) bool) Result {
	if len(paths) == 0 {
		return fail("no file to check")
	}
	good := true
	var found []string
	for _, p := range paths {
		file, exists := f.Files[p]
		if !exists {
			good = false
			found = append(found, p+": no such file")
			continue
		}
		if !ok(file) {
			good = false
		}
		found = append(found, file.String())
	}
	return failOr(good, found...)
}

func modeWithin(max fs.FileMode) func(File) bool {
	return func(f File) bool { return f.Perm()&^max == 0 }
}

func ownedBy(user, group string) func(File) bool {
	return func(f File) bool { return f.Owner == user && f.Group == group }
}

// specMode and specOwner check the files that define c.
func specMode(c Component) func(*Facts) Result {
	return func(f *Facts) Result {
		if len(f.Specs[c]) == 0 {
			return fail("no unit, static pod manifest or process spec of " + string(c))
		}
		return filesCheck(f, f.Specs[c], modeWithin(0o600))
	}
}

func specOwner(c Component) func(*Facts) Result {
	return func(f *Facts) Result {
		if len(f.Specs[c]) == 0 {
			return fail("no unit, static pod manifest or process spec of " + string(c))
		}
		return filesCheck(f, f.Specs[c], ownedBy("root", "root"))
	}
}

func pathsMode(paths func(*Facts) []string, max fs.FileMode) func(*Facts) Result {
	return func(f *Facts) Result { return filesCheck(f, paths(f), modeWithin(max)) }
}

func pathsOwner(paths func(*Facts) []string) func(*Facts) Result {
	return func(f *Facts) Result { return filesCheck(f, paths(f), ownedBy("root", "root")) }
}

func etcdDataMode(f *Facts) Result {
	return filesCheck(f, []string{f.EtcdDataDir}, modeWithin(0o700))
}

func pkiOwner(f *Facts) Result {
	if len(f.PKI) == 0 {
		return fail(f.PKIDir + ": no such directory")
	}
	var bad []string
	for _, file := range f.PKI {
		if !ownedBy("root", "root")(file) {
			bad = append(bad, file.String())
		}
	}
	if len(bad) > 0 {
		return fail(bad...)
	}
	return pass(fmt.Sprintf("%s and the %d files and directories in it: root:root", f.PKIDir, len(f.PKI)-1))
}

// pkiMode checks the PKI files with suffix (certificates, keys): 600 or
// less.
func pkiMode(suffix string) func(*Facts) Result {
	return func(f *Facts) Result {
		var n int
		var bad []string
		for _, file := range f.PKI {
			if file.IsDir() || !strings.HasSuffix(file.Path, suffix) {
				continue
			}
			n++
			if !modeWithin(0o600)(file) {
				bad = append(bad, file.String())
			}
		}
		switch {
		case n == 0:
			return fail(fmt.Sprintf("no *%s file in %s", suffix, f.PKIDir))
		case len(bad) > 0:
			return fail(bad...)
		}
		return pass(fmt.Sprintf("all %d *%s files in %s: 600 or less", n, suffix, f.PKIDir))
	}
}
