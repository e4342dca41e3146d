package pki

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/internal/fsutil"
)

// Expiry is when one certificate or kubeconfig's client certificate ends.
type Expiry struct {
	// Name is kubeadm's name: "apiserver", "admin.conf", "etcd-ca".
	Name string `json:"name"`
	Path string `json:"path"`
	// Issued is the start of its validity (NotBefore).
	Issued  time.Time `json:"issued,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	// ResidualSeconds is how long it has left at the time of the check;
	// negative once expired.
	ResidualSeconds int64 `json:"residualSeconds"`
	// CA names the signing CA; empty for CAs.
	CA string `json:"certificateAuthority,omitempty"`
	// ExternallyManaged means anvil cannot renew it: its CA's key is not
	// in the directory (for a CA: its own key).
	ExternallyManaged bool `json:"externallyManaged"`
	Missing           bool `json:"missing,omitempty"`
}

// Residual is how long the certificate had left at the time of the check.
func (e Expiry) Residual() time.Duration { return time.Duration(e.ResidualSeconds) * time.Second }

// Expiration is what CheckExpiration found, each list sorted by name.
type Expiration struct {
	Certificates           []Expiry `json:"certificates"`
	CertificateAuthorities []Expiry `json:"certificateAuthorities"`
}

// CheckExpiration reports when every certificate under dir and every
// kubeconfig under Options.KubeconfigDir expires. A missing file is
// reported as missing; a file that cannot be read or parsed is an error.
func CheckExpiration(dir string, opts Options) (Expiration, error) {
	now := opts.now()
	var out Expiration
	for _, d := range []string{dir, opts.KubeconfigDir} {
		if d == "" {
			continue
		}
		if err := checkDir(d); err != nil {
			return out, err
		}
		if ok, err := fsutil.Exists(d); err != nil {
			return out, pathError("read", d, err)
		} else if !ok {
			return out, fmt.Errorf("read %s: no such directory", d)
		}
	}
	external := map[string]bool{}
	for _, spec := range CAs() {
		e, err := certExpiry(filepath.Join(dir, CertFile(spec.BaseName)), spec.Name, now)
		if err != nil {
			return out, err
		}
		keyPath := filepath.Join(dir, KeyFile(spec.BaseName))
		hasKey, err := fsutil.Exists(keyPath)
		if err != nil {
			return out, pathError("read", keyPath, err)
		}
		e.ExternallyManaged = !e.Missing && !hasKey
		external[spec.Name] = e.ExternallyManaged
		out.CertificateAuthorities = append(out.CertificateAuthorities, e)
	}
	for _, spec := range Certificates() {
		e, err := certExpiry(filepath.Join(dir, CertFile(spec.BaseName)), spec.Name, now)
		if err != nil {
			return out, err
		}
		e.CA, e.ExternallyManaged = spec.CA, external[spec.CA]
		out.Certificates = append(out.Certificates, e)
	}
	if opts.KubeconfigDir != "" {
		for _, spec := range Kubeconfigs() {
			e, err := kubeconfigExpiry(filepath.Join(opts.KubeconfigDir, spec.Name), spec.Name, now)
			if err != nil {
				return out, err
			}
			if e.Missing && spec.OnDemand {
				continue
			}
			e.CA, e.ExternallyManaged = CAName, external[CAName]
			out.Certificates = append(out.Certificates, e)
		}
	}
	byName := func(a, b Expiry) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(out.Certificates, byName)
	slices.SortFunc(out.CertificateAuthorities, byName)
	return out, nil
}

func certExpiry(path, name string, now time.Time) (Expiry, error) {
	e := Expiry{Name: name, Path: path}
	f, err := readFile(path)
	if err != nil {
		return e, err
	}
	if !f.exists() {
		e.Missing = true
		return e, nil
	}
	certs, err := ParseCerts(f.Data)
	if err != nil {
		return e, fmt.Errorf("parse %s: %w", path, err)
	}
	e.setExpiry(certs[0].NotBefore, certs[0].NotAfter, now)
	return e, nil
}

func kubeconfigExpiry(path, name string, now time.Time) (Expiry, error) {
	e := Expiry{Name: name, Path: path}
	f, err := readFile(path)
	if err != nil {
		return e, err
	}
	if !f.exists() {
		e.Missing = true
		return e, nil
	}
	kc, err := clientcmd.Load(f.Data)
	if err != nil {
		return e, fmt.Errorf("parse %s: %w", path, err)
	}
	cr, why := credentials(kc)
	if why != "" {
		return e, fmt.Errorf("parse %s: %s", path, why)
	}
	certs, err := ParseCerts(cr.cert)
	if err != nil {
		return e, fmt.Errorf("parse %s: client-certificate-data: %w", path, err)
	}
	e.setExpiry(certs[0].NotBefore, certs[0].NotAfter, now)
	return e, nil
}

func (e *Expiry) setExpiry(notBefore, notAfter, now time.Time) {
	e.Issued, e.Expires = notBefore.UTC(), notAfter.UTC()
	e.ResidualSeconds = int64(notAfter.Sub(now) / time.Second)
}
