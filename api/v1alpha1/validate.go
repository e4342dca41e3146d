package v1alpha1

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
	"k8s.io/apimachinery/pkg/api/validate/content"
)

// Limits other programs impose, checked here so that an operator hears about
// them from `anvil config validate` rather than from a component that
// refuses to start halfway through an apply.
const (
	// kube-apiserver refuses a service range with more than 2^20 addresses.
	maxServiceBitsV4 = 12
	maxServiceBitsV6 = 108
	// etcd refuses an election timeout under 5 heartbeats or over 50s.
	minElectionHeartbeats = 5
	maxElectionTimeout    = 50 * time.Second
	// etcd's documentation suggests 8 GiB as the largest backend quota.
	maxSuggestedQuota = 8 << 30
)

// Validate checks a defaulted cluster (see Default) against every rule and
// reports all problems at once. Warnings never make err non-nil; err, when
// non-nil, is FieldErrors. For a cluster that came from Decode, each problem
// carries the file and line of its field, or of the nearest enclosing one
// when the field was left out.
func Validate(c *Cluster) (warnings FieldErrors, err error) {
	warnings, errs := validate(c)
	return warnings, errs.err()
}

// validate is Validate with the errors as a list, for Load to add the
// decode problems to. Fields the decoder rejected are not checked again.
func validate(c *Cluster) (warnings, errs FieldErrors) {
	v := &validator{src: c.src}
	v.document(c)
	addrs := v.hosts(c)
	v.controlPlane(c, addrs)
	v.networking(c, addrs)
	v.etcd(c.Etcd)
	v.pki(c.PKI)
	v.backup(c.Backup)
	v.components(c.Components)
	v.errs.sortByPosition()
	v.warns.sortByPosition()
	if len(v.warns) == 0 {
		v.warns = nil
	}
	return v.warns, v.errs
}

type validator struct {
	src   *source
	errs  FieldErrors
	warns FieldErrors
}

// errorf records a problem with path, unless the decoder already reported
// that field (see source.rejected).
func (v *validator) errorf(path string, reason Reason, format string, args ...any) {
	if v.src.isRejected(path) {
		return
	}
	e := &FieldError{Path: path, Reason: reason, Message: fmt.Sprintf(format, args...)}
	v.src.locate(e)
	v.errs = append(v.errs, e)
}

// decoded is false for a path the decoder rejected, where a default now
// stands in for a value the file had. Rules that compare fields skip such a
// field: comparing with a default the operator never wrote would report a
// problem that is not in the file.
func (v *validator) decoded(path string) bool { return !v.src.isRejected(path) }

func (v *validator) warnf(path string, format string, args ...any) {
	if v.src.isRejected(path) {
		return
	}
	e := &FieldError{Path: path, Reason: ReasonInvalid, Message: fmt.Sprintf(format, args...)}
	v.src.locate(e)
	v.warns = append(v.warns, e)
}

