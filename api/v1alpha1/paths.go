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
// found after decoding can still point at a line, and which fields the
// decoder could not read, so that validation stays quiet about them.
type source struct {
	file string
	// at is where the file wrote each path: the key's position for a field
	// or map entry, the item's for a list item.
	at map[string]position
	// rejected holds the paths whose values the decoder reported and left
	// unset (a wrong type, an unparsable address), and the fields an
	// unknown key was probably meant to be (adress for address). Validation
	// would only add a second message about the same mistake there, like
	// "required" after "not an IP address".
	rejected map[string]bool
}

// position is a 1-based line and column, as go-yaml counts them.
type position struct{ line, column int }

// locate fills in e's file, line and column. A path with no position of
// its own (a field left out, or filled in by Default) takes the position of
// its nearest written ancestor: "hosts[2].role: required" then points at
// hosts[2].
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
		if at, ok := s.at[p]; ok {
			e.Line, e.Column = at.line, at.column
			return
		}
		if p == "" {
			return
		}
		p = parentPath(p)
	}
}

// isRejected says whether the decoder rejected p or a path enclosing it.
func (s *source) isRejected(p string) bool {
	if s == nil || len(s.rejected) == 0 {
		return false
	}
	for {
		if s.rejected[p] {
			return true
		}
		if p == "" {
			return false
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
