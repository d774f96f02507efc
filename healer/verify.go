package healer

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// KeyReader reads what serving reads.
type KeyReader interface {
	ReadKey(ctx context.Context, v *tiling.View, key string, t int64) (state.KeyData, error)
}

// Mismatch is one feature whose served batch part differs from a
// recomputation from the offline log.
type Mismatch struct {
	Key            string `json:"key"`
	Feature        string `json:"feature"`
	Served         any    `json:"served"`
	Recomputed     any    `json:"recomputed"`
	BatchWatermark int64  `json:"batch_watermark"`
	At             int64  `json:"at"`
}

// VerifyResult summarises a consistency check.
type VerifyResult struct {
	View       string     `json:"view"`
	Keys       int        `json:"keys_checked"`
	Events     int64      `json:"events_read"`
	Mismatches []Mismatch `json:"mismatches"`
}

// Verify recomputes a sample of keys from the offline log and compares them
// with what the store serves. It checks the batch side — every feature at
// t = W_b with only the data before W_b, where the offline log is complete
// — so stream events not yet archived cannot cause false alarms. sample ≤ 0
// checks every key.
func (h *Healer) Verify(ctx context.Context, view string, sample int, r KeyReader) (VerifyResult, error) {
	vc, ok := h.views[view]
	if !ok {
		return VerifyResult{}, fmt.Errorf("%w %q", ErrUnknownView, view)
	}
	v := vc.View
	res := VerifyResult{View: view}
	st, err := h.loadState(v)
	if err != nil {
		return res, err
	}
	if st.Gen == 0 {
		return res, fmt.Errorf("view %s has never been healed: nothing to verify", view)
	}
	var keys []string
	if err := h.store.ScanKeys(v.Name, st.Gen, func(key string) error {
		keys = append(keys, key)
		return nil
	}); err != nil {
		return res, err
	}
	if sample > 0 && sample < len(keys) {
		rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		keys = keys[:sample]
		sort.Strings(keys)
	}
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	wb := st.Watermark
	// Recompute: every distinct offline-log event of the sampled keys before
	// W_b, in one record per block.
	recs := map[string]map[int64]*tiling.Record{}
	days, err := h.offline.Days(view)
	if err != nil {
		return res, err
	}
	// Without a lifetime window, days wholly before the longest window (a
	// day's margin kept) hold nothing a served value counts.
	from := int64(tiling.MinTime)
	if !slices.ContainsFunc(v.Features, func(f tiling.Feature) bool { return f.Window == tiling.Lifetime }) {
		from = tiling.AlignDown(wb-maxWindow(v), tiling.Day) - tiling.Day
	}
	for _, d := range days {
		if d.Date >= wb || d.Date < from {
			continue
		}
		rs, err := h.offline.ReadDay(v, v.EventID, d.Date, func(e *tiling.Event) error {
			if !want[e.Key] || e.TS >= wb || e.TS < v.LifetimeStart {
				return nil
			}
			m := recs[e.Key]
			if m == nil {
				m = map[int64]*tiling.Record{}
				recs[e.Key] = m
			}
			start := v.RecordStart(e.TS)
			rec := m[start]
			if rec == nil {
				rec = &tiling.Record{Start: start}
				m[start] = rec
			}
			v.Aggregate(rec, e)
			return nil
		}, func(string, int64, string) {})
		if err != nil {
			return res, err
		}
		res.Events += rs.Events
		if err := ctx.Err(); err != nil {
			return res, err
		}
	}
	// At t = W_b − 1 every window ends at or before... the current tile
	// [alignDown(W_b−1), W_b) is the last one below W_b: all data is batch.
	at := wb - 1
	for _, key := range keys {
		kd, err := r.ReadKey(ctx, v, key, at)
		if err != nil {
			return res, err
		}
		served := v.EvaluateBatch(at, batchOnly(kd), nil)
		var rl []*tiling.Record
		for _, rec := range recs[key] {
			rl = append(rl, rec)
		}
		sort.Slice(rl, func(i, j int) bool { return rl[i].Start < rl[j].Start })
		again := v.Evaluate(at, rl)
		for i, f := range v.Features {
			a, b := jsonValue(served[i]), jsonValue(again[i])
			if !reflect.DeepEqual(a, b) {
				res.Mismatches = append(res.Mismatches, Mismatch{Key: key, Feature: f.Name, Served: a, Recomputed: b, BatchWatermark: wb, At: at})
			}
		}
		res.Keys++
	}
	outcome := "ok"
	if len(res.Mismatches) > 0 {
		outcome = "mismatch"
	}
	h.m.verified.WithLabelValues(view, outcome).Inc()
	h.m.mismatches.WithLabelValues(view).Add(float64(len(res.Mismatches)))
	return res, nil
}

// batchOnly keeps a read's batch side, for a check at a time before W_b.
func batchOnly(kd state.KeyData) *tiling.Batch { return kd.Batch }

// jsonValue normalises a served value for comparison.
func jsonValue(x any) any {
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprint(x)
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}
