package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// Layout changes on DynamoDB (docs/format.md, "Layout changes (DynamoDB)").
//
// The layout item of a view holds its fingerprint and the store's item
// format in v (rebuildMark while a rebuild runs, translatingMark while the
// view's items are translated), the incarnation of the items of that layout
// in inc, the layout itself (JSON, dynLayoutMeta) in lay and a version in lv
// that every write of the item raises and every conditional write names.
//
// A change of features over the same granularity, record span and lifetime
// start translates the view: every item of the old incarnation is read by a
// scan of the table and written, translated, into a new incarnation, which
// no reader uses until the layout item names it. Readers and writers of the
// old layout keep the old incarnation, which the translation never writes;
// instances of the new layout wait while it runs. One instance translates,
// holding a lease in the layout item that it renews with every page, and
// records the scan's cursor there: a crash resumes after the last page
// recorded (rewriting an item of a page that was not recorded writes the
// same value again), and an abandoned translation is taken over once its
// lease expires.

// Marks following the fingerprint (after dynFormat) in the layout item.
const translatingMark = "+translating"

// Attributes of the layout item.
const (
	attrLayInc  = "inc"
	attrLayMeta = "lay"
	attrLayVer  = "lv"
)

// dynLayoutMeta is the layout item's lay attribute.
type dynLayoutMeta struct {
	Layout tiling.Layout `json:"layout"`
	// Pending and Horizon as in LayoutStatus.
	Pending []tiling.LayoutAgg `json:"pending,omitempty"`
	Horizon int64              `json:"horizon,omitempty"`
	// Translating is set while the view's items are translated into the
	// incarnation inc.
	Translating *dynTranslation `json:"translating,omitempty"`
	// Collect lists the incarnations that the layout item named before and
	// names no more, whose items are deleted once no instance can use them
	// (dynamo_collect.go). writeLayoutItem keeps it up to date.
	Collect []dynOldInc `json:"collect,omitempty"`
}

// dynOldInc is an incarnation to collect.
type dynOldInc struct {
	Inc uint32 `json:"inc"`
	// Since (unix ms) the layout item no longer names it.
	Since int64 `json:"since"`
}

// liveIncs are the incarnations a layout item names: its own and, while a
// translation runs, the one it copies from.
func (li *layoutItem) liveIncs() []uint32 {
	if li == nil {
		return nil
	}
	live := []uint32{li.inc}
	if li.meta != nil && li.meta.Translating != nil {
		live = append(live, li.meta.Translating.FromInc)
	}
	return live
}

// collectList is the Collect list of a write of the layout item that
// replaces prev and names the incarnations live: prev's list and the
// caller's, with every incarnation that prev named and live does not,
// since now; without any incarnation of live.
func collectList(prev *layoutItem, meta *dynLayoutMeta, live []uint32, now time.Time) []dynOldInc {
	var out []dynOldInc
	add := func(o dynOldInc) {
		if slices.Contains(live, o.Inc) || slices.ContainsFunc(out, func(x dynOldInc) bool { return x.Inc == o.Inc }) {
			return
		}
		out = append(out, o)
	}
	if prev != nil && prev.meta != nil {
		for _, o := range prev.meta.Collect {
			add(o)
		}
	}
	if meta != nil {
		for _, o := range meta.Collect {
			add(o)
		}
	}
	for _, inc := range prev.liveIncs() {
		add(dynOldInc{Inc: inc, Since: now.UnixMilli()})
	}
	return out
}

// dynTranslation is a translation in progress.
type dynTranslation struct {
	From    tiling.Layout `json:"from"`
	FromInc uint32        `json:"from_inc"`
	// The scan resumes after this key (none: from the start).
	CursorPK []byte `json:"cursor_pk,omitempty"`
	CursorSK []byte `json:"cursor_sk,omitempty"`
	// Owner translates until Expires (unix ms), renewed with every page.
	Owner   string `json:"owner"`
	Expires int64  `json:"expires"`
	Items   int64  `json:"items"` // items written so far
}

// layoutItem is a view's layout item as read.
type layoutItem struct {
	v      string
	inc    uint32
	meta   *dynLayoutMeta // nil: none stored (a table of an earlier version)
	ver    int64
	hasVer bool
}

