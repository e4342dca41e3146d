package master

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// CertsSecretName holds the shared control-plane secrets, encrypted, for
// masters that join within the hour after they were uploaded.
const CertsSecretName = "anvil-certs"

// CertsTTL is how long uploaded certificates stay in the cluster: the
// Secret is owned by a bootstrap token of this lifetime, so the
// controller-manager's token cleaner and garbage collector delete both.
const CertsTTL = time.Hour

// CertificateKey encrypts the uploaded secrets (AES-256-GCM). It is never
// stored in the cluster: the operator passes it to the joining master.
type CertificateKey [32]byte

// NewCertificateKey makes a random key.
func NewCertificateKey() (CertificateKey, error) {
	var k CertificateKey
	_, err := rand.Read(k[:])
	return k, err
}

// ParseCertificateKey reads the 64 hex digits `init phase upload-certs`
// printed.
func ParseCertificateKey(s string) (CertificateKey, error) {
	var k CertificateKey
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, errors.New("a certificate key is 64 hexadecimal digits (32 bytes), as anvil init phase upload-certs prints it")
	}
	copy(k[:], b)
	return k, nil
}

// Reveal is the key as the operator passes it on; String hides it.
func (k CertificateKey) Reveal() string { return hex.EncodeToString(k[:]) }
func (k CertificateKey) String() string { return "<certificate key>" }

// sharedFiles are what every master must share: the three CAs with their
// keys, the service-account key pair, and the encryption-at-rest config
// (without it a new master could not read existing Secrets).
func sharedFiles() []string {
	out := []string{}
	for _, f := range pki.SharedFiles() {
		out = append(out, filepath.Join(hostfs.PKIDir, f))
	}
	return append(out, EncryptionConfigFile)
}

// secretKey is the Secret data key of a host path.
func secretKey(hostPath string) string {
	return strings.NewReplacer("/", ".").Replace(strings.TrimPrefix(hostPath, "/"))
}

// UploadCerts encrypts the shared files under root with key and stores them
// in kube-system/anvil-certs for CertsTTL, readable by bootstrap tokens (the
// joining master still needs the key). Uploading again replaces them.
func UploadCerts(ctx context.Context, cs kubernetes.Interface, root hostfs.Root, key CertificateKey, now time.Time) error {
	return uploadFiles(ctx, cs, root, key, now, CertsSecretName, sharedFiles())
}

// uploadFiles seals files under root with key into the Secret name.
func uploadFiles(ctx context.Context, cs kubernetes.Interface, root hostfs.Root, key CertificateKey, now time.Time, name string, files []string) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	data := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(root.Path(f))
		if err != nil {
			return fmt.Errorf("upload certs: %w", err)
		}
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		k := secretKey(f)
		// The key name is authenticated too, so no file can be swapped for
		// another's ciphertext.
		data[k] = aead.Seal(nonce, nonce, b, []byte(k))
	}
	owner, err := ownerToken(ctx, cs, now)
	if err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: metav1.NamespaceSystem, Labels: ownedLabels(),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Secret", Name: owner.Name, UID: owner.UID}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	if err := secrets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("upload certs: %w", err)
	}
	return ensureCertsRBAC(ctx, cs)
}

// ownerToken is a bootstrap token that can do nothing but expire: the
// uploaded Secret is its dependant, so both are gone after CertsTTL.
func ownerToken(ctx context.Context, cs kubernetes.Interface, now time.Time) (*corev1.Secret, error) {
	t, err := pki.GenerateToken()
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.BootstrapTokenSecretPrefix + t.ID(), Namespace: metav1.NamespaceSystem, Labels: ownedLabels()},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:          []byte(t.ID()),
			bootstrapapi.BootstrapTokenSecretKey:      []byte(t.Secret()),
			bootstrapapi.BootstrapTokenExpirationKey:  []byte(now.Add(CertsTTL).UTC().Format(time.RFC3339)),
			bootstrapapi.BootstrapTokenDescriptionKey: []byte("owns the uploaded control-plane certificates; no usages"),
		},
	}
	return cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{})
}

// ensureCertsRBAC lets bootstrap tokens, bound to a node or not, read
// exactly the certs Secret (as kubeadm lets its join tokens read
// kubeadm-certs); its content is sealed with the certificate key, which
// only a joining master is given.
func ensureCertsRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyNamespacedGrant(ctx, cs, metav1.NamespaceSystem, "anvil:certs",
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{CertsSecretName}, Verbs: []string{"get"}}},
		rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: BootstrappersGroup})
}

// ErrCertsExpired means the uploaded certificates are gone: they live for
// CertsTTL only.
var ErrCertsExpired = errors.New("the uploaded control-plane certificates are gone (they expire after an hour): run 'anvil init phase upload-certs' on a master and use the new key")

// ErrWrongCertificateKey means the key does not decrypt the upload.
var ErrWrongCertificateKey = errors.New("the certificate key does not decrypt the uploaded certificates: use the key the last upload-certs printed")

// DownloadCerts fetches and decrypts the shared files and writes them under
// root, all 0600 (certificates too: CIS 1.1.20). It refuses to replace a different
// CA already on disk unless force.
func DownloadCerts(ctx context.Context, cs kubernetes.Interface, root hostfs.Root, key CertificateKey, force bool) error {
	plain, err := downloadFiles(ctx, cs, key, CertsSecretName, sharedFiles())
	if err != nil {
		return err
	}
	// Check before writing anything: a machine holding another cluster's
	// CA must not silently switch.
	for f, b := range plain {
		cur, err := os.ReadFile(root.Path(f))
		if err == nil && string(cur) != string(b) && !force && strings.HasSuffix(f, ".crt") {
			return fmt.Errorf("%s holds a different CA than the cluster's; this machine belonged to another cluster (anvil reset it, or pass --force)", root.Path(f))
		}
	}
	return writeFiles(root, plain)
}

// writeFiles writes downloaded files under root, certificates 0600 like
// the keys, as package pki writes them.
func writeFiles(root hostfs.Root, plain map[string][]byte) error {
	for f, b := range plain {
		if _, err := fsutil.EnsureFile(root.Path(f), b, 0o600, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// downloadFiles fetches the Secret name and opens each of files with key.
func downloadFiles(ctx context.Context, cs kubernetes.Interface, key CertificateKey, name string, files []string) (map[string][]byte, error) {
	s, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, ErrCertsExpired
	}
	if err != nil {
		return nil, fmt.Errorf("download certs: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	plain := map[string][]byte{}
	for _, f := range files {
		k := secretKey(f)
		box := s.Data[k]
		if len(box) < aead.NonceSize() {
			return nil, fmt.Errorf("download certs: %s is missing from the upload", k)
		}
		b, err := aead.Open(nil, box[:aead.NonceSize()], box[aead.NonceSize():], []byte(k))
		if err != nil {
			return nil, ErrWrongCertificateKey
		}
		plain[f] = b
	}
	return plain, nil
}

func newAEAD(key CertificateKey) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
