package healer

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// Run heals every view on its schedule until ctx is done, and collects
// garbage after the grace period. A failed heal is retried with a capped
// backoff; after HaltAfter consecutive failures the view's halted gauge is
// set (ingest and serving go on) until a heal succeeds again.
func (h *Healer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, name := range h.order {
		vc := h.views[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.loop(ctx, vc)
		}()
		if c, ok := h.store.(incarnationCollector); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.collectIncarnations(ctx, c, name)
			}()
		}
	}
	wg.Wait()
	return nil
}

func (h *Healer) loop(ctx context.Context, vc ViewConfig) {
	v := vc.View
	every := time.Duration(vc.HealEvery) * time.Millisecond
	// The first scheduled heal comes one period after the last one, or
	// after start when the view was never healed (POST /v1/heal or
	// `tilestream heal` heal at once).
	next := h.now().Add(every)
	if st, err := h.loadState(v); err == nil && st.HealedAt > 0 {
		next = time.UnixMilli(st.HealedAt).Add(every)
	}
	tick := min(h.cfg.Grace, 10*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.updateStaleness(v)
		h.collectLeased(ctx, v)
		if h.now().Before(next) {
			continue
		}
		// Another instance sharing the store may have healed the view
		// since: its heal counts as this period's.
		if st, err := h.loadState(v); err == nil && st.HealedAt > 0 {
			if due := time.UnixMilli(st.HealedAt).Add(every); h.now().Before(due) {
				next = due
				continue
			}
		}
		_, err := h.Heal(ctx, v.Name, Options{})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrBusy) {
			// Another instance is healing the view: its heal is this
			// period's.
			next = h.now().Add(every)
			continue
		}
		if err == nil {
			failures = 0
			h.m.halted.WithLabelValues(v.Name).Set(0)
			next = h.now().Add(every)
			h.verifySample(ctx, v.Name)
			continue
		}
		failures++
		backoff := h.cfg.RetryMin << min(failures-1, 20)
		if backoff > h.cfg.RetryMax || backoff <= 0 {
			backoff = h.cfg.RetryMax
		}
		if failures >= h.cfg.HaltAfter {
			h.m.halted.WithLabelValues(v.Name).Set(1)
			if backoff < every {
				backoff = every
			}
			h.log.Error("healing halted after repeated failures; serving goes on from stream records", "view", v.Name, "failures", failures, "err", err)
		} else {
			h.log.Warn("heal failed; retrying", "view", v.Name, "in", backoff, "err", err)
		}
		next = h.now().Add(backoff)
	}
}

// incarnationCollector is a store that keeps a view's items of its earlier
// layouts until they are collected (state.Store on DynamoDB).
type incarnationCollector interface {
	CollectIncarnations(ctx context.Context, view string, now time.Time) error
}

// collectIncarnations has the store delete the view's old incarnations once
// they are due, apart from the heals (a collection scans the whole table).
func (h *Healer) collectIncarnations(ctx context.Context, c incarnationCollector, view string) {
	t := time.NewTicker(min(h.cfg.Grace, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.CollectIncarnations(ctx, view, h.now()); err != nil && ctx.Err() == nil {
			h.log.Warn("collection of the view's old incarnations (resumed later)", "view", view, "err", err)
		}
	}
}

// collectLeased deletes the view's garbage that is due, under its lease
// (skipped while another instance holds it: that one collects).
func (h *Healer) collectLeased(ctx context.Context, v *tiling.View) {
	mu := h.locks[v.Name]
	mu.Lock()
	defer mu.Unlock()
	l, err := h.lease(ctx, v.Name, false)
	if err != nil {
		if !errors.Is(err, ErrBusy) {
			h.log.Warn("garbage collection", "view", v.Name, "err", err)
		}
		return
	}
	defer l.release()
	if err := h.collect(v, false); err != nil {
		h.log.Warn("garbage collection", "view", v.Name, "err", err)
	}
}

// verifySample checks a sample of keys after a scheduled heal and logs every
// mismatch (the metrics count them).
func (h *Healer) verifySample(ctx context.Context, view string) {
	if h.Reader == nil || h.cfg.VerifySample == 0 {
		return
	}
	res, err := h.Verify(ctx, view, h.cfg.VerifySample, h.Reader)
	if err != nil {
		h.log.Warn("consistency check", "view", view, "err", err)
		return
	}
	for _, m := range res.Mismatches {
		h.log.Error("consistency check: served value differs from the offline log", "view", view,
			"key", m.Key, "feature", m.Feature, "served", m.Served, "recomputed", m.Recomputed,
			"batch_watermark", time.UnixMilli(m.BatchWatermark).UTC())
	}
}

func (h *Healer) updateStaleness(v *tiling.View) {
	st, err := h.loadState(v)
	if err != nil || st.Watermark == tiling.MinTime {
		return
	}
	h.m.watermark.WithLabelValues(v.Name).Set(float64(st.Watermark) / 1000)
	h.m.staleness.WithLabelValues(v.Name).Set(h.now().Sub(time.UnixMilli(st.Watermark)).Seconds())
}
