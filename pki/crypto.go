package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

// backdate is how far before "now" certificates start, so that a master
// whose clock is a little behind the one that issued them accepts them
// (kubeadm's CertificateBackdate).
const backdate = 5 * time.Minute

// algorithmBits is the RSA modulus size for an RSA algorithm, 0 for ECDSA.
func algorithmBits(a v1alpha1.KeyAlgorithm) (int, error) {
	switch a {
	case v1alpha1.ECDSAP256, "":
		return 0, nil
	case v1alpha1.RSA2048:
		return 2048, nil
	case v1alpha1.RSA3072:
		return 3072, nil
	case v1alpha1.RSA4096:
		return 4096, nil
	}
	return 0, fmt.Errorf("key algorithm %q is not one of %v", a, v1alpha1.KeyAlgorithms())
}

// NewKey makes a private key of algorithm a (ECDSA-P256 when empty).
func NewKey(a v1alpha1.KeyAlgorithm) (crypto.Signer, error) {
	bits, err := algorithmBits(a)
	if err != nil {
		return nil, err
	}
	if bits == 0 {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, bits)
}

// algorithmOf names the algorithm of a public key, or "" for a key anvil
// does not make (another curve, an Ed25519 key, an odd RSA size).
func algorithmOf(pub crypto.PublicKey) v1alpha1.KeyAlgorithm {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return v1alpha1.ECDSAP256
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return v1alpha1.RSA2048
		case 3072:
			return v1alpha1.RSA3072
		case 4096:
			return v1alpha1.RSA4096
		}
	}
	return ""
}

// keyMatches reports whether key is the private half of pub.
func keyMatches(pub crypto.PublicKey, key crypto.Signer) bool {
	p, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && p.Equal(key.Public())
}

func serialNumber() (*big.Int, error) {
	// 128 random bits, positive: RFC 5280 allows up to 20 octets.
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// newCA makes a self-signed CA valid from now for validity.
func newCA(spec CASpec, alg v1alpha1.KeyAlgorithm, validity time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := NewKey(alg)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.CommonName},
		DNSNames:              []string{spec.CommonName}, // as kubeadm's CAs carry
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA %s: %w", spec.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// leafTemplate is what a leaf must say, derived from its spec and a Config.
type leafTemplate struct {
	CommonName    string
	Organizations []string
	Usages        []x509.ExtKeyUsage
	SANs          SANs
}

// issue makes a key and a certificate for t signed by the CA. A leaf never
// outlives its CA: its end is capped at the CA's.
func issue(caCert *x509.Certificate, caKey crypto.Signer, t leafTemplate, alg v1alpha1.KeyAlgorithm, validity time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := NewKey(alg)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: t.CommonName, Organization: t.Organizations},
		DNSNames:              t.SANs.DNSNames,
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              usage,
		ExtKeyUsage:           t.Usages,
		BasicConstraintsValid: true,
	}
	for _, ip := range t.SANs.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %s: %w", t.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// EncodeCert is a certificate in PEM.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// EncodeKey is a private key in PEM, in the forms kubeadm writes: SEC 1 for
// ECDSA, PKCS #1 for RSA; PKCS #8 for ed25519 (anvil's backup signing key).
func EncodeKey(key crypto.Signer) ([]byte, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", key)
}

// EncodePublicKey is a public key in PEM (PKIX), the form of sa.pub.
func EncodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParseCerts parses every CERTIFICATE block in data; a file with none, or
// with one that does not parse, is an error. Other blocks are ignored.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return certs, nil
}

// ParseKey parses the first private key block in data: SEC 1, PKCS #1 or
// PKCS #8.
func ParseKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PRIVATE KEY PEM block")
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return s, nil
	}
}

// ParsePublicKey parses the first PUBLIC KEY block in data.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PUBLIC KEY PEM block")
		}
		if b.Type == "PUBLIC KEY" {
			return x509.ParsePKIXPublicKey(b.Bytes)
		}
	}
}

// ReadBackupSigningPublicKey reads the public half of anvil's backup
// signing key (backup-signing.pub) in the PKI directory dir.
func ReadBackupSigningPublicKey(dir string) (ed25519.PublicKey, error) {
	file := filepath.Join(dir, BackupSigningPubKeyName)
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("backup signing key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("backup signing key %s: %w", file, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("backup signing key %s is a %T, not an ed25519 key", file, k)
	}
	return pub, nil
}
