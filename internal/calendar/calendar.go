package calendar

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Calendar is a systemd calendar expression (systemd.time(7), what a
// timer's OnCalendar takes), for the process layout, where no systemd runs
// the backup timer and anvil keeps the schedule itself. It reads the forms
// a backup schedule uses, so that one backup.schedule means the same on
// both layouts:
//
//	minutely hourly daily weekly monthly quarterly semiannually yearly annually
//	[WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]] [UTC]
//
// where each field is *, or a comma-separated list of values, ranges
// (A..B) and repetitions (A/STEP, A..B/STEP, */STEP), and WEEKDAYS are
// Mon…Sun (or their full names), also in lists and ranges. A missing date
// is every day, a missing time midnight. Not read (refused with a reason):
// the last-days form (~), fractional seconds and time zones other than UTC.
type Calendar struct {
	expr      string
	weekdays  [7]bool // time.Weekday order
	years     []yearRange
	months    [13]bool
	days      [32]bool
	hours     [24]bool
	minutes   [60]bool
	seconds   [60]bool
	utc       bool
	anyYear   bool
	anyOfWeek bool
}

type yearRange struct{ lo, hi, step int }

// String is the expression as given.
func (c *Calendar) String() string { return c.expr }

// ErrUnsupported marks a valid systemd expression this reader does
// not take.
var ErrUnsupported = errors.New("not supported by anvil's scheduler (the process layout)")

// shorthand is the full expression a shorthand such as "hourly" stands for.
func shorthand(s string) (string, bool) {
	full, ok := map[string]string{
		"minutely":     "*-*-* *:*:00",
		"hourly":       "*-*-* *:00:00",
		"daily":        "*-*-* 00:00:00",
		"weekly":       "Mon *-*-* 00:00:00",
		"monthly":      "*-*-01 00:00:00",
		"quarterly":    "*-01,04,07,10-01 00:00:00",
		"semiannually": "*-01,07-01 00:00:00",
		"yearly":       "*-01-01 00:00:00",
		"annually":     "*-01-01 00:00:00",
	}[s]
	return full, ok
}

// weekday reads a weekday's short or full English name.
func weekday(s string) (time.Weekday, bool) {
	d, ok := map[string]time.Weekday{
		"mon": time.Monday, "monday": time.Monday, "tue": time.Tuesday, "tuesday": time.Tuesday,
		"wed": time.Wednesday, "wednesday": time.Wednesday, "thu": time.Thursday, "thursday": time.Thursday,
		"fri": time.Friday, "friday": time.Friday, "sat": time.Saturday, "saturday": time.Saturday,
		"sun": time.Sunday, "sunday": time.Sunday,
	}[s]
	return d, ok
}

// Parse reads expr; its errors say which part is wrong.
func Parse(expr string) (*Calendar, error) {
	c := &Calendar{expr: expr}
	s := strings.TrimSpace(expr)
	if full, ok := shorthand(strings.ToLower(s)); ok {
		s = full
	}
	words := strings.Fields(s)
	if len(words) == 0 {
		return nil, fmt.Errorf("calendar %q is empty", expr)
	}
	bad := func(part, format string, args ...any) error {
		return fmt.Errorf("calendar %q, %s: %s", expr, part, fmt.Sprintf(format, args...))
	}
	if strings.EqualFold(words[len(words)-1], "UTC") {
		c.utc = true
		words = words[:len(words)-1]
	}
	c.anyOfWeek = true
	if len(words) > 0 && !strings.ContainsAny(words[0], "-:") {
		if err := c.parseWeekdays(words[0]); err != nil {
			return nil, bad(words[0], "%v", err)
		}
		words = words[1:]
	}
	date, clock := "*-*-*", "00:00:00"
	haveDate, haveTime := false, false
	for _, w := range words {
		switch {
		case strings.Contains(w, ":") && !haveTime:
			clock, haveTime = w, true
		case strings.Contains(w, "-") && !haveDate && !haveTime:
			date, haveDate = w, true
		default:
			return nil, bad(w, "not a weekday, date (YEAR-MONTH-DAY) or time (HOUR:MINUTE[:SECOND]) in its place (time zones other than UTC are %v)", ErrUnsupported)
		}
	}
	if len(words) == 0 && c.anyOfWeek {
		return nil, fmt.Errorf("calendar %q says no time", expr)
	}
	if strings.Contains(date, "~") {
		return nil, bad(date, "the last-days form (~) is %v", ErrUnsupported)
	}
	dp := strings.Split(date, "-")
	if len(dp) == 2 {
		dp = append([]string{"*"}, dp...)
	}
	if len(dp) != 3 {
		return nil, bad(date, "a date is YEAR-MONTH-DAY or MONTH-DAY")
	}
	if err := c.parseYears(dp[0]); err != nil {
		return nil, bad(date, "year: %v", err)
	}
	if err := parseField(dp[1], 1, 12, c.months[:]); err != nil {
		return nil, bad(date, "month: %v", err)
	}
	if err := parseField(dp[2], 1, 31, c.days[:]); err != nil {
		return nil, bad(date, "day: %v", err)
	}
	tp := strings.Split(clock, ":")
	if len(tp) == 2 {
		tp = append(tp, "00")
	}
	if len(tp) != 3 {
		return nil, bad(clock, "a time is HOUR:MINUTE or HOUR:MINUTE:SECOND")
	}
	if strings.Contains(tp[2], ".") {
		return nil, bad(clock, "fractional seconds are %v", ErrUnsupported)
	}
	for i, f := range []struct {
		name   string
		max    int
		values []bool
	}{{"hour", 23, c.hours[:]}, {"minute", 59, c.minutes[:]}, {"second", 59, c.seconds[:]}} {
		if err := parseField(tp[i], 0, f.max, f.values); err != nil {
			return nil, bad(clock, "%s: %v", f.name, err)
		}
	}
	return c, nil
}

func (c *Calendar) parseWeekdays(s string) error {
	c.anyOfWeek = false
	for _, item := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(item, "..")
		a, ok := weekday(strings.ToLower(lo))
		if !ok {
			return fmt.Errorf("%q is not a weekday (Mon…Sun)", lo)
		}
		b := a
		if isRange {
			if b, ok = weekday(strings.ToLower(hi)); !ok {
				return fmt.Errorf("%q is not a weekday (Mon…Sun)", hi)
			}
		}
		// Ranges run Monday to Sunday, as systemd's do.
		from, to := (int(a)+6)%7, (int(b)+6)%7
		if to < from {
			return fmt.Errorf("%q runs backwards (weeks start on Monday)", item)
		}
		for d := from; d <= to; d++ {
			c.weekdays[(d+1)%7] = true
		}
	}
	return nil
}

