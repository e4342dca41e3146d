package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: junitsummary JUNIT.xml")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := summarize(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "read %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	s.write(os.Stdout)
	if len(s.Failed) > 0 {
		os.Exit(1)
	}
}

// The parts of ginkgo's JUnit report a summary needs.
type testSuites struct {
	Suites []struct {
		Cases []testCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type testCase struct {
	Name    string  `xml:"name,attr"`
	Status  string  `xml:"status,attr"`
	Time    float64 `xml:"time,attr"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
	Failure *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Error *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"error"`
}

// result is one test that ran (or skipped itself) with what it said.
type result struct {
	Name, Detail string
	Seconds      float64
}

type summary struct {
	Passed, Failed, Skipped []result
	// NotSelected counts the tests the focus and skip expressions left out.
	NotSelected int
	// Setup counts the suite's own set-up and tear-down nodes that passed.
	Setup int
}

func summarize(r io.Reader) (*summary, error) {
	var ts testSuites
	if err := xml.NewDecoder(r).Decode(&ts); err != nil {
		return nil, err
	}
	s := &summary{}
	for _, suite := range ts.Suites {
		for _, c := range suite.Cases {
			res := result{Name: c.Name, Seconds: c.Time}
			switch {
			case c.Failure != nil || c.Error != nil:
				res.Detail = failureText(c)
				s.Failed = append(s.Failed, res)
			case c.Skipped != nil:
				reason, given := strings.CutPrefix(c.Skipped.Message, "skipped - ")
				if !given {
					s.NotSelected++
					continue
				}
				res.Detail = reason
				s.Skipped = append(s.Skipped, res)
			case strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]"), strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]"),
				strings.HasPrefix(c.Name, "[BeforeSuite]"), strings.HasPrefix(c.Name, "[AfterSuite]"),
				strings.HasPrefix(c.Name, "[ReportBeforeSuite]"), strings.HasPrefix(c.Name, "[ReportAfterSuite]"):
				s.Setup++
			default:
				s.Passed = append(s.Passed, res)
			}
		}
	}
	for _, l := range [][]result{s.Passed, s.Failed, s.Skipped} {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	return s, nil
}

// failureText is the start and end of a failure's message: the report may leave the
// message attribute out and put it at the head of the description.
func failureText(c testCase) string {
	var msg, text string
	if c.Failure != nil {
		msg, text = c.Failure.Message, c.Failure.Text
	} else {
		msg, text = c.Error.Message, c.Error.Text
	}
	if strings.TrimSpace(msg) == "" {
		msg = text
	}
	// A gomega message says what it got first and what it wanted last:
	// keep both ends.
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if len(lines) > 8 {
		lines = append(append(lines[:4:4], "…"), lines[len(lines)-4:]...)
	}
	return strings.Join(lines, "\n      ")
}

func (s *summary) write(w io.Writer) {
	fmt.Fprintf(w, "passed %d, failed %d, skipped %d (and %d not selected by the focus)\n", len(s.Passed), len(s.Failed), len(s.Skipped), s.NotSelected)
	if len(s.Failed) > 0 {
		fmt.Fprintln(w, "\nFAILED")
		for _, r := range s.Failed {
			fmt.Fprintf(w, "  %s (%.0fs)\n      %s\n", r.Name, r.Seconds, r.Detail)
		}
	}
	if len(s.Skipped) > 0 {
		fmt.Fprintln(w, "\nSKIPPED")
		for _, r := range s.Skipped {
			fmt.Fprintf(w, "  %s\n      %s\n", r.Name, r.Detail)
		}
	}
	if len(s.Passed) > 0 {
		fmt.Fprintln(w, "\nPASSED")
		for _, r := range s.Passed {
			fmt.Fprintf(w, "  %s (%.0fs)\n", r.Name, r.Seconds)
		}
	}
}
