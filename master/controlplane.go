package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/supervise"
)

// ControlPlane starts, stops and waits for this master's components in its
// layout. Init, control-plane join and restore all go through it: one place
// knows how a layout runs a component, how a stop is confirmed and how
// readiness shows.
//
// A component's life here:
//
//	Start ──► (layout runs it) ──► WaitReady ──► ready
//	  ▲                                            │
//	  └──────── Start (spec put back) ◄── Stop ◄───┘ (waits until it is gone; kills after grace)
type ControlPlane struct {
	Plan   Plan
	Layout v1alpha1.Layout
	// Root is where files are written; in the process layout also what
	// the components' paths are relative to.
	Root hostfs.Root
	// Anvil is the anvil binary that runs the process layout's supervisor.
	Anvil string
	Log   *slog.Logger
	// Task shows what the waits are waiting for.
	Task *progress.Task

	// specs are the process layout's specs of what Stop stopped, put back
	// by Start, byte for byte.
	specs map[string][]byte
}

func (c *ControlPlane) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// Components returns the named components of this master in start order;
// all of them when no name is given.
func (c *ControlPlane) Components(names ...string) ([]component.Spec, error) {
	all, err := Components(c.Plan)
	if err != nil || len(names) == 0 {
		return all, err
	}
	return slices.DeleteFunc(all, func(s component.Spec) bool { return !slices.Contains(names, s.Name) }), nil
}

// LayoutOptions is how package layout reaches this master's components.
func (c *ControlPlane) LayoutOptions() layout.Options {
	return layout.Options{Layout: c.Layout, Root: c.Root, Anvil: c.Anvil}
}

// Start has the layout run cs. In the process layout it first writes their
// specs: the ones Stop kept, else freshly rendered against every component
// (so that dependencies resolve).
func (c *ControlPlane) Start(ctx context.Context, cs []component.Spec) error {
	if len(cs) == 0 {
		return nil
	}
	if c.Layout == v1alpha1.LayoutProcess {
		if err := c.writeSpecs(cs); err != nil {
			return err
		}
	}
	return layout.Start(ctx, c.LayoutOptions(), cs)
}

func (c *ControlPlane) writeSpecs(cs []component.Spec) error {
	var render []component.Spec
	for _, s := range cs {
		b, ok := c.specs[s.Name]
		if !ok {
			render = append(render, s)
			continue
		}
		p := c.Root.Join(component.ProcessSpecDir, s.Name+".json")
		if err := fsutil.WriteFile(p, b, component.ConfigMode, component.DirMode); err != nil {
			return err
		}
		delete(c.specs, s.Name)
	}
	if len(render) == 0 {
		return nil
	}
	all, err := Components(c.Plan)
	if err != nil {
		return err
	}
	specs, err := component.Processes(all, ProcessOptions(c.Plan))
	if err != nil {
		return err
	}
	var mine []component.OutputFile
	for _, f := range specs {
		if slices.ContainsFunc(render, func(s component.Spec) bool { return f.Path == path.Join(component.ProcessSpecDir, s.Name+".json") }) {
			mine = append(mine, f)
		}
	}
	_, err = component.WriteTree(c.Root, mine)
	return err
}

// Stop stops cs in reverse order and waits until they are gone: systemd or
// the supervisor says so and their ports are closed. What still runs after
// grace (when positive) is killed. In the process layout their specs are
// kept, for Start to put back; missing specs are skipped when tolerateMissing
// (something stopped them before).
func (c *ControlPlane) Stop(ctx context.Context, cs []component.Spec, grace time.Duration, tolerateMissing bool) error {
	if c.Layout == v1alpha1.LayoutProcess {
		if c.specs == nil {
			c.specs = map[string][]byte{}
		}
		for _, s := range cs {
			p := c.Root.Join(component.ProcessSpecDir, s.Name+".json")
			b, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) && tolerateMissing {
				continue
			}
			if err != nil {
				return fmt.Errorf("process spec of %s: %w", s.Name, err)
			}
			c.specs[s.Name] = b
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// systemd's stop waits for the units; the supervisor's returns at once.
	stopped := make(chan error, 1)
	go func() { stopped <- layout.Stop(ctx, c.LayoutOptions(), cs, false) }()
	var names []string
	for _, s := range cs {
		names = append(names, s.Name)
	}
	start, stopDone, killed := time.Now(), false, false
	for {
		if !stopDone {
			select {
			case err := <-stopped:
				if err != nil {
					return err
				}
				stopDone = true
			default:
			}
		}
		running, why := c.Running(cs)
		if stopDone && len(running) == 0 {
			c.Task.Say("stopped %s in %s", strings.Join(names, ", "), time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if grace > 0 && !killed && len(running) > 0 && time.Since(start) > grace {
			killed = true
			c.Task.Say("killing what did not stop within %s: %s", grace, strings.Join(why, "; "))
			if err := layout.Kill(ctx, c.LayoutOptions(), running, syscall.SIGKILL); err != nil {
				c.log().Warn("kill", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still running after 90s: %s", strings.Join(names, ", "), strings.Join(why, "; "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Running returns the components of cs that still run, and how that shows:
// a live supervised process, or a port of theirs that accepts connections.
func (c *ControlPlane) Running(cs []component.Spec) ([]component.Spec, []string) {
	var out []component.Spec
	var why []string
	var st *supervise.Status
	if c.Layout == v1alpha1.LayoutProcess {
		st, _ = supervise.ReadStatus(c.Root)
	}
	for _, s := range cs {
		var reasons []string
		if st != nil {
			// The status file is written after a reload, so check the PID.
			if p, ok := st.Process(s.Name); ok && p.PID > 0 && supervise.Alive(p.PID) {
				reasons = append(reasons, fmt.Sprintf("%s is pid %d", s.Name, p.PID))
			}
		}
		for _, p := range s.Ports {
			host := p.Address
			if host == "" || host == "0.0.0.0" {
				host = "127.0.0.1"
				if s.Name == APIServer {
					host = c.Plan.AdvertiseAddress.String()
				}
			}
			addr := net.JoinHostPort(host, strconv.Itoa(int(p.Number)))
			if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				conn.Close()
				reasons = append(reasons, fmt.Sprintf("%s listens on %s", s.Name, addr))
			}
		}
		if len(reasons) > 0 {
			out = append(out, s)
			why = append(why, reasons...)
		}
	}
	return out, why
}

// Client is a clientset for this master's own apiserver with one of the
// kubeconfigs in /etc/kubernetes.
func (c *ControlPlane) Client(kubeconfig string) (kubernetes.Interface, error) {
	file := c.Root.Kubeconfig(kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags(c.Plan.localAPIServerURL(), file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 15 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// localAPIServerURL is this master's own apiserver, as controller-manager.conf
// and scheduler.conf name it.
func (p Plan) localAPIServerURL() string {
	return "https://" + net.JoinHostPort(p.Node.NodeAddress().String(), strconv.Itoa(p.apiserverPort()))
}
