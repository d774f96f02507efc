package healer

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// TestUnionKeys: the keys of a previous generation and the keys with new
// data, each once, in the store's key order, whatever order and overlap
// they come in.
func TestUnionKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		var old []string
		totals := map[string]map[int64][]tiling.State{}
		want := map[string]bool{}
		for i := range r.IntN(40) {
			k := fmt.Sprintf("%*d", 1+r.IntN(3), i*7%50)
			if want[k] {
				continue
			}
			switch r.IntN(3) {
			case 0:
				old = append(old, k)
			case 1:
				totals[k] = nil
			default:
				old = append(old, k)
				totals[k] = map[int64][]tiling.State{}
			}
			want[k] = true
		}
		r.Shuffle(len(old), func(i, j int) { old[i], old[j] = old[j], old[i] })
		got := unionKeys(old, totals)
		if len(got) != len(want) {
			t.Fatalf("round %d: %d keys %q, want %d", round, len(got), got, len(want))
		}
		for i, k := range got {
			if !want[k] {
				t.Fatalf("round %d: key %q is in neither", round, k)
			}
			if i > 0 && !state.KeyLess(got[i-1], k) {
				t.Fatalf("round %d: %q then %q: not in store order (or repeated)", round, got[i-1], k)
			}
		}
	}
}
