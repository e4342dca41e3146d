package templates_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"anvil.dev/anvil/templates"
)

// TestGolden renders every component in every form and compares with
// testdata/<form>/<file>. Run `go test ./templates -run TestGolden -update`
// after an intended change, and review the diff of testdata/.
func TestGolden(t *testing.T) {
	forms := []struct {
		name   string
		root   string
		file   func(templates.Component) string
		render func(c templates.Component, all []templates.Component) ([]byte, error)
	}{
		{"systemd", "", func(c templates.Component) string { return c.UnitName() },
			templates.SystemdUnit},
		{"static-pod", "", func(c templates.Component) string { return c.Name + ".yaml" },
			func(c templates.Component, _ []templates.Component) ([]byte, error) {
				return templates.StaticPodManifest(c)
			}},
		{"process", processRoot, func(c templates.Component) string { return c.Name + ".json" },
			func(c templates.Component, _ []templates.Component) ([]byte, error) {
				return templates.ProcessJSON(c, templates.ProcessOptions{LogDir: processRoot + "/var/log/anvil", Dir: processRoot})
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
