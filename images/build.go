package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// BuildOptions says what to build and where.
type BuildOptions struct {
	// Version is the Kubernetes version to build.
	Version string
	// SourceDir is the images/kube module.
	SourceDir string
	// OutDir receives OutDir/<version>/<component> and the manifest.
	OutDir string
	// Go is the go command; "go" when empty.
	Go string
	// CacheDir keeps finished builds by version and input hash, so a fresh
	// checkout on the same machine reuses them instead of rebuilding.
	// Empty disables the cache.
	CacheDir string
	// Force rebuilds even when the manifest says the binaries are current.
	Force bool
	// Progress receives one line at a time about what the build is doing.
	Progress func(string)
	// ProgressEvery is how often a running build reports; 15 s when zero.
	ProgressEvery time.Duration
}

// BuildResult says what Build did.
type BuildResult struct {
	Manifest *Manifest
	Dir      string
	// Reused is true when the binaries on disk were current and nothing
	// was built.
	Reused  bool
	Elapsed time.Duration
}

// Build compiles the release's components from the k8s.io/kubernetes module,
// or reuses what a previous build left when its inputs have not changed and
// every binary still matches the manifest.
func Build(ctx context.Context, o BuildOptions) (*BuildResult, error) {
	start := time.Now()
	rel, err := Lookup(o.Version)
	if err != nil {
		return nil, err
	}
	if o.Go == "" {
		o.Go = "go"
	}
	// go build runs inside the build module, so every path it is given
	// must not depend on the working directory.
	if o.OutDir, err = filepath.Abs(o.OutDir); err != nil {
		return nil, err
	}
	report := o.Progress
	if report == nil {
		report = func(string) {}
	}
	goVersion, err := goEnv(ctx, o.Go, "GOVERSION")
	if err != nil {
		return nil, err
	}
	ldflags := versionLDFlags(rel)
	inputHash, err := buildInputHash(o.SourceDir, rel, goVersion, ldflags)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.OutDir, rel.Version)
	if !o.Force {
		if m, err := ReadManifest(dir); err == nil && m.InputHash == inputHash && m.Verify(dir) == nil {
			report(fmt.Sprintf("kubernetes %s: binaries in %s are current (input %s), nothing to build", rel.Version, dir, short(inputHash)))
			return &BuildResult{Manifest: m, Dir: dir, Reused: true, Elapsed: time.Since(start)}, nil
		}
		if m, ok := fromCache(o.CacheDir, rel.Version, inputHash, dir); ok {
			report(fmt.Sprintf("kubernetes %s: reused the build cached in %s (input %s)", rel.Version, o.CacheDir, short(inputHash)))
			return &BuildResult{Manifest: m, Dir: dir, Reused: true, Elapsed: time.Since(start)}, nil
		}
	}

	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.OutDir, err)
	}
	stage, err := os.MkdirTemp(o.OutDir, ".build-"+rel.Version+"-")
	if err != nil {
		return nil, fmt.Errorf("create build directory in %s: %w", o.OutDir, err)
	}
	defer os.RemoveAll(stage)

	pkgs := make([]string, 0, len(rel.Components))
	for _, c := range rel.Components {
		pkgs = append(pkgs, componentPackage(c))
	}
	total := countDeps(ctx, o.Go, o.SourceDir, pkgs)
	report(fmt.Sprintf("kubernetes %s: building %s with %s (a cold build takes about ten minutes on 2 cores)",
		rel.Version, strings.Join(rel.Components, ", "), goVersion))

	args := []string{"build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", stage + "/"}
	cmd := exec.CommandContext(ctx, o.Go, append(args, pkgs...)...)
	cmd.Dir = o.SourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	var compiled atomic.Int64
	var errTail tail
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s build: %w", o.Go, err)
	}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			// `go build -v` names each package as it is compiled; anything
			// that is not a bare import path is a diagnostic.
			if strings.ContainsAny(line, " :") || strings.HasPrefix(line, "#") {
				errTail.add(line)
				continue
			}
			compiled.Add(1)
		}
	}()
	every := o.ProgressEvery
	if every == 0 {
		every = 15 * time.Second
	}
	tick := time.NewTicker(every)
	waitErr := make(chan error, 1)
	go func() {
		<-scanDone
		waitErr <- cmd.Wait()
	}()
	for {
		select {
		case err := <-waitErr:
			tick.Stop()
			if err != nil {
				return nil, fmt.Errorf("build kubernetes %s in %s: %w\n%s", rel.Version, o.SourceDir, err, errTail.String())
			}
			res, err := finishBuild(rel, stage, dir, goVersion, inputHash, start, report)
			if err == nil && o.CacheDir != "" {
				if cerr := toCache(o.CacheDir, dir, res.Manifest); cerr != nil {
					report(fmt.Sprintf("kubernetes %s: could not cache the build: %v", rel.Version, cerr))
				}
			}
			return res, err
		case <-tick.C:
			n := compiled.Load()
			if total > 0 {
				report(fmt.Sprintf("kubernetes %s: compiled %d of at most %d packages (%s)", rel.Version, n, total, time.Since(start).Round(time.Second)))
			} else {
				report(fmt.Sprintf("kubernetes %s: compiled %d packages (%s)", rel.Version, n, time.Since(start).Round(time.Second)))
			}
		}
	}
}

