package cis

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// The checks that need more than one flag or file, and the ones where
// anvil differs from the benchmark on purpose: each exception's reason is
// written where it is decided, and it is given only for what anvil itself
// does (any other difference fails).

// hostLocalLock tells host-local's lock file: an empty file it makes in
// each network's directory under /var/lib/cni/networks, only ever
// flock'ed.
func hostLocalLock(f File) bool {
	return path.Base(f.Path) == "lock" && strings.Contains(f.Path, cniDataDir+"/") && f.Size == 0 && !f.IsDir()
}

const hostLocalLockWhy = "host-local, the CNI plugins' address manager that anvil builds unchanged, makes " +
	"its lock file 0750 on a node's first pod; it is empty and only ever locked, so it holds nothing to " +
	"read. The CNI configuration and every address reservation are 600. anvil's agent, which could " +
	"tighten the lock, is confined away from /var/lib/cni (its unit may write /etc/cni/net.d alone)."

func cniMode(f *Facts) Result {
	if len(f.CNI) == 0 {
		return pass("no CNI configuration or address reservations on this machine")
	}
	var found []string
	var lock bool
	good := true
	for _, file := range f.CNI {
		switch {
		case modeWithin(0o600)(file):
		case hostLocalLock(file) && modeWithin(0o750)(file):
			lock = true
		default:
			good = false
		}
		found = append(found, file.String())
	}
	switch {
	case !good:
		return fail(found...)
	case lock:
		return Result{Status: Exception, Found: found, Why: hostLocalLockWhy}
	}
	return pass(found...)
}

func cniOwner(f *Facts) Result {
	if len(f.CNI) == 0 {
		return pass("no CNI configuration or address reservations on this machine")
	}
	var paths []string
	for _, file := range f.CNI {
		paths = append(paths, file.Path)
	}
	return filesCheck(f, paths, ownedBy("root", "root"))
}

func etcdDataOwner(f *Facts) Result {
	dir, ok := f.Files[f.EtcdDataDir]
	if !ok {
		return fail(f.EtcdDataDir + ": no such directory")
	}
	if ownedBy("etcd", "etcd")(dir) {
		return pass(dir.String())
	}
	r := f.Procs[Etcd]
	if r == nil || r.User != "root" || !ownedBy("root", "root")(dir) || !modeWithin(0o700)(dir) {
		user := "not running"
		if r != nil {
			user = "runs as " + r.User
		}
		return fail(dir.String(), "etcd "+user)
	}
	return Result{Status: Exception, Found: []string{dir.String(), fmt.Sprintf("etcd (pid %d) runs as root", r.PID)},
		Why: "anvil's etcd is the member embedded in anvil (`anvil etcd`), which runs as root in every layout " +
			"(a unit with no User=, a static pod with no runAsUser, a child of anvil's supervisor), so its data " +
			"directory is root's. What the item is for — no other user reads etcd's data — 0700 (1.1.11) " +
			"gives. A user of etcd's own would have to own etcd's keys too, which anvil writes root's, 0600."}
}

// anvilAnonymousPaths are the paths anvil's authentication config lets
// anonymous requests reach.
func anvilAnonymousPaths() []string {
	return []string{"/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info"}
}

func anonymousAuth(f *Facts) Result {
	if f.Procs[APIServer] == nil {
		return fail("kube-apiserver is not running: no command line to check")
	}
	a := f.Anonymous
	if !a.Enabled {
		return pass("anonymous requests refused (" + a.Source + ")")
	}
	found := "anonymous requests allowed on every path (" + a.Source + ")"
	if len(a.Paths) == 0 {
		return fail(found)
	}
	found = "anonymous requests allowed only on " + strings.Join(a.Paths, ", ") + " (" + a.Source + ")"
	for _, p := range a.Paths {
		if !slices.Contains(anvilAnonymousPaths(), p) {
			return fail(found)
		}
	}
	return Result{Status: Exception, Found: []string{found},
		Why: "A joining node reads the cluster-info ConfigMap before it has any credential (it checks the " +
			"CA in it against the hash it was given), and probes and load balancers read the health " +
			"endpoints without one; kubeadm's apiserver keeps --anonymous-auth=true for the same reasons. " +
			"anvil allows anonymous requests on exactly these paths, not everywhere, and the only grant it " +
			"makes to system:anonymous is reading that one ConfigMap."}
}

// authorizer checks the apiserver's authorizers for mode: present when
// want is true, absent otherwise.
func authorizer(mode string, want bool) func(*Facts) Result {
	return func(f *Facts) Result {
		if f.Procs[APIServer] == nil {
			return fail("kube-apiserver is not running: no command line to check")
		}
		found := "authorizers: " + strings.Join(f.Authorizers, ",")
		if len(f.Authorizers) == 0 {
			return fail("no authorizer could be read")
		}
		return failOr(slices.Contains(f.Authorizers, mode) == want, found)
	}
}

func eventRateLimit(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		if slices.Contains(fl.List("enable-admission-plugins"), "EventRateLimit") {
			return pass(fl.Show("enable-admission-plugins"))
		}
		return Result{Status: Exception, Found: []string{fl.Show("enable-admission-plugins")},
			Why: "EventRateLimit's configuration (eventratelimit.admission.k8s.io) is still v1alpha1 in " +
				"Kubernetes 1.37 and its limits are a judgement per cluster, so anvil turns no alpha API on by " +
				"default; API Priority and Fairness, on by default, already keeps a flood of requests " +
				"(Events among them) from starving the rest. An operator adds it in " +
				"components.apiServer.extraArgs: enable-admission-plugins (keeping NodeRestriction and " +
				"DenyServiceExternalIPs) and admission-control-config-file."}
	})(f)
}

