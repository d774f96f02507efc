package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tilestream/tilestream/tiling"
)

// LayoutStatus is what CheckLayoutStatus found of a view's stored layout.
type LayoutStatus struct {
	// Rebuild: the stored tiles cannot be translated (another granularity,
	// record span or lifetime start, or a store older than stored layouts):
	// the view was wiped and must be rebuilt from the offline log before the
	// ingest starts, then FinishRebuild.
	Rebuild bool
	// Pending are partial aggregates that the stored records hold empty: a
	// change of features added them, and records were translated.
	// The features computed from them are wrong until a full heal installs
	// a batch watermark at or past Horizon; ClearPending then drops them.
	Pending []tiling.LayoutAgg
	// Horizon is past every event the stream records held when the
	// aggregates became pending: from there on, stream records hold every
	// event's states.
	Horizon int64
}

// layoutMeta is the stored value of a view's layout key (Pebble), JSON. A
// store written before layouts were kept holds the bare fingerprint, with
// rebuildMark while a rebuild runs.
type layoutMeta struct {
	Fingerprint string             `json:"fingerprint"`
	Layout      tiling.Layout      `json:"layout"`
	Rebuild     bool               `json:"rebuild,omitempty"`
	Pending     []tiling.LayoutAgg `json:"pending,omitempty"`
	Horizon     int64              `json:"horizon,omitempty"`
	// Translating is set while records are rewritten from an older layout:
	// a crash resumes after Cursor.
	Translating *translation `json:"translating,omitempty"`
}

type translation struct {
	From   tiling.Layout `json:"from"`
	Cursor []byte        `json:"cursor,omitempty"`
}

func (s *Store) readLayout(view string) (meta layoutMeta, legacy string, found bool, err error) {
	val, err := s.get(viewKey(nil, view))
	if err != nil || val == nil {
		return layoutMeta{}, "", false, err
	}
	if val[0] != '{' {
		return layoutMeta{}, string(val), true, nil
	}
	if err := json.Unmarshal(val, &meta); err != nil {
		return layoutMeta{}, "", true, fmt.Errorf("layout of view %s: %w", view, err)
	}
	return meta, "", true, nil
}

func putLayout(b *pebble.Batch, view string, m layoutMeta) {
	val, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain data
	}
	_ = b.Set(viewKey(nil, view), val, nil)
}

func (s *Store) writeLayout(view string, m layoutMeta) error {
	b := s.db.NewBatch()
	defer b.Close()
	putLayout(b, view, m)
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return fmt.Errorf("record layout of view %s: %w", view, err)
	}
	return nil
}

