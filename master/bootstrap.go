package master

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// Names of the RBAC objects and groups anvil creates. The groups are the
// ones kubeadm uses, so tooling and runbooks written for kubeadm clusters
// (and admin.conf's group) mean the same thing here.
const (
	// NodeBootstrapGroup is the extra group of bootstrap tokens bound to no
	// node (kubeadm's): the controller-manager approves their CSRs for any
	// node name.
	NodeBootstrapGroup = "system:bootstrappers:kubeadm:default-node-token"
	// BootstrappersGroup is the group of every bootstrap token, bound to a
	// node or not: what a join does with its token is granted to it, as
	// RBAC cannot grant to every group that starts with a prefix.
	BootstrappersGroup = bootstrapapi.BootstrapDefaultGroup
	// ClusterAdminsGroup is admin.conf's group, bound to cluster-admin.
	ClusterAdminsGroup = "kubeadm:cluster-admins"
	// ConfigMapName holds the cluster file in kube-system, as
	// Cluster.Published leaves it: without the workstation's ssh settings.
	ConfigMapName = "anvil-config"
	// ConfigMapSigningKey is the backup signing public key's key in
	// ConfigMapName.
	ConfigMapSigningKey = "backupSigningPublicKey"
	// ConfigMapKey is the cluster file's key in ConfigMapName.
	ConfigMapKey = "cluster.yaml"
)

// BootstrapToken is what the bootstrap token Secret holds.
type BootstrapToken struct {
	ID, Secret string
	// TTL is the token's lifetime from now: more than zero and at most
	// MaxTokenTTL (CheckTokenTTL).
	TTL         time.Duration
	Description string
	// Node binds the token to the join of one node: its only extra group
	// is then approver.NodeBootstrapGroup(Node), and anvil's approver
	// approves a client certificate for that node alone, and only while no
	// Node of that name exists. Such a token is not in NodeBootstrapGroup,
	// whose CSRs the controller-manager approves for any node name; it may
	// still create CSRs and read what a join reads, all granted to
	// BootstrappersGroup.
	Node string
	// Groups are the extra groups a client authenticating with the token
	// gets, for a token bound to no node; NodeBootstrapGroup when empty.
	Groups []string
}

// check validates the token's lifetime and node, and returns its extra
// groups.
func (t BootstrapToken) check() ([]string, error) {
	if err := CheckTokenTTL(t.TTL); err != nil {
		return nil, err
	}
	if t.Node == "" {
		if len(t.Groups) == 0 {
			return []string{NodeBootstrapGroup}, nil
		}
		bound := slices.ContainsFunc(t.Groups, func(g string) bool { return strings.HasPrefix(g, approver.NodeBootstrapGroupPrefix) })
		if bound && slices.Contains(t.Groups, NodeBootstrapGroup) {
			return nil, fmt.Errorf("a token bound to a node must not also be in %s, whose CSRs the controller-manager approves for any node name", NodeBootstrapGroup)
		}
		return t.Groups, nil
	}
	if len(t.Groups) > 0 {
		return nil, fmt.Errorf("a token bound to node %s has no other groups (asked for %s)", t.Node, strings.Join(t.Groups, ", "))
	}
	g, err := approver.NodeBootstrapGroup(t.Node)
	if err != nil {
		return nil, fmt.Errorf("bind a token to a node: %w", err)
	}
	return []string{g}, nil
}

// BootstrapInput is what a fresh cluster's bootstrap objects are made from.
type BootstrapInput struct {
	// CACert is the cluster CA in PEM, published in cluster-info.
	CACert []byte
	// APIServerURL is the control-plane endpoint joining nodes use.
	APIServerURL string
	Token        BootstrapToken
	// Cluster is published in ConfigMapName (see PublishedClusterFile);
	// nil publishes none.
	Cluster *v1alpha1.Cluster
	// NodeConfig is the cluster's node settings, published for joining
	// nodes; nil publishes none.
	NodeConfig *node.ClusterConfig
	// Upstreams are this master's resolvers (node.Upstreams): with none,
	// cluster DNS answers the cluster's names only.
	Upstreams []string
	// BackupSigningKey is the key the masters sign backups with
	// (ed25519:…), published beside the cluster file in ConfigMapName.
	BackupSigningKey string
	Now              func() time.Time
}

