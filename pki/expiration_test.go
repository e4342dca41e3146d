package pki

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func TestCheckExpiration(t *testing.T) {
	h := newTestHost(t)
	issued := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	// A master that is not the first: no super-admin.conf, and none is
	// reported missing.
	h.ensure(t, testConfig(t, "m1"), Options{KubeconfigDir: h.kube, Now: issued})

	checked := issued.Add(100 * 24 * time.Hour)
	exp, err := CheckExpiration(h.pki, Options{KubeconfigDir: h.kube, Now: checked})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range exp.Certificates {
		names = append(names, e.Name)
		wantCA := map[string]string{"apiserver-etcd-client": EtcdCAName, "etcd-healthcheck-client": EtcdCAName,
			"etcd-peer": EtcdCAName, "etcd-server": EtcdCAName, "front-proxy-client": FrontProxyCAName}[e.Name]
		if wantCA == "" {
			wantCA = CAName
		}
		if e.Missing || e.CA != wantCA || e.ExternallyManaged {
			t.Errorf("%s: %+v, want CA %s", e.Name, e, wantCA)
		}
		if want := issued.Add(365 * 24 * time.Hour); !e.Expires.Equal(want) {
			t.Errorf("%s: expires %v, want %v", e.Name, e.Expires, want)
		}
		if e.Residual() != 265*24*time.Hour {
			t.Errorf("%s: residual %v, want 265d", e.Name, e.Residual())
		}
	}
	want := []string{"admin.conf", "anvil-approver.conf", "anvil-vip.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client", "controller-manager.conf",
		"etcd-healthcheck-client", "etcd-peer", "etcd-server", "front-proxy-client", "scheduler.conf"}
	if !slices.Equal(names, want) {
		t.Errorf("names %v\nwant %v", names, want)
	}
	var caNames []string
	for _, e := range exp.CertificateAuthorities {
		caNames = append(caNames, e.Name)
		if e.CA != "" || e.Residual() != (3650-100)*24*time.Hour {
			t.Errorf("%s: %+v", e.Name, e)
		}
	}
	if !slices.Equal(caNames, []string{CAName, EtcdCAName, FrontProxyCAName}) {
		t.Errorf("CAs %v", caNames)
	}

	// The JSON is what `check-expiration -o json` prints; scripts read it.
	data, err := json.Marshal(exp.Certificates[3])
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"name":"apiserver","path":"` + h.file("apiserver.crt") +
		`","issued":"2030-01-01T11:55:00Z","expires":"2031-01-01T12:00:00Z","residualSeconds":22896000,"certificateAuthority":"ca","externallyManaged":false}`
	if string(data) != wantJSON {
		t.Errorf("JSON %s\nwant %s", data, wantJSON)
	}

	expired, err := CheckExpiration(h.pki, Options{Now: issued.Add(400 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if r := expired.Certificates[0].ResidualSeconds; r >= 0 {
		t.Errorf("an expired certificate has residual %ds", r)
	}
	if len(expired.Certificates) != len(Certificates()) {
		t.Errorf("without a kubeconfig directory: %d entries, want the %d leaves", len(expired.Certificates), len(Certificates()))
	}
}
