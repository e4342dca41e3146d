package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"anvil.dev/anvil/internal/fsutil"
)

// identity is what makes one machine's tree its own, written into the
// upper layer of its overlay before its first boot.
type identity struct {
	Hostname  string
	MachineID string
	HostKey   []byte // private, OpenSSH PEM
	HostPub   []byte // public, authorized_keys line
	// Authorized is the lab's public key, for root and the sudo user.
	Authorized []byte
	// Hosts are /etc/hosts lines for every machine of the lab.
	Hosts []string
}

// treeFile is one file of a machine's identity; owner "" is root.
type treeFile struct {
	path  string
	data  []byte
	mode  fs.FileMode
	owner string
}

// prepareTree writes id into upper, the writable layer over base. Every
// directory it creates in upper copies the mode and owner of the same
// directory in base: overlayfs shows the upper one, and /root at 0755 or
// /home/debian owned by root would break sshd.
func prepareTree(base, upper string, id identity) error {
	files := []treeFile{
		{"/etc/hostname", []byte(id.Hostname + "\n"), 0o644, ""},
		{"/etc/machine-id", []byte(id.MachineID + "\n"), 0o444, ""},
		{"/etc/hosts", []byte(hostsFile(id)), 0o644, ""},
		{"/etc/ssh/ssh_host_ed25519_key", id.HostKey, 0o600, ""},
		{"/etc/ssh/ssh_host_ed25519_key.pub", id.HostPub, 0o644, ""},
		{"/root/.ssh/authorized_keys", id.Authorized, 0o600, ""},
		{"/home/" + SudoUser + "/.ssh/authorized_keys", id.Authorized, 0o600, SudoUser},
	}
	if err := copyDirAttrs(base, upper, "/"); err != nil {
		return err
	}
	for _, f := range files {
		uid, gid, err := lookupUser(base, f.owner)
		if err != nil {
			return err
		}
		if err := upperDirs(base, upper, filepath.Dir(f.path), uid, gid); err != nil {
			return err
		}
		p := filepath.Join(upper, f.path)
		if err := fsutil.WriteFile(p, f.data, f.mode, 0o755); err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

func hostsFile(id identity) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\n# lab machines\n")
	for _, h := range id.Hosts {
		b.WriteString(h + "\n")
	}
	return b.String()
}

// upperDirs creates rel and its parents in upper: like base's when base
// has them, else 0700 owned by uid:gid (the .ssh directories).
func upperDirs(base, upper, rel string, uid, gid int) error {
	parts := strings.Split(strings.Trim(filepath.Clean(rel), "/"), "/")
	cur := "/"
	for _, part := range parts {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		if _, err := os.Lstat(filepath.Join(upper, cur)); err == nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(base, cur)); err == nil {
			if err := copyDirAttrs(base, upper, cur); err != nil {
				return err
			}
			continue
		}
		p := filepath.Join(upper, cur)
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

// copyDirAttrs makes upper/rel a directory with base/rel's mode and owner.
func copyDirAttrs(base, upper, rel string) error {
	src, dst := filepath.Join(base, rel), filepath.Join(upper, rel)
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("base %s: %w", rel, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("base %s: no owner", rel)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if err := os.Chmod(dst, fi.Mode().Perm()|fi.Mode()&(fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	return nil
}

// lookupUser finds a user's uid and gid in base's /etc/passwd (not the
// host's: the ids are the machine's). "" is root.
func lookupUser(base, name string) (int, int, error) {
	if name == "" || name == "root" {
		return 0, 0, nil
	}
	f, err := os.Open(filepath.Join(base, "etc/passwd"))
	if err != nil {
		return 0, 0, fmt.Errorf("base users: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 4 && fields[0] == name {
			uid, err1 := strconv.Atoi(fields[2])
			gid, err2 := strconv.Atoi(fields[3])
			if err := errors.Join(err1, err2); err != nil {
				return 0, 0, fmt.Errorf("base user %s: %w", name, err)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("base has no user %s", name)
}
