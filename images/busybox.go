package images

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// busyboxRecipe is the version of what ensureBusybox does with the source
// package besides the spec (the steps, the build's environment, the
// strip); bump it when that changes.
const busyboxRecipe = 1

// busyboxSourcePackage is the Debian source package busybox is built from.
const busyboxSourcePackage = "busybox"

// debianKeyring is the Debian archive's signing keyring, which apt checks
// the mirror's index against before it trusts the hashes the index lists.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// busyboxSpec is busybox built here from Debian's source package in
// DebianSuite, with Debian's patches except the ones Drop names, by the
// package's own debian/rules for one flavour.
type busyboxSpec struct {
	// Version is the source package's version in DebianSuite.
	Version string
	// DscSHA256 pins the source package's .dsc, which pins every other
	// file of the package by its sha256.
	DscSHA256 string
	// Flavour is the debian/rules flavour built: its configuration is
	// debian/config/pkg/<Flavour>, its binary b/<Flavour>/busybox.
	Flavour string
	// Drop are entries of debian/patches/series left out.
	Drop []droppedPatch
}

// droppedPatch is a patch of the series left out of the build.
type droppedPatch struct {
	Name string
	// ConfigSymbols are the Kconfig symbols the patch adds. Their lines
	// go from the flavour's configuration: without the patch the symbol
	// does not exist, and debian/rules fails when the configuration it
	// regenerates differs from the shipped one.
	ConfigSymbols []string
}

func (b busyboxSpec) hashKey() string {
	drop := make([]string, len(b.Drop))
	for i, d := range b.Drop {
		drop[i] = d.Name
		if len(d.ConfigSymbols) > 0 {
			drop[i] += "[" + strings.Join(d.ConfigSymbols, ",") + "]"
		}
	}
	return fmt.Sprintf("debian-source=%s suite=%s version=%s dsc-sha256=%s flavour=%s drop=%s recipe=%d",
		busyboxSourcePackage, DebianSuite, b.Version, b.DscSHA256, b.Flavour, strings.Join(drop, ","), busyboxRecipe)
}

func (b busyboxSpec) id() string {
	h := sha256.Sum256([]byte(b.hashKey()))
	return hex.EncodeToString(h[:])[:12]
}

// fileVersion is the version as Debian's file names spell it: without the
// epoch.
func (b busyboxSpec) fileVersion() string {
	if _, v, ok := strings.Cut(b.Version, ":"); ok {
		return v
	}
	return b.Version
}

func (b busyboxSpec) dscName() string {
	return busyboxSourcePackage + "_" + b.fileVersion() + ".dsc"
}

// The steps of a busybox build, as its errors name them.
const (
	busyboxStepPrepare  = "prepare"
	busyboxStepDownload = "download"
	busyboxStepHash     = "hash check"
	busyboxStepUnpack   = "unpack"
	busyboxStepPatch    = "patch"
	busyboxStepBuild    = "build"
	busyboxStepCheck    = "check"
)

// busyboxError is a failed step of a busybox build.
type busyboxError struct {
	Version string
	Step    string
	Err     error
}

func (e *busyboxError) Error() string {
	return fmt.Sprintf("busybox %s from Debian's source package: %s: %v", e.Version, e.Step, e.Err)
}

func (e *busyboxError) Unwrap() error { return e.Err }

// busyboxDone marks a finished busybox; it is written last.
const busyboxDone = "busybox.json"

// busyboxRecord is what busyboxDone says.
type busyboxRecord struct {
	Spec     string `json:"spec"`
	Mirror   string `json:"mirror"`
	SHA256   string `json:"sha256"`
	Compiler string `json:"compiler"`
	Took     string `json:"took"`
}

