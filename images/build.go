package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	// SourceDir is the images directory of an anvil checkout, holding a
	// build module per upstream project (kube, kubenode, containerd, …)
	// and anvil's own programs (pause, testapp).
	SourceDir string
	// OutDir receives OutDir/<version>/ with the binaries, the image
	// archives, the control plane's manifest and the payload.
	OutDir string
	// Go is the go command; "go" when empty.
	Go string
	// CacheDir keeps finished builds by name, version and input hash, so a
	// fresh checkout on the same machine reuses them instead of rebuilding.
	// Empty disables the cache.
	CacheDir string
	// Force rebuilds even when the files on disk or in the cache are
	// current.
	Force bool
	// Conformance builds what a conformance run needs instead of the
	// release: the upstream e2e test binary and the images its tests use.
	Conformance bool
	// Mirror is the Debian mirror the conformance images' root is made
	// from with debootstrap, and busybox's source package comes from (the
	// first time; both are cached).
	Mirror string
	// Progress receives one line at a time about what the build is doing.
	Progress func(string)
	// ProgressEvery is how often a running build reports; 15 s when zero.
	ProgressEvery time.Duration

	// specs replaces the release's builds (tests).
	specs []buildSpec
}

// BuildResult says what Build did.
type BuildResult struct {
	// Manifest is the payload: every file in Dir, with its set.
	Manifest *Manifest
	Dir      string
	// Reused is true when every file was current or came from the cache,
	// and nothing was compiled.
	Reused  bool
	Elapsed time.Duration
	// Builds say what happened to each build, in build order.
	Builds []BuildOutcome
}

// BuildOutcome is what happened to one build.
type BuildOutcome struct {
	Name    string
	Version string
	// How is HowCurrent, HowCached or HowBuilt.
	How     string
	Elapsed time.Duration
}

// How a build's files came to be in the version directory.
const (
	HowCurrent = "current" // already there, inputs unchanged
	HowCached  = "cached"  // copied from the per-user cache
	HowBuilt   = "built"   // compiled
)