func (c *Calendar) parseYears(s string) error {
	if s == "*" {
		c.anyYear = true
		return nil
	}
	for _, item := range strings.Split(s, ",") {
		lo, hi, step, err := parseItem(item, 1970, 2199)
		if err != nil {
			return err
		}
		c.years = append(c.years, yearRange{lo, hi, step})
	}
	return nil
}

// parseField sets values[v] for every v the field names within min..max.
func parseField(s string, min, max int, values []bool) error {
	for _, item := range strings.Split(s, ",") {
		lo, hi, step, err := parseItem(item, min, max)
		if err != nil {
			return err
		}
		for v := lo; v <= hi; v += step {
			values[v] = true
		}
	}
	return nil
}

// parseItem reads *, N, N..M, with an optional /STEP.
func parseItem(item string, min, max int) (lo, hi, step int, err error) {
	body, stepText, hasStep := strings.Cut(item, "/")
	step = 1
	if hasStep {
		if step, err = strconv.Atoi(stepText); err != nil || step < 1 {
			return 0, 0, 0, fmt.Errorf("%q: the repetition must be a positive number", item)
		}
	}
	num := func(t string) (int, error) {
		v, err := strconv.Atoi(t)
		if err != nil || v < min || v > max {
			return 0, fmt.Errorf("%q: %q is not a number from %d to %d", item, t, min, max)
		}
		return v, nil
	}
	switch a, b, isRange := strings.Cut(body, ".."); {
	case body == "*":
		lo, hi = min, max
	case isRange:
		if lo, err = num(a); err != nil {
			return
		}
		if hi, err = num(b); err != nil {
			return
		}
		if hi < lo {
			return 0, 0, 0, fmt.Errorf("%q runs backwards", item)
		}
	default:
		if lo, err = num(body); err != nil {
			return
		}
		hi = lo
		if hasStep {
			hi = max
		}
	}
	return lo, hi, step, nil
}

func (c *Calendar) yearMatches(y int) bool {
	if c.anyYear {
		return true
	}
	for _, r := range c.years {
		if y >= r.lo && y <= r.hi && (y-r.lo)%r.step == 0 {
			return true
		}
	}
	return false
}

// calendarHorizon bounds the search for the next time: an expression that
// never fires again (a year in the past, 31 February) has none.
const calendarHorizon = 5 * 366

// Next is the first time strictly after t that the expression names, in
// t's location (UTC when the expression says so); false when there is
// none within five years.
func (c *Calendar) Next(t time.Time) (time.Time, bool) {
	loc := t.Location()
	if c.utc {
		loc = time.UTC
	}
	after := t.In(loc).Truncate(time.Second).Add(time.Second)
	day := time.Date(after.Year(), after.Month(), after.Day(), 0, 0, 0, 0, loc)
	for i := 0; i < calendarHorizon; i++ {
		y, m, d := day.Date()
		if c.yearMatches(y) && c.months[m] && c.days[d] && (c.anyOfWeek || c.weekdays[day.Weekday()]) {
			for h := range 24 {
				if !c.hours[h] {
					continue
				}
				for mi := range 60 {
					if !c.minutes[mi] {
						continue
					}
					for s := range 60 {
						if !c.seconds[s] {
							continue
						}
						cand := time.Date(y, m, d, h, mi, s, 0, loc)
						// A time a DST change skips does not exist that day.
						if cand.Hour() != h || cand.Minute() != mi || cand.Before(after) {
							continue
						}
						return cand, true
					}
				}
			}
		}
		day = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	}
	return time.Time{}, false
}
