// Package sshx is anvil's small SSH client on golang.org/x/crypto/ssh: dial
// with a context and a timeout, authenticate with keys, check host keys
// strictly against a known_hosts file, keep the connection alive, and run a
// command whose exit status comes back as a typed error.
//
// Host keys are never trusted on first use. An address missing from
// known_hosts fails with *UnknownHostError (carrying the offered key's
// SHA256 fingerprint, so an operator can compare it out of band) and a key
// that differs from the recorded one fails with *HostKeyChangedError naming
// both fingerprints. Callers tell them apart with errors.As.
//
// What the SSH installer needs beyond that is here too, so every SSH user
// of anvil gets it the same way: keys from a running ssh-agent (DialAgent,
// then Config.Signers), a bastion (Config.Jump, checked as strictly as the
// target, or Config.DialContext with a client of one's own), bounded
// retries of failures that may pass (Config.Attempts; host key and
// authentication refusals are never retried, see Transient), and commands
// run as root through passwordless `sudo -n` for a login other than root
// (Config.Sudo, RunAsRoot, CheckSudo), where a sudo that wants a password
// is a *SudoError that says so instead of a hang.
//
// It knows nothing of clusters or anvil's commands: it is a transport.
package sshx
