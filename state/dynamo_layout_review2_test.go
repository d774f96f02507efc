package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state/dynamo"
)

// review2Lease returns the owner and expiry of the healing lease of the
// view's incarnation inc ("" when there is none).
func review2Lease(t *testing.T, s *Store, view string, inc uint32) (string, int64) {
	t.Helper()
	it, err := s.dyn.t.Get(context.Background(), viewPK(view, inc), dskLease)
	if err != nil {
		t.Fatal(err)
	}
	if it == nil {
		return "", 0
	}
	exp, _ := it.N("exp")
	return string(it.B("owner")), exp
}

// TestReview2StoppedTranslationKeepsNewerItems: a translation stopped
// (its context ended) after another instance took it over — wrote a newer
// layout item naming itself, and took the old incarnation's healing lease —
// hands nothing back over them: the hand-back writes only on the layout
// item it last wrote, and frees only a lease it holds.
func TestReview2StoppedTranslationKeepsNewerItems(t *testing.T) {
	_, nv, _, cfg, _, _ := oldLayoutTable(t)

	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translatePage = 20
	a.dyn.translateLease = time.Minute
	b := openDyn(t, DynamoConfig{Table: cfg.Table})
	bg := context.Background()
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var taken *layoutItem
	var fromInc uint32
	bExp := time.Now().Add(time.Hour).UnixMilli()
	a.dyn.testPageHook = func(page int) error {
		if page != 1 {
			return nil
		}
		// b takes the translation over (as if a's leases had lapsed) …
		li, err := b.dyn.readLayoutItem(bg, nv.Name)
		if err != nil {
			return err
		}
		m := *li.meta
		tr := *m.Translating
		tr.Owner, tr.Expires = b.dyn.owner, bExp
		m.Translating = &tr
		if taken, err = b.dyn.writeLayoutItem(bg, nv.Name, li.v, li.inc, &m, li); err != nil {
			return err
		}
		fromInc = tr.FromInc
		it := &dynamo.Item{PK: viewPK(nv.Name, fromInc), SK: dskLease}
		it.SetB("owner", b.dyn.oldLeaseOwner())
		it.SetN("exp", bExp)
		if err := b.dyn.t.Put(bg, it, nil); err != nil {
			return err
		}
		// … and then a is asked to stop.
		cancel()
		return nil
	}
	_, err := a.CheckLayoutStatus(ctx, nv)
	if err == nil {
		t.Fatal("a stopped translation reported success")
	}
	if taken == nil {
		t.Fatal("the hook did not run: the translation had a single page")
	}
	li, err := a.dyn.readLayoutItem(bg, nv.Name)
	if err != nil || li == nil || li.meta == nil || li.meta.Translating == nil {
		t.Fatalf("layout item after the stop: %+v %v", li, err)
	}
	if li.ver != taken.ver || li.meta.Translating.Owner != b.dyn.owner || li.meta.Translating.Expires != bExp {
		t.Fatalf("the stopped instance overwrote the newer layout item: version %d owner %q expires %d; b wrote version %d owner %q expires %d",
			li.ver, li.meta.Translating.Owner, li.meta.Translating.Expires, taken.ver, b.dyn.owner, bExp)
	}
	if owner, exp := review2Lease(t, a, nv.Name, fromInc); owner != string(b.dyn.oldLeaseOwner()) || exp != bExp {
		t.Fatalf("the old incarnation's lease after the stop: %q until %d, want b's", owner, exp)
	}
}

// TestReview2TranslationStoppedWaitingForAHeal: a translation stopped
// while it waits for the old incarnation's healing lease (a heal of the old
// layout holds it) hands its own lease back — its error reaches the
// deferred hand-back — and leaves the heal's lease alone.
func TestReview2TranslationStoppedWaitingForAHeal(t *testing.T) {
	old, nv, _, cfg, s, _ := oldLayoutTable(t)
	oldInc, err := s.dyn.incarnation(old.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AcquireLease(old.Name, "healer-of-the-old-layout", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, healExp := review2Lease(t, s, old.Name, oldInc)

	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translateLease = time.Minute
	a.dyn.translatePoll = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := a.CheckLayoutStatus(ctx, nv); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("translation stopped while waiting for the heal's lease: %v", err)
	}
	li, err := a.dyn.readLayoutItem(context.Background(), nv.Name)
	if err != nil || li == nil || li.meta == nil || li.meta.Translating == nil {
		t.Fatalf("layout item after the stop: %+v %v", li, err)
	}
	if tr := li.meta.Translating; tr.Owner != a.dyn.owner || tr.FromInc != oldInc || tr.CursorPK != nil {
		t.Fatalf("translation after the stop: %+v", tr)
	}
	if exp := time.UnixMilli(li.meta.Translating.Expires); time.Until(exp) > 0 {
		t.Fatalf("the stopped translation kept its lease until %v", exp)
	}
	if owner, exp := review2Lease(t, a, nv.Name, oldInc); owner != "healer-of-the-old-layout" || exp != healExp {
		t.Fatalf("the heal's lease after the stop: %q until %d", owner, exp)
	}
}
