package v1alpha1

// docs/cluster-file.md, the cluster file reference, is generated here from
// the types themselves so that it cannot drift from what Load accepts:
//
//   - keys, nesting and value types by reflection on Cluster;
//   - descriptions from the doc comments in types.go, first paragraph only
//     (later paragraphs are notes for programmers);
//   - enum values from the typed constants in types.go;
//   - defaults from Default run on an empty cluster, and "required" from
//     what Validate then reports as ReasonRequired.
//
// Defaults that follow other fields (the endpoint follows the VIP) cannot be
// read off one run of Default; dependentDefaults words them, and the test
// fails when Default grows one that is not worded there.

import (
	"bytes"
	"encoding"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	referenceFile = "../../docs/cluster-file.md"
	regenerate    = "go test ./api/v1alpha1 -run TestClusterFileReference -update"
)

func TestClusterFileReference(t *testing.T) {
	ref, err := newReference("types.go")
	if err != nil {
		t.Fatal(err)
	}
	got := ref.markdown()
	if *update {
		if err := os.MkdirAll(filepath.Dir(referenceFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(referenceFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatalf("%v\ngenerate docs/cluster-file.md with:\n\t%s", err, regenerate)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("docs/cluster-file.md is out of date with api/v1alpha1 (first difference on line %d); regenerate it with:\n\t%s",
			firstDifference(got, want), regenerate)
	}
}

// TestExampleMentionsEveryField keeps `anvil config init`'s example, which
// the reference ends with, complete: every key appears in it, set or in a
// comment.
func TestExampleMentionsEveryField(t *testing.T) {
	ref, err := newReference("types.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ref.fields {
		key := f.path[strings.LastIndex(f.path, ".")+1:]
		key = strings.TrimSuffix(key, "[]")
		if !regexp.MustCompile(`(?m)^[ \t#-]*` + regexp.QuoteMeta(key) + `:`).MatchString(ExampleClusterFile) {
			t.Errorf("ExampleClusterFile does not mention %s", f.path)
		}
	}
}

func firstDifference(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// dependentDefaults words, by path, the defaults that follow other fields.
func dependentDefaults() map[string]string {
	out := map[string]string{}
	// A host's ssh block inherits the cluster-wide one field by field.
	t := reflect.TypeFor[SSH]()
	for i := range t.NumField() {
		if key, ok := yamlName(t.Field(i)); ok {
			out["hosts[].ssh."+key] = "the cluster-wide `ssh." + key + "`"
		}
	}
	for path, text := range map[string]string{
		"controlPlane.endpoint":    "the VIP when `vip` is set, else the first master's address",
		"ssh.sudo":                 "`false` when `user` is root, else `true`",
		"ssh.bastion.user":         "`ssh.user`",
		"hosts[].internalAddress":  "`address`",
		"hosts[].ssh":              "the cluster-wide `ssh` block, field by field",
		"hosts[].ssh.bastion":      "the cluster-wide `ssh.bastion`, taken whole: two jump hosts' fields are never mixed",
		"hosts[].ssh.sudo":         "the cluster-wide `ssh.sudo` when set there, else `false` when this host's user is root, else `true`",
		"hosts[].ssh.bastion.user": "this host's ssh user",
	} {
		out[path] = text
	}
	return out
}

// refField is one entry of the reference.
type refField struct {
	path     string // hosts[].ssh.user
	typ      reflect.Type
	doc      string // Markdown
	fallback string // "Default: `22`", "Required" or "Optional"
}

type reference struct {
	fields []refField
	// enums are the values of each enum type, by type name.
	enums map[string][]string
}

func newReference(typesFile string) (*reference, error) {
	docs, enums, err := parseTypes(typesFile)
	if err != nil {
		return nil, err
	}
	ref := &reference{enums: enums}
	defaults, required := probe()
	dependent := dependentDefaults()
	var problems []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			sf := t.Field(i)
			key, ok := yamlName(sf)
			if !ok {
				continue
			}
			doc := docs[t.Name()+"."+sf.Name]
			if doc == "" {
				problems = append(problems, fmt.Sprintf("%s.%s has no doc comment; the reference shows it to operators", t.Name(), sf.Name))
			}
			f := refField{path: fieldPath(prefix, key), typ: sf.Type, doc: operatorDoc(doc, sf.Name, key)}
			switch {
			case dependent[f.path] != "":
				f.fallback = "Default: " + dependent[f.path]
			case defaults[f.path] != "":
				f.fallback = "Default: `" + defaults[f.path] + "`"
			case required[f.path]:
				f.fallback = "Required"
			default:
				f.fallback = "Optional"
			}
			ref.fields = append(ref.fields, f)
			if isEnum(sf.Type) && len(enums[sf.Type.Name()]) == 0 {
				problems = append(problems, fmt.Sprintf("%s has no typed constants in %s to list", sf.Type.Name(), typesFile))
			}
			if elem, suffix := block(sf.Type); elem != nil {
				walk(elem, f.path+suffix)
			}
		}
	}
	walk(reflect.TypeFor[Cluster](), "")
	ref.qualifyRequired()
	for path := range dependent {
		if !slices.ContainsFunc(ref.fields, func(f refField) bool { return f.path == path }) {
			problems = append(problems, "dependentDefaults words "+path+", which is not a field")
		}
	}
	for _, path := range changingDefaults() {
		if dependent[path] == "" {
			problems = append(problems, "the default of "+path+" follows other fields: word it in dependentDefaults")
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return ref, nil
}

// qualifyRequired says where a required field is required when it sits in
// an optional block: a jump host needs an address only when there is one.
func (r *reference) qualifyRequired() {
	fallback := map[string]string{}
	for _, f := range r.fields {
		fallback[f.path] = f.fallback
	}
	for i, f := range r.fields {
		if f.fallback != "Required" {
			continue
		}
		for p := parentPath(f.path); p != ""; p = parentPath(p) {
			block, list := strings.CutSuffix(p, "[]")
			if fallback[block] == "Required" {
				continue
			}
			if list {
				r.fields[i].fallback = "Required in each item of `" + block + "`"
			} else {
				r.fields[i].fallback = "Required in `" + block + "`"
			}
			break
		}
	}
}

// block returns the struct type whose fields nest under a field of type t,
// and the path suffix to them ("[]" through a list), or nil.
func block(t reflect.Type) (reflect.Type, string) {
	suffix := ""
	if t.Kind() == reflect.Slice {
		t, suffix = t.Elem(), "[]"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeFor[Cluster]().PkgPath() || isText(t) {
		return nil, ""
	}
	return t, suffix
}

// parseTypes reads the doc comment of every struct field (by Type.Field)
// and the values of every typed string constant (by type name) in file.
func parseTypes(file string) (docs map[string]string, enums map[string][]string, err error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments)
	if err != nil {
		return nil, nil, err
	}
	docs, enums = map[string]string{}, map[string][]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range gd.Specs {
			switch spec := spec.(type) {
			case *ast.TypeSpec:
				st, ok := spec.Type.(*ast.StructType)
				if !ok {
					continue
				}
				for _, field := range st.Fields.List {
					for _, name := range field.Names {
						docs[spec.Name.Name+"."+name.Name] = field.Doc.Text()
					}
				}
			case *ast.ValueSpec:
				typ, ok := spec.Type.(*ast.Ident)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, v := range spec.Values {
					if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						s, err := strconv.Unquote(lit.Value)
						if err != nil {
							return nil, nil, err
						}
						enums[typ.Name] = append(enums[typ.Name], s)
					}
				}
			}
		}
	}
	return docs, enums, nil
}

// operatorDoc is the first paragraph of a field's doc comment on one line,
// its leading Go name replaced by the YAML key.
func operatorDoc(doc, goName, key string) string {
	para, _, _ := strings.Cut(strings.TrimSpace(doc), "\n\n")
	text := strings.Join(strings.Fields(para), " ")
	if rest, ok := strings.CutPrefix(text, goName); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ",")) {
		text = "`" + key + "`" + rest
	}
	return text
}

