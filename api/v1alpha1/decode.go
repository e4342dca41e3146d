package v1alpha1

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxVisits bounds the values one document may expand to through anchors
// and aliases, so that a small hostile file cannot make Decode run for ever.
const maxVisits = 1 << 20

// Load reads, decodes, defaults and validates the cluster file at path. On
// success the warnings are worth showing the operator; on failure the error
// is FieldErrors (every decode or validation problem, with lines) or an I/O
// error, and the warnings are still returned when validation got that far.
func Load(path string) (*Cluster, Warnings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster file: %w", err)
	}
	c, err := Decode(path, data)
	if err != nil {
		return nil, nil, err
	}
	c.Default()
	warnings, err := Validate(c)
	if err != nil {
		return nil, warnings, err
	}
	return c, warnings, nil
}

// Decode parses data as one cluster file strictly: an unknown field, a value
// of the wrong type, a duplicate key, several YAML documents or none are all
// errors. Every problem is reported, as FieldErrors naming filename and line.
//
// The returned Cluster is neither defaulted nor validated. It remembers the
// line of each field it was given, so Validate's errors point at lines too.
func Decode(filename string, data []byte) (*Cluster, error) {
	d := &decoder{src: &source{file: filename, lines: map[string]int{}}}
	root := d.document(data)
	if root == nil {
		return nil, d.finish()
	}
	c := &Cluster{}
	d.value(root, "", root.Line, reflect.ValueOf(c).Elem())
	if err := d.finish(); err != nil {
		return nil, err
	}
	c.src = d.src
	return c, nil
}

type decoder struct {
	src     *source
	errs    FieldErrors
	visits  int
	merging map[*yaml.Node]bool
}

// spend counts n more values against maxVisits and says whether decoding
// may go on; the first time it may not, it records why.
func (d *decoder) spend(n int, path string, line int) bool {
	if d.visits > maxVisits {
		return false
	}
	d.visits += n
	if d.visits > maxVisits {
		d.errorf(path, line, ReasonInvalid, "the document expands to more than %d values through aliases and merges", maxVisits)
		return false
	}
	return true
}

func (d *decoder) errorf(path string, line int, reason Reason, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.src.file, Line: line, Path: path, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// finish returns the problems in file order, each once: a block merged
// twice into one mapping (<<: [*a, *a]) would report its mistakes twice.
func (d *decoder) finish() error {
	d.errs.sortByLine()
	type key struct {
		line       int
		path, text string
	}
	seen := map[key]bool{}
	out := d.errs[:0]
	for _, e := range d.errs {
		k := key{e.Line, e.Path, e.Message}
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	d.errs = out
	return d.errs.err()
}

// document returns the root node of the single YAML document in data, or
// nil after recording why there is none.
func (d *decoder) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.empty(0)
		} else {
			d.syntax(err)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(err)
		return nil
	default:
		d.errorf("", next.Line, ReasonSyntax, "a second YAML document starts here; a cluster file holds exactly one")
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		d.empty(doc.Line)
		return nil
	}
	return doc.Content[0]
}

func (d *decoder) empty(line int) {
	d.errorf("", line, ReasonSyntax, "the file holds no cluster (anvil config init prints an example)")
}

// syntax turns go-yaml's "yaml: line 3: did not find ..." into a FieldError
// with the line in its own field.
func (d *decoder) syntax(err error) {
	msg, _ := strings.CutPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, text
			}
		}
	}
	d.errorf("", line, ReasonSyntax, "%s", msg)
}

