package v1alpha1

import (
	"strconv"
)

// Field paths are built the same way by the decoder, which records the line
// of every path it visits, and by Validate, which looks its paths up there.

func fieldPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// keyPath adds a mapping key: plain keys read like fields
// (extraArgs.audit-log-path); keys with dots, slashes or spaces are quoted so
// the path stays unambiguous (labels["node.kubernetes.io/pool"]).
func keyPath(parent, key string) string {
	if key != "" && isPlainKey(key) {
		return fieldPath(parent, key)
	}
	return parent + "[" + strconv.Quote(key) + "]"
}

func isPlainKey(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// source remembers where a decoded Cluster came from, so that problems
// found after decoding can still point at a line.
type source struct {
	file  string
	lines map[string]int
}

// locate fills in e's file and line. A path with no line of its own (a
// field left out, or filled in by Default) takes the line of its nearest
// written ancestor: "hosts[2].role: required" then points at hosts[2].
func (s *source) locate(e *FieldError) {
	if s == nil {
		return
	}
	e.File = s.file
	if e.Line > 0 {
		return
	}
	p := e.Path
	for {
		if l, ok := s.lines[p]; ok {
			e.Line = l
			return
		}
		if p == "" {
			return
		}
		p = parentPath(p)
	}
}

// parentPath cuts the last segment off p. A cut inside a quoted key yields
// a path that was never recorded, so the search simply goes on outwards.
func parentPath(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '.' || p[i] == '[' {
			return p[:i]
		}
	}
	return ""
}
