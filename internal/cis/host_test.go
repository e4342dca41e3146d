package cis

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// localHost is a ShellHost over this machine's sh: the commands it sends
// a master, run here.
func localHost(t *testing.T) ShellHost {
	t.Helper()
	for _, prog := range []string{"sh", "find", "base64", "cat"} {
		if _, err := exec.LookPath(prog); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("ShellHost needs %s: %v", prog, err)
			}
			t.Skipf("ShellHost needs %s: %v", prog, err)
		}
	}
	return ShellHost{Run: func(ctx context.Context, cmd string) ([]byte, error) {
		return exec.CommandContext(ctx, "sh", "-c", cmd).Output()
	}}
}

// statFile is what os.Stat says of p, as a File.
func statFile(t *testing.T, p string) File {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	name := func(id uint32, lookup func(string) (string, error)) string {
		s := strconv.Itoa(int(id))
		if n, err := lookup(s); err == nil {
			return n
		}
		return s
	}
	f := File{
		Path:  p,
		Mode:  fi.Mode() & (fs.ModeDir | fs.ModePerm),
		Owner: name(st.Uid, func(s string) (string, error) { u, err := user.LookupId(s); return nameOf(u, err) }),
		Group: name(st.Gid, func(s string) (string, error) { g, err := user.LookupGroupId(s); return groupOf(g, err) }),
		Size:  fi.Size(),
	}
	return f
}

func nameOf(u *user.User, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func groupOf(g *user.Group, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return g.Name, nil
}

// TestShellHost runs ShellHost's commands on this machine over files
// whose names a shell could trip on, and holds what they find to what Go
// finds.
func TestShellHost(t *testing.T) {
	h := localHost(t)
	ctx := context.Background()
	dir := t.TempDir()
	odd := filepath.Join(dir, "it's a\nfile -name *")
	sub := filepath.Join(dir, "sub")
	for _, d := range []struct {
		p    string
		perm fs.FileMode
		data string
	}{
		{filepath.Join(dir, "plain"), 0o640, "hello"},
		{odd, 0o600, ""},
		{sub, fs.ModeDir | 0o750, ""},
		{filepath.Join(sub, "key"), 0o400, "secret"},
	} {
		var err error
		if d.perm.IsDir() {
			err = os.Mkdir(d.p, d.perm.Perm())
		} else {
			err = os.WriteFile(d.p, []byte(d.data), d.perm)
		}
		if err == nil {
			err = os.Chmod(d.p, d.perm.Perm()) // past the umask
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("plain", link); err != nil {
		t.Fatal(err)
	}

	t.Run("Stat", func(t *testing.T) {
		missing := filepath.Join(dir, "missing")
		got, err := h.Stat(ctx, filepath.Join(dir, "plain"), missing, odd, sub, link)
		if err != nil {
			t.Fatal(err)
		}
		// A symlink is described by what it points to, under its own
		// name; a missing path is left out.
		linked := statFile(t, filepath.Join(dir, "plain"))
		linked.Path = link
		want := []File{statFile(t, filepath.Join(dir, "plain")), statFile(t, odd), statFile(t, sub), linked}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Stat:\n got %+v\nwant %+v", got, want)
		}
		if got, err := h.Stat(ctx); err != nil || got != nil {
			t.Errorf("Stat of nothing: %v %v", got, err)
		}
	})

	t.Run("Tree", func(t *testing.T) {
		got, err := h.Tree(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		var want []File
		for _, p := range []string{dir, filepath.Join(dir, "plain"), odd, sub, filepath.Join(sub, "key"), link} {
			f := statFile(t, p)
			want = append(want, f)
		}
		sortFiles := func(fs []File) { slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) }) }
		sortFiles(got)
		sortFiles(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Tree:\n got %+v\nwant %+v", got, want)
		}
		if got, err := h.Tree(ctx, filepath.Join(dir, "missing")); err != nil || got != nil {
			t.Errorf("Tree of a missing directory: %v %v", got, err)
		}
	})

	t.Run("ReadFile", func(t *testing.T) {
		if got, err := h.ReadFile(ctx, filepath.Join(sub, "key")); err != nil || string(got) != "secret" {
			t.Errorf("ReadFile: %q %v", got, err)
		}
		if got, err := h.ReadFile(ctx, odd); err != nil || len(got) != 0 {
			t.Errorf("ReadFile of an empty file: %q %v", got, err)
		}
		if _, err := h.ReadFile(ctx, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile of a missing file: %v, want fs.ErrNotExist", err)
		}
		if _, err := h.ReadFile(ctx, sub); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile of a directory: %v, want a failure", err)
		}
	})

	t.Run("Processes", func(t *testing.T) {
		ps, err := h.Processes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ps, func(p Process) bool { return p.PID == os.Getpid() })
		if i < 0 {
			t.Fatalf("this test's own process (%d) is not among %d", os.Getpid(), len(ps))
		}
		if !reflect.DeepEqual(ps[i].Args, os.Args) {
			t.Errorf("this test's command line %q, want %q", ps[i].Args, os.Args)
		}
	})

	t.Run("a failing command", func(t *testing.T) {
		bad := ShellHost{Run: func(context.Context, string) ([]byte, error) { return nil, errors.New("connection lost") }}
		if _, err := bad.Processes(ctx); err == nil || !strings.Contains(err.Error(), "connection lost") {
			t.Errorf("Processes: %v", err)
		}
		if _, err := bad.ReadFile(ctx, "/x"); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile: %v", err)
		}
	})
}

