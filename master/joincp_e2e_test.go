package master_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/master/mastertest"
)

// uploadCertsRE finds the token and the certificate key in what `anvil init
// phase upload-certs` prints.
var uploadCertsRE = regexp.MustCompile(`printf '%s\\n%s\\n' '([a-z0-9]{6}\.[a-z0-9]{16})' '([0-9a-f]{64})'`)

// TestControlPlaneJoinE2E is issue 9's control-plane join on real
// components: a second master joins through the first's apiserver with the
// uploaded certificates, etcd grows to two voting members and both
// apiservers serve the same data; a wrong certificate key is refused before
// etcd is touched; a third master's join killed half-way and re-run leaves
// one member per master.
func TestControlPlaneJoinE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Start(t, mastertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	out, err := cp.Run(ctx, "init", "phase", "upload-certs", "--root", string(cp.Root))
	if err != nil {
		t.Fatalf("anvil init phase upload-certs: %v\n%s", err, out)
	}
	m := uploadCertsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("upload-certs printed no join command with a token and key:\n%s", out)
	}
	secrets := m[1] + "\n" + m[2] + "\n"

	m2 := cp.NewMaster(t, "m2")
	t.Run("join", func(t *testing.T) {
		start := time.Now()
		out, err := runJoin(ctx, m2, cp.JoinArgs(m2, "m2"), secrets)
		if err != nil {
			t.Fatalf("anvil join --control-plane: %v\n%s", err, out)
		}
		t.Logf("second master joined in %s", time.Since(start).Round(100*time.Millisecond))
		if strings.Contains(out, m[1][7:]) || strings.Contains(out, m[2]) {
			t.Error("join printed the token secret or the certificate key")
		}
		assertMembers(ctx, t, cp, "m1", "m2")
	})

	t.Run("both apiservers serve the same data", func(t *testing.T) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "through-m2", Namespace: "default"}, Data: map[string]string{"k": "v"}}
		if _, err := m2.Client(t).CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("write through m2's apiserver: %v", err)
		}
		got, err := cp.Client(t).CoreV1().ConfigMaps("default").Get(ctx, "through-m2", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("read through m1's apiserver: %v %v", got, err)
		}
		node, err := cp.Client(t).CoreV1().Nodes().Get(ctx, "m2", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("m2's Node: %v", err)
		}
		if _, ok := node.Labels["node-role.kubernetes.io/control-plane"]; !ok {
			t.Errorf("m2's Node is not marked control plane: %v", node.Labels)
		}
	})

	m3 := cp.NewMaster(t, "m3")
	t.Run("wrong certificate key", func(t *testing.T) {
		wrong := m[1] + "\n" + strings.Repeat("0f", 32) + "\n"
		out, err := runJoin(ctx, m3, cp.JoinArgs(m3, "m3"), wrong)
		if err == nil {
			t.Fatalf("join with a wrong certificate key succeeded:\n%s", out)
		}
		if !strings.Contains(out, "certificate key") {
			t.Errorf("the error does not say the certificate key is wrong:\n%s", out)
		}
		assertMembers(ctx, t, cp, "m1", "m2")
	})

	t.Run("killed half-way and re-run", func(t *testing.T) {
		killJoinAt(ctx, t, m3, cp.JoinArgs(m3, "m3"), secrets, "etcd ")
		args := append(cp.JoinArgs(m3, "m3"), "--force")
		out, err := runJoin(ctx, m3, args, secrets)
		if err != nil {
			t.Fatalf("re-run of the killed join: %v\n%s", err, out)
		}
		assertMembers(ctx, t, cp, "m1", "m2", "m3")
	})

	t.Run("every member holds the same data", func(t *testing.T) {
		out, err := cp.Run(ctx, "etcd", "check", "-o", "json", "--root", string(cp.Root))
		if err != nil {
			t.Fatalf("anvil etcd check: %v\n%s", err, out)
		}
		var rep etcd.ConsistencyReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("anvil etcd check -o json: %v\n%s", err, out)
		}
		if !rep.Consistent || len(rep.Members) != 3 || rep.Members[0].Hash == 0 {
			t.Errorf("etcd check: %+v", rep)
		}
	})
}

func runJoin(ctx context.Context, m *mastertest.ControlPlane, args []string, stdin string) (string, error) {
	cmd := m.NS.Command(ctx, m.Anvil, args...)
	cmd.Stdin = strings.NewReader(stdin)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// killJoinAt starts a join and kills it with SIGKILL (no rollback runs) as
// soon as it reports the phase named by prefix.
func killJoinAt(ctx context.Context, t *testing.T, m *mastertest.ControlPlane, args []string, stdin, prefix string) {
	t.Helper()
	cmd := m.NS.Command(ctx, m.Anvil, args...)
	cmd.Stdin = strings.NewReader(stdin)
	pr, pw := io.Pipe()
	cmd.Stderr, cmd.Stdout = pw, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	sc := bufio.NewScanner(pr)
	var seen []string
	killed := false
	for sc.Scan() {
		line := sc.Text()
		seen = append(seen, line)
		// "[  4.21s] m3   etcd         start the member…": the task's
		// name, then the phase's.
		if i := strings.Index(line, "] "); i >= 0 && phaseOf(line[i+2:]) == strings.TrimSpace(prefix) {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	go io.Copy(io.Discard, pr)
	<-done
	if !killed {
		t.Fatalf("the join ended before phase %q:\n%s", prefix, strings.Join(seen, "\n"))
	}
}

// phaseOf is the phase of a progress line without its time stamp.
func phaseOf(line string) string {
	if f := strings.Fields(line); len(f) >= 2 {
		return f[1]
	}
	return ""
}

// assertMembers checks that etcd has exactly the named voting members, all
// healthy.
func assertMembers(ctx context.Context, t *testing.T, cp *mastertest.ControlPlane, names ...string) {
	t.Helper()
	out, err := cp.Run(ctx, "etcd", "members", "-o", "json", "--root", string(cp.Root))
	if err != nil {
		t.Fatalf("anvil etcd members: %v\n%s", err, out)
	}
	var ms []etcd.Member
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("anvil etcd members -o json: %v\n%s", err, out)
	}
	var got []string
	for _, mb := range ms {
		got = append(got, mb.Name)
		if mb.Learner || !mb.Healthy {
			t.Errorf("member %s: learner=%v healthy=%v", mb.Name, mb.Learner, mb.Healthy)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Errorf("etcd members %v, want %v", got, names)
	}
}
