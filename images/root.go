package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DebianSuite is the Debian release the test images' root is made of, the
// lab machines' own.
const DebianSuite = "bookworm"

// rootRecipe is the version of what ensureRoot does besides debootstrap
// and the spec's setup; bump it when that changes.
const rootRecipe = 1

// rootSpec is a Debian root file system made with debootstrap (minbase
// plus Packages), then Setup run inside it.
type rootSpec struct {
	Packages []string
	// Setup is a shell script run in the root (chroot) once its packages
	// are in.
	Setup string
}

func (r rootSpec) hashKey() string {
	return fmt.Sprintf("debian=%s variant=minbase recipe=%d packages=%s setup=%q", DebianSuite, rootRecipe, strings.Join(r.Packages, ","), r.Setup)
}

func (r rootSpec) id() string {
	h := sha256.Sum256([]byte(r.hashKey()))
	return hex.EncodeToString(h[:])[:12]
}

// rootDone marks a finished root; it is written last.
const rootDone = "root.json"

// ensureRoot returns the root file system of r: the one a previous build
// made (kept by r's hash in the cache, or in the output directory without
// one), else a new one from debootstrap, which needs root and the Debian
// mirror o.Mirror. The tree is made in a scratch directory and renamed into
// place, so a crash never leaves a half-made root that looks finished.
func ensureRoot(ctx context.Context, o BuildOptions, r rootSpec, report func(string)) (string, error) {
	base := entryBase(o)
	dir := filepath.Join(base, "debian-"+DebianSuite+"-"+r.id())
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(dir, rootDone)); err == nil {
		report(fmt.Sprintf("debian %s root: reused %s", DebianSuite, rootfs))
		return rootfs, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("the Debian root %s is made with debootstrap, which needs root: run the build as root", rootfs)
	}
	if o.Mirror == "" {
		return "", fmt.Errorf("the Debian root %s needs a Debian mirror to debootstrap from: give one with --mirror", rootfs)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("the Debian root %s is made with debootstrap, which is not installed (apt-get install debootstrap)", rootfs)
	}
	scratch, err := newScratch(base, ".root-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scratch)
	start := time.Now()
	tree := filepath.Join(scratch, "rootfs")
	logPath := filepath.Join(base, "debian-"+DebianSuite+"-"+r.id()+".log")
	report(fmt.Sprintf("debian %s root: debootstrap with %s from %s (log %s)", DebianSuite, strings.Join(r.Packages, ", "), o.Mirror, logPath))
	debootstrap := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--components=main",
		"--include="+strings.Join(r.Packages, ","), DebianSuite, tree, o.Mirror)
	if err := runLogged(ctx, debootstrap, logPath, "debian "+DebianSuite+" root: debootstrap", o.ProgressEvery, report); err != nil {
		return "", err
	}
	if r.Setup != "" {
		setup := exec.CommandContext(ctx, "chroot", tree, "/bin/sh", "-euc", r.Setup)
		if err := runLogged(ctx, setup, logPath, "debian "+DebianSuite+" root: setup", o.ProgressEvery, report); err != nil {
			return "", err
		}
	}
	// What apt downloaded and indexed is no part of an image.
	for _, pattern := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*"} {
		matches, _ := filepath.Glob(filepath.Join(tree, pattern))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return "", err
			}
		}
	}
	done, err := json.Marshal(map[string]string{"spec": r.hashKey(), "mirror": o.Mirror, "took": time.Since(start).Round(time.Second).String()})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(scratch, rootDone), append(done, '\n'), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(scratch, dir); err != nil {
		// Another build finished the same root first.
		if _, serr := os.Stat(filepath.Join(dir, rootDone)); serr == nil {
			return rootfs, nil
		}
		return "", fmt.Errorf("install the Debian root %s: %w", dir, err)
	}
	report(fmt.Sprintf("debian %s root: made %s in %s", DebianSuite, rootfs, time.Since(start).Round(time.Second)))
	return rootfs, nil
}

// entryBase is where finished Debian roots and busybox builds are kept:
// the cache, else the output directory.
func entryBase(o BuildOptions) string {
	if o.CacheDir != "" {
		return o.CacheDir
	}
	return o.OutDir
}

// newScratch makes a directory in base, readable by all, for a build to
// fill before it is renamed into place whole.
func newScratch(base, prefix string) (string, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", base, err)
	}
	scratch, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return "", fmt.Errorf("create a scratch directory in %s: %w", base, err)
	}
	if err := os.Chmod(scratch, 0o755); err != nil {
		os.RemoveAll(scratch)
		return "", err
	}
	return scratch, nil
}

