package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

// Issue 3's feature options through the YAML config, for every function:
// each option another function takes is rejected by name, each bound is
// checked on both sides, and the issue's own examples are read as written.

// functionRequired is the YAML a function needs beside name and window.
func functionRequired(f tiling.Function) string {
	var parts []string
	if f != tiling.Count {
		parts = append(parts, "column: c")
	}
	switch f {
	case tiling.FirstN, tiling.LastN, tiling.LastDistinctN:
		parts = append(parts, "n: 3")
	case tiling.TopK:
		parts = append(parts, "k: 3")
	case tiling.ApproxPercentile:
		parts = append(parts, "percentiles: [0.5]")
	}
	return strings.Join(parts, ", ")
}

// optionYAML is a valid value of each option, as the config writes it.
var optionYAML = map[string]string{
	"n": "n: 3", "k": "k: 3", "precision": "precision: 12", "percentiles": "percentiles: [0.5]",
	"accuracy": "accuracy: 0.01", "max_bins": "max_bins: 100", "max_value_bytes": "max_value_bytes: 64",
}

// featureYAML is a feature of f with its required options and extra; an
// extra option replaces the required one of its name.
func featureYAML(f tiling.Function, extra ...string) string {
	parts := []string{"name: f", "function: " + string(f), "window: 1h"}
	for _, req := range strings.Split(functionRequired(f), ", ") {
		name, _, _ := strings.Cut(req, ":")
		if req != "" && !slices.ContainsFunc(extra, func(e string) bool { return strings.HasPrefix(e, name+":") }) {
			parts = append(parts, req)
		}
	}
	return "{" + strings.Join(append(parts, extra...), ", ") + "}"
}

func TestEveryFunctionRejectsOtherFunctionsOptions(t *testing.T) {
	for _, f := range tiling.Functions {
		t.Run(string(f), func(t *testing.T) {
			if _, err := parseConfig([]byte(viewWith("", featureYAML(f)))); err != nil {
				t.Fatalf("with its required options only: %v", err)
			}
			for option, y := range optionYAML {
				if slices.Contains(f.Options(), option) {
					continue
				}
				_, err := parseConfig([]byte(viewWith("", featureYAML(f, y))))
				if err == nil {
					t.Errorf("%s with %s: accepted", f, y)
					continue
				}
				want := fmt.Sprintf("views[0] (v) features[0] (f): %s applies only to ", option)
				if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, ", not to "+string(f)) || len(problemsOf(err)) != 1 {
					t.Errorf("%s with %s: %v", f, y, err)
				}
			}
		})
	}
}