// Translation tunables (tests shorten them).
const (
	defaultTranslateLease = 30 * time.Second
	defaultTranslatePoll  = time.Second
	// translatePage bounds the items one scan page evaluates: a page's
	// writes and the cursor's are one step.
	defaultTranslatePage = 1000
)

func newOwner(cachePath string) string {
	host, _ := os.Hostname()
	if cachePath != "" {
		// The cache directory is one instance's own: a restart of the same
		// instance takes its translation back at once.
		return host + ":" + cachePath
	}
	b := make([]byte, 6)
	rand.Read(b)
	return host + ":" + hex.EncodeToString(b)
}

func (d *dynStore) readLayoutItem(ctx context.Context, view string) (*layoutItem, error) {
	it, err := d.t.Get(ctx, layoutPK(view), dskLay)
	if err != nil || it == nil {
		return nil, err
	}
	li := &layoutItem{v: string(it.B("v")), inc: incOf(it)}
	li.ver, li.hasVer = it.N(attrLayVer)
	if raw := it.B(attrLayMeta); len(raw) > 0 {
		var m dynLayoutMeta
		if err := json.Unmarshal(raw, &m); err != nil {
			// Not a layout this version wrote: treated as unknown.
			d.log.Warn("unreadable layout in the layout item", "view", view, "err", err)
		} else {
			li.meta = &m
		}
	}
	return li, nil
}

// writeLayoutItem replaces the layout item, conditioned on prev being what
// is stored (nil: no item). The incarnations to collect carry over from
// prev, and those prev named that the new item does not are added to them
// (collectList); meta is not changed.
func (d *dynStore) writeLayoutItem(ctx context.Context, view, v string, inc uint32, meta *dynLayoutMeta, prev *layoutItem) (*layoutItem, error) {
	if meta != nil {
		m := *meta
		next := &layoutItem{inc: inc, meta: &m}
		m.Collect = collectList(prev, meta, next.liveIncs(), time.Now())
		meta = &m
	}
	return d.putLayoutItem(ctx, view, v, inc, meta, prev)
}

// putLayoutItem is writeLayoutItem with meta as it is (the collection
// removes an entry of Collect this way).
func (d *dynStore) putLayoutItem(ctx context.Context, view, v string, inc uint32, meta *dynLayoutMeta, prev *layoutItem) (*layoutItem, error) {
	it := &dynamo.Item{PK: layoutPK(view), SK: dskLay}
	it.SetB("v", []byte(v))
	it.SetB(attrLayInc, binary.BigEndian.AppendUint32(nil, inc))
	if meta != nil {
		raw, err := json.Marshal(meta)
		if err != nil {
			panic(err) // plain data
		}
		it.SetB(attrLayMeta, raw)
	}
	ver := int64(1)
	cond := dynamo.IfAbsent
	if prev != nil {
		ver = prev.ver + 1
		if prev.hasVer {
			cond = dynamo.IfN(false, attrLayVer, "=", prev.ver)
		} else {
			cond = &dynamo.Cond{Or: []dynamo.Clause{{Attr: "v", Op: "=", B: []byte(prev.v)}}}
		}
	}
	it.SetN(attrLayVer, ver)
	if err := d.t.Put(ctx, it, cond); err != nil {
		return nil, err
	}
	return &layoutItem{v: v, inc: inc, meta: meta, ver: ver, hasVer: true}, nil
}