// value decodes n into v, reporting problems under path. line is where the
// value's key (or list item) was written, which is where an operator looks.
func (d *decoder) value(n *yaml.Node, path string, line int, v reflect.Value) {
	if !d.spend(1, path, line) {
		return
	}
	if _, ok := d.src.lines[path]; !ok {
		d.src.lines[path] = line
	}
	n = deref(n)
	if n == nil || isNull(n) {
		return
	}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, path, line, v.Elem())
		return
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if d.expect(n, yaml.ScalarNode, path, line, v) {
			if err := u.UnmarshalText([]byte(n.Value)); err != nil {
				d.errorf(path, line, ReasonInvalid, "%s", textError(v, n.Value, err))
			}
		}
		return
	}

	switch v.Kind() {
	case reflect.Struct:
		if d.expect(n, yaml.MappingNode, path, line, v) {
			d.structure(n, path, v)
		}
	case reflect.Map:
		if d.expect(n, yaml.MappingNode, path, line, v) {
			d.mapping(n, path, v)
		}
	case reflect.Slice:
		if d.expect(n, yaml.SequenceNode, path, line, v) {
			s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
			for i, item := range n.Content {
				d.value(item, indexPath(path, i), item.Line, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.String:
		if d.expect(n, yaml.ScalarNode, path, line, v) {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		if d.expect(n, yaml.ScalarNode, path, line, v) {
			switch strings.ToLower(n.Value) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.errorf(path, line, ReasonInvalid, "%q is not a boolean: use true or false", n.Value)
			}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if d.expect(n, yaml.ScalarNode, path, line, v) {
			d.integer(n, path, line, v)
		}
	default:
		// Only reachable by adding a field of a new kind to the types.
		d.errorf(path, line, ReasonInvalid, "internal error: cannot decode into %s", v.Type())
	}
}

// expect reports a node of the wrong kind, like a list where a mapping
// belongs, and says whether n has the wanted kind.
func (d *decoder) expect(n *yaml.Node, kind yaml.Kind, path string, line int, v reflect.Value) bool {
	if n.Kind == kind {
		return true
	}
	d.errorf(path, line, ReasonInvalid, "expected %s, found %s", describeType(v.Type()), describeNode(n))
	return false
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	fields := structFields(v.Type())
	for _, e := range d.entries(n, path) {
		p := keyPath(path, e.key.Value)
		i, ok := fields[e.key.Value]
		if !ok {
			d.errorf(p, e.key.Line, ReasonUnknownField, "%s", unknownField(e.key.Value, v.Type()))
			continue
		}
		d.value(e.val, p, e.key.Line, v.Field(i))
	}
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, e := range d.entries(n, path) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(e.val, keyPath(path, e.key.Value), e.key.Line, elem)
		v.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(v.Type().Key()), elem)
	}
}

type entry struct{ key, val *yaml.Node }

// entries lists the pairs of mapping n with merge keys (<<: *base)
// expanded. Keys written in n win over merged ones, and earlier merge
// sources over later ones, as YAML's merge key specifies; a key written
// twice in n itself is an error.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	if d.merging[n] {
		d.errorf(path, n.Line, ReasonInvalid, "a merge (<<) includes the mapping it is part of")
		return nil
	}
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	// Merges of merges can expand exponentially without visiting a value;
	// they count against the same budget.
	if !d.spend(len(n.Content)/2, path, n.Line) {
		return nil
	}

	var out, merged []entry
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errorf(path, n.Content[i].Line, ReasonInvalid, "keys must be strings, found %s", describeNode(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergeSources(val, path)...)
			continue
		}
		if line, dup := first[k.Value]; dup {
			d.errorf(keyPath(path, k.Value), k.Line, ReasonDuplicate, "duplicate key (first set on line %d)", line)
			continue
		}
		first[k.Value] = k.Line
		out = append(out, entry{k, val})
	}
	for _, e := range merged {
		if _, ok := first[e.key.Value]; !ok {
			first[e.key.Value] = e.key.Line
			out = append(out, e)
		}
	}
	return out
}

func (d *decoder) mergeSources(n *yaml.Node, path string) []entry {
	n = deref(n)
	switch {
	case n != nil && n.Kind == yaml.MappingNode:
		return d.entries(n, path)
	case n != nil && n.Kind == yaml.SequenceNode:
		var out []entry
		for _, item := range n.Content {
			if m := deref(item); m != nil && m.Kind == yaml.MappingNode {
				out = append(out, d.entries(m, path)...)
				continue
			}
			d.errorf(path, item.Line, ReasonInvalid, "a merge (<<) takes mappings, found %s", describeNode(deref(item)))
		}
		return out
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errorf(path, line, ReasonInvalid, "a merge (<<) takes a mapping or a list of mappings, found %s", describeNode(n))
	return nil
}

// integer parses YAML's integer forms (42, 0x2a, 0o52) and checks the
// range of v's type, so that port: 70000 is an error rather than 4464.
func (d *decoder) integer(n *yaml.Node, path string, line int, v reflect.Value) {
	var (
		i64      int64
		u64      uint64
		negative bool
	)
	ok := false
	if n.ShortTag() == "!!int" {
		if err := n.Decode(&i64); err == nil {
			ok, negative, u64 = true, i64 < 0, uint64(i64)
		} else if err := n.Decode(&u64); err == nil {
			ok = true
		}
	}
	if !ok {
		d.errorf(path, line, ReasonInvalid, "%q is not a whole number", n.Value)
		return
	}
	switch v.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		limit := uint64(math.MaxUint64) >> (64 - v.Type().Bits())
		if negative || u64 > limit {
			d.errorf(path, line, ReasonInvalid, "%s is out of range (0 to %d)", n.Value, limit)
			return
		}
		v.SetUint(u64)
	default:
		lo, hi := int64(math.MinInt64)>>(64-v.Type().Bits()), int64(math.MaxInt64)>>(64-v.Type().Bits())
		if (!negative && u64 > math.MaxInt64) || i64 < lo || i64 > hi {
			d.errorf(path, line, ReasonInvalid, "%s is out of range (%d to %d)", n.Value, lo, hi)
			return
		}
		v.SetInt(i64)
	}
}

