package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const modulePath = "anvil.dev/anvil"

// packages maps every package of the module (its directory, relative to the
// module root) to the anvil packages its non-test files import.
func packages(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch {
			case rel == ".":
				return nil
			case strings.HasPrefix(d.Name(), "."), d.Name() == "testdata", d.Name() == "bin",
				rel == filepath.Join("images", "kube"):
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir // a module of its own
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		imports := out[dir]
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if rest, ok := strings.CutPrefix(path, modulePath+"/"); ok && !slices.Contains(imports, rest) {
				imports = append(imports, rest)
			}
		}
		out[dir] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reaches reports whether from imports to, directly or not.
func reaches(graph map[string][]string, from, to string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(p string) bool {
		if p == to {
			return true
		}
		if seen[p] {
			return false
		}
		seen[p] = true
		return slices.ContainsFunc(graph[p], walk)
	}
	return slices.ContainsFunc(graph[from], walk)
}

// TestArchitecture keeps docs/architecture.md true: every package is in it
// and has a doc.go, and dependencies point the way it says.
func TestArchitecture(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	graph := packages(t, root)
	if len(graph) < 20 {
		t.Fatalf("found only %d packages under %s", len(graph), root)
	}
	for pkg, imports := range graph {
		if !strings.Contains(string(doc), "| `"+pkg+"` |") {
			t.Errorf("docs/architecture.md has no row for package %s", pkg)
		}
		if _, err := os.Stat(filepath.Join(root, pkg, "doc.go")); err != nil {
			t.Errorf("package %s has no doc.go saying what it owns and never does", pkg)
		}
		if strings.HasPrefix(pkg, "internal/") {
			for _, imp := range imports {
				if !strings.HasPrefix(imp, "internal/") {
					t.Errorf("%s imports %s: nothing in internal/ may import a top-level anvil package", pkg, imp)
				}
			}
		}
	}
	for _, rule := range []struct{ from, to string }{
		{"backup", "installer"},
		{"master", "backup"},
		{"support", "installer"},
		{"master", "support"},
		{"master", "installer"},
		{"agent", "master"},
		{"etcd", "master"},
		{"component", "master"},
		{"api/v1alpha1", "master"},
	} {
		if reaches(graph, rule.from, rule.to) {
			t.Errorf("%s depends on %s: dependencies point cmd → installer → backup → master → etcd/pki/… → api", rule.from, rule.to)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "docs/architecture.md") {
		t.Error("README.md does not link docs/architecture.md")
	}
	if strings.Contains(string(readme), "../shared") {
		t.Error("README.md points outside the repository")
	}
}
