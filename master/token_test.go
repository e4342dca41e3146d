package master

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

func clusterInfoClient() *fake.Clientset {
	return fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
		Data:       map[string]string{bootstrapapi.KubeConfigKey: "apiVersion: v1\nkind: Config\n"},
	})
}

// Every token CreateToken makes expires within MaxTokenTTL; a token bound
// to a node has that node's group alone, never kubeadm's default group
// (whose CSRs the controller-manager approves for any node name); a name
// that is no node name is refused, and named.
func TestCreateToken(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		o          TokenOptions
		wantGroups string
		wantErr    string
	}{
		{name: "bound to a node", o: TokenOptions{TTL: time.Hour, Node: "w1"}, wantGroups: "system:bootstrappers:anvil:node:w1"},
		{name: "bound to a node with dots", o: TokenOptions{TTL: time.Hour, Node: "w1.rack4.example.com"}, wantGroups: "system:bootstrappers:anvil:node:w1:rack4:example:com"},
		{name: "bound to no node", o: TokenOptions{TTL: time.Hour}, wantGroups: NodeBootstrapGroup},
		{name: "the longest TTL", o: TokenOptions{TTL: MaxTokenTTL, Node: "w1"}, wantGroups: "system:bootstrappers:anvil:node:w1"},
		{name: "a TTL of 0 (never expires)", o: TokenOptions{TTL: 0, Node: "w1"}, wantErr: "must expire"},
		{name: "a negative TTL", o: TokenOptions{TTL: -time.Second}, wantErr: "must expire"},
		{name: "a TTL above the cap", o: TokenOptions{TTL: MaxTokenTTL + time.Second, Node: "w1"}, wantErr: "at most 24h0m0s, not 24h0m1s"},
		{name: "a year", o: TokenOptions{TTL: 365 * 24 * time.Hour}, wantErr: "at most 24h0m0s"},
		{name: "a node name with capitals", o: TokenOptions{TTL: time.Hour, Node: "W1"}, wantErr: `node name "W1"`},
		{name: "a node name with a colon", o: TokenOptions{TTL: time.Hour, Node: "w1:x"}, wantErr: `node name "w1:x"`},
		{name: "a node name too long for a group", o: TokenOptions{TTL: time.Hour, Node: strings.Repeat("a.", 123) + "a"}, wantErr: "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cs := clusterInfoClient()
			tok, err := CreateToken(ctx, cs, tc.o, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tc.wantErr)
				}
				if list, _ := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{}); len(list.Items) > 0 {
					t.Errorf("a refused token was stored: %s", list.Items[0].Name)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstrapapi.BootstrapTokenSecretPrefix+tok.ID(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); got != tc.wantGroups {
				t.Errorf("groups %q, want %q", got, tc.wantGroups)
			}
			if got, want := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]), now.Add(tc.o.TTL).Format(time.RFC3339); got != want {
				t.Errorf("expires %q, want %q", got, want)
			}
			infos, err := ListTokens(ctx, cs, now)
			if err != nil || len(infos) != 1 || infos[0].Node != tc.o.Node {
				t.Errorf("listed %+v (%v), want one token bound to %q", infos, err, tc.o.Node)
			}
		})
	}
}

// EnsureBootstrapToken holds the same rules for callers that give the
// token themselves (init, tests): a lifetime, and never a node's binding
// beside kubeadm's default group.
func TestEnsureBootstrapTokenRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		t       BootstrapToken
		wantErr string
	}{
		{"no TTL", BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef"}, "must expire"},
		{"a TTL above the cap", BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef", TTL: 48 * time.Hour}, "at most"},
		{"a node and groups", BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef", TTL: time.Hour, Node: "w1", Groups: []string{NodeBootstrapGroup}}, "bound to node w1 has no other groups"},
		{"a node's group beside the default group", BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef", TTL: time.Hour,
			Groups: []string{"system:bootstrappers:anvil:node:w1", NodeBootstrapGroup}}, "must not also be in " + NodeBootstrapGroup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := EnsureBootstrapToken(context.Background(), fake.NewClientset(), tc.t, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to say %q", err, tc.wantErr)
			}
		})
	}
}

func TestDeleteTokenNotFound(t *testing.T) {
	err := DeleteToken(context.Background(), clusterInfoClient(), "abcdef", time.Now())
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), `"abcdef"`) {
		t.Errorf("err = %v, want ErrNoToken naming the id", err)
	}
}

// A token made but not signed in cluster-info is deleted: its maker never
// learns of it.
func TestCreateTokenLeavesNothingOnFailure(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset() // no cluster-info to sign
	if _, err := CreateToken(ctx, cs, TokenOptions{TTL: time.Hour, Node: "w1"}, time.Now()); err == nil || !strings.Contains(err.Error(), "cluster-info") {
		t.Fatalf("err = %v, want it to say cluster-info", err)
	}
	if list, _ := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{}); len(list.Items) > 0 {
		t.Errorf("a token nobody knows of is left: %s", list.Items[0].Name)
	}
}
