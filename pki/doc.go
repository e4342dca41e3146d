// Package pki owns a control-plane node's certificates and credentials: the
// three CAs, the leaf certificates the components serve and connect with,
// the service-account key pair, the component kubeconfigs, the CA pin
// (`sha256:<hex>` of the CA's public key) that joining nodes check, and
// bootstrap tokens.
//
// The layout and names are kubeadm's, so tools and runbooks written for
// kubeadm clusters work on anvil's. What is made is declared as data: CAs,
// Certificates and Kubeconfigs return literal lists a reader can check
// against kubeadm's, and one engine (Ensure) gathers what is on disk,
// decides per file, and only then writes.
//
// Ensure is idempotent: a file that is still right is kept byte for byte; a
// leaf that no longer matches the Config (SANs, subject, usages, key type),
// has expired or lost its key is re-issued from the same CA; a CA and the
// service-account key are never replaced while they are usable. Anything
// that suggests the directory belongs to another cluster — leaves signed by
// a different CA, a CA whose key does not match, a kubeconfig pointing
// elsewhere — is refused unless Options.Force is set. Every file is read,
// parsed and judged, and every new key and certificate made in memory,
// before the first write, so bad input leaves the directory as it was.
//
// The package does no networking.
package pki