// ensureBusybox returns the busybox binary of b: the one a previous build
// made (kept by b's hash in the cache, or in the output directory without
// one), else a new one built from the source package downloaded from the
// Debian mirror o.Mirror. The build runs in a scratch directory renamed
// into place once the binary passed its check, so a failed or interrupted
// build never leaves an entry that looks finished.
func ensureBusybox(ctx context.Context, o BuildOptions, b busyboxSpec, report func(string)) (string, error) {
	base := entryBase(o)
	name := "busybox-" + b.fileVersion() + "-" + b.id()
	dir := filepath.Join(base, name)
	bin := filepath.Join(dir, "busybox")
	if rec, err := readBusyboxRecord(dir); err == nil {
		if sum, _, err := HashFile(bin); err == nil && sum == rec.SHA256 {
			report(fmt.Sprintf("busybox %s: reused %s", b.Version, bin))
			return bin, nil
		}
	}
	// An entry appears whole, by a rename; one that does not verify was
	// damaged since, and is made again.
	if _, err := os.Stat(dir); err == nil {
		report(fmt.Sprintf("busybox %s: %s does not match its record; building it again", b.Version, dir))
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("remove the damaged busybox %s: %w", dir, err)
		}
	}
	fail := func(step string, err error) error { return &busyboxError{Version: b.Version, Step: step, Err: err} }
	if o.Mirror == "" {
		return "", fail(busyboxStepPrepare, errors.New("no Debian mirror to download the source package from: give one with --mirror"))
	}
	if err := busyboxPrerequisites(ctx); err != nil {
		return "", fail(busyboxStepPrepare, err)
	}
	scratch, err := newScratch(base, ".busybox-")
	if err != nil {
		return "", fail(busyboxStepPrepare, err)
	}
	defer os.RemoveAll(scratch)
	start := time.Now()
	bb := &busyboxBuild{spec: b, mirror: o.Mirror, work: filepath.Join(scratch, "work"), out: filepath.Join(scratch, "busybox"),
		log: filepath.Join(base, name+".log"), every: o.ProgressEvery, report: report}
	report(fmt.Sprintf("busybox %s: building Debian's %s flavour from its source package from %s (log %s)", b.Version, b.Flavour, o.Mirror, bb.log))
	for _, s := range []struct {
		step string
		run  func(context.Context) error
	}{
		{busyboxStepDownload, bb.download},
		{busyboxStepHash, bb.verify},
		{busyboxStepUnpack, bb.unpack},
		{busyboxStepPatch, bb.patch},
		{busyboxStepBuild, bb.build},
		{busyboxStepCheck, bb.check},
	} {
		if err := s.run(ctx); err != nil {
			return "", fail(s.step, err)
		}
	}
	// The sources and the build tree are no part of the entry.
	if err := os.RemoveAll(bb.work); err != nil {
		return "", fail(busyboxStepBuild, err)
	}
	sum, _, err := HashFile(bb.out)
	if err != nil {
		return "", fail(busyboxStepBuild, err)
	}
	rec, err := json.Marshal(busyboxRecord{Spec: b.hashKey(), Mirror: o.Mirror, SHA256: sum, Compiler: bb.compiler, Took: time.Since(start).Round(time.Second).String()})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(scratch, busyboxDone), append(rec, '\n'), 0o644); err != nil {
		return "", fail(busyboxStepBuild, err)
	}
	if err := os.Rename(scratch, dir); err != nil {
		// Another build finished the same busybox first.
		if _, serr := readBusyboxRecord(dir); serr == nil {
			return bin, nil
		}
		return "", fail(busyboxStepBuild, fmt.Errorf("install %s: %w", dir, err))
	}
	report(fmt.Sprintf("busybox %s: made %s in %s", b.Version, bin, time.Since(start).Round(time.Second)))
	return bin, nil
}

func readBusyboxRecord(dir string) (*busyboxRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, busyboxDone))
	if err != nil {
		return nil, err
	}
	var rec busyboxRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, busyboxDone), err)
	}
	return &rec, nil
}

// busyboxPrerequisites checks for what the build runs, before it
// downloads anything.
func busyboxPrerequisites(ctx context.Context) error {
	// command → Debian package (hack/deps.sh installs them)
	for _, need := range [][2]string{{"apt-get", "apt"}, {"dpkg-source", "dpkg-dev"}, {"make", "make"}, {"gcc", "gcc"}, {"strip", "binutils"}} {
		if _, err := exec.LookPath(need[0]); err != nil {
			return fmt.Errorf("the build runs %s, which is not installed (apt-get install %s)", need[0], need[1])
		}
	}
	for _, need := range [][2]string{{debianKeyring, "debian-archive-keyring"}, {"/usr/share/dpkg/default.mk", "dpkg-dev"}} {
		if _, err := os.Stat(need[0]); err != nil {
			return fmt.Errorf("the build needs %s (apt-get install %s)", need[0], need[1])
		}
	}
	// A static binary links glibc's static library; gcc names the file
	// alone when it has none.
	if out, err := exec.CommandContext(ctx, "gcc", "-print-file-name=libc.a").Output(); err != nil || !filepath.IsAbs(strings.TrimSpace(string(out))) {
		return errors.New("the static build needs glibc's libc.a (apt-get install libc6-dev)")
	}
	return nil
}

