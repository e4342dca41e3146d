package v1alpha1

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Scalars: integers in YAML's forms with their type's range checked, and the
// words an operator reads when a value has the wrong type or shape.

// integer parses YAML's integer forms (42, 0x2a, 0o52) and checks the
// range of v's type, so that port: 70000 is an error rather than 4464.
func (d *decoder) integer(n *yaml.Node, path string, at position, v reflect.Value) {
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
		d.reject(path, at, "%q is not a whole number", n.Value)
		return
	}
	switch v.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		limit := uint64(math.MaxUint64) >> (64 - v.Type().Bits())
		if negative || u64 > limit {
			d.reject(path, at, "%s is out of range (0 to %d)", n.Value, limit)
			return
		}
		v.SetUint(u64)
	default:
		lo, hi := int64(math.MinInt64)>>(64-v.Type().Bits()), int64(math.MaxInt64)>>(64-v.Type().Bits())
		if (!negative && u64 > math.MaxInt64) || i64 < lo || i64 > hi {
			d.reject(path, at, "%s is out of range (%d to %d)", n.Value, lo, hi)
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
