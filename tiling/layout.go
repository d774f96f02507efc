package tiling

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Layout describes what a view's stored tiles hold: the granularity, the
// record span, the lifetime start and the partial aggregates in order. It is
// what the fingerprint hashes, kept whole so that a store can translate
// records written under an older layout (Translator). Its JSON form is
// stored beside the fingerprint (docs/format.md).
type Layout struct {
	Granularity   int64       `json:"g"`
	Span          int64       `json:"span"`
	LifetimeStart int64       `json:"life"`
	Aggs          []LayoutAgg `json:"aggs"`
}

// LayoutAgg is one partial aggregate of a layout: its kind, the column it
// reads (empty for none) and the parameters that change its state.
type LayoutAgg struct {
	Kind     string `json:"kind"`
	Column   string `json:"col,omitempty"`
	N        int    `json:"n,omitempty"`
	MaxBins  int    `json:"bins,omitempty"`
	MaxValue int    `json:"max,omitempty"`
}

// Layout returns v's layout.
func (v *View) Layout() Layout {
	l := Layout{Granularity: v.Granularity, Span: v.span, LifetimeStart: v.LifetimeStart}
	for _, a := range v.aggs {
		l.Aggs = append(l.Aggs, v.layoutAgg(a))
	}
	return l
}

func (v *View) layoutAgg(a aggSpec) LayoutAgg {
	la := LayoutAgg{Kind: a.kind.String(), N: a.n, MaxBins: a.maxBins, MaxValue: a.maxValue}
	if a.column >= 0 {
		la.Column = v.columns[a.column]
	}
	return la
}

// AggFeatures returns the names of v's features computed from any of aggs.
func (v *View) AggFeatures(aggs []LayoutAgg) []string {
	var out []string
	for fi, ai := range v.featAgg {
		if slices.Contains(aggs, v.layoutAgg(v.aggs[ai])) {
			out = append(out, v.Features[fi].Name)
		}
	}
	return out
}

// shell returns a view that decodes and encodes records of layout l: only
// its layout is set.
func (l Layout) shell() (*View, error) {
	v := &View{Granularity: l.Granularity, span: l.Span, LifetimeStart: l.LifetimeStart}
	if l.Granularity <= 0 || l.Span <= 0 || l.Span%l.Granularity != 0 {
		return nil, fmt.Errorf("layout: granularity %d, span %d: %w", l.Granularity, l.Span, ErrCorrupt)
	}
	cols := map[string]int{}
	for _, la := range l.Aggs {
		k := stateKind(0)
		for i, name := range kindNames {
			if name != "" && name == la.Kind {
				k = stateKind(i)
			}
		}
		if k == 0 {
			return nil, fmt.Errorf("layout: unknown partial aggregate %q: %w", la.Kind, ErrCorrupt)
		}
		a := aggSpec{kind: k, column: -1, n: la.N, maxBins: la.MaxBins, maxValue: la.MaxValue}
		if la.Column != "" {
			i, ok := cols[la.Column]
			if !ok {
				i = len(v.columns)
				cols[la.Column] = i
				v.columns = append(v.columns, la.Column)
			}
			a.column = i
		}
		if k == kindQuantiles {
			if a.n < 1 || a.n > 1<<16 {
				return nil, fmt.Errorf("layout: quantile bins per octave %d: %w", a.n, ErrCorrupt)
			}
			a.mapping = newQuantileMapping(a.n)
		}
		v.aggs = append(v.aggs, a)
	}
	return v, nil
}

// Translator rewrites encoded records of an older layout into a view's
// layout when only the partial aggregates differ (same granularity, span and
// lifetime start): a state both layouts hold is copied, a state only the old
// one holds is dropped, and a state only the new one holds starts empty —
// Pending lists those; the features computed from them are wrong until a
// heal recomputes them from the offline log.
type Translator struct {
	from, to *View
	src      []int // to's agg index → from's, or -1
}

// NewTranslator returns the translator from layout from to v's layout, or an
// error when records of from cannot be translated (another granularity,
// span or lifetime start: the view must be rebuilt).
func NewTranslator(from Layout, v *View) (*Translator, error) {
	if from.Granularity != v.Granularity || from.Span != v.span || from.LifetimeStart != v.LifetimeStart {
		return nil, fmt.Errorf("layout: granularity, record span or lifetime start changed")
	}
	old, err := from.shell()
	if err != nil {
		return nil, err
	}
	t := &Translator{from: old, to: v, src: make([]int, len(v.aggs))}
	for i, a := range v.aggs {
		t.src[i] = slices.Index(from.Aggs, v.layoutAgg(a))
	}
	return t, nil
}

// Pending returns the partial aggregates of the new layout that the old one
// lacks.
func (t *Translator) Pending() []LayoutAgg {
	var out []LayoutAgg
	for i, s := range t.src {
		if s < 0 {
			out = append(out, t.to.layoutAgg(t.to.aggs[i]))
		}
	}
	return out
}

// Identity reports whether the layouts hold the same partial aggregates in
// the same order: records need no translation.
func (t *Translator) Identity() bool {
	if len(t.from.aggs) != len(t.to.aggs) {
		return false
	}
	for i, s := range t.src {
		if s != i {
			return false
		}
	}
	return true
}