func alwaysPullImages(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		if slices.Contains(fl.List("enable-admission-plugins"), "AlwaysPullImages") {
			return pass(fl.Show("enable-admission-plugins"))
		}
		return Result{Status: Exception, Found: []string{fl.Show("enable-admission-plugins")},
			Why: "anvil's nodes run images imported from archives into containerd, which no registry " +
				"need serve: CoreDNS (imagePullPolicy: Never) and the cluster file's images:, an airgap " +
				"bundle's. AlwaysPullImages rewrites every pod's pull policy to Always, so those pods " +
				"would not start where the registry cannot be reached. What it guards against, a pod " +
				"using another tenant's private image already pulled to a shared node, is the operator's " +
				"to weigh: where nodes pull from a registry, add it in components.apiServer.extraArgs " +
				"(keeping NodeRestriction and DenyServiceExternalIPs)."}
	})(f)
}

func auditLogPath(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		v, _ := fl.Get("audit-log-path")
		return failOr(v != "" && v != "-", fl.Show("audit-log-path"))
	})(f)
}

func requestTimeout(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		found := fl.Show("request-timeout")
		if _, set := fl.Get("request-timeout"); !set {
			found += ": the default, 60s"
		}
		return Result{Status: Info, Found: []string{found},
			Why: "The benchmark asks for a value \"as appropriate and if needed\": how long a request may " +
				"take is a judgement per cluster. anvil keeps the default; watches and other long-running " +
				"requests are not bound by it."}
	})(f)
}

func encryptionConfig(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		file, set := fl.Get("encryption-provider-config")
		if !set || file == "" {
			return fail(fl.Show("encryption-provider-config"))
		}
		if p, bad := f.Problems[file]; bad {
			return fail(fl.Show("encryption-provider-config"), file+": "+p)
		}
		return pass(fl.Show("encryption-provider-config"))
	})(f)
}

func encryptionProviders(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		e := f.Encryption
		if e.Path == "" {
			return fail("--encryption-provider-config not set: Secrets are stored as they are")
		}
		if p, bad := f.Problems[e.Path]; bad {
			return fail(e.Path + ": " + p)
		}
		if len(e.Providers) == 0 {
			return fail(e.Path + ": no provider for secrets")
		}
		found := fmt.Sprintf("providers of secrets in %s: %s (the first encrypts every write)", e.Path, strings.Join(e.Providers, ", "))
		return failOr(slices.Contains([]string{"aescbc", "kms", "secretbox"}, e.Providers[0]), found)
	})(f)
}

// strongCiphers are the cipher suites the benchmark (1.2.29) accepts.
func strongCiphers() []string {
	return []string{
		"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	}
}

func strongCiphersCheck(f *Facts) Result {
	return withProc(APIServer, func(fl Flags) Result {
		suites := fl.List("tls-cipher-suites")
		var weak []string
		for _, s := range suites {
			if !slices.Contains(strongCiphers(), s) {
				weak = append(weak, s)
			}
		}
		found := []string{fl.Show("tls-cipher-suites"), fl.Show("tls-min-version")}
		if len(weak) > 0 {
			found = append(found, "not among the benchmark's strong ciphers: "+strings.Join(weak, ", "))
		}
		return failOr(len(suites) > 0 && len(weak) == 0, found...)
	})(f)
}

func rotateKubeletServerCertificate(f *Facts) Result {
	return withProc(ControllerManager, func(fl Flags) Result {
		// The gate's last setting wins, as in the flag; unset, it keeps
		// its default, true. A value that is no boolean fails (the
		// manager would not start with it).
		on, set := true, false
		for _, g := range fl.List("feature-gates") {
			k, v, _ := strings.Cut(g, "=")
			if strings.TrimSpace(k) == "RotateKubeletServerCertificate" {
				b, err := strconv.ParseBool(strings.TrimSpace(v))
				on, set = err == nil && b, true
			}
		}
		found := fl.Show("feature-gates")
		if !set {
			found += ": RotateKubeletServerCertificate keeps its default, true"
		}
		return failOr(on, found)
	})(f)
}

// etcdCA passes when no CA etcd trusts (for clients or peers) is one the
// apiserver trusts for its clients: a certificate of the cluster CA, which
// every node and user has one of, must not open etcd.
func etcdCA(f *Facts) Result {
	if f.Procs[Etcd] == nil {
		return fail("etcd is not running: no configuration to check")
	}
	if f.Procs[APIServer] == nil {
		return fail("kube-apiserver is not running: no client CA to compare with")
	}
	etcdFl, apiFl := f.Procs[Etcd].Flags, f.Procs[APIServer].Flags
	clientCA, _ := apiFl.Get("client-ca-file")
	found := []string{apiFl.Show("client-ca-file")}
	if clientCA == "" {
		return fail(found...)
	}
	clusterKeys, ok := f.CAKeys[clientCA]
	if !ok {
		return fail(append(found, clientCA+": "+f.Problems[clientCA])...)
	}
	good := true
	for _, n := range []string{"trusted-ca-file", "peer-trusted-ca-file"} {
		file, set := etcdFl.Get(n)
		found = append(found, etcdFl.Show(n))
		if !set || file == "" {
			good = false
			continue
		}
		keys, ok := f.CAKeys[file]
		if !ok {
			good = false
			found = append(found, file+": "+f.Problems[file])
			continue
		}
		for _, k := range keys {
			if slices.Contains(clusterKeys, k) {
				good = false
				found = append(found, file+" holds a CA of the apiserver's clients (public key sha256 "+k[:16]+"…)")
			}
		}
	}
	if good {
		found = append(found, "etcd's CA shares no key with the apiserver's client CA")
	}
	return failOr(good, found...)
}
