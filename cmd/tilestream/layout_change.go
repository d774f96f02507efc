package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/ingest"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// layouts follows each view's layout through a change: a view whose tiles
// must be rebuilt (rebuilding), and the features a change added that no
// heal has computed yet (missing), until a heal settles them.
type layouts struct {
	store *state.Store
	log   *slog.Logger
	views map[string]*viewLayout
}

type viewLayout struct {
	v          *tiling.View
	lateness   int64
	rebuilding atomic.Bool
	missing    atomic.Pointer[[]string]
	horizon    int64
}

// checkLayouts compares every view's layout with the stored one: records of
// a view whose features changed over the same tiles are translated, the
// others marked for a rebuild.
func checkLayouts(ctx context.Context, s *settings, store *state.Store, log *slog.Logger) (*layouts, error) {
	ls := &layouts{store: store, log: log, views: map[string]*viewLayout{}}
	for _, vs := range s.Views {
		v := vs.View
		st, err := store.CheckLayoutStatus(ctx, v)
		if err != nil {
			return nil, err
		}
		vl := &viewLayout{v: v, lateness: vs.Lateness, horizon: st.Horizon}
		ls.views[v.Name] = vl
		if st.Rebuild {
			vl.rebuilding.Store(true)
			log.Warn("the view's layout changed: its features are rebuilt from the offline log and served as missing until then",
				"view", v.Name, "layout", v.Fingerprint())
			continue
		}
		if len(st.Pending) > 0 {
			if err := ls.settle(v.Name); err != nil {
				return nil, err
			}
			if m := ls.Missing(v.Name); len(m) > 0 {
				log.Warn("the view's features changed: the new ones are computed from the offline log by the first heal past the horizon and served as missing until then; the others are served",
					"view", v.Name, "missing", m, "horizon", time.UnixMilli(st.Horizon).UTC())
			}
		}
	}
	return ls, nil
}

// settle drops the view's missing features once a heal has computed them.
func (ls *layouts) settle(view string) error {
	vl := ls.views[view]
	if vl == nil {
		return nil
	}
	pending, err := ls.store.SettlePending(vl.v)
	if err != nil {
		return err
	}
	var names []string
	if len(pending) > 0 {
		names = vl.v.AggFeatures(pending)
	}
	vl.missing.Store(&names)
	return nil
}

// Rebuilding reports whether a view is being rebuilt for a new layout.
func (ls *layouts) Rebuilding(view string) bool {
	vl := ls.views[view]
	return vl != nil && vl.rebuilding.Load()
}

// AnyRebuilding reports whether some view is being rebuilt.
func (ls *layouts) AnyRebuilding() bool {
	for _, vl := range ls.views {
		if vl.rebuilding.Load() {
			return true
		}
	}
	return false
}

// Missing returns the features of a view that a change added and no heal
// has computed yet.
func (ls *layouts) Missing(view string) []string {
	vl := ls.views[view]
	if vl == nil {
		return nil
	}
	if m := vl.missing.Load(); m != nil {
		return *m
	}
	return nil
}

// installed is the healer's OnInstall hook: a heal may settle missing
// features.
func (ls *layouts) installed(view string) {
	if err := ls.settle(view); err != nil {
		ls.log.Error("settle the features a view change added", "view", view, "error", err)
	}
}

// healPending heals every view with missing features as soon as a heal can
// reach their horizon (now − lateness past it), instead of waiting for the
// view's schedule, retrying until they are settled or ctx ends. Views wait
// independently of each other. Then it watches the views' layouts (watch)
// until ctx ends.
func (ls *layouts) healPending(ctx context.Context, heal func(ctx context.Context, view string) error) error {
	var wg sync.WaitGroup
	for name, vl := range ls.views {
		if len(ls.Missing(name)) == 0 {
			continue
		}
		wg.Go(func() { ls.healView(ctx, name, vl, heal) })
	}
	wg.Wait()
	return ls.watch(ctx, layoutWatchEvery)
}

// layoutWatchEvery is how often watch reads the views' layouts.
const layoutWatchEvery = 10 * time.Second

// errLayoutMoved: another instance changed a view's layout.
var errLayoutMoved = errors.New("the view's layout was changed by another instance")

// watch returns an error when another instance, started with a changed view,
// has moved a view to another layout (DynamoDB: a new incarnation): this
// instance runs the previous configuration, and what it would go on
// consuming would reach only the previous layout's items. It stops the
// service (its partitions go to the instances of the new layout, which
// replay them from the committed offsets) rather than diverge quietly. It
// returns nil when ctx ends.
func (ls *layouts) watch(ctx context.Context, every time.Duration) error {
	if ls.store.Table() == nil {
		return nil // Pebble: one process
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
		for name, vl := range ls.views {
			ok, err := ls.store.LayoutCurrent(vl.v)
			if err != nil {
				ls.log.Warn("read the view's layout", "view", name, "error", err)
				continue
			}
			if !ok {
				ls.log.Error("the view's layout was changed by an instance started with another configuration of it; this instance stops: restart it with that configuration",
					"view", name)
				return fmt.Errorf("view %s: %w; restart with the new configuration", name, errLayoutMoved)
			}
		}
	}
}

func (ls *layouts) healView(ctx context.Context, name string, vl *viewLayout, heal func(ctx context.Context, view string) error) {
	wait := time.Until(time.UnixMilli(vl.horizon+vl.lateness)) + time.Second
	for len(ls.Missing(name)) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		err := heal(ctx, name)
		switch {
		case err == nil:
			ls.installed(name)
			wait = 10 * time.Second // a heal that stopped short of the horizon
		case ctx.Err() != nil:
			return
		case errors.Is(err, ingest.ErrNotRunning), errors.Is(err, healer.ErrBusy):
			wait = 5 * time.Second
		default:
			ls.log.Warn("heal for the features a view change added failed; retrying", "view", name, "error", err)
			wait = 30 * time.Second
		}
	}
	ls.log.Info("every feature of the changed view is served", "view", name)
}

// checkStandaloneLayouts is checkLayouts for the commands that heal without
// the service: a view that must be rebuilt is refused, since the rebuild
// runs at the service's start, before its ingest.
func checkStandaloneLayouts(ctx context.Context, s *settings, store *state.Store, log *slog.Logger) (*layouts, error) {
	ls, err := checkLayouts(ctx, s, store, log)
	if err != nil {
		return nil, err
	}
	for name, vl := range ls.views {
		if vl.rebuilding.Load() {
			return nil, fmt.Errorf("view %s: its layout changed and it must be rebuilt from the offline log: start the service (tilestream run), which rebuilds it before consuming", name)
		}
	}
	return ls, nil
}
