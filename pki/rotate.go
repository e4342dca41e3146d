package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/internal/fsutil"
)

// CA rotation, staged so that nothing stops trusting anything still in use.
// A CA's certificate file (ca.crt, etcd/ca.crt, front-proxy-ca.crt) is the
// trust bundle every reader checks peers against; its first certificate is
// the one its key (ca.key …) signs with. The stages, each run on every
// master (and, for the cluster CA, every node) before the next begins:
//
//   - trust: the next CA (NAME-next.crt/.key, made on one master and
//     handed to the others) is added to each bundle after the current
//     one; the kubeconfigs trust the bundle. Everything still signs with
//     the current CA.
//   - reissue: the next CA becomes the signing one (first in the bundle,
//     its key in NAME.key), the old one stays trusted second; every leaf
//     and kubeconfig is issued again by the new CA.
//   - drop: the old CA leaves the bundles.
//
// The controller-manager signs CSRs with a file of exactly one certificate,
// so the cluster CA's signing certificate is also kept alone in
// ClusterSigningCertFile.

// The rotation stages, in order.
const (
	RotateTrust   = "trust"
	RotateReissue = "reissue"
	RotateDrop    = "drop"
)

// RotateStages lists the stages in the order they run.
func RotateStages() []string { return []string{RotateTrust, RotateReissue, RotateDrop} }

// ClusterSigningCertFile is the cluster CA's signing certificate alone,
// what the controller-manager's --cluster-signing-cert-file names.
const ClusterSigningCertFile = "cluster-signing-ca.crt"

// NextBaseName is where a CA's successor waits during a rotation.
func NextBaseName(base string) string { return base + "-next" }

// NextCAFiles are the successors' files, relative to the PKI directory.
func NextCAFiles() []string {
	var out []string
	for _, ca := range CAs() {
		out = append(out, CertFile(NextBaseName(ca.BaseName)), KeyFile(NextBaseName(ca.BaseName)))
	}
	return out
}

// RotationState is where a CA rotation stands on one master.
type RotationState struct {
	// Done is the last stage finished here: "" (no rotation under way),
	// RotateTrust or RotateReissue. A finished rotation (drop) reads "".
	Done string `json:"done,omitempty"`
	// Prepared means the next CAs are here but not trusted yet.
	Prepared bool `json:"prepared,omitempty"`
}

// caFiles is one CA's files as a rotation sees them.
type caFiles struct {
	spec            CASpec
	certPath        string
	keyPath         string
	nextCert        string
	nextKey         string
	bundle          []*x509.Certificate
	next            *x509.Certificate
	nextPresent     bool
	nextKeyPresent  bool
	bundleHoldsNext bool
	// leftover means next files are there that do not count (see
	// readCAFiles).
	leftover bool
}

func readCAFiles(dir string) ([]caFiles, error) {
	var out []caFiles
	for _, spec := range CAs() {
		f := caFiles{
			spec:     spec,
			certPath: filepath.Join(dir, CertFile(spec.BaseName)),
			keyPath:  filepath.Join(dir, KeyFile(spec.BaseName)),
			nextCert: filepath.Join(dir, CertFile(NextBaseName(spec.BaseName))),
			nextKey:  filepath.Join(dir, KeyFile(NextBaseName(spec.BaseName))),
		}
		b, err := os.ReadFile(f.certPath)
		if err != nil {
			return nil, pathError("read", f.certPath, err)
		}
		if f.bundle, err = ParseCerts(b); err != nil {
			return nil, fmt.Errorf("parse %s: %w", f.certPath, err)
		}
		if nb, err := os.ReadFile(f.nextCert); err == nil {
			certs, err := ParseCerts(nb)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %w", f.nextCert, err)
			}
			f.next, f.nextPresent = certs[0], true
			f.bundleHoldsNext = slices.ContainsFunc(f.bundle, f.next.Equal)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, pathError("read", f.nextCert, err)
		}
		if _, err := os.Stat(f.nextKey); err == nil {
			f.nextKeyPresent = true
		}
		// Leftovers of an interrupted step: a next certificate without its
		// key that already signs (a switch removes the key first), or a
		// key without its certificate (a preparation writes the key
		// first). Neither counts; the step run again removes or rewrites
		// them.
		if f.nextPresent && !f.nextKeyPresent && f.next.Equal(f.bundle[0]) || !f.nextPresent && f.nextKeyPresent {
			f.nextPresent, f.nextKeyPresent, f.bundleHoldsNext, f.next = false, false, false, nil
			f.leftover = true
		}
		out = append(out, f)
	}
	return out, nil
}

