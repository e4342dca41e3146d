package v1alpha1

import (
	"fmt"
	"math"
	"reflect"
	"strings"
)

// Keys: the yaml keys of the types, read from their tags, and what an
// unknown key probably meant.

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
// keys that are known here. meant is the known key of t the operator
// probably misspelled, or "".
func unknownField(key string, t reflect.Type) (msg, meant string) {
	var known []string
	for i := range t.NumField() {
		if name, ok := yamlName(t.Field(i)); ok {
			known = append(known, name)
		}
	}
	if s := closest(key, known); s != "" {
		return fmt.Sprintf("unknown field (did you mean %q?)", s), s
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
				return fmt.Sprintf("unknown field (did you mean %q under %q?)", name, parent), ""
			}
		}
	}
	return fmt.Sprintf("unknown field (known fields here: %s)", strings.Join(known, ", ")), ""
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
