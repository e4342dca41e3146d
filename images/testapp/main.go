package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("testapp "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cmd {
	case "serve":
		listen := fs.String("listen", ":8080", "address to serve on")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return serve(ctx, *listen, stderr)
	case "get":
		timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: testapp get [-timeout 5s] URL")
		}
		return get(ctx, fs.Arg(0), *timeout, stdout)
	case "lookup":
		timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: testapp lookup [-timeout 5s] NAME")
		}
		return lookup(ctx, fs.Arg(0), *timeout, stdout)
	case "dnsload":
		server := fs.String("server", "", "DNS server, address:port")
		parallel := fs.Int("parallel", 4, "clients querying at once")
		duration := fs.Duration("duration", 10*time.Second, "how long to query")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 || *server == "" {
			return errors.New("usage: testapp dnsload -server ADDR:PORT [-parallel 4] [-duration 10s] NAME")
		}
		return dnsload(ctx, *server, fs.Arg(0), *parallel, *duration, stdout)
	case "watch":
		interval := fs.Duration("interval", 20*time.Millisecond, "time between requests")
		duration := fs.Duration("duration", time.Minute, "how long to watch")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: testapp watch [-interval 20ms] [-duration 1m] URL")
		}
		return watch(ctx, fs.Arg(0), *interval, *duration, stdout)
	default:
		return fmt.Errorf("unknown command %q: commands are serve, get, lookup, dnsload and watch", cmd)
	}
}

// Info is what /info answers.
type Info struct {
	Name       string `json:"name"`
	Hostname   string `json:"hostname"`
	Namespace  string `json:"namespace,omitempty"`
	Node       string `json:"node,omitempty"`
	PodIP      string `json:"podIP,omitempty"`
	RemoteAddr string `json:"remoteAddr"`
	Path       string `json:"path"`
}

func podName() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Info{
			Name: podName(), Hostname: host, Namespace: os.Getenv("POD_NAMESPACE"),
			Node: os.Getenv("NODE_NAME"), PodIP: os.Getenv("POD_IP"),
			RemoteAddr: r.RemoteAddr, Path: r.URL.Path,
		})
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, podName())
	})
	return mux
}

// serve answers until ctx ends (SIGTERM), then finishes the requests under
// way and returns nil, so a deleted pod exits 0.
func serve(ctx context.Context, listen string, logw io.Writer) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(logw, "testapp: serving %s on %s\n", podName(), l.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// get prints url's body, failing on a transport error or a non-2xx answer.
func get(ctx context.Context, url string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// lookup prints name's addresses, one per line, sorted, as the pod's
// resolver (its /etc/resolv.conf: the cluster DNS, its search path) finds
// them.
func lookup(ctx context.Context, name string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		fmt.Fprintln(out, a)
	}
	return nil
}
