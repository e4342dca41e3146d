package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	api "anvil.dev/anvil/api/v1alpha1"
)

// execConfig runs anvil with args and returns stdout and the exit code main
// would use.
func execConfig(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(""), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return out.String(), exitCode(err)
	}
	return out.String(), 0
}

func writeClusterFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigInitValidates(t *testing.T) {
	out, code := execConfig(t, "config", "init", "--no-backup-key")
	if code != 0 || out != api.ExampleClusterFile {
		t.Fatalf("config init: exit %d, output differs from the example", code)
	}
	path := writeClusterFile(t, out)
	got, code := execConfig(t, "config", "validate", "-f", path)
	if code != 0 || got != path+": valid\n" {
		t.Errorf("validate of config init's output: exit %d\n%s", code, got)
	}
}

// TestConfigInitMakesABackupKey: by default the cluster file config init
// writes encrypts backups to a key pair it made, whose identity only its
// owner reads; a second run keeps that key.
func TestConfigInitMakesABackupKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	if _, code := execConfig(t, "config", "init", "-o", file); code != 0 {
		t.Fatalf("config init -o: exit %d", code)
	}
	c, warnings, err := api.Load(file)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("config init's file: %v %v", warnings, err)
	}
	key := filepath.Join(dir, "backup.key")
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup key: %v %v, want a 0600 file beside the cluster file", fi, err)
	}
	b, _ := os.ReadFile(key)
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil || len(ids) != 1 {
		t.Fatalf("backup key: %v", err)
	}
	if r := ids[0].(*age.X25519Identity).Recipient().String(); len(c.Backup.Recipients) != 1 || c.Backup.Recipients[0] != r || c.Backup.AllowUnencrypted {
		t.Errorf("backup section %+v, want its recipient %s", c.Backup, r)
	}
	if _, code := execConfig(t, "config", "init", "-o", file); code != 0 {
		t.Fatal("second config init failed")
	}
	if again, _ := os.ReadFile(key); !bytes.Equal(again, b) {
		t.Error("a second config init replaced the backup key")
	}
	c2, _, _ := api.Load(file)
	if c2 == nil || c2.Backup.Recipients[0] != c.Backup.Recipients[0] {
		t.Error("a second config init changed the recipient")
	}
}

const twoMasters = `apiVersion: anvil.dev/v1alpha1
kind: Cluster
name: t
hosts:
  - name: m1
    address: 10.0.0.11
    role: master
  - name: m2
    address: 10.0.0.12
    role: master
`

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		args     []string
		wantCode int
		want     []string // lines of output, with FILE for the file's path
	}{
		{"warnings only", twoMasters, nil, 0, []string{
			"FILE:4: warning: hosts: 2 masters tolerate no more failures than 1: etcd needs a majority of members up; use an odd number of masters",
			"FILE: valid, 1 warning",
		}},
		{"decode errors", strings.Replace(twoMasters, "address: 10.0.0.12", "adress: 10.0.0.12", 1), nil, 1, []string{
			// Validation runs in the same pass, so the warning comes too.
			"FILE:4: warning: hosts: 2 masters tolerate no more failures than 1: etcd needs a majority of members up; use an odd number of masters",
			`FILE:9: hosts[1].adress: unknown field (did you mean "address"?)`,
			"FILE: 1 error, 1 warning",
		}},
		{"validation errors", strings.Replace(twoMasters, "m2", "m1", 1), nil, 1, []string{
			"FILE:4: warning: hosts: 2 masters tolerate no more failures than 1: etcd needs a majority of members up; use an odd number of masters",
			`FILE:8: hosts[1].name: "m1" is also the name of hosts[0]`,
			"FILE: 1 error, 1 warning",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeClusterFile(t, tt.content)
			out, code := execConfig(t, append([]string{"config", "validate", "-f", path}, tt.args...)...)
			want := strings.ReplaceAll(strings.Join(tt.want, "\n")+"\n", "FILE", path)
			if code != tt.wantCode || out != want {
				t.Errorf("exit %d, want %d\ngot:\n%s\nwant:\n%s", code, tt.wantCode, out, want)
			}
		})
	}
}

func TestConfigValidateJSON(t *testing.T) {
	path := writeClusterFile(t, strings.Replace(twoMasters, "m2", "m1", 1))
	out, code := execConfig(t, "config", "validate", "-f", path, "-o", "json")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var got []struct {
		Severity, File, Path, Reason, Message string
		Line                                  int
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not a JSON list: %v\n%s", err, out)
	}
	if len(got) != 2 || got[0].Severity != "warning" || got[1].Severity != "error" ||
		got[1].File != path || got[1].Line != 8 || got[1].Path != "hosts[1].name" || got[1].Reason != string(api.ReasonDuplicate) {
		t.Errorf("unexpected report: %+v", got)
	}

	valid := writeClusterFile(t, api.ExampleClusterFile)
	out, code = execConfig(t, "config", "validate", "-f", valid, "-o", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("valid file: exit %d, output %q, want an empty list", code, out)
	}
}

func TestConfigValidateBadInvocation(t *testing.T) {
	if _, code := execConfig(t, "config", "validate"); code != 2 {
		t.Errorf("without -f: exit %d, want 2", code)
	}
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"config", "validate", "-f", filepath.Join(t.TempDir(), "missing.yaml")})
	err := root.Execute()
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want a not-exist error", err)
	}
}
