// Package v1alpha1 owns the cluster file: its types, the defaults an operator
// may leave out, a strict decoder and the validation rules.
//
// Reading a file goes through Load, which decodes, defaults and validates in
// that order. Decoding is strict because a misspelled field silently ignored
// is a cluster built differently from what its operator wrote. Decoding goes
// on past a bad field and validation checks what decoded, so one run of
// `anvil config validate` shows every problem, each once. Both report problems as FieldErrors carrying the field path and, for
// clusters that came from a file, the file and line, so other packages can
// trust a *Cluster from Load without re-checking it.
//
// The package does no I/O beyond reading the file handed to Load.
package v1alpha1
