package tiling

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
)

// Lifetime is the Window of a lifetime feature.
const Lifetime int64 = 0

// Feature is one served value: a function of a column over a window.
type Feature struct {
	Name     string
	Function Function
	// Column is the event field aggregated; empty for count over events.
	Column string
	// Window is the window length in ms; Lifetime (0) for a lifetime window.
	Window int64

	// Options of some functions (see ValidateOptions); zero means unset, which
	// takes the default where there is one.

	// N is how many values first_n, last_n and last_distinct_n keep, 1..MaxN.
	// Required.
	N int
	// K is how many values top_k reports, 1..MaxK. Required.
	K int
	// Precision p of approx_count_distinct's HyperLogLog (2^p registers),
	// MinPrecision..MaxPrecision; default DefaultPrecision.
	Precision int
	// Percentiles approx_percentile reports, each within [0, 1]. Required.
	Percentiles []float64
	// Accuracy is approx_percentile's relative accuracy, within
	// [MinAccuracy, MaxAccuracy]; default DefaultAccuracy.
	Accuracy float64
	// MaxBins bounds approx_percentile's bins; past it the lowest collapse.
	// MinMaxBins..MaxMaxBins; default DefaultMaxBins.
	MaxBins int
	// MaxValueBytes bounds the values that first, last, first_n, last_n,
	// last_distinct_n and top_k keep: a longer value is not kept, as if
	// absent. Default DefaultMaxRawBytes for first and last,
	// DefaultMaxValueBytes for the others.
	MaxValueBytes int
}

// View is a validated feature view. Build one with NewView.
type View struct {
	Name  string
	Topic string
	// Entity is the event field holding the key; Timestamp the field holding
	// the event time.
	Entity, Timestamp string
	// EventID optionally names the field holding an event's identity: the
	// healer then counts events with the same id once (a retrying
	// producer's duplicates). Empty: the identity is the Kafka position.
	EventID string
	// Granularity g of tiles, ms.
	Granularity int64
	// LifetimeStart is the first event time (ms) counted by lifetime windows;
	// MinTime when unset.
	LifetimeStart int64
	Features      []Feature

	// Derived by NewView.
	columns []string // distinct columns, index = Input position
	// colNumeric: some function reads the column as a number, so another
	// JSON type there makes the event malformed. colRaw: some function keeps
	// the raw value (Input.Raw must be set).
	colNumeric, colRaw []bool
	aggs               []aggSpec
	featAgg            []int // feature index → aggs index
	span               int64
	// windows holds the distinct window lengths, lifetime last; winFeats maps
	// each to its feature indexes.
	windows  []int64
	winFeats [][]int
}

// aggSpec is one partial aggregate kept per tile, shared by the features that
// use the same function state over the same column.
type aggSpec struct {
	kind   stateKind
	column int // index into columns, -1 for none
	// Parameters of the kinds that take them, zero otherwise: n is the
	// entries of first_n, last_n and last_distinct_n, the capacity of
	// top_k, the precision of a HyperLogLog and the bins per octave of
	// quantiles; maxBins bounds the bins of quantiles; maxValue the bytes of
	// a kept value.
	n, maxBins, maxValue int
	// mapping is derived from n for quantiles; not part of the identity.
	mapping *quantileMapping
}

// key is a's identity: features with equal keys share one partial aggregate.
func (a aggSpec) key() aggSpec {
	a.mapping = nil
	return a
}

// DefaultGranularity follows Tecton: smallest window < 1h → 1m, < 10h → 5m,
// else 1h; 1h for lifetime-only views.
func DefaultGranularity(features []Feature) int64 {
	smallest := int64(0)
	for _, f := range features {
		if f.Window > 0 && (smallest == 0 || f.Window < smallest) {
			smallest = f.Window
		}
	}
	switch {
	case smallest == 0:
		return Hour
	case smallest < Hour:
		return Minute
	case smallest < 10*Hour:
		return 5 * Minute
	default:
		return Hour
	}
}

// recordSpan packs tiles into records of about one hour for sub-hour tiles and
// about one day for sub-day tiles.
func recordSpan(g int64) int64 {
	target := Hour
	if g >= Hour {
		target = Day
	}
	p := target / g
	if p < 1 {
		p = 1
	}
	return p * g
}

