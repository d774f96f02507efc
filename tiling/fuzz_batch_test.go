package tiling

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The batch side's decoders — summaries, day records, detail records —
// hold the sketches and lists of compacted windows, read from the store like
// stream records: corrupt bytes must give ErrCorrupt or ErrVersion, never a
// panic, and what they accept must re-encode stably and evaluate. The first
// input byte picks the decoder:
//
//	0 DecodeSummary, 1 DecodeSummaryForRead and PrepareSummary,
//	2 DecodeDayRecord and DecodeDaySuffix, 3 DecodeDetailSuffix
//
// Seeds are in testdata/fuzz/FuzzDecodeBatch/ (regenerated with -update).
//
//	go test -tags pebblegozstd -run '^$' -fuzz '^FuzzDecodeBatch$' -fuzztime 10000x ./tiling

const (
	batchSummary = iota
	batchSummaryForRead
	batchDay
	batchDetail
	batchDecoders
)

// batchFuzzDay is the day the seeds' records fall in (the golden records'
// times): the fuzzer decodes day and detail records there.
func batchFuzzDay(v *View) int64 { return AlignDown(1_699_999_200_000, v.DaySpan()) }

// batchSeeds returns, by name, inputs for every decoder of v: the batch
// side of the golden records as a heal would write it.
func batchSeeds(tb testing.TB, v *View, golden []goldenRecord) map[string][]byte {
	// The golden records' tiles, merged into one record per start.
	merged := records{}
	for _, g := range golden {
		r := buildGolden(tb, v, g)
		for i := range r.Tiles {
			if merged[r.Start] == nil {
				merged[r.Start] = v.NewRecord(r.Start)
			}
			v.AddTile(merged[r.Start], &r.Tiles[i])
		}
	}
	recs := merged.sorted()
	out := map[string][]byte{}
	days := map[int64]*Record{}
	for _, r := range recs {
		day := AlignDown(r.Start, v.DaySpan())
		if days[day] == nil {
			days[day] = &Record{Start: day}
		}
		days[day].Tiles = append(days[day].Tiles, v.Rollup(r, v.Span())...)
		out["detail-"+itoa(r.Start)] = append([]byte{batchDetail}, v.AppendDetailRecord(nil, r)...)
	}
	s := &Summary{Base: v.NewStates()}
	for _, day := range slices.Sorted(maps.Keys(days)) {
		dr := days[day] // one block per record, records ascending: blocks ascending
		total := v.NewStates()
		for i := range dr.Tiles {
			MergeStates(total, dr.Tiles[i].States)
		}
		if len(s.Days) == 0 {
			s.FirstDay = day
			MergeStates(s.Base, total) // some lifetime data before the days
		}
		s.Days = append(s.Days, SummaryDay{Start: day, Gen: uint64(len(s.Days) + 1), Total: total})
		s.Watermark = day + v.DaySpan()
		out["day-"+itoa(day)] = append([]byte{batchDay}, v.AppendDayRecord(nil, dr)...)
		// The single-tile form: the first block marked as holding one tile.
		only := &Record{Start: day, Tiles: dr.Tiles, Only: make([]int64, len(dr.Tiles))}
		for i := range only.Only {
			only.Only[i] = MinTime
		}
		only.Only[0] = dr.Tiles[0].Start
		out["day-only-"+itoa(day)] = append([]byte{batchDay}, v.AppendDayRecord(nil, only)...)
		// Version 1 (block aggregates), as stores written before hold them.
		out["day-v1-"+itoa(day)] = append([]byte{batchDay}, v.appendDayRecordV1(nil, dr)...)
		out["day-v1-only-"+itoa(day)] = append([]byte{batchDay}, v.appendDayRecordV1(nil, only)...)
	}
	enc := v.AppendSummary(nil, s)
	out["summary"] = append([]byte{batchSummary}, enc...)
	out["summary-for-read"] = append([]byte{batchSummaryForRead}, enc...)
	// Cut short and with a byte flipped: corrupt inputs to start from.
	for name, b := range maps.Clone(out) {
		if len(b) > 8 {
			out[name+"-truncated"] = b[:len(b)*2/3]
			f := bytes.Clone(b)
			f[len(f)/2] ^= 0x5a
			out[name+"-flipped"] = f
		}
	}
	return out
}

func itoa(x int64) string { b, _ := json.Marshal(x); return string(b) }

