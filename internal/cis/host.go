package cis

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// Host is the machine the benchmark looks at.
type Host interface {
	// Processes lists every process with a command line (kernel threads
	// have none).
	Processes(ctx context.Context) ([]Process, error)
	// Stat describes each of paths that exists, following symlinks (as
	// `stat -L` does: the benchmark asks about what a component reads);
	// a missing path is left out. Each File's Path is the path as given.
	Stat(ctx context.Context, paths ...string) ([]File, error)
	// Tree describes dir and everything beneath it, following symlinks;
	// nothing when dir does not exist.
	Tree(ctx context.Context, dir string) ([]File, error)
	// ReadFile returns path's content, an error wrapping fs.ErrNotExist
	// when there is none.
	ReadFile(ctx context.Context, path string) ([]byte, error)
}

// Process is one running process.
type Process struct {
	PID  int
	Args []string
}

// File is what the benchmark asks of a file: its permission bits, owner and
// group (by name, as stat(1) prints them), whether it is a directory and
// its size.
type File struct {
	Path  string
	Mode  fs.FileMode // permission bits, with fs.ModeDir for a directory
	Owner string
	Group string
	Size  int64
}

// Perm is the file's permission bits.
func (f File) Perm() fs.FileMode { return f.Mode.Perm() }

// IsDir reports whether f is a directory.
func (f File) IsDir() bool { return f.Mode.IsDir() }

// String is "PATH 600 root:root", the way the report shows a file.
func (f File) String() string {
	return fmt.Sprintf("%s %o %s:%s", f.Path, f.Perm(), f.Owner, f.Group)
}

// ShellHost is a Host reached through POSIX shell commands that use only
// coreutils, find and base64, which every machine anvil installs on has.
// Run runs one command as root and returns its standard output; it is
// called a handful of times per Gather, so over SSH one connection's
// sessions serve it.
type ShellHost struct {
	Run func(ctx context.Context, cmd string) ([]byte, error)
}

// Processes reads every /proc/PID/cmdline, base64-encoded so that the
// arguments' NUL separators survive the shell. A process that ends while
// the loop runs is left out.
func (h ShellHost) Processes(ctx context.Context) ([]Process, error) {
	out, err := h.Run(ctx, `for d in /proc/[0-9]*; do c=$(base64 -w0 2>/dev/null <"$d/cmdline") && [ -n "$c" ] && printf '%s %s\n' "${d#/proc/}" "$c"; done; exit 0`)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	ps, err := parseProcesses(out)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	return ps, nil
}

// parseProcesses reads Processes' lines, "PID BASE64(cmdline)".
func parseProcesses(out []byte) ([]Process, error) {
	var ps []Process
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		pid, enc, ok := strings.Cut(line, " ")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("command line of %d: %w", n, err)
		}
		if len(raw) == 0 {
			continue
		}
		// The kernel ends every argument with a NUL; a process that
		// rewrote its command line may have left one string.
		ps = append(ps, Process{PID: n, Args: strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")})
	}
	return ps, nil
}

// findFormat is what find prints of a file: octal mode, owner, group,
// type, size and path, NUL-terminated (a path may hold any other byte).
const findFormat = `'%m %u %g %y %s %p\0'`

// Stat runs one find over the paths that exist.
func (h ShellHost) Stat(ctx context.Context, paths ...string) ([]File, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	var b strings.Builder
	b.WriteString("for p in")
	for _, p := range paths {
		b.WriteString(" " + quote(p))
	}
	b.WriteString(`; do if [ -e "$p" ]; then find -L "$p" -maxdepth 0 -printf ` + findFormat + ` || exit 1; fi; done`)
	out, err := h.Run(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", strings.Join(paths, " "), err)
	}
	return parseFind(out)
}

// Tree runs find over dir.
func (h ShellHost) Tree(ctx context.Context, dir string) ([]File, error) {
	q := quote(dir)
	out, err := h.Run(ctx, "if [ -e "+q+" ]; then find -L "+q+" -printf "+findFormat+"; fi")
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return parseFind(out)
}

// ReadFile cats path, telling a missing file from a failure.
func (h ShellHost) ReadFile(ctx context.Context, path string) ([]byte, error) {
	q := quote(path)
	out, err := h.Run(ctx, "if [ -e "+q+" ]; then printf 'ok\\n'; cat -- "+q+"; else printf 'missing\\n'; fi")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	status, data, _ := bytes.Cut(out, []byte("\n"))
	switch string(status) {
	case "ok":
		return data, nil
	case "missing":
		return nil, fmt.Errorf("read %s: %w", path, fs.ErrNotExist)
	}
	return nil, fmt.Errorf("read %s: unexpected output %q", path, status)
}

func parseFind(out []byte) ([]File, error) {
	var files []File
	for _, rec := range strings.Split(string(out), "\x00") {
		if rec == "" {
			continue
		}
		f, err := parseFindRecord(rec)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func parseFindRecord(rec string) (File, error) {
	parts := strings.SplitN(rec, " ", 6)
	if len(parts) != 6 {
		return File{}, fmt.Errorf("unexpected find output %q", rec)
	}
	mode, err := strconv.ParseUint(parts[0], 8, 32)
	if err != nil {
		return File{}, fmt.Errorf("unexpected mode in find output %q", rec)
	}
	size, err := strconv.ParseInt(parts[4], 10, 64)
	if err != nil {
		return File{}, fmt.Errorf("unexpected size in find output %q", rec)
	}
	f := File{Path: parts[5], Mode: fs.FileMode(mode).Perm(), Owner: parts[1], Group: parts[2], Size: size}
	if parts[3] == "d" {
		f.Mode |= fs.ModeDir
	}
	return f, nil
}

// quote makes s one word for the shell.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
