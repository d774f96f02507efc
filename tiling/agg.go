package tiling

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
)

// stateKind identifies a partial-aggregate type; its value is part of the
// fingerprint, never reuse one.
type stateKind uint8

const (
	kindCount         stateKind = 1
	kindSum           stateKind = 2
	kindMin           stateKind = 3
	kindMax           stateKind = 4
	kindMean          stateKind = 5
	kindLast          stateKind = 6
	kindFirst         stateKind = 7
	kindMoments       stateKind = 8
	kindFirstN        stateKind = 9
	kindLastN         stateKind = 10
	kindLastDistinctN stateKind = 11
	kindHLL           stateKind = 12
	kindQuantiles     stateKind = 13
	kindFreq          stateKind = 14
	numKinds                    = 15
)

var kindNames = [numKinds]string{
	kindCount: "count", kindSum: "sum", kindMin: "min", kindMax: "max", kindMean: "mean",
	kindLast: "last", kindFirst: "first", kindMoments: "moments", kindFirstN: "first_n",
	kindLastN: "last_n", kindLastDistinctN: "last_distinct_n", kindHLL: "hll",
	kindQuantiles: "quantiles", kindFreq: "freq",
}

func (k stateKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// InputKind says what an event carried in a column.
type InputKind uint8

const (
	// Missing: the field is absent or null. Functions over the column skip it.
	Missing InputKind = iota
	// Number: a finite JSON number, in Num (never -0: ingest normalises it).
	Number
	// Other: any other JSON value; only functions that keep raw values use it.
	Other
)

// Input is an event's value for one column. Raw holds the compact JSON text of
// the value for Number and Other.
type Input struct {
	Kind InputKind
	Num  float64
	Raw  []byte
}

// Pos is an event's position in its stream; with the event time it orders
// events deterministically for last.
type Pos struct {
	Partition int32
	Offset    int64
}

// Event is a decoded event, ready to aggregate. Inputs are in the order of
// View.Columns.
type Event struct {
	Key    string
	TS     int64
	Pos    Pos
	Inputs []Input
	// ID is the value of the view's EventID field as text ("" when the view
	// has none or the event lacks it).
	ID string
	// KeyRef, when not zero, names Key within the process: two events with
	// the same non-zero KeyRef have the same Key. A reader sets it when it
	// has such a name for free (the offline log: a Parquet value's place in
	// its page or dictionary), so that a consumer can find the key's state
	// without hashing the key; the zero value says nothing.
	KeyRef KeyRef
}

// KeyRef names an event's key; see Event.KeyRef. Store is a process-wide
// unique number of the storage the key came from (0: no name), Index its
// place there.
type KeyRef struct {
	Store uint64
	Index uint32
}

// State is a partial aggregate. See the package doc for the merge contract.
type State interface {
	add(e *Event, in *Input)
	// merge folds o, a state of the same kind, into the receiver.
	merge(o State)
	appendBinary(dst []byte) []byte
	// value is the finalised value of feature f (whose partial aggregate
	// this is): a JSON-encodable Go value, nil for null. Lists, objects and
	// raw values are json.RawMessage.
	value(f *Feature) any
}

// newState returns the identity state of a.
func newState(a *aggSpec) State {
	switch a.kind {
	case kindCount:
		return new(countState)
	case kindSum:
		return new(sumState)
	case kindMin:
		return &extremeState{max: false}
	case kindMax:
		return &extremeState{max: true}
	case kindMean:
		return new(meanState)
	case kindLast:
		return &lastState{maxValue: a.maxValue}
	case kindFirst:
		return &lastState{first: true, maxValue: a.maxValue}
	case kindMoments:
		return new(momentsState)
	case kindFirstN, kindLastN:
		return &listState{last: a.kind == kindLastN, n: a.n, maxValue: a.maxValue}
	case kindLastDistinctN:
		return &distinctState{n: a.n, maxValue: a.maxValue}
	case kindHLL:
		return &hllState{p: uint8(a.n)}
	case kindQuantiles:
		return &quantileState{mapping: a.mapping, maxBins: a.maxBins}
	case kindFreq:
		return &freqState{capacity: a.n, maxValue: a.maxValue}
	}
	panic(fmt.Sprintf("tiling: unknown state kind %d", a.kind))
}

// stateArena allocates the states of one decoded record a slice per kind,
// rather than one allocation per state. A nil arena allocates each state.
type stateArena struct {
	counts   []countState
	sums     []sumState
	extremes []extremeState
	means    []meanState
	lasts    []lastState
	hlls     []hllState
	quants   []quantileState
}

// newStateArena sizes an arena for tiles tiles of layout aggs.
func newStateArena(aggs []aggSpec, tiles int) *stateArena {
	var n [numKinds]int
	for _, a := range aggs {
		n[a.kind]++
	}
	return &stateArena{
		counts:   make([]countState, 0, tiles*n[kindCount]),
		sums:     make([]sumState, 0, tiles*n[kindSum]),
		extremes: make([]extremeState, 0, tiles*(n[kindMin]+n[kindMax])),
		means:    make([]meanState, 0, tiles*n[kindMean]),
		lasts:    make([]lastState, 0, tiles*(n[kindLast]+n[kindFirst])),
		hlls:     make([]hllState, 0, tiles*n[kindHLL]),
		quants:   make([]quantileState, 0, tiles*n[kindQuantiles]),
	}
}

// next returns a pointer to a fresh zero element of *s, growing it if full.
func next[T any](ar *stateArena, s *[]T) *T {
	if ar == nil || len(*s) == cap(*s) {
		return new(T)
	}
	*s = (*s)[:len(*s)+1]
	return &(*s)[len(*s)-1]
}

func decodeState(a *aggSpec, b []byte) (State, []byte, error) { return decodeStateIn(a, b, nil) }

// decodeStateIn decodes one state of a from b; decoded states may refer to
// b, which the caller must not change afterwards.
func decodeStateIn(a *aggSpec, b []byte, ar *stateArena) (State, []byte, error) {
	if ar == nil {
		ar = &stateArena{}
	}
	k := a.kind
	switch k {
	case kindCount:
		n, m := binary.Uvarint(b)
		if m <= 0 {
			return nil, nil, fmt.Errorf("count: %w", ErrCorrupt)
		}
		s := next(ar, &ar.counts)
		*s = countState(n)
		return s, b[m:], nil
	case kindSum:
		es, rest, err := decodeExactSum(b)
		if err != nil {
			return nil, nil, err
		}
		s := next(ar, &ar.sums)
		s.s = es
		return s, rest, nil
	case kindMin, kindMax:
		s := next(ar, &ar.extremes)
		s.max = k == kindMax
		if len(b) < 1 {
			return nil, nil, fmt.Errorf("%s: short: %w", k, ErrCorrupt)
		}
		switch b[0] {
		case 0:
			return s, b[1:], nil
		case 1:
		default:
			return nil, nil, fmt.Errorf("%s: bad flag: %w", k, ErrCorrupt)
		}
		if len(b) < 9 {
			return nil, nil, fmt.Errorf("%s: short: %w", k, ErrCorrupt)
		}
		s.has = true
		s.v = math.Float64frombits(binary.LittleEndian.Uint64(b[1:9]))
		if math.IsNaN(s.v) || math.IsInf(s.v, 0) {
			return nil, nil, fmt.Errorf("%s: non-finite: %w", k, ErrCorrupt)
		}
		return s, b[9:], nil
	case kindMean:
		es, rest, err := decodeExactSum(b)
		if err != nil {
			return nil, nil, err
		}
		n, m := binary.Uvarint(rest)
		if m <= 0 {
			return nil, nil, fmt.Errorf("mean: %w", ErrCorrupt)
		}
		s := next(ar, &ar.means)
		s.sum, s.n = es, n
		return s, rest[m:], nil
	case kindLast, kindFirst:
		s := next(ar, &ar.lasts)
		s.first, s.maxValue = k == kindFirst, a.maxValue
		return decodeLast(b, s)
	case kindMoments:
		return decodeMoments(b)
	case kindFirstN, kindLastN:
		return decodeList(a, b)
	case kindLastDistinctN:
		return decodeDistinct(a, b)
	case kindHLL:
		return decodeHLL(a, b, next(ar, &ar.hlls))
	case kindQuantiles:
		return decodeQuantiles(a, b, next(ar, &ar.quants))
	case kindFreq:
		return decodeFreq(a, b)
	}
	return nil, nil, fmt.Errorf("state kind %d: %w", k, ErrCorrupt)
}

// countState counts events, or events with the column present.
type countState uint64

func (s *countState) add(e *Event, in *Input) {
	if in == nil || in.Kind != Missing {
		*s++
	}
}
func (s *countState) merge(o State) { *s += *o.(*countState) }
func (s *countState) appendBinary(dst []byte) []byte {
	return binary.AppendUvarint(dst, uint64(*s))
}
func (s *countState) value(*Feature) any { return uint64(*s) }

// sumState is an exact sum; empty sums are 0.
type sumState struct{ s ExactSum }

func (s *sumState) add(e *Event, in *Input) {
	if in.Kind == Number {
		s.s.Add(in.Num)
	}
}
func (s *sumState) merge(o State)                  { s.s.Merge(&o.(*sumState).s) }
func (s *sumState) appendBinary(dst []byte) []byte { return s.s.AppendBinary(dst) }
func (s *sumState) value(*Feature) any             { return finite(s.s.Float64()) }

// finite maps ±Inf (a sum beyond the float64 range) to null.
func finite(f float64) any {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil
	}
	return f
}