// batchFuzzSeeds are the seeds of both fuzz views, by file name.
func batchFuzzSeeds(tb testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for name, b := range batchSeeds(tb, goldenView(tb), goldenRecords) {
		out["golden-"+name] = b
	}
	for name, b := range batchSeeds(tb, functionsView(tb), slices.Concat(goldenRecords, functionsRecords)) {
		out["functions-"+name] = b
	}
	return out
}

func FuzzDecodeBatch(f *testing.F) {
	views := []*View{goldenView(f), functionsView(f)}
	for _, b := range batchFuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		for _, v := range views {
			fuzzBatch(t, v, b[0]%batchDecoders, b[1:])
		}
	})
}

// checkDecodeError fails unless err wraps ErrCorrupt or ErrVersion.
func checkDecodeError(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
		t.Fatalf("%s: error %v wraps neither ErrCorrupt nor ErrVersion", what, err)
	}
}

// checkJSON fails unless every value is JSON.
func checkJSON(t *testing.T, v *View, vals []any) {
	t.Helper()
	for i, x := range vals {
		if _, err := json.Marshal(x); err != nil {
			t.Fatalf("feature %s: value %#v is not JSON: %v", v.Features[i].Name, x, err)
		}
	}
}

func fuzzBatch(t *testing.T, v *View, kind byte, b []byte) {
	day := batchFuzzDay(v)
	times := []int64{day - 1, day, day + 30*Minute + 7, day + 6*Hour, day + v.DaySpan() - 1, day + v.DaySpan() + Hour, day + 40*Day}
	switch kind {
	case batchSummary, batchSummaryForRead:
		var s *Summary
		var err error
		if kind == batchSummary {
			s, err = v.DecodeSummary(b)
		} else {
			s, err = v.DecodeSummaryForRead(bytes.Clone(b))
		}
		if err != nil {
			checkDecodeError(t, "summary", err)
			return
		}
		for i := 1; i < len(s.Days); i++ {
			if s.Days[i].Start <= s.Days[i-1].Start {
				t.Fatalf("days out of order: %d after %d", s.Days[i].Start, s.Days[i-1].Start)
			}
		}
		if kind == batchSummary {
			enc := v.AppendSummary(nil, s)
			s2, err := v.DecodeSummary(enc)
			if err != nil {
				t.Fatalf("re-encoding %x of an accepted summary does not decode: %v", enc, err)
			}
			if enc2 := v.AppendSummary(nil, s2); !bytes.Equal(enc, enc2) {
				t.Fatalf("summary encoding not stable:\n %x\n %x", enc, enc2)
			}
		}
		for _, at := range times {
			if kind == batchSummaryForRead {
				if err := v.PrepareSummary(s, at); err != nil {
					checkDecodeError(t, "summary suffix", err)
					return
				}
			}
			checkJSON(t, v, v.EvaluateBatch(at, &Batch{Summary: s}, nil))
		}

	case batchDay:
		r, err := v.DecodeDayRecord(day, b)
		if err != nil {
			checkDecodeError(t, "day record", err)
			return
		}
		for i, tl := range r.Tiles {
			if tl.Start < day || tl.Start >= day+v.DaySpan() || !Aligned(tl.Start, v.Span()) ||
				i > 0 && tl.Start <= r.Tiles[i-1].Start || len(tl.States) != len(v.aggs) {
				t.Fatalf("block %d at %d: out of the day, unaligned or unsorted", i, tl.Start)
			}
		}
		total := v.NewStates()
		for i := range r.Tiles {
			MergeStates(total, r.Tiles[i].States)
		}
		// The suffix from the day's start is its total.
		st, _, err := v.DecodeDaySuffix(day, b, day)
		if err != nil {
			t.Fatalf("a day record that decodes has no suffix from its start: %v", err)
		}
		if st == nil {
			st = v.NewStates()
		}
		if a, z := appendStates(nil, st), appendStates(nil, total); !bytes.Equal(a, z) {
			t.Fatalf("the suffix from the day's start %x is not the day's total %x", a, z)
		}
		// Re-encoded in the current version: the same total, and for a
		// record of block aggregates (version 1) the same suffix from every
		// time.
		enc := v.AppendDayRecord(nil, r)
		r2, err := v.DecodeDayRecord(day, enc)
		if err != nil {
			t.Fatalf("re-encoding %x of an accepted day record does not decode: %v", enc, err)
		}
		total2 := v.NewStates()
		for i := range r2.Tiles {
			MergeStates(total2, r2.Tiles[i].States)
		}
		if a, z := appendStates(nil, total2), appendStates(nil, total); !bytes.Equal(a, z) {
			t.Fatalf("re-encoded day record's total %x, was %x", a, z)
		}
		froms := append([]int64{day + Minute, day + v.Span(), day + v.Span() + 17*Minute}, times...)
		if b[0] != dayVersion {
			for _, from := range froms {
				want, wd, err := v.DecodeDaySuffix(day, b, from)
				if err != nil {
					t.Fatalf("a version 1 day record that decodes fails from %d: %v", from, err)
				}
				got, gd, err := v.DecodeDaySuffix(day, enc, from)
				if err != nil {
					t.Fatalf("re-encoded day record from %d: %v", from, err)
				}
				if a, z := appendStates(nil, got), appendStates(nil, want); !bytes.Equal(a, z) || gd != wd {
					t.Fatalf("from %d: re-encoded suffix %x (detail %v), version 1 %x (detail %v)", from, a, gd, z, wd)
				}
			}
		}
		// Read as the day of a summary, windows starting inside it.
		s := &Summary{Watermark: day + v.DaySpan(), FirstDay: day, Days: []SummaryDay{{Start: day, Gen: 1, Total: total}}}
		for _, at := range times {
			batch := &Batch{Summary: s, Days: map[int64][]State{}}
			for _, n := range v.BatchNeeds(at, s) {
				st, _, err := v.DecodeDaySuffix(n.Day, b, n.Start)
				if err != nil {
					checkDecodeError(t, "day suffix", err)
					return
				}
				batch.Days[n.Start] = st
			}
			checkJSON(t, v, v.EvaluateBatch(at, batch, nil))
		}

	case batchDetail:
		for _, from := range []int64{day, day + 30*Minute, day + v.Span() - Minute, day + v.Span()} {
			states, err := v.DecodeDetailSuffix(day, b, from)
			if err != nil {
				checkDecodeError(t, "detail record", err)
				return
			}
			if states == nil {
				continue
			}
			if len(states) != len(v.aggs) {
				t.Fatalf("%d states, layout %d", len(states), len(v.aggs))
			}
			rec := &Record{Start: day, Tiles: []Tile{{Start: day, States: states}}}
			enc := v.AppendRecord(nil, rec)
			if _, err := v.DecodeRecord(day, enc); err != nil {
				t.Fatalf("the states of an accepted detail record do not re-decode: %v", err)
			}
			checkJSON(t, v, v.Evaluate(day+Hour, []*Record{rec}))
		}
	}
}

