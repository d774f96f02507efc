package healer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"
)

// TestBadReportNamesFilesOnceUpToItsBound pins badReport (ac27438): rows
// reported from several build goroutines at once are counted per file and
// reason; each file with malformed rows is named once at the end, in name
// order, with its count and its first row's reason, the first 100 of them
// (100 exactly: no "more" line; past it, one line says how many more); a
// file that cannot be read is logged every time it is reported and is no
// file "with malformed rows"; a row of a JSON Lines file is logged as its
// "line", of a Parquet file as its "row".
func TestBadReportNamesFilesOnceUpToItsBound(t *testing.T) {
	const dir = "txn/date=2026-03-10/"
	// files plus the two first ones: 5, exactly 100, 101 and 132 files.
	for _, files := range []int{3, 98, 99, 130} {
		t.Run(fmt.Sprint(files), func(t *testing.T) {
			var logged bytes.Buffer
			h := &Healer{m: NewMetrics(prometheus.NewRegistry()), log: slog.New(slog.NewJSONHandler(&logged, nil)),
				logBad: rate.Sometimes{First: 10, Interval: time.Hour}}
			b := newBadReport(h, "txn")
			// The first rows logged: one of a Parquet file, one of a JSON
			// Lines file.
			b.add(dir+"a.parquet", 0, "bad_timestamp")
			b.add(dir+"b.jsonl", 1, "not_json")
			name := func(i int) string {
				ext := ".jsonl"
				if i%2 == 1 {
					ext = ".parquet"
				}
				return fmt.Sprintf("%sf%03d%s", dir, i, ext)
			}
			// File i has 1+i%3 malformed rows, the first for reason
			// first-<i>, the others missing_key; 5 unreadable files are
			// reported twice each.
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := g; i < files; i += 8 {
						b.add(name(i), 0, fmt.Sprintf("first-%d", i))
						for j := range i % 3 {
							b.add(name(i), int64(j+1), "missing_key")
						}
					}
					if g < 5 {
						for range 2 {
							b.add(fmt.Sprintf("%sunreadable-%d.parquet", dir, g), -1, "no Parquet footer")
						}
					}
				})
			}
			wg.Wait()
			b.summarize()

			want := []string{dir + "a.parquet", dir + "b.jsonl"}
			for i := range files {
				want = append(want, name(i))
			}
			slices.Sort(want)
			var named []string
			more, unreadable := -1, map[string]int{}
			rowLines := 0
			for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				file, _ := rec["file"].(string)
				switch rec["msg"] {
				case "malformed offline-log row skipped":
					rowLines++
					_, line := rec["line"]
					_, row := rec["row"]
					if strings.HasSuffix(file, ".jsonl") != line || line == row {
						t.Errorf("row of %s logged as %q: want line for JSON Lines, row for Parquet", file, l)
					}
				case "malformed offline-log file skipped":
					unreadable[file]++
				case "offline-log file has malformed rows, skipped":
					named = append(named, file)
					n, _ := rec["rows"].(float64)
					reason, _ := rec["first_reason"].(string)
					var i int
					wantN, wantReason := 1.0, ""
					switch {
					case file == dir+"a.parquet":
						wantReason = "bad_timestamp"
					case file == dir+"b.jsonl":
						wantReason = "not_json"
					default:
						if _, err := fmt.Sscanf(strings.TrimPrefix(file, dir), "f%03d", &i); err != nil {
							t.Fatalf("named %q: %v", file, err)
						}
						wantN, wantReason = float64(1+i%3), fmt.Sprintf("first-%d", i)
					}
					if n != wantN || reason != wantReason {
						t.Errorf("%s named with %v rows, first reason %q; want %v, %q", file, n, reason, wantN, wantReason)
					}
				case "more offline-log files have malformed rows":
					f, _ := rec["files"].(float64)
					more = int(f)
				}
			}
			rows := 2
			for i := range files {
				rows += 1 + i%3
			}
			if rowLines != min(rows, 10) {
				t.Errorf("%d row lines for %d rows, want the first 10 at most (rate-limited)", rowLines, rows)
			}
			for g := range 5 {
				if f := fmt.Sprintf("%sunreadable-%d.parquet", dir, g); unreadable[f] != 2 {
					t.Errorf("unreadable %s logged %d times, want each of 2", f, unreadable[f])
				}
			}
			if len(unreadable) != 5 {
				t.Errorf("unreadable files logged: %v, want 5", unreadable)
			}
			shown := min(len(want), maxBadFilesLogged)
			if !slices.Equal(named, want[:shown]) {
				i := 0
				for i < min(len(named), shown) && named[i] == want[i] {
					i++
				}
				t.Errorf("named %d files, want the first %d of %d by name; from file %d on they differ (%q)", len(named), shown, len(want), i+1, named[i:min(i+3, len(named))])
			}
			switch {
			case len(want) > maxBadFilesLogged && more != len(want)-maxBadFilesLogged:
				t.Errorf("%d files with malformed rows: 'more' line says %d, want %d", len(want), more, len(want)-maxBadFilesLogged)
			case len(want) <= maxBadFilesLogged && more != -1:
				t.Errorf("%d files with malformed rows, all named: a 'more' line says %d", len(want), more)
			}
			total := 0.0
			for _, reason := range []string{"bad_timestamp", "not_json", "missing_key"} {
				total += testutil.ToFloat64(h.m.badRows.WithLabelValues("txn", reason))
			}
			for i := range files {
				total += testutil.ToFloat64(h.m.badRows.WithLabelValues("txn", fmt.Sprintf("first-%d", i)))
			}
			if total != float64(rows) {
				t.Errorf("bad_rows_total counts %v rows, want %d", total, rows)
			}
			// Each unreadable file counts once, as in ReadStats.BadFiles,
			// however many times it is reported.
			if got := testutil.ToFloat64(h.m.badRows.WithLabelValues("txn", "bad_file")); got != 5 {
				t.Errorf(`bad_rows_total{reason="bad_file"} = %v, want 5`, got)
			}
		})
	}
}
