package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ProbeResolvers asks each upstream resolver (node.Upstreams: an address,
// port 53; or address:port) one question over UDP, all at once, and
// returns, per resolver that gave no DNS answer within timeout, why.
// Cluster DNS forwards to these; one that never answers makes every name
// outside the cluster slow or unresolvable in pods, so init warns about
// it while the cause (a firewall, a stale resolv.conf) is easy to find.
func ProbeResolvers(ctx context.Context, upstreams []string, timeout time.Duration) map[string]error {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[string]error{}
	)
	for _, u := range upstreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := probeResolver(ctx, u, timeout); err != nil {
				mu.Lock()
				out[u] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// probeResolver sends one query for the root's NS records and waits for a
// reply carrying its ID: any DNS answer (even a refusal) shows a server
// is there.
func probeResolver(ctx context.Context, upstream string, timeout time.Duration) error {
	addr := upstream
	if a, err := netip.ParseAddr(upstream); err == nil {
		addr = netip.AddrPortFrom(a, 53).String()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var id [2]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	// Header: ID, flags RD, one question; question: the root, NS, IN.
	q := append(id[:], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1)
	if _, err := conn.Write(q); err != nil {
		return err
	}
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return fmt.Errorf("no answer within %s", timeout)
		case err != nil:
			return err
		case n >= 12 && binary.BigEndian.Uint16(buf) == binary.BigEndian.Uint16(id[:]) && buf[2]&0x80 != 0:
			return nil
		}
	}
}