// NewView validates v (Granularity 0 means the default) and derives its
// layout. The error lists every problem found.
func NewView(v View) (*View, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if v.Name == "" {
		bad("view has no name")
	}
	if v.Topic == "" {
		bad("view %q: no topic", v.Name)
	}
	if v.Entity == "" {
		bad("view %q: no entity field", v.Name)
	}
	if v.Timestamp == "" {
		bad("view %q: no timestamp field", v.Name)
	}
	if len(v.Features) == 0 {
		bad("view %q: no features", v.Name)
	}
	if v.Granularity == 0 {
		v.Granularity = DefaultGranularity(v.Features)
	}
	g := v.Granularity
	if g < 0 {
		bad("view %q: granularity must be positive", v.Name)
		g = Minute
	}
	if Day%g != 0 && g%Day != 0 {
		bad("view %q: granularity %s must divide a day or be a whole number of days", v.Name, FormatDuration(g))
	}
	if v.LifetimeStart != MinTime && !Aligned(v.LifetimeStart, g) {
		bad("view %q: lifetime_start must be aligned to the granularity %s", v.Name, FormatDuration(g))
	}
	seen := map[string]bool{}
	for _, f := range v.Features {
		where := fmt.Sprintf("view %q feature %q", v.Name, f.Name)
		if f.Name == "" {
			bad("view %q: a feature has no name", v.Name)
		} else if seen[f.Name] {
			bad("%s: duplicate name", where)
		}
		seen[f.Name] = true
		if !f.Function.valid() {
			bad("%s: unknown function", where)
			continue
		}
		if err := f.ValidateOptions(); err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				bad("%s: %v", where, e)
			}
		}
		needs := f.Function.needsColumn()
		if needs && f.Column == "" {
			bad("%s: function %s needs a column", where, f.Function)
		}
		if f.Window < 0 {
			bad("%s: window must be positive or lifetime", where)
		} else if f.Window > 0 && f.Window%g != 0 {
			bad("%s: window %s is not a multiple of the granularity %s", where, FormatDuration(f.Window), FormatDuration(g))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := v
	out.Features = append([]Feature(nil), v.Features...)
	for i := range out.Features {
		if p := out.Features[i].Percentiles; p != nil {
			out.Features[i].Percentiles = append([]float64(nil), p...)
		}
	}
	out.span = recordSpan(g)
	colIdx := map[string]int{}
	aggIdx := map[aggSpec]int{}
	mappings := map[int]*quantileMapping{}
	for _, f := range out.Features {
		col := -1
		if f.Column != "" {
			i, ok := colIdx[f.Column]
			if !ok {
				i = len(out.columns)
				colIdx[f.Column] = i
				out.columns = append(out.columns, f.Column)
				out.colNumeric = append(out.colNumeric, false)
				out.colRaw = append(out.colRaw, false)
			}
			col = i
			out.colNumeric[i] = out.colNumeric[i] || f.Function.numeric()
			out.colRaw[i] = out.colRaw[i] || f.Function.keepsRaw()
		}
		spec := f.spec(col)
		i, ok := aggIdx[spec.key()]
		if !ok {
			i = len(out.aggs)
			aggIdx[spec.key()] = i
			if spec.kind == kindQuantiles {
				if mappings[spec.n] == nil {
					mappings[spec.n] = newQuantileMapping(spec.n)
				}
				spec.mapping = mappings[spec.n]
			}
			out.aggs = append(out.aggs, spec)
		}
		out.featAgg = append(out.featAgg, i)
	}
	if err := out.checkTileSize(); err != nil {
		return nil, fmt.Errorf("view %q: %w", v.Name, err)
	}
	winIdx := map[int64]int{}
	for _, f := range out.Features {
		if _, ok := winIdx[f.Window]; !ok {
			winIdx[f.Window] = 0
			out.windows = append(out.windows, f.Window)
		}
	}
	// Smallest window first, lifetime (0) last: evaluation walks tiles from
	// the newest and finishes the windows in this order.
	sort.Slice(out.windows, func(i, j int) bool {
		a, b := out.windows[i], out.windows[j]
		if a == Lifetime || b == Lifetime {
			return b == Lifetime && a != Lifetime
		}
		return a < b
	})
	out.winFeats = make([][]int, len(out.windows))
	for i, w := range out.windows {
		winIdx[w] = i
	}
	for fi, f := range out.Features {
		i := winIdx[f.Window]
		out.winFeats[i] = append(out.winFeats[i], fi)
	}
	return &out, nil
}

