package pki

// File base names under the PKI directory, exactly as kubeadm names them, so
// tools and runbooks written for kubeadm clusters work on anvil's. A name
// without extension stands for the pair NAME.crt / NAME.key.
const (
	CACertAndKeyBaseName           = "ca"
	EtcdCACertAndKeyBaseName       = "etcd/ca"
	FrontProxyCACertAndKeyBaseName = "front-proxy-ca"

	APIServerCertAndKeyBaseName              = "apiserver"
	APIServerKubeletClientCertAndKeyBaseName = "apiserver-kubelet-client"
	APIServerEtcdClientCertAndKeyBaseName    = "apiserver-etcd-client"
	FrontProxyClientCertAndKeyBaseName       = "front-proxy-client"
	EtcdServerCertAndKeyBaseName             = "etcd/server"
	EtcdPeerCertAndKeyBaseName               = "etcd/peer"
	EtcdHealthcheckClientCertAndKeyBaseName  = "etcd/healthcheck-client"

	// The service-account signing key pair is a bare key pair, not a cert.
	ServiceAccountKeyName    = "sa.key"
	ServiceAccountPubKeyName = "sa.pub"

	// anvil's backup signing key pair (ed25519): every master holds the
	// private key and signs the backups it takes with it; readers check
	// backups against the public key (backup.signingPublicKey).
	BackupSigningKeyName    = "backup-signing.key"
	BackupSigningPubKeyName = "backup-signing.pub"
)

// Kubeconfig file names under /etc/kubernetes.
const (
	AdminKubeconfig             = "admin.conf"
	SuperAdminKubeconfig        = "super-admin.conf"
	ControllerManagerKubeconfig = "controller-manager.conf"
	SchedulerKubeconfig         = "scheduler.conf"
	// VIPKubeconfig is anvil's: the floating address's leader election.
	VIPKubeconfig = "anvil-vip.conf"
	// ApproverKubeconfig is anvil's CSR approver's.
	ApproverKubeconfig = "anvil-approver.conf"
)

// VIPUser is the identity of the VIP manager.
const VIPUser = "anvil:vip"

// ApproverUser is the identity of anvil's CSR approver (approver.User).
const ApproverUser = "system:anvil-approver"

// CertFile and KeyFile give the file names of a cert/key pair base name.
func CertFile(base string) string { return base + ".crt" }
func KeyFile(base string) string  { return base + ".key" }
