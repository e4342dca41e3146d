package images

// Conformance build names: what `anvil images build --conformance` makes.
const (
	BuildE2E             = "e2e"
	BuildGinkgo          = "ginkgo"
	BuildAgnhost         = "agnhost"
	BuildBusybox         = "busybox"
	BuildNginx           = "nginx"
	BuildGlibcDNSTesting = "glibc-dns-testing"
	BuildE2EPause        = "e2e-pause"
	BuildNonewprivs      = "nonewprivs"
	BuildNautilus        = "nautilus"
	BuildKitten          = "kitten"
	BuildSampleAPIServer = "sample-apiserver"
	BuildE2EEtcd         = "e2e-etcd"
)

// E2EBinary is the upstream e2e test binary's name in a conformance build.
const E2EBinary = "e2e.test"

// GinkgoBinary is the ginkgo CLI in a conformance build: it runs e2e.test
// in parallel processes (and the suite's [Serial] tests alone, at the end).
const GinkgoBinary = "ginkgo"

// SuiteImages are the images the release's e2e suite runs, by the names
// and tags it expects (k8s.io/kubernetes test/utils/image/manifest.go). anvil
// builds each here and puts it on every node, so the suite pulls nothing.
type SuiteImages struct {
	Agnhost string
	// AgnhostPrev is the older agnhost a few tests change a workload's
	// image from; anvil's agnhost carries that name too.
	AgnhostPrev     string
	Busybox         string
	Nginx           string
	NginxNew        string
	GlibcDNSTesting string
	// Pause is the suite's pause image (the sandbox image may be older).
	Pause string
	// Nonewprivs prints its effective uid, from a set-user-ID binary.
	Nonewprivs string
	// Nautilus and Kitten are agnhost serving a picture and its
	// data.json (kubectl's Update Demo, image volumes).
	Nautilus string
	Kitten   string
	// SampleAPIServer is the extension apiserver the aggregator test
	// registers (k8s.io/sample-apiserver of the release), and Etcd the
	// etcd it runs beside it; EtcdVersion is that etcd's module version.
	SampleAPIServer string
	Etcd            string
	EtcdVersion     string
	// Ginkgo is the version of github.com/onsi/ginkgo/v2 the suite links;
	// its CLI, of the same version, runs the suite in parallel.
	Ginkgo string
}

// testRoot is the Debian root under agnhost, nginx and glibc-dns-testing,
// with the tools the suite runs inside agnhost (upstream's list on
// Debian's names: a shell, dig, curl, nc, iproute2's ip and ss, socat, iperf),
// Debian's nginx and busybox-static; and agnhost's users and directories.
// One root for all three makes one identical layer, which containerd
// keeps once.
func testRoot() *rootSpec {
	return &rootSpec{
		Packages: []string{"bash", "bind9-dnsutils", "busybox-static", "ca-certificates", "curl", "iperf", "iproute2", "netcat-openbsd", "nginx", "socat", "util-linux"},
		// As agnhost's Dockerfile: its SupplementalGroups test's user and
		// group, netexec's upload directory, the entrypoint tester's
		// second name. nginx logs to the container's output, as
		// upstream's nginx image does.
		Setup: `groupadd -g 50000 group-defined-in-image
useradd -u 1000 -M -G group-defined-in-image user-defined-in-image
mkdir -p /uploads
ln -s agnhost /agnhost-2
ln -sf /dev/stdout /var/log/nginx/access.log
ln -sf /dev/stderr /var/log/nginx/error.log`,
	}
}

// debianBusybox is the busybox image's binary: Debian's busybox-static,
// built here from its source package with one change, in which the
// suite's tests agree with upstream busybox and not with Debian's. Tests
// pass variables whose names are not shell identifiers (data-1, from
// envFrom) and expect `sh -c env` to print them. Upstream ash keeps such
// variables since its commit 9c143ce5; Debian reverts that commit and has
// ash drop them. The revert is there only so that the next patch, the
// debian-installer's FEATURE_DI_ENV_HACK, applies: an option (off in the
// static configuration) that brings back upstream's behaviour. Without
// both, ash is upstream's, in init() and in export -p alike.
func debianBusybox() *busyboxSpec {
	return &busyboxSpec{
		Version:   "1:1.35.0-4+deb12u1",
		DscSHA256: "9c01fe128b0eeded371c70e37d474fdb5055f71b5d0a778db44c6b0c62d3a7fa",
		Flavour:   "static",
		Drop: []droppedPatch{
			{Name: "revert-9c143ce52da11ec3d21a3491c3749841d3dc10f0.patch"},
			{Name: "temp-deb-installer-hack.patch", ConfigSymbols: []string{"CONFIG_FEATURE_DI_ENV_HACK"}},
		},
	}
}

