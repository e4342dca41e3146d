package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"anvil.dev/anvil/internal/sshx"
)

// fakeHost is an SSH server on loopback that records every command it is
// asked to run, with what came on its stdin, and answers from a table:
// the first rule whose key the command contains gives stdout and status.
type fakeHost struct {
	addr string
	mu   sync.Mutex
	runs []fakeRun
	// rules match commands in order.
	rules []fakeRule
}

type fakeRule struct {
	contains string
	stdout   string
	status   uint32
	// do, when set, runs when the rule matches, before the command
	// "exits": what a test checks while the command runs.
	do func(cmd, stdin string)
}

type fakeRun struct {
	cmd   string
	stdin string
}

func newFakeHost(t *testing.T, rules ...fakeRule) (*fakeHost, sshx.Config) {
	t.Helper()
	clientKey, err := sshx.NewEd25519("client")
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := sshx.NewEd25519("host")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), clientKey.Signer.PublicKey().Marshal()) {
			return nil, nil
		}
		return nil, errors.New("no")
	}}
	cfg.AddHostKey(hostKey.Signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeHost{addr: ln.Addr().String(), rules: rules}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c, cfg)
		}
	}()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := sshx.WriteKnownHosts(kh, []sshx.KnownHost{{Addresses: []string{f.addr}, Key: hostKey.Signer.PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	return f, sshx.Config{Addr: f.addr, Signers: []ssh.Signer{clientKey.Signer}, KnownHosts: kh}
}

func (f *fakeHost) serve(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			for req := range creqs {
				if req.Type != "exec" {
					_ = req.Reply(false, nil)
					continue
				}
				var p struct{ Cmd string }
				_ = ssh.Unmarshal(req.Payload, &p)
				_ = req.Reply(true, nil)
				go f.run(ch, p.Cmd)
			}
		}()
	}
}

func (f *fakeHost) run(ch ssh.Channel, cmd string) {
	in, _ := io.ReadAll(ch)
	f.mu.Lock()
	f.runs = append(f.runs, fakeRun{cmd: cmd, stdin: string(in)})
	f.mu.Unlock()
	var status uint32 = 0
	for _, r := range f.rules {
		if strings.Contains(cmd, r.contains) {
			if r.do != nil {
				r.do(cmd, string(in))
			}
			fmt.Fprint(ch, r.stdout)
			status = r.status
			break
		}
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	ch.Close()
}

func (f *fakeHost) recorded() []fakeRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRun(nil), f.runs...)
}

func dialFake(t *testing.T, cfg sshx.Config) *sshx.Client {
	t.Helper()
	c, err := sshx.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
