package tiling

import "sort"

// Evaluate returns the value of every feature (in View.Features order) at time
// t from records, given in ascending Start order. Tiles outside a feature's
// window are ignored, so records may cover more than ReadRange(t).
//
// All windows end at End(t), so they are nested suffixes of the tile sequence:
// one walk from the newest tile merges each tile once per partial aggregate and
// finalises each window when the walk passes its start.
func (v *View) Evaluate(t int64, records []*Record) []any {
	end := v.End(t)
	type win struct {
		start int64
		idx   int
	}
	wins := make([]win, len(v.windows))
	for i, w := range v.windows {
		wins[i] = win{v.WindowStart(w, t), i}
	}
	sort.Slice(wins, func(i, j int) bool { return wins[i].start > wins[j].start })

	acc := make([]State, len(v.aggs))
	for i := range v.aggs {
		acc[i] = newState(&v.aggs[i])
	}
	out := make([]any, len(v.Features))
	next := 0
	finish := func(start int64) {
		for next < len(wins) && start < wins[next].start {
			for _, f := range v.winFeats[wins[next].idx] {
				out[f] = acc[v.featAgg[f]].value(&v.Features[f])
			}
			next++
		}
	}
walk:
	for ri := len(records) - 1; ri >= 0; ri-- {
		tiles := records[ri].Tiles
		for ti := len(tiles) - 1; ti >= 0; ti-- {
			tl := &tiles[ti]
			if tl.Start >= end {
				continue
			}
			finish(tl.Start)
			if next == len(wins) {
				break walk
			}
			for i, s := range tl.States {
				acc[i].merge(s)
			}
		}
	}
	finish(MinTime)
	// A window whose start is MinTime (lifetime without a start) is finished
	// only here; finish(MinTime) stops short of it because MinTime < MinTime
	// is false.
	for ; next < len(wins); next++ {
		for _, f := range v.winFeats[wins[next].idx] {
			out[f] = acc[v.featAgg[f]].value(&v.Features[f])
		}
	}
	return out
}