// Build compiles the release's components, node stack and images, or reuses
// what a previous build left (in the version directory, then in the cache)
// for every build whose inputs have not changed and whose files still match.
// It writes the control plane's manifest (ManifestFile) and the payload of
// everything (PayloadFile).
func Build(ctx context.Context, o BuildOptions) (*BuildResult, error) {
	start := time.Now()
	rel, err := Lookup(o.Version)
	if err != nil {
		return nil, err
	}
	if o.Go == "" {
		o.Go = "go"
	}
	// go build runs inside the build modules, so every path it is given
	// must not depend on the working directory.
	if o.OutDir, err = filepath.Abs(o.OutDir); err != nil {
		return nil, err
	}
	if o.SourceDir, err = filepath.Abs(o.SourceDir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(o.SourceDir, "go.mod")); err == nil {
		return nil, fmt.Errorf("%s is a build module; the source is the images directory that holds the build modules (images/)", o.SourceDir)
	}
	report := o.Progress
	if report == nil {
		report = func(string) {}
	}
	goVersion, err := goEnv(ctx, o.Go, "GOVERSION")
	if err != nil {
		return nil, err
	}
	specs := o.specs
	switch {
	case specs != nil:
	case o.Conformance:
		specs = rel.conformanceBuilds()
	default:
		specs = rel.builds()
	}
	plans := make([]*buildPlan, len(specs))
	for i, s := range specs {
		if plans[i], err = planBuild(ctx, o, s, goVersion); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(o.OutDir, rel.Version)
	payloadHash := payloadInputHash(plans)
	old, _ := ReadPayload(dir)
	if !o.Force && old != nil && old.InputHash == payloadHash && controlPlaneManifestOK(plans, dir) && old.Verify(dir) == nil {
		report(fmt.Sprintf("kubernetes %s: all %d files in %s are current (input %s), nothing to build", rel.Version, len(old.Files), dir, short(payloadHash)))
		res := &BuildResult{Manifest: old, Dir: dir, Reused: true}
		for _, p := range plans {
			res.Builds = append(res.Builds, BuildOutcome{Name: p.spec.Name, Version: p.spec.Version, How: HowCurrent})
		}
		res.Elapsed = time.Since(start)
		return res, nil
	}

	// The payload goes first, so a crash part way leaves files without a
	// payload (each build is then checked against the cache or rebuilt),
	// never a payload that vouches for the wrong files.
	if err := os.Remove(filepath.Join(dir, PayloadFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	res := &BuildResult{Dir: dir, Reused: true}
	payload := &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, GoVersion: goVersion, InputHash: payloadHash}
	for _, p := range plans {
		bstart := time.Now()
		files, how, err := p.obtain(ctx, o, rel, dir, old, report)
		if err != nil {
			return nil, err
		}
		if how == HowBuilt {
			res.Reused = false
		}
		res.Builds = append(res.Builds, BuildOutcome{Name: p.spec.Name, Version: p.version(), How: how, Elapsed: time.Since(bstart)})
		payload.Builds = append(payload.Builds, p.record())
		payload.Files = append(payload.Files, files...)
	}
	if err := WritePayload(dir, payload); err != nil {
		return nil, err
	}
	res.Manifest, res.Elapsed = payload, time.Since(start)
	var size int64
	for _, f := range payload.Files {
		size += f.Size
	}
	report(fmt.Sprintf("kubernetes %s: %d files (%.0f MiB) from %d builds in %s; payload %s",
		rel.Version, len(payload.Files), float64(size)/(1<<20), len(plans), res.Elapsed.Round(time.Second), filepath.Join(dir, PayloadFile)))
	return res, nil
}

// controlPlaneManifestOK reports whether the control plane's manifest, which
// the installer reads, is there for the planned inputs (or there is no
// control plane build).
func controlPlaneManifestOK(plans []*buildPlan, dir string) bool {
	for _, p := range plans {
		if p.spec.Name == BuildKube {
			m, err := ReadManifest(dir)
			return err == nil && m.InputHash == p.inputHash
		}
	}
	return true
}

// buildPlan is a build with everything that decides its output worked out.
type buildPlan struct {
	spec buildSpec
	// moduleDir is where go build runs.
	moduleDir string
	goVersion string
	ldflags   string
	inputHash string
	// image is the image spec with its reference settled.
	image *imageSpec
}

func planBuild(ctx context.Context, o BuildOptions, s buildSpec, goVersion string) (*buildPlan, error) {
	p := &buildPlan{spec: s, goVersion: goVersion, ldflags: s.LDFlags}
	var hashed []hashedDir
	switch {
	case len(s.Packages) == 0:
		// An image made of its root alone: the image spec (with its
		// root's) is all its input.
	case s.Module != "":
		p.moduleDir = filepath.Join(o.SourceDir, s.Module)
		if s.Upstream != "" {
			sum, err := pinnedModule(p.moduleDir, s.Upstream, s.Version)
			if err != nil {
				return nil, err
			}
			if s.RevisionVar != "" {
				p.ldflags += fmt.Sprintf(" -X '%s=%s'", s.RevisionVar, sum)
			}
		}
		hashed = []hashedDir{{dir: p.moduleDir}}
	default:
		// anvil's own program: built in anvil's module from the package's
		// directory, which alone (with go.mod) decides the binary.
		p.moduleDir = filepath.Dir(o.SourceDir)
		b, err := os.ReadFile(filepath.Join(p.moduleDir, "go.mod"))
		if err != nil || !bytes.HasPrefix(b, []byte("module "+anvilModule+"\n")) {
			return nil, fmt.Errorf("build %s: %s is not in an anvil checkout (no go.mod of %s beside it)", s.Name, o.SourceDir, anvilModule)
		}
		hashed = []hashedDir{{dir: filepath.Join(p.moduleDir, strings.TrimPrefix(s.Packages[0], anvilModule+"/")), skipTests: true}, {file: filepath.Join(p.moduleDir, "go.mod")}}
	}
	extra, err := toolchainInputs(ctx, o.Go, s)
	if err != nil {
		return nil, err
	}
	p.inputHash, err = inputHash(s, goVersion, p.ldflags, extra, hashed)
	if err != nil {
		return nil, err
	}
	if s.Image != nil {
		img := *s.Image
		if img.Ref == "" {
			img.Ref = img.Repo + ":" + short(p.inputHash)
		}
		p.image = &img
	}
	return p, nil
}

// version is the build's version as the payload records it: the pinned
// upstream version, or for anvil's test image its tag.
func (p *buildPlan) version() string {
	if p.spec.Version == "" && p.image != nil {
		return p.image.Ref[strings.LastIndex(p.image.Ref, ":")+1:]
	}
	return p.spec.Version
}

func (p *buildPlan) record() BuildRecord {
	return BuildRecord{Name: p.spec.Name, Version: p.version(), InputHash: p.inputHash}
}

// payloadInputHash covers every build's input hash, in build order, and
// the set its files belong to: moving a build to another set rebuilds
// nothing, but the payload must say so.
func payloadInputHash(plans []*buildPlan) string {
	h := sha256.New()
	for _, p := range plans {
		fmt.Fprintf(h, "%s %s %s\n", p.spec.Name, p.inputHash, p.spec.Set)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// obtain puts the build's files into dir: those already there when their
// inputs are unchanged, else the cache's, else freshly compiled ones. It
// returns the files as the payload lists them.
func (p *buildPlan) obtain(ctx context.Context, o BuildOptions, rel Release, dir string, old *Manifest, report func(string)) ([]File, string, error) {
	s := p.spec
	if !o.Force {
		if files, ok := p.current(dir, old); ok {
			report(fmt.Sprintf("%s: current in %s (input %s)", s.label(), dir, short(p.inputHash)))
			return files, HowCurrent, nil
		}
		if s.Name == BuildKube {
			// As in compile: no manifest may vouch for binaries while
			// they are being replaced.
			if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, "", err
			}
		}
		if m, ok := fromCache(o.CacheDir, p.cacheEntry(), p.inputHash, dir, p.outputs()); ok {
			if s.Name == BuildKube {
				if err := WriteManifest(dir, m); err != nil {
					return nil, "", err
				}
			}
			report(fmt.Sprintf("%s: reused the build cached in %s (input %s)", s.label(), o.CacheDir, short(p.inputHash)))
			return p.payloadFiles(m.Files), HowCached, nil
		}
	}
	m, err := p.compile(ctx, o, rel, dir, report)
	if err != nil {
		return nil, "", err
	}
	if o.CacheDir != "" {
		if cerr := toCache(o.CacheDir, p.cacheEntry(), dir, m); cerr != nil {
			report(fmt.Sprintf("%s: could not cache the build: %v", s.label(), cerr))
		}
	}
	return p.payloadFiles(m.Files), HowBuilt, nil
}

// current returns the build's files when dir already holds them for the
// same inputs: the control plane's by its own manifest, the others' by the
// previous payload.
func (p *buildPlan) current(dir string, old *Manifest) ([]File, bool) {
	var files []File
	if p.spec.Name == BuildKube {
		m, err := ReadManifest(dir)
		if err != nil || m.InputHash != p.inputHash {
			return nil, false
		}
		files = m.Files
	} else {
		if old == nil || !slices.Contains(old.Builds, p.record()) {
			return nil, false
		}
		for _, f := range old.Files {
			if f.Build == p.spec.Name {
				files = append(files, f)
			}
		}
	}
	if !sameNames(files, p.outputs()) || (&Manifest{Files: files}).Verify(dir) != nil {
		return nil, false
	}
	return p.payloadFiles(files), true
}

func (p *buildPlan) outputs() []string { return p.spec.outputs() }

// payloadFiles marks files with the build's set, name and image.
func (p *buildPlan) payloadFiles(files []File) []File {
	out := make([]File, len(files))
	for i, f := range files {
		f.Set, f.Build = p.spec.Set, p.spec.Name
		if p.image != nil {
			f.Image = p.image.Ref
		}
		out[i] = f
	}
	return out
}

// cacheEntry names the build's directory in the per-user cache by name,
// version and input hash, so a different input is never mistaken for it.
// The control plane's entries keep the name they had before the node
// stack (<version>-<hash>), so its cached builds stay valid.
func (p *buildPlan) cacheEntry() string {
	if p.spec.Name == BuildKube {
		return p.spec.Version + "-" + short(p.inputHash)
	}
	if p.spec.Version == "" {
		// The version is the hash (the test image's tag); once is enough.
		return p.spec.Name + "-" + short(p.inputHash)
	}
	return p.spec.Name + "-" + p.version() + "-" + short(p.inputHash)
}

// cacheManifest is what the cache keeps beside the build's files: for the
// control plane its manifest as before; for the others their files and
// inputs, but no Kubernetes version, which they do not depend on.
func (p *buildPlan) cacheManifest(rel Release, files []File) *Manifest {
	if p.spec.Name == BuildKube {
		return &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, GoVersion: p.goVersion, InputHash: p.inputHash, Files: files}
	}
	return &Manifest{GoVersion: p.goVersion, InputHash: p.inputHash, Builds: []BuildRecord{p.record()}, Files: p.payloadFiles(files)}
}

// compile runs go build for the build into a staging directory beside dir,
// packs an image when the build makes one, and moves the files into dir.
func (p *buildPlan) compile(ctx context.Context, o BuildOptions, rel Release, dir string, report func(string)) (*Manifest, error) {
	start := time.Now()
	s := p.spec
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.OutDir, err)
	}
	stage, err := os.MkdirTemp(o.OutDir, ".build-"+s.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("create build directory in %s: %w", o.OutDir, err)
	}
	defer os.RemoveAll(stage)
	binDir := filepath.Join(stage, filepath.FromSlash(s.Dir))
	if s.Image != nil {
		binDir = filepath.Join(stage, "bin")
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	if len(s.Packages) > 0 {
		if err := p.goBuild(ctx, o, binDir, start, report); err != nil {
			return nil, err
		}
	}
	if s.Image != nil {
		var in imageFiles
		if len(s.Packages) > 0 {
			in.bin = filepath.Join(binDir, s.binaries()[0])
		}
		if s.Image.Root != nil {
			if in.root, err = ensureRoot(ctx, o, *s.Image.Root, report); err != nil {
				return nil, fmt.Errorf("image %s: %w", p.image.Ref, err)
			}
		}
		if s.Image.Busybox != nil {
			if in.busybox, err = ensureBusybox(ctx, o, *s.Image.Busybox, report); err != nil {
				return nil, fmt.Errorf("image %s: %w", p.image.Ref, err)
			}
		}
		if len(s.Image.SourceFiles) > 0 {
			src, err := moduleSourceDir(ctx, o.Go, p.moduleDir, s.Upstream)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", p.image.Ref, err)
			}
			in.sources = map[string]string{}
			for _, f := range s.Image.SourceFiles {
				in.sources[f.Path] = filepath.Join(src, filepath.FromSlash(f.From))
			}
		}
		out := filepath.Join(stage, filepath.FromSlash(s.outputs()[0]))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return nil, err
		}
		if err := writeImageArchive(in, *p.image, out); err != nil {
			return nil, err
		}
	}
	return p.install(rel, stage, dir, start, report)
}