func TestFunctionOptionBounds(t *testing.T) {
	for _, c := range []struct {
		f     tiling.Function
		yaml  string
		wrong string // "": accepted
	}{
		{tiling.LastN, "n: 1", ""},
		{tiling.FirstN, "n: 1000", ""},
		{tiling.LastDistinctN, "n: 1000", ""},
		{tiling.FirstN, "n: 0", "n must be within 1..1000, got 0"},
		{tiling.LastN, "n: 1001", "n must be within 1..1000, got 1001"},
		{tiling.LastDistinctN, "n: -1", "n must be within 1..1000, got -1"},
		{tiling.TopK, "k: 1", ""},
		{tiling.TopK, "k: 1000", ""},
		{tiling.TopK, "k: 0", "k must be within 1..1000, got 0"},
		{tiling.TopK, "k: 1001", "k must be within 1..1000, got 1001"},
		{tiling.ApproxCountDistinct, "precision: 4", ""},
		{tiling.ApproxCountDistinct, "precision: 16", ""},
		{tiling.ApproxCountDistinct, "precision: 0", "precision must be within 4..16, got 0"},
		{tiling.ApproxCountDistinct, "precision: 17", "precision must be within 4..16, got 17"},
		{tiling.ApproxPercentile, "accuracy: 0.001", ""},
		{tiling.ApproxPercentile, "accuracy: 0.5", ""},
		{tiling.ApproxPercentile, "accuracy: 0.0009", "accuracy must be within 0.001..0.5, got 0.0009"},
		{tiling.ApproxPercentile, "accuracy: 0.51", "accuracy must be within 0.001..0.5, got 0.51"},
		{tiling.ApproxPercentile, "max_bins: 8", ""},
		{tiling.ApproxPercentile, "max_bins: 16384", ""},
		{tiling.ApproxPercentile, "max_bins: 7", "max_bins must be within 8..16384, got 7"},
		{tiling.ApproxPercentile, "max_bins: 16385", "max_bins must be within 8..16384, got 16385"},
		{tiling.Last, "max_value_bytes: 1", ""},
		{tiling.TopK, "max_value_bytes: 0", "max_value_bytes must be within 1..368640, got 0"},
		{tiling.First, "max_value_bytes: 368641", "max_value_bytes must be within 1..368640, got 368641"},
	} {
		t.Run(string(c.f)+" "+c.yaml, func(t *testing.T) {
			_, err := parseConfig([]byte(viewWith("", featureYAML(c.f, c.yaml))))
			switch {
			case c.wrong == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.wrong == "":
			case err == nil:
				t.Fatalf("accepted; want %q", c.wrong)
			case !strings.Contains(err.Error(), "views[0] (v) features[0] (f): "+c.wrong) || len(problemsOf(err)) != 1:
				t.Errorf("got %v\nwant the one problem %q", err, c.wrong)
			}
		})
	}
	// The percentile lists: each problem once, by value.
	for _, c := range []struct{ yaml, wrong string }{
		{"percentiles: []", "percentiles is missing"},
		{"percentiles: [0, 1]", ""},
		{"percentiles: [-0.1]", "percentile -0.1 is not within 0..1"},
		{"percentiles: [1.5]", "percentile 1.5 is not within 0..1"},
		{"percentiles: [.nan]", "percentile NaN is not within 0..1"},
		{"percentiles: [0.9, 0.9]", "percentile 0.9 is listed twice"},
	} {
		y := viewWith("", "{name: f, function: approx_percentile, column: c, window: 1h, "+c.yaml+"}")
		_, err := parseConfig([]byte(y))
		switch {
		case c.wrong == "" && err != nil:
			t.Errorf("%s rejected: %v", c.yaml, err)
		case c.wrong == "":
		case err == nil:
			t.Errorf("%s accepted; want %q", c.yaml, c.wrong)
		case !strings.Contains(err.Error(), c.wrong) || len(problemsOf(err)) != 1:
			t.Errorf("%s: got %v\nwant the one problem %q", c.yaml, err, c.wrong)
		}
	}
}

// TestIssueExamplesParse reads the feature entries issue 3 gives as examples
// (with the name, column and window the config requires added where the
// issue leaves them out).
func TestIssueExamplesParse(t *testing.T) {
	y := viewWith("", `{name: p99_amount_1d, function: approx_percentile, column: amount, window: 1d, percentiles: [0.5, 0.99], accuracy: 0.01},
		{name: last_10, function: last_n, column: merchant_id, window: 1d, n: 10},
		{name: merchants_1d, function: approx_count_distinct, column: merchant_id, window: 1d, precision: 12}`)
	s, err := parseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	got := s.Views[0].View.Features
	want := []tiling.Feature{
		{Name: "p99_amount_1d", Function: tiling.ApproxPercentile, Column: "amount", Window: tiling.Day, Percentiles: []float64{0.5, 0.99}, Accuracy: 0.01},
		{Name: "last_10", Function: tiling.LastN, Column: "merchant_id", Window: tiling.Day, N: 10},
		{Name: "merchants_1d", Function: tiling.ApproxCountDistinct, Column: "merchant_id", Window: tiling.Day, Precision: 12},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}
