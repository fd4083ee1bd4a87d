package herald

import (
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration as time.ParseDuration does, and also
// accepts whole days with the unit "d" ("7d", "1d12h"). Settings in the API,
// the CLI and the config file all use this form.
func ParseDuration(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseInt(days, 10, 32)
	if err != nil || n < 0 || strings.ContainsAny(days, "+-") {
		return 0, &time.ParseError{Layout: "duration", Value: s, Message: ": invalid day count"}
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err == nil && r < 0 || strings.HasPrefix(rest, "+") {
			err = &time.ParseError{Layout: "duration", Value: s, Message: ": invalid duration after the days"}
		}
		if err != nil {
			return 0, err
		}
		d += r
	}
	return d, nil
}

// FormatDuration writes d in the form ParseDuration reads, using days when d
// is a whole number of them and dropping zero units ("7d", "90m", "1h30m").
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	day := 24 * time.Hour
	if d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