// goBuild compiles the build's packages into binDir: go build, or for a
// test binary go test -c, with the same flags, so that the packages a test
// binary shares with the components come from Go's build cache.
func (p *buildPlan) goBuild(ctx context.Context, o BuildOptions, binDir string, start time.Time, report func(string)) error {
	s := p.spec
	env := []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local"}
	if s.CGO {
		env[0] = "CGO_ENABLED=1"
	}
	report(fmt.Sprintf("%s: building %s with %s", s.label(), strings.Join(s.binaries(), ", "), p.goVersion))
	var args []string
	total := -1
	if s.Test {
		// go test has no -v of go build's (its -v is the tests'), so
		// a test binary's progress is its elapsed time alone. Its vet
		// pass, which needs facts from every dependency (a cold e2e.test's
		// binary was written 6 minutes into a 19-minute go test -c; vet
		// took the rest), decides nothing in the binary.
		args = []string{"test", "-c", "-vet=off", "-trimpath", "-buildvcs=false"}
	} else {
		total = countDeps(ctx, o.Go, p.moduleDir, env, s.Tags, s.Packages)
		args = []string{"build", "-v", "-trimpath", "-buildvcs=false"}
	}
	if len(s.Tags) > 0 {
		args = append(args, "-tags", strings.Join(s.Tags, ","))
	}
	out := binDir + string(filepath.Separator)
	if s.Test {
		out = filepath.Join(binDir, s.binaries()[0])
	}
	args = append(args, "-ldflags", p.ldflags, "-o", out)
	return runGoBuild(ctx, o, p.moduleDir, env, append(args, s.Packages...), total, s.label(), start, report)
}

