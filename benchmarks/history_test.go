package benchmarks

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// history writes synthetic events of one view straight into the online
// store's stream records and the offline log's archive files, as the ingest
// would have, for setups too large to push through Kafka quickly (the healer
// tests' `world` does the same). Either side may be nil.
type history struct {
	tb      testing.TB
	v       *tiling.View
	store   *state.Store      // nil: no stream records
	offline *state.OfflineLog // nil: nothing archived

	parts   int32
	roll    int                  // archive rows per roll (file set)
	offsets []int64              // next offset per partition
	bufs    [][]state.ArchiveRow // per partition, waiting for a roll
	recs    map[recID]*tiling.Record

	amount, merchant int // column indexes
	merchants        [][]byte

	// tiles and blocks, when not nil, collect the distinct (key, tile) and
	// (key, record span) pairs of the events.
	tiles, blocks map[recID]struct{}

	events int
}

type recID struct {
	key   string
	start int64
}

// historyRoll is the rows per archive roll: a roll writes one file per
// event date it holds. The ingest rolls at 200k rows or 1 minute; 64k keeps
// the generator's memory small and gives files of a few thousand rows per
// (partition, date) at the sizes used here.
const historyRoll = 64 << 10

func newHistory(tb testing.TB, v *tiling.View, store *state.Store, offline *state.OfflineLog) *history {
	h := &history{tb: tb, v: v, store: store, offline: offline, parts: 8, roll: historyRoll,
		recs: map[recID]*tiling.Record{}, amount: -1, merchant: -1}
	h.offsets = make([]int64, h.parts)
	h.bufs = make([][]state.ArchiveRow, h.parts)
	for i, c := range v.Columns() {
		switch c {
		case "amount":
			h.amount = i
		case "merchant":
			h.merchant = i
		}
	}
	for i := range 50 {
		h.merchants = append(h.merchants, fmt.Appendf(nil, `"m%d"`, i))
	}
	return h
}

// countTiles makes the history collect distinct (key, tile) and (key, record)
// pairs.
func (h *history) countTiles() {
	h.tiles, h.blocks = map[recID]struct{}{}, map[recID]struct{}{}
}

// add adds one event of key at ts: partition by key hash, the next offset
// of that partition, an amount in cents and one of 50 merchants.
func (h *history) add(key string, ts int64, r *rand.Rand) {
	in := make([]tiling.Input, len(h.v.Columns()))
	if h.amount >= 0 {
		in[h.amount] = tiling.Input{Kind: tiling.Number, Num: float64(r.IntN(100_000)) / 100}
	}
	if h.merchant >= 0 {
		in[h.merchant] = tiling.Input{Kind: tiling.Other, Raw: h.merchants[r.IntN(len(h.merchants))]}
	}
	h.addInputs(key, ts, in)
}

// addAmount adds one event of key at ts with the given amount (and no
// merchant): the peer comparison feeds every system the same values.
func (h *history) addAmount(key string, ts int64, amount float64) {
	in := make([]tiling.Input, len(h.v.Columns()))
	if h.amount >= 0 {
		in[h.amount] = tiling.Input{Kind: tiling.Number, Num: amount}
	}
	h.addInputs(key, ts, in)
}

// addInputs adds one event of key at ts with inputs in View.Columns()
// order, partitioned by key hash at that partition's next offset.
func (h *history) addInputs(key string, ts int64, in []tiling.Input) {
	f := fnv.New32a()
	f.Write([]byte(key))
	p := int32(f.Sum32() % uint32(h.parts))
	off := h.offsets[p]
	h.offsets[p]++
	e := tiling.Event{Key: key, TS: ts, Pos: tiling.Pos{Partition: p, Offset: off}, Inputs: in}
	h.events++
	if h.tiles != nil {
		h.tiles[recID{key, tiling.AlignDown(ts, h.v.Granularity)}] = struct{}{}
		h.blocks[recID{key, h.v.RecordStart(ts)}] = struct{}{}
	}
	if h.store != nil {
		id := recID{key, h.v.RecordStart(ts)}
		rec := h.recs[id]
		if rec == nil {
			rec = h.v.NewRecord(ts)
			h.recs[id] = rec
		}
		h.v.Add(rec, &e)
	}
	if h.offline != nil {
		h.bufs[p] = append(h.bufs[p], state.ArchiveRow{Event: e})
		if len(h.bufs[p]) >= h.roll {
			h.rollArchive(p)
		}
	}
}

