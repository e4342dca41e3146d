package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written the way operators write validities and
// timeouts: Go's form ("90s", "1h30m") or whole days ("365d").
type Duration struct{ time.Duration }

// Days is a Duration of n days.
func Days(n int) Duration { return Duration{time.Duration(n) * 24 * time.Hour} }

// ParseDuration parses s as a Duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil {
			return Duration{}, fmt.Errorf("%q is not a duration (like 90s, 10m, 8760h or 365d)", s)
		}
		return Days(int(n)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Duration{}, fmt.Errorf("%q is not a duration (like 90s, 10m, 8760h or 365d)", s)
	}
	return Duration{d}, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText writes whole days as "Nd" and everything else in Go's form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	day := 24 * time.Hour
	if d.Duration > 0 && d.Duration%day == 0 {
		return strconv.FormatInt(int64(d.Duration/day), 10) + "d"
	}
	return d.Duration.String()
}

// IsZero lets omitempty drop unset durations.
func (d Duration) IsZero() bool { return d.Duration == 0 }

// Size is a byte count written as a plain number or with a binary suffix
// (Ki, Mi, Gi, Ti), as in Kubernetes quantities.
type Size int64

type sizeSuffix struct {
	suffix string
	shift  uint
}

// sizeSuffixes are the binary units a Size is written in, smallest first.
func sizeSuffixes() []sizeSuffix {
	return []sizeSuffix{{"Ki", 10}, {"Mi", 20}, {"Gi", 30}, {"Ti", 40}}
}

// ParseSize parses s as a Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	shift := uint(0)
	num := s
	for _, u := range sizeSuffixes() {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is not a size (like 8Gi, 512Mi or a number of bytes)", s)
	}
	return Size(n << shift), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes the largest exact binary suffix.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	suffixes := sizeSuffixes()
	for i := len(suffixes) - 1; i >= 0; i-- {
		u := suffixes[i]
		if s != 0 && int64(s)%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(s)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
