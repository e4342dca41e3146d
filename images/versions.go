package images

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Component names: the upstream binaries anvil builds and runs, as they are
// named in a build or install directory.
const (
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kubectl               = "kubectl"

	Kubelet        = "kubelet"
	KubeProxy      = "kube-proxy"
	Containerd     = "containerd"
	ContainerdShim = "containerd-shim-runc-v2"
	Ctr            = "ctr"
	Runc           = "runc"
	Crictl         = "crictl"
)

// CNIPlugins are the CNI plugins a node's pod network uses (podnet's bridge
// config, containerd's loopback); a build or install directory keeps them
// in CNISubdir.
func CNIPlugins() []string { return []string{"bridge", "host-local", "loopback", "portmap"} }

// CNISubdir holds the CNI plugins inside a build or install directory.
const CNISubdir = "cni"

// Release is one supported Kubernetes version and what goes with it.
type Release struct {
	// Version is the Kubernetes version, e.g. "v1.37.2".
	Version string
	// BuildDate is the release's tag time; it is stamped into the binaries
	// (instead of the build's own time) so that builds are reproducible.
	BuildDate string
	// Etcd is the etcd version anvil embeds for this release.
	Etcd string
	// Components are the binaries built from k8s.io/kubernetes for the
	// control plane (kubectl with them: it is an administrator's tool).
	Components []string
	// NodeComponents are the binaries built from k8s.io/kubernetes that
	// every node runs.
	NodeComponents []string

	// The node stack's pins. Each upstream version is also required in its
	// build module's go.mod (images/<module>), and a build refuses to run
	// when the two disagree.
	Containerd string
	Runc       string
	CNIPlugins string
	CriTools   string
	CoreDNS    string
	// Pause is the pause image's tag, as registry.k8s.io names it; anvil
	// builds its own pause program under that name.
	Pause string
	// Suite names the images the release's e2e suite uses, which a
	// conformance build makes.
	Suite SuiteImages
	// ModuleSuffix tells an older release's Kubernetes build modules from
	// the newest's: images/kube<suffix> and images/kubenode<suffix>.
	ModuleSuffix string
}

// releases is the support table. It is a function, not a variable, so no
// caller can change it.
func releases() []Release {
	return []Release{{
		Version:        "v1.37.2",
		BuildDate:      "2026-10-27T12:01:04Z",
		Etcd:           "v3.7.3",
		Components:     []string{KubeAPIServer, KubeControllerManager, KubeScheduler, Kubectl},
		NodeComponents: []string{Kubelet, KubeProxy},
		Containerd:     "v2.4.2",
		Runc:           "v1.5.3",
		CNIPlugins:     "v1.10.0",
		CriTools:       "v1.37.0",
		CoreDNS:        "v1.14.7",
		Pause:          "3.10.1",
		Suite: SuiteImages{
			Agnhost:         "registry.k8s.io/e2e-test-images/agnhost:2.66.1",
			AgnhostPrev:     "registry.k8s.io/e2e-test-images/agnhost:2.55",
			Busybox:         "registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
			Nginx:           "registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
			NginxNew:        "registry.k8s.io/e2e-test-images/nginx:1.28.0-2",
			GlibcDNSTesting: "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
			Pause:           "registry.k8s.io/pause:3.10.2",
			Nonewprivs:      "registry.k8s.io/e2e-test-images/nonewprivs:1.4",
			Nautilus:        "registry.k8s.io/e2e-test-images/nautilus:1.8",
			Kitten:          "registry.k8s.io/e2e-test-images/kitten:1.8",
			SampleAPIServer: "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2",
			Etcd:            "registry.k8s.io/etcd:3.7.0-0",
			EtcdVersion:     "v3.7.0",
			Ginkgo:          "v2.32.0",
		},
	}, {
		// The previous minor, which clusters upgrade from; the node stack
		// is the newest release's (its versions support both minors).
		Version:        "v1.36.3",
		BuildDate:      "2026-07-22T18:07:38Z",
		Etcd:           "v3.7.3",
		Components:     []string{KubeAPIServer, KubeControllerManager, KubeScheduler, Kubectl},
		NodeComponents: []string{Kubelet, KubeProxy},
		Containerd:     "v2.4.2",
		Runc:           "v1.5.3",
		CNIPlugins:     "v1.10.0",
		CriTools:       "v1.37.0",
		CoreDNS:        "v1.14.7",
		Pause:          "3.10.1",
		ModuleSuffix:   "-v1.36",
	}}
}