// TestGoldenBatchFuzzSeeds keeps testdata/fuzz/FuzzDecodeBatch/ equal to
// the batch encodings of the golden records (with -update, rewrites it): it
// pins the summary, day and detail record formats as the golden files pin
// the stream record's.
func TestGoldenBatchFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeBatch")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seeds := batchFuzzSeeds(t)
	if len(seeds) < 20 {
		t.Fatalf("only %d seeds", len(seeds))
	}
	// The uncorrupted seeds decode: the fuzzer starts from accepted inputs.
	views := map[string]*View{"golden-": goldenView(t), "functions-": functionsView(t)}
	for name, b := range seeds {
		if strings.HasSuffix(name, "-truncated") || strings.HasSuffix(name, "-flipped") {
			continue
		}
		v := views[name[:strings.Index(name, "-")+1]]
		day := batchFuzzDay(v)
		var err error
		switch b[0] {
		case batchSummary:
			_, err = v.DecodeSummary(b[1:])
		case batchSummaryForRead:
			var s *Summary
			if s, err = v.DecodeSummaryForRead(b[1:]); err == nil {
				err = v.PrepareSummary(s, day+Hour)
			}
		case batchDay:
			_, err = v.DecodeDayRecord(day, b[1:])
		case batchDetail:
			_, err = v.DecodeDetailSuffix(day, b[1:], day)
		}
		if err != nil {
			t.Errorf("seed %s: %v", name, err)
		}
	}
	for name, b := range seeds {
		path := filepath.Join(dir, name)
		want := corpusFile(b)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (regenerate with go test ./tiling -run Golden -update)", err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: the batch encoding changed (regenerate with go test ./tiling -run Golden -update)", path)
		}
	}
}
