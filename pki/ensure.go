package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"anvil.dev/anvil/internal/fsutil"
)

// Options tune Ensure, Renew and CheckExpiration.
type Options struct {
	// KubeconfigDir is where the kubeconfigs live (/etc/kubernetes); empty
	// leaves kubeconfigs alone.
	KubeconfigDir string
	// SuperAdmin makes the on-demand kubeconfigs (super-admin.conf) when
	// they are missing: init does on the first master, and `anvil certs
	// generate --super-admin` on any. Without it they are only kept,
	// checked and renewed where they exist.
	SuperAdmin bool
	// Force replaces what would otherwise be refused: leaves and
	// kubeconfigs of a different CA, stale kubeconfigs, a CA whose key does
	// not match or that has expired, an sa.pub that is not sa.key's.
	Force bool
	// Now is the time certificates are judged and issued at; zero means
	// the current time.
	Now time.Time
}

func (o Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// Action is what happened to a file.
type Action string

const (
	Created  Action = "created"
	Kept     Action = "kept"
	Reissued Action = "reissued" // a leaf or kubeconfig that no longer matched
	Renewed  Action = "renewed"  // by request, through Renew
	Replaced Action = "replaced" // a CA or sa.pub that only Force may replace
)

// Result is what happened to one certificate, key pair or kubeconfig.
type Result struct {
	// Name is kubeadm's name: "ca", "apiserver", "etcd-server", "sa",
	// "admin.conf".
	Name string `json:"name"`
	// Path is the certificate, sa.key or kubeconfig.
	Path   string `json:"path"`
	Action Action `json:"action"`
	// Reason says why a file was re-issued or replaced, or that a kept one
	// had its permissions tightened.
	Reason string `json:"reason,omitempty"`
}

// ErrNeedsForce is wrapped by every refusal that Options.Force overrides.
var ErrNeedsForce = errors.New("refusing to replace it without --force")

// Ensure makes dir (and Options.KubeconfigDir) hold a complete, valid PKI
// for cfg, keeping everything that already is, and reports per file what it
// did. Nothing is written unless every file has been read and judged and
// every new key made; on error the directories are as they were.
//
// Leaves and kubeconfigs get a new key whenever they are (re-)issued.
func Ensure(dir string, cfg Config, opts Options) ([]Result, error) {
	p, err := newPlanner(dir, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := p.loadCAs(true); err != nil {
		return nil, err
	}
	if err := p.signingFile(); err != nil {
		return nil, err
	}
	for _, spec := range Certificates() {
		if err := p.leaf(spec, false); err != nil {
			return nil, err
		}
	}
	for _, spec := range KeyPairs() {
		if err := p.keyPair(spec); err != nil {
			return nil, err
		}
	}
	if opts.KubeconfigDir != "" {
		for _, spec := range Kubeconfigs() {
			if err := p.kubeconfig(spec, false); err != nil {
				return nil, err
			}
		}
	}
	return p.apply()
}

// planner gathers and judges first and writes last: every decision and
// every new key is made before apply touches the disk.
type planner struct {
	dir  string
	cfg  Config
	opts Options
	now  time.Time
	cas  map[string]*authority

	results []Result
	writes  []write
	chmods  []write
}

type write struct {
	path string
	data []byte
	mode fs.FileMode
}

// authority is a CA as this run will leave it.
type authority struct {
	spec     CASpec
	certPath string
	keyPath  string
	cert     *x509.Certificate
	key      crypto.Signer // nil: externally managed
	// trust is the certificate file as found: the CAs its readers trust,
	// the signing one first (more than one during a rotation).
	trust []byte
	// fresh means this run makes the CA, so nothing on disk is its.
	fresh bool
}

// signedByPrevious says whether c is signed by a CA trusted beside the
// signing one (during a rotation).
func (a *authority) signedByPrevious(c *x509.Certificate) bool {
	certs, err := ParseCerts(a.trust)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(certs[1:], func(ca *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil })
}

// trusts says whether c is among the CAs a's readers trust.
func (a *authority) trusts(c *x509.Certificate) bool {
	certs, err := ParseCerts(a.trust)
	return err == nil && slices.ContainsFunc(certs, c.Equal)
}

// trustPEM is what a kubeconfig signed by a trusts.
func (a *authority) trustPEM() []byte {
	if a.fresh || len(a.trust) == 0 {
		return EncodeCert(a.cert)
	}
	return a.trust
}

// signingFile plans ClusterSigningCertFile: the cluster CA's signing
// certificate alone, for the controller-manager.
func (p *planner) signingFile() error {
	ca := p.cas[CAName]
	if ca == nil || ca.cert == nil {
		return nil
	}
	f, err := readFile(p.path(ClusterSigningCertFile))
	if err != nil {
		return err
	}
	if want := EncodeCert(ca.cert); !bytes.Equal(f.Data, want) {
		p.writes = append(p.writes, write{f.Path, want, certMode})
	} else if f.Mode&0o077 != 0 {
		p.chmods = append(p.chmods, write{path: f.Path, mode: certMode})
	}
	return nil
}

func newPlanner(dir string, cfg Config, opts Options) (*planner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dirs := []string{dir, filepath.Join(dir, "etcd")}
	if opts.KubeconfigDir != "" {
		dirs = append(dirs, opts.KubeconfigDir)
	}
	for _, d := range dirs {
		if err := checkDir(d); err != nil {
			return nil, err
		}
	}
	return &planner{dir: dir, cfg: cfg, opts: opts, now: opts.now(), cas: map[string]*authority{}}, nil
}

func (p *planner) path(name string) string { return filepath.Join(p.dir, name) }

// pair is a cert/key pair as found on disk.
type pair struct {
	certFile, keyFile file
	cert              *x509.Certificate
	key               crypto.Signer
}

func readPair(dir, base string) (pair, error) {
	var p pair
	var err error
	if p.certFile, err = readFile(filepath.Join(dir, CertFile(base))); err != nil {
		return p, err
	}
	if p.keyFile, err = readFile(filepath.Join(dir, KeyFile(base))); err != nil {
		return p, err
	}
	if p.certFile.exists() {
		certs, err := ParseCerts(p.certFile.Data)
		if err != nil {
			return p, fmt.Errorf("parse %s: %w", p.certFile.Path, err)
		}
		p.cert = certs[0]
	}
	if p.keyFile.exists() {
		if p.key, err = ParseKey(p.keyFile.Data); err != nil {
			return p, fmt.Errorf("parse %s: %w", p.keyFile.Path, err)
		}
	}
	return p, nil
}

// loadCAs reads and judges the CAs. With create, a missing CA is made and
// Force replaces a broken one. Without (Renew), nothing is made: a missing
// CA only fails what it would have to sign, a broken one fails at once.
func (p *planner) loadCAs(create bool) error {
	for _, spec := range CAs() {
		pr, err := readPair(p.dir, spec.BaseName)
		if err != nil {
			return err
		}
		a := &authority{spec: spec, certPath: pr.certFile.Path, keyPath: pr.keyFile.Path, cert: pr.cert, key: pr.key, trust: pr.certFile.Data}
		p.cas[spec.Name] = a
		res := Result{Name: spec.Name, Path: a.certPath, Action: Kept}
		var broken error
		switch {
		case !pr.certFile.exists() && !pr.keyFile.exists():
			if !create {
				// Renew only needs the CAs of what it renews.
				continue
			}
			res.Action = Created
		case !pr.certFile.exists():
			return fmt.Errorf("%s exists without %s: put the CA certificate back, or remove the key to make a new CA", a.keyPath, a.certPath)
		case !pr.cert.IsCA:
			return fmt.Errorf("%s is not a CA certificate", a.certPath)
		case !pr.keyFile.exists():
			res.Reason = "externally managed: no " + filepath.Base(a.keyPath)
		case !keyMatches(pr.cert.PublicKey, pr.key):
			broken = fmt.Errorf("%s does not match %s", a.keyPath, a.certPath)
		case p.now.After(pr.cert.NotAfter):
			broken = fmt.Errorf("CA %s expired on %s", a.certPath, pr.cert.NotAfter.UTC().Format(time.RFC3339))
		}
		if broken != nil {
			if !create {
				return broken
			}
			if !p.opts.Force {
				return fmt.Errorf("%w: %w", broken, ErrNeedsForce)
			}
			res.Action, res.Reason = Replaced, broken.Error()
		}
		if res.Action == Kept {
			p.tighten(&res, pr.keyFile, pr.certFile)
			p.results = append(p.results, res)
			continue
		}
		cert, key, err := newCA(spec, p.cfg.KeyAlgorithm, p.cfg.CAValidity, p.now)
		if err != nil {
			return err
		}
		a.cert, a.key, a.fresh = cert, key, true
		if err := p.writePair(a.certPath, a.keyPath, cert, key); err != nil {
			return err
		}
		p.results = append(p.results, res)
	}
	return nil
}

// leaf judges one leaf and plans its (re-)issue. With renew it is issued
// again even when it is still valid.
func (p *planner) leaf(spec CertSpec, renew bool) error {
	pr, err := readPair(p.dir, spec.BaseName)
	if err != nil {
		return err
	}
	ca := p.cas[spec.CA]
	if ca.cert == nil {
		return fmt.Errorf("cannot issue %s: CA %s does not exist", pr.certFile.Path, ca.certPath)
	}
	res := Result{Name: spec.Name, Path: pr.certFile.Path}
	want := spec.template(p.cfg)
	switch {
	case !pr.certFile.exists() && !pr.keyFile.exists():
		res.Action = Created
	case pr.certFile.exists() && !ca.fresh && pr.cert.CheckSignatureFrom(ca.cert) != nil && ca.signedByPrevious(pr.cert):
		// A CA rotation's reissue: the old CA is still trusted.
		res.Action, res.Reason = Reissued, "was signed by the previous CA"
	case pr.certFile.exists() && (ca.fresh || pr.cert.CheckSignatureFrom(ca.cert) != nil):
		if !p.opts.Force {
			return fmt.Errorf("%s is not signed by %s (a different CA): %w", pr.certFile.Path, ca.certPath, ErrNeedsForce)
		}
		res.Action, res.Reason = Reissued, "was signed by a different CA"
	case !pr.certFile.exists():
		res.Action, res.Reason = Reissued, filepath.Base(pr.certFile.Path)+" was missing"
	case !pr.keyFile.exists():
		res.Action, res.Reason = Reissued, filepath.Base(pr.keyFile.Path)+" was missing"
	default:
		res.Action, res.Reason = Reissued, staleLeaf(pr, want, p.cfg, p.now)
		if res.Reason == "" {
			res.Action = Kept
		}
	}
	if renew {
		res.Action = Renewed
	}
	if res.Action == Kept {
		p.tighten(&res, pr.keyFile, pr.certFile)
		p.results = append(p.results, res)
		return nil
	}
	if ca.key == nil {
		return fmt.Errorf("cannot issue %s: CA key %s is absent (externally managed CA)", pr.certFile.Path, ca.keyPath)
	}
	cert, key, err := issue(ca.cert, ca.key, want, p.cfg.KeyAlgorithm, p.cfg.CertValidity, p.now)
	if err != nil {
		return err
	}
	if err := p.writePair(pr.certFile.Path, pr.keyFile.Path, cert, key); err != nil {
		return err
	}
	p.results = append(p.results, res)
	return nil
}

func (s CertSpec) template(c Config) leafTemplate {
	t := leafTemplate{CommonName: s.CommonName(c), Organizations: s.Organizations, Usages: s.Usages}
	if s.SANs != nil {
		t.SANs = s.SANs(c)
	}
	return t
}

// staleLeaf says why a leaf signed by the right CA must be re-issued, or ""
// when it is fine.
func staleLeaf(pr pair, want leafTemplate, cfg Config, now time.Time) string {
	c := pr.cert
	if !keyMatches(c.PublicKey, pr.key) {
		return filepath.Base(pr.keyFile.Path) + " does not match the certificate"
	}
	if now.After(c.NotAfter) {
		return "expired on " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	if r := subjectDiff(c, want.CommonName, want.Organizations); r != "" {
		return r
	}
	if !slices.Equal(sortedUsages(c.ExtKeyUsage), sortedUsages(want.Usages)) {
		return fmt.Sprintf("usages are %s, want %s", usageNames(c.ExtKeyUsage), usageNames(want.Usages))
	}
	if d := sanDiff(c, want.SANs); d != "" {
		return "SANs changed: " + d
	}
	if alg := algorithmOf(c.PublicKey); alg != cfg.KeyAlgorithm {
		if alg == "" {
			alg = "another key type"
		}
		return fmt.Sprintf("key is %s, want %s", alg, cfg.KeyAlgorithm)
	}
	return ""
}

func subjectDiff(c *x509.Certificate, cn string, orgs []string) string {
	have := slices.Sorted(slices.Values(c.Subject.Organization))
	want := slices.Sorted(slices.Values(orgs))
	if c.Subject.CommonName == cn && slices.Equal(have, want) {
		return ""
	}
	return fmt.Sprintf("subject is %s, want %s", subject(c.Subject.CommonName, have), subject(cn, want))
}

func subject(cn string, orgs []string) string {
	s := "CN=" + cn
	for _, o := range orgs {
		s += ",O=" + o
	}
	return s
}

func sortedUsages(u []x509.ExtKeyUsage) []x509.ExtKeyUsage {
	return slices.Compact(slices.Sorted(slices.Values(u)))
}

func usageNames(us []x509.ExtKeyUsage) string {
	var names []string
	for _, u := range sortedUsages(us) {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			names = append(names, "server")
		case x509.ExtKeyUsageClientAuth:
			names = append(names, "client")
		default:
			names = append(names, fmt.Sprintf("usage-%d", u))
		}
	}
	return "[" + strings.Join(names, " ") + "]"
}

// sanDiff lists the SANs to add (+) and drop (-) to turn c's into want.
func sanDiff(c *x509.Certificate, want SANs) string {
	have := map[string]bool{}
	for _, n := range c.DNSNames {
		have["DNS:"+n] = true
	}
	for _, ip := range c.IPAddresses {
		have["IP:"+ipString(ip)] = true
	}
	var diff []string
	for _, n := range sanList(want) {
		if !have[n] {
			diff = append(diff, "+"+n)
		}
		delete(have, n)
	}
	for _, n := range slices.Sorted(maps.Keys(have)) {
		diff = append(diff, "-"+n)
	}
	return strings.Join(diff, " ")
}

func sanList(s SANs) []string {
	var out []string
	for _, n := range s.DNSNames {
		out = append(out, "DNS:"+n)
	}
	for _, ip := range s.IPs {
		out = append(out, "IP:"+ip.String())
	}
	return out
}

// ipString prints an address from a certificate the way netip prints
// the wanted ones, so IPv4 addresses compare equal in either encoding.
func ipString(ip net.IP) string {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ip.String()
	}
	return a.Unmap().String()
}

// keyPair keeps a bare key pair's private key (sa.key signs every
// service-account token, backup-signing.key every backup) and makes sure
// its public half is next to it.
func (p *planner) keyPair(spec KeyPairSpec) error {
	keyF, err := readFile(p.path(spec.KeyName))
	if err != nil {
		return err
	}
	pubF, err := readFile(p.path(spec.PubName))
	if err != nil {
		return err
	}
	res := Result{Name: spec.Name, Path: keyF.Path, Action: Kept}
	var key crypto.Signer
	if keyF.exists() {
		if key, err = ParseKey(keyF.Data); err != nil {
			return fmt.Errorf("parse %s: %w", keyF.Path, err)
		}
	}
	var pub crypto.PublicKey
	if pubF.exists() {
		if pub, err = ParsePublicKey(pubF.Data); err != nil {
			return fmt.Errorf("parse %s: %w", pubF.Path, err)
		}
	}
	switch {
	case !keyF.exists() && pubF.exists():
		return fmt.Errorf("%s exists without %s: put the key back, or remove %s to make a new pair", pubF.Path, keyF.Path, pubF.Path)
	case !keyF.exists():
		res.Action = Created
		if key, err = spec.newKey(p.cfg.KeyAlgorithm); err != nil {
			return err
		}
		data, err := EncodeKey(key)
		if err != nil {
			return err
		}
		p.writes = append(p.writes, write{keyF.Path, data, keyMode})
	case !pubF.exists():
		res.Path, res.Action, res.Reason = pubF.Path, Created, "from the existing "+filepath.Base(keyF.Path)
	case !keyMatches(pub, key):
		if !p.opts.Force {
			return fmt.Errorf("%s is not the public key of %s: %w", pubF.Path, keyF.Path, ErrNeedsForce)
		}
		res.Action, res.Reason = Replaced, filepath.Base(pubF.Path)+" was not the public key of "+filepath.Base(keyF.Path)
	}
	if res.Action == Kept {
		p.tighten(&res, keyF, pubF)
		p.results = append(p.results, res)
		return nil
	}
	data, err := EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	p.writes = append(p.writes, write{pubF.Path, data, certMode})
	p.results = append(p.results, res)
	return nil
}

// tighten plans a chmod for each kept file others can read: a key, a
// kubeconfig, or a certificate an older anvil wrote 0644.
func (p *planner) tighten(res *Result, files ...file) {
	var reasons []string
	for _, f := range files {
		if f.exists() && f.Mode&0o077 != 0 {
			p.chmods = append(p.chmods, write{path: f.Path, mode: keyMode})
			reasons = append(reasons, fmt.Sprintf("mode of %s tightened from %#o to %#o", filepath.Base(f.Path), f.Mode, keyMode))
		}
	}
	if len(reasons) > 0 {
		res.Reason = strings.Join(reasons, "; ")
	}
}

func (p *planner) writePair(certPath, keyPath string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	// The key goes first: a crash between the two leaves a key that does
	// not match its certificate, which the next run re-issues.
	p.writes = append(p.writes, write{keyPath, keyPEM, keyMode}, write{certPath, EncodeCert(cert), certMode})
	return nil
}

// apply writes what the plan decided.
func (p *planner) apply() ([]Result, error) {
	for _, w := range p.writes {
		if err := fsutil.WriteFile(w.path, w.data, w.mode, dirMode); err != nil {
			return nil, err
		}
	}
	for _, c := range p.chmods {
		if err := os.Chmod(c.path, c.mode); err != nil {
			return nil, pathError("chmod", c.path, err)
		}
	}
	return p.results, nil
}
