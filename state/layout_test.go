package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

func layoutView(t *testing.T, g int64, features ...tiling.Feature) *tiling.View {
	t.Helper()
	v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: g, Features: features})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var (
	fCount = tiling.Feature{Name: "n", Function: tiling.Count, Window: tiling.Hour}
	fSum   = tiling.Feature{Name: "sum", Function: tiling.Sum, Column: "x", Window: tiling.Day}
	fLast  = tiling.Feature{Name: "last", Function: tiling.Last, Column: "s", Window: 7 * tiling.Day}
	fMax   = tiling.Feature{Name: "max", Function: tiling.Max, Column: "x", Window: tiling.Day}
)

// layoutStore writes, under view v, stream records of keys k0…k(n-1) with
// events every 7 minutes over two hours from t0, and a summary, a day
// record and a detail record of generation 1 per key, through the batch
// API as the ingest and the healer do.
func layoutStore(t *testing.T, v *tiling.View, n int, t0 int64) *Store {
	t.Helper()
	s, err := Open(Config{Path: t.TempDir()}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if rb, err := s.CheckLayout(context.Background(), v); err != nil || rb {
		t.Fatalf("first CheckLayout: rebuild %v, %v", rb, err)
	}
	fillLayoutStore(t, s, v, n, t0)
	return s
}

func fillLayoutStore(t *testing.T, s *Store, v *tiling.View, n int, t0 int64) {
	t.Helper()
	b := s.NewBatch()
	day := tiling.AlignDown(t0, tiling.Day)
	for k := range n {
		key := fmt.Sprintf("k%d", k)
		recs := map[int64]*tiling.Record{}
		detail := v.NewRecord(day)
		for i := range 18 {
			ts := t0 + int64(i)*7*tiling.Minute
			e := ev(v, key, ts, int32(i%3), int64(i), float64(k*100+i), 4)
			st := v.RecordStart(ts)
			if recs[st] == nil {
				recs[st] = v.NewRecord(ts)
			}
			v.Add(recs[st], &e)
			if ts < day+v.Span() {
				v.Aggregate(detail, &e)
			}
		}
		for _, r := range recs {
			b.PutRecord(v, key, r)
		}
		dr := &tiling.Record{Start: day, Tiles: v.Rollup(detail, v.Span())}
		total := v.NewStates()
		for i := range dr.Tiles {
			tiling.MergeStates(total, dr.Tiles[i].States)
		}
		b.PutDetail(v, 1, day, key, detail)
		b.PutDayRecord(v, 1, day, key, dr)
		b.PutSummary(v, 1, key, &tiling.Summary{Watermark: day + tiling.Day, FirstDay: day,
			Days: []tiling.SummaryDay{{Start: day, Gen: 1, Total: total}}})
	}
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
}

// snapshot returns every record of the view under the record prefixes.
func layoutRecords(t *testing.T, s *Store, view string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, kind := range []byte{prefixRecord, prefixSummary, prefixDay, prefixDetail} {
		p := append([]byte{kind}, appendString(nil, view)...)
		it, err := s.db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.SeekGE(p); ok && string(it.Key()[:len(p)]) == string(p); ok = it.Next() {
			out[string(it.Key())] = slices.Clone(it.Value())
		}
		it.Close()
	}
	return out
}

// translated is what tr makes of the record b stored at key k.
func translated(t *testing.T, tr *tiling.Translator, k string, b []byte) []byte {
	t.Helper()
	var out []byte
	var err error
	switch k[0] {
	case prefixRecord:
		out, err = tr.Record(b)
	case prefixSummary:
		out, err = tr.Summary(b)
	case prefixDay:
		out, err = tr.DayRecord(b)
	case prefixDetail:
		out, err = tr.DetailRecord(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLayoutTranslation: a view that drops a feature and adds another keeps
// its records, translated; the added aggregate is pending until a heal of
// the new layout reaches the horizon past the stream records' last tile.
func TestLayoutTranslation(t *testing.T) {
	t0 := int64(1_760_000_000_000)
	old := layoutView(t, tiling.Minute, fCount, fSum, fLast)
	nv := layoutView(t, tiling.Minute, fLast, fMax, fSum) // count dropped, max added
	s := layoutStore(t, old, 5, t0)
	before := layoutRecords(t, s, "v")
	if len(before) != 5*(3+3) {
		t.Fatalf("%d records written", len(before))
	}

	st, err := s.CheckLayoutStatus(context.Background(), nv)
	if err != nil || st.Rebuild {
		t.Fatalf("CheckLayoutStatus: %+v, %v", st, err)
	}
	if want := (tiling.Layout{Aggs: nil}); len(st.Pending) != 1 || st.Pending[0].Kind != "max" {
		t.Fatalf("pending %+v, want max alone %v", st.Pending, want.Aggs)
	}
	if got := nv.AggFeatures(st.Pending); !slices.Equal(got, []string{"max"}) {
		t.Fatalf("missing features %v", got)
	}
	lastTile := tiling.AlignDown(t0+17*7*tiling.Minute, tiling.Minute) + tiling.Minute
	if st.Horizon != lastTile {
		t.Fatalf("horizon %d, want the end of the last stream tile %d", st.Horizon, lastTile)
	}
	tr, err := tiling.NewTranslator(old.Layout(), nv)
	if err != nil {
		t.Fatal(err)
	}
	after := layoutRecords(t, s, "v")
	if len(after) != len(before) {
		t.Fatalf("%d records after the translation, %d before", len(after), len(before))
	}
	for k, b := range before {
		want := translated(t, tr, k, b)
		if string(after[k]) != string(want) {
			t.Fatalf("record %x not translated", k)
		}
	}
	// Stream records read under the new view hold the kept states.
	r, err := s.GetRecord(nv, "k1", nv.RecordStart(t0))
	if err != nil || r == nil || len(r.Tiles) == 0 {
		t.Fatalf("record after translation: %v, %v", r, err)
	}

	// Opened again: nothing to translate, still pending.
	again, err := s.CheckLayoutStatus(context.Background(), nv)
	if err != nil || again.Rebuild || len(again.Pending) != 1 || again.Horizon != lastTile {
		t.Fatalf("CheckLayoutStatus again: %+v, %v", again, err)
	}
	if got := layoutRecords(t, s, "v"); len(got) != len(after) {
		t.Fatal("records changed when nothing did")
	}

	// Pending until a heal of the new layout installs at or past the horizon.
	heal := func(fp string, wb int64) []tiling.LayoutAgg {
		t.Helper()
		val, _ := json.Marshal(map[string]any{"watermark": wb, "fingerprint": fp, "gen": 2})
		b := s.NewBatch()
		b.PutMeta("v", val, 0)
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
		p, err := s.SettlePending(nv)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := heal(old.Fingerprint(), lastTile+tiling.Hour); len(p) != 1 {
		t.Fatal("a heal of the old layout settled the pending aggregates")
	}
	if p := heal(nv.Fingerprint(), lastTile-tiling.Minute); len(p) != 1 {
		t.Fatal("a heal short of the horizon settled the pending aggregates")
	}
	if p := heal(nv.Fingerprint(), lastTile); len(p) != 0 {
		t.Fatalf("a heal at the horizon left %v pending", p)
	}
	if st, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || st.Rebuild || len(st.Pending) != 0 {
		t.Fatalf("after settling: %+v, %v", st, err)
	}
}

// TestLayoutTranslationResumes: a translation interrupted after its first
// batch resumes after the recorded cursor, translating no record twice.
func TestLayoutTranslationResumes(t *testing.T) {
	t0 := int64(1_760_000_000_000)
	old := layoutView(t, tiling.Minute, fCount, fSum, fLast)
	nv := layoutView(t, tiling.Minute, fSum, fMax)
	s := layoutStore(t, old, 1000, t0) // 6,000 records: three batches
	before := layoutRecords(t, s, "v")

	// What CheckLayoutStatus does, stopped after one batch.
	tr, err := tiling.NewTranslator(old.Layout(), nv)
	if err != nil {
		t.Fatal(err)
	}
	m := layoutMeta{Fingerprint: nv.Fingerprint(), Layout: nv.Layout(), Pending: tr.Pending(),
		Translating: &translation{From: old.Layout()}}
	if err := s.writeLayout("v", m); err != nil {
		t.Fatal(err)
	}
	if done, err := s.translateSome(nv, tr, &m, []byte{prefixRecord}); err != nil || done {
		t.Fatalf("first batch: done %v, %v", done, err)
	}
	// The process dies here; the next start resumes.
	st, err := s.CheckLayoutStatus(context.Background(), nv)
	if err != nil || st.Rebuild || len(st.Pending) != 1 {
		t.Fatalf("resumed: %+v, %v", st, err)
	}
	after := layoutRecords(t, s, "v")
	for k, b := range before {
		want := translated(t, tr, k, b)
		if string(after[k]) != string(want) {
			t.Fatalf("record %x: translated %d times?", k, 0)
		}
	}
}

// TestLayoutTranslationStopsOnCancel: a translation whose context has ended
// stops before its next batch, leaving the view marked as translating, and
// the next check resumes it: every record translated once.
func TestLayoutTranslationStopsOnCancel(t *testing.T) {
	t0 := int64(1_760_000_000_000)
	old := layoutView(t, tiling.Minute, fCount, fSum, fLast)
	nv := layoutView(t, tiling.Minute, fSum, fMax)
	s := layoutStore(t, old, 1000, t0)
	before := layoutRecords(t, s, "v")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.CheckLayoutStatus(ctx, nv); !errors.Is(err, context.Canceled) {
		t.Fatalf("a translation with its context ended: %v", err)
	}
	if m, _, _, err := s.readLayout("v"); err != nil || m.Translating == nil {
		t.Fatalf("after the stop the view is not marked as translating: %+v %v", m, err)
	}
	st, err := s.CheckLayoutStatus(context.Background(), nv)
	if err != nil || st.Rebuild || len(st.Pending) != 1 {
		t.Fatalf("resumed: %+v, %v", st, err)
	}
	tr, err := tiling.NewTranslator(old.Layout(), nv)
	if err != nil {
		t.Fatal(err)
	}
	after := layoutRecords(t, s, "v")
	for k, b := range before {
		if want := translated(t, tr, k, b); string(after[k]) != string(want) {
			t.Fatalf("record %x: %x, want %x", k, after[k], want)
		}
	}
}

// TestLayoutRebuilds: another granularity, a store written before layouts
// were kept, or a change during a translation wipe the view for a rebuild.
func TestLayoutRebuilds(t *testing.T) {
	t0 := int64(1_760_000_000_000)
	old := layoutView(t, tiling.Minute, fCount, fSum)

	t.Run("granularity", func(t *testing.T) {
		s := layoutStore(t, old, 3, t0)
		nv := layoutView(t, 5*tiling.Minute, fCount, fSum)
		st, err := s.CheckLayoutStatus(context.Background(), nv)
		if err != nil || !st.Rebuild {
			t.Fatalf("%+v, %v", st, err)
		}
		if n := len(layoutRecords(t, s, "v")); n != 0 {
			t.Fatalf("%d records survived the reset", n)
		}
		if st, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || !st.Rebuild {
			t.Fatalf("an unfinished rebuild is not reported again: %+v, %v", st, err)
		}
		if err := s.FinishRebuild(nv); err != nil {
			t.Fatal(err)
		}
		if st, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || st.Rebuild {
			t.Fatalf("after FinishRebuild: %+v, %v", st, err)
		}
	})
	t.Run("legacy", func(t *testing.T) {
		s := layoutStore(t, old, 3, t0)
		// A store of an earlier version holds the bare fingerprint.
		if err := s.db.Set(viewKey(nil, "v"), []byte(old.Fingerprint()), nil); err != nil {
			t.Fatal(err)
		}
		if st, err := s.CheckLayoutStatus(context.Background(), old); err != nil || st.Rebuild {
			t.Fatalf("the same layout: %+v, %v", st, err)
		}
		if err := s.db.Set(viewKey(nil, "v"), []byte(old.Fingerprint()), nil); err != nil {
			t.Fatal(err)
		}
		nv := layoutView(t, tiling.Minute, fSum, fMax)
		if st, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || !st.Rebuild {
			t.Fatalf("a legacy store with another layout is not rebuilt: %+v, %v", st, err)
		}
	})
	t.Run("changed-while-translating", func(t *testing.T) {
		s := layoutStore(t, old, 3, t0)
		nv := layoutView(t, tiling.Minute, fSum, fMax)
		m := layoutMeta{Fingerprint: nv.Fingerprint(), Layout: nv.Layout(), Translating: &translation{From: old.Layout()}}
		if err := s.writeLayout("v", m); err != nil {
			t.Fatal(err)
		}
		third := layoutView(t, tiling.Minute, fSum, fLast)
		if st, err := s.CheckLayoutStatus(context.Background(), third); err != nil || !st.Rebuild {
			t.Fatalf("%+v, %v", st, err)
		}
	})
}