// EnsureBootstrapObjects creates or updates, idempotently, what upstream
// expects of a cluster that nodes can join: RBAC so admin.conf's group is
// cluster-admin, so bootstrap tokens may create node CSRs (approved by the
// controller-manager for tokens bound to no node, by anvil's approver for
// tokens bound to one) and nodes may renew their own, so anonymous
// clients may read cluster-info; the cluster-info ConfigMap signed for the
// token; the token itself; anvil's own ConfigMap; and the node settings
// joining nodes read with their token. It must run with
// system:masters credentials (super-admin.conf), because the binding that
// makes admin.conf an administrator is among what it creates.
func EnsureBootstrapObjects(ctx context.Context, cs kubernetes.Interface, in BootstrapInput) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"RBAC for " + ClusterAdminsGroup, func() error { return ensureClusterAdmins(ctx, cs) }},
		{"RBAC for node bootstrap", func() error { return ensureNodeBootstrapRBAC(ctx, cs) }},
		{"RBAC for cluster-info", func() error { return ensureClusterInfoRBAC(ctx, cs) }},
		{"RBAC for the VIP manager", func() error { return ensureVIPRBAC(ctx, cs) }},
		{"RBAC for joining masters", func() error { return ensureClusterConfigRBAC(ctx, cs) }},
		{"RBAC for the apiserver's kubelet client", func() error { return ensureKubeletClientRBAC(ctx, cs) }},
		{"RBAC for the CSR approver", func() error { return ensureApproverRBAC(ctx, cs) }},
		{"RBAC for the pod network (nodes read every Node)", func() error { return ensurePodNetworkRBAC(ctx, cs) }},
		{"RBAC for kube-proxy (system:node-proxier for every node)", func() error { return ensureNodeProxierRBAC(ctx, cs) }},
		{"bootstrap token", func() error { return EnsureBootstrapToken(ctx, cs, in.Token, in.now()) }},
		{"cluster-info", func() error { return EnsureClusterInfo(ctx, cs, in.CACert, in.APIServerURL, in.now()) }},
		{ConfigMapName, func() error { return ensureAnvilConfigMap(ctx, cs, in.Cluster, in.BackupSigningKey) }},
		{node.ClusterConfigMap + " and who may read it", func() error {
			if in.NodeConfig == nil {
				return nil
			}
			return ensureNodeConfig(ctx, cs, *in.NodeConfig)
		}},
		{"cluster DNS (CoreDNS, the kube-dns Service)", func() error {
			if in.Cluster == nil {
				return nil
			}
			_, err := ApplyAddons(ctx, cs, in.Cluster, in.Upstreams, false)
			return err
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("bootstrap objects: %s: %w", s.what, err)
		}
	}
	return nil
}

func (in BootstrapInput) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

func ensureClusterAdmins(ctx context.Context, cs kubernetes.Interface) error {
	return applyClusterRoleBinding(ctx, cs, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ClusterAdminsGroup, Labels: ownedLabels()},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: ClusterAdminsGroup}},
	})
}

// ensureNodeBootstrapRBAC lets bootstrap tokens create node client CSRs,
// has the controller-manager's approver approve those of tokens bound to
// no node, and lets nodes have their own renewals approved — the three
// bindings kubeadm makes, but for the first: kubeadm lets only its default
// group create CSRs, anvil every bootstrap token, so that tokens bound to
// one node (not in that group, so that the controller-manager leaves their
// CSRs to anvil's approver) can too.
func ensureNodeBootstrapRBAC(ctx context.Context, cs kubernetes.Interface) error {
	bindings := []struct{ name, role, group string }{
		{"kubeadm:kubelet-bootstrap", "system:node-bootstrapper", BootstrappersGroup},
		{"kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", NodeBootstrapGroup},
		{"kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
	}
	for _, b := range bindings {
		err := applyClusterRoleBinding(ctx, cs, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: b.name, Labels: ownedLabels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: b.group}},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ensureClusterInfoRBAC lets anonymous clients read exactly one object,
// kube-public/cluster-info, which is how a joining node discovers the CA.
func ensureClusterInfoRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyNamespacedGrant(ctx, cs, metav1.NamespacePublic, "kubeadm:bootstrap-signer-clusterinfo",
		[]rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"},
			ResourceNames: []string{bootstrapapi.ConfigMapClusterInfo}, Verbs: []string{"get"},
		}},
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:anonymous"})
}

