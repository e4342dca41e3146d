package images

import (
	"fmt"
	"slices"
	"strings"
)

// Component names: the upstream binaries anvil builds and runs.
const (
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kubectl               = "kubectl"
)

// Release is one supported Kubernetes version and what goes with it.
type Release struct {
	// Version is the Kubernetes version, e.g. "v1.37.2".
	Version string
	// BuildDate is the release's tag time; it is stamped into the binaries
	// (instead of the build's own time) so that builds are reproducible.
	BuildDate string
	// Etcd is the etcd version anvil embeds for this release.
	Etcd string
	// Components are the binaries built for this release.
	Components []string
}

// releases is the support table. It is a function, not a variable, so no
// caller can change it.
func releases() []Release {
	return []Release{{
		Version:    "v1.37.2",
		BuildDate:  "2026-10-27T12:01:04Z",
		Etcd:       "v3.7.3",
		Components: []string{KubeAPIServer, KubeControllerManager, KubeScheduler, Kubectl},
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

// Has reports whether the release includes component.
func (r Release) Has(component string) bool { return slices.Contains(r.Components, component) }

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