// ReadRotation says where a CA rotation stands in dir.
func ReadRotation(dir string) (RotationState, error) {
	cas, err := readCAFiles(dir)
	if err != nil {
		return RotationState{}, err
	}
	return rotationState(cas)
}

func rotationState(cas []caFiles) (RotationState, error) {
	var next, trusted, bundles, switched int
	for _, c := range cas {
		if c.nextPresent != c.nextKeyPresent {
			return RotationState{}, fmt.Errorf("%s and %s must both be there or both be gone: an interrupted rotation; put the missing one back from another master", c.nextCert, c.nextKey)
		}
		if c.nextPresent {
			next++
			if c.bundleHoldsNext {
				trusted++
			}
		} else if len(c.bundle) > 1 {
			switched++
		}
		if len(c.bundle) > 1 {
			bundles++
		}
	}
	switch {
	case next == 0 && bundles == 0:
		return RotationState{}, nil
	case next == 0:
		return RotationState{Done: RotateReissue}, nil
	case next+switched == len(cas) && trusted == next && switched > 0:
		// A switch stopped half-way: it goes on.
		return RotationState{Done: RotateTrust}, nil
	case next != len(cas):
		return RotationState{}, fmt.Errorf("only %d of %d CAs have a successor (*-next.crt): an interrupted rotation; run the trust stage again", next, len(cas))
	case trusted == len(cas):
		return RotationState{Done: RotateTrust}, nil
	default:
		return RotationState{Prepared: true}, nil
	}
}

// PrepareRotation makes every CA's successor (NAME-next.crt/.key) unless
// they are there. A CA whose key is absent (managed outside anvil) cannot
// be rotated here.
func PrepareRotation(dir string, cfg Config, now time.Time) error {
	cfg = cfg.withDefaults()
	cas, err := readCAFiles(dir)
	if err != nil {
		return err
	}
	trusted := slices.ContainsFunc(cas, func(c caFiles) bool { return c.bundleHoldsNext || len(c.bundle) > 1 })
	if trusted {
		// Under way: the next CAs are kept, whoever holds them.
		if _, err := rotationState(cas); err != nil {
			return err
		}
		return nil
	}
	if !slices.ContainsFunc(cas, func(c caFiles) bool { return !c.nextPresent || !c.nextKeyPresent }) {
		return nil // prepared
	}
	// Nothing trusts a next CA yet, so none was handed out: a partial set
	// from an interrupted run is made again.
	var writes []write
	for _, c := range cas {
		if _, err := os.Stat(c.keyPath); err != nil {
			return fmt.Errorf("CA %s has no key %s (an externally managed CA): rotate it where it is kept, not with anvil", c.spec.Name, c.keyPath)
		}
		cert, key, err := newCA(c.spec, algorithmOf(c.bundle[0].PublicKey), cfg.CAValidity, now)
		if err != nil {
			return err
		}
		keyPEM, err := EncodeKey(key)
		if err != nil {
			return err
		}
		writes = append(writes, write{c.nextKey, keyPEM, keyMode}, write{c.nextCert, EncodeCert(cert), certMode})
	}
	for _, w := range writes {
		if err := fsutil.WriteFile(w.path, w.data, w.mode, dirMode); err != nil {
			return err
		}
	}
	return nil
}