// Incarnation returns the incarnation that the view's layout item names, as
// stored now (DynamoDB; 0 on Pebble or for a view without one).
func (s *Store) Incarnation(view string) (uint32, error) {
	if s.dyn == nil {
		return 0, nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	li, err := s.dyn.readLayoutItem(ctx, view)
	if err != nil || li == nil {
		return 0, err
	}
	return li.inc, nil
}

// LayoutCurrent reports whether the view's stored layout is still the one
// this store checked at start (CheckLayoutStatus): on DynamoDB another
// instance, started with a changed view, may have moved the view to a new
// incarnation since; what this one writes then reaches only the old one.
// Always true on Pebble (one process).
func (s *Store) LayoutCurrent(v *tiling.View) (bool, error) {
	if s.dyn == nil {
		return true, nil
	}
	d := s.dyn
	d.mu.Lock()
	inc, ok := d.mu.inc[v.Name]
	d.mu.Unlock()
	if !ok {
		return true, nil // not checked (yet)
	}
	ctx, cancel := opCtx()
	defer cancel()
	li, err := d.readLayoutItem(ctx, v.Name)
	if err != nil {
		return true, fmt.Errorf("read layout of view %s: %w", v.Name, err)
	}
	fp := v.Fingerprint() + dynFormat
	return li != nil && li.inc == inc && (li.v == fp || li.v == fp+rebuildMark), nil
}

// checkLayout is CheckLayoutStatus on DynamoDB.
func (d *dynStore) checkLayout(ctx context.Context, v *tiling.View) (LayoutStatus, error) {
	fp := v.Fingerprint() + dynFormat
	untagged := v.Fingerprint()
	lay := v.Layout()
	var waitedSince time.Time
	for {
		octx, cancel := opCtxIn(ctx)
		li, err := d.readLayoutItem(octx, v.Name)
		cancel()
		if err != nil {
			return LayoutStatus{}, fmt.Errorf("read layout of view %s: %w", v.Name, err)
		}
		write := func(val string, inc uint32, meta *dynLayoutMeta) (*layoutItem, bool, error) {
			octx, cancel := opCtxIn(ctx)
			defer cancel()
			nw, err := d.writeLayoutItem(octx, v.Name, val, inc, meta, li)
			if errors.Is(err, dynamo.ErrConditionFailed) {
				return nil, false, nil // another instance wrote it first: read again
			}
			if err != nil {
				return nil, false, fmt.Errorf("record layout of view %s: %w", v.Name, err)
			}
			return nw, true, nil
		}
		if li == nil {
			nw, ok, err := write(fp, newInc(li), &dynLayoutMeta{Layout: lay})
			if err != nil {
				return LayoutStatus{}, err
			}
			if ok {
				d.setInc(v.Name, nw.inc)
				return LayoutStatus{}, nil
			}
			continue
		}
		stored := li.v
		switch {
		case stored == untagged || stored == untagged+rebuildMark:
			// A table of the format before segments: the same items, read
			// alike; tag it (keeping its incarnation) so that older builds
			// stay out, and keep the layout from now on.
			if _, _, err := write(fp+stored[len(untagged):], li.inc, &dynLayoutMeta{Layout: lay}); err != nil {
				return LayoutStatus{}, err
			}
			continue
		case stored == fp:
			if li.meta == nil || li.meta.Translating != nil || !layoutMatches(li.meta.Layout, v.Fingerprint()) {
				// Written before layouts were kept: keep it from now on.
				if _, _, err := write(fp, li.inc, &dynLayoutMeta{Layout: lay}); err != nil {
					return LayoutStatus{}, err
				}
				continue
			}
			d.setInc(v.Name, li.inc)
			return LayoutStatus{Pending: li.meta.Pending, Horizon: li.meta.Horizon}, nil
		case stored == fp+rebuildMark:
			d.setInc(v.Name, li.inc)
			return LayoutStatus{Rebuild: true}, nil // an interrupted rebuild resumes
		case strings.HasSuffix(stored, dynFormat+translatingMark) && li.meta != nil && li.meta.Translating != nil:
			t := li.meta.Translating
			live := t.Owner != d.owner && time.Now().UnixMilli() < t.Expires
			if live {
				// Another instance translates the view: its items are in
				// no layout yet. Wait for it.
				if waitedSince.IsZero() {
					waitedSince = time.Now()
					d.log.Warn("another instance is translating the view's items to a new layout; waiting for it",
						"view", v.Name, "owner", t.Owner, "items", t.Items)
				} else if time.Since(waitedSince) > 30*time.Second {
					waitedSince = time.Now()
					d.log.Info("still waiting for the translation of the view's items", "view", v.Name, "owner", t.Owner, "items", t.Items)
				}
				select {
				case <-ctx.Done():
					return LayoutStatus{}, fmt.Errorf("wait for the translation of view %s: %w", v.Name, ctx.Err())
				case <-time.After(d.translatePoll):
				}
				continue
			}
			if stored == fp+translatingMark {
				// Ours, or abandoned: resume it after its cursor.
				return d.translate(ctx, v, li)
			}
			// An abandoned translation to another layout: its source
			// incarnation is intact; translate from there to this layout.
			st, ok, err := d.startTranslation(ctx, v, li, t.From, t.FromInc, li.meta)
			if err != nil || ok {
				return st, err
			}
			continue
		case strings.HasSuffix(stored, dynFormat) && li.meta != nil && li.meta.Translating == nil &&
			layoutMatches(li.meta.Layout, strings.TrimSuffix(stored, dynFormat)):
			st, ok, err := d.startTranslation(ctx, v, li, li.meta.Layout, li.inc, li.meta)
			if err != nil || ok {
				return st, err
			}
			continue
		}
		// Another layout that cannot be translated (another granularity,
		// record span or lifetime start, a rebuild of another layout, a
		// layout not kept): a new incarnation, with nothing in it yet.
		nw, ok, err := write(fp+rebuildMark, newInc(li), &dynLayoutMeta{Layout: lay})
		if err != nil {
			return LayoutStatus{}, fmt.Errorf("reset view %s for its new layout: %w", v.Name, err)
		}
		if !ok {
			continue
		}
		d.log.Info("the view's items of its previous layout are deleted once the grace period has passed",
			"view", v.Name, "table", d.t.Name(), "grace", incarnationGrace)
		d.setInc(v.Name, nw.inc)
		return LayoutStatus{Rebuild: true}, nil
	}
}

// layoutMatches reports whether l is a layout whose fingerprint is fp.
func layoutMatches(l tiling.Layout, fp string) bool {
	got, err := l.Fingerprint()
	return err == nil && got == fp
}

// newInc picks a new incarnation for the view whose layout item is li (nil:
// none): none that li names or lists to collect (a collection must never
// find its incarnation in use again).
func newInc(li *layoutItem) uint32 {
	for {
		inc := binary.BigEndian.Uint32(newIncarnation())
		used := inc == 0 || slices.Contains(li.liveIncs(), inc)
		if li != nil && li.meta != nil {
			used = used || slices.ContainsFunc(li.meta.Collect, func(o dynOldInc) bool { return o.Inc == inc })
		}
		if !used {
			return inc
		}
	}
}

// startTranslation claims the translation of the view's items from layout
// from in incarnation fromInc to v's layout, in a new incarnation, and runs
// it. ok is false when another instance changed the layout item first (read
// it again). Rebuild when the layouts differ in more than aggregates.
func (d *dynStore) startTranslation(ctx context.Context, v *tiling.View, li *layoutItem, from tiling.Layout, fromInc uint32, old *dynLayoutMeta) (LayoutStatus, bool, error) {
	fp := v.Fingerprint() + dynFormat
	tr, err := tiling.NewTranslator(from, v)
	var next *dynLayoutMeta
	val := fp + translatingMark
	if err != nil {
		val, next = fp+rebuildMark, &dynLayoutMeta{Layout: v.Layout()}
	} else {
		next = &dynLayoutMeta{Layout: v.Layout(), Horizon: old.Horizon,
			Translating: &dynTranslation{From: from, FromInc: fromInc, Owner: d.owner,
				Expires: time.Now().Add(d.translateLease).UnixMilli()}}
		// Aggregates still pending from an earlier change stay pending.
		next.Pending = tr.Pending()
		for _, a := range old.Pending {
			if slices.Contains(next.Layout.Aggs, a) && !slices.Contains(next.Pending, a) {
				next.Pending = append(next.Pending, a)
			}
		}
	}
	octx, cancel := opCtxIn(ctx)
	nw, err := d.writeLayoutItem(octx, v.Name, val, newInc(li), next, li)
	cancel()
	if errors.Is(err, dynamo.ErrConditionFailed) {
		return LayoutStatus{}, false, nil
	}
	if err != nil {
		return LayoutStatus{}, false, fmt.Errorf("record layout of view %s: %w", v.Name, err)
	}
	if next.Translating == nil {
		d.log.Info("the view's items of its previous layout are deleted once the grace period has passed",
			"view", v.Name, "table", d.t.Name(), "grace", incarnationGrace)
		d.setInc(v.Name, nw.inc)
		return LayoutStatus{Rebuild: true}, true, nil
	}
	d.log.Warn("the view's features changed: translating its items to the new layout (a scan of the table)",
		"view", v.Name, "pending", len(next.Pending))
	st, err := d.translate(ctx, v, nw)
	return st, true, err
}

// errTranslationLost: another instance took the translation over.
var errTranslationLost = errors.New("state: the layout translation was taken over by another instance")

// translate copies every item of the view's incarnation Translating.FromInc
// into li.inc, translated to v's layout, page by page after the recorded
// cursor, then names li.inc the view's incarnation.
func (d *dynStore) translate(ctx context.Context, v *tiling.View, li *layoutItem) (_ LayoutStatus, err error) {
	m := *li.meta
	t := *m.Translating
	m.Translating = &t
	tr, err := tiling.NewTranslator(t.From, v)
	if err != nil {
		return LayoutStatus{}, fmt.Errorf("resume the layout translation of view %s: %w", v.Name, err)
	}
	// Claim (or renew) the translation.
	t.Owner, t.Expires = d.owner, time.Now().Add(d.translateLease).UnixMilli()
	if li, err = d.writeLayoutItem(ctx, v.Name, li.v, li.inc, &m, li); err != nil {
		if errors.Is(err, dynamo.ErrConditionFailed) {
			return LayoutStatus{}, fmt.Errorf("translate view %s: %w", v.Name, errTranslationLost)
		}
		return LayoutStatus{}, err
	}
	defer func() {
		if err != nil && ctx.Err() != nil {
			// Stopped (the process is asked to stop): hand both leases
			// back, so that the next start resumes after the cursor at once
			// instead of waiting for them to expire.
			rctx, cancel := opCtx()
			defer cancel()
			t.Expires = time.Now().UnixMilli()
			if _, err := d.writeLayoutItem(rctx, v.Name, li.v, li.inc, &m, li); err != nil {
				d.log.Warn("release the layout translation's lease (it expires by itself)", "view", v.Name, "err", err)
			}
			d.releaseOldLease(rctx, v.Name, t.FromInc)
		}
	}()
	// renew writes the layout item again with the lease renewed (and the
	// cursor, horizon and count as they are).
	renew := func() error {
		t.Expires = time.Now().Add(d.translateLease).UnixMilli()
		nw, err := d.writeLayoutItem(ctx, v.Name, li.v, li.inc, &m, li)
		if errors.Is(err, dynamo.ErrConditionFailed) {
			return errTranslationLost
		}
		if err != nil {
			return err
		}
		li = nw
		return nil
	}
	// Hold the old incarnation's healing lease: no heal or collection of
	// the old layout changes its items while they are copied.
	if err := d.holdOldLease(ctx, v.Name, t.FromInc, renew); err != nil {
		return LayoutStatus{}, fmt.Errorf("translate view %s: %w", v.Name, err)
	}
	var start *dynamo.Key
	if t.CursorPK != nil {
		start = &dynamo.Key{PK: t.CursorPK, SK: t.CursorSK}
	}
	prefixes := incPrefixes(v.Name, t.FromInc)
	page, written, began := 0, int64(0), time.Now()
	err = d.t.ScanPrefixes(ctx, prefixes, start, d.translatePage, func(items []*dynamo.Item, next *dynamo.Key) error {
		var puts []*dynamo.Item
		for _, it := range items {
			out, horizon, err := d.translateItem(ctx, v, tr, it, t.FromInc, li.inc)
			if err != nil {
				return fmt.Errorf("item %s: %w", it.Key(), err)
			}
			puts = append(puts, out...)
			if len(m.Pending) > 0 {
				m.Horizon = max(m.Horizon, horizon)
			}
		}
		if len(puts) > 0 {
			if err := d.t.BatchWrite(ctx, puts, nil); err != nil {
				return err
			}
		}
		written += int64(len(puts))
		if next == nil {
			return nil // the flip below records the end
		}
		t.CursorPK, t.CursorSK = next.PK, next.SK
		t.Items += int64(len(puts))
		if err := renew(); err != nil {
			return err
		}
		if err := d.holdOldLease(ctx, v.Name, t.FromInc, renew); err != nil {
			return err
		}
		page++
		if page%50 == 0 {
			d.log.Info("translating the view's items to the new layout", "view", v.Name, "items", t.Items)
		}
		if d.testPageHook != nil {
			return d.testPageHook(page)
		}
		return nil
	})
	if err != nil {
		return LayoutStatus{}, fmt.Errorf("translate the items of view %s to its new layout (it resumes after its cursor): %w", v.Name, err)
	}
	// Every item is in the new incarnation: name it.
	t.Items = 0
	done := &dynLayoutMeta{Layout: m.Layout, Pending: m.Pending, Horizon: m.Horizon}
	if len(done.Pending) == 0 {
		done.Horizon = 0
	}
	if _, err := d.writeLayoutItem(ctx, v.Name, v.Fingerprint()+dynFormat, li.inc, done, li); err != nil {
		if errors.Is(err, dynamo.ErrConditionFailed) {
			err = errTranslationLost
		}
		return LayoutStatus{}, fmt.Errorf("translate view %s: %w", v.Name, err)
	}
	d.setInc(v.Name, li.inc)
	// Done: release the lease even if ctx ended just now (it would only
	// expire later).
	rctx, cancel := opCtx()
	d.releaseOldLease(rctx, v.Name, t.FromInc)
	cancel()
	d.log.Info("view items translated to the new layout", "view", v.Name, "pending", len(done.Pending),
		"horizon", time.UnixMilli(done.Horizon).UTC(), "items", written, "seconds", time.Since(began).Seconds())
	d.log.Info("the view's items of its previous layout are deleted once the grace period has passed",
		"view", v.Name, "table", d.t.Name(), "grace", incarnationGrace)
	return LayoutStatus{Pending: done.Pending, Horizon: done.Horizon}, nil
}

// oldLeaseOwner is the healing lease's owner while a translation copies the
// incarnation.
func (d *dynStore) oldLeaseOwner() []byte { return []byte("layout translation by " + d.owner) }

// holdOldLease takes or renews the healing lease of incarnation inc for the
// translation, waiting while a heal of the old layout holds it; renew keeps
// the translation's own lease meanwhile.
func (d *dynStore) holdOldLease(ctx context.Context, view string, inc uint32, renew func() error) error {
	renewed := time.Now()
	for logged := false; ; {
		if time.Since(renewed) > d.translateLease/3 {
			if err := renew(); err != nil {
				return err
			}
			renewed = time.Now()
		}
		now := time.Now()
		it := &dynamo.Item{PK: viewPK(view, inc), SK: dskLease}
		it.SetB("owner", d.oldLeaseOwner())
		it.SetN("exp", now.Add(d.translateLease).UnixMilli())
		err := d.t.Put(ctx, it, &dynamo.Cond{IfAbsent: true, Or: []dynamo.Clause{
			{Attr: "owner", Op: "=", B: d.oldLeaseOwner()},
			{Attr: "exp", Op: "<", N: now.UnixMilli()},
		}})
		if !errors.Is(err, dynamo.ErrConditionFailed) {
			return err
		}
		if !logged {
			logged = true
			d.log.Warn("an instance of the view's previous layout is healing it; the translation waits for its lease", "view", view)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.translatePoll):
		}
	}
}

