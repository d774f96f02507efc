package tiling

import (
	"strings"
	"testing"
)

func TestNewViewReportsEveryProblem(t *testing.T) {
	_, err := NewView(View{
		Name:          "v",
		Granularity:   7 * Second, // does not divide a day
		LifetimeStart: 3,
		Features: []Feature{
			{Name: "a", Function: "median", Column: "x"},
			{Name: "a", Function: Sum, Column: "x", Window: Hour},
			{Name: "b", Function: Sum},
			{Name: "c", Function: Count, Window: -Minute},
			{Name: "d", Function: Max, Column: "x", Window: 10 * Second},
			{Function: Count},
		},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"no topic",
		"no entity field",
		"no timestamp field",
		"granularity 7s must divide a day",
		"lifetime_start must be aligned",
		`feature "a": unknown function`,
		`feature "a": duplicate name`,
		`feature "a": window 1h is not a multiple of the granularity 7s`,
		`feature "b": function sum needs a column`,
		`feature "c": window must be positive or lifetime`,
		`feature "d": window 10s is not a multiple of the granularity 7s`,
		"a feature has no name",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 12 {
		t.Errorf("%d problems reported, want 12:\n%v", n, err)
	}

	if _, err := NewView(View{}); err == nil ||
		!strings.Contains(err.Error(), "no name") || !strings.Contains(err.Error(), "no features") {
		t.Errorf("empty view: %v", err)
	}
	if _, err := NewView(View{Name: "v", Topic: "t", Entity: "e", Timestamp: "ts", Granularity: -Minute, LifetimeStart: MinTime,
		Features: []Feature{{Name: "n", Function: Count}}}); err == nil || !strings.Contains(err.Error(), "granularity must be positive") {
		t.Errorf("negative granularity: %v", err)
	}
}

func TestDefaultGranularity(t *testing.T) {
	tests := []struct {
		name    string
		windows []int64
		want    int64
	}{
		{"a window under an hour gives minutes", []int64{30 * Minute}, Minute},
		{"59 minutes still gives minutes", []int64{59 * Minute}, Minute},
		{"one hour gives 5 minutes", []int64{Hour}, 5 * Minute},
		{"under 10 hours gives 5 minutes", []int64{9*Hour + 55*Minute}, 5 * Minute},
		{"10 hours gives an hour", []int64{10 * Hour}, Hour},
		{"7 days gives an hour", []int64{7 * Day}, Hour},
		{"lifetime only gives an hour", []int64{Lifetime}, Hour},
		{"the smallest window decides", []int64{7 * Day, Lifetime, 30 * Minute, 2 * Hour}, Minute},
		{"lifetime does not count as small", []int64{Lifetime, 2 * Hour}, 5 * Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []Feature
			for i, w := range tt.windows {
				fs = append(fs, Feature{Name: string(rune('a' + i)), Function: Count, Window: w})
			}
			if got := DefaultGranularity(fs); got != tt.want {
				t.Errorf("DefaultGranularity = %s, want %s", FormatDuration(got), FormatDuration(tt.want))
			}
			v, err := NewView(View{Name: "v", Topic: "t", Entity: "e", Timestamp: "ts", LifetimeStart: MinTime, Features: fs})
			if err != nil {
				t.Fatal(err)
			}
			if v.Granularity != tt.want {
				t.Errorf("NewView chose %s, want %s", FormatDuration(v.Granularity), FormatDuration(tt.want))
			}
		})
	}
	// An explicit granularity overrides the default.
	v := newTestView(t, Second, MinTime, Feature{Name: "n", Function: Count, Window: 7 * Day})
	if v.Granularity != Second {
		t.Errorf("override ignored: %s", FormatDuration(v.Granularity))
	}
}

func TestViewLayout(t *testing.T) {
	v := newTestView(t, Minute, MinTime,
		Feature{Name: "sum1h", Function: Sum, Column: "amount", Window: Hour},
		Feature{Name: "sum1d", Function: Sum, Column: "amount", Window: Day},
		Feature{Name: "n", Function: Count, Window: Hour},
		Feature{Name: "nAmount", Function: Count, Column: "amount", Window: Hour},
		Feature{Name: "last", Function: Last, Column: "merchant"},
	)
	if got := strings.Join(v.Columns(), ","); got != "amount,merchant" {
		t.Errorf("columns %s", got)
	}
	// The two sums share one partial aggregate; the two counts do not.
	if len(v.aggs) != 4 {
		t.Errorf("%d partial aggregates, want 4: %+v", len(v.aggs), v.aggs)
	}
	if v.Span() != Hour {
		t.Errorf("span %s", FormatDuration(v.Span()))
	}
	for g, span := range map[int64]int64{Second: Hour, Minute: Hour, 5 * Minute: Hour, 7 * Minute: 56 * Minute, Hour: Day, Day: Day, 2 * Day: 2 * Day} {
		if got := recordSpan(g); got != span {
			t.Errorf("recordSpan(%s) = %s, want %s", FormatDuration(g), FormatDuration(got), FormatDuration(span))
		}
	}
	// The fingerprint follows the layout, not the names or windows.
	w := newTestView(t, Minute, MinTime,
		Feature{Name: "x", Function: Sum, Column: "amount", Window: 2 * Hour},
		Feature{Name: "y", Function: Count, Window: Hour},
		Feature{Name: "z", Function: Count, Column: "amount", Window: Hour},
		Feature{Name: "w", Function: Last, Column: "merchant", Window: Day},
	)
	if v.Fingerprint() != w.Fingerprint() {
		t.Error("same layout, different fingerprints")
	}
	u := newTestView(t, 5*Minute, MinTime, Feature{Name: "x", Function: Sum, Column: "amount", Window: Hour})
	if u.Fingerprint() == w.Fingerprint() {
		t.Error("different layouts, same fingerprint")
	}
}

func TestReadRange(t *testing.T) {
	v := newTestView(t, Minute, -Hour,
		Feature{Name: "a", Function: Count, Window: 5 * Minute},
		Feature{Name: "b", Function: Count, Window: Hour},
	)
	from, to := v.ReadRange(10*Minute + 1)
	if from != -50*Minute || to != 11*Minute {
		t.Errorf("ReadRange = [%d, %d)", from, to)
	}
	v = newTestView(t, Minute, 5*Minute, Feature{Name: "life", Function: Count})
	if from, to := v.ReadRange(10 * Minute); from != 5*Minute || to != 11*Minute {
		t.Errorf("lifetime ReadRange = [%d, %d)", from, to)
	}
}