// WorstTileBytes returns the most bytes one tile's states can take, whatever
// the events: NewView rejects views where it exceeds MaxTileBytes.
func (v *View) WorstTileBytes() int {
	n := 3 // the tile index
	for i := range v.aggs {
		n += v.aggs[i].maxBytes()
	}
	return n
}

// checkTileSize returns a *TileSizeError if a tile could exceed MaxTileBytes.
func (v *View) checkTileSize() error {
	total := v.WorstTileBytes()
	if total <= MaxTileBytes {
		return nil
	}
	e := &TileSizeError{View: v.Name, Bytes: total}
	for i := range v.aggs {
		part := TilePart{Bytes: v.aggs[i].maxBytes()}
		if part.Bytes < 1024 {
			continue
		}
		for fi, f := range v.Features {
			if v.featAgg[fi] == i {
				part.Features = append(part.Features, f.Name)
			}
		}
		e.Parts = append(e.Parts, part)
	}
	sort.SliceStable(e.Parts, func(i, j int) bool { return e.Parts[i].Bytes > e.Parts[j].Bytes })
	return e
}

// Columns returns the distinct event fields the view aggregates, in the order
// of the Inputs an Event carries.
func (v *View) Columns() []string { return v.columns }

// ColumnNumeric reports whether column i must hold a number when present.
func (v *View) ColumnNumeric(i int) bool { return v.colNumeric[i] }

// ColumnRaw reports whether column i's Input must carry the raw JSON value.
func (v *View) ColumnRaw(i int) bool { return v.colRaw[i] }

// Span returns the time covered by one stored record, ms.
func (v *View) Span() int64 { return v.span }

// Fingerprint identifies the tile layout: granularity, span and the partial
// aggregates in order. Tiles stored under another fingerprint cannot be read
// with this view.
func (v *View) Fingerprint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "v1 g=%d span=%d", v.Granularity, v.span)
	if v.LifetimeStart != MinTime {
		// The batch layout's Base counts from it: moving it needs a rebuild.
		fmt.Fprintf(&b, " life=%d", v.LifetimeStart)
	}
	for _, a := range v.aggs {
		col := ""
		if a.column >= 0 {
			col = v.columns[a.column]
		}
		fmt.Fprintf(&b, " %s(%q", a.kind, col)
		// The kinds of the first version print no parameters, so their
		// fingerprints stay what they were.
		switch a.kind {
		case kindLast:
			if a.maxValue != DefaultMaxRawBytes {
				fmt.Fprintf(&b, ",max=%d", a.maxValue)
			}
		case kindCount, kindSum, kindMin, kindMax, kindMean, kindMoments:
		default:
			fmt.Fprintf(&b, ",n=%d,bins=%d,max=%d", a.n, a.maxBins, a.maxValue)
		}
		b.WriteString(")")
	}
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return fmt.Sprintf("%016x", h.Sum64())
}

// WindowStart returns the first event time counted by window w at time t.
func (v *View) WindowStart(w, t int64) int64 {
	if w == Lifetime {
		return v.LifetimeStart
	}
	return AlignDown(t-w, v.Granularity)
}

// End returns the exclusive end of every window at time t: the end of the
// current tile.
func (v *View) End(t int64) int64 { return AlignDown(t, v.Granularity) + v.Granularity }

// ReadRange returns [from, to): the event times whose tiles serve time t.
func (v *View) ReadRange(t int64) (from, to int64) {
	from = v.End(t)
	for _, w := range v.windows {
		if s := v.WindowStart(w, t); s < from {
			from = s
		}
	}
	return from, v.End(t)
}
