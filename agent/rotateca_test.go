package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"anvil.dev/anvil/pki"
)

func bundleCA(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pki.EncodeCert(c)
}

// TestCheckBundle: a node never takes a published bundle that would cut it
// off from the CAs it trusts (a stage run out of order, or a cluster-info
// someone else wrote).
func TestCheckBundle(t *testing.T) {
	old, next, other := bundleCA(t, "old"), bundleCA(t, "next"), bundleCA(t, "other")
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for _, tc := range []struct {
		name            string
		stage           string
		current, bundle []byte
		ok              bool
	}{
		{"trust adds the next CA", pki.RotateTrust, old, cat(old, next), true},
		{"trust again", pki.RotateTrust, cat(old, next), cat(old, next), true},
		{"trust that drops the current CA", pki.RotateTrust, old, next, false},
		{"trust that swaps in another CA", pki.RotateTrust, cat(old, next), cat(old, other), false},
		{"reissue, the new CA first", pki.RotateReissue, cat(old, next), cat(next, old), true},
		{"reissue of a different set", pki.RotateReissue, cat(old, next), cat(next, other), false},
		{"reissue without the trust stage", pki.RotateReissue, old, cat(next, old), false},
		{"drop to the new CA", pki.RotateDrop, cat(next, old), next, true},
		{"drop to a CA never trusted", pki.RotateDrop, cat(next, old), other, false},
		{"drop before reissue keeps two", pki.RotateDrop, cat(old, next), cat(old, next), false},
		{"garbage", pki.RotateTrust, old, []byte("not a certificate"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBundle(tc.stage, tc.current, tc.bundle)
			if (err == nil) != tc.ok {
				t.Fatalf("checkBundle: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