// probe reads the defaults off Default run on an empty cluster, and the
// required fields off Validate then. The cluster holds one of each list
// item and jump host, empty, so that their fields are visited too.
func probe() (defaults map[string]string, required map[string]bool) {
	c := emptyProbe()
	c.Default()
	defaults = leaves(c)

	c = emptyProbe()
	// A host's own jump host is checked only where it differs from the
	// cluster-wide one.
	c.Hosts[0].SSH.Bastion.IdentityFile = "k"
	c.Default()
	_, errs := validate(c)
	required = map[string]bool{}
	for _, e := range errs {
		if e.Reason == ReasonRequired {
			required[regexp.MustCompile(`\[\d+\]`).ReplaceAllString(e.Path, "[]")] = true
		}
	}
	return defaults, required
}

func emptyProbe() *Cluster {
	return &Cluster{
		SSH:   SSH{Bastion: &Bastion{}},
		Hosts: []Host{{SSH: SSH{Bastion: &Bastion{}}, Taints: []Taint{{}}}},
	}
}

// changingDefaults lists the fields whose default changes when other
// fields change: Default's results for two clusters that set different
// fields, compared where neither set anything.
func changingDefaults() []string {
	a := emptyProbe()
	a.Default()
	b := emptyProbe()
	b.SSH.User = "admin"
	b.ControlPlane.VIP = netip.MustParseAddr("10.0.0.10")
	b.Hosts[0].Address = netip.MustParseAddr("10.0.0.11")
	b.Hosts[0].Role = RoleMaster
	set := leaves(b)
	b.Default()
	va, vb := leaves(a), leaves(b)
	var out []string
	for _, m := range []map[string]string{va, vb} {
		for path := range m {
			if set[path] == "" && va[path] != vb[path] && !slices.Contains(out, path) {
				out = append(out, path)
			}
		}
	}
	slices.Sort(out)
	return out
}

