package v1alpha1

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
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
// success the warnings are worth showing the operator. On failure the error
// is an I/O error or FieldErrors holding every problem in the file in one
// pass, in file order: decode problems (unknown fields, values of the wrong
// type or shape) together with what validation finds in the fields that did
// decode. The warnings are returned either way.
func Load(path string) (*Cluster, Warnings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster file: %w", err)
	}
	return load(path, data)
}

// load is Load for data already read from filename.
//
// A field that fails to decode is left unset and remembered, decoding goes
// on with the rest, and the cluster is defaulted and validated as far as it
// decoded, so an operator sees an invalid name beside a misspelt key rather
// than on the next run. Validation keeps quiet about the fields the decoder
// rejected: one mistake, one message. Only a file that is not one YAML
// mapping, or that expands past maxVisits, stops before validation.
func load(filename string, data []byte) (*Cluster, Warnings, error) {
	c, errs := decode(filename, data)
	if c == nil {
		return nil, nil, errs.err()
	}
	c.Default()
	warnings, verrs := validate(c)
	errs = append(errs, verrs...)
	errs.sortByPosition()
	if len(errs) > 0 {
		return nil, warnings, errs
	}
	return c, warnings, nil
}

// Decode parses data as one cluster file strictly: an unknown field, a value
// of the wrong type, a duplicate key, several YAML documents or none are all
// errors. Every problem is reported, as FieldErrors naming filename and line.
// Load goes further, validating what decoded in the same pass.
//
// The returned Cluster is neither defaulted nor validated. It remembers the
// line of each field it was given, so Validate's errors point at lines too.
func Decode(filename string, data []byte) (*Cluster, error) {
	c, errs := decode(filename, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// decode returns what it could decode of data and every problem on the
// way, in file order. The cluster is nil when there is nothing worth
// validating: no single YAML document, or one past the expansion bound.
func decode(filename string, data []byte) (*Cluster, FieldErrors) {
	d := &decoder{src: &source{file: filename, at: map[string]position{}, rejected: map[string]bool{}}}
	root := d.document(data)
	if root == nil {
		return nil, d.finish()
	}
	c := &Cluster{}
	d.value(root, "", pos(root), reflect.ValueOf(c).Elem())
	errs := d.finish()
	if d.exhausted {
		return nil, errs
	}
	c.src = d.src
	return c, errs
}

type decoder struct {
	src     *source
	errs    FieldErrors
	visits  int
	merging map[*yaml.Node]bool
	// exhausted is set once the document expanded past maxVisits; what
	// decoded by then is an arbitrary part of it.
	exhausted bool
}

// spend counts n more values against maxVisits and says whether decoding
// may go on; the first time it may not, it records why.
func (d *decoder) spend(n int, path string, at position) bool {
	if d.exhausted {
		return false
	}
	d.visits += n
	if d.visits > maxVisits {
		d.exhausted = true
		d.errorf(path, at, ReasonInvalid, "the document expands to more than %d values through aliases and merges", maxVisits)
		return false
	}
	return true
}

func (d *decoder) errorf(path string, at position, reason Reason, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.src.file, Line: at.line, Column: at.column, Path: path, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// reject reports a value the decoder could not read and leaves unset, and
// marks path so that validation does not report it a second time.
func (d *decoder) reject(path string, at position, format string, args ...any) {
	d.errorf(path, at, ReasonInvalid, format, args...)
	d.src.rejected[path] = true
}

// finish returns the problems in file order, each once: a block merged
// twice into one mapping (<<: [*a, *a]) would report its mistakes twice.
func (d *decoder) finish() FieldErrors {
	d.errs.sortByPosition()
	type key struct {
		at         position
		path, text string
	}
	seen := map[key]bool{}
	out := d.errs[:0]
	for _, e := range d.errs {
		k := key{position{e.Line, e.Column}, e.Path, e.Message}
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	d.errs = out
	return d.errs
}

func pos(n *yaml.Node) position {
	if n == nil {
		return position{}
	}
	return position{n.Line, n.Column}
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
		d.errorf("", pos(&next), ReasonSyntax, "a second YAML document starts here; a cluster file holds exactly one")
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		d.empty(doc.Line)
		return nil
	}
	return doc.Content[0]
}

func (d *decoder) empty(line int) {
	d.errorf("", position{line: line}, ReasonSyntax, "the file holds no cluster (anvil config init prints an example)")
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
	d.errorf("", position{line: line}, ReasonSyntax, "%s", msg)
}

// value decodes n into v, reporting problems under path. at is where the
// value's key (or list item) was written, which is where an operator looks.
// A value that cannot be read leaves v as it was and is rejected.
func (d *decoder) value(n *yaml.Node, path string, at position, v reflect.Value) {
	if !d.spend(1, path, at) {
		return
	}
	if _, ok := d.src.at[path]; !ok {
		d.src.at[path] = at
	}
	n = deref(n)
	if n == nil || isNull(n) {
		return
	}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, path, at, v.Elem())
		return
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if d.expect(n, yaml.ScalarNode, path, at, v) {
			if err := u.UnmarshalText([]byte(n.Value)); err != nil {
				d.reject(path, at, "%s", textError(v, n.Value, err))
			}
		}
		return
	}

	switch v.Kind() {
	case reflect.Struct:
		if d.expect(n, yaml.MappingNode, path, at, v) {
			d.structure(n, path, v)
		}
	case reflect.Map:
		if d.expect(n, yaml.MappingNode, path, at, v) {
			d.mapping(n, path, v)
		}
	case reflect.Slice:
		if d.expect(n, yaml.SequenceNode, path, at, v) {
			s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
			for i, item := range n.Content {
				d.value(item, indexPath(path, i), pos(item), s.Index(i))
			}
			v.Set(s)
		}
	case reflect.String:
		if d.expect(n, yaml.ScalarNode, path, at, v) {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		if d.expect(n, yaml.ScalarNode, path, at, v) {
			switch strings.ToLower(n.Value) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.reject(path, at, "%q is not a boolean: use true or false", n.Value)
			}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if d.expect(n, yaml.ScalarNode, path, at, v) {
			d.integer(n, path, at, v)
		}
	default:
		// Only reachable by adding a field of a new kind to the types.
		d.reject(path, at, "internal error: cannot decode into %s", v.Type())
	}
}

// expect reports a node of the wrong kind, like a list where a mapping
// belongs, and says whether n has the wanted kind.
func (d *decoder) expect(n *yaml.Node, kind yaml.Kind, path string, at position, v reflect.Value) bool {
	if n.Kind == kind {
		return true
	}
	d.reject(path, at, "expected %s, found %s", describeType(v.Type()), describeNode(n))
	return false
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	fields := structFields(v.Type())
	entries := d.entries(n, path)
	written := map[string]bool{}
	for _, e := range entries {
		written[e.key.Value] = true
	}
	for _, e := range entries {
		p := keyPath(path, e.key.Value)
		i, ok := fields[e.key.Value]
		if !ok {
			msg, meant := unknownField(e.key.Value, v.Type())
			d.errorf(p, pos(e.key), ReasonUnknownField, "%s", msg)
			// The misspelt field is the one left out: "address: required"
			// would repeat "adress: did you mean address?".
			if meant != "" && !written[meant] {
				d.src.rejected[keyPath(path, meant)] = true
			}
			continue
		}
		d.value(e.val, p, pos(e.key), v.Field(i))
	}
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, e := range d.entries(n, path) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(e.val, keyPath(path, e.key.Value), pos(e.key), elem)
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
		d.reject(path, pos(n), "a merge (<<) includes the mapping it is part of")
		return nil
	}
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	// Merges of merges can expand exponentially without visiting a value;
	// they count against the same budget.
	if !d.spend(len(n.Content)/2, path, pos(n)) {
		return nil
	}

	var out, merged []entry
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errorf(path, pos(n.Content[i]), ReasonInvalid, "keys must be strings, found %s", describeNode(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergeSources(val, path)...)
			continue
		}
		if line, dup := first[k.Value]; dup {
			d.errorf(keyPath(path, k.Value), pos(k), ReasonDuplicate, "duplicate key (first set on line %d)", line)
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
			d.reject(path, pos(item), "a merge (<<) takes mappings, found %s", describeNode(deref(item)))
		}
		return out
	}
	d.reject(path, pos(n), "a merge (<<) takes a mapping or a list of mappings, found %s", describeNode(n))
	return nil
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