func (d *dynStore) releaseOldLease(ctx context.Context, view string, inc uint32) {
	err := d.t.Delete(ctx, dynamo.Key{PK: viewPK(view, inc), SK: dskLease},
		&dynamo.Cond{Or: []dynamo.Clause{{Attr: "owner", Op: "=", B: d.oldLeaseOwner()}}})
	if err != nil && !errors.Is(err, dynamo.ErrConditionFailed) {
		d.log.Warn("release the previous layout's healing lease (it expires by itself)", "view", view, "err", err)
	}
}

// translateItem returns the items that it becomes in incarnation to,
// translated, and the end of the last stream tile it holds (MinTime: none).
// Chunks of split values are written with their base item and skipped.
func (d *dynStore) translateItem(ctx context.Context, v *tiling.View, tr *tiling.Translator, it *dynamo.Item, from, to uint32) ([]*dynamo.Item, int64, error) {
	kind := it.PK[0]
	head := len(viewIncPrefix(kind, v.Name, from))
	if len(it.PK) < head {
		return nil, tiling.MinTime, fmt.Errorf("%w: short partition key", tiling.ErrCorrupt)
	}
	pk := append(viewIncPrefix(kind, v.Name, to), it.PK[head:]...)
	copied := func() []*dynamo.Item {
		c := &dynamo.Item{PK: pk, SK: it.SK, Bin: it.Bin, Num: it.Num}
		return []*dynamo.Item{c}
	}
	with := func(val []byte) *dynamo.Item {
		c := &dynamo.Item{PK: pk, SK: it.SK, Num: it.Num}
		for k, b := range it.Bin {
			c.SetB(k, b)
		}
		c.SetB("v", val)
		return c
	}
	none := tiling.MinTime
	switch kind {
	case dpkView:
		if bytes.Equal(it.SK, dskLease) {
			return nil, none, nil // the new incarnation starts without a lease
		}
		return copied(), none, nil // the healer's state (no states in it)
	case dpkGenKeys, dpkDayKeys:
		return copied(), none, nil
	case dpkKey:
	default:
		return nil, none, fmt.Errorf("%w: item kind %x", tiling.ErrCorrupt, kind)
	}
	sk := it.SK
	switch {
	case len(sk) == 1 && sk[0] == dskHead:
		return copied(), none, nil
	case sk[0] == dskStream && len(sk) == streamSKLen:
		out, err := tr.Record(it.B("v"))
		if err != nil {
			return nil, none, err
		}
		return []*dynamo.Item{with(out)}, recordEnd(v, decodeTime(sk[1:9]), out), nil
	case isHourSK(sk):
		hour := v.RecordStart(decodeTime(sk[1:9]))
		out, end, err := translateSlots(v, tr, hour, it.B("v"))
		if err != nil {
			return nil, none, err
		}
		return []*dynamo.Item{with(out)}, end, nil
	case sk[0] == dskSummary && len(sk) == 9, sk[0] == dskDay && len(sk) == 17, sk[0] == dskDetail && len(sk) == 25:
		val, err := d.assemble(ctx, it, 0)
		if err != nil {
			return nil, none, err
		}
		var out []byte
		switch sk[0] {
		case dskSummary:
			out, err = tr.Summary(val)
		case dskDay:
			out, err = tr.DayRecord(val)
		default:
			out, err = tr.DetailRecord(val)
		}
		if err != nil {
			return nil, none, err
		}
		n, _ := it.N("n")
		base, chunks := splitChunksLike(pk, sk, out, int(n))
		return append(chunks, base), none, nil
	case (sk[0] == dskSummary && len(sk) == 9+2) || (sk[0] == dskDay && len(sk) == 17+2) || (sk[0] == dskDetail && len(sk) == 25+2):
		return nil, none, nil // a chunk: written with its base item
	}
	return nil, none, fmt.Errorf("%w: unknown item %x of a key", tiling.ErrCorrupt, sk)
}

