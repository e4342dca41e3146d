package cis_test

import (
	"reflect"
	"strings"
	"testing"

	"anvil.dev/anvil/internal/cis"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want map[string][]string
	}{
		{"--a=b", []string{"--a=b"}, map[string][]string{"a": {"b"}}},
		{"--a b", []string{"--a", "b"}, map[string][]string{"a": {"b"}}},
		{"one dash", []string{"-v=2", "-a", "b"}, map[string][]string{"v": {"2"}, "a": {"b"}}},
		{"a bare flag is true", []string{"--profiling"}, map[string][]string{"profiling": {"true"}}},
		{"a bare flag before another", []string{"--x", "--a=b"}, map[string][]string{"x": {"true"}, "a": {"b"}}},
		{"a value with = in it", []string{"--feature-gates=A=true,B=false"}, map[string][]string{"feature-gates": {"A=true,B=false"}}},
		{"an empty value", []string{"--a="}, map[string][]string{"a": {""}}},
		{"given twice", []string{"--a=1", "--b", "x", "--a", "2"}, map[string][]string{"a": {"1", "2"}, "b": {"x"}}},
		{"words that are no flag", []string{"config", "--a=b", "stray"}, map[string][]string{"a": {"b"}}},
		{"-- ends the flags", []string{"--a=b", "--", "--c=d"}, map[string][]string{"a": {"b"}}},
		{"no name", []string{"-", "--=x", "---"}, map[string][]string{}},
		{"nothing", nil, map[string][]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string][]string{}
			for n, f := range cis.ParseArgs(tc.args) {
				got[n] = f.Values
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseArgs(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

// TestFlags: a scalar flag keeps its last value, a list flag every
// element of every time it was given; the report shows each.
func TestFlags(t *testing.T) {
	fl := cis.ParseArgs([]string{
		"--enable-admission-plugins=NodeRestriction, DenyServiceExternalIPs",
		"--enable-admission-plugins", "AlwaysAdmit,,",
		"--profiling=true", "--profiling=false",
	})
	if v, ok := fl.Get("profiling"); !ok || v != "false" {
		t.Errorf("Get(profiling) = %q %v, want the last, false", v, ok)
	}
	if v, ok := fl.Get("token-auth-file"); ok || v != "" {
		t.Errorf("Get of an unset flag = %q %v", v, ok)
	}
	if got, want := fl.List("enable-admission-plugins"), []string{"NodeRestriction", "DenyServiceExternalIPs", "AlwaysAdmit"}; !reflect.DeepEqual(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if got := fl.List("authorization-mode"); got != nil {
		t.Errorf("List of an unset flag = %q", got)
	}
	for name, want := range map[string]string{
		"profiling":                "--profiling=true --profiling=false",
		"enable-admission-plugins": "--enable-admission-plugins=NodeRestriction, DenyServiceExternalIPs --enable-admission-plugins=AlwaysAdmit,,",
		"token-auth-file":          "--token-auth-file not set",
	} {
		if got := fl.Show(name); got != want {
			t.Errorf("Show(%s) = %q, want %q", name, got, want)
		}
	}
	fl["cert-file"] = cis.Flag{Values: []string{"/etc/kubernetes/pki/etcd/server.crt"}, From: "/etc/anvil/etcd.yaml"}
	if got, want := fl.Show("cert-file"), "--cert-file=/etc/kubernetes/pki/etcd/server.crt (from /etc/anvil/etcd.yaml)"; got != want {
		t.Errorf("Show of a file's setting = %q, want %q", got, want)
	}
}

// FuzzParseArgs feeds ParseArgs command lines as a process on the master
// could have them: it never panics, and the flags it reads, written back
// as --name=value, read the same.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"kube-apiserver\x00--a=b\x00--c\x00d\x00--e",
		"--a=1\x00--a\x002\x00--\x00--b=3",
		"-\x00--=x\x00---y\x00-z=\x00--w\x00-",
		"anvil\x00etcd\x00--config=/etc/anvil/etcd.yaml",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		fl := cis.ParseArgs(strings.Split(cmdline, "\x00"))
		var again []string
		for name, v := range fl {
			if name == "" || strings.Contains(name, "=") {
				t.Fatalf("flag name %q", name)
			}
			if len(v.Values) == 0 {
				t.Fatalf("flag %q with no value", name)
			}
			if got, ok := fl.Get(name); !ok || got != v.Values[len(v.Values)-1] {
				t.Fatalf("Get(%q) = %q %v, values %q", name, got, ok, v.Values)
			}
			for _, val := range v.Values {
				again = append(again, "--"+name+"="+val)
			}
		}
		back := cis.ParseArgs(again)
		if len(back) != len(fl) {
			t.Fatalf("%q read as %d flags, written back as %q: %d", cmdline, len(fl), again, len(back))
		}
		for name, v := range fl {
			if !reflect.DeepEqual(back[name].Values, v.Values) {
				t.Fatalf("%q: --%s is %q, written back %q", cmdline, name, v.Values, back[name].Values)
			}
		}
	})
}
