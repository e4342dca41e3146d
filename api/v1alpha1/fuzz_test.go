package v1alpha1

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecode checks that no input makes Decode or Load panic, that every
// failure is reported as FieldErrors, that a cluster Decode accepts defaults
// idempotently and validates the same way every time, and that Load's one
// pass is Decode's problems plus Validate's, in file order.
func FuzzDecode(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(mustReadF(f, s))
	}
	f.Add([]byte(ExampleClusterFile))
	f.Fuzz(func(t *testing.T, data []byte) {
		loaded, _, loadErr := load("fuzz.yaml", data)
		checkLoad(t, loaded, loadErr)
		c, err := Decode("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatal("Decode returned a cluster with its error")
			}
			if AsFieldErrors(err) == nil {
				t.Fatalf("error is not FieldErrors: %v", err)
			}
			if loadErr == nil {
				t.Fatalf("Load accepted what Decode refused: %v", err)
			}
			reported := map[string]bool{}
			for _, e := range AsFieldErrors(loadErr) {
				reported[e.Error()] = true
			}
			for _, e := range AsFieldErrors(err) {
				if !reported[e.Error()] {
					t.Fatalf("Load left out the decode problem %v:\n%v", e, loadErr)
				}
			}
			return
		}
		c.Default()
		w1, e1 := Validate(c)
		w2, e2 := Validate(c)
		if !reflect.DeepEqual(w1, w2) || errString(e1) != errString(e2) {
			t.Fatalf("Validate is not deterministic:\n%v\n%v", e1, e2)
		}
		if e1 != nil && AsFieldErrors(e1) == nil {
			t.Fatalf("validation error is not FieldErrors: %v", e1)
		}
		if errString(e1) != errString(loadErr) {
			t.Fatalf("Load and Decode+Validate differ on a file that decodes:\n%v\n%v", loadErr, e1)
		}
		again, err := Decode("fuzz.yaml", data)
		if err != nil {
			t.Fatalf("second Decode failed: %v", err)
		}
		again.Default()
		again.Default()
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("Default is not idempotent:\n%+v\n%+v", c, again)
		}
	})
}

// checkLoad holds load's result to its contract: a cluster or FieldErrors,
// never both, the problems in file order.
func checkLoad(t *testing.T, c *Cluster, err error) {
	t.Helper()
	if err == nil {
		if c == nil {
			t.Fatal("load returned neither a cluster nor an error")
		}
		return
	}
	if c != nil {
		t.Fatal("load returned a cluster with its error")
	}
	es := AsFieldErrors(err)
	if es == nil {
		t.Fatalf("load error is not FieldErrors: %v", err)
	}
	for i := 1; i < len(es); i++ {
		if p, e := es[i-1], es[i]; p.Line > e.Line || (p.Line == e.Line && p.Column > e.Column) {
			t.Fatalf("load's problems are out of file order: %v before %v", p, e)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func mustReadF(f *testing.F, path string) []byte {
	f.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return data
}
