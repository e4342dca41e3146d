package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"

	"anvil.dev/anvil/internal/fsutil"
)

// LoadIdentity reads a private key file (OpenSSH, PKCS#1/8 or SEC1 PEM).
// Keys protected by a passphrase are refused with a message saying so:
// they belong in ssh-agent.
func LoadIdentity(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity file: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("identity file %s is protected by a passphrase: load it into ssh-agent instead", path)
	}
	if err != nil {
		return nil, fmt.Errorf("parse identity file %s: %w", path, err)
	}
	return signer, nil
}

// KeyPair is a freshly generated ed25519 key in the formats OpenSSH uses.
type KeyPair struct {
	Signer ssh.Signer
	// Private is the private key in OpenSSH's PEM format.
	Private []byte
	// Public is the authorized_keys / .pub line, newline-terminated.
	Public []byte
}

// NewEd25519 generates an ed25519 key pair; comment ends the public line.
func NewEd25519(comment string) (*KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode ed25519 key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("ed25519 signer: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ed25519 public key: %w", err)
	}
	line := ssh.MarshalAuthorizedKey(sshPub)
	if comment != "" {
		line = append(line[:len(line)-1], []byte(" "+comment+"\n")...)
	}
	return &KeyPair{Signer: signer, Private: pem.EncodeToMemory(block), Public: line}, nil
}

// Write stores the private key at path (0600) and the public line at
// path.pub (0644), as ssh-keygen does, atomically.
func (k *KeyPair) Write(path string) error {
	if err := fsutil.WriteFile(path, k.Private, 0o600, 0o700); err != nil {
		return err
	}
	return fsutil.WriteFile(path+".pub", k.Public, 0o644, 0o700)
}
