package component_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/pmezard/go-difflib/difflib"

	"anvil.dev/anvil/internal/hostfs"
)

func hostfsRoot(s string) hostfs.Root { return hostfs.Root(s) }

func diffLines(want, got []byte) string {
	d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(got)),
		FromFile: "want", ToFile: "got", Context: 2,
	})
	return d
}

// execStartWords reads a unit back with go-systemd's parser and splits its
// ExecStart= the way systemd does (quotes, C escapes, %% and $$), written
// independently of the renderer's quoting so that it checks it.
func execStartWords(t *testing.T, unitFile []byte) []string {
	t.Helper()
	return serviceWords(t, unitFile, "ExecStart")
}

// serviceWords is the one [Service] setting name of a unit, split into
// words as systemd splits it.
func serviceWords(t *testing.T, unitFile []byte, name string) []string {
	t.Helper()
	opts, err := unit.DeserializeOptions(strings.NewReader(string(unitFile)))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	n := 0
	for _, o := range opts {
		if o.Section == "Service" && o.Name == name {
			line, n = o.Value, n+1
		}
	}
	if n != 1 {
		t.Fatalf("unit has %d %s lines, want 1", n, name)
	}
	line = strings.ReplaceAll(line, "\\\n", " ")
	words, err := splitSystemdWords(line)
	if err != nil {
		t.Fatal(err)
	}
	return words
}

func splitSystemdWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quoted && ch == '"':
			quoted = false
		case quoted && ch == '\\':
			i++
			if i == len(s) {
				return nil, fmt.Errorf("dangling backslash in %q", s)
			}
			switch s[i] {
			case 't':
				cur.WriteByte('\t')
			case 'n':
				cur.WriteByte('\n')
			default:
				cur.WriteByte(s[i])
			}
		case !quoted && (ch == ' ' || ch == '\t' || ch == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			continue
		case !quoted && ch == '"':
			quoted = true
		case (ch == '%' || ch == '$') && i+1 < len(s) && s[i+1] == ch:
			cur.WriteByte(ch)
			i++
		case ch == '%' || ch == '$':
			return nil, fmt.Errorf("unescaped %c in %q: systemd would expand it", ch, s)
		default:
			cur.WriteByte(ch)
		}
		inWord = true
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
