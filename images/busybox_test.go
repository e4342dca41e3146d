package images

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/lab"
)

func TestFilterSeries(t *testing.T) {
	series := `# The following patches need significant re-working
# u-mount-FreeBSD-support.patch

# other patches
shell-ash-export-HOME.patch
revert-9c143ce.patch
temp-deb-installer-hack.patch -p1
  spelling.diff   # a comment
CVE-2023-42363.patch
`
	for _, c := range []struct {
		name    string
		drop    []string
		want    string
		wantErr bool
	}{{
		name: "nothing",
		want: series,
	}, {
		name: "the revert and the patch that needs it",
		drop: []string{"revert-9c143ce.patch", "temp-deb-installer-hack.patch"},
		want: `# The following patches need significant re-working
# u-mount-FreeBSD-support.patch

# other patches
shell-ash-export-HOME.patch
  spelling.diff   # a comment
CVE-2023-42363.patch
`,
	}, {
		name: "an entry with a comment after it",
		drop: []string{"spelling.diff"},
		want: strings.Replace(series, "  spelling.diff   # a comment\n", "", 1),
	}, {
		name:    "a patch only commented out",
		drop:    []string{"u-mount-FreeBSD-support.patch"},
		wantErr: true,
	}, {
		name:    "a patch the series does not have",
		drop:    []string{"revert-9c143ce.patch", "gone.patch"},
		wantErr: true,
	}} {
		t.Run(c.name, func(t *testing.T) {
			got, err := filterSeries(series, c.drop)
			if c.wantErr {
				if err == nil {
					t.Errorf("no error; got\n%s", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("got %v\n%s\nwant\n%s", err, got, c.want)
			}
		})
	}
}

func TestDropConfigSymbols(t *testing.T) {
	config := "CONFIG_FEATURE_SH_EMBEDDED_SCRIPTS=y\n# CONFIG_FEATURE_DI_ENV_HACK is not set\n\n#\n# System Logging Utilities\n"
	for _, c := range []struct {
		name    string
		config  string
		symbols []string
		want    string
		wantErr bool
	}{
		{name: "not set", config: config, symbols: []string{"CONFIG_FEATURE_DI_ENV_HACK"},
			want: "CONFIG_FEATURE_SH_EMBEDDED_SCRIPTS=y\n\n#\n# System Logging Utilities\n"},
		{name: "set", config: "CONFIG_FEATURE_DI_ENV_HACK=y\nCONFIG_ASH=y\n", symbols: []string{"CONFIG_FEATURE_DI_ENV_HACK"}, want: "CONFIG_ASH=y\n"},
		{name: "a longer name is another symbol", config: "CONFIG_ASH_X=y\n", symbols: []string{"CONFIG_ASH"}, wantErr: true},
		{name: "none", config: config, want: config},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := dropConfigSymbols(c.config, c.symbols)
			if c.wantErr != (err != nil) || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestDscChecksums(t *testing.T) {
	head := "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: busybox\nChecksums-Sha1:\n 36a1766206c8148bc06aca4e1f134016d40912d0 2480624 busybox_1.35.0.orig.tar.bz2\nChecksums-Sha256:\n"
	tail := "Files:\n 585949b1dd4292b604b7d199866e9913 2480624 busybox_1.35.0.orig.tar.bz2\n\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n-----END PGP SIGNATURE-----\n"
	orig := " faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694 2480624 busybox_1.35.0.orig.tar.bz2\n"
	deb := " 1cacbe095ef4880ea7879933c8e3c5075d1527cd6fbcb626a9b41e5daefd1a46 68028 busybox_1.35.0-4+deb12u1.debian.tar.xz\n"
	got, err := dscChecksums(head + orig + deb + tail)
	want := []dscFile{
		{Name: "busybox_1.35.0.orig.tar.bz2", SHA256: "faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694", Size: 2480624},
		{Name: "busybox_1.35.0-4+deb12u1.debian.tar.xz", SHA256: "1cacbe095ef4880ea7879933c8e3c5075d1527cd6fbcb626a9b41e5daefd1a46", Size: 68028},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v %v", got, err)
	}
	for name, bad := range map[string]string{
		"no field":     "Format: 3.0 (quilt)\nFiles:\n 585949b1dd4292b604b7d199866e9913 2480624 busybox_1.35.0.orig.tar.bz2\n",
		"a path":       head + " faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694 2480624 ../busybox.tar.bz2\n",
		"a short hash": head + " faeeb244 2480624 busybox_1.35.0.orig.tar.bz2\n",
		"no size":      head + " faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694 busybox_1.35.0.orig.tar.bz2\n",
	} {
		if got, err := dscChecksums(bad); err == nil {
			t.Errorf("%s: read %v", name, got)
		}
	}
}

func TestBuildEnv(t *testing.T) {
	got := buildEnv([]string{"PATH=/usr/bin:/bin", "CFLAGS=-O0", "MAKEFLAGS=-j9", "DEB_BUILD_OPTIONS=nostrip", "TMPDIR=/var/tmp", "GOFLAGS=-v"}, "/w", 2)
	want := []string{"HOME=/w", "DEB_BUILD_OPTIONS=parallel=2", "PATH=/usr/bin:/bin", "TMPDIR=/var/tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestBusyboxFromDebianSource builds the conformance busybox image's
// binary from Debian's source package into the per-user cache that `anvil
// images build` and `make conformance` use (a few minutes on two cores the
// first time, reused after), checks that its sh keeps variables whose names
// are not shell identifiers, as the suite's ConfigMap and Secrets tests
// need, that a second build reuses it, and that a failed build leaves
// nothing in its cache.
func TestBusyboxFromDebianSource(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads and builds busybox")
	}
	ctx := context.Background()
	mirror, err := lab.HostMirror(DebianSuite)
	if err == nil {
		err = busyboxPrerequisites(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs a Debian mirror and the build's tools (hack/deps.sh): %v", err)
		}
		t.Skipf("cannot build busybox here: %v", err)
	}
	userCache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	o := BuildOptions{CacheDir: filepath.Join(userCache, "anvil", "kube"), Mirror: mirror, ProgressEvery: time.Minute, Progress: func(s string) {
		lines = append(lines, s)
		t.Log(s)
	}}
	spec := *debianBusybox()
	start := time.Now()
	bin, err := ensureBusybox(ctx, o, spec, o.Progress)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "reused") }) {
		t.Logf("FIGURE busybox cold build: %s", time.Since(start).Round(time.Second))
	}

	// The names the suite's ConfigMap and Secrets tests give (envFrom,
	// with their prefixes), and a valid one.
	vars := []string{"data-1=x", "1-data-1=value-1", "$_-data-1=value-1", "ABC_data-1=value-1", "#@!data-1=value-1", "CONFIG_DATA_1=y"}
	env := exec.Command(bin, "sh", "-c", "env")
	env.Env = vars
	out, err := env.Output()
	if err != nil {
		t.Fatalf("busybox sh -c env: %v", err)
	}
	for _, v := range vars {
		if !slices.Contains(strings.Split(string(out), "\n"), v) {
			t.Errorf("env %q busybox sh -c env does not print it:\n%s", v, out)
		}
	}
	if out, err := exec.Command(bin, "sh", "-c", "echo ok").Output(); err != nil || string(out) != "ok\n" {
		t.Errorf("busybox sh -c 'echo ok': %q %v", out, err)
	}
	// The applets the image links, as Debian's busybox-static has them.
	list, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		t.Fatal(err)
	}
	applets := strings.Fields(string(list))
	for _, a := range []string{"bin/sh", "usr/bin/env", "bin/cat", "bin/sleep", "usr/bin/wget", "usr/bin/nslookup", "bin/ping", "usr/bin/nc", "bin/ls"} {
		if !slices.Contains(applets, a) {
			t.Errorf("busybox has no applet %s", a)
		}
	}
	if help, _ := exec.Command(bin, "--help").Output(); !strings.Contains(string(help), "(Debian "+spec.Version+"+anvil)") {
		t.Errorf("busybox --help does not say which build it is:\n%.200s", help)
	}

	lines = nil
	start = time.Now()
	again, err := ensureBusybox(ctx, o, spec, o.Progress)
	if err != nil || again != bin || len(lines) != 1 || !strings.Contains(lines[0], "reused") {
		t.Errorf("second build: %s %v %q", again, err, lines)
	}
	t.Logf("FIGURE busybox from the cache: %s", time.Since(start).Round(time.Millisecond))

	// Another spec is another entry; a wrong pin fails at the hash
	// check and leaves nothing but its log.
	cache := t.TempDir()
	o.CacheDir = cache
	bad := spec
	bad.DscSHA256 = strings.Repeat("0", 64)
	_, err = ensureBusybox(ctx, o, bad, o.Progress)
	var be *busyboxError
	if !errors.As(err, &be) || be.Step != busyboxStepHash {
		t.Fatalf("a wrong pin: %v", err)
	}
	t.Logf("a wrong pin: %v", err)
	entries, _ := os.ReadDir(cache)
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			names = append(names, e.Name())
		}
	}
	if len(names) != 0 {
		t.Errorf("the cache holds %v after a failed build, want only its log", names)
	}
}