// extremeState is min or max; empty is null.
type extremeState struct {
	max bool
	has bool
	v   float64
}

func (s *extremeState) add(e *Event, in *Input) {
	if in.Kind == Number {
		s.put(in.Num)
	}
}

func (s *extremeState) put(x float64) {
	if !s.has || (s.max && x > s.v) || (!s.max && x < s.v) {
		s.v, s.has = x, true
	}
}

func (s *extremeState) merge(o State) {
	if x := o.(*extremeState); x.has {
		s.put(x.v)
	}
}

func (s *extremeState) appendBinary(dst []byte) []byte {
	if !s.has {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.v))
}

func (s *extremeState) value(*Feature) any {
	if !s.has {
		return nil
	}
	return s.v
}

// meanState is an exact sum and a count; the mean is the rounded sum divided
// by the count in float64, deterministic whatever the merge order. Empty is null.
type meanState struct {
	sum ExactSum
	n   uint64
}

func (s *meanState) add(e *Event, in *Input) {
	if in.Kind == Number {
		s.sum.Add(in.Num)
		s.n++
	}
}

func (s *meanState) merge(o State) {
	x := o.(*meanState)
	s.sum.Merge(&x.sum)
	s.n += x.n
}

func (s *meanState) appendBinary(dst []byte) []byte {
	dst = s.sum.AppendBinary(dst)
	return binary.AppendUvarint(dst, s.n)
}