func (t *Translator) states(old []State) []State {
	if old == nil {
		return nil
	}
	out := make([]State, len(t.src))
	for i, s := range t.src {
		if s >= 0 {
			out[i] = old[s]
		} else {
			out[i] = newState(&t.to.aggs[i])
		}
	}
	return out
}

func (t *Translator) tiles(r *Record) {
	for i := range r.Tiles {
		r.Tiles[i].States = t.states(r.Tiles[i].States)
	}
}

// Record translates an encoded stream record.
func (t *Translator) Record(b []byte) ([]byte, error) {
	r, err := t.from.DecodeRecord(0, b)
	if err != nil {
		return nil, err
	}
	t.tiles(r)
	return t.to.AppendRecord(nil, r), nil
}

// DayRecord translates an encoded day record in its own version: a
// version 2 record's suffixes are translated in place, the index kept (a
// suffix of translated states is the translated suffix: states are
// translated one partial aggregate at a time); a version 1 record's block
// aggregates are translated and written as version 1 again.
func (t *Translator) DayRecord(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != dayVersion {
		r, err := t.from.decodeDayRecordV1(0, b)
		if err != nil {
			return nil, err
		}
		t.tiles(r)
		return t.to.appendDayRecordV1(nil, r), nil
	}
	ents, body, err := t.from.parseDay(b, nil)
	if err != nil {
		return nil, err
	}
	suffix := make([][]byte, len(ents))
	for i, e := range ents {
		st, err := t.from.decodeDayStates(body, e)
		if err != nil {
			return nil, err
		}
		suffix[i] = appendStates(nil, t.states(st))
	}
	out := []byte{dayVersion}
	out = binary.AppendUvarint(out, uint64(len(ents)))
	for _, e := range ents {
		out = binary.AppendUvarint(out, e.idx)
		out = binary.AppendUvarint(out, e.single)
	}
	for _, s := range suffix {
		out = binary.AppendUvarint(out, uint64(len(s)))
	}
	for _, s := range suffix {
		out = append(out, s...)
	}
	return out, nil
}

// Summary translates an encoded summary; its day suffixes are recomputed.
func (t *Translator) Summary(b []byte) ([]byte, error) {
	s, err := t.from.DecodeSummary(b)
	if err != nil {
		return nil, err
	}
	s.Base = t.states(s.Base)
	for i := range s.Days {
		s.Days[i].Total = t.states(s.Days[i].Total)
	}
	s.suffixRaw, s.suffix = nil, nil
	return t.to.AppendSummary(nil, s), nil
}

// DetailRecord translates an encoded detail record: each tile's suffix
// aggregate is translated in place, the index kept.
func (t *Translator) DetailRecord(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != detailVersion {
		return nil, fmt.Errorf("detail record: bad version: %w", ErrVersion)
	}
	in := b[1:]
	n, m := binary.Uvarint(in)
	per := uint64(t.from.span / t.from.Granularity)
	if m <= 0 || n > per || n > uint64(len(in)) {
		return nil, fmt.Errorf("detail record: tile count: %w", ErrCorrupt)
	}
	in = in[m:]
	idx := make([]uint64, n)
	for i := range idx {
		x, m := binary.Uvarint(in)
		if m <= 0 || x >= per || (i > 0 && x <= idx[i-1]) {
			return nil, fmt.Errorf("detail record: tile index: %w", ErrCorrupt)
		}
		idx[i], in = x, in[m:]
	}
	lens := make([]uint64, n)
	var sum uint64
	for i := range lens {
		l, m := binary.Uvarint(in)
		if m <= 0 || l > uint64(len(in)) {
			return nil, fmt.Errorf("detail record: tile length: %w", ErrCorrupt)
		}
		lens[i], sum, in = l, sum+l, in[m:]
	}
	if sum != uint64(len(in)) {
		return nil, fmt.Errorf("detail record: %d bytes for %d: %w", len(in), sum, ErrCorrupt)
	}
	in = append([]byte(nil), in...) // decoded states may refer to their bytes
	suffix := make([][]byte, n)
	for i := range suffix {
		st, rest, err := t.from.decodeStates(in[:lens[i]], nil)
		if err != nil {
			return nil, fmt.Errorf("detail record: %w", err)
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("detail record: trailing bytes in a tile: %w", ErrCorrupt)
		}
		suffix[i], in = appendStates(nil, t.states(st)), in[lens[i]:]
	}
	out := []byte{detailVersion}
	out = binary.AppendUvarint(out, n)
	for _, x := range idx {
		out = binary.AppendUvarint(out, x)
	}
	for _, s := range suffix {
		out = binary.AppendUvarint(out, uint64(len(s)))
	}
	for _, s := range suffix {
		out = append(out, s...)
	}
	return out, nil
}

// Fingerprint returns the fingerprint of a view of layout l, so that a
// stored layout can be checked against the fingerprint stored with it.
func (l Layout) Fingerprint() (string, error) {
	v, err := l.shell()
	if err != nil {
		return "", err
	}
	return v.Fingerprint(), nil
}
