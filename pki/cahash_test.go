package pki

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseCAHash(t *testing.T) {
	valid := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in   string
		want string // error substring, or "" for valid
	}{
		{valid, ""},
		{strings.ToUpper(valid[:7]) + valid[7:], "must look like sha256:"},
		{"sha256:" + strings.Repeat("0123456789ABCDEF", 4), ""},
		{"", "must look like sha256:"},
		{valid[7:], "must look like sha256:"},
		{"sha1:" + valid[7:], "must look like sha256:"},
		{valid[:len(valid)-1], "not 63"},
		{valid + "0", "not 65"},
		{"sha256:" + strings.Repeat("g", 64), "not hexadecimal"},
		{"sha256:" + strings.Repeat("x", 500), "…"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h, err := ParseCAHash(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if h.String() != strings.ToLower(tt.in) {
					t.Errorf("String() = %s", h)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCAHashMatches(t *testing.T) {
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), Options{})
	ca, etcdCA := readCert(t, h.file("ca.crt")), readCert(t, h.file("etcd/ca.crt"))
	pin := CAHashOf(ca)
	if !pin.Matches(ca) || pin.Matches(etcdCA) || pin.Matches(nil) {
		t.Error("Matches is wrong")
	}
	if (CAHash{}).Matches(ca) || !(CAHash{}).IsZero() || (CAHash{}).String() != "" {
		t.Error("the zero CAHash must match nothing")
	}
	var v struct{ Hash CAHash }
	data, _ := json.Marshal(struct{ Hash CAHash }{pin})
	if err := json.Unmarshal(data, &v); err != nil || v.Hash != pin {
		t.Errorf("JSON round trip: %s, %v", data, err)
	}
}

func FuzzParseCAHash(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0123456789abcdef", 4))
	f.Add("sha256:" + strings.Repeat("ABCDEF0123456789", 4))
	f.Add("sha256:")
	f.Add("sha1:abc")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseCAHash(s)
		if err != nil {
			if !h.IsZero() {
				t.Fatal("error with a non-zero hash")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		again, err := ParseCAHash(h.String())
		if err != nil || again != h {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
		if !strings.EqualFold(h.String(), s) {
			t.Fatalf("%q parsed to %s", s, h)
		}
	})
}