// busyboxBuild is one build of a busybox spec in a scratch directory.
type busyboxBuild struct {
	spec   busyboxSpec
	mirror string
	// work holds apt's private state, the downloaded files and the
	// source tree; out is where the finished binary goes.
	work, out string
	log       string
	every     time.Duration
	report    func(string)
	// compiler is the C compiler's version, for the record.
	compiler string
}

func (bb *busyboxBuild) srcDir() string { return filepath.Join(bb.work, "src") }
func (bb *busyboxBuild) tree() string   { return filepath.Join(bb.work, "src", "tree") }
func (bb *busyboxBuild) aptDir() string { return filepath.Join(bb.work, "apt") }

// label names a command in progress lines and in the step's error,
// which says the version.
func (bb *busyboxBuild) label(s string) string { return "busybox: " + s }

// aptOptions point apt at a sources list of the mirror's source index
// alone and at state of its own, so the host's apt configuration and
// indexes stay as they are.
func (bb *busyboxBuild) aptOptions() []string {
	a := bb.aptDir()
	return []string{"-q",
		"-o", "Dir::Etc::SourceList=" + filepath.Join(a, "sources.list"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(a, "sources.list.d"),
		"-o", "Dir::State=" + filepath.Join(a, "state"),
		"-o", "Dir::State::Lists=" + filepath.Join(a, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(a, "cache"),
	}
}

// download fetches the source package's files into srcDir with apt,
// which checks them against the mirror's signed index.
func (bb *busyboxBuild) download(ctx context.Context) error {
	a := bb.aptDir()
	for _, d := range []string{filepath.Join(a, "sources.list.d"), filepath.Join(a, "state"), filepath.Join(a, "lists", "partial"), filepath.Join(a, "cache", "archives", "partial"), bb.srcDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	list := fmt.Sprintf("deb-src [signed-by=%s] %s %s main\n", debianKeyring, bb.mirror, DebianSuite)
	if err := os.WriteFile(filepath.Join(a, "sources.list"), []byte(list), 0o644); err != nil {
		return err
	}
	update := exec.CommandContext(ctx, "apt-get", append(bb.aptOptions(), "--error-on=any", "update")...)
	if err := runLogged(ctx, update, bb.log, bb.label("apt-get update"), bb.every, bb.report); err != nil {
		return err
	}
	source := exec.CommandContext(ctx, "apt-get", append(bb.aptOptions(), "source", "--download-only", "--only-source", busyboxSourcePackage+"="+bb.spec.Version)...)
	source.Dir = bb.srcDir()
	if err := runLogged(ctx, source, bb.log, bb.label("apt-get source"), bb.every, bb.report); err != nil {
		if have := bb.available(ctx); len(have) > 0 && !slices.Contains(have, bb.spec.Version) {
			return fmt.Errorf("%s %s's source index has %s %s, not %s, which anvil pins (images/conformance.go): %w",
				bb.mirror, DebianSuite, busyboxSourcePackage, strings.Join(have, ", "), bb.spec.Version, err)
		}
		return err
	}
	return nil
}

// available lists the versions of the source package the mirror's index
// has, to say so when the pinned one is gone.
func (bb *busyboxBuild) available(ctx context.Context) []string {
	out, err := exec.CommandContext(ctx, "apt-cache", append(bb.aptOptions(), "madison", busyboxSourcePackage)...).Output()
	if err != nil {
		return nil
	}
	var versions []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) == 3 && strings.TrimSpace(f[0]) == busyboxSourcePackage && strings.HasSuffix(strings.TrimSpace(f[2]), "Sources") {
			versions = append(versions, strings.TrimSpace(f[1]))
		}
	}
	return versions
}

// verify holds the .dsc to its pinned sha256 and every file it lists to
// the sha256 and size it gives.
func (bb *busyboxBuild) verify(context.Context) error {
	dsc := filepath.Join(bb.srcDir(), bb.spec.dscName())
	sum, _, err := HashFile(dsc)
	if err != nil {
		return err
	}
	if sum != bb.spec.DscSHA256 {
		return fmt.Errorf("%s from %s has sha256 %s, anvil pins %s", bb.spec.dscName(), bb.mirror, sum, bb.spec.DscSHA256)
	}
	data, err := os.ReadFile(dsc)
	if err != nil {
		return err
	}
	files, err := dscChecksums(string(data))
	if err != nil {
		return fmt.Errorf("%s: %w", dsc, err)
	}
	for _, f := range files {
		p := filepath.Join(bb.srcDir(), f.Name)
		got, size, err := HashFile(p)
		if err != nil {
			return err
		}
		if got != f.SHA256 || size != f.Size {
			return fmt.Errorf("%s from %s has sha256 %s and %d bytes, its .dsc says %s and %d", f.Name, bb.mirror, got, size, f.SHA256, f.Size)
		}
	}
	return nil
}

// unpack extracts the source package without applying its patches.
func (bb *busyboxBuild) unpack(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "dpkg-source", "--skip-patches", "-x", bb.spec.dscName(), bb.tree())
	cmd.Dir = bb.srcDir()
	return runLogged(ctx, cmd, bb.log, bb.label("dpkg-source -x"), bb.every, bb.report)
}

