package state

import (
	"context"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// TestDynamoLayoutTranslationReadsOnlyItsSourceIncarnation: a translation
// copies the items of its source incarnation and none of another one, even
// when the partition keys of both are the same text once their bytes are
// read as UTF-8 (dynalite matches a binary begins_with that way: 0x80808080
// and 0x81818181 are both four U+FFFD). Here the other incarnation holds the
// items of the new layout, as a translation cut after some pages leaves its
// target: read with the old layout, its summaries are a corrupt encoding
// ("sum: bad sign 192"), which TestDynamoLayoutTranslationLostLease met
// about once in 600 runs, when its random incarnations happened to collide
// so.
func TestDynamoLayoutTranslationReadsOnlyItsSourceIncarnation(t *testing.T) {
	old, nv := dynLayoutViews(t)
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	ctx := context.Background()
	const source, other = 0x80808080, 0x81818181
	cfg := dynTable(t)
	cfg.RollupShare = 1

	// The other incarnation, of the new layout, filled as the new view
	// writes.
	w := openDyn(t, cfg)
	if _, err := w.dyn.putLayoutItem(ctx, nv.Name, nv.Fingerprint()+dynFormat, other, &dynLayoutMeta{Layout: nv.Layout()}, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := w.CheckLayoutStatus(ctx, nv); err != nil || st.Rebuild {
		t.Fatalf("the other incarnation's view: %+v %v", st, err)
	}
	fillDynLayout(t, w, nv, hour)
	if inc, _ := w.dyn.incarnation(nv.Name); inc != other {
		t.Fatalf("the new view wrote incarnation %08x, want %08x", inc, other)
	}

	// The view's incarnation, of the old layout.
	s := openDyn(t, dynamoCfgOf(cfg))
	li, err := s.dyn.readLayoutItem(ctx, old.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.dyn.putLayoutItem(ctx, old.Name, old.Fingerprint()+dynFormat, source, &dynLayoutMeta{Layout: old.Layout()}, li); err != nil {
		t.Fatal(err)
	}
	if st, err := s.CheckLayoutStatus(ctx, old); err != nil || st.Rebuild {
		t.Fatalf("the old view: %+v %v", st, err)
	}
	fillDynLayout(t, s, old, hour)
	if inc, _ := s.dyn.incarnation(old.Name); inc != source {
		t.Fatalf("the old view wrote incarnation %08x, want %08x", inc, source)
	}

	// The new view translates the old incarnation: what it makes of it is
	// what the new view writes from the same events, nothing of the other
	// incarnation.
	n := openDyn(t, dynamoCfgOf(cfg))
	st, err := n.CheckLayoutStatus(ctx, nv)
	if err != nil || st.Rebuild {
		t.Fatalf("translation: %+v %v", st, err)
	}
	inc, _ := n.dyn.incarnation(nv.Name)
	if inc == source || inc == other {
		t.Fatalf("the translation wrote incarnation %08x", inc)
	}
	_, want := referenceStore(t, nv, hour)
	sameItems(t, incItems(t, n, nv.Name, inc), want)
	// The other incarnation is as it was.
	sameItems(t, incItems(t, n, nv.Name, other), want)
}

// dynamoCfgOf is cfg for another instance of its table (it creates none).
func dynamoCfgOf(cfg DynamoConfig) DynamoConfig {
	return DynamoConfig{Table: cfg.Table, RollupShare: cfg.RollupShare}
}
