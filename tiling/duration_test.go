package tiling

import (
	"math"
	"strings"
	"testing"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"7d", 7 * Day},
		{"1d12h", Day + 12*Hour},
		{"90m", 90 * Minute},
		{"500ms", 500},
		{"1h30m", 90 * Minute},
		{"0", 0},
		{"0s", 0},
		{"0d", 0},
		{" 7d ", 7 * Day},
		{"1.5s", 1500},
		{"2d3h4m5s6ms", 2*Day + 3*Hour + 4*Minute + 5*Second + 6},
		{"1000000d", 1_000_000 * Day},
		{"1000us", 1},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseDurationRejects(t *testing.T) {
	for _, in := range []string{
		"", "   ", "d", "7", "7x", "-1m", "-1d", "1d-1h", "1.5d", "1d1d", "7D", "1h7d",
		"1.5ms", "1us", "1ns", "1000001d", "1 d", "1d 12h", "abc", "9999999999999999999d",
	} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %d, want an error", in, got)
		} else if !strings.Contains(err.Error(), "duration") {
			t.Errorf("ParseDuration(%q): error %q does not say what was wrong", in, err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		ms   int64
		want string
	}{
		{0, "0s"},
		{1, "1ms"},
		{500, "500ms"},
		{Second, "1s"},
		{90 * Minute, "1h30m"},
		{5 * Minute, "5m"},
		{Day, "1d"},
		{7 * Day, "7d"},
		{Day + 12*Hour, "1d12h"},
		{Day + 5, "1d5ms"},
		{2*Day + 3*Hour + 4*Minute + 5*Second + 6, "2d3h4m5s6ms"},
		{-90 * Minute, "-1h30m"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.ms); got != tt.want {
			t.Errorf("FormatDuration(%d) = %q, want %q", tt.ms, got, tt.want)
		}
	}
}

func TestDurationRoundTrip(t *testing.T) {
	for _, ms := range []int64{
		0, 1, 999, Second, Minute - 1, Minute, 5 * Minute, Hour, 10 * Hour, Day - 1, Day, 7 * Day,
		30*Day + 1, 365 * Day, 1_000_000*Day + Day - 1,
	} {
		s := FormatDuration(ms)
		back, err := ParseDuration(s)
		if err != nil || back != ms {
			t.Errorf("%d formats as %q, parsed back as %d, %v", ms, s, back, err)
		}
	}
}

func TestAlignDown(t *testing.T) {
	tests := []struct {
		t, g, want int64
	}{
		{0, Minute, 0},
		{1, Minute, 0},
		{Minute - 1, Minute, 0},
		{Minute, Minute, Minute},
		{-1, Minute, -Minute},
		{-Minute, Minute, -Minute},
		{-Minute - 1, Minute, -2 * Minute},
		{-Minute + 1, Minute, -Minute},
		{1_760_000_123_456, Hour, 1_759_996_800_000},
		{7, 1, 7},
		{-7, 1, -7},
		{math.MaxInt64, Second, math.MaxInt64 - 807},
		{MinTime + Second, Second, MinTime + 808},
		// The floor of these is below MinTime: it saturates, so −∞ stays −∞.
		{MinTime, Minute, MinTime},
		{MinTime + 5, Second, MinTime},
	}
	for _, tt := range tests {
		if got := AlignDown(tt.t, tt.g); got != tt.want {
			t.Errorf("AlignDown(%d, %d) = %d, want %d", tt.t, tt.g, got, tt.want)
		}
	}
	for _, x := range []int64{-2 * Hour, -Hour - 1, -1, 0, 1, Hour, 3*Hour + 7} {
		a := AlignDown(x, Hour)
		if !Aligned(a, Hour) || a > x || x-a >= Hour {
			t.Errorf("AlignDown(%d, 1h) = %d is not the floor", x, a)
		}
	}
	if Aligned(-1, Minute) || !Aligned(-Minute, Minute) || !Aligned(0, Minute) {
		t.Error("Aligned is wrong for negatives or zero")
	}
}
