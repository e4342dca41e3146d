package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Modes of what this package writes. Certificates and sa.pub are 0600 like
// the keys, not kubeadm's 0644: CIS 1.1.20 asks it of the PKI's
// certificates, and only root reads them (every component runs as root,
// and the directory is 0700 anyway).
const (
	certMode fs.FileMode = 0o600
	keyMode  fs.FileMode = 0o600
	dirMode  fs.FileMode = 0o700
)

// file is one file as found on disk: Data is nil when it does not exist.
type file struct {
	Path string
	Data []byte
	Mode fs.FileMode
}

func (f file) exists() bool { return f.Data != nil }

// readFile reads path; a missing file is not an error, anything else that
// stops the read (a directory in its place, a file where a parent
// directory should be, an I/O error) is.
func readFile(path string) (file, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return file{Path: path}, nil
	}
	if err != nil {
		return file{}, pathError("read", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return file{}, pathError("stat", path, err)
	}
	if data == nil {
		data = []byte{}
	}
	return file{Path: path, Data: data, Mode: fi.Mode().Perm()}, nil
}

// pathError is "op path: reason" without the path twice, as os errors
// already carry it.
func pathError(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// checkDir makes sure dir is a directory or does not exist yet, so that a
// file in its place, or in the place of one of its parents, is reported by
// name before anything is written.
func checkDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("read %s: not a directory", d)
		case err == nil:
			return nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return pathError("read", d, err)
		}
		// Missing, or under a file: the parent says which.
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// ReadCertFile reads the first certificate of a PEM file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathError("read", path, err)
	}
	certs, err := ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return certs[0], nil
}

// ReadKeyFile reads a PEM private key.
func ReadKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathError("read", path, err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return key, nil
}
