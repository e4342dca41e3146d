package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/lab"
	"anvil.dev/anvil/node"
)

// defaultBuildDir is where `make kube` puts the binaries, relative to a
// checkout of anvil.
const defaultBuildDir = "bin/kube"

func newImagesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Build, list, bundle and import the Kubernetes components and node stack",
		Long: `anvil runs the real upstream kube-apiserver, kube-controller-manager and
kube-scheduler, and on every node the kubelet, kube-proxy, containerd, runc and
the CNI plugins. It builds each from its Go module (one build module per
upstream project under images/ in a checkout), packs the pause, CoreDNS and
test images as archives containerd imports, records the sha256 of every file
in the build's payload (payload.json, which also says which files a worker
and a master need), and refuses any file that does not match it.`,
	}
	cmd.AddCommand(newImagesListCmd(a), newImagesBuildCmd(a), newImagesBundleCmd(a), newImagesImportCmd(a), newImagesInstallCmd(a))
	return cmd
}

func newImagesListCmd(a *app) *cobra.Command {
	var (
		dirs   []string
		root   string
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the supported versions and the state of each binary",
		Example: `  # What a checkout built and what this host has installed
  anvil images list
  anvil images list --dir bin/kube -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("dir") {
				dirs = []string{hostfs.Root(root).Path(hostfs.BinDir)}
				if fi, err := os.Stat(defaultBuildDir); err == nil && fi.IsDir() {
					dirs = append([]string{defaultBuildDir}, dirs...)
				}
			}
			entries := images.List(dirs)
			return printOutput(a.out, output, entries, func() error {
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tCOMPONENT\tFROM\tSET\tSTATE\tSIZE\tSHA256\tPATH")
				for _, e := range entries {
					sum := e.SHA256
					if len(sum) > 16 {
						sum = sum[:16] + "…"
					}
					size := "-"
					if e.Size > 0 {
						size = human.Bytes(e.Size)
					}
					from := e.Build
					if e.BuildVersion != "" {
						from += " " + e.BuildVersion
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Version, e.Component, from, e.Set, e.State, size, orDash(sum), e.Path)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringSliceVar(&dirs, "dir", nil, "directories holding <version>/ build or install trees (default: ./bin/kube if present, and /opt/anvil/bin)")
	cmd.Flags().StringVar(&root, "root", "", "prefix for host paths")
	addOutputFlag(cmd, &output)
	return cmd
}

func newImagesBuildCmd(a *app) *cobra.Command {
	o := images.BuildOptions{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the Kubernetes components and node stack from source, or reuse a current build",
		Long: `Builds, each from its pinned Go module in its own build module under
SOURCE (static, trimmed, stripped, version stamped), into OUT/<version>/:

  control plane   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
  node            kubelet, kube-proxy, containerd, containerd-shim-runc-v2, ctr,
                  runc (cgo, static, seccomp), crictl, cni/{bridge,host-local,
                  loopback,portmap}, images/{pause,coredns,testapp}.tar

and writes payload.json with every file's sha256 and the set it belongs to
(node or control-plane), and manifest.json for the control plane as before.

With --conformance it builds what a conformance run needs instead (use
another --out): the upstream e2e test binary (e2e.test, go test -c in the
conformance module) and the images the suite runs, under the names it
expects — agnhost, nginx and glibc-dns-testing on a Debian root made with
debootstrap (as root, cached), busybox built from Debian's busybox source
package (the busybox-static flavour, without the patch that makes its sh
drop variables whose names are not shell identifiers; cached), and the
suite's pause.
Each build is cached on its own by its input hash (in OUT and in --cache), so
a cold build takes about twenty minutes on two cores, and when nothing that
decides the files has changed, it returns in seconds.`,
		Example: `  # What 'make kube' runs, from a checkout
  anvil images build
  anvil images build --version v1.37.2 --out bin/kube --force
  # What 'make conformance' runs
  anvil images build --conformance --out bin/conformance`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = a.progress
			if o.Conformance && o.Mirror == "" {
				m, err := lab.HostMirror(images.DebianSuite)
				if err != nil {
					return err
				}
				o.Mirror = m
			}
			res, err := images.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			for _, f := range res.Manifest.Files {
				fmt.Fprintf(a.out, "%s  %s\n", f.SHA256, filepath.Join(res.Dir, filepath.FromSlash(f.Name)))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Version, "version", images.DefaultVersion, "Kubernetes version to build")
	cmd.Flags().StringVar(&o.SourceDir, "source", "images", "the images directory of a checkout, holding the build modules")
	cmd.Flags().StringVar(&o.OutDir, "out", defaultBuildDir, "output directory; binaries go to OUT/<version>/")
	cmd.Flags().StringVar(&o.Go, "go", "go", "the go command")
	cmd.Flags().BoolVar(&o.Force, "force", false, "rebuild even when the binaries are current")
	cmd.Flags().StringVar(&o.CacheDir, "cache", defaultKubeCache(), "keep finished builds here by version and input hash (empty: no cache)")
	cmd.Flags().BoolVar(&o.Conformance, "conformance", false, "build what a conformance run needs instead: the upstream e2e test binary and the images its tests use")
	cmd.Flags().StringVar(&o.Mirror, "mirror", "", "the Debian mirror the conformance images' root and busybox's source package come from (default: the one this host's apt uses)")
	return cmd
}

func newImagesBundleCmd(a *app) *cobra.Command {
	var (
		version, dir string
		o            images.BundleOptions
	)
	cmd := &cobra.Command{
		Use:   "bundle -o FILE",
		Short: "Pack the binaries, anvil and OCI images into one airgap bundle",
		Long: `Writes a zstd-compressed tar holding every verified file of the build's
payload (control plane, node stack, CNI plugins, image archives), this anvil
binary, and an OCI image archive (FROM scratch, just the static binary) of each
control-plane component and of anvil, for the static-pod layout.
Carry it to machines without network access and run 'anvil images import'.`,
		Example: `  anvil images bundle -o anvil-v1.37.2.tar.zst
  anvil images bundle --dir bin/kube --version v1.37.2 -o /media/usb/anvil.tar.zst`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Out == "" {
				return usageError("bundle needs -o FILE")
			}
			if _, err := images.Lookup(version); err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Dir = filepath.Join(dir, version)
			o.Anvil, o.AnvilVersion, o.Progress = self, buildinfo.Version(), a.progress
			idx, err := images.Bundle(o)
			if err != nil {
				return err
			}
			fi, err := os.Stat(o.Out)
			if err != nil {
				return err
			}
			sum, err := images.FileSHA256(o.Out)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "wrote %s: kubernetes %s, %d files, %.1f MiB, sha256 %s\n(check it where it is imported: anvil images import %s --sha256 %s)\n",
				o.Out, idx.KubernetesVersion, len(idx.Files), float64(fi.Size())/(1<<20), sum, filepath.Base(o.Out), sum)
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.Out, "output", "o", "", "bundle file to write")
	cmd.Flags().StringVar(&version, "version", images.DefaultVersion, "Kubernetes version to bundle")
	cmd.Flags().StringVar(&dir, "dir", defaultBuildDir, "build directory holding <version>/")
	return cmd
}

func newImagesImportCmd(a *app) *cobra.Command {
	var root, version, sum string
	cmd := &cobra.Command{
		Use:   "import BUNDLE | ARCHIVE...",
		Short: "Install an airgap bundle, or import image archives into this node's containerd",
		Long: `Given an airgap bundle (a zstd-compressed tar from 'anvil images bundle'), reads
the whole bundle and checks every file's sha256 before writing anything, then
unpacks it (checking again) into a staging directory that replaces
/opt/anvil/bin/<version> in one rename. A truncated or tampered bundle is
refused and leaves nothing behind.

Given image archives (docker-archive or OCI tar files), imports them into the
local containerd's k8s.io namespace, where the kubelet finds them, with the
node stack's ctr. Every file is checked first: one that is not an image
archive is named and nothing is imported. To have the agent import an
archive by itself, put it in /var/lib/anvil/images.`,
		Example: `  anvil images import anvil-v1.37.2.tar.zst
  # With the sha256 'anvil images bundle' printed where the bundle was made
  anvil images import anvil-v1.37.2.tar.zst --sha256 9f2c…
  anvil images import --root /tmp/host anvil-v1.37.2.tar.zst

  # Images for pods, without a registry
  anvil images import web.tar redis.tar`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := hostfs.Root(root)
			bundles := slices.DeleteFunc(slices.Clone(args), func(f string) bool { return !isBundle(f) })
			switch {
			case len(bundles) == 1 && len(args) == 1:
				idx, err := images.Import(images.ImportOptions{Bundle: args[0], SHA256: sum, Root: r, Progress: a.progress})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "imported kubernetes %s (%d files) into %s\n", idx.KubernetesVersion, len(idx.Files), r.Bin(idx.KubernetesVersion))
				return nil
			case len(bundles) > 0:
				return usageError("%s is an airgap bundle: import it alone, and image archives in another run", bundles[0])
			case sum != "":
				return usageError("--sha256 checks an airgap bundle; %s is not one", args[0])
			}
			for _, f := range args {
				if err := node.CheckImageArchive(f); err != nil {
					return fmt.Errorf("%w; nothing was imported", err)
				}
			}
			res, err := node.ImportImages(cmd.Context(), node.ImportOptions{
				Root: r, Ctr: filepath.Join(r.Bin(version), images.Ctr), Address: r.Path(node.ContainerdSocket), Files: args,
			})
			if err != nil {
				return err
			}
			for _, f := range res.Imported {
				fmt.Fprintf(a.out, "imported %s into containerd (namespace %s)\n", f, node.ImageNamespace)
			}
			for _, f := range res.Kept {
				fmt.Fprintf(a.out, "%s was imported before\n", f)
			}
			return errors.Join(res.Problems...)
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for host paths")
	cmd.Flags().StringVar(&version, "version", images.DefaultVersion, "Kubernetes version whose node stack (ctr) imports image archives")
	cmd.Flags().StringVar(&sum, "sha256", "", "the bundle's expected sha256 (hex, as sha256sum prints it where the bundle was made): any other file is refused unread")
	return cmd
}

// isBundle reports whether file starts as a zstd stream, as airgap
// bundles do; image archives are plain tar files.
func isBundle(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return false
	}
	return bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd})
}

func newImagesInstallCmd(a *app) *cobra.Command {
	var (
		root, dir, version, role string
		withAnvil                bool
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install a local build into /opt/anvil/bin/<version> after verifying it",
		Long: `Installs the build's files (all of them, or with --role the ones a worker or
a master needs) into /opt/anvil/bin/<version>: binaries at the top, the CNI
plugins in cni/, the image archives in images/, with a manifest.json that
lists exactly what was installed.`,
		Example: `  # After 'make kube', on the machine that built it
  anvil images install
  anvil images install --role worker --dir bin/kube --root /tmp/host`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := images.InstallOptions{From: filepath.Join(dir, version), Role: v1alpha1.Role(role), Root: hostfs.Root(root)}
			if withAnvil {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.Anvil = self
			}
			m, err := images.Install(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "installed kubernetes %s (%d files) in %s\n", m.KubernetesVersion, len(m.Files), hostfs.Root(root).Bin(m.KubernetesVersion))
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for host paths")
	cmd.Flags().StringVar(&dir, "dir", defaultBuildDir, "build directory holding <version>/")
	cmd.Flags().StringVar(&version, "version", images.DefaultVersion, "Kubernetes version to install")
	cmd.Flags().BoolVar(&withAnvil, "with-anvil", true, "install this anvil binary beside the components")
	cmd.Flags().StringVar(&role, "role", "", "install only what a host of this role needs (master or worker); empty: everything")
	return cmd
}

// defaultKubeCache is per user, like Go's own build cache, so that every
// checkout on a machine shares one build of each version.
func defaultKubeCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "anvil", "kube")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
