package installer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/progress"
)

// newTestRun is a run over made-up hosts, for the executor.
func newTestRun(t *testing.T, names ...string) (*run, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	c := &v1alpha1.Cluster{Name: "t"}
	for i, n := range names {
		role := v1alpha1.RoleWorker
		if strings.HasPrefix(n, "m") {
			role = v1alpha1.RoleMaster
		}
		c.Hosts = append(c.Hosts, v1alpha1.Host{Name: n, Role: role, Address: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})})
	}
	r, err := newRun(Options{Cluster: c, Progress: progress.New(&out, progress.Options{}), Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	return r, &out
}

func eachHost(r *run, fn func(h *host) (string, error)) func(*run) plan {
	return func(r *run) plan {
		var pl plan
		for _, h := range r.alive() {
			pl.steps = append(pl.steps, step{host: h, do: "work", run: func(context.Context) (string, error) { return fn(h) }})
		}
		return pl
	}
}

func TestFailuresNameHostAndPhaseAndSpareTheOthers(t *testing.T) {
	r, out := newTestRun(t, "m1", "w1", "w2")
	var second atomic.Int32
	err := r.do(context.Background(), "test", []flowPhase{
		changing("first", eachHost(r, func(h *host) (string, error) {
			if h.Name == "w1" {
				return "", errors.New("disk full")
			}
			return "", nil
		})),
		changing("second", eachHost(r, func(h *host) (string, error) {
			second.Add(1)
			return "", nil
		})),
	})
	var he *HostError
	if !errors.As(err, &he) || he.Host != "w1" || he.Phase != "first" || !strings.Contains(err.Error(), "w1: first: disk full") {
		t.Fatalf("err = %v", err)
	}
	if second.Load() != 2 {
		t.Errorf("the second phase ran on %d hosts, want the 2 that did not fail", second.Load())
	}
	r.rep.Close()
	if !strings.Contains(out.String(), "w1   first        FAILED: disk full") {
		t.Errorf("progress:\n%s", out)
	}
}

func TestOneAtATimeStopsAtTheFirstFailure(t *testing.T) {
	r, _ := newTestRun(t, "m1", "m2", "m3", "w1")
	var ran []string
	err := r.do(context.Background(), "test", []flowPhase{changing("join-masters", func(r *run) plan {
		pl := plan{oneAtATime: true}
		for _, h := range r.alive() {
			if h.IsMaster() {
				pl.steps = append(pl.steps, step{host: h, do: "join", run: func(context.Context) (string, error) {
					ran = append(ran, h.Name)
					if h.Name == "m2" {
						return "", errors.New("etcd said no")
					}
					return "", nil
				}})
			}
		}
		return pl
	})})
	if strings.Join(ran, ",") != "m1,m2" {
		t.Errorf("ran %v, want m1 then m2 and nothing after the failure", ran)
	}
	if !strings.Contains(err.Error(), "m3: join-masters: not started: m2 failed before it") || strings.Contains(err.Error(), "w1") {
		t.Errorf("err = %v", err)
	}
}

func TestBeforeStepFailureFailsItsHosts(t *testing.T) {
	r, _ := newTestRun(t, "m1", "w1", "w2", "w3")
	err := r.do(context.Background(), "test", []flowPhase{changing("join-workers", func(r *run) plan {
		return plan{
			before: []step{{host: r.hosts[0], do: "make a join token", run: func(context.Context) (string, error) { return "", errors.New("apiserver down") }}},
			steps: []step{
				{host: r.hosts[1], do: "join", run: func(context.Context) (string, error) { return "", nil }},
				{host: r.hosts[2], do: "join", run: func(context.Context) (string, error) { return "", nil }},
				{host: r.hosts[3], do: "nothing to do: already a node"},
			},
		}
	})})
	for _, want := range []string{"w1: join-workers: make a join token on m1 failed: apiserver down", "w2: join-workers"} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	if r.hosts[0].failed() {
		t.Error("the host the token was made on failed itself")
	}
	if r.hosts[3].failed() {
		t.Error("a host with nothing to do failed for want of a token")
	}
}

func TestDryRunOnlyRunsReadOnlyPhases(t *testing.T) {
	r, _ := newTestRun(t, "m1")
	r.dryRun = true
	var looked, changed bool
	err := r.do(context.Background(), "test", []flowPhase{
		looking("facts", eachHost(r, func(*host) (string, error) { looked = true; return "", nil })),
		changing("upload", eachHost(r, func(*host) (string, error) { changed = true; return "", nil })),
		changing("init", func(r *run) plan { return plan{steps: []step{{host: r.hosts[0], do: "nothing to do: initialised"}}} }),
	})
	if err != nil || !looked || changed {
		t.Fatalf("err %v, looked %v, changed %v", err, looked, changed)
	}
	want := []PlannedStep{{Host: "m1", Phase: "upload", Do: "work", Change: true}, {Host: "m1", Phase: "init", Do: "nothing to do: initialised"}}
	if fmt.Sprint(r.planned) != fmt.Sprint(want) {
		t.Errorf("planned %+v", r.planned)
	}
	var b bytes.Buffer
	writePlan(&b, r.cluster, r.planned)
	if !strings.Contains(b.String(), "m1 (master, 10.0.0.1)\n  + upload       work\n  = init         nothing to do: initialised\n") {
		t.Errorf("plan:\n%s", b.String())
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	r, _ := newTestRun(t, "w1", "w2", "w3", "w4", "w5")
	var now, peak atomic.Int32
	err := r.do(context.Background(), "test", []flowPhase{changing("upload", eachHost(r, func(*host) (string, error) {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		now.Add(-1)
		return "", nil
	}))})
	if err != nil || peak.Load() != 2 {
		t.Errorf("err %v, at most %d at once, want 2", err, peak.Load())
	}
}

// selfSignedCA is a CA certificate in PEM, for a made-up cluster access.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestSecretsNeverOnACommandLine drives the real join code against hosts
// that record what they are asked to run: the tokens and the certificate
// key travel only on stdin.
func TestSecretsNeverOnACommandLine(t *testing.T) {
	const cpToken, certKey = "ghijkl.0123456789ghijkl", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	const clusterFile = "name: t\n"
	primary, pcfg := newFakeHost(t,
		fakeRule{contains: "upload-certs", stdout: "Join another master within the hour: on it, run\n  printf '%s\\n%s\\n' '" + cpToken + "' '" + certKey + "' | anvil join https://10.0.0.1:6443 --control-plane --token-file - --certificate-key-file - --ca-cert-hash sha256:" + strings.Repeat("ab", 32) + "\n"},
	)
	worker, wcfg := newFakeHost(t)
	m2, mcfg := newFakeHost(t, fakeRule{contains: "join --help", stdout: "--control-plane --certificate-key-file --token-file"})

	r, _ := newTestRun(t, "m1", "w1", "m2")
	r.hosts[0].client, r.hosts[1].client, r.hosts[2].client = dialFake(t, pcfg), dialFake(t, wcfg), dialFake(t, mcfg)
	for _, h := range r.hosts {
		h.facts = &Facts{}
	}
	r.primary = r.hosts[0]
	r.acc = fakeAccess(t)
	var handled []string
	r.apply = &applyState{o: ApplyOptions{Timeout: time.Minute, TokenTTL: 10 * time.Minute, secretSeen: func(s string) { handled = append(handled, s) }},
		bundle: &bundle{version: "v1.37.2"}, clusterFile: []byte(clusterFile)}

	if _, err := r.joinWorker(context.Background(), r.hosts[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := r.joinMaster(context.Background(), r.hosts[2]); err != nil {
		t.Fatal(err)
	}

	// The worker's token, upload-certs' token and key, m2's token.
	if len(handled) != 4 || handled[1] != cpToken || handled[2] != certKey {
		t.Fatalf("the run handled %q", handled)
	}
	workerToken, masterToken := handled[0], handled[3]
	for name, h := range map[string]*fakeHost{"m1": primary, "w1": worker, "m2": m2} {
		for _, run := range h.recorded() {
			for _, secret := range handled {
				// A token's ID is no secret; the part after the dot is.
				if _, after, ok := strings.Cut(secret, "."); ok {
					secret = after
				}
				if strings.Contains(run.cmd, secret) {
					t.Errorf("%s ran a command line holding a secret: %s", name, run.cmd)
				}
			}
		}
	}
	// The worker ran the one command line workerJoinArgs builds, with the
	// host's runtime when the cluster file gives one (this test's does not
	// default it).
	acc, err := r.access(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	args := r.workerJoinArgs(r.hosts[1], acc.caHash)
	want := []string{anvilOn("v1.37.2"), "join", r.cluster.APIServerURL(), "--token-file", "-", "--ca-cert-hash", acc.caHash.String(),
		"--node-name", "w1", "--node-ip", r.hosts[1].NodeAddress().String(), "--timeout", "1m0s"}
	if !slices.Equal(args, want) {
		t.Errorf("worker join %q, want %q", args, want)
	}
	none := *r.hosts[1]
	none.Runtime = v1alpha1.RuntimeNone
	if got := r.workerJoinArgs(&none, acc.caHash); !slices.Equal(got[3:7], []string{"--token-file", "-", "--runtime", "none"}) {
		t.Errorf("a runtime none worker's join %q lacks --runtime none", got)
	}
	ran := false
	for _, run := range worker.recorded() {
		ran = ran || strings.Contains(run.cmd, shellJoin(args))
	}
	if !ran {
		t.Errorf("the worker did not run %s: %v", shellJoin(args), worker.recorded())
	}
	// Tokens are made through the API, never by a command on a host.
	for _, run := range primary.recorded() {
		if strings.Contains(run.cmd, "token create") {
			t.Errorf("the primary ran %s", run.cmd)
		}
	}
	joins := func(h *fakeHost) []fakeRun {
		var out []fakeRun
		for _, run := range h.recorded() {
			if strings.Contains(run.cmd, " join https://") {
				out = append(out, run)
			}
		}
		return out
	}
	w := joins(worker)
	if len(w) != 1 || w[0].stdin != workerToken+"\n"+clusterFile || !strings.Contains(w[0].cmd, "--token-file -") || !strings.Contains(w[0].cmd, "--ca-cert-hash sha256:") || !strings.Contains(w[0].cmd, "flock") {
		t.Errorf("worker join: %+v", w)
	}
	m := joins(m2)
	if len(m) != 1 || m[0].stdin != masterToken+"\n"+certKey+"\n"+clusterFile || !strings.Contains(m[0].cmd, "--control-plane --token-file - --certificate-key-file -") || !strings.Contains(m[0].cmd, "flock") {
		t.Errorf("master join: %+v", m)
	}
}

func TestControlPlaneJoinNeedsTheCommand(t *testing.T) {
	for _, tc := range []struct {
		help string
		want error
		msg  string
	}{
		{"Usage: anvil join ENDPOINT --token-file FILE", ErrHANotAvailable, "HA control-plane join is not available yet"},
		{"--control-plane --certificate-key K", nil, "--certificate-key-file"},
	} {
		_, cfg := newFakeHost(t, fakeRule{contains: "join --help", stdout: tc.help})
		r, _ := newTestRun(t, "m1", "m2")
		r.hosts[1].client = dialFake(t, cfg)
		r.hosts[1].facts = &Facts{}
		r.primary = r.hosts[0]
		r.apply = &applyState{bundle: &bundle{version: "v1.37.2"}}
		_, err := r.joinMaster(context.Background(), r.hosts[1])
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("help %q: err = %v", tc.help, err)
		}
	}
}
