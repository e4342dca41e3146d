package component_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"anvil.dev/anvil/component"
)

// TestGolden renders every component in every form and compares with
// testdata/<form>/<file>. Run `go test ./component -run TestGolden -update`
// after an intended change, and review the diff of testdata/.
func TestGolden(t *testing.T) {
	forms := []struct {
		name   string
		root   string
		file   func(component.Spec) string
		render func(c component.Spec, all []component.Spec) ([]byte, error)
	}{
		{"systemd", "", func(c component.Spec) string { return c.UnitName() },
			component.SystemdUnit},
		{"static-pod", "", func(c component.Spec) string { return c.Name + ".yaml" },
			func(c component.Spec, _ []component.Spec) ([]byte, error) {
				return component.StaticPodManifest(c)
			}},
		{"process", processRoot, func(c component.Spec) string { return c.Name + ".json" },
			func(c component.Spec, _ []component.Spec) ([]byte, error) {
				return component.ProcessJSON(c, component.ProcessOptions{LogDir: processRoot + "/var/log/anvil", Dir: processRoot})
			}},
	}
	for _, form := range forms {
		all := nodeComponents(t, hostfsRoot(form.root))
		for _, c := range all {
			t.Run(form.name+"/"+c.Name, func(t *testing.T) {
				got, err := form.render(c, all)
				if err != nil {
					t.Fatal(err)
				}
				checkGolden(t, filepath.Join("testdata", form.name, form.file(c)), got)
			})
		}
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendered output (run with -update if the change is intended):\n%s", path, diffLines(want, got))
	}
}
