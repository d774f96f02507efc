package benchmarks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/tilestream/tilestream/tiling"
)

// The peer comparison's workload: one view, the same events fed to every
// system, and the answer every system must give (checked before anything
// is timed).

// peerWindows are the windows of the peer view, in feature order.
var peerWindows = [nWindows]struct {
	name string
	ms   int64
}{{"1h", tiling.Hour}, {"1d", tiling.Day}, {"7d", 7 * tiling.Day}, {"30d", 30 * tiling.Day}, {"life", tiling.Lifetime}}

const nWindows = 5

// peerSpan is how far back the events of a serving level go.
const peerSpan = 30 * tiling.Day

// newPeerView is the view of the peer comparison: sum, count, min, max and
// mean of amount over 1h, 1d, 7d, 30d and lifetime at 1-minute tiles — the
// demo view plus a 30-day window, less last_merchant (no peer computes it).
// Feature names are amount_<function>_<window>.
func newPeerView() (*tiling.View, error) {
	var fs []tiling.Feature
	for _, w := range peerWindows {
		for _, fn := range []tiling.Function{tiling.Sum, tiling.Count, tiling.Min, tiling.Max, tiling.Mean} {
			col := "amount"
			if fn == tiling.Count {
				col = ""
			}
			fs = append(fs, tiling.Feature{Name: fmt.Sprintf("amount_%s_%s", fn, w.name), Function: fn, Column: col, Window: w.ms})
		}
	}
	return tiling.NewView(tiling.View{Name: "txn", Topic: topic, Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime, Features: fs})
}

// agg is one window's aggregate as a client sees it.
type agg struct {
	Count    int64
	Sum      float64
	Min, Max float64
}

func (a *agg) add(x float64) {
	if a.Count == 0 || x < a.Min {
		a.Min = x
	}
	if a.Count == 0 || x > a.Max {
		a.Max = x
	}
	a.Count++
	a.Sum += x
}

// merge adds a partial aggregate (a minute bucket) to a.
func (a *agg) merge(o agg) {
	if o.Count == 0 {
		return
	}
	if a.Count == 0 || o.Min < a.Min {
		a.Min = o.Min
	}
	if a.Count == 0 || o.Max > a.Max {
		a.Max = o.Max
	}
	a.Count += o.Count
	a.Sum += o.Sum
}

// keyAggs are a key's aggregates, one per peer window.
type keyAggs [nWindows]agg

// bounds are the windows of a read at t, as tilestream defines them
// (DESIGN.md): window w covers alignDown(t − w, g) ≤ ts < alignDown(t, g) + g,
// lifetime from the view's lifetime start. Every peer reads with these
// bounds, so all systems answer the same question.
type bounds struct {
	start [nWindows]int64
	end   int64
}

func boundsAt(t int64) bounds {
	g := tiling.Minute
	b := bounds{end: tiling.AlignDown(t, g) + g}
	for i, w := range peerWindows {
		if w.ms == tiling.Lifetime {
			b.start[i] = tiling.MinTime
		} else {
			b.start[i] = tiling.AlignDown(t-w.ms, g)
		}
	}
	return b
}

// add adds one event to the windows holding ts.
func (b *bounds) add(a *keyAggs, ts int64, x float64) {
	if ts >= b.end {
		return
	}
	for i := range a {
		if ts >= b.start[i] {
			a[i].add(x)
		}
	}
}

// addBucket adds the partial aggregate of the minute starting at start.
func (b *bounds) addBucket(a *keyAggs, start int64, o agg) {
	if start >= b.end {
		return
	}
	for i := range a {
		if start >= b.start[i] {
			a[i].merge(o)
		}
	}
}

