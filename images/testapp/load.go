package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// DNSLoad is what dnsload prints: how a DNS server answered one name
// queried as fast as parallel clients could for a while.
type DNSLoad struct {
	Queries int     `json:"queries"`
	Errors  int     `json:"errors"`
	QPS     float64 `json:"qps"`
	P50Ms   float64 `json:"p50Ms"`
	P99Ms   float64 `json:"p99Ms"`
}

// dnsload asks server (host:port) for name's A record over UDP from
// parallel clients for duration, each waiting for its answer before the
// next query, and prints a DNSLoad as JSON. A query unanswered within
// 1 s counts as an error.
func dnsload(ctx context.Context, server, name string, parallel int, duration time.Duration, out io.Writer) error {
	q, err := dnsQuery(name)
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		wg        sync.WaitGroup
	)
	deadline := time.Now().Add(duration)
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			conn, err := d.DialContext(ctx, "udp", server)
			if err != nil {
				mu.Lock()
				errs++
				mu.Unlock()
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				ok := exchange(conn, q, buf)
				mu.Lock()
				if ok {
					latencies = append(latencies, time.Since(t0))
				} else {
					errs++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(latencies) == 0 {
		return fmt.Errorf("%s answered no query for %s (%d errors)", server, name, errs)
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	return json.NewEncoder(out).Encode(DNSLoad{
		Queries: len(latencies), Errors: errs, QPS: float64(len(latencies)) / elapsed.Seconds(), P50Ms: pct(0.50), P99Ms: pct(0.99),
	})
}

// dnsQuery is a query for name's A record, with recursion desired; its ID
// is set per exchange.
func dnsQuery(name string) ([]byte, error) {
	q := []byte{0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 {
			return nil, fmt.Errorf("%q is not a DNS name", name)
		}
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	return append(q, 0, 0, 1, 0, 1), nil
}

// exchange sends q with a fresh ID and waits up to 1 s for the answer
// with that ID and no error code.
func exchange(conn net.Conn, q, buf []byte) bool {
	if _, err := rand.Read(q[:2]); err != nil {
		return false
	}
	id := binary.BigEndian.Uint16(q)
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write(q); err != nil {
		return false
	}
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return false
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id {
			return buf[2]&0x80 != 0 && buf[3]&0x0f == 0
		}
	}
}

// watch requests url every interval until ctx ends or duration passes and
// prints, whenever the answer changes, the time (Unix nanoseconds) and the
// answer ("-" for a failed request): when a Service starts reaching a new
// backend, as seen from this pod.
func watch(ctx context.Context, url string, interval, duration time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	last := ""
	for ctx.Err() == nil {
		answer := "-"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				answer = strings.TrimSpace(string(b))
			}
		}
		if answer == "-" && ctx.Err() != nil {
			// Cut short by the end of the watch, not refused: no change.
			break
		}
		if answer != last {
			if _, err := fmt.Fprintf(out, "%d %s\n", time.Now().UnixNano(), answer); err != nil {
				return err
			}
			last = answer
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	return ctx.Err()
}