// applyNamespacedGrant makes (or updates) a Role with rules and a
// RoleBinding of the same name that grants it to subject.
func applyNamespacedGrant(ctx context.Context, cs kubernetes.Interface, ns, name string, rules []rbacv1.PolicyRule, subject rbacv1.Subject) error {
	roles := cs.RbacV1().Roles(ns)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: ownedLabels()}, Rules: rules}
	if cur, err := roles.Get(ctx, name, metav1.GetOptions{}); err == nil {
		cur.Rules = rules
		if _, err := roles.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	} else if _, err := roles.Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	bindings := cs.RbacV1().RoleBindings(ns)
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: ownedLabels()},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	}
	if cur, err := bindings.Get(ctx, name, metav1.GetOptions{}); err == nil {
		cur.Subjects = binding.Subjects
		_, err := bindings.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	_, err := bindings.Create(ctx, binding, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// ensureClusterConfigRBAC lets bootstrap tokens, bound to a node or not,
// read the anvil ConfigMap (the cluster file, which holds no secrets), so
// a joining master learns the cluster's settings from the cluster itself.
func ensureClusterConfigRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyNamespacedGrant(ctx, cs, metav1.NamespaceSystem, "anvil:read-cluster-config",
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{ConfigMapName}, Verbs: []string{"get"}}},
		rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: BootstrappersGroup})
}

// ensureVIPRBAC lets the VIP manager's identity hold its one Lease.
func ensureVIPRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyNamespacedGrant(ctx, cs, metav1.NamespaceSystem, "anvil:vip",
		[]rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{VIPLease}, Verbs: []string{"get", "update"}},
			// create cannot be limited by name: RBAC sees no name yet.
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		},
		rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pki.VIPUser})
}

// ensureKubeletClientRBAC gives the apiserver's kubelet client certificate
// (no organization, as kubeadm issues it) the rights it needs on kubelets,
// by its common name, as kubeadm does.
func ensureKubeletClientRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyClusterRoleBinding(ctx, cs, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kubeadm:apiserver-kubelet-client", Labels: ownedLabels()},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pki.APIServerKubeletClientCN}},
	})
}

func applyClusterRoleBinding(ctx context.Context, cs kubernetes.Interface, b *rbacv1.ClusterRoleBinding) error {
	c := cs.RbacV1().ClusterRoleBindings()
	cur, err := c.Get(ctx, b.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, b, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	case err != nil:
		return err
	}
	if cur.RoleRef != b.RoleRef {
		// The role reference of a binding is immutable.
		if err := c.Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		_, err = c.Create(ctx, b, metav1.CreateOptions{})
		return err
	}
	cur.Subjects = b.Subjects
	_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// EnsureBootstrapToken stores a bootstrap token as the Secret the apiserver's
// bootstrap authenticator and the controller-manager's token cleaner read.
func EnsureBootstrapToken(ctx context.Context, cs kubernetes.Interface, t BootstrapToken, now time.Time) error {
	groups, err := t.check()
	if err != nil {
		return err
	}
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:               []byte(t.ID),
		bootstrapapi.BootstrapTokenSecretKey:           []byte(t.Secret),
		bootstrapapi.BootstrapTokenUsageSigningKey:     []byte("true"),
		bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
		bootstrapapi.BootstrapTokenExtraGroupsKey:      []byte(strings.Join(groups, ",")),
		bootstrapapi.BootstrapTokenExpirationKey:       []byte(now.Add(t.TTL).UTC().Format(time.RFC3339)),
	}
	if t.Description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = []byte(t.Description)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      bootstrapapi.BootstrapTokenSecretPrefix + t.ID,
			Namespace: metav1.NamespaceSystem,
			Labels:    ownedLabels(),
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	cur, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	cur.Data, cur.Type = s.Data, s.Type
	_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// EnsureClusterInfo publishes the CA and endpoint in kube-public/cluster-info
// and signs it for every live bootstrap token, so a joining node can check
// both the content (JWS with its token) and the CA (its pinned hash) before
// it trusts the cluster. The controller-manager's bootstrapsigner keeps the
// signatures current afterwards; signing here makes a join work at once.
// Tokens count as live by now, the same clock that gave them their expiry.
func EnsureClusterInfo(ctx context.Context, cs kubernetes.Interface, caPEM []byte, server string, now time.Time) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	content, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	return signClusterInfo(ctx, cs, string(content), now)
}