// sameAggs reports how got differs from want: counts, minima and maxima
// exactly, sums to a relative 1e-9 (the Redis clients and buckets add in
// float64 or long double in arrival order; tilestream's sums are exact).
func sameAggs(got, want keyAggs) error {
	for i := range want {
		g, w := got[i], want[i]
		name := peerWindows[i].name
		if g.Count != w.Count {
			return fmt.Errorf("window %s: count %d, want %d", name, g.Count, w.Count)
		}
		if w.Count == 0 {
			continue
		}
		if g.Min != w.Min || g.Max != w.Max {
			return fmt.Errorf("window %s: min/max %v/%v, want %v/%v", name, g.Min, g.Max, w.Min, w.Max)
		}
		if math.Abs(g.Sum-w.Sum) > 1e-9*math.Max(1, math.Abs(w.Sum)) {
			return fmt.Errorf("window %s: sum %v, want %v", name, g.Sum, w.Sum)
		}
	}
	return nil
}

// peerLevel is one serving data set: keys keys of events events each,
// spread over the 30 days before the query time.
type peerLevel struct {
	events, keys int
}

func (l peerLevel) total() int { return l.events * l.keys }

func (l peerLevel) keyNames() []string {
	names := make([]string, l.keys)
	for i := range names {
		names[i] = "u" + strconv.Itoa(i)
	}
	return names
}

// peerSink receives a level's events, key by key, each key's in time order.
type peerSink interface {
	event(key string, seq int, ts int64, cents int64)
	endKey(key string)
}

// oracle keeps the expected answer for the keys it checks.
type oracle struct {
	b      bounds
	check  map[string]bool
	want   map[string]*keyAggs
	cents  map[string]*[nWindows]int64
	events int
}

func newOracle(at int64, check []string) *oracle {
	o := &oracle{b: boundsAt(at), check: map[string]bool{}, want: map[string]*keyAggs{}, cents: map[string]*[nWindows]int64{}}
	for _, k := range check {
		o.check[k] = true
		o.want[k] = &keyAggs{}
		o.cents[k] = &[nWindows]int64{}
	}
	return o
}

func (o *oracle) event(key string, _ int, ts int64, cents int64) {
	o.events++
	if !o.check[key] {
		return
	}
	o.b.add(o.want[key], ts, centsAmount(cents))
	for i := range o.cents[key] {
		if ts >= o.b.start[i] && ts < o.b.end {
			o.cents[key][i] += cents
		}
	}
}

func (o *oracle) endKey(string) {}

// answer is the expected aggregates of key, with sums from exact cents.
func (o *oracle) answer(key string) keyAggs {
	a := *o.want[key]
	for i := range a {
		a[i].Sum = float64(o.cents[key][i]) / 100
	}
	return a
}

// centsAmount is the amount of an event as every system receives it: the
// float64 nearest to cents/100, which is also what parsing its two-decimal
// text gives.
func centsAmount(cents int64) float64 { return float64(cents) / 100 }

// amountText is the amount's text as stored in Redis.
func amountText(b []byte, cents int64) []byte {
	return strconv.AppendFloat(b, centsAmount(cents), 'f', -1, 64)
}

// generate feeds the level's events to sinks: for each key, events spread
// evenly over [at − 30d, at), each moved by up to one interval at random,
// amounts 0.00–999.99 at random. Deterministic for a level.
func (l peerLevel) generate(at int64, sinks ...peerSink) {
	r := rand.New(rand.NewPCG(uint64(l.events), uint64(l.keys)))
	from := at - peerSpan
	step := max(peerSpan/int64(l.events), 1)
	for _, key := range l.keyNames() {
		for i := range l.events {
			ts := min(from+int64(i)*peerSpan/int64(l.events)+r.Int64N(step), at-1)
			cents := r.Int64N(100_000)
			for _, s := range sinks {
				s.event(key, i, ts, cents)
			}
		}
		for _, s := range sinks {
			s.endKey(key)
		}
	}
}

// historySink writes the events as tilestream's ingest would have: stream
// records in the store and archive files in the offline log.
type historySink struct{ h *history }

func (s historySink) event(key string, _ int, ts int64, cents int64) {
	s.h.addAmount(key, ts, centsAmount(cents))
}

func (s historySink) endKey(string) {}
