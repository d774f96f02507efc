package state

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// TestDayRecordReads: a heal's day of one key — blocks empty, of one tile
// and of several, `last` values of 60 KB so the day record spans several
// DynamoDB items — read at times whose windows start in every block, from
// Pebble and DynamoDB, with the day record in the current version and in
// version 1 (as stores written before hold it; the day of lifetime_start
// keeps it): every value equals the evaluation of the day's tiles.
func TestDayRecordReads(t *testing.T) {
	day := tiling.AlignDown(time.Now().UnixMilli()-3*tiling.Day, tiling.Day)
	for _, v1 := range []bool{false, true} {
		life := tiling.MinTime
		if v1 {
			life = day + 12*tiling.Hour + 30*tiling.Minute
		}
		var fs []tiling.Feature
		for h := int64(1); h < 24; h += 2 {
			w := h * tiling.Hour
			fs = append(fs,
				tiling.Feature{Name: fmt.Sprintf("n_%dh", h), Function: tiling.Count, Window: w},
				tiling.Feature{Name: fmt.Sprintf("sum_%dh", h), Function: tiling.Sum, Column: "x", Window: w},
				tiling.Feature{Name: fmt.Sprintf("last_%dh", h), Function: tiling.Last, Column: "s", Window: w})
		}
		v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts",
			Granularity: tiling.Minute, LifetimeStart: life, Features: fs})
		if err != nil {
			t.Fatal(err)
		}
		// The heal's records: a block in three empty, one of a single tile,
		// one of several.
		dayRec := &tiling.Record{Start: day}
		var blocks []*tiling.Record
		details := map[int64]*tiling.Record{}
		off := int64(0)
		for h := range int64(24) {
			block := day + h*tiling.Hour
			var minutes []int64
			switch h % 3 {
			case 0:
				continue
			case 1:
				minutes = []int64{(h * 7) % 60}
			case 2:
				minutes = []int64{3, 11, 29, 30, 58}
			}
			rec := v.NewRecord(block)
			for _, m := range minutes {
				e := ev(v, "big", block+m*tiling.Minute+7, int32(off%2), off, float64(off), 60_000)
				off++
				v.Aggregate(rec, &e)
			}
			blocks = append(blocks, rec)
			dayRec.Tiles = append(dayRec.Tiles, v.Rollup(rec, v.Span())...)
			if len(rec.Tiles) == 1 {
				dayRec.Only = append(dayRec.Only, rec.Tiles[0].Start)
			} else {
				dayRec.Only = append(dayRec.Only, tiling.MinTime)
				details[block] = rec
			}
		}
		total := v.NewStates()
		for i := range dayRec.Tiles {
			tiling.MergeStates(total, dayRec.Tiles[i].States)
		}
		if n := len(v.AppendDayRecord(nil, dayRec)); n < 2*350_000 {
			t.Fatalf("a day record of %d bytes: the test needs one of several items", n)
		}
		const gen = 3
		wm := day + tiling.Day
		for _, kind := range []string{"pebble", "dynamodb"} {
			t.Run(fmt.Sprintf("%s/version1-%v", kind, v1), func(t *testing.T) {
				var s *Store
				if kind == "pebble" {
					s = openPebble(t, t.TempDir())
					t.Cleanup(func() { s.Close() })
				} else {
					s = openDyn(t, dynTable(t))
				}
				if _, err := s.CheckLayout(context.Background(), v); err != nil {
					t.Fatal(err)
				}
				wb := s.NewBatch()
				for _, d := range details {
					wb.PutDetail(v, gen, day, "big", d)
				}
				wb.PutDayRecord(v, gen, day, "big", dayRec)
				wb.PutSummary(v, gen, "big", &tiling.Summary{Watermark: wm, FirstDay: day,
					Days: []tiling.SummaryDay{{Start: day, Gen: gen, Total: total}}})
				if err := s.Commit(wb); err != nil {
					t.Fatal(err)
				}
				hb := s.NewBatch()
				hb.PutHead(v, "big", Head{Watermark: wm, Gen: gen})
				if err := s.Commit(hb); err != nil {
					t.Fatal(err)
				}
				if kind == "pebble" {
					raw, err := s.get(dayKey(nil, v.Name, gen, day, "big"))
					if err != nil || raw == nil {
						t.Fatalf("day record: %v", err)
					}
					if got := raw[0] != 2; got != v1 {
						t.Fatalf("day record of version %d stored, want version 1 %v", raw[0], v1)
					}
				}
				// The healer reads the day's total back.
				back, err := s.DayRecord(v, gen, day, "big")
				if err != nil || back == nil {
					t.Fatalf("day record: %v %v", back, err)
				}
				got := v.NewStates()
				for i := range back.Tiles {
					tiling.MergeStates(got, back.Tiles[i].States)
				}
				if a, b := v.Evaluate(wm, []*tiling.Record{{Start: day, Tiles: []tiling.Tile{{Start: day, States: got}}}}),
					v.Evaluate(wm, []*tiling.Record{{Start: day, Tiles: []tiling.Tile{{Start: day, States: total}}}}); fmt.Sprint(a) != fmt.Sprint(b) {
					t.Fatalf("the day record's total read back: %v, want %v", a, b)
				}
				// Windows starting at every minute offset of their blocks.
				for m := int64(0); m < 60; m += 4 {
					at := wm + m*tiling.Minute + 5
					kd, err := s.ReadKey(context.Background(), v, "big", at)
					if err != nil {
						t.Fatal(err)
					}
					if max := 2 + 2*len(fs) + len(kd.Records); kd.RecordsRead > max {
						t.Errorf("at %d: %d records read, over %d", at, kd.RecordsRead, max)
					}
					got, want := v.EvaluateBatch(at, kd.Batch, kd.Records), v.Evaluate(at, blocks)
					for i, f := range v.Features {
						a, _ := json.Marshal(got[i])
						b, _ := json.Marshal(want[i])
						if string(a) != string(b) {
							t.Fatalf("at +%dm %s: %.80s, want %.80s", m, f.Name, a, b)
						}
					}
				}
			})
		}
	}
}