// conformanceBuilds is what a conformance run needs: the upstream e2e test
// binary, built in the conformance module beside the components' (sharing
// Go's build cache with them), and the images its tests use.
func (r Release) conformanceBuilds() []buildSpec {
	root := testRoot()
	return []buildSpec{{
		Name: BuildE2E, Title: "kubernetes e2e", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/kubernetes/test/e2e"}, Test: true,
		LDFlags: versionLDFlags(r),
	}, {
		Name: BuildGinkgo, Title: "ginkgo", Version: r.Suite.Ginkgo, Set: SetConformance,
		Module: "conformance", Upstream: "github.com/onsi/ginkgo/v2",
		Packages: []string{"github.com/onsi/ginkgo/v2/ginkgo"},
		LDFlags:  "-s -w",
	}, {
		Name: BuildAgnhost, Title: "agnhost", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/kubernetes/test/images/agnhost"},
		LDFlags:  "-s -w",
		Image: &imageSpec{Ref: r.Suite.Agnhost, AlsoRefs: []string{r.Suite.AgnhostPrev}, Root: root, Cmd: []string{"pause"},
			Ports: []string{"80/tcp", "5000/tcp", "8080/tcp", "8081/tcp", "9376/tcp"},
			// As agnhost's Dockerfile adds them: test-webserver serves
			// them, and the StatefulSet tests probe /localhost.crt.
			SourceFiles: []sourceFile{
				{Path: "/localhost.crt", From: "test/images/agnhost/porter/localhost.crt"},
				{Path: "/localhost.key", From: "test/images/agnhost/porter/localhost.key"},
			}},
	}, {
		Name: BuildBusybox, Title: "busybox", Set: SetConformance,
		Image: &imageSpec{Ref: r.Suite.Busybox, Root: root, Busybox: debianBusybox(), Cmd: []string{"sh"}},
	}, {
		Name: BuildNginx, Title: "nginx", Set: SetConformance,
		Image: &imageSpec{Ref: r.Suite.Nginx, AlsoRefs: []string{r.Suite.NginxNew}, Root: root,
			Cmd: []string{"nginx", "-g", "daemon off;"}, Ports: []string{"80/tcp"}},
	}, {
		Name: BuildGlibcDNSTesting, Title: "glibc-dns-testing", Set: SetConformance,
		Image: &imageSpec{Ref: r.Suite.GlibcDNSTesting, Root: root, Cmd: []string{"bash"}},
	}, {
		// As its Dockerfile: /usr/local/bin/nnp, set-user-ID root, run
		// by name (no entrypoint).
		Name: BuildNonewprivs, Title: "nonewprivs", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/kubernetes/test/images/nonewprivs"},
		LDFlags:  "-s -w",
		Image:    &imageSpec{Ref: r.Suite.Nonewprivs, BinaryPath: "/usr/local/bin/nnp", Setuid: true, Entrypoint: []string{}, Cmd: []string{"nnp"}},
	}, {
		Name: BuildNautilus, Title: "nautilus", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/kubernetes/test/images/agnhost"},
		LDFlags:  "-s -w",
		Image:    pictureImage(r.Suite.Nautilus, "nautilus", root),
	}, {
		Name: BuildKitten, Title: "kitten", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/kubernetes/test/images/agnhost"},
		LDFlags:  "-s -w",
		Image:    pictureImage(r.Suite.Kitten, "kitten", root),
	}, {
		// As test/images/sample-apiserver's Dockerfile: the binary alone.
		Name: BuildSampleAPIServer, Title: "sample-apiserver", Version: r.Version, Set: SetConformance,
		Module: "conformance", Upstream: "k8s.io/kubernetes",
		Packages: []string{"k8s.io/sample-apiserver"},
		LDFlags:  "-s -w",
		Image:    &imageSpec{Ref: r.Suite.SampleAPIServer},
	}, {
		// The suite runs it as /usr/local/bin/etcd, with flags of its own.
		Name: BuildE2EEtcd, Title: "etcd (e2e)", Version: r.Suite.EtcdVersion, Set: SetConformance,
		Module: "e2eetcd", Upstream: "go.etcd.io/etcd/server/v3",
		Packages: []string{"go.etcd.io/etcd/server/v3"},
		LDFlags:  "-s -w",
		Image:    &imageSpec{Ref: r.Suite.Etcd, BinaryPath: "/usr/local/bin/etcd", Ports: []string{"2379/tcp", "2380/tcp"}},
	}, {
		Name: BuildE2EPause, Title: "pause", Set: SetConformance,
		Packages: []string{anvilModule + "/images/pause"},
		LDFlags:  "-s -w -X main.version=" + tagOf(r.Suite.Pause),
		Image:    &imageSpec{Ref: r.Suite.Pause, User: "65535:65535"},
	}}
}

// pictureImage is test/images/<name>'s Dockerfile: agnhost's image with
// a picture and its data.json beside the binary, serving them.
func pictureImage(ref, name string, root *rootSpec) *imageSpec {
	return &imageSpec{Ref: ref, Root: root, Cmd: []string{"test-webserver"}, Ports: []string{"80/tcp"},
		SourceFiles: []sourceFile{
			{Path: "/" + name + ".jpg", From: "test/images/" + name + "/html/" + name + ".jpg"},
			{Path: "/data.json", From: "test/images/" + name + "/html/data.json"},
		}}
}

func tagOf(ref string) string {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[i+1:]
		}
	}
	return ""
}