// runLogged runs cmd with its output appended to logPath, saying every
// interval that it still runs, and returns the output's tail when it fails.
// cmd runs in its own Env when it has one, else in this process's.
func runLogged(ctx context.Context, cmd *exec.Cmd, logPath, label string, every time.Duration, report func(string)) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log: %w", label, err)
	}
	defer logf.Close()
	var tl tail
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			tl.add(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	if every == 0 {
		every = 15 * time.Second
	}
	start := time.Now()
	beat := time.NewTicker(every)
	defer beat.Stop()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case err = <-waited:
			pw.Close()
			<-scanned
			if err != nil {
				return fmt.Errorf("%s: %w (log %s):\n%s", label, err, logPath, tl.String())
			}
			return nil
		case <-beat.C:
			report(fmt.Sprintf("%s (%s)", label, time.Since(start).Round(time.Second)))
		}
	}
}

// treeLayer streams the tree at root as a layer: directories, regular
// files, symbolic and hard links with their owners and modes; device nodes,
// sockets and the contents of skipContents are left out, and times are
// fixed.
func treeLayer(root string) (io.ReadCloser, error) {
	// The directories an image keeps empty: the runtime mounts them.
	skipContents := []string{"dev", "proc", "sys", "run"}
	if _, err := os.Stat(root); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		seen := map[uint64]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
			fi, err := d.Info()
			if err != nil {
				return err
			}
			var link string
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			case fi.IsDir(), fi.Mode().IsRegular():
			default:
				return nil
			}
			hdr, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			hdr.Name, hdr.Uname, hdr.Gname, hdr.Format = rel, "", "", tar.FormatPAX
			hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch(), time.Time{}, time.Time{}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
				if fi.Mode().IsRegular() && st.Nlink > 1 {
					if first, ok := seen[st.Ino]; ok {
						hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
						return tw.WriteHeader(hdr)
					}
					seen[st.Ino] = rel
				}
			}
			if fi.IsDir() {
				hdr.Name += "/"
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if fi.IsDir() && slices.Contains(skipContents, rel) {
				return fs.SkipDir
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// busyboxLayer streams a layer of the static busybox at bin, at
// /bin/busybox, a symbolic link to it under every applet's name (as the
// binary lists them, and in /bin), the root's users and groups, and the directories a
// shell expects.
func busyboxLayer(bin, root string) (io.ReadCloser, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	list, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", bin, err)
	}
	var applets []string
	for _, l := range strings.Fields(string(list)) {
		if l != "bin/busybox" {
			// Also in /bin, as upstream's busybox image has every
			// applet: the suite runs /bin/sysctl.
			applets = append(applets, l, "bin/"+path.Base(l))
		}
	}
	slices.Sort(applets)
	applets = slices.Compact(applets)
	type file struct{ src, name string }
	files := []file{{bin, "bin/busybox"}, {filepath.Join(root, "etc", "passwd"), "etc/passwd"}, {filepath.Join(root, "etc", "group"), "etc/group"}}
	dirs := map[string]int64{"bin": 0o755, "etc": 0o755, "tmp": 0o1777, "root": 0o700, "var": 0o755, "home": 0o755}
	for _, a := range applets {
		dirs[path.Dir(a)] = 0o755
	}
	for d := range dirs {
		for p := path.Dir(d); p != "."; p = path.Dir(p) {
			dirs[p] = 0o755
		}
	}
	dirNames := make([]string, 0, len(dirs))
	for d := range dirs {
		dirNames = append(dirNames, d)
	}
	slices.Sort(dirNames)
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		write := func() error {
			for _, d := range dirNames {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: dirs[d], ModTime: epoch()}); err != nil {
					return err
				}
			}
			for _, f := range files {
				b, err := os.ReadFile(f.src)
				if err != nil {
					return err
				}
				mode := int64(0o644)
				if f.name == "bin/busybox" {
					mode = 0o755
				}
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: mode, Size: int64(len(b)), ModTime: epoch()}); err != nil {
					return err
				}
				if _, err := io.Copy(tw, bytes.NewReader(b)); err != nil {
					return err
				}
			}
			for _, a := range applets {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777, ModTime: epoch()}); err != nil {
					return err
				}
			}
			return tw.Close()
		}
		pw.CloseWithError(write())
	}()
	return pr, nil
}