// TrustNext adds each CA's successor to its bundle, after the CAs it holds,
// and has the kubeconfigs under kubeconfigDir trust the new bundle. It
// returns the files it changed; done again it changes nothing.
func TrustNext(dir, kubeconfigDir string) ([]string, error) {
	cas, err := readCAFiles(dir)
	if err != nil {
		return nil, err
	}
	st, err := rotationState(cas)
	if err != nil {
		return nil, err
	}
	switch {
	case st.Done == RotateReissue:
		return nil, fmt.Errorf("the new CAs already sign here (stage %s is done): go on with %s", RotateReissue, RotateDrop)
	case st.Done == "" && !st.Prepared:
		return nil, fmt.Errorf("no next CAs in %s: they are made on one master and handed to the others (anvil cluster rotate-ca does both)", dir)
	}
	var changed []string
	for _, c := range cas {
		if c.bundleHoldsNext {
			continue
		}
		if err := writeBundle(c.certPath, append(slices.Clone(c.bundle), c.next)); err != nil {
			return nil, err
		}
		changed = append(changed, c.certPath)
	}
	kc, err := RefreshKubeconfigTrust(dir, kubeconfigDir)
	return append(changed, kc...), err
}

// SwitchToNext makes each successor the signing CA (its key in NAME.key,
// its certificate first in the bundle, the old one trusted after it), writes
// ClusterSigningCertFile, removes the NAME-next files, and issues every
// leaf and kubeconfig again from the new CAs. It returns the files it
// changed. Run again after it finished, it issues nothing again.
func SwitchToNext(dir string, cfg Config, opts Options) ([]string, error) {
	cas, err := readCAFiles(dir)
	if err != nil {
		return nil, err
	}
	st, err := rotationState(cas)
	if err != nil {
		return nil, err
	}
	var changed []string
	switch st.Done {
	case RotateTrust:
		for _, c := range cas {
			if !c.nextPresent {
				continue // switched by the run that stopped
			}
			keyPEM, err := os.ReadFile(c.nextKey)
			if err != nil {
				return nil, pathError("read", c.nextKey, err)
			}
			key, err := ParseKey(keyPEM)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %w", c.nextKey, err)
			}
			if !keyMatches(c.next.PublicKey, key) {
				return nil, fmt.Errorf("%s does not match %s", c.nextKey, c.nextCert)
			}
			bundle := []*x509.Certificate{c.next}
			for _, b := range c.bundle {
				if !b.Equal(c.next) {
					bundle = append(bundle, b)
				}
			}
			// The bundle first (it trusts both), then the key: a crash
			// between leaves a key that does not match the first
			// certificate, which this stage run again repairs from the
			// next files, still there.
			if err := writeBundle(c.certPath, bundle); err != nil {
				return nil, err
			}
			if err := fsutil.WriteFile(c.keyPath, keyPEM, keyMode, dirMode); err != nil {
				return nil, err
			}
			changed = append(changed, c.certPath, c.keyPath)
		}
		for _, c := range cas {
			// The key first: a next certificate alone that signs already is
			// a leftover (readCAFiles).
			for _, p := range []string{c.nextKey, c.nextCert} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, pathError("remove", p, err)
				}
			}
		}
	case RotateReissue:
		for _, c := range cas {
			if c.leftover {
				for _, p := range []string{c.nextKey, c.nextCert} {
					if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return nil, pathError("remove", p, err)
					}
				}
			}
		}
		if current, err := leavesCurrent(dir, opts.KubeconfigDir, cas); err != nil || current {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("the next CAs are not trusted everywhere yet: run stage %s first", RotateTrust)
	}
	signing := filepath.Join(dir, ClusterSigningCertFile)
	if err := fsutil.WriteFile(signing, EncodeCert(cas[0].nextOrFirst()), certMode, dirMode); err != nil {
		return nil, err
	}
	changed = append(changed, signing)
	res, err := Renew(dir, cfg, []string{RenewAll}, opts)
	if err != nil {
		return changed, err
	}
	for _, r := range res {
		changed = append(changed, r.Path)
	}
	return changed, nil
}

// nextOrFirst is the CA that signs after the switch.
func (c caFiles) nextOrFirst() *x509.Certificate {
	if c.next != nil {
		return c.next
	}
	return c.bundle[0]
}

