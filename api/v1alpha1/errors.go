package v1alpha1

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Reason classifies a FieldError so that callers and tests can tell problems
// apart without matching message text.
type Reason string

const (
	// ReasonSyntax is a YAML syntax error or a file that is not exactly one
	// YAML document.
	ReasonSyntax Reason = "Syntax"
	// ReasonUnknownField is a key the cluster file does not have.
	ReasonUnknownField Reason = "UnknownField"
	// ReasonInvalid is a value of the wrong shape or one a rule rejects.
	ReasonInvalid Reason = "Invalid"
	// ReasonRequired is a missing value that has no default.
	ReasonRequired Reason = "Required"
	// ReasonDuplicate is a key, name or address given twice.
	ReasonDuplicate Reason = "Duplicate"
	// ReasonNotSupported is a value outside a fixed set (a role, a layout).
	ReasonNotSupported Reason = "NotSupported"
)

// FieldError is one problem with a cluster file.
type FieldError struct {
	// File, Line and Column locate the problem; all are empty for a Cluster
	// that did not come from a file. Column is 1-based and, like Line, points
	// at the field's key (or list item), not at its value.
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
	// Path is the field's path from the document root, like
	// hosts[2].address; empty for problems with the whole document.
	Path    string `json:"path,omitempty"`
	Reason  Reason `json:"reason"`
	Message string `json:"message"`
}

// Error formats the problem the way compilers do, so that editors can jump
// to it: "cluster.yaml:14: hosts[2].address: message".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Location() != "" {
		b.WriteString(e.Location())
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Location is "file:line", "file", "line N" or empty, whichever is known.
// The column stays out of the text, which editors and scripts already
// parse as file:line; it is in the JSON form and orders problems on a line.
func (e *FieldError) Location() string {
	switch {
	case e.File != "" && e.Line > 0:
		return e.File + ":" + strconv.Itoa(e.Line)
	case e.File != "":
		return e.File
	case e.Line > 0:
		return "line " + strconv.Itoa(e.Line)
	}
	return ""
}

// FieldErrors is every problem found in one pass. As an error it is never
// empty: functions return a nil error rather than an empty FieldErrors.
type FieldErrors []*FieldError

// Warnings are problems that do not stop anvil but that an operator should
// hear about, like an even number of masters.
type Warnings = FieldErrors

// Error lists the problems one per line.
func (es FieldErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find a single *FieldError.
func (es FieldErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// AsFieldErrors returns the FieldErrors in err, or nil when err holds none.
func AsFieldErrors(err error) FieldErrors {
	var es FieldErrors
	if errors.As(err, &es) {
		return es
	}
	var e *FieldError
	if errors.As(err, &e) {
		return FieldErrors{e}
	}
	return nil
}

// err returns es as an error, or nil when empty, so that callers never see
// a non-nil error holding no problems.
func (es FieldErrors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// sortByPosition orders problems as they appear in the file, by line and
// then column; problems without a line keep their relative order at the
// front, and so do problems at the same place.
func (es FieldErrors) sortByPosition() {
	slices.SortStableFunc(es, func(a, b *FieldError) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}
