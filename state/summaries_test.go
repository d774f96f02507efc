package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

// TestSummariesOfKeys: Summaries hands back, for a list of keys in store
// order, the summary of generation gen of each key that has one, with its
// index in the list: keys without one, another generation's summaries and
// keys of other views are left out. On Pebble, keys out of order are an
// error.
func TestSummariesOfKeys(t *testing.T) {
	for _, kind := range []string{"pebble", "dynamodb"} {
		t.Run(kind, func(t *testing.T) {
			var s *Store
			if kind == "pebble" {
				s = openPebble(t, t.TempDir())
				t.Cleanup(func() { s.Close() })
			} else {
				s = openDyn(t, dynTable(t))
			}
			v := lastView(t)
			if _, err := s.CheckLayout(context.Background(), v); err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			const gen = 3
			day := tiling.AlignDown(1_780_000_000_000, tiling.Day)
			// 250 keys of different lengths (the store orders keys by
			// length first); about half have a summary of gen, some one of
			// gen+1 only.
			var all []string
			want := map[string]int64{}
			b := s.NewBatch()
			for i := range 250 {
				key := fmt.Sprintf("%s%d", strings.Repeat("k", 1+r.IntN(4)), i)
				all = append(all, key)
				wm := day + tiling.Day + int64(i)*tiling.Minute
				sum := &tiling.Summary{Watermark: wm, FirstDay: day}
				switch r.IntN(3) {
				case 0:
					b.PutSummary(v, gen, key, sum)
					want[key] = wm
				case 1:
					b.PutSummary(v, gen+1, key, sum)
				}
			}
			if err := s.Commit(b); err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(all, KeyCompare)
			// The whole list, then chunks of it, as a heal reads them.
			for _, size := range []int{len(all), 7, 1} {
				got := map[string]int64{}
				for lo := 0; lo < len(all); lo += size {
					part := all[lo:min(lo+size, len(all))]
					last := -1
					if err := s.Summaries(v, gen, part, func(i int, sum *tiling.Summary) error {
						if i <= last || i >= len(part) {
							t.Fatalf("index %d after %d, of %d keys", i, last, len(part))
						}
						last = i
						got[part[i]] = sum.Watermark
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
				var wrong []string
				for _, k := range all {
					if g, ok := got[k]; g != want[k] || ok != (want[k] != 0) {
						wrong = append(wrong, fmt.Sprintf("%s: got %d, want %d", k, g, want[k]))
					}
				}
				if len(wrong) > 0 {
					t.Fatalf("chunks of %d: %d summaries, want %d; %d keys wrong, first %q", size, len(got), len(want), len(wrong), wrong[0])
				}
			}
			if kind == "pebble" {
				rev := slices.Clone(all[:10])
				slices.Reverse(rev)
				if err := s.Summaries(v, gen, rev, func(int, *tiling.Summary) error { return nil }); err == nil {
					t.Error("keys out of order: no error")
				}
			}
		})
	}
}
