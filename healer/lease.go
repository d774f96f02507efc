package healer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tilestream/tilestream/state"
)

// lease is a view's healing lease, held by this healer while it heals or
// collects the view, so that no two instances sharing a DynamoDB table heal
// one view at once (the Pebble store admits one process and always grants
// it). A goroutine renews it every third of its duration; a heal checks it
// before each step that other instances' reads depend on (l.check) and its
// context ends when the lease is lost, so a heal that loses its lease stops
// before installing heads.
//
// The lease is a clock-bounded promise: a heal that checked it and then
// stalled longer than a third of the lease duration before its next write
// could overlap the next holder. The healer's own state is written
// conditionally on the version it read, so such a heal can never record
// anything in it; see docs/format.md for what it could still write.
type lease struct {
	h      *Healer
	view   string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu struct {
		sync.Mutex
		renewed time.Time // last successful acquisition or renewal
		lost    error
	}
}

// lease acquires the view's lease; with wait, it waits while another
// instance holds it.
func (h *Healer) lease(ctx context.Context, view string, wait bool) (*lease, error) {
	for attempt := 0; ; attempt++ {
		now := h.now()
		err := h.store.AcquireLease(view, h.cfg.Owner, now, h.cfg.Lease)
		if err == nil {
			l := &lease{h: h, view: view, done: make(chan struct{})}
			l.ctx, l.cancel = context.WithCancel(ctx)
			l.mu.renewed = now
			go l.renew()
			return l, nil
		}
		if !errors.Is(err, state.ErrLeaseHeld) {
			return nil, fmt.Errorf("healing lease of %s: %w", view, err)
		}
		if !wait {
			return nil, fmt.Errorf("%w: %w", ErrBusy, err)
		}
		d := min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
		case <-time.After(d):
		}
	}
}

func (l *lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.h.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		now := l.h.now()
		err := l.h.store.AcquireLease(l.view, l.h.cfg.Owner, now, l.h.cfg.Lease)
		l.mu.Lock()
		switch {
		case err == nil:
			l.mu.renewed = now
		case errors.Is(err, state.ErrLeaseHeld):
			l.mu.lost = fmt.Errorf("%w: %w", ErrLeaseLost, err)
		default:
			l.h.log.Warn("renew the healing lease", "view", l.view, "err", err)
		}
		lost := l.mu.lost != nil
		l.mu.Unlock()
		if lost {
			l.h.log.Error("healing lease lost; the heal stops", "view", l.view, "err", err)
			l.cancel()
			return
		}
	}
}

// check returns ErrLeaseLost once the lease is lost or was last renewed so
// long ago that it may have expired (two thirds of its duration: renewals
// come every third).
func (l *lease) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.lost != nil {
		return l.mu.lost
	}
	if age := l.h.now().Sub(l.mu.renewed); age > l.h.cfg.Lease*2/3 {
		return fmt.Errorf("%w: last renewed %s ago", ErrLeaseLost, age.Round(time.Millisecond))
	}
	return nil
}

// release stops the renewals and gives the lease up.
func (l *lease) release() {
	l.cancel()
	<-l.done
	if err := l.h.store.ReleaseLease(l.view, l.h.cfg.Owner); err != nil {
		l.h.log.Warn("release the healing lease", "view", l.view, "err", err)
	}
}