func (s *meanState) value(*Feature) any {
	if s.n == 0 {
		return nil
	}
	return finite(meanOf(&s.sum, s.n)) // rounded once
}

// lastState keeps the value of the event latest by (time, partition,
// offset), or with first the earliest. Values longer than maxValue bytes are
// not kept (as if absent). Empty is null.
type lastState struct {
	first    bool
	maxValue int
	has      bool
	ts       int64
	pos      Pos
	raw      []byte
	// shared: raw refers to a decoded record's bytes; copy before writing.
	shared bool
}

func (s *lastState) set(raw []byte) {
	if s.shared {
		s.raw, s.shared = nil, false
	}
	s.raw = append(s.raw[:0], raw...)
}

// later reports whether an event at (ts, pos) replaces the kept one: it is
// later, or with first earlier.
func (s *lastState) later(ts int64, pos Pos) bool {
	if !s.has {
		return true
	}
	c := compareEvents(ts, pos, s.ts, s.pos)
	if s.first {
		return c < 0
	}
	return c > 0
}

// compareEvents orders events by (time, partition, offset).
func compareEvents(ts int64, pos Pos, ts2 int64, pos2 Pos) int {
	switch {
	case ts != ts2:
		return cmpInt(ts, ts2)
	case pos.Partition != pos2.Partition:
		return cmpInt(int64(pos.Partition), int64(pos2.Partition))
	}
	return cmpInt(pos.Offset, pos2.Offset)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *lastState) add(e *Event, in *Input) {
	if in.Kind == Missing || len(in.Raw) > s.maxValue || !s.later(e.TS, e.Pos) {
		return
	}
	s.has, s.ts, s.pos = true, e.TS, e.Pos
	s.set(in.Raw)
}

func (s *lastState) merge(o State) {
	x := o.(*lastState)
	if x.has && s.later(x.ts, x.pos) {
		s.has, s.ts, s.pos = true, x.ts, x.pos
		s.set(x.raw)
	}
}

func (s *lastState) appendBinary(dst []byte) []byte {
	if !s.has {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendVarint(dst, s.ts)
	dst = binary.AppendUvarint(dst, uint64(uint32(s.pos.Partition)))
	dst = binary.AppendVarint(dst, s.pos.Offset)
	dst = binary.AppendUvarint(dst, uint64(len(s.raw)))
	return append(dst, s.raw...)
}

func decodeLast(b []byte, s *lastState) (State, []byte, error) {
	if len(b) < 1 {
		return nil, nil, fmt.Errorf("last: short: %w", ErrCorrupt)
	}
	switch b[0] {
	case 0:
		return s, b[1:], nil
	case 1:
	default:
		return nil, nil, fmt.Errorf("last: bad flag: %w", ErrCorrupt)
	}
	b = b[1:]
	var m int
	if s.ts, m = binary.Varint(b); m <= 0 {
		return nil, nil, fmt.Errorf("last: time: %w", ErrCorrupt)
	}
	b = b[m:]
	p, m := binary.Uvarint(b)
	if m <= 0 || p > math.MaxUint32 {
		return nil, nil, fmt.Errorf("last: partition: %w", ErrCorrupt)
	}
	s.pos.Partition = int32(uint32(p))
	b = b[m:]
	if s.pos.Offset, m = binary.Varint(b); m <= 0 {
		return nil, nil, fmt.Errorf("last: offset: %w", ErrCorrupt)
	}
	b = b[m:]
	n, m := binary.Uvarint(b)
	// No check against maxValue: a store written before max_value_bytes
	// existed may hold longer values, and they stay readable.
	if m <= 0 || n > uint64(len(b)-m) || n == 0 {
		return nil, nil, fmt.Errorf("last: value: %w", ErrCorrupt)
	}
	b = b[m:]
	s.raw, s.shared = b[:n:n], true
	if !json.Valid(s.raw) {
		return nil, nil, fmt.Errorf("last: value is not JSON: %w", ErrCorrupt)
	}
	s.has = true
	return s, b[n:], nil
}

func (s *lastState) value(*Feature) any {
	if !s.has {
		return nil
	}
	// A copy: Evaluate keeps merging into s after taking a window's value,
	// and a first changes as older tiles come.
	return json.RawMessage(bytes.Clone(s.raw))
}