// CheckLayoutStatus compares the view's layout with the stored one and
// records it on first use. When only the partial aggregates changed (the
// same granularity, record span and lifetime start), every record of the
// view is translated in place: shared states kept, dropped ones removed, new
// ones empty and reported Pending. Otherwise the view is wiped and marked
// for a rebuild (LayoutStatus.Rebuild), as CheckLayout describes.
//
// On DynamoDB the view's items are translated into a new incarnation, which
// the layout item names once they all are (dynamo_layout.go); a rebuild
// starts in a new, empty incarnation.
//
// ctx ends a translation early (it resumes after its last batch on the next
// call), and waits for another instance's translation.
func (s *Store) CheckLayoutStatus(ctx context.Context, v *tiling.View) (LayoutStatus, error) {
	if s.dyn != nil {
		return s.dyn.checkLayout(ctx, v)
	}
	fp := v.Fingerprint()
	meta, legacy, found, err := s.readLayout(v.Name)
	if err != nil {
		return LayoutStatus{}, fmt.Errorf("read layout of view %s: %w", v.Name, err)
	}
	now := layoutMeta{Fingerprint: fp, Layout: v.Layout()}
	switch {
	case !found:
		return LayoutStatus{}, s.writeLayout(v.Name, now)
	case legacy == fp:
		return LayoutStatus{}, s.writeLayout(v.Name, now) // keep the layout from now on
	case legacy == fp+rebuildMark:
		now.Rebuild = true
		return LayoutStatus{Rebuild: true}, s.writeLayout(v.Name, now) // resumes
	case legacy != "":
		return LayoutStatus{Rebuild: true}, s.resetView(v.Name, now)
	case meta.Translating != nil:
		if meta.Fingerprint == fp {
			return s.translate(ctx, v, meta) // an interrupted translation resumes
		}
		// Changed again before the translation finished: records before
		// the cursor are in one layout, after it in another.
		return LayoutStatus{Rebuild: true}, s.resetView(v.Name, now)
	case meta.Fingerprint == fp && meta.Rebuild:
		return LayoutStatus{Rebuild: true}, nil
	case meta.Fingerprint == fp:
		return LayoutStatus{Pending: meta.Pending, Horizon: meta.Horizon}, nil
	case meta.Rebuild:
		// A rebuild for another layout was interrupted: start it over.
		return LayoutStatus{Rebuild: true}, s.resetView(v.Name, now)
	}
	if storedFP, err := meta.Layout.Fingerprint(); err != nil || storedFP != meta.Fingerprint {
		// Not a layout this version wrote: rebuild rather than guess.
		return LayoutStatus{Rebuild: true}, s.resetView(v.Name, now)
	}
	tr, err := tiling.NewTranslator(meta.Layout, v)
	if err != nil {
		return LayoutStatus{Rebuild: true}, s.resetView(v.Name, now)
	}
	next := layoutMeta{Fingerprint: fp, Layout: v.Layout(), Horizon: meta.Horizon,
		Translating: &translation{From: meta.Layout}}
	// Aggregates still pending from an earlier change stay pending.
	next.Pending = tr.Pending()
	for _, a := range meta.Pending {
		if slices.Contains(next.Layout.Aggs, a) && !slices.Contains(next.Pending, a) {
			next.Pending = append(next.Pending, a)
		}
	}
	if err := s.writeLayout(v.Name, next); err != nil {
		return LayoutStatus{}, err
	}
	return s.translate(ctx, v, next)
}

// resetView deletes every record of the view and marks it for a rebuild.
func (s *Store) resetView(view string, m layoutMeta) error {
	m.Rebuild, m.Pending, m.Horizon, m.Translating = true, nil, 0, nil
	b := s.db.NewBatch()
	defer b.Close()
	for _, prefix := range []byte{prefixRecord, prefixHead, prefixSummary, prefixDay, prefixDetail, prefixHeal} {
		p := append([]byte{prefix}, appendString(nil, view)...)
		_ = b.DeleteRange(p, prefixEnd(p), nil)
	}
	putLayout(b, view, m)
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return fmt.Errorf("reset view %s for its new layout: %w", view, err)
	}
	return nil
}

// translateChunk bounds the records rewritten per batch.
const translateChunk = 2048

// translateLogEvery is how often a long layout translation logs its
// progress.
const translateLogEvery = 10 * time.Second

// translate rewrites every stream, summary, day and detail record of the
// view from m.Translating.From into v's layout, in key order, recording the
// last key rewritten with each batch so a crash resumes after it. Stream
// records also raise the horizon past their last tile.
func (s *Store) translate(ctx context.Context, v *tiling.View, m layoutMeta) (LayoutStatus, error) {
	tr, err := tiling.NewTranslator(m.Translating.From, v)
	if err != nil {
		return LayoutStatus{}, fmt.Errorf("resume the layout translation of view %s: %w", v.Name, err)
	}
	if !tr.Identity() {
		lo := []byte{prefixRecord}
		if c := m.Translating.Cursor; c != nil {
			lo = append(bytes.Clone(c), 0)
		}
		s.log.Info("translating the view's records to its new layout; the service starts once they are done", "view", v.Name, "resumed", m.Translating.Cursor != nil)
		records, logged := 0, time.Now()
		for {
			if err := ctx.Err(); err != nil {
				return LayoutStatus{}, fmt.Errorf("translate the records of view %s to its new layout (it resumes after its last batch): %w", v.Name, err)
			}
			done, err := s.translateSome(v, tr, &m, lo)
			if err != nil {
				return LayoutStatus{}, fmt.Errorf("translate the records of view %s to its new layout: %w", v.Name, err)
			}
			if done {
				break
			}
			records += translateChunk
			if time.Since(logged) >= translateLogEvery {
				s.log.Info("translating the view's records to its new layout", "view", v.Name, "records", records)
				logged = time.Now()
			}
			lo = append(bytes.Clone(m.Translating.Cursor), 0)
		}
	}
	m.Translating = nil
	if len(m.Pending) == 0 {
		m.Horizon = 0
	}
	if err := s.writeLayout(v.Name, m); err != nil {
		return LayoutStatus{}, err
	}
	s.log.Info("view records translated to the new layout", "view", v.Name, "pending", len(m.Pending))
	return LayoutStatus{Pending: m.Pending, Horizon: m.Horizon}, nil
}

