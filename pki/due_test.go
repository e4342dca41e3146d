package pki

import (
	"strings"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	year := Expiry{Issued: issued, Expires: issued.Add(360 * 24 * time.Hour)}
	named := func(e Expiry, name string, external bool) Expiry {
		e.Name, e.Path, e.CA, e.ExternallyManaged = name, "/etc/kubernetes/pki/"+name+".crt", "ca", external
		return e
	}
	exp := Expiration{Certificates: []Expiry{
		named(year, "apiserver", false),
		named(year, "front-proxy-client", true),
		{Name: "etcd-peer", Missing: true},
		named(Expiry{Issued: issued, Expires: issued.Add(10 * time.Minute)}, "admin.conf", false),
	}}
	tests := []struct {
		at     time.Time
		due    string
		cannot int
	}{
		// admin.conf was issued for 5 minutes, its start backdated by
		// 5: due with a third of 5 minutes left.
		{at: issued.Add(8*time.Minute + 19*time.Second), due: ""},
		{at: issued.Add(8*time.Minute + 21*time.Second), due: "admin.conf"},
		{at: issued.Add(6 * time.Minute), due: ""},
		// A third of the year's lifetime left (120 days): due.
		{at: issued.Add(239 * 24 * time.Hour), due: "admin.conf"},
		{at: issued.Add(240*24*time.Hour + time.Hour), due: "apiserver,admin.conf", cannot: 1},
		{at: issued.Add(400 * 24 * time.Hour), due: "apiserver,admin.conf", cannot: 1},
	}
	for _, tt := range tests {
		due, cannot := Due(exp, tt.at)
		if strings.Join(due, ",") != tt.due || len(cannot) != tt.cannot {
			t.Errorf("at %s: due %v, cannot %q; want %s and %d", tt.at, due, cannot, tt.due, tt.cannot)
		}
		for _, c := range cannot {
			if !strings.Contains(c, "front-proxy-client") || !strings.Contains(c, "external CA") {
				t.Errorf("cannot: %q names neither the certificate nor why", c)
			}
		}
	}
	if got, want := year.RenewAt(), issued.Add(240*24*time.Hour+(5*time.Minute)/3); !got.Equal(want) {
		t.Errorf("RenewAt %s, want %s", got, want)
	}
}

func TestCAWarnings(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := Expiration{CertificateAuthorities: []Expiry{
		{Name: "ca", Path: "/etc/kubernetes/pki/ca.crt", Expires: now.Add(89 * 24 * time.Hour)},
		{Name: "etcd-ca", Path: "/etc/kubernetes/pki/etcd/ca.crt", Expires: now.Add(91 * 24 * time.Hour)},
		{Name: "front-proxy-ca", Path: "/etc/kubernetes/pki/front-proxy-ca.crt", Expires: now.Add(-time.Hour)},
		{Name: "gone", Missing: true},
	}}
	w := CAWarnings(exp, now)
	if len(w) != 2 || !strings.Contains(w[0], "CA ca (/etc/kubernetes/pki/ca.crt) expires 2030-03-31T00:00:00Z, in 89 days") || !strings.Contains(w[1], "front-proxy-ca") || !strings.Contains(w[1], "expired") {
		t.Errorf("warnings %q", w)
	}
}