// recordEnd is the end of the last tile of an encoded stream record (MinTime:
// none).
func recordEnd(v *tiling.View, start int64, rec []byte) int64 {
	r, err := v.DecodeRecord(v.RecordStart(start), rec)
	if err != nil || len(r.Tiles) == 0 {
		return tiling.MinTime
	}
	return r.Tiles[len(r.Tiles)-1].Start + v.Granularity
}

// translateSlots translates a segment's slots (appendSlots): each
// partition's record in turn. It returns the end of its last tile too.
func translateSlots(v *tiling.View, tr *tiling.Translator, hour int64, b []byte) ([]byte, int64, error) {
	bad := fmt.Errorf("segment @%d: %w: slots", hour, tiling.ErrCorrupt)
	if len(b) == 0 || b[0] != 1 {
		return nil, 0, bad
	}
	b = b[1:]
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return nil, 0, bad
	}
	b = b[m:]
	out := binary.AppendUvarint([]byte{1}, n)
	end := tiling.MinTime
	for range n {
		p, m := binary.Uvarint(b)
		if m <= 0 {
			return nil, 0, bad
		}
		b = b[m:]
		l, m := binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < l {
			return nil, 0, bad
		}
		rec, err := tr.Record(b[m : m+int(l)])
		if err != nil {
			return nil, 0, fmt.Errorf("segment @%d: %w", hour, err)
		}
		b = b[m+int(l):]
		end = max(end, recordEnd(v, hour, rec))
		out = binary.AppendUvarint(out, p)
		out = binary.AppendUvarint(out, uint64(len(rec)))
		out = append(out, rec...)
	}
	if len(b) != 0 {
		return nil, 0, bad
	}
	return out, end, nil
}

