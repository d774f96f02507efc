package tiling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

type topEntry struct {
	Value any    `json:"value"`
	Count uint64 `json:"count"`
}

func topOf(t *testing.T, s *freqState, k int) []topEntry {
	t.Helper()
	var out []topEntry
	if err := json.Unmarshal(s.value(&Feature{Function: TopK, K: k}).(json.RawMessage), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// zipfEvents returns n events of values "v<i>" with popularity ∝ 1/(i+1)^s
// over distinct values, and the exact count of each.
func zipfEvents(seed uint64, n, distinct int, s float64) ([]Event, []Input, map[string]uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	z := rand.NewZipf(r, s, 1, uint64(distinct-1))
	events := make([]Event, n)
	inputs := make([]Input, n)
	exact := map[string]uint64{}
	for i := range events {
		v := fmt.Sprintf("v%d", z.Uint64())
		events[i] = Event{TS: int64(i), Pos: Pos{Partition: int32(i % 8), Offset: int64(i)}}
		inputs[i] = Input{Kind: Other, Raw: fmt.Appendf(nil, "%q", v)}
		exact[v]++
	}
	return events, inputs, exact
}

// TestTopKExactUpToCapacity: with at most TopKCapacity distinct values the
// counts are exact, however many events there are.
func TestTopKExactUpToCapacity(t *testing.T) {
	events, inputs, exact := zipfEvents(1, 100_000, TopKCapacity, 1.1)
	s := &freqState{capacity: TopKCapacity, maxValue: 64}
	for i := range events {
		s.add(&events[i], &inputs[i])
	}
	if s.over {
		t.Fatalf("past capacity with %d distinct values", len(exact))
	}
	for _, e := range topOf(t, s, 20) {
		if want := exact[e.Value.(string)]; e.Count != want {
			t.Errorf("%v: count %d, exact %d", e.Value, e.Count, want)
		}
	}
}

// TestTopKApproximateBounds checks the stated bounds past capacity: every
// value holding more than 2% of the events is found, and every reported
// count is within 5 standard errors of the exact one.
func TestTopKApproximateBounds(t *testing.T) {
	seeds := uint64(5)
	if testing.Short() || raceEnabled {
		seeds = 1
	}
	for seed := range seeds {
		n := 200_000
		events, inputs, exact := zipfEvents(seed, n, 50_000, 1.2)
		// Built from 40 parts merged, as tiles are.
		acc := &freqState{capacity: TopKCapacity, maxValue: 64}
		for p := range 40 {
			part := &freqState{capacity: TopKCapacity, maxValue: 64}
			for i := p; i < n; i += 40 {
				part.add(&events[i], &inputs[i])
			}
			acc.merge(part)
		}
		if !acc.over {
			t.Fatal("still counting exactly")
		}
		top := topOf(t, acc, 1000)
		reported := map[string]uint64{}
		for _, e := range top {
			reported[e.Value.(string)] = e.Count
		}
		for v, c := range exact {
			p := float64(c) / float64(n)
			if p < 0.02 {
				continue
			}
			got, ok := reported[v]
			if !ok {
				t.Errorf("seed %d: %s (share %.3f) not reported", seed, v, p)
				continue
			}
			se := math.Sqrt((1-p)/(p*TopKCapacity)) * math.Sqrt(1-float64(TopKCapacity)/float64(n))
			if rel := math.Abs(float64(got)-float64(c)) / float64(c); rel > 5*se {
				t.Errorf("seed %d: %s (share %.3f): count %d, exact %d: relative error %.3f beyond 5σ = %.3f", seed, v, p, got, c, rel, 5*se)
			}
		}
		// The same events in one state give the same bytes.
		fresh := &freqState{capacity: TopKCapacity, maxValue: 64}
		for i := range events {
			fresh.add(&events[i], &inputs[i])
		}
		if !bytes.Equal(fresh.appendBinary(nil), acc.appendBinary(nil)) {
			t.Errorf("seed %d: merged parts encode differently from one state", seed)
		}
	}
}

func TestTopKOrderAndShape(t *testing.T) {
	s := &freqState{capacity: TopKCapacity, maxValue: 8}
	add := func(off int64, raw string) {
		s.add(&Event{Pos: Pos{Offset: off}}, &Input{Kind: Other, Raw: []byte(raw)})
	}
	for i, raw := range []string{`"b"`, `"a"`, `"b"`, `"a"`, `"c"`, `1`, `"\u0063"`, `"longer than eight"`, `true`} {
		add(int64(i), raw)
	}
	s.add(&Event{Pos: Pos{Offset: 99}}, &Input{Kind: Number, Num: 1, Raw: []byte("1.0")})
	got := string(s.value(&Feature{Function: TopK, K: 4}).(json.RawMessage))
	if want := `[{"value":"a","count":2},{"value":"b","count":2},{"value":"c","count":2},{"value":1,"count":2}]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	empty := &freqState{capacity: TopKCapacity, maxValue: 8}
	if got := string(empty.value(&Feature{Function: TopK, K: 4}).(json.RawMessage)); got != "[]" {
		t.Errorf("empty: %s", got)
	}
}
