package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

func main() {
	accepted := flag.String("accepted", "", "the accepted skips `file` (hack/conformance-skips): tests it names that did not run are listed as skipped, with its reason")
	focus := flag.String("focus", "", "the run's focus `regexp`: only tests it selects count as accepted skips")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: junitsummary [-accepted FILE -focus REGEXP] JUNIT.xml")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	var skips []acceptedSkip
	if *accepted != "" {
		var err error
		if skips, err = readAcceptedSkips(*accepted); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	focusRE, err := regexp.Compile(*focus)
	if err != nil {
		fmt.Fprintf(os.Stderr, "-focus: %v\n", err)
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := summarize(f, focusRE, skips)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "read %s: %v\n", flag.Arg(0), err)
		os.Exit(2)
	}
	s.write(os.Stdout)
	if len(s.Failed) > 0 {
		os.Exit(1)
	}
}

// acceptedSkip is one entry of the accepted skips file: the expression the
// run's --skip gets and why this machine cannot run what it matches.
type acceptedSkip struct {
	re     *regexp.Regexp
	reason string
	line   int // where re is in the file
}

// readAcceptedSkips parses the accepted skips file: a line that starts with
// neither blank nor "#" is an expression, the indented lines after it its
// reason; blank and "#" lines are left out.
func readAcceptedSkips(path string) ([]acceptedSkip, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var skips []acceptedSkip
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if len(skips) == 0 {
				return nil, fmt.Errorf("%s:%d: a reason before any expression", path, n)
			}
			last := &skips[len(skips)-1]
			last.reason = strings.TrimSpace(last.reason + " " + strings.TrimSpace(line))
		default:
			re, err := regexp.Compile(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, n, err)
			}
			skips = append(skips, acceptedSkip{re: re, line: n})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, sk := range skips {
		if sk.reason == "" {
			return nil, fmt.Errorf("%s:%d: the expression has no reason (indented lines after it)", path, sk.line)
		}
	}
	if len(skips) == 0 {
		return nil, errors.New(path + ": no expression")
	}
	return skips, nil
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
	// Accepted are the tests an accepted skip left out, with its reason
	// (they count as skipped).
	Accepted []result
	// NotSelected counts the tests the focus and skip expressions left out.
	NotSelected int
	// Setup counts the suite's own set-up and tear-down nodes that passed.
	Setup int
}

// summarize reads a report. A test that did not run, is selected by focus
// and matches one of skips counts as an accepted skip.
func summarize(r io.Reader, focus *regexp.Regexp, skips []acceptedSkip) (*summary, error) {
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
					if why, ok := acceptedReason(c.Name, focus, skips); ok {
						res.Detail = why
						s.Accepted = append(s.Accepted, res)
					} else {
						s.NotSelected++
					}
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
	for _, l := range [][]result{s.Passed, s.Failed, s.Skipped, s.Accepted} {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	return s, nil
}

// acceptedReason is the reason of the first accepted skip that left out
// the test name, when the focus selects it.
func acceptedReason(name string, focus *regexp.Regexp, skips []acceptedSkip) (string, bool) {
	if len(skips) == 0 || focus != nil && !focus.MatchString(name) {
		return "", false
	}
	for _, sk := range skips {
		if sk.re.MatchString(name) {
			return sk.reason, true
		}
	}
	return "", false
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
	accepted := ""
	if len(s.Accepted) > 0 {
		accepted = fmt.Sprintf("%d of them accepted skips; ", len(s.Accepted))
	}
	fmt.Fprintf(w, "passed %d, failed %d, skipped %d (%sand %d not selected by the focus)\n", len(s.Passed), len(s.Failed), len(s.Skipped)+len(s.Accepted), accepted, s.NotSelected)
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
	if len(s.Accepted) > 0 {
		fmt.Fprintln(w, "\nSKIPPED BY AN ACCEPTED SKIP (hack/conformance-skips)")
		for _, r := range s.Accepted {
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