// splitChunksLike splits a translated generation record into as many
// chunks as the original had (n), which the key lists count for the
// garbage collection, when it fits; else as splitChunks does.
func splitChunksLike(pk, sk, val []byte, n int) (*dynamo.Item, []*dynamo.Item) {
	if n <= 1 || len(val) > n*chunkBytes || len(val) < n {
		return splitChunks(pk, sk, val, 0)
	}
	size := (len(val) + n - 1) / n
	base := &dynamo.Item{PK: pk, SK: sk}
	base.SetB("v", val[:size])
	base.SetN("n", int64(n))
	var chunks []*dynamo.Item
	for i := 1; i < n; i++ {
		c := &dynamo.Item{PK: pk, SK: chunkSK(sk, 0, i)}
		c.SetB("v", val[min(i*size, len(val)):min((i+1)*size, len(val))])
		chunks = append(chunks, c)
	}
	return base, chunks
}

// settlePending is SettlePending on DynamoDB.
func (d *dynStore) settlePending(v *tiling.View) ([]tiling.LayoutAgg, error) {
	for {
		ctx, cancel := opCtx()
		li, err := d.readLayoutItem(ctx, v.Name)
		cancel()
		if err != nil || li == nil || li.v != v.Fingerprint()+dynFormat || li.meta == nil || len(li.meta.Pending) == 0 {
			return nil, err
		}
		val, _, err := d.meta(v.Name)
		if err != nil || val == nil {
			return li.meta.Pending, err
		}
		var healed struct {
			Watermark   int64  `json:"watermark"`
			Fingerprint string `json:"fingerprint"`
		}
		if err := json.Unmarshal(val, &healed); err != nil {
			return li.meta.Pending, fmt.Errorf("healer state of %s: %w", v.Name, err)
		}
		if healed.Fingerprint != v.Fingerprint() || healed.Watermark < li.meta.Horizon {
			return li.meta.Pending, nil
		}
		ctx, cancel = opCtx()
		_, err = d.writeLayoutItem(ctx, v.Name, li.v, li.inc, &dynLayoutMeta{Layout: li.meta.Layout}, li)
		cancel()
		if errors.Is(err, dynamo.ErrConditionFailed) {
			continue
		}
		if err != nil {
			return li.meta.Pending, fmt.Errorf("record layout of view %s: %w", v.Name, err)
		}
		d.log.Info("features of the new layout are complete", "view", v.Name, "batch_watermark", time.UnixMilli(healed.Watermark).UTC())
		return nil, nil
	}
}

// finishRebuild marks the view's rebuild done.
func (d *dynStore) finishRebuild(v *tiling.View) error {
	fp := v.Fingerprint() + dynFormat
	ctx, cancel := opCtx()
	defer cancel()
	li, err := d.readLayoutItem(ctx, v.Name)
	if err != nil {
		return fmt.Errorf("read layout of view %s: %w", v.Name, err)
	}
	inc, err := d.incarnation(v.Name)
	if err != nil {
		return err
	}
	if li == nil || li.v != fp+rebuildMark || li.inc != inc {
		got := "none"
		if li != nil {
			got = li.v
		}
		return fmt.Errorf("finish the rebuild of view %s: its layout item changed meanwhile (%s): another instance changed the view's layout; restart", v.Name, got)
	}
	_, err = d.writeLayoutItem(ctx, v.Name, fp, inc, &dynLayoutMeta{Layout: v.Layout()}, li)
	return err
}