func (v *validator) document(c *Cluster) {
	switch c.APIVersion {
	case APIVersion:
	case "":
		v.errorf("apiVersion", ReasonRequired, "required: set it to %q", APIVersion)
	default:
		v.errorf("apiVersion", ReasonNotSupported, "%q is not supported: use %q", c.APIVersion, APIVersion)
	}
	switch c.Kind {
	case KindCluster:
	case "":
		v.errorf("kind", ReasonRequired, "required: set it to %q", KindCluster)
	default:
		v.errorf("kind", ReasonNotSupported, "%q is not supported: use %q", c.Kind, KindCluster)
	}
	switch {
	case c.Name == "":
		v.errorf("name", ReasonRequired, "required: a DNS label like %q", "prod-eu1")
	case len(content.IsDNS1123Label(c.Name)) > 0:
		v.errorf("name", ReasonInvalid, "%q is not a DNS label: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.Name)
	}
	switch {
	case c.KubernetesVersion == "":
		v.errorf("kubernetesVersion", ReasonRequired, "required, like %q", DefaultKubernetesVersion)
	case !isVersion(c.KubernetesVersion):
		v.errorf("kubernetesVersion", ReasonInvalid, "%q is not a version: write vMAJOR.MINOR.PATCH, like %q", c.KubernetesVersion, DefaultKubernetesVersion)
	}
}

// isVersion accepts vMAJOR.MINOR.PATCH without leading zeros.
func isVersion(s string) bool {
	rest, ok := strings.CutPrefix(s, "v")
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// addrProblem says why a cannot be a machine's address, or "".
func addrProblem(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return "has a zone: use an address that is not link-local"
	case a.IsUnspecified():
		return "is the unspecified address"
	case a.IsMulticast():
		return "is a multicast address"
	}
	return ""
}

func (v *validator) etcd(e Etcd) {
	hb := v.millis("etcd.heartbeatInterval", e.HeartbeatInterval)
	el := v.millis("etcd.electionTimeout", e.ElectionTimeout)
	if hb && el {
		switch {
		case e.ElectionTimeout.Duration < minElectionHeartbeats*e.HeartbeatInterval.Duration:
			v.errorf("etcd.electionTimeout", ReasonInvalid, "%s is less than %d × heartbeatInterval (%s), which etcd refuses: use at least %s",
				e.ElectionTimeout, minElectionHeartbeats, e.HeartbeatInterval, minElectionHeartbeats*e.HeartbeatInterval.Duration)
		case e.ElectionTimeout.Duration > maxElectionTimeout:
			v.errorf("etcd.electionTimeout", ReasonInvalid, "%s is longer than %s, which etcd refuses", e.ElectionTimeout, maxElectionTimeout)
		}
	}
	switch {
	case e.QuotaBackendBytes <= 0:
		v.errorf("etcd.quotaBackendBytes", ReasonInvalid, "%s is not a size etcd can use: give a positive size like 2Gi", e.QuotaBackendBytes)
	case e.QuotaBackendBytes > maxSuggestedQuota:
		v.warnf("etcd.quotaBackendBytes", "%s is above 8Gi, the largest quota etcd's documentation suggests; a bigger database makes snapshots, defragmentation and restores slow", e.QuotaBackendBytes)
	}
}

// millis checks a raft timing, which etcd takes in whole milliseconds.
func (v *validator) millis(path string, d Duration) bool {
	switch {
	case !v.decoded(path):
	case d.Duration <= 0:
		v.errorf(path, ReasonInvalid, "%s is not positive", d)
	case d.Duration%time.Millisecond != 0:
		v.errorf(path, ReasonInvalid, "%s is not a whole number of milliseconds, which etcd counts in", d)
	default:
		return true
	}
	return false
}

func (v *validator) pki(p PKI) {
	switch {
	case p.KeyAlgorithm == "":
		v.errorf("pki.keyAlgorithm", ReasonRequired, "required: one of %s", list(KeyAlgorithms()))
	case !slices.Contains(KeyAlgorithms(), p.KeyAlgorithm):
		v.errorf("pki.keyAlgorithm", ReasonNotSupported, "%q is not a key algorithm: use one of %s", p.KeyAlgorithm, list(KeyAlgorithms()))
	}
	ca := v.positive("pki.caValidity", p.CAValidity)
	cert := v.positive("pki.certValidity", p.CertValidity)
	if ca && cert && p.CertValidity.Duration > p.CAValidity.Duration {
		v.errorf("pki.certValidity", ReasonInvalid, "%s is longer than caValidity (%s): a certificate cannot outlive its CA", p.CertValidity, p.CAValidity)
	}
	for i, san := range p.CertSANs {
		problem := ""
		if name, wildcard := strings.CutPrefix(san, "*."); wildcard {
			if reason := dnsNameProblem(strings.ToLower(name)); reason != "" {
				problem = "is not a wildcard DNS name: " + reason
			}
		} else {
			problem = addressOrNameProblem(san)
		}
		if problem != "" {
			v.errorf(indexPath("pki.certSANs", i), ReasonInvalid, "%q %s", san, problem)
		}
	}
}

func (v *validator) positive(path string, d Duration) bool {
	if !v.decoded(path) {
		return false
	}
	if d.Duration <= 0 {
		v.errorf(path, ReasonInvalid, "%s is not positive", d)
		return false
	}
	return true
}

func (v *validator) backup(b Backup) {
	switch {
	case b.Retain < 0:
		v.errorf("backup.retain", ReasonInvalid, "%d is negative: give how many backups to keep", b.Retain)
	case b.Schedule != "" && b.Retain < 1:
		v.errorf("backup.retain", ReasonInvalid, "0 with a schedule would prune every backup as soon as it is taken: keep at least 1")
	}
	if hasControl(b.Schedule) {
		v.errorf("backup.schedule", ReasonInvalid, "%q contains a newline or control character", b.Schedule)
	}
	switch {
	case b.Dir == "":
		v.errorf("backup.dir", ReasonRequired, "required, like %q", DefaultBackupDir)
	case !path.IsAbs(b.Dir) || hasControl(b.Dir):
		v.errorf("backup.dir", ReasonInvalid, "%q is not an absolute path on the masters", b.Dir)
	}
	for i, r := range b.Recipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			v.errorf(indexPath("backup.recipients", i), ReasonInvalid, "%q is not an age X25519 recipient (age1…, as age-keygen prints): %v", r, err)
		}
	}
	if b.SigningPublicKey != "" {
		if _, err := envelope.ParseSigningKey(b.SigningPublicKey); err != nil {
			v.errorf("backup.signingPublicKey", ReasonInvalid, "%v", err)
		}
	}
}