// leavesCurrent says whether every leaf and kubeconfig is signed by its
// CA's signing certificate.
func leavesCurrent(dir, kubeconfigDir string, cas []caFiles) (bool, error) {
	signer := map[string]*x509.Certificate{}
	for _, c := range cas {
		signer[c.spec.Name] = c.bundle[0]
	}
	for _, s := range Certificates() {
		c, err := ReadCertFile(filepath.Join(dir, CertFile(s.BaseName)))
		if err != nil {
			return false, err
		}
		if c.CheckSignatureFrom(signer[s.CA]) != nil {
			return false, nil
		}
	}
	if kubeconfigDir == "" {
		return true, nil
	}
	for _, s := range Kubeconfigs() {
		kc, err := clientcmd.LoadFromFile(filepath.Join(kubeconfigDir, s.Name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		cr, why := credentials(kc)
		if why != "" {
			return false, nil
		}
		certs, err := ParseCerts(cr.cert)
		if err != nil || certs[0].CheckSignatureFrom(signer[CAName]) != nil {
			return false, nil
		}
	}
	return true, nil
}

// DropPrevious leaves each CA's bundle with its signing certificate alone
// and has the kubeconfigs trust that. It returns the files it changed.
func DropPrevious(dir, kubeconfigDir string) ([]string, error) {
	cas, err := readCAFiles(dir)
	if err != nil {
		return nil, err
	}
	st, err := rotationState(cas)
	if err != nil {
		return nil, err
	}
	if st.Done != RotateReissue && st.Done != "" {
		return nil, fmt.Errorf("the new CAs do not sign here yet: run stage %s first", RotateReissue)
	}
	if st.Prepared {
		return nil, fmt.Errorf("a rotation is prepared here (*-next.crt) but not done: run stages %s and %s first", RotateTrust, RotateReissue)
	}
	if current, err := leavesCurrent(dir, kubeconfigDir, cas); err != nil {
		return nil, err
	} else if !current {
		return nil, fmt.Errorf("some leaves or kubeconfigs in %s are not signed by the new CAs yet: run stage %s again first", dir, RotateReissue)
	}
	var changed []string
	for _, c := range cas {
		if len(c.bundle) == 1 {
			continue
		}
		if err := writeBundle(c.certPath, c.bundle[:1]); err != nil {
			return nil, err
		}
		changed = append(changed, c.certPath)
	}
	kc, err := RefreshKubeconfigTrust(dir, kubeconfigDir)
	return append(changed, kc...), err
}

// RefreshKubeconfigTrust has every kubeconfig of Kubeconfigs() under
// kubeconfigDir trust the cluster CA's bundle as it is on disk, and
// returns those it rewrote.
func RefreshKubeconfigTrust(dir, kubeconfigDir string) ([]string, error) {
	if kubeconfigDir == "" {
		return nil, nil
	}
	caPath := filepath.Join(dir, CertFile(CACertAndKeyBaseName))
	bundle, err := os.ReadFile(caPath)
	if err != nil {
		return nil, pathError("read", caPath, err)
	}
	var changed []string
	for _, s := range Kubeconfigs() {
		p := filepath.Join(kubeconfigDir, s.Name)
		out, err := SetKubeconfigTrust(p, bundle)
		if err != nil {
			return changed, err
		}
		if out {
			changed = append(changed, p)
		}
	}
	return changed, nil
}

// SetKubeconfigTrust has the kubeconfig at path trust the CAs in bundle
// (every cluster it names); a missing kubeconfig is left missing. It says
// whether it rewrote the file.
func SetKubeconfigTrust(path string, bundle []byte) (bool, error) {
	kc, err := clientcmd.LoadFromFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("parse %s: %w", path, err)
	}
	if _, err := ParseCerts(bundle); err != nil {
		return false, err
	}
	changed := false
	for _, cl := range kc.Clusters {
		if !bytes.Equal(cl.CertificateAuthorityData, bundle) {
			cl.CertificateAuthorityData = bundle
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", path, err)
	}
	return true, fsutil.WriteFile(path, data, keyMode, dirMode)
}

func writeBundle(path string, certs []*x509.Certificate) error {
	var b []byte
	for _, c := range certs {
		b = append(b, EncodeCert(c)...)
	}
	return fsutil.WriteFile(path, b, certMode, dirMode)
}