// findRecord is what find -printf findFormat prints of f.
func findRecord(f File) string {
	kind := "f"
	if f.IsDir() {
		kind = "d"
	}
	return fmt.Sprintf("%o %s %s %s %d %s\x00", f.Perm(), f.Owner, f.Group, kind, f.Size, f.Path)
}

// FuzzParseFind feeds parseFind what a master's find could print: it
// never panics, and what it reads, printed again, reads the same.
func FuzzParseFind(f *testing.F) {
	for _, s := range []string{
		"600 root root f 12 /etc/kubernetes/admin.conf\x00700 root root d 4096 /etc/kubernetes/pki\x00",
		"4755 root root f 0 /usr/bin/with space\nand newline\x00",
		"750 1000 1000 l 3 /x\x00\x00",
		"999 root root f 1 /bad-mode\x00",
		"600 root root f -1 /neg\x00600 root\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		files, err := parseFind(out)
		if err != nil {
			return
		}
		var again strings.Builder
		for _, file := range files {
			if file.Mode&^(fs.ModeDir|fs.ModePerm) != 0 {
				t.Fatalf("%q: mode %v has more than permission bits and the directory bit", out, file.Mode)
			}
			again.WriteString(findRecord(file))
		}
		back, err := parseFind([]byte(again.String()))
		if err != nil {
			t.Fatalf("%q read as %+v, printed again as %q: %v", out, files, again.String(), err)
		}
		if !reflect.DeepEqual(back, files) {
			t.Fatalf("%q read as %+v, printed again and read as %+v", out, files, back)
		}
	})
}

// processLine is what Processes' command prints of p.
func processLine(p Process) string {
	return strconv.Itoa(p.PID) + " " + base64.StdEncoding.EncodeToString([]byte(strings.Join(p.Args, "\x00")+"\x00")) + "\n"
}

// FuzzParseProcesses feeds parseProcesses what a master's /proc could
// give: it never panics, and what it reads, printed again, reads the
// same.
func FuzzParseProcesses(f *testing.F) {
	for _, p := range [][]Process{
		{{PID: 1, Args: []string{"/sbin/init"}}, {PID: 4242, Args: []string{"/usr/local/bin/anvil", "etcd", "--config=/etc/anvil/etcd.yaml"}}},
		{{PID: 7, Args: []string{"sshd: root@notty"}}, {PID: 8, Args: []string{"a", "", "b\nc"}}},
	} {
		var b strings.Builder
		for _, pr := range p {
			b.WriteString(processLine(pr))
		}
		f.Add([]byte(b.String()))
	}
	f.Add([]byte("12 not-base64!\n"))
	f.Add([]byte("-3 YQA=\n0 YQA=\nx YQA=\n13\n14 \n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		ps, err := parseProcesses(out)
		if err != nil {
			return
		}
		var again strings.Builder
		for _, p := range ps {
			if p.PID <= 0 || len(p.Args) == 0 {
				t.Fatalf("%q: process %+v", out, p)
			}
			again.WriteString(processLine(p))
		}
		back, err := parseProcesses([]byte(again.String()))
		if err != nil {
			t.Fatalf("%q read as %+v, printed again as %q: %v", out, ps, again.String(), err)
		}
		if !reflect.DeepEqual(back, ps) {
			t.Fatalf("%q read as %+v, printed again and read as %+v", out, ps, back)
		}
	})
}
