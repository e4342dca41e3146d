package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	t.Setenv("POD_NAME", "web-0")
	t.Setenv("POD_NAMESPACE", "default")
	srv := httptest.NewServer(handler())
	defer srv.Close()
	for _, c := range []struct{ path, want string }{
		{"/", "web-0\n"},
		{"/anything", "web-0\n"},
		{"/healthz", "ok\n"},
	} {
		var out bytes.Buffer
		if err := get(context.Background(), srv.URL+c.path, time.Second, &out); err != nil || out.String() != c.want {
			t.Errorf("GET %s: %q %v, want %q", c.path, out.String(), err, c.want)
		}
	}
	var out bytes.Buffer
	if err := get(context.Background(), srv.URL+"/info", time.Second, &out); err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || info.Name != "web-0" || info.Namespace != "default" || info.RemoteAddr == "" || info.Path != "/info" {
		t.Errorf("info %+v %v", info, err)
	}
}

func TestGetFails(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	var out bytes.Buffer
	if err := get(context.Background(), srv.URL, time.Second, &out); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 gave %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if err := get(context.Background(), "http://"+addr, time.Second, &out); err == nil {
		t.Error("a refused connection gave no error")
	}
}

// TestServeAndGet runs both subcommands as the image runs them, and checks
// that serve returns nil (exit 0) when its context ends, as on SIGTERM.
func TestServeAndGet(t *testing.T) {
	t.Setenv("POD_NAME", "web-1")
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var log bytes.Buffer
	go func() { done <- run(ctx, []string{"serve", "-listen", addr}, &log, &log) }()
	var out bytes.Buffer
	deadline := time.Now().Add(5 * time.Second)
	for {
		out.Reset()
		err := run(context.Background(), []string{"get", "-timeout", "1s", "http://" + addr + "/"}, &out, &out)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != "web-1\n" {
		t.Errorf("got %q", out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after SIGTERM: %v", err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &out); err == nil {
		t.Error("an unknown command gave no error")
	}
}

// TestDNSLoadAndWatch: dnsload measures a server that answers (a fake on
// loopback), and watch prints each change of answer once.
func TestDNSLoadAndWatch(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r := append([]byte{}, buf[:n]...)
			r[2] |= 0x80
			pc.WriteTo(r, from)
		}
	}()
	var out strings.Builder
	if err := run(context.Background(), []string{"dnsload", "-server", pc.LocalAddr().String(), "-parallel", "2", "-duration", "500ms", "kubernetes.default.svc.cluster.local"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var l DNSLoad
	if err := json.Unmarshal([]byte(out.String()), &l); err != nil || l.Queries < 2 || l.QPS <= 0 || l.P99Ms < l.P50Ms {
		t.Errorf("dnsload: %+v %v (%s)", l, err, out.String())
	}

	// The answer changes at the third request; the watch lasts long
	// enough for it on a loaded machine, and its end, cutting a request
	// short, is no change of answer.
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) < 3 {
			fmt.Fprintln(w, "old")
			return
		}
		fmt.Fprintln(w, "new")
	}))
	defer srv.Close()
	out.Reset()
	if err := run(context.Background(), []string{"watch", "-interval", "10ms", "-duration", "1s", srv.URL}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " old") || !strings.HasSuffix(lines[1], " new") {
		t.Errorf("watch printed %q, want the old answer then the new one", lines)
	}

	// A watch that ends while a request is in flight prints nothing for it.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer slow.Close()
	out.Reset()
	if err := run(context.Background(), []string{"watch", "-duration", "100ms", slow.URL}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("a watch ended mid-request printed %q, want nothing", out.String())
	}
}
