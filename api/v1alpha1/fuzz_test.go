package v1alpha1

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecode checks that no input makes Decode panic, that every failure is
// reported as FieldErrors, and that a cluster it accepts defaults
// idempotently and validates the same way every time.
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
		c, err := Decode("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatal("Decode returned a cluster with its error")
			}
			if AsFieldErrors(err) == nil {
				t.Fatalf("error is not FieldErrors: %v", err)
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
