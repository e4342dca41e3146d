package master

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/supervise"
)

// PreflightError lists every check that failed, so the operator fixes them
// in one go.
type PreflightError struct{ Problems []string }

func (e *PreflightError) Error() string {
	return "preflight failed:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// check is one preflight check: it returns problems (which stop init) and
// warnings (which are shown).
type check struct {
	name string
	run  func(ctx context.Context, r *initRun) (problems, warnings []string)
}

func preflightChecks() []check {
	return []check{
		{"not initialised", checkNotInitialized},
		{"root", checkRoot},
		{"binaries", checkBinaries},
		{"ports", checkPorts},
		{"swap", checkSwap},
		{"clock", checkClock},
		{"disk latency", checkDiskLatency},
	}
}

func preflightPhase(ctx context.Context, r *initRun) error {
	var problems []string
	for _, c := range preflightChecks() {
		p, w := c.run(ctx, r)
		problems = append(problems, p...)
		for _, msg := range w {
			r.o.Task.Warn("%s", msg)
		}
	}
	if len(problems) > 0 {
		return &PreflightError{Problems: problems}
	}
	return nil
}

func checkNotInitialized(_ context.Context, r *initRun) ([]string, []string) {
	st, err := ReadNodeState(r.o.Root)
	if err == nil && !r.o.Force {
		return []string{fmt.Sprintf("%v (node %s, %s layout, since %s, see %s); run anvil reset first, or init --force to run it again over what is there",
			ErrAlreadyInitialized, st.Node, st.Layout, st.Initialized.Format(time.RFC3339), r.o.Root.Path(NodeStateFile))}, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return []string{err.Error()}, nil
	}
	return nil, nil
}

func checkRoot(_ context.Context, r *initRun) ([]string, []string) {
	if os.Geteuid() != 0 {
		return []string{"anvil init must run as root (it writes /etc/kubernetes and binds privileged ports)"}, nil
	}
	return nil, nil
}

// checkBinaries makes sure what will run is exactly what was built.
func checkBinaries(_ context.Context, r *initRun) ([]string, []string) {
	if _, _, err := images.Installed(r.o.Root, r.plan.KubernetesVersion); err != nil {
		return []string{fmt.Sprintf("kubernetes %s binaries: %v (from a checkout: make kube && bin/anvil images install)", r.plan.KubernetesVersion, err)}, nil
	}
	return nil, nil
}

// checkPorts tries to bind every port this node's components declare, on
// the addresses they will use, and names the process holding a busy one. A port
// held by this root's own supervised components is not a problem on --force.
func checkPorts(_ context.Context, r *initRun) ([]string, []string) {
	if r.o.Force && supervise.Running(r.o.Root) {
		return nil, nil
	}
	ports, err := NodePorts(r.plan, r.o.Layout)
	if err != nil {
		return []string{err.Error()}, nil
	}
	var problems []string
	seen := map[int]bool{}
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(p.Address, strconv.Itoa(int(p.Port))))
		if err == nil {
			l.Close()
			continue
		}
		if seen[int(p.Port)] {
			continue
		}
		seen[int(p.Port)] = true
		what := p.Component + " " + p.Name
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			problems = append(problems, fmt.Sprintf("address %s is not on this machine (%s needs it)", p.Address, what))
			continue
		}
		holder := portHolder(int(p.Port))
		if holder == "" {
			holder = "another process"
		}
		problems = append(problems, fmt.Sprintf("port %d (%s) is in use by %s", p.Port, what, holder))
	}
	return problems, nil
}

// portHolder names the process listening on a TCP port, from /proc.
func portHolder(port int) string {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if n, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(n) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		fh.Close()
	}
	if len(inodes) == 0 {
		return ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		target, err := os.Readlink(fd)
		if err != nil || !inodes[target] {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		return fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), pid)
	}
	return ""
}

func checkSwap(_ context.Context, _ *initRun) ([]string, []string) {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return nil, nil
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) > 1 {
		return nil, []string{"swap is on: etcd and the apiserver slow down badly when swapped; turn it off (swapoff -a) on control-plane machines"}
	}
	return nil, nil
}

// checkClock warns when the kernel says the clock is not synchronised:
// certificates, leases and etcd all depend on agreeing clocks.
func checkClock(_ context.Context, _ *initRun) ([]string, []string) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return nil, nil
	}
	if state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0 {
		return nil, []string{"the clock is not synchronised (no NTP): certificates and leases need clocks that agree across machines"}
	}
	return nil, nil
}

// checkDiskLatency measures fdatasync latency where etcd will keep its
// write-ahead log, the way etcd writes it; above 10 ms etcd starts missing
// heartbeats.
func checkDiskLatency(_ context.Context, r *initRun) ([]string, []string) {
	p99, err := FsyncLatency(filepath.Dir(r.o.Root.EtcdData()), 25)
	if err != nil {
		return nil, []string{"cannot measure disk latency: " + err.Error()}
	}
	r.log.Debug("disk fsync latency", "phase", "preflight", "p99", p99)
	if p99 > 10*time.Millisecond {
		return nil, []string{fmt.Sprintf("fsync takes %s (p99) where etcd writes its log; etcd wants under 10 ms and will miss heartbeats on this disk", p99.Round(100*time.Microsecond))}
	}
	return nil, nil
}

// FsyncLatency writes n 8 KiB blocks to a temporary file in dir, each
// followed by fdatasync, and returns the p99 latency.
func FsyncLatency(dir string, n int) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, ".anvil-fsync-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 8192)
	var ds []time.Duration
	for range n {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[(len(ds)*99+99)/100-1], nil
}
