package calendar_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/internal/calendar"
)

// calendarExprs are the schedules the process layout must read exactly as
// systemd does.
var calendarExprs = []string{
	"minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly", "annually",
	"*-*-* 02:00:00", "02:00", "Mon..Fri 22:30", "Sat,Sun 03:15", "*:0/15", "*-*-1,15 04:00",
	"*-02-29 12:00", "Wed *-*-1..7 01:00", "00/6:00", "*:*:0/20", "2030-01-01", "Mon", "Tue,Thu..Sat 12:00 UTC",
	"*-01..03-* 00:00:00", "2027..2031/2-06-15 08:00",
}

// TestCalendarMatchesSystemd compares the next three times of each
// expression with what systemd-analyze computes from the same base time.
func TestScheduleCalendarMatchesSystemd(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze is needed to check the calendar against systemd: %v", err)
		}
		t.Skipf("no systemd-analyze: %v", err)
	}
	lineRE := regexp.MustCompile(`(?m)^\s*(?:Next elapse|Iter\. #\d+): (.+)$`)
	for _, base := range []time.Time{
		time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC),
		time.Date(2028, 2, 28, 23, 59, 59, 0, time.UTC),
		time.Date(2026, 12, 31, 22, 30, 0, 0, time.UTC),
	} {
		for _, expr := range calendarExprs {
			t.Run(fmt.Sprintf("%s/%s", base.Format("2006-01-02T15:04"), expr), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "calendar", "--iterations=3", fmt.Sprintf("--base-time=@%d", base.Unix()), "--", expr)
				cmd.Env = append(os.Environ(), "TZ=UTC")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("systemd-analyze: %v\n%s", err, out)
				}
				var want []string
				for _, m := range lineRE.FindAllStringSubmatch(string(out), -1) {
					want = append(want, strings.TrimSpace(m[1]))
				}
				if len(want) == 0 && !strings.Contains(string(out), "never") {
					t.Fatalf("no times in systemd-analyze's output:\n%s", out)
				}
				c, err := calendar.Parse(expr)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				at := base
				for range len(want) {
					next, ok := c.Next(at)
					if !ok {
						break
					}
					got = append(got, next.Format("Mon 2006-01-02 15:04:05 MST"))
					at = next
				}
				if strings.Join(got, " | ") != strings.Join(want, " | ") {
					t.Errorf("next times:\n got  %q\n want %q (systemd)\n%s", got, want, out)
				}
			})
		}
	}
}

func TestScheduleCalendarRefuses(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"", "empty"},
		{"*-*~01", "last-days form"},
		{"02:00 Europe/Berlin", "time zones other than UTC"},
		{"25:00", "hour"},
		{"*-13-01", "month"},
		{"Fri..Mon", "runs backwards"},
		{"Mon 02:00 03:00", "in its place"},
		{"*:*:00.5", "fractional"},
		{"*:0/0", "positive"},
		{"Someday", "not a weekday"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := calendar.Parse(tc.expr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("calendar.ParseCalendar(%q) = %v, want an error saying %q", tc.expr, err, tc.want)
			}
			if strings.Contains(tc.want, "other than") || strings.Contains(tc.want, "last-days") || strings.Contains(tc.want, "fractional") {
				if !errors.Is(err, calendar.ErrUnsupported) && !strings.Contains(err.Error(), calendar.ErrUnsupported.Error()) {
					t.Errorf("%v does not say it is unsupported", err)
				}
			}
		})
	}
	if c, _ := calendar.Parse("2020-01-01"); c != nil {
		if _, ok := c.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); ok {
			t.Error("a date in the past has a next time")
		}
	}
}