// DefaultVersion is the version anvil installs when the cluster file names none.
const DefaultVersion = "v1.37.2"

// Releases returns every supported release, newest first.
func Releases() []Release { return releases() }

// SupportedVersions lists the supported Kubernetes versions.
func SupportedVersions() []string {
	var out []string
	for _, r := range releases() {
		out = append(out, r.Version)
	}
	return out
}

// UnsupportedVersionError names a version anvil cannot run and the ones it can.
type UnsupportedVersionError struct{ Version string }

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("kubernetes version %q is not supported: supported versions are %s",
		e.Version, strings.Join(SupportedVersions(), ", "))
}

// Lookup returns the release for version.
func Lookup(version string) (Release, error) {
	for _, r := range releases() {
		if r.Version == version {
			return r, nil
		}
	}
	return Release{}, &UnsupportedVersionError{Version: version}
}

// Has reports whether the release includes component (a Kubernetes binary).
func (r Release) Has(component string) bool {
	return slices.Contains(r.Components, component) || slices.Contains(r.NodeComponents, component)
}

// ControlPlane lists the components a master runs (kubectl is a client).
func (r Release) ControlPlane() []string {
	return []string{KubeAPIServer, KubeControllerManager, KubeScheduler}
}

// ImageRef is the OCI image reference of a component built by anvil, as the
// static-pod manifests name it and as the airgap bundle tags it. The
// "localhost/anvil" prefix marks images that never came from a registry.
func ImageRef(version, component string) string {
	return "localhost/anvil/" + component + ":" + version
}

// PauseImage is the sandbox image the kubelet and containerd expect; anvil
// builds it (images/pause) and ships it as an archive, so nothing is pulled.
func (r Release) PauseImage() string { return "registry.k8s.io/pause:" + r.Pause }

// CoreDNSImage is the cluster DNS image, built from the pinned CoreDNS
// module and named as Kubernetes' own manifests name it.
func (r Release) CoreDNSImage() string { return "registry.k8s.io/coredns/coredns:" + r.CoreDNS }

// TestappRepo is the repository of anvil's test image (images/testapp); its
// tag is the short input hash of the build that made it, recorded in the
// payload (File.Image), so a changed program never hides behind an old tag.
const TestappRepo = "localhost/anvil/testapp"

// CheckUpgrade applies Kubernetes' version skew policy to a cluster at
// version from moving to version to: both supported, the same major, and
// the control plane at most one minor up at a time. A patch change either
// way is allowed; a downgrade across minors is not (objects may already be
// stored in the newer minor's form), except when rollback says the move
// undoes an upgrade from exactly that version that did not finish.
func CheckUpgrade(from, to string, rollback bool) error {
	for _, v := range []string{from, to} {
		if _, err := Lookup(v); err != nil {
			return err
		}
	}
	return checkSkew(from, to, rollback)
}

func checkSkew(from, to string, rollback bool) error {
	fmaj, fmin, ok1 := minorOf(from)
	tmaj, tmin, ok2 := minorOf(to)
	switch {
	case !ok1 || !ok2:
		return fmt.Errorf("cannot read the versions %s and %s", from, to)
	case fmaj != tmaj:
		return fmt.Errorf("%s to %s changes the major version, which Kubernetes does not support", from, to)
	case tmin > fmin+1:
		return fmt.Errorf("%s to %s skips a minor: the control plane upgrades one minor at a time (to v%d.%d first)", from, to, fmaj, fmin+1)
	case tmin < fmin && !(rollback && tmin == fmin-1):
		return fmt.Errorf("%s to %s is a downgrade across minors, which Kubernetes does not support: only an upgrade is undone that way (anvil cluster apply --rollback)", from, to)
	}
	return nil
}

// minorOf reads "vMAJOR.MINOR.PATCH".
func minorOf(v string) (major, minor int, ok bool) {
	a, b := majorMinor(v)
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	return x, y, err1 == nil && err2 == nil
}
