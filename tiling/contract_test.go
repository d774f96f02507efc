package tiling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
)

// The merge contract of the package doc, per state kind, on encoded bytes:
// commutative, associative, the empty state is the identity, and merging is
// the same as adding the union of the inputs to one state.

// contractKind is a state kind and how its inputs are made.
type contractKind struct {
	name   string
	kind   stateKind
	column bool // false: count over events (a nil Input)
}

var contractKinds = []contractKind{
	{"count of events", kindCount, false},
	{"count of a column", kindCount, true},
	{"sum", kindSum, true},
	{"min", kindMin, true},
	{"max", kindMax, true},
	{"mean", kindMean, true},
	{"last", kindLast, true},
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
				raw, _ := json.Marshal(fmt.Sprintf("v%d", *offset))
				in = Input{Kind: Other, Raw: raw}
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

func stateOf(k stateKind, inputs ...[]contractInput) State {
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
func mergeAll(k stateKind, ss ...State) State {
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
			r := rand.New(rand.NewPCG(uint64(ck.kind), 99))
			var offset int64
			var earlier []float64
			for trial := range 2000 {
				ia := randContractInputs(r, ck, &offset, &earlier)
				ib := randContractInputs(r, ck, &offset, &earlier)
				ic := randContractInputs(r, ck, &offset, &earlier)
				a, b, c := stateOf(ck.kind, ia), stateOf(ck.kind, ib), stateOf(ck.kind, ic)
				ea := enc(a)
				e := newState(ck.kind)

				check := func(what string, got, want []byte) {
					t.Helper()
					if !bytes.Equal(got, want) {
						t.Fatalf("trial %d: %s:\n got  %x\n want %x", trial, what, got, want)
					}
				}
				ab := mergeAll(ck.kind, a, b)
				eab := enc(ab)
				check("commutative", eab, enc(mergeAll(ck.kind, b, a)))
				check("associative", enc(mergeAll(ck.kind, ab, c)), enc(mergeAll(ck.kind, a, mergeAll(ck.kind, b, c))))
				check("right identity", enc(mergeAll(ck.kind, a, e)), ea)
				check("left identity", enc(mergeAll(ck.kind, e, a)), ea)
				check("identity encodes as a fresh state", enc(e), enc(newState(ck.kind)))
				check("merge equals adding the union", enc(mergeAll(ck.kind, a, b, c)), enc(stateOf(ck.kind, ic, ia, ib)))

				// Merging in place into a decoded copy, as AddTile does.
				x, rest, err := decodeState(ck.kind, ea)
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
				check("source after adding to the merged state", enc(b), enc(stateOf(ck.kind, ib, more)))
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
