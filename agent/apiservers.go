package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/internal/fsutil"
)

// The agent's configuration names the apiservers it was joined with: the
// endpoint given to `anvil join` and the one cluster-info names (often the
// same address, the first master's), plus every master of the cluster
// file when there was one. That is not every master: a worker joined
// through the first master's address would lose its heartbeat with that
// master. So the agent also learns where every apiserver is from the
// Endpoints each apiserver keeps of itself (default/kubernetes, which a
// node may read) and fails over to those too. What it learned is kept
// beside its kubeconfig, so an agent restarted while the first master is
// down still finds the others.
const (
	// apiserversPath is the kubernetes Service's Endpoints: one address
	// per live apiserver, maintained by the apiservers themselves.
	apiserversPath = "/api/v1/namespaces/" + corev1.NamespaceDefault + "/endpoints/kubernetes"
	// LearnedServersFile is the name of the learned apiservers' file, in
	// the directory of the agent's kubeconfig.
	LearnedServersFile = "apiservers.json"
	// learnInterval is how often the apiservers are read again: masters
	// come and go rarely.
	learnInterval = 5 * time.Minute
)

// apiserverEndpoints is what the agent reads of the kubernetes Service's
// Endpoints (core/v1, deprecated for EndpointSlices, which a node may not
// read): the ready addresses and the port.
type apiserverEndpoints struct {
	Subsets []endpointSubset `json:"subsets"`
}

type endpointSubset struct {
	Addresses []endpointAddress `json:"addresses"`
	Ports     []endpointPort    `json:"ports"`
}

type endpointAddress struct {
	IP string `json:"ip"`
}

type endpointPort struct {
	Name string `json:"name"`
	Port int32  `json:"port"`
}

// learnedServers is LearnedServersFile.
type learnedServers struct {
	// Servers are https://address:port URLs of the apiservers.
	Servers []string `json:"servers"`
}

// learnedServersPath is where the agent keeps the apiservers it learned;
// "" when it has no kubeconfig file (simulated agents).
func (a *Agent) learnedServersPath() string {
	if a.o.Credentials != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(a.cfg.Kubeconfig), LearnedServersFile)
}

// readLearnedServers reads what an earlier run learned; a missing or
// unreadable file is no error, only nothing learned.
func readLearnedServers(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ls learnedServers
	if err := json.Unmarshal(b, &ls); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	for _, s := range ls.Servers {
		if checkServerURL(s) == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// apiserverURLs are the https URLs of the apiservers ready in the
// kubernetes Service's Endpoints, sorted.
func apiserverURLs(ep *apiserverEndpoints) []string {
	var out []string
	for _, ss := range ep.Subsets {
		port := int32(0)
		for _, p := range ss.Ports {
			if p.Name == "https" || len(ss.Ports) == 1 {
				port = p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ad := range ss.Addresses {
			ip, err := netip.ParseAddr(ad.IP)
			if err != nil {
				continue
			}
			u := "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	slices.Sort(out)
	return out
}

// setLearned makes the client try the configured servers, then the
// learned ones it does not know yet.
func (a *Agent) setLearned(learned []string) {
	a.cli.setServers(uniqueServers(append(slices.Clone(a.cfg.Servers), learned...)))
}

// learnServers reads the apiservers' Endpoints, adds them to the servers
// the agent fails over to, and keeps them for the next run. An empty
// list (every apiserver just restarted) changes nothing.
func (a *Agent) learnServers(ctx context.Context) error {
	var ep apiserverEndpoints
	if err := a.cli.do(ctx, "GET", apiserversPath, "", nil, &ep); err != nil {
		return fmt.Errorf("read where the apiservers are: %w", err)
	}
	learned := apiserverURLs(&ep)
	if len(learned) == 0 {
		return nil
	}
	before := a.cli.serverList()
	a.setLearned(learned)
	if after := a.cli.serverList(); !slices.Equal(before, after) {
		a.log.Info("apiservers to fail over to", "servers", after)
	}
	path := a.learnedServersPath()
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(learnedServers{Servers: learned}, "", "  ")
	if err != nil {
		return err
	}
	if _, err := fsutil.EnsureFile(path, append(b, '\n'), 0o600, 0o700); err != nil {
		return fmt.Errorf("keep the learned apiservers: %w", err)
	}
	return nil
}

// learnLoop learns the apiservers once registered, then every
// learnInterval. Failures are only logged: the configured servers still
// work, and the next round tries again.
func (a *Agent) learnLoop(ctx context.Context) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.learnServers(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("could not learn the apiservers' addresses; failing over only between the configured ones", "err", err)
		}
		if !backoff.Sleep(ctx, backoff.Spread(learnInterval, 0.2)) {
			return
		}
	}
}