// leaves maps the path of every set scalar in c to its YAML text.
func leaves(c *Cluster) map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		if m, ok := v.Interface().(encoding.TextMarshaler); ok {
			if !v.IsZero() {
				text, _ := m.MarshalText()
				out[path] = string(text)
			}
			return
		}
		switch v.Kind() {
		case reflect.Pointer:
			switch {
			case v.IsNil():
			case v.Elem().Kind() == reflect.Struct:
				walk(v.Elem(), path)
			default: // *bool: set, even to false
				out[path] = fmt.Sprint(v.Elem().Interface())
			}
		case reflect.Struct:
			for i := range v.NumField() {
				if key, ok := yamlName(v.Type().Field(i)); ok {
					walk(v.Field(i), fieldPath(path, key))
				}
			}
		case reflect.Slice:
			if v.Len() > 0 {
				walk(v.Index(0), path+"[]")
			}
		case reflect.Map:
			// Labels and extra arguments have no defaults.
		default:
			if !v.IsZero() {
				out[path] = fmt.Sprint(v.Interface())
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

func isText(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

func isEnum(t reflect.Type) bool {
	return t.Kind() == reflect.String && t.PkgPath() == reflect.TypeFor[Cluster]().PkgPath()
}

// typeText says what a value of type t is written as, with units.
func (r *reference) typeText(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[netip.Addr]():
		return "IP address"
	case reflect.TypeFor[netip.Prefix]():
		return "CIDR prefix"
	case reflect.TypeFor[Duration]():
		return "duration (`ms`, `s`, `m`, `h`, or `d` for whole days)"
	case reflect.TypeFor[Size]():
		return "size in bytes (or with a suffix: `Ki`, `Mi`, `Gi`, `Ti`)"
	}
	if isEnum(t) {
		values := slices.Clone(r.enums[t.Name()])
		for i, v := range values {
			values[i] = "`" + v + "`"
		}
		return "one of " + strings.Join(values, ", ")
	}
	switch t.Kind() {
	case reflect.Pointer:
		return r.typeText(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Uint64:
		return "whole number, 0 or more"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return fmt.Sprintf("whole number, 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "whole number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "list of strings"
		}
		return "list of mappings"
	case reflect.Map:
		return "mapping of strings to strings"
	}
	return "mapping"
}

func (r *reference) markdown() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Cluster file reference")
	p("")
	p("<!-- Generated from api/v1alpha1/types.go by `%s`; do not edit. -->", regenerate)
	p("")
	p("A cluster file describes one cluster: its machines, and how Kubernetes runs on them.")
	p("`anvil config init` prints a commented example (the [one below](#example)), and")
	p("`anvil config validate -f cluster.yaml` checks a file, reporting every problem in it")
	p("with its line and field path. Decoding is strict: an unknown key is an error, not ignored.")
	p("")
	p("Each field is named by its path from the top of the file: `hosts[].ssh.user` is `user`")
	p("in the `ssh` block of an item of the `hosts` list. A field is required, optional, or has")
	p("the default shown, which applies when the field is left out.")
	p("")
	p("- [Top level](#top-level)")
	for _, f := range r.fields {
		if !strings.Contains(f.path, ".") && !scalar(f) {
			p("- [`%s`](#%s)", f.path, strings.ToLower(f.path))
		}
	}
	p("- [Value formats](#value-formats)")
	p("- [Example](#example)")
	p("")
	p("## Top level")
	for _, f := range r.fields {
		if !strings.Contains(f.path, ".") && scalar(f) {
			r.entry(&b, "###", f)
		}
	}
	for _, f := range r.fields {
		switch {
		case !strings.Contains(f.path, ".") && !scalar(f):
			r.entry(&b, "##", f)
		case strings.Contains(f.path, "."):
			r.entry(&b, "###", f)
		}
	}
	p("")
	p("## Value formats")
	p("")
	p("- **IP address**: IPv4 or IPv6, without a prefix length: `10.0.0.11`, `fd00::11`.")
	p("- **CIDR prefix**: a network address and its prefix length: `10.96.0.0/12`, `fd00:96::/108`.")
	p("- **duration**: a number and a unit, `ms`, `s`, `m` or `h`, or several (`1h30m`);")
	p("  or whole days, `365d`.")
	p("- **size**: bytes, as a whole number or with a binary suffix: `Ki` (1024), `Mi` (1024²),")
	p("  `Gi` (1024³) or `Ti` (1024⁴), like `2Gi`.")
	p("- **boolean**: `true` or `false`.")
	p("")
	p("## Example")
	p("")
	p("What `anvil config init` prints. It decodes and validates without a warning, and")
	p("mentions every field above, set or in a comment.")
	p("")
	p("```yaml")
	b.WriteString(ExampleClusterFile)
	p("```")
	return b.Bytes()
}

// scalar says whether f is a single value rather than a block of its own.
func scalar(f refField) bool {
	elem, _ := block(f.typ)
	return elem == nil
}

func (r *reference) entry(b *bytes.Buffer, heading string, f refField) {
	fmt.Fprintf(b, "\n%s `%s`\n\n", heading, f.path)
	fallback := "**" + f.fallback + "**"
	if d, ok := strings.CutPrefix(f.fallback, "Default: "); ok {
		fallback = "**Default:** " + d
	} else if rest, ok := strings.CutPrefix(f.fallback, "Required"); ok {
		fallback = "**Required**" + rest
	}
	fmt.Fprintf(b, "**Type:** %s · %s\n\n%s\n", r.typeText(f.typ), fallback, f.doc)
}
