package healer

import (
	"context"
	"os"
	"path/filepath"
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
