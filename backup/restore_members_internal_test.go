package backup

import (
	"strings"
	"testing"

	"anvil.dev/anvil/etcd"
)

func members(spec ...string) []etcd.Member {
	var out []etcd.Member
	for _, s := range spec {
		name, flags, _ := strings.Cut(s, ":")
		out = append(out, etcd.Member{Name: name, Healthy: !strings.Contains(flags, "down"), Learner: strings.Contains(flags, "learner")})
	}
	return out
}

func TestRestoreSoloRefusal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ms      []etcd.Member
		masters []string
		want    string // "" means no refusal
	}{
		{"the only member", members("m1"), []string{"m1"}, ""},
		{"a learner does not count", members("m1", "m2:learner"), []string{"m1", "m2"}, ""},
		{"three healthy members", members("m1", "m2", "m3"), []string{"m1", "m2", "m3"}, "one of 3 voting members (3 answering; the others: m2, m3): restoring it alone would fork the cluster"},
		{"one down keeps quorum", members("m1", "m2", "m3:down"), []string{"m1", "m2", "m3"}, "one of 3 voting members (2 answering"},
		{"two of three down", members("m1", "m2:down", "m3:down"), []string{"m1", "m2", "m3"}, "etcd has lost quorum: 1 of its 3 voting members answer (down: m2, m3) and it needs 2"},
		{"this member down too", members("m1:down", "m2:down", "m3"), []string{"m1", "m2", "m3"}, "lost quorum: 1 of its 3"},
		{"nothing answers, one master", nil, []string{"m1"}, ""},
		{"nothing answers, three masters", nil, []string{"m1", "m2", "m3"}, "no etcd member answers, this master's included, and the cluster file names 2 other master(s) (m2, m3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := soloRestoreRefusal(tc.ms, "m1", tc.masters)
			if tc.want == "" {
				if got != "" {
					t.Errorf("refused: %s", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) || !strings.Contains(got, "anvil cluster restore") {
				t.Errorf("got %q\nwant it to say %q and how to restore every master", got, tc.want)
			}
		})
	}
}

func TestRestoreLeaveRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []etcd.Member
		want string
	}{
		{"three healthy: two stay", members("m1", "m2", "m3"), ""},
		{"one of three down already", members("m1", "m2", "m3:down"), "leaves 1 of the 3 voting members answering (down already: m3), and etcd needs 2"},
		{"two members", members("m1", "m2"), "leaves 1 of the 2 voting members answering, and etcd needs 2"},
		{"alone", members("m1"), "leaves 0 of the 1"},
		{"a learner leaving", members("m1:learner", "m2"), ""},
		{"nothing answers", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := leaveRefusal(tc.ms, "m1")
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRestoreEtcdEndpoint(t *testing.T) {
	for ep, ok := range map[string]bool{
		"https://10.0.0.11:2379":      true,
		"https://[fd00::1]:2379":      true,
		"https://m1.example.com:2379": true,
		"http://10.0.0.11:2379":       false,
		"https://10.0.0.11":           false,
		"10.0.0.11:2379":              false,
		"https://10.0.0.11:2379/x":    false,
		"https://u:p@10.0.0.11:2379":  false,
	} {
		if err := checkEtcdEndpoint(ep); (err == nil) != ok {
			t.Errorf("checkEtcdEndpoint(%q) = %v", ep, err)
		}
	}
}
