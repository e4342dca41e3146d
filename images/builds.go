package images

import (
	"path"
	"strings"
)

// Build names. A build is one `go build` in one build module, hashed,
// cached and recorded in the payload on its own, so that changing one never
// invalidates another.
const (
	BuildKube       = "kube"
	BuildKubeNode   = "kubenode"
	BuildContainerd = "containerd"
	BuildRunc       = "runc"
	BuildCNI        = "cni"
	BuildCrictl     = "crictl"
	BuildCoreDNS    = "coredns"
	BuildPause      = "pause"
	BuildTestapp    = "testapp"
)

// builds is everything `anvil images build` makes for the release, in the
// order it makes them: the control plane (as before the node stack, so its
// input hash and cached builds stay valid), then the node's Kubernetes
// binaries (from a module of their own, sharing Go's build cache with the
// control plane), the container runtime, the CNI plugins, crictl, and the
// three images.
func (r Release) builds() []buildSpec {
	kubeFlags := versionLDFlags(r)
	return []buildSpec{{
		Name: BuildKube, Title: "kubernetes", Version: r.Version, Set: SetControlPlane,
		Module: "kube" + r.ModuleSuffix, Upstream: "k8s.io/kubernetes",
		Packages: kubePackages(r.Components),
		LDFlags:  kubeFlags,
	}, {
		Name: BuildKubeNode, Title: "kubernetes node", Version: r.Version, Set: SetNode,
		Module: "kubenode" + r.ModuleSuffix, Upstream: "k8s.io/kubernetes",
		Packages: kubePackages(r.NodeComponents),
		LDFlags:  kubeFlags,
	}, {
		Name: BuildContainerd, Title: "containerd", Version: r.Containerd, Set: SetNode,
		Module: "containerd", Upstream: "github.com/containerd/containerd/v2",
		Packages: []string{
			"github.com/containerd/containerd/v2/cmd/" + Containerd,
			"github.com/containerd/containerd/v2/cmd/" + ContainerdShim,
			"github.com/containerd/containerd/v2/cmd/" + Ctr,
		},
		// As containerd's Makefile builds it, statically (CGO off, so
		// without the btrfs snapshotter).
		Tags: []string{"urfave_cli_no_docs"},
		LDFlags: "-s -w -X github.com/containerd/containerd/v2/version.Version=" + r.Containerd +
			" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2",
		RevisionVar: "github.com/containerd/containerd/v2/version.Revision",
	}, {
		Name: BuildRunc, Title: "runc", Version: r.Runc, Set: SetNode,
		Module: "runc", Upstream: "github.com/opencontainers/runc",
		Packages: []string{"github.com/opencontainers/runc"},
		// seccomp needs cgo and libseccomp; netgo and osusergo keep the
		// static binary off glibc's NSS, which a static link cannot use.
		CGO: true, PkgConfig: []string{"libseccomp"},
		Tags:        []string{"seccomp", "netgo", "osusergo", "urfave_cli_no_docs"},
		LDFlags:     "-s -w -extldflags -static -X main.version=" + strings.TrimPrefix(r.Runc, "v"),
		RevisionVar: "main.gitCommit",
	}, {
		Name: BuildCNI, Title: "cni plugins", Version: r.CNIPlugins, Set: SetNode,
		Module: "cni", Upstream: "github.com/containernetworking/plugins",
		Dir:      CNISubdir,
		Packages: cniPackages(),
		LDFlags:  "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=" + r.CNIPlugins,
	}, {
		Name: BuildCrictl, Title: "crictl", Version: r.CriTools, Set: SetNode,
		Module: "critools", Upstream: "sigs.k8s.io/cri-tools",
		Packages: []string{"sigs.k8s.io/cri-tools/cmd/" + Crictl},
		LDFlags:  "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=" + strings.TrimPrefix(r.CriTools, "v"),
	}, {
		Name: BuildCoreDNS, Title: "coredns", Version: r.CoreDNS, Set: SetNode,
		Module: "coredns", Upstream: "github.com/coredns/coredns",
		Packages:    []string{"github.com/coredns/coredns"},
		LDFlags:     "-s -w",
		RevisionVar: "github.com/coredns/coredns/coremain.GitCommit",
		// As CoreDNS's own image: a non-root user that may still bind
		// port 53, through the binary's file capability.
		Image: &imageSpec{Ref: r.CoreDNSImage(), User: "65532:65532", Ports: []string{"53/tcp", "53/udp"}, BindLowPorts: true},
	}, {
		Name: BuildPause, Title: "pause", Version: r.Pause, Set: SetNode,
		Packages: []string{anvilModule + "/images/pause"},
		LDFlags:  "-s -w -X main.version=" + r.Pause,
		Image:    &imageSpec{Ref: r.PauseImage(), User: "65535:65535"},
	}, {
		Name: BuildTestapp, Title: "testapp", Set: SetNode,
		Packages: []string{anvilModule + "/images/testapp"},
		LDFlags:  "-s -w",
		Image:    &imageSpec{Repo: TestappRepo, User: "65532:65532", Cmd: []string{"serve"}, Ports: []string{"8080/tcp"}},
	}}
}

