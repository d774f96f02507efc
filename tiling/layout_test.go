package tiling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// changedCase returns c's events under a changed view: a random subset of c's
// features (at least none), renamed, plus features of another random case
// over the same granularity and lifetime start.
func changedCase(tb testing.TB, c *propCase, r *rand.Rand) *propCase {
	tb.Helper()
	var features []Feature
	for _, f := range c.view.Features {
		if r.IntN(3) > 0 {
			f.Name = "kept_" + f.Name
			features = append(features, f)
		}
	}
	other := newPropCase(r.Uint64())
	for _, f := range other.view.Features {
		f.Name = "new_" + f.Name
		if f.Window > 0 {
			f.Window = c.view.Granularity * (1 + f.Window%7)
		}
		features = append(features, f)
	}
	v, err := NewView(View{Name: "prop", Topic: "events", Entity: "user", Timestamp: "ts",
		Granularity: c.view.Granularity, LifetimeStart: c.view.LifetimeStart, Features: features})
	if err != nil {
		tb.Fatal(err)
	}
	out := &propCase{seed: c.seed, view: v, base: c.base, length: c.length}
	for _, e := range c.events {
		text, err := json.Marshal(e.raw.Fields)
		if err != nil {
			tb.Fatal(err)
		}
		out.events = append(out.events, eventOf(v, e.raw.TS, Pos{Partition: e.raw.Partition, Offset: e.raw.Offset}, text))
	}
	return out
}

// TestTranslatorMatchesRebuild: records built under a view and translated to
// a changed view are byte for byte the records the changed view builds from
// the same events, with the states of the aggregates the old view lacked
// left empty (those are Pending, and their features served as missing).
func TestTranslatorMatchesRebuild(t *testing.T) {
	trials := 200
	if testing.Short() || raceEnabled {
		trials = 50
	}
	for trial := range trials {
		a := newPropCase(uint64(trial) + 7<<20)
		r := rand.New(rand.NewPCG(uint64(trial), 0x1a40))
		b := changedCase(t, a, r)
		va, vb, g := a.view, b.view, a.view.Granularity

		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(va.Layout()); err != nil {
			t.Fatal(err)
		}
		var stored Layout
		if err := json.Unmarshal(buf.Bytes(), &stored); err != nil {
			t.Fatal(err)
		}
		if fp, err := stored.Fingerprint(); err != nil || fp != va.Fingerprint() {
			t.Fatalf("trial %d: the layout's fingerprint %q, %v; the view's %q", trial, fp, err, va.Fingerprint())
		}
		tr, err := NewTranslator(stored, vb)
		if err != nil {
			t.Fatal(err)
		}
		pending := tr.Pending()
		blank := func(states []State) []State {
			if states == nil {
				return nil
			}
			for i := range states {
				if slices.Contains(pending, vb.layoutAgg(vb.aggs[i])) {
					states[i] = newState(&vb.aggs[i])
				}
			}
			return states
		}
		for i, f := range vb.Features {
			kept := slices.Contains(va.Layout().Aggs, vb.layoutAgg(vb.aggs[vb.featAgg[i]]))
			if missing := slices.Contains(vb.AggFeatures(pending), f.Name); missing == kept {
				t.Fatalf("trial %d: feature %s: kept %v, reported missing %v", trial, f.Name, kept, missing)
			}
		}

		wb := a.base + g*r.Int64N(a.length/g+1)
		firstDay := AlignDown(wb-a.length-g, va.DaySpan()) - va.DaySpan()*r.Int64N(2)
		v1 := trial%3 == 2 // day records as stores written before hold them
		batchA, streamA := buildBatch(t, a, wb, firstDay, v1)
		batchB, streamB := buildBatch(t, b, wb, firstDay, v1)
		check := func(what string, got []byte, err error, want []byte) {
			t.Helper()
			if err != nil {
				t.Fatalf("trial %d: %s: %v", trial, what, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("trial %d %v\n%s: translated %x\nrebuilt %x", trial, a, what, got, want)
			}
		}

		got, err := tr.Summary(va.AppendSummary(nil, batchA.summary))
		sb := batchB.summary
		sb.Base = blank(sb.Base)
		for i := range sb.Days {
			sb.Days[i].Total = blank(sb.Days[i].Total)
		}
		check("summary", got, err, vb.AppendSummary(nil, sb))
		if len(streamA) != len(streamB) || len(batchA.days) != len(batchB.days) || len(batchA.details) != len(batchB.details) {
			t.Fatalf("trial %d: the two views built different record sets", trial)
		}
		blankTiles := func(rec *Record) *Record {
			for i := range rec.Tiles {
				rec.Tiles[i].States = blank(rec.Tiles[i].States)
			}
			return rec
		}
		for i := range streamA {
			got, err := tr.Record(va.AppendRecord(nil, streamA[i]))
			check(fmt.Sprintf("stream record %d", streamA[i].Start), got, err, vb.AppendRecord(nil, blankTiles(streamB[i])))
		}
		for day := range batchA.days {
			want := blankTiles(batchB.days[day])
			if v1 {
				got, err := tr.DayRecord(batchA.dayEnc[day])
				check(fmt.Sprintf("version 1 day record %d", day), got, err, vb.appendDayRecordV1(nil, want))
				continue
			}
			got, err := tr.DayRecord(batchA.dayEnc[day])
			check(fmt.Sprintf("day record %d", day), got, err, vb.AppendDayRecord(nil, want))
		}
		for block, ra := range batchA.details {
			got, err := tr.DetailRecord(va.AppendDetailRecord(nil, ra))
			check(fmt.Sprintf("detail record %d", block), got, err, vb.AppendDetailRecord(nil, blankTiles(batchB.details[block])))
		}
	}
}

func TestTranslatorRefusesOtherTiles(t *testing.T) {
	v := newTestView(t, Minute, MinTime, Feature{Name: "s", Function: Sum, Column: "amount", Window: Hour})
	l := v.Layout()
	l.Granularity = 5 * Minute
	if _, err := NewTranslator(l, v); err == nil {
		t.Fatal("a layout of another granularity was translated")
	}
	l = v.Layout()
	l.LifetimeStart = 0
	if _, err := NewTranslator(l, v); err == nil {
		t.Fatal("a layout of another lifetime start was translated")
	}
	l = v.Layout()
	l.Aggs = append(l.Aggs, LayoutAgg{Kind: "nonesuch"})
	if _, err := NewTranslator(l, v); err == nil {
		t.Fatal("a layout with an unknown aggregate was accepted")
	}
	same, err := NewTranslator(v.Layout(), v)
	if err != nil || !same.Identity() || len(same.Pending()) != 0 {
		t.Fatalf("a view's own layout: identity %v, pending %v, %v", same != nil && same.Identity(), same.Pending(), err)
	}
	// Corrupt input is an error, never a panic.
	for _, b := range [][]byte{nil, {0}, {detailVersion}, {detailVersion, 1, 0, 5, 1}, {recordVersion, 9}} {
		_, _ = same.Record(b)
		_, _ = same.DayRecord(b)
		_, _ = same.Summary(b)
		if _, err := same.DetailRecord(b); err == nil {
			t.Fatalf("detail record %x translated", b)
		}
	}
}
