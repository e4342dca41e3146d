package etcd

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"anvil.dev/anvil/internal/grpccodec"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// Ports an etcd member listens on.
const (
	ClientPort  = 2379
	PeerPort    = 2380
	MetricsPort = 2381
	// ClientHTTPPort serves etcd's HTTP API (JSON gateway, /health,
	// /version) on loopback with mutual TLS, so that the client port
	// serves only gRPC, through gRPC's own transport.
	ClientHTTPPort = 2382
)

// Peer is one entry of etcd's initial-cluster.
type Peer struct {
	Name    string
	PeerURL string
}

// etcdWindowBytes is the HTTP/2 flow-control window anvil's etcd clients
// offer, per stream and per connection.
const etcdWindowBytes = 4 << 20

// Dial connects to etcd members with the healthcheck client
// certificate from the etcd CA: the least privileged identity a master has
// that etcd accepts. Endpoints default to the local member.
func Dial(ctx context.Context, root hostfs.Root, endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = []string{fmt.Sprintf("https://127.0.0.1:%d", ClientPort)}
	}
	dir := root.PKI()
	tlsInfo := transport.TLSInfo{
		CertFile:      filepath.Join(dir, pki.CertFile(pki.EtcdHealthcheckClientCertAndKeyBaseName)),
		KeyFile:       filepath.Join(dir, pki.KeyFile(pki.EtcdHealthcheckClientCertAndKeyBaseName)),
		TrustedCAFile: filepath.Join(dir, pki.CertFile(pki.EtcdCACertAndKeyBaseName)),
	}
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	tc.MinVersion = tls.VersionTLS12
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tc,
		DialTimeout: 5 * time.Second,
		Context:     ctx,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpccodec.DialOption(),
			// A snapshot streams hundreds of MB: windows this size let
			// etcd send without waiting for window updates, which cost
			// both ends a system call and a wake-up each.
			grpc.WithInitialWindowSize(etcdWindowBytes),
			grpc.WithInitialConnWindowSize(etcdWindowBytes),
		},
	})
}
