package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/embed"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// testMember is a real embedded etcd member on loopback, with anvil's PKI.
type testMember struct {
	name       string
	client     string
	peer       string
	e          *embed.Etcd
	dir        string
	pkiDir     string
	clientPort int
	peerPort   int
}

func etcdPKI(t *testing.T) hostfs.Root {
	t.Helper()
	root := hostfs.Root(t.TempDir())
	c := &v1alpha1.Cluster{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindCluster, Name: "t",
		Hosts: []v1alpha1.Host{{Name: "m1", Address: netip.MustParseAddr("127.0.0.1"), Role: v1alpha1.RoleMaster}}}
	c.Default()
	cfg, err := pki.ConfigFromCluster(c, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Ensure(root.PKI(), cfg, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	return root
}

func startMember(t *testing.T, root hostfs.Root, name string, port int, initial []Peer, state string) *testMember {
	t.Helper()
	m := &testMember{name: name, clientPort: port, peerPort: port + 1, dir: filepath.Join(t.TempDir(), name), pkiDir: root.PKI()}
	m.client = fmt.Sprintf("https://127.0.0.1:%d", port)
	m.peer = fmt.Sprintf("https://127.0.0.1:%d", port+1)
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, m.dir
	cfg.Logger, cfg.LogLevel = "zap", "error"
	cu, _ := url.Parse(m.client)
	pu, _ := url.Parse(m.peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenMetricsUrls = nil
	var ic []string
	for _, p := range initial {
		ic = append(ic, p.Name+"="+p.PeerURL)
	}
	if len(ic) == 0 {
		ic = []string{name + "=" + m.peer}
	}
	cfg.InitialCluster = strings.Join(ic, ",")
	cfg.ClusterState = state
	cfg.InitialClusterToken = "t"
	pkiFile := func(n string) string { return filepath.Join(root.PKI(), n) }
	for _, ti := range []*struct {
		info *embed.Config
	}{{cfg}} {
		ti.info.ClientTLSInfo.CertFile, ti.info.ClientTLSInfo.KeyFile = pkiFile("etcd/server.crt"), pkiFile("etcd/server.key")
		ti.info.ClientTLSInfo.TrustedCAFile, ti.info.ClientTLSInfo.ClientCertAuth = pkiFile("etcd/ca.crt"), true
		ti.info.PeerTLSInfo.CertFile, ti.info.PeerTLSInfo.KeyFile = pkiFile("etcd/peer.crt"), pkiFile("etcd/peer.key")
		ti.info.PeerTLSInfo.TrustedCAFile, ti.info.PeerTLSInfo.ClientCertAuth = pkiFile("etcd/ca.crt"), true
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	m.e = e
	t.Cleanup(m.stop)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready", name)
	}
	return m
}

func (m *testMember) stop() {
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

func TestEtcdMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real etcd members")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := etcdPKI(t)
	m1 := startMember(t, root, "m1", 22379, nil, "new")
	cli, err := Dial(ctx, root, m1.client)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	join := func(name string, port int) *testMember {
		t.Helper()
		peer := fmt.Sprintf("https://127.0.0.1:%d", port+1)
		l, err := JoinAsLearner(ctx, root, []string{m1.client}, name, peer, false)
		if err != nil {
			t.Fatal(err)
		}
		m := startMember(t, root, name, port, l.Added.InitialCluster, "existing")
		if err := l.Promote(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if removed, err := l.Withdraw(ctx); removed || err != nil {
			t.Fatalf("withdrawing a promoted member: removed %v, %v", removed, err)
		}
		return m
	}
	m2 := join("m2", 22389)
	m3 := join("m3", 22399)
	ms, err := ListMembers(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if all, healthy, _ := voters(ms); all != 3 || healthy != 3 {
		t.Fatalf("want 3 healthy voters, got %d of %d: %+v", healthy, all, ms)
	}

	t.Run("a join that died after adding its member is replaced, not duplicated", func(t *testing.T) {
		peer := "https://127.0.0.1:22409"
		if _, err := AddLearner(ctx, cli, "m4", peer, false); err != nil {
			t.Fatal(err)
		}
		res, err := AddLearner(ctx, cli, "m4", peer, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Replaced == "" {
			t.Error("the stale learner was not reported as replaced")
		}
		ms, _ := ListMembers(ctx, cli)
		count := 0
		for _, m := range ms {
			if strings.Contains(strings.Join(m.PeerURLs, ","), peer) {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("%d members at %s after a re-run", count, peer)
		}
		if _, err := RemoveMember(ctx, cli, fmt.Sprintf("%x", res.ID), false); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a member removed through its own endpoint", func(t *testing.T) {
		// What `anvil reset` does on a master: its client knows only the
		// local member, which stops as soon as it applies its removal.
		m4 := join("m4", 22429)
		defer m4.stop()
		self, err := Dial(ctx, root, m4.client)
		if err != nil {
			t.Fatal(err)
		}
		defer self.Close()
		// m4 serves member lists once it has applied its own promotion.
		for i := 0; ; i++ {
			if _, err := ListMembers(ctx, self); err == nil {
				break
			} else if i == 50 {
				t.Fatalf("m4 does not answer as a voter: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := RemoveMember(ctx, self, "m4", false); err != nil {
			t.Fatalf("a member could not remove itself: %v", err)
		}
		ms, err := ListMembers(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(ms, func(m Member) bool { return m.Name == "m4" }) {
			t.Errorf("m4 is still a member: %+v", ms)
		}
	})

	t.Run("a promotion that already went through is not an error", func(t *testing.T) {
		// A join re-run after its promotion: etcd answers that the member
		// is not a learner, which means the work is done.
		ms, err := ListMembers(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ms, func(m Member) bool { return m.Name == "m2" })
		if i < 0 || ms[i].Learner {
			t.Fatalf("m2 is not a voter: %+v", ms)
		}
		_, err = cli.MemberPromote(ctx, ms[i].ID)
		if !errors.Is(err, rpctypes.ErrMemberNotLearner) {
			t.Fatalf("etcd's answer to promoting a voter is %v, want %v", err, rpctypes.ErrMemberNotLearner)
		}
		start := time.Now()
		if err := PromoteWhenReady(ctx, cli, ms[i].ID, 20*time.Second); err != nil {
			t.Fatalf("promoting a voter again: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("promoting a voter again took %s: the answer was not recognised", d)
		}
	})

	t.Run("a learner that never started is withdrawn", func(t *testing.T) {
		l, err := JoinAsLearner(ctx, root, []string{m1.client}, "m6", "https://127.0.0.1:22439", false)
		if err != nil {
			t.Fatal(err)
		}
		if removed, err := l.Withdraw(ctx); !removed || err != nil {
			t.Fatalf("withdraw: removed %v, %v", removed, err)
		}
		ms, _ := ListMembers(ctx, cli)
		if slices.ContainsFunc(ms, func(m Member) bool { return m.ID == l.Added.ID }) {
			t.Errorf("the learner is still a member: %+v", ms)
		}
		var none *Learner
		if removed, err := none.Withdraw(ctx); removed || err != nil {
			t.Errorf("withdrawing nothing: %v %v", removed, err)
		}
	})

	t.Run("no quorum: changes are refused with the numbers", func(t *testing.T) {
		m2.stop()
		m3.stop()
		_, err := AddLearner(ctx, cli, "m5", "https://127.0.0.1:22419", false)
		var qe *QuorumError
		if !errors.As(err, &qe) || qe.Healthy != 1 || qe.Voters != 3 || qe.Needed != 3 {
			t.Fatalf("want a quorum error (1 of 3 healthy), got %v", err)
		}
		if !strings.Contains(err.Error(), "m2") || !strings.Contains(err.Error(), "--force") {
			t.Errorf("error should name the members down and the way out: %v", err)
		}
		_, err = RemoveMember(ctx, cli, "m2", false)
		if !errors.As(err, &qe) {
			t.Fatalf("removing a member without quorum: %v", err)
		}
	})

	if _, err := RemoveMember(ctx, cli, "nobody", false); !errors.Is(err, ErrNoSuchMember) {
		t.Errorf("unknown member: %v", err)
	}
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3} {
		if got := Quorum(n); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", n, got, want)
		}
	}
}
