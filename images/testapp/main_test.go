package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
