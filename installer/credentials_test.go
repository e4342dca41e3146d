package installer

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/master"
)

func tokenSecret(id string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.BootstrapTokenSecretPrefix + id, Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:           []byte(id),
			bootstrapapi.BootstrapTokenSecretKey:       []byte("0123456789abcdef"),
			bootstrapapi.BootstrapTokenUsageSigningKey: []byte("true"),
		},
	}
}

// The credentials phase deletes exactly what the run made: its tokens, the
// sealed certificates and the token that owns them, and no signature of a
// deleted token is left in cluster-info. The operator's own token stays.
func TestDeleteCredentialsDeletesWhatTheRunMade(t *testing.T) {
	certs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: master.CertsSecretName, Namespace: metav1.NamespaceSystem,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Secret", Name: bootstrapapi.BootstrapTokenSecretPrefix + "owner1"}}}}
	info := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
		Data: map[string]string{bootstrapapi.KubeConfigKey: "apiVersion: v1\nkind: Config\n", bootstrapapi.JWSSignatureKeyPrefix + "init00": "sig", bootstrapapi.JWSSignatureKeyPrefix + "mine00": "sig"}}
	cs := fake.NewClientset(tokenSecret("init00"), tokenSecret("work00"), tokenSecret("owner1"), tokenSecret("mine00"), certs, info)

	r, out := newTestRun(t, "m1", "w1")
	r.primary = r.hosts[0]
	r.acc = &clusterAccess{client: cs}
	r.apply = &applyState{}
	r.apply.made.addToken("init00")
	r.apply.made.addToken("work00")
	r.apply.made.addToken("work00") // made once, recorded twice
	r.apply.made.uploadedCerts()

	res, err := r.deleteCredentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, s := range list.Items {
		left = append(left, s.Name)
	}
	if strings.Join(left, ",") != bootstrapapi.BootstrapTokenSecretPrefix+"mine00" {
		t.Errorf("left %v, want only the operator's token", left)
	}
	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range cm.Data {
		if strings.HasPrefix(k, bootstrapapi.JWSSignatureKeyPrefix) && k != bootstrapapi.JWSSignatureKeyPrefix+"mine00" {
			t.Errorf("cluster-info still signed for %s", k)
		}
	}
	if got := strings.Join(r.apply.made.deleted(), ","); got != "init00,work00,owner1" {
		t.Errorf("deleted %s", got)
	}
	if !strings.Contains(res, "3 join tokens") || !strings.Contains(res, "uploaded certificates") {
		t.Errorf("result %q", res)
	}
	if strings.Contains(out.String(), "0123456789abcdef") {
		t.Error("a token secret reached the progress output")
	}

	// A second time, with everything gone already, is no error.
	if _, err := r.deleteCredentials(ctx); err != nil {
		t.Errorf("again: %v", err)
	}
}

// The phase is a change only when a phase before it made credentials.
func TestPlanCredentials(t *testing.T) {
	r, _ := newTestRun(t, "m1", "w1")
	r.primary = r.hosts[0]
	r.apply = &applyState{}
	r.planned = []PlannedStep{{Host: "w1", Phase: "join-workers", Do: "nothing to do: already a node"}}
	if pl := planCredentials(r); len(pl.steps) != 1 || pl.steps[0].run != nil {
		t.Errorf("nothing joined, yet: %+v", pl.steps)
	}
	r.planned = append(r.planned, PlannedStep{Host: "w2", Phase: "join-workers", Do: "anvil join", Change: true})
	if pl := planCredentials(r); len(pl.steps) != 1 || pl.steps[0].run == nil || pl.steps[0].host != r.primary {
		t.Errorf("a join planned, yet: %+v", pl.steps)
	}
}

// What anvil init and anvil init phase upload-certs print (cmd/anvil),
// and the secrets apply reads from it.
func TestFindTokenAndKey(t *testing.T) {
	const tok, key, hash = "abcdef.0123456789abcdef", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "sha256:" + "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	initOut := "\nThe control plane is ready: https://10.0.0.1:6443 (layout systemd, ready 9.1s after start).\n\n" +
		"Join a worker: on it, run (the token goes on stdin, so it never shows in the process list)\n" +
		"  echo '" + tok + "' | anvil join https://10.0.0.1:6443 --token-file - --ca-cert-hash " + hash + "\n"
	uploadOut := "Join another master within the hour: on it, run\n" +
		"  printf '%s\\n%s\\n' '" + tok + "' '" + key + "' | anvil join https://10.0.0.1:6443 --control-plane --token-file - --certificate-key-file - --ca-cert-hash " + hash + "\n"
	for name, out := range map[string]string{"init": initOut, "upload-certs": uploadOut} {
		if got, ok := findToken(out); !ok || got.Reveal() != tok {
			t.Errorf("%s: token %v, %v", name, got, ok)
		}
	}
	if m := certificateKeyRE.FindStringSubmatch(uploadOut); m == nil || m[2] != key {
		t.Errorf("certificate key %v", m)
	}
	if _, ok := findToken("no token here: x.y, abcdefg.0123456789abcdef, " + hash); ok {
		t.Error("found a token where there is none")
	}
}