func finishBuild(rel Release, stage, dir, goVersion, inputHash string, start time.Time, report func(string)) (*BuildResult, error) {
	m := &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, GoVersion: goVersion, InputHash: inputHash}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	// The old manifest goes first, so a crash between here and the new
	// manifest leaves binaries without a manifest (rebuilt next time),
	// never a manifest that vouches for the wrong binaries.
	if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, c := range rel.Components {
		src := filepath.Join(stage, c)
		sum, size, err := HashFile(src)
		if err != nil {
			return nil, fmt.Errorf("build produced no %s: %w", c, err)
		}
		if err := os.Rename(src, filepath.Join(dir, c)); err != nil {
			return nil, fmt.Errorf("install %s: %w", c, err)
		}
		m.Files = append(m.Files, File{Name: c, SHA256: sum, Size: size})
	}
	if err := WriteManifest(dir, m); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	report(fmt.Sprintf("kubernetes %s: built %d binaries in %s into %s", rel.Version, len(m.Files), elapsed.Round(time.Second), dir))
	return &BuildResult{Manifest: m, Dir: dir, Elapsed: elapsed}, nil
}

// componentPackage is the main package of a component in k8s.io/kubernetes.
func componentPackage(component string) string { return "k8s.io/kubernetes/cmd/" + component }

// versionLDFlags stamps the release into the places `--version` and the
// apiserver's /version read, as Kubernetes' own hack/lib/version.sh does.
// The build date is the release's, not now, so builds are reproducible.
func versionLDFlags(rel Release) string {
	major, minor := majorMinor(rel.Version)
	vars := [][2]string{
		{"gitVersion", rel.Version},
		{"gitMajor", major},
		{"gitMinor", minor},
		{"gitTreeState", "clean"},
		{"buildDate", rel.BuildDate},
	}
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/client-go/pkg/version", "k8s.io/component-base/version"} {
		for _, v := range vars {
			flags = append(flags, fmt.Sprintf("-X '%s.%s=%s'", pkg, v[0], v[1]))
		}
	}
	return strings.Join(flags, " ")
}

func majorMinor(v string) (string, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[1]
}

// buildInputHash covers every input that decides the binaries' bytes: the
// build module's files, the Go toolchain, the target and the link flags.
func buildInputHash(sourceDir string, rel Release, goVersion, ldflags string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version=%s\ngo=%s\ntarget=%s/%s\nldflags=%s\ncomponents=%s\n",
		rel.Version, goVersion, runtime.GOOS, runtime.GOARCH, ldflags, strings.Join(rel.Components, ","))
	var names []string
	err := filepath.WalkDir(sourceDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read build module %s: %w", sourceDir, err)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("read build module %s: no files", sourceDir)
	}
	slices.Sort(names)
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(sourceDir, n)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func goEnv(ctx context.Context, goCmd, key string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", key).Output()
	if err != nil {
		return "", fmt.Errorf("run %s env %s: %w (is Go installed? see README)", goCmd, key, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// countDeps estimates how many packages a cold build compiles, for progress;
// zero when it cannot tell.
func countDeps(ctx context.Context, goCmd, dir string, pkgs []string) int {
	cmd := exec.CommandContext(ctx, goCmd, append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		return 0
	}
	return bytes.Count(out, []byte("\n"))
}

func short(hash string) string {
	h := strings.TrimPrefix(hash, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// tail keeps the last lines of a stream, for error messages.
type tail struct{ lines []string }

func (t *tail) add(s string) {
	t.lines = append(t.lines, s)
	if len(t.lines) > 30 {
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string { return strings.Join(t.lines, "\n") }
