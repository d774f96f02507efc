package state

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

func openPebble(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Path: dir}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tableFiles lists the files waiting in the store's table directory.
func tableFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, tablesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestKeyLessIsStoreOrder: KeyLess orders keys as their encodings in the
// store order (a length prefix, then the bytes), lengths past one varint
// byte included.
func TestKeyLessIsStoreOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var keys []string
	for range 400 {
		n := r.IntN(300)
		if r.IntN(3) == 0 {
			n = r.IntN(4)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + r.IntN(3))
		}
		keys = append(keys, string(b))
	}
	keys = append(keys, strings.Repeat("z", 127), strings.Repeat("a", 128), strings.Repeat("a", 129), strings.Repeat("a", 256))
	for i, a := range keys {
		for _, b := range keys[i:] {
			want := bytes.Compare(appendString(nil, a), appendString(nil, b)) < 0
			if KeyLess(a, b) != want {
				t.Fatalf("KeyLess(len %d, len %d) = %v, want %v", len(a), len(b), !want, want)
			}
			if c := bytes.Compare(appendString(nil, a), appendString(nil, b)); KeyCompare(a, b) != c || KeyCompare(b, a) != -c {
				t.Fatalf("KeyCompare(len %d, len %d) = %d, reversed %d, want %d", len(a), len(b), KeyCompare(a, b), KeyCompare(b, a), c)
			}
		}
	}
}

// TestTablesIngest: records put in tables are invisible until ingested,
// then read back as a batch would have written them; an abort or a table
// with keys out of order leaves nothing behind; Open clears tables a
// stopped process left.
func TestTablesIngest(t *testing.T) {
	dir := t.TempDir()
	s := openPebble(t, dir)
	v := lastView(t)
	rec := func(start int64, n int) *tiling.Record {
		r := &tiling.Record{Start: start}
		for i := range n {
			e := ev(v, "k", start+int64(i)*tiling.Minute, 0, int64(i), float64(i), 3)
			v.Aggregate(r, &e)
		}
		return r
	}
	day := int64(20 * tiling.Day)
	keys := []string{"b", "aa", "c", strings.Repeat("k", 200), "a"}
	sort.Slice(keys, func(i, j int) bool { return KeyLess(keys[i], keys[j]) })

	tb := s.NewTables(v, 7)
	for i, k := range keys {
		det := rec(day+int64(i)*tiling.Hour, 3)
		tb.PutDetail(v, day, k, det)
		tb.PutDayRecordBytes(day, k, v.AppendDayRecord(nil, rec(day, 1)))
	}
	if r, err := s.DayRecord(v, 7, day, keys[0]); r != nil || err != nil {
		t.Fatalf("a day record is visible before its table is ingested (%v)", err)
	}
	if err := s.IngestTables(tb); err != nil {
		t.Fatal(err)
	}
	if n := len(tableFiles(t, dir)); n != 0 {
		t.Fatalf("%d table files left after the ingest", n)
	}
	for i, k := range keys {
		r, err := s.DayRecord(v, 7, day, k)
		if err != nil || r == nil {
			t.Fatalf("day record of %q: %v %v", k, r, err)
		}
		want := v.AppendDayRecord(nil, rec(day, 1))
		if got := v.AppendDayRecord(nil, r); !bytes.Equal(got, want) {
			t.Fatalf("day record of %q: %x, want %x", k, got, want)
		}
		st, err := s.DetailSuffix(v, 7, day, k, day+int64(i)*tiling.Hour, day+int64(i)*tiling.Hour+tiling.Minute)
		if err != nil || st == nil {
			t.Fatalf("detail suffix of %q: %v %v", k, st, err)
		}
	}

	// Out of order: the ingest fails and leaves no file and no record.
	bad := s.NewTables(v, 8)
	bad.PutDayRecordBytes(day, "b", v.AppendDayRecord(nil, rec(day, 1)))
	bad.PutDayRecordBytes(day, "a", v.AppendDayRecord(nil, rec(day, 1)))
	if err := s.IngestTables(bad); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("ingest of keys out of order: %v", err)
	}
	if r, _ := s.DayRecord(v, 8, day, "b"); r != nil {
		t.Fatal("a failed ingest left a record")
	}
	// Abort removes the files.
	ab := s.NewTables(v, 9)
	ab.PutSummary(v, "a", &tiling.Summary{})
	if len(tableFiles(t, dir)) != 1 {
		t.Fatal("no table file while writing")
	}
	ab.Abort()
	if n := len(tableFiles(t, dir)); n != 0 {
		t.Fatalf("%d table files left after an abort", n)
	}
	// A table left by a stopped process is removed at the next open.
	left := s.NewTables(v, 10)
	left.PutSummary(v, "a", &tiling.Summary{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPebble(t, dir)
	defer s.Close()
	if n := len(tableFiles(t, dir)); n != 0 {
		t.Fatalf("%d table files left after reopening", n)
	}
	if r, err := s.DayRecord(v, 7, day, keys[1]); err != nil || r == nil {
		t.Fatalf("ingested records lost on reopening: %v %v", r, err)
	}
}