// anvilModule is the path of anvil's own module, whose programs (pause,
// testapp) are built from the checkout itself.
const anvilModule = "anvil.dev/anvil"

// buildSpec declares one build.
type buildSpec struct {
	// Name names the build in the payload and the cache.
	Name string
	// Title and Version name it in progress lines.
	Title   string
	Version string
	// Set is the set every file of the build belongs to.
	Set Set
	// Module is the build module's directory under images/. Empty builds
	// from anvil's own module, whose programs may import only the standard
	// library: the input hash covers their package directory and go.mod,
	// not the rest of anvil.
	Module string
	// Upstream is the module Version pins; the build module's go.mod must
	// require exactly that version.
	Upstream string
	// Packages are the main packages built; each binary is named after
	// the last element of its package path.
	Packages []string
	// Test compiles the package's test binary (go test -c) instead: one
	// package, whose binary is named <last element>.test.
	Test bool
	// Dir is where the binaries go inside the version directory.
	Dir     string
	CGO     bool
	Tags    []string
	LDFlags string
	// RevisionVar is stamped (-X) with the upstream module's checksum from
	// go.sum, which names the exact source as a commit would; the module
	// proxy carries no commit.
	RevisionVar string
	// PkgConfig names the C libraries a cgo build links; their versions
	// are part of the input hash.
	PkgConfig []string
	// Image, when set, ships the build's one binary as an image archive
	// (ImagesSubdir/<Name>.tar) instead of as a binary. An image build
	// without Packages compiles nothing: its image is made from its root
	// alone.
	Image *imageSpec
}

// label names the build in progress lines.
func (s buildSpec) label() string {
	if s.Version == "" {
		return s.Title
	}
	return s.Title + " " + s.Version
}

// binaries are the names the build's binaries get, relative to the
// directory go build writes into.
func (s buildSpec) binaries() []string {
	out := make([]string, len(s.Packages))
	for i, p := range s.Packages {
		// As go build names it: a major version suffix (/v3) is not
		// the name.
		out[i] = path.Base(p)
		if dir, base := path.Split(p); len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" && dir != "" {
			out[i] = path.Base(dir)
		}
		if s.Test {
			out[i] += ".test"
		}
	}
	return out
}

// outputs are the files the build adds to the version directory.
func (s buildSpec) outputs() []string {
	if s.Image != nil {
		return []string{path.Join(ImagesSubdir, s.Name+".tar")}
	}
	var out []string
	for _, b := range s.binaries() {
		out = append(out, path.Join(s.Dir, b))
	}
	return out
}

func kubePackages(components []string) []string {
	out := make([]string, len(components))
	for i, c := range components {
		out[i] = componentPackage(c)
	}
	return out
}

// cniPackages are the main packages of CNIPlugins, by where each lives in
// the plugins module.
func cniPackages() []string {
	where := map[string]string{"bridge": "main", "host-local": "ipam", "loopback": "main", "portmap": "meta"}
	var out []string
	for _, p := range CNIPlugins() {
		out = append(out, "github.com/containernetworking/plugins/plugins/"+where[p]+"/"+p)
	}
	return out
}
