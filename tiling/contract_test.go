package tiling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// The merge contract of the package doc, per state kind, on encoded bytes:
// commutative, associative, the empty state is the identity, and merging is
// the same as adding the union of the inputs to one state.

// contractKind is a partial aggregate and how its inputs are made.
type contractKind struct {
	name   string
	spec   aggSpec
	column bool // false: count over events (a nil Input)
}

func quantileSpec(k, maxBins int) aggSpec {
	return aggSpec{kind: kindQuantiles, n: k, maxBins: maxBins, mapping: newQuantileMapping(k)}
}

var contractKinds = []contractKind{
	{"count of events", aggSpec{kind: kindCount}, false},
	{"count of a column", aggSpec{kind: kindCount}, true},
	{"sum", aggSpec{kind: kindSum}, true},
	{"min", aggSpec{kind: kindMin}, true},
	{"max", aggSpec{kind: kindMax}, true},
	{"mean", aggSpec{kind: kindMean}, true},
	{"last", aggSpec{kind: kindLast, maxValue: DefaultMaxRawBytes}, true},
	{"first", aggSpec{kind: kindFirst, maxValue: DefaultMaxRawBytes}, true},
	{"moments", aggSpec{kind: kindMoments}, true},
	{"first_n", aggSpec{kind: kindFirstN, n: 3, maxValue: 64}, true},
	{"last_n", aggSpec{kind: kindLastN, n: 3, maxValue: 64}, true},
	{"last_distinct_n", aggSpec{kind: kindLastDistinctN, n: 3, maxValue: 64}, true},
	{"hll sparse", aggSpec{kind: kindHLL, n: 12}, true},
	{"hll turning dense", aggSpec{kind: kindHLL, n: 4}, true},
	{"quantiles", quantileSpec(35, 2048), true},
	{"quantiles collapsing", quantileSpec(7, 8), true},
	{"top_k counted", aggSpec{kind: kindFreq, n: 64, maxValue: 64}, true},
	{"top_k past capacity", aggSpec{kind: kindFreq, n: 4, maxValue: 64}, true},
}

// contractInput is one input with its event, positions unique across a test.
type contractInput struct {
	ev Event
	in *Input
}

func randContractInputs(r *rand.Rand, ck contractKind, offset *int64, earlier *[]float64) []contractInput {
	var out []contractInput
	for range r.IntN(6) { // 0 inputs gives the identity now and then
		*offset++
		e := Event{Key: "k", TS: r.Int64N(5), Pos: Pos{Partition: int32(r.IntN(3)), Offset: *offset}}
		ci := contractInput{ev: e}
		if ck.column {
			var in Input
			switch q := r.IntN(10); {
			case q < 2:
				in = Input{Kind: Missing}
			case q < 4:
				raw, _ := json.Marshal(fmt.Sprintf("v%d", r.IntN(12)))
				in = Input{Kind: Other, Raw: raw}
			case q < 5:
				x := float64(r.IntN(5)) // repeated values
				in = Input{Kind: Number, Num: x, Raw: []byte(strconv.Itoa(int(x)))}
			default:
				x := randNumber(r, *earlier)
				if x == 0 {
					x = 0 // ingest normalises −0
				}
				*earlier = append(*earlier, x)
				raw, _ := json.Marshal(x)
				in = Input{Kind: Number, Num: x, Raw: raw}
			}
			ci.in = &in
		}
		out = append(out, ci)
	}
	return out
}

func stateOf(k *aggSpec, inputs ...[]contractInput) State {
	s := newState(k)
	for _, ins := range inputs {
		for i := range ins {
			s.add(&ins[i].ev, ins[i].in)
		}
	}
	return s
}

// mergeAll returns a new state: the merge of ss, left to right. It never
// mutates ss.
func mergeAll(k *aggSpec, ss ...State) State {
	out := newState(k)
	for _, s := range ss {
		out.merge(s)
	}
	return out
}

func enc(s State) []byte { return s.appendBinary(nil) }