// translateSome rewrites up to translateChunk records from lo on and
// reports whether none are left.
func (s *Store) translateSome(v *tiling.View, tr *tiling.Translator, m *layoutMeta, lo []byte) (bool, error) {
	kinds := []byte{prefixRecord, prefixSummary, prefixDay, prefixDetail}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	for _, kind := range kinds {
		p := append([]byte{kind}, appendString(nil, v.Name)...)
		from := p
		if bytes.Compare(lo, p) > 0 {
			from = lo
		}
		end := prefixEnd(p)
		if bytes.Compare(from, end) >= 0 {
			continue
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: end})
		if err != nil {
			return false, err
		}
		for ok := it.First(); ok && n < translateChunk; ok = it.Next() {
			val, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return false, err
			}
			k := bytes.Clone(it.Key())
			var out []byte
			switch kind {
			case prefixRecord:
				out, err = tr.Record(val)
				if err == nil && len(k) >= 8 {
					start := decodeTime(k[len(k)-8:])
					var r *tiling.Record
					if r, err = v.DecodeRecord(start, out); err == nil && len(r.Tiles) > 0 {
						m.Horizon = max(m.Horizon, r.Tiles[len(r.Tiles)-1].Start+v.Granularity)
					}
				}
			case prefixSummary:
				out, err = tr.Summary(val)
			case prefixDay:
				out, err = tr.DayRecord(val)
			case prefixDetail:
				out, err = tr.DetailRecord(val)
			}
			if err != nil {
				it.Close()
				return false, fmt.Errorf("record %x: %w", k, err)
			}
			_ = b.Set(k, out, nil)
			m.Translating.Cursor = k
			n++
		}
		if err := it.Close(); err != nil {
			return false, err
		}
		if n >= translateChunk {
			break
		}
	}
	putLayout(b, v.Name, *m)
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return false, err
	}
	return n < translateChunk, nil
}

// SettlePending clears the view's pending aggregates when the healer's state
// shows a heal of the current layout installed at or past their horizon:
// that heal recomputed every day from the offline log (a heal after a
// layout change is a full one), and stream records from its watermark on
// hold every event's states. It returns the aggregates still pending.
func (s *Store) SettlePending(v *tiling.View) ([]tiling.LayoutAgg, error) {
	if s.dyn != nil {
		return s.dyn.settlePending(v)
	}
	meta, _, found, err := s.readLayout(v.Name)
	if err != nil || !found || len(meta.Pending) == 0 || meta.Fingerprint != v.Fingerprint() {
		return nil, err
	}
	val, _, err := s.Meta(v.Name)
	if err != nil || val == nil {
		return meta.Pending, err
	}
	// The healer's state (healer.viewState): the fields this needs.
	var healed struct {
		Watermark   int64  `json:"watermark"`
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal(val, &healed); err != nil {
		return meta.Pending, fmt.Errorf("healer state of %s: %w", v.Name, err)
	}
	if healed.Fingerprint != meta.Fingerprint || healed.Watermark < meta.Horizon {
		return meta.Pending, nil
	}
	meta.Pending, meta.Horizon = nil, 0
	if err := s.writeLayout(v.Name, meta); err != nil {
		return nil, err
	}
	s.log.Info("features of the new layout are complete", "view", v.Name, "batch_watermark", time.UnixMilli(healed.Watermark).UTC())
	return nil, nil
}
