package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tilestream/tilestream/tiling"
)

// A file that cannot be decoded is counted under one fixed reason label,
// whatever its message says (a file name, an S3 request id): the label set
// of tilestream_healer_bad_rows_total stays bounded. Bad rows keep their
// decoder reason.
func TestBadFilesShareOneMetricLabel(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Day, tiling.Lifetime}, tiling.MinTime)
	w := newWorldOn(t, "pebble", v, 5*tiling.Minute)
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	day := now - 2*tiling.Day
	w.dropJSONL("good.jsonl", day, []map[string]any{{"user_id": "k1", "ts": float64(day), "amount": 1.0}})
	dir := filepath.Join(w.offline.Root(), v.Name, "date="+time.UnixMilli(day).UTC().Format("2006-01-02"))
	for _, name := range []string{"junk-a.parquet", "junk-b.parquet"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not parquet at all "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.jsonl"), []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := w.h.Heal(context.Background(), v.Name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BadFiles != 2 || res.BadRows != 1 {
		t.Fatalf("bad files %d, bad rows %d; want 2 and 1", res.BadFiles, res.BadRows)
	}
	if n := testutil.CollectAndCount(w.h.m.badRows); n != 2 {
		t.Errorf("%d label sets of tilestream_healer_bad_rows_total; want 2 (bad_file and the row's reason)", n)
	}
	if got := testutil.ToFloat64(w.h.m.badRows.WithLabelValues(v.Name, "bad_file")); got != 2 {
		t.Errorf(`bad_rows_total{reason="bad_file"} = %v, want 2`, got)
	}
	w.check("after a heal with bad files", []int64{now})
}

// TestEveryBadFileIsNamedInTheLog: however many malformed rows a heal
// meets (their own log lines are rate-limited), the log names every file
// that had one, with its count, and every file that could not be read at
// all, by its path in the offline log; a JSON Lines row is named by its
// line (from 1).
func TestEveryBadFileIsNamedInTheLog(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Day, tiling.Lifetime}, tiling.MinTime)
	w := newWorldOn(t, "pebble", v, 5*tiling.Minute)
	var logged bytes.Buffer
	w.h.log = slog.New(slog.NewJSONHandler(&logged, nil))
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	w.now, w.arch.e = now, now
	day := now - 2*tiling.Day
	dateDir := "date=" + time.UnixMilli(day).UTC().Format("2006-01-02")
	dir := filepath.Join(w.offline.Root(), v.Name, dateDir)
	w.dropJSONL("good.jsonl", day, []map[string]any{{"user_id": "k1", "ts": float64(day), "amount": 1.0}})
	const files = 15
	for i := range files {
		junk := fmt.Sprintf("junk-%02d.parquet", i)
		if err := os.WriteFile(filepath.Join(dir, junk), []byte("not parquet at all"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Line 1 fine, lines 2 and 3 malformed.
		lines := fmt.Sprintf(`{"user_id":"k2","ts":%d,"amount":2}`+"\n{not json\n[1]\n", day+int64(i))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("rows-%02d.jsonl", i)), []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := w.h.Heal(context.Background(), v.Name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BadFiles != files || res.BadRows != 2*files {
		t.Fatalf("bad files %d, bad rows %d; want %d and %d", res.BadFiles, res.BadRows, files, 2*files)
	}
	skipped, withRows, rowLines := map[string]bool{}, map[string]float64{}, 0
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		file, _ := rec["file"].(string)
		switch rec["msg"] {
		case "malformed offline-log file skipped":
			skipped[file] = true
		case "offline-log file has malformed rows, skipped":
			withRows[file], _ = rec["rows"].(float64)
		case "malformed offline-log row skipped":
			rowLines++
			if line, _ := rec["line"].(float64); line != 2 && line != 3 {
				t.Errorf("row line %q: want line 2 or 3", l)
			}
		}
	}
	if rowLines >= 2*files {
		t.Errorf("%d log lines for %d malformed rows: their rate is not bounded", rowLines, 2*files)
	}
	for i := range files {
		junk := v.Name + "/" + dateDir + "/" + fmt.Sprintf("junk-%02d.parquet", i)
		if !skipped[junk] {
			t.Errorf("unreadable file %s not named in the log (named: %v)", junk, skipped)
		}
		rows := v.Name + "/" + dateDir + "/" + fmt.Sprintf("rows-%02d.jsonl", i)
		if withRows[rows] != 2 {
			t.Errorf("file %s: logged with %v malformed rows, want 2 (logged: %v)", rows, withRows[rows], withRows)
		}
	}
	w.check("after a heal with bad files", []int64{now})
}