func TestMergeContract(t *testing.T) {
	for _, ck := range contractKinds {
		t.Run(ck.name, func(t *testing.T) {
			ck := ck
			r := rand.New(rand.NewPCG(uint64(ck.spec.kind), 99))
			var offset int64
			var earlier []float64
			trials := 2000
			if testing.Short() || raceEnabled {
				trials = 400
			}
			for trial := range trials {
				ia := randContractInputs(r, ck, &offset, &earlier)
				ib := randContractInputs(r, ck, &offset, &earlier)
				ic := randContractInputs(r, ck, &offset, &earlier)
				a, b, c := stateOf(&ck.spec, ia), stateOf(&ck.spec, ib), stateOf(&ck.spec, ic)
				ea := enc(a)
				e := newState(&ck.spec)

				check := func(what string, got, want []byte) {
					t.Helper()
					if !bytes.Equal(got, want) {
						t.Fatalf("trial %d: %s:\n got  %x\n want %x", trial, what, got, want)
					}
				}
				ab := mergeAll(&ck.spec, a, b)
				eab := enc(ab)
				check("commutative", eab, enc(mergeAll(&ck.spec, b, a)))
				check("associative", enc(mergeAll(&ck.spec, ab, c)), enc(mergeAll(&ck.spec, a, mergeAll(&ck.spec, b, c))))
				check("right identity", enc(mergeAll(&ck.spec, a, e)), ea)
				check("left identity", enc(mergeAll(&ck.spec, e, a)), ea)
				check("identity encodes as a fresh state", enc(e), enc(newState(&ck.spec)))
				check("merge equals adding the union", enc(mergeAll(&ck.spec, a, b, c)), enc(stateOf(&ck.spec, ic, ia, ib)))

				// Merging in place into a decoded copy, as AddTile does.
				x, rest, err := decodeState(&ck.spec, ea)
				if err != nil || len(rest) != 0 {
					t.Fatalf("trial %d: decode %x: %v, %d bytes left", trial, ea, err, len(rest))
				}
				check("round trip", enc(x), ea)
				x.merge(b)
				check("merge into a decoded state", enc(x), eab)

				// A merge keeps nothing of its argument: adding to either
				// side afterwards leaves the other alone.
				more := randContractInputs(r, ck, &offset, &earlier)
				for i := range more {
					b.add(&more[i].ev, more[i].in)
				}
				check("merged state after adding to its source", enc(x), eab)
				for i := range more {
					x.add(&more[i].ev, more[i].in)
				}
				check("source after adding to the merged state", enc(b), enc(stateOf(&ck.spec, ib, more)))
				check("inputs untouched", enc(a), ea)
			}
		})
	}
}

// TestTileMergeContract checks the contract on whole records through the
// public API: AddTile of tiles in any order and grouping gives the bytes of
// adding every event to one record.
func TestTileMergeContract(t *testing.T) {
	for seed := range uint64(200) {
		c := newPropCase(seed)
		r := rand.New(rand.NewPCG(seed, 5))
		want := encodeAll(c.view, buildInOrder(t, r, c.view, c.events, interleave(r, c.events), false))

		// Each event alone in its own record, then all merged: the finest split.
		singles := make([]records, len(c.events))
		for i := range c.events {
			singles[i] = records{}
			singles[i].add(c.view, &c.events[i].ev)
		}
		got := records{}
		for _, i := range r.Perm(len(singles)) {
			for s, pr := range singles[i] {
				dst, ok := got[s]
				if !ok {
					dst = c.view.NewRecord(s)
					got[s] = dst
				}
				c.view.AddTile(dst, &pr.Tiles[0])
				dst.MarkApplied(Pos(pr.Offsets[0]))
			}
		}
		if err := sameEncodings(want, encodeAll(c.view, got)); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		// Merging the empty tile changes nothing.
		for s, rec := range got {
			for _, tl := range rec.Tiles {
				empty := c.view.NewTile(tl.Start)
				c.view.AddTile(rec, &empty)
			}
			if b := c.view.AppendRecord(nil, rec); !bytes.Equal(b, want[s]) {
				t.Fatalf("%v: merging empty tiles changed record %d", c, s)
			}
		}
	}
}