// ResignClusterInfo re-signs cluster-info for the live tokens, after a
// token was created or deleted; tokens expired at now are left out.
func ResignClusterInfo(ctx context.Context, cs kubernetes.Interface, now time.Time) error {
	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read cluster-info: %w", err)
	}
	return signClusterInfo(ctx, cs, cm.Data[bootstrapapi.KubeConfigKey], now)
}

func signClusterInfo(ctx context.Context, cs kubernetes.Interface, content string, now time.Time) error {
	tokens, err := liveTokens(ctx, cs, now)
	if err != nil {
		return err
	}
	data := map[string]string{bootstrapapi.KubeConfigKey: content}
	for id, secret := range tokens {
		sig, err := jws.ComputeDetachedSignature(content, id, secret)
		if err != nil {
			return fmt.Errorf("sign cluster-info for token %s: %w", id, err)
		}
		data[bootstrapapi.JWSSignatureKeyPrefix+id] = sig
	}
	cms := cs.CoreV1().ConfigMaps(metav1.NamespacePublic)
	// The controller-manager's bootstrapsigner rewrites cluster-info when
	// tokens change, so an update may lose a race with it (it reacts to the
	// token just made, at once and more than once): try again, backing off
	// for up to about five seconds.
	backoff := wait.Backoff{Steps: 9, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.2}
	return retry.RetryOnConflict(backoff, func() error {
		cur, err := cms.Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic, Labels: ownedLabels()},
				Data:       data,
			}, metav1.CreateOptions{})
			return err
		case err != nil:
			return err
		}
		cur.Data = data
		_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// liveTokens returns the id → secret of every signing token not expired at now.
func liveTokens(ctx context.Context, cs kubernetes.Interface, now time.Time) (map[string]string, error) {
	list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken),
	})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range list.Items {
		if string(s.Data[bootstrapapi.BootstrapTokenUsageSigningKey]) != "true" {
			continue
		}
		if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
			if t, err := time.Parse(time.RFC3339, exp); err == nil && now.After(t) {
				continue
			}
		}
		out[string(s.Data[bootstrapapi.BootstrapTokenIDKey])] = string(s.Data[bootstrapapi.BootstrapTokenSecretKey])
	}
	return out, nil
}

// PublishedClusterFile is c as ConfigMapName holds it: Cluster.Published
// as YAML, so that no reader of the ConfigMap learns how the workstation
// logs in to the machines.
func PublishedClusterFile(c *v1alpha1.Cluster) ([]byte, error) {
	return yaml.Marshal(c.Published())
}

func ensureAnvilConfigMap(ctx context.Context, cs kubernetes.Interface, c *v1alpha1.Cluster, signingKey string) error {
	if c == nil {
		return nil
	}
	clusterFile, err := PublishedClusterFile(c)
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem)
	data := map[string]string{ConfigMapKey: string(clusterFile)}
	if signingKey != "" {
		data[ConfigMapSigningKey] = signingKey
	}
	cur, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: metav1.NamespaceSystem, Labels: ownedLabels()},
			Data:       data,
		}, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	cur.Data = data
	_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// ownedLabels marks objects anvil created, so reset and upgrades touch only
// those.
func ownedLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "anvil"}
}