// install moves the staged outputs into dir and, for the control plane,
// writes its manifest as every build before the node stack did.
func (p *buildPlan) install(rel Release, stage, dir string, start time.Time, report func(string)) (*Manifest, error) {
	s := p.spec
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if s.Name == BuildKube {
		// The old manifest goes first, so a crash between here and the
		// new manifest leaves binaries without a manifest (rebuilt next
		// time), never a manifest that vouches for the wrong binaries.
		if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var files []File
	for _, name := range s.outputs() {
		src := filepath.Join(stage, filepath.FromSlash(name))
		sum, size, err := HashFile(src)
		if err != nil {
			return nil, fmt.Errorf("build %s produced no %s: %w", s.Name, name, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
		}
		if err := os.Rename(src, dst); err != nil {
			return nil, fmt.Errorf("install %s: %w", dst, err)
		}
		files = append(files, File{Name: name, SHA256: sum, Size: size})
	}
	m := p.cacheManifest(rel, files)
	if s.Name == BuildKube {
		if err := WriteManifest(dir, m); err != nil {
			return nil, err
		}
	}
	var size int64
	for _, f := range files {
		size += f.Size
	}
	report(fmt.Sprintf("%s: built %s (%.1f MiB) in %s into %s", s.label(), strings.Join(fileNames(files), ", "), float64(size)/(1<<20), time.Since(start).Round(time.Second), dir))
	return m, nil
}

// runGoBuild runs go build, reporting how many packages it has compiled
// (of at most total; a negative total when it cannot count, as for go test)
// every ProgressEvery, and returns its diagnostics' tail when it fails.
func runGoBuild(ctx context.Context, o BuildOptions, moduleDir string, env, args []string, total int, label string, start time.Time, report func(string)) error {
	cmd := exec.CommandContext(ctx, o.Go, args...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), env...)
	var compiled atomic.Int64
	var errTail tail
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s build: %w", o.Go, err)
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
	defer tick.Stop()
	waitErr := make(chan error, 1)
	go func() {
		<-scanDone
		waitErr <- cmd.Wait()
	}()
	for {
		select {
		case err := <-waitErr:
			if err != nil {
				return fmt.Errorf("build %s in %s: %w\n%s", label, moduleDir, err, errTail.String())
			}
			return nil
		case <-tick.C:
			n := compiled.Load()
			if total < 0 {
				report(fmt.Sprintf("%s: compiling (%s)", label, time.Since(start).Round(time.Second)))
			} else if total > 0 {
				report(fmt.Sprintf("%s: compiled %d of at most %d packages (%s)", label, n, total, time.Since(start).Round(time.Second)))
			} else {
				report(fmt.Sprintf("%s: compiled %d packages (%s)", label, n, time.Since(start).Round(time.Second)))
			}
		}
	}
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

// hashedDir is a directory (or one file) whose content is a build's input.
type hashedDir struct {
	dir       string
	file      string
	skipTests bool
}

// inputHash covers every input that decides a build's files: the build
// module's files (or an anvil program's package and go.mod), the Go
// toolchain, the target, the link flags, and for cgo the C toolchain and
// libraries. The control plane's hash is computed exactly as before the
// node stack, so its cached builds stay valid: the lines it never had are
// written only for the builds that have them.
func inputHash(s buildSpec, goVersion, ldflags string, extra []string, inputs []hashedDir) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version=%s\ngo=%s\ntarget=%s/%s\nldflags=%s\ncomponents=%s\n",
		s.Version, goVersion, runtime.GOOS, runtime.GOARCH, ldflags, strings.Join(s.binaries(), ","))
	if s.Name != BuildKube {
		fmt.Fprintf(h, "build=%s\ndir=%s\ntags=%s\ncgo=%t\n", s.Name, s.Dir, strings.Join(s.Tags, ","), s.CGO)
		for _, e := range extra {
			fmt.Fprintf(h, "toolchain=%s\n", e)
		}
		if s.Image != nil {
			fmt.Fprintf(h, "image=%s\n", s.Image.hashKey())
		}
	}
	for _, in := range inputs {
		if in.file != "" {
			b, err := os.ReadFile(in.file)
			if err != nil {
				return "", fmt.Errorf("build %s: read %s: %w", s.Name, in.file, err)
			}
			fmt.Fprintf(h, "%s %d\n", filepath.Base(in.file), len(b))
			h.Write(b)
			continue
		}
		if err := hashTree(h, in.dir, in.skipTests); err != nil {
			return "", fmt.Errorf("build %s: %w", s.Name, err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func hashTree(h io.Writer, sourceDir string, skipTests bool) error {
	var names []string
	err := filepath.WalkDir(sourceDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !(skipTests && strings.HasSuffix(path, "_test.go")) {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read build module %s: %w", sourceDir, err)
	}
	if len(names) == 0 {
		return fmt.Errorf("read build module %s: no files", sourceDir)
	}
	slices.Sort(names)
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(sourceDir, n)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return nil
}

// pinnedModule checks that the build module requires upstream at version
// and returns the module's checksum from go.sum.
func pinnedModule(moduleDir, upstream, version string) (string, error) {
	gomod := filepath.Join(moduleDir, "go.mod")
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("read build module: %w", err)
	}
	var got string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == upstream && f[1] != "=>" {
			got = f[1]
			break
		}
	}
	if got != version {
		return "", fmt.Errorf("%s requires %s %q, but anvil pins %s: change one to match the other", gomod, upstream, got, version)
	}
	gosum := filepath.Join(moduleDir, "go.sum")
	sums, err := os.ReadFile(gosum)
	if err != nil {
		return "", fmt.Errorf("read build module: %w", err)
	}
	for _, line := range strings.Split(string(sums), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == upstream && f[1] == version {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("%s has no checksum for %s %s: run go mod tidy in %s", gosum, upstream, version, moduleDir)
}

// toolchainInputs are the versions of what a cgo build links besides Go:
// the C compiler and the pkg-config libraries.
func toolchainInputs(ctx context.Context, goCmd string, s buildSpec) ([]string, error) {
	if !s.CGO {
		return nil, nil
	}
	cc, err := goEnv(ctx, goCmd, "CC")
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, cc, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("build %s needs a C compiler: %s --version: %w (hack/deps.sh installs one)", s.Name, cc, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	extra := []string{"cc " + strings.TrimSpace(first)}
	for _, lib := range s.PkgConfig {
		v, err := exec.CommandContext(ctx, "pkg-config", "--modversion", lib).Output()
		if err != nil {
			return nil, fmt.Errorf("build %s needs the C library %s: pkg-config --modversion %s: %w (hack/deps.sh installs it)", s.Name, lib, lib, err)
		}
		extra = append(extra, lib+" "+strings.TrimSpace(string(v)))
	}
	return extra, nil
}

func sameNames(files []File, names []string) bool {
	if len(files) != len(names) {
		return false
	}
	for i := range files {
		if files[i].Name != names[i] {
			return false
		}
	}
	return true
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
// moduleSourceDir is where the Go module cache holds the source of the
// build module's upstream module (its go.sum checked it when it was
// downloaded, for the build).
func moduleSourceDir(ctx context.Context, goCmd, dir, module string) (string, error) {
	if module == "" {
		return "", errors.New("the build names no upstream module to take files from")
	}
	cmd := exec.CommandContext(ctx, goCmd, "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("find %s's source (go list -m in %s): %w", module, dir, err)
	}
	src := strings.TrimSpace(string(out))
	if src == "" {
		return "", fmt.Errorf("%s's source is not in the module cache (go mod download in %s)", module, dir)
	}
	return src, nil
}

func countDeps(ctx context.Context, goCmd, dir string, env, tags, pkgs []string) int {
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, goCmd, append(args, pkgs...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
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