// textError words a rejected scalar for the operator; netip's own errors
// describe parser internals ("IPv4 field has value >255").
func textError(v reflect.Value, text string, err error) string {
	switch v.Interface().(type) {
	case netip.Addr:
		if p, perr := netip.ParsePrefix(text); perr == nil {
			return fmt.Sprintf("%q is not an IP address (drop the /%d)", text, p.Bits())
		}
		return fmt.Sprintf("%q is not an IP address", text)
	case netip.Prefix:
		if a, aerr := netip.ParseAddr(text); aerr == nil {
			return fmt.Sprintf("%q is an address, not a CIDR prefix: add the prefix length (%s/N)", text, a)
		}
		return fmt.Sprintf("%q is not a CIDR prefix (like 10.96.0.0/12)", text)
	case Duration, Size:
		return err.Error()
	}
	return fmt.Sprintf("%q: %v", text, err)
}

func describeType(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[netip.Addr]():
		return "an IP address"
	case reflect.TypeFor[netip.Prefix]():
		return "a CIDR prefix"
	case reflect.TypeFor[Duration]():
		return "a duration"
	case reflect.TypeFor[Size]():
		return "a size"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a whole number"
}

func describeNode(n *yaml.Node) string {
	switch {
	case n == nil:
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "an unexpected node"
}

// deref follows an alias to its anchored node. go-yaml never makes an
// alias of an alias, but the bound keeps a malformed tree from looping.
func deref(n *yaml.Node) *yaml.Node {
	for range 8 {
		if n == nil || n.Kind != yaml.AliasNode {
			return n
		}
		n = n.Alias
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// structFields maps yaml keys to field indexes, read from the yaml tags so
// that the types stay the single place where keys are spelled.
func structFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := range t.NumField() {
		if name, ok := yamlName(t.Field(i)); ok {
			out[name] = i
		}
	}
	return out
}

func yamlName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return strings.ToLower(f.Name), true
	}
	return name, true
}

// unknownField explains an unknown key: the closest known key when the
// operator probably misspelled one, the nested key when they wrote it one
// level too high (user: beside address instead of under ssh:), else the
// keys that are known here.
func unknownField(key string, t reflect.Type) string {
	var known []string
	for i := range t.NumField() {
		if name, ok := yamlName(t.Field(i)); ok {
			known = append(known, name)
		}
	}
	if s := closest(key, known); s != "" {
		return fmt.Sprintf("unknown field (did you mean %q?)", s)
	}
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		parent, ok := yamlName(f)
		if !ok || ft.Kind() != reflect.Struct || ft.PkgPath() != t.PkgPath() {
			continue
		}
		for j := range ft.NumField() {
			if name, ok := yamlName(ft.Field(j)); ok && strings.EqualFold(name, key) {
				return fmt.Sprintf("unknown field (did you mean %q under %q?)", name, parent)
			}
		}
	}
	return fmt.Sprintf("unknown field (known fields here: %s)", strings.Join(known, ", "))
}

// closest returns the known key nearest to key when it is near enough to be
// a typo: at most one edit per three characters, case ignored.
func closest(key string, known []string) string {
	best, bestDist := "", math.MaxInt
	for _, k := range known {
		if dist := editDistance(strings.ToLower(key), strings.ToLower(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if bestDist <= max(1, len(key)/3) {
		return best
	}
	return ""
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost one, so "nmae"
// is one edit from "name".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