// spread adds n events of key at even intervals over [from, to), each moved
// by up to one interval at random.
func (h *history) spread(key string, n int, from, to int64, r *rand.Rand) {
	step := max((to-from)/int64(n), 1)
	for i := range int64(n) {
		ts := from + i*(to-from)/int64(n) + r.Int64N(step)
		h.add(key, min(ts, to-1), r)
	}
}

// random adds n events over [from, to), in time order, each of one of keys
// keys (prefix0 … prefix<keys-1>) at random.
func (h *history) random(prefix string, keys, n int, from, to int64, r *rand.Rand) {
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	for i := range int64(n) {
		ts := from + i*(to-from)/int64(n)
		h.add(names[r.IntN(keys)], ts, r)
	}
}

func (h *history) rollArchive(p int32) {
	rows := h.bufs[p]
	if len(rows) == 0 {
		return
	}
	first, last := rows[0].Event.Pos.Offset, rows[len(rows)-1].Event.Pos.Offset
	if _, err := h.offline.WriteArchive(h.v, "", p, first, last, rows); err != nil {
		h.tb.Fatal(err)
	}
	h.bufs[p] = nil
}

// flush writes the stream records and the remaining archive rows.
func (h *history) flush() {
	if h.offline != nil {
		for p := range h.parts {
			h.rollArchive(p)
		}
	}
	if h.store == nil {
		return
	}
	b := h.store.NewBatch()
	for id, r := range h.recs {
		b.PutRecord(h.v, id.key, r)
		if b.Len() >= 10_000 {
			if err := h.store.Commit(b); err != nil {
				h.tb.Fatal(err)
			}
			b = h.store.NewBatch()
		}
	}
	if err := h.store.Commit(b); err != nil {
		h.tb.Fatal(err)
	}
	h.recs = map[recID]*tiling.Record{}
}

// fixedArchive reports a fixed archive watermark E, as a running ingest
// that archived everything up to it would.
type fixedArchive struct{ e int64 }

func (a fixedArchive) SyncArchive(context.Context, string) (int64, error) { return a.e, nil }

// healLateness is the views' lateness in these benchmarks.
const healLateness = 5 * tiling.Minute

// newHealer returns a healer of v over store and offline whose archive
// watermark is e (so W_b ≤ alignDown(e, g)).
func newHealer(tb testing.TB, v *tiling.View, store *state.Store, offline *state.OfflineLog, e int64) *healer.Healer {
	tb.Helper()
	h, err := healer.New(healer.DefaultConfig(),
		[]healer.ViewConfig{{View: v, Lateness: healLateness, HealEvery: tiling.Day}},
		store, offline, fixedArchive{e}, healer.NewMetrics(prometheus.NewRegistry()), quiet())
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

func openOffline(tb testing.TB) *state.OfflineLog {
	tb.Helper()
	l, err := state.OpenOfflineLog(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// scratchStore opens a store in a fresh directory; the returned func closes
// and removes it (benchmark loops open one per iteration, and the testing
// package would otherwise keep every directory until the end).
func scratchStore(tb testing.TB) (*state.Store, func()) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tilestream-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	s, err := state.Open(state.Config{Path: dir}, quiet())
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatal(err)
	}
	return s, func() {
		s.Close()
		os.RemoveAll(dir)
	}
}

// cpuTime is the CPU time (user + system) the process has used: on a shared
// machine, events per CPU-second is steadier than events per wall second.
// It counts every goroutine of the process (Pebble's compactions, GC, and
// the in-process kfake broker in the ingest benchmark).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