// patch leaves the dropped patches out of the series (and their symbols
// out of the flavour's configuration), then applies the rest as
// dpkg-source does for any build.
func (bb *busyboxBuild) patch(ctx context.Context) error {
	var names, symbols []string
	for _, d := range bb.spec.Drop {
		names = append(names, d.Name)
		symbols = append(symbols, d.ConfigSymbols...)
	}
	series := filepath.Join(bb.tree(), "debian", "patches", "series")
	if err := rewrite(series, func(s string) (string, error) { return filterSeries(s, names) }); err != nil {
		return err
	}
	config := filepath.Join(bb.tree(), "debian", "config", "pkg", bb.spec.Flavour)
	if err := rewrite(config, func(s string) (string, error) { return dropConfigSymbols(s, symbols) }); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "dpkg-source", "--before-build", bb.tree())
	cmd.Dir = bb.srcDir()
	return runLogged(ctx, cmd, bb.log, bb.label("dpkg-source --before-build"), bb.every, bb.report)
}

// rewrite replaces the file at path (in the scratch tree) with edit's
// result.
func rewrite(path string, edit func(string) (string, error)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := edit(string(data))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// build runs the package's own debian/rules for the flavour, then strips
// the binary as Debian's packaging does (dh_strip).
func (bb *busyboxBuild) build(ctx context.Context) error {
	cc, err := exec.CommandContext(ctx, "gcc", "--version").Output()
	if err != nil {
		return fmt.Errorf("gcc --version: %w", err)
	}
	bb.compiler, _, _ = strings.Cut(string(cc), "\n")
	// The version busybox --help prints says the binary is not Debian's.
	rules := exec.CommandContext(ctx, "debian/rules", "build-"+bb.spec.Flavour, "DEB_VERSION="+bb.spec.Version+"+anvil")
	rules.Dir = bb.tree()
	rules.Env = buildEnv(os.Environ(), bb.work, runtime.NumCPU())
	if err := runLogged(ctx, rules, bb.log, bb.label("debian/rules build-"+bb.spec.Flavour), bb.every, bb.report); err != nil {
		return err
	}
	strip := exec.CommandContext(ctx, "strip", "--remove-section=.comment", "--remove-section=.note", "-o", bb.out,
		filepath.Join(bb.tree(), "b", bb.spec.Flavour, "busybox"))
	return runLogged(ctx, strip, bb.log, bb.label("strip"), bb.every, bb.report)
}

// check runs the binary as the conformance suite does: a static busybox
// whose sh keeps the variables it is given, whatever their names.
func (bb *busyboxBuild) check(ctx context.Context) error {
	return checkBusybox(ctx, bb.out)
}

func checkBusybox(ctx context.Context, bin string) error {
	ef, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; an image of busybox alone needs it static", bin)
		}
	}
	env := exec.CommandContext(ctx, bin, "sh", "-c", "env")
	env.Env = []string{"data-1=value-1"}
	out, err := env.Output()
	if err != nil {
		return fmt.Errorf("%s sh -c env: %w", bin, err)
	}
	if !slices.Contains(strings.Split(string(out), "\n"), "data-1=value-1") {
		return fmt.Errorf("%s sh -c env drops the variable data-1 it was given (is the patch that drops such names applied?); it printed %q", bin, out)
	}
	if out, err := exec.CommandContext(ctx, bin, "sh", "-c", "echo ok").Output(); err != nil || string(out) != "ok\n" {
		return fmt.Errorf("%s sh -c 'echo ok': %q %v", bin, out, err)
	}
	return nil
}