func (v *validator) components(c Components) {
	for _, comp := range []struct {
		key string
		c   Component
	}{
		{keyAPIServer, c.APIServer},
		{keyControllerManager, c.ControllerManager},
		{keyScheduler, c.Scheduler},
	} {
		at := fieldPath("components", comp.key)
		args := comp.c.ExtraArgs
		for _, flag := range slices.Sorted(maps.Keys(args)) {
			p := keyPath(fieldPath(at, "extraArgs"), flag)
			switch {
			case strings.HasPrefix(flag, "-"):
				v.errorf(p, ReasonInvalid, "write the flag name without the leading dashes: %q", strings.TrimLeft(flag, "-"))
			case !isFlagName(flag):
				v.errorf(p, ReasonInvalid, "%q is not a flag name: use lowercase letters, digits and '-'", flag)
			}
			// Arguments end up in unit files and manifests, where a newline
			// would start a new directive.
			if hasControl(args[flag]) {
				v.errorf(p, ReasonInvalid, "the value contains a newline or control character")
			}
		}
		v.insecure(at, comp.key, comp.c)
	}
}

// isFlagName accepts [a-z0-9][a-z0-9-]*, the shape of every Kubernetes
// component flag.
func isFlagName(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// dnsNameProblem says why s is not a lowercase DNS name, or "".
func dnsNameProblem(s string) string {
	if len(s) > content.DNS1123SubdomainMaxLength {
		return "longer than " + strconv.Itoa(content.DNS1123SubdomainMaxLength) + " characters"
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) > content.DNS1123LabelMaxLength {
			return fmt.Sprintf("the part %q is longer than %d characters", label, content.DNS1123LabelMaxLength)
		}
	}
	if len(content.IsDNS1123Subdomain(s)) > 0 {
		return "use lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	}
	return ""
}

// addressOrNameProblem says why s is neither an IP address nor a DNS name
// (in any case, as DNS ignores it), or "". The two common slips, a port or
// a URL, get their own advice.
func addressOrNameProblem(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if problem := addrProblem(a); problem != "" {
			return problem
		}
		return ""
	}
	if strings.Contains(s, "://") {
		return "is a URL: write only the address or DNS name"
	}
	if _, port, err := net.SplitHostPort(s); err == nil && port != "" {
		return "has a port: write the port in its own field"
	}
	if problem := dnsNameProblem(strings.ToLower(s)); problem != "" {
		return "is not an IP address or DNS name: " + problem
	}
	return ""
}

func list[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}
