package tiling

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses Go duration syntax plus a leading whole number of days
// ("7d", "1d12h", "90m", "500ms") into milliseconds. Negative durations and
// sub-millisecond remainders are errors.
func ParseDuration(s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var days int64
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > 1e6 {
			return 0, fmt.Errorf("bad duration %q: want Go syntax (1h30m) with an optional leading number of days (7d, 1d12h)", orig)
		}
		days = n
		s = s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q: want Go syntax (1h30m) with an optional leading number of days (7d, 1d12h)", orig)
		}
		rest = d
	}
	if rest < 0 {
		return 0, fmt.Errorf("bad duration %q: negative", orig)
	}
	if rest%time.Millisecond != 0 {
		return 0, fmt.Errorf("bad duration %q: finer than a millisecond", orig)
	}
	return days*Day + rest.Milliseconds(), nil
}

// FormatDuration formats ms as ParseDuration reads it: "7d", "1d12h", "5m".
func FormatDuration(ms int64) string {
	if ms == 0 {
		return "0s"
	}
	neg := ms < 0
	if neg {
		ms = -ms
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	if d := ms / Day; d > 0 {
		fmt.Fprintf(&b, "%dd", d)
		ms %= Day
	}
	units := []struct {
		n    int64
		name string
	}{{Hour, "h"}, {Minute, "m"}, {Second, "s"}, {Millisecond, "ms"}}
	for _, u := range units {
		if q := ms / u.n; q > 0 {
			fmt.Fprintf(&b, "%d%s", q, u.name)
			ms %= u.n
		}
	}
	return b.String()
}
