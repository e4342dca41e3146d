package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPool(ca *testCA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// TestClientFailover: a server that does not answer, or answers 5xx or
// 429, makes the client try the next; a 4xx answer is the answer.
func TestClientFailover(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	good := newFakeAPIServer(t, ca, ca)
	good.info = clusterInfo(t, good.URL(), ca.pem(), nil)
	sick := newFakeAPIServer(t, ca, ca)
	sick.extra = func(w http.ResponseWriter, r *http.Request) bool {
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "etcd is down")
		return true
	}
	throttled := newFakeAPIServer(t, ca, ca)
	throttled.extra = func(w http.ResponseWriter, r *http.Request) bool {
		writeStatus(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "slow down")
		return true
	}
	// A master that lost power: connections are never answered. The
	// kernel completes the TCP handshake on the listener's backlog; TLS
	// never starts.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Close() })
	silent := "https://" + hung.Addr().String()
	const closed = "https://127.0.0.1:1"
	tests := []struct {
		name      string
		servers   []string
		path      string
		wantErr   string
		failovers int
		end       string
	}{
		{"first answers", []string{good.URL(), closed}, clusterInfoURLPath, "", 0, good.URL()},
		{"closed port, then good", []string{closed, good.URL()}, clusterInfoURLPath, "", 1, good.URL()},
		{"503, 429, then good", []string{sick.URL(), throttled.URL(), good.URL()}, clusterInfoURLPath, "", 1, good.URL()},
		{"silent, then good", []string{silent, good.URL()}, clusterInfoURLPath, "", 1, good.URL()},
		{"404 is an answer", []string{good.URL(), closed}, "/api/v1/nodes/nope", "404", 0, good.URL()},
		{"nobody answers", []string{closed, sick.URL()}, clusterInfoURLPath, "no apiserver answered", 0, closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failovers := 0
			c, err := newAPIClient(clientOptions{Servers: tt.servers, CAs: testPool(ca), OnFailover: func(string, string) { failovers++ }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = c.do(ctx, "GET", tt.path, "", nil, nil)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if failovers != tt.failovers || c.server() != tt.end {
				t.Errorf("failovers %d (want %d), server %s (want %s)", failovers, tt.failovers, c.server(), tt.end)
			}
			// The next request goes straight to the server that answered.
			if tt.wantErr == "" {
				before := len(good.requests())
				if err := c.do(ctx, "GET", tt.path, "", nil, nil); err != nil {
					t.Fatal(err)
				}
				if len(good.requests()) != before+1 {
					t.Error("the next request did not go to the server that answered")
				}
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	srv := newFakeAPIServer(t, ca, ca)
	srv.extra = func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/exists":
			writeStatus(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "leases \"w1\" already exists")
		case "/conflict":
			writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified")
		case "/proto":
			st := &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Code: 403, Reason: metav1.StatusReasonForbidden, Message: "node \"w1\" is not allowed to modify taints"}
			b, _ := encodeProtobuf(st, "v1", "Status")
			w.Header().Set("Content-Type", contentProtobuf)
			w.WriteHeader(http.StatusForbidden)
			w.Write(b)
		default:
			return false
		}
		return true
	}
	c, _ := newAPIClient(clientOptions{Servers: []string{srv.URL()}, CAs: testPool(ca)})
	ctx := context.Background()
	tests := []struct {
		path   string
		check  func(error) bool
		reason metav1.StatusReason
	}{
		{"/exists", isAlreadyExists, metav1.StatusReasonAlreadyExists},
		{"/conflict", func(err error) bool { return isConflict(err) && !isAlreadyExists(err) }, metav1.StatusReasonConflict},
		{"/proto", isForbidden, metav1.StatusReasonForbidden},
	}
	for _, tt := range tests {
		var out coordinationv1.Lease
		err := c.do(ctx, "GET", tt.path, "", nil, &out)
		var se *StatusError
		if !tt.check(err) || !errors.As(err, &se) || se.Reason != tt.reason || se.Message == "" {
			t.Errorf("%s: %v (%+v)", tt.path, err, se)
		}
		if retriable(err) {
			t.Errorf("%s: a 4xx is retried elsewhere", tt.path)
		}
	}
}

// TestProtobufRoundTrip: what the client sends as protobuf, a real decoder
// (the generated Unmarshal behind the envelope) reads back.
func TestProtobufRoundTrip(t *testing.T) {
	holder := "w1"
	secs := int32(40)
	now := metav1.NewMicroTime(time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC))
	in := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "kube-node-lease", ResourceVersion: "42"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &now},
	}
	b, err := leaseBody(in).encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "k8s\x00") {
		t.Fatalf("no magic: %q", b[:8])
	}
	var out coordinationv1.Lease
	if err := decodeProtobuf(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Name != "w1" || out.ResourceVersion != "42" || *out.Spec.HolderIdentity != "w1" || !out.Spec.RenewTime.Equal(&now) {
		t.Errorf("round trip: %+v", out)
	}
	if err := decodeProtobuf([]byte(`{"kind":"Lease"}`), &out); err == nil {
		t.Error("JSON decoded as protobuf")
	}
	for ct, want := range map[string]bool{contentProtobuf: true, contentProtobuf + ";charset=utf-8": true, contentJSON: false, "": false} {
		if isProtobuf(ct) != want {
			t.Errorf("isProtobuf(%q) = %v", ct, !want)
		}
	}
}

// TestBearerOnlyWhenGiven: a certificate client never sends a token; a
// bootstrap client sends it in the header only.
func TestBearerOnlyWhenGiven(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	srv := newFakeAPIServer(t, ca, ca)
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	for _, withToken := range []bool{false, true} {
		o := clientOptions{Servers: []string{srv.URL()}, CAs: testPool(ca)}
		if withToken {
			o.Token = tok
		}
		c, _ := newAPIClient(o)
		c.do(context.Background(), "GET", "/x", "", nil, nil)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || reqs[0].Authorization != "" || reqs[1].Authorization != "Bearer "+tok.Reveal() {
		t.Errorf("requests %+v", reqs)
	}
}