// buildEnv is the environment of debian/rules: the caller's PATH and
// TMPDIR, and nothing else of it (compiler flags, make flags or DEB_*
// variables there would change the binary without changing its hash).
func buildEnv(environ []string, home string, cpus int) []string {
	env := []string{"HOME=" + home, "DEB_BUILD_OPTIONS=parallel=" + strconv.Itoa(cpus)}
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" || k == "TMPDIR" {
			env = append(env, kv)
		}
	}
	return env
}

// filterSeries returns a quilt series without the patches drop names,
// keeping its comments and every other line as it is. Each dropped patch
// must be in the series: a pin that names a patch the package no longer
// has is stale.
func filterSeries(series string, drop []string) (string, error) {
	found := map[string]bool{}
	var kept []string
	lines := strings.SplitAfter(series, "\n")
	for _, line := range lines {
		name := seriesEntry(line)
		if name != "" && slices.Contains(drop, name) {
			found[name] = true
			continue
		}
		kept = append(kept, line)
	}
	for _, d := range drop {
		if !found[d] {
			return "", fmt.Errorf("the series has no patch %s to leave out", d)
		}
	}
	return strings.Join(kept, ""), nil
}

// seriesEntry is the patch a series line names, as dpkg-source reads it:
// without spaces around, a comment, or options after the name.
func seriesEntry(line string) string {
	line = strings.TrimSpace(line)
	if i := strings.Index(line, "#"); i >= 0 && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
		line = strings.TrimSpace(line[:i])
	}
	if f := strings.Fields(line); len(f) > 0 {
		return f[0]
	}
	return ""
}

// dropConfigSymbols removes each symbol's line ("CONFIG_X=…" or
// "# CONFIG_X is not set") from a Kconfig configuration. Each symbol must
// be there.
func dropConfigSymbols(config string, symbols []string) (string, error) {
	found := map[string]bool{}
	var kept []string
	for _, line := range strings.SplitAfter(config, "\n") {
		t := strings.TrimSpace(line)
		dropped := false
		for _, s := range symbols {
			if strings.HasPrefix(t, s+"=") || t == "# "+s+" is not set" {
				found[s], dropped = true, true
			}
		}
		if !dropped {
			kept = append(kept, line)
		}
	}
	for _, s := range symbols {
		if !found[s] {
			return "", fmt.Errorf("the configuration has no %s to leave out", s)
		}
	}
	return strings.Join(kept, ""), nil
}

// dscFile is a file a .dsc lists.
type dscFile struct {
	Name   string
	SHA256 string
	Size   int64
}

// dscChecksums reads the Checksums-Sha256 field of a .dsc (signed or
// not): one "sha256 size name" line per file of the source package.
func dscChecksums(dsc string) ([]dscFile, error) {
	var files []dscFile
	in := false
	sc := bufio.NewScanner(strings.NewReader(dsc))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			in = strings.EqualFold(strings.TrimSpace(line), "Checksums-Sha256:")
			continue
		}
		if !in {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("Checksums-Sha256: malformed line %q", line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("Checksums-Sha256: malformed size in %q", line)
		}
		sum, err := hex.DecodeString(f[0])
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("Checksums-Sha256: malformed sha256 in %q", line)
		}
		if f[2] == "." || f[2] == ".." || strings.ContainsAny(f[2], "/\\") {
			return nil, fmt.Errorf("Checksums-Sha256: file name %q is not a plain name", f[2])
		}
		files = append(files, dscFile{Name: f[2], SHA256: strings.ToLower(f[0]), Size: size})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no Checksums-Sha256 field listing the package's files")
	}
	return files, nil
}
