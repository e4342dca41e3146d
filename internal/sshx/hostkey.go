package sshx

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"anvil.dev/anvil/internal/fsutil"
)

// UnknownHostError is returned when known_hosts has no key for the host.
// Nothing is trusted on first use: the operator adds the key after checking
// Fingerprint out of band.
type UnknownHostError struct {
	Host        string // as dialled, host:port
	KnownHosts  string // the file that was searched
	KeyType     string // the offered key's algorithm
	Fingerprint string // SHA256:… of the offered key
	Key         ssh.PublicKey
}

func (e *UnknownHostError) Error() string {
	return fmt.Sprintf("host %s is not in %s: it offered %s key %s; add it only after checking that fingerprint",
		e.Host, e.KnownHosts, e.KeyType, e.Fingerprint)
}

// HostKeyChangedError is returned when the host offered a key other than
// the one known_hosts records for it: either the machine was reinstalled or
// someone is in the middle.
type HostKeyChangedError struct {
	Host        string   // as dialled, host:port
	Fingerprint string   // SHA256:… of the offered key
	KeyType     string   // the offered key's algorithm
	Known       []string // SHA256:… of each recorded key
	Lines       []string // file:line of each recorded key
	Key         ssh.PublicKey
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("host key of %s changed: it offered %s key %s, but %s records %s; refusing to connect (possible man-in-the-middle)",
		e.Host, e.KeyType, e.Fingerprint, strings.Join(e.Lines, ", "), strings.Join(e.Known, ", "))
}

// RevokedHostKeyError is returned when the offered key is marked @revoked.
type RevokedHostKeyError struct {
	Host        string
	Fingerprint string
	Line        string
}

func (e *RevokedHostKeyError) Error() string {
	return fmt.Sprintf("host %s offered revoked key %s (%s)", e.Host, e.Fingerprint, e.Line)
}

// Fingerprint is the key's SHA256 fingerprint as OpenSSH prints it.
func Fingerprint(key ssh.PublicKey) string { return ssh.FingerprintSHA256(key) }

// hostKeyChecker wraps knownhosts so that every refusal is one of the typed
// errors above, and remembers it: x/crypto reports the callback's error
// inside its own handshake error, and callers want ours.
type hostKeyChecker struct {
	file string
	cb   ssh.HostKeyCallback
	err  error
}

func newHostKeyChecker(file string) (*hostKeyChecker, error) {
	if file == "" {
		return nil, errors.New("no known_hosts file: host keys are always checked")
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	return &hostKeyChecker{file: file, cb: cb}, nil
}

func (h *hostKeyChecker) check(host string, remote net.Addr, key ssh.PublicKey) error {
	err := h.cb(host, remote, key)
	if err == nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.As(err, &keyErr) && len(keyErr.Want) == 0:
		err = &UnknownHostError{Host: host, KnownHosts: h.file, KeyType: key.Type(), Fingerprint: Fingerprint(key), Key: key}
	case errors.As(err, &keyErr):
		e := &HostKeyChangedError{Host: host, KeyType: key.Type(), Fingerprint: Fingerprint(key), Key: key}
		for _, w := range keyErr.Want {
			e.Known = append(e.Known, Fingerprint(w.Key))
			e.Lines = append(e.Lines, fmt.Sprintf("%s:%d", w.Filename, w.Line))
		}
		err = e
	case errors.As(err, &revoked):
		err = &RevokedHostKeyError{Host: host, Fingerprint: Fingerprint(key),
			Line: fmt.Sprintf("%s:%d", revoked.Revoked.Filename, revoked.Revoked.Line)}
	}
	h.err = err
	return err
}

// algorithms lists the host key algorithms known_hosts has keys of for
// host, so the server is asked for a key we can check rather than, say, an
// RSA key when only its ed25519 key is recorded (OpenSSH does the same).
// It asks knownhosts about a throwaway key: the KeyError lists what is
// recorded for the host.
func (h *hostKeyChecker) algorithms(host string) []string {
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	if err := h.cb(host, &net.TCPAddr{IP: net.IPv4zero}, probe); !errors.As(err, &keyErr) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, w := range keyErr.Want {
		for _, a := range algorithmsFor(w.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos
}

func algorithmsFor(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// KnownHost is one known_hosts entry: the addresses a host is reached at
// and its public key.
type KnownHost struct {
	// Addresses as dialled: "10.0.0.5", "node1", or "10.0.0.5:2222" for a
	// port other than 22.
	Addresses []string
	Key       ssh.PublicKey
}

// Line is the known_hosts line for k.
func (k KnownHost) Line() string { return knownhosts.Line(k.Addresses, k.Key) }

// WriteKnownHosts replaces path with one line per entry, atomically and
// with mode 0600.
func WriteKnownHosts(path string, entries []KnownHost) error {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Line())
		b.WriteByte('\n')
	}
	return fsutil.WriteFile(path, []byte(b.String()), 0o600, 0o700)
}

// AppendKnownHosts adds entries to path (created if missing), keeping the
// lines already there; the file is rewritten atomically.
func AppendKnownHosts(path string, entries []KnownHost) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read known_hosts: %w", err)
	}
	var b strings.Builder
	b.Write(old)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		b.WriteByte('\n')
	}
	for _, e := range entries {
		b.WriteString(e.Line())
		b.WriteByte('\n')
	}
	return fsutil.WriteFile(path, []byte(b.String()), 0o600, 0o700)
}
