package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// The views of the DynamoDB layout tests: the new one drops the event count
// and adds a maximum of column y, which the events never carry, so that a
// store written under the new view from the same events holds what a
// translation must make of the old one (the new states empty).
var fMaxY = tiling.Feature{Name: "max_y", Function: tiling.Max, Column: "y", Window: tiling.Day}

func dynLayoutViews(t *testing.T) (old, nv *tiling.View) {
	return layoutView(t, tiling.Minute, fCount, fSum, fLast), layoutView(t, tiling.Minute, fLast, fSum, fMaxY)
}

// fillDynLayout writes under v, as the ingest and the healer do: stream
// tiles of keys k0…k3 over the two hours from hour on three partitions,
// flushed every 8 events so that most are rolled up into hour segments;
// generation 1 (heads, summaries, day and detail records, key lists) of
// those keys and of "big", whose detail record is split over several items;
// and the healer's state. It returns the events of the stream.
func fillDynLayout(t *testing.T, s *Store, v *tiling.View, hour int64) []tiling.Event {
	t.Helper()
	w := newWriter(t, s, v)
	var evs []tiling.Event
	for i := range 120 {
		for k := range 4 {
			ts := hour + int64(i)*tiling.Minute + int64(k)*1000
			p := int32((i + k) % 3)
			e := ev(v, fmt.Sprintf("k%d", k), ts, p, int64(i*4+k), float64(k*1000+i), 4)
			evs = append(evs, e)
			w.apply(e)
		}
		if i%2 == 1 {
			w.flush()
		}
	}
	w.flush()

	day := tiling.AlignDown(hour-2*tiling.Day, tiling.Day)
	b := s.NewBatch()
	heads := s.NewBatch()
	for k := range 4 {
		key := fmt.Sprintf("k%d", k)
		detail := v.NewRecord(day)
		for i := range 18 {
			e := ev(v, key, day+int64(i)*7*tiling.Minute, int32(i%3), int64(i), float64(k*100+i), 4)
			v.Aggregate(detail, &e)
		}
		dr := &tiling.Record{Start: day, Tiles: v.Rollup(detail, v.Span())}
		total := v.NewStates()
		for i := range dr.Tiles {
			tiling.MergeStates(total, dr.Tiles[i].States)
		}
		b.PutDetail(v, 1, day, key, &tiling.Record{Start: day, Tiles: detail.Tiles[:6]})
		b.PutDayRecord(v, 1, day, key, dr)
		b.PutSummary(v, 1, key, &tiling.Summary{Watermark: day + tiling.Day, FirstDay: day,
			Days: []tiling.SummaryDay{{Start: day, Gen: 1, Total: total}}})
		heads.PutHead(v, key, Head{Watermark: day + tiling.Day, Gen: 1})
	}
	dets, dayRec, total := bigDay(t, v, "big", day)
	b.PutDetail(v, 1, day, "big", dets[0])
	b.PutDayRecord(v, 1, day, "big", dayRec)
	b.PutSummary(v, 1, "big", &tiling.Summary{Watermark: day + tiling.Day, FirstDay: day,
		Days: []tiling.SummaryDay{{Start: day, Gen: 1, Total: total}}})
	heads.PutHead(v, "big", Head{Watermark: day + tiling.Day, Gen: 1})
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(heads); err != nil {
		t.Fatal(err)
	}
	// The healer's state names the old layout in both stores (the
	// translation copies it as it is).
	st, _ := json.Marshal(map[string]any{"gen": 1, "watermark": day + tiling.Day, "fingerprint": "old"})
	mb := s.NewBatch()
	mb.PutMeta(v.Name, st, 0)
	if err := s.Commit(mb); err != nil {
		t.Fatal(err)
	}
	return evs
}

// oldLayoutTable opens a table of the old view of dynLayoutViews, its layout
// checked and filled (fillDynLayout) at hour, three hours ago: a table to
// translate to nv.
func oldLayoutTable(t *testing.T) (old, nv *tiling.View, hour int64, cfg DynamoConfig, s *Store, evs []tiling.Event) {
	t.Helper()
	old, nv = dynLayoutViews(t)
	hour = tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	cfg = dynTable(t)
	cfg.RollupShare = 1
	s = openDyn(t, cfg)
	if _, err := s.CheckLayoutStatus(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	return old, nv, hour, cfg, s, fillDynLayout(t, s, old, hour)
}

// incItems returns every item of the view's incarnation inc, by kind, the
// pk after the incarnation and sk; generation records split over several
// items are assembled (their chunks left out).
func incItems(t *testing.T, s *Store, view string, inc uint32) map[string]*dynamo.Item {
	t.Helper()
	ctx := context.Background()
	out := map[string]*dynamo.Item{}
	kinds := []byte{dpkKey, dpkView, dpkGenKeys, dpkDayKeys}
	var prefixes [][]byte
	for _, k := range kinds {
		prefixes = append(prefixes, viewIncPrefix(k, view, inc))
	}
	head := len(prefixes[0])
	err := s.dyn.t.ScanPrefixes(ctx, prefixes, nil, 0, func(items []*dynamo.Item, _ *dynamo.Key) error {
		for _, it := range items {
			if it.PK[0] == dpkKey && len(it.SK) > 1 && (it.SK[0] == dskSummary && len(it.SK) == 11 ||
				it.SK[0] == dskDay && len(it.SK) == 19 || it.SK[0] == dskDetail && len(it.SK) == 27) {
				continue // a chunk
			}
			if n, _ := it.N("n"); n > 1 && it.PK[0] == dpkKey {
				val, err := s.dyn.assemble(ctx, it, 0)
				if err != nil {
					return err
				}
				it = &dynamo.Item{PK: it.PK, SK: it.SK, Bin: map[string][]byte{"v": val}}
			}
			out[fmt.Sprintf("%x/%x/%x", it.PK[0], it.PK[head:], it.SK)] = it
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameItems(t *testing.T, got, want map[string]*dynamo.Item) {
	t.Helper()
	kinds := map[string]int{}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("item %s missing from the translation", k)
			continue
		}
		if !reflect.DeepEqual(g.Bin, w.Bin) || !reflect.DeepEqual(g.Num, w.Num) {
			t.Errorf("item %s translated to\n%x %v\nthe new view wrote\n%x %v", k, g.Bin["v"], g.Num, w.Bin["v"], w.Num)
		}
		kinds[kindName(w)]++
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("item %s of the translation: the new view wrote none", k)
		}
	}
	// Every kind is there.
	for _, kind := range []string{"head", "summary", "stream tile", "hour segment", "day", "detail", "healer state", "key list", "day key list"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s compared (%v)", kind, kinds)
		}
	}
}

func kindName(it *dynamo.Item) string {
	switch it.PK[0] {
	case dpkView:
		return "healer state"
	case dpkGenKeys:
		return "key list"
	case dpkDayKeys:
		return "day key list"
	}
	switch {
	case len(it.SK) == 1:
		return "head"
	case it.SK[0] == dskSummary:
		return "summary"
	case isHourSK(it.SK):
		return "hour segment"
	case it.SK[0] == dskStream:
		return "stream tile"
	case it.SK[0] == dskDay:
		return "day"
	case it.SK[0] == dskDetail:
		return "detail"
	}
	return "?"
}

// referenceStore is a fresh table written under the new view from the same
// events: what a translation must produce.
func referenceStore(t *testing.T, nv *tiling.View, hour int64) (*Store, map[string]*dynamo.Item) {
	t.Helper()
	cfg := dynTable(t)
	cfg.RollupShare = 1
	ref := openDyn(t, cfg)
	if st, err := ref.CheckLayoutStatus(context.Background(), nv); err != nil || st.Rebuild {
		t.Fatalf("reference store: %+v %v", st, err)
	}
	fillDynLayout(t, ref, nv, hour)
	inc, err := ref.dyn.incarnation(nv.Name)
	if err != nil {
		t.Fatal(err)
	}
	return ref, incItems(t, ref, nv.Name, inc)
}

// evaluate reads every key at a few times and returns the values served.
func evaluate(t *testing.T, s *Store, v *tiling.View, hour int64) map[string][]any {
	t.Helper()
	out := map[string][]any{}
	for _, key := range []string{"k0", "k1", "k2", "k3", "big"} {
		for _, at := range []int64{hour + 2*tiling.Hour, hour + 90*tiling.Minute + 17} {
			kd, err := s.ReadKey(context.Background(), v, key, at)
			if err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprint(key, "@", at)] = v.EvaluateBatch(at, kd.Batch, kd.Records)
		}
	}
	return out
}

func streamEnd(evs []tiling.Event) int64 {
	var end int64
	for _, e := range evs {
		end = max(end, tiling.AlignDown(e.TS, tiling.Minute)+tiling.Minute)
	}
	return end
}

// TestDynamoLayoutTranslation: a view that drops a feature and adds another
// has every item of its incarnation — stream tiles, hour segments, heads,
// summaries, day and detail records (one split over several items), key
// lists and the healer's state — translated into a new incarnation,
// equal to what the new view writes from the same events; the added
// aggregate is pending up to the end of the last stream tile; a store of
// the old view keeps reading the old incarnation, unchanged; the local
// cache of an instance that read the old layout serves none of it.
func TestDynamoLayoutTranslation(t *testing.T) {
	old, nv := dynLayoutViews(t)
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	cfg := dynTable(t)
	cfg.RollupShare = 1
	cfg.CachePath = filepath.Join(t.TempDir(), "cache")
	cfg.Staleness = time.Hour
	s := openDyn(t, cfg)
	if st, err := s.CheckLayoutStatus(context.Background(), old); err != nil || st.Rebuild {
		t.Fatalf("first check: %+v %v", st, err)
	}
	evs := fillDynLayout(t, s, old, hour)
	if tiles, segs := streamItems(t, s, old, "k1"); tiles == 0 || segs == 0 {
		t.Fatalf("k1 has %d tile items and %d segments: the test needs both", tiles, segs)
	}
	oldInc, _ := s.dyn.incarnation(old.Name)
	before := incItems(t, s, old.Name, oldInc)
	oldValues := evaluate(t, s, old, hour) // cached for an hour
	// Another instance of the old view, running on.
	stay := openDyn(t, DynamoConfig{Table: cfg.Table})
	if _, err := stay.CheckLayoutStatus(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// An instance of the old view is healing it (its lease for 7 s more).
	if err := stay.AcquireLease(old.Name, "old-healer", time.Now(), 7*time.Second); err != nil {
		t.Fatal(err)
	}
	// The instance restarts with the new view, over its cache; its
	// translation's lease (3 s) outlives the wait only by its renewals.
	s = openDyn(t, cfg)
	s.dyn.translatePoll = 50 * time.Millisecond
	s.dyn.translateLease = 3 * time.Second
	// Another instance of the new view starts meanwhile: it waits.
	other := openDyn(t, DynamoConfig{Table: cfg.Table})
	other.dyn.translatePoll = 50 * time.Millisecond
	otherDone := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, err := other.CheckLayoutStatus(context.Background(), nv)
		otherDone <- err
	}()
	start := time.Now()
	st, err := s.CheckLayoutStatus(context.Background(), nv)
	if err != nil || st.Rebuild {
		t.Fatalf("CheckLayoutStatus: %+v, %v", st, err)
	}
	if took := time.Since(start); took < 6*time.Second {
		t.Fatalf("the translation took %v: it did not wait for the old layout's heal to give its lease up", took)
	}
	if err := <-otherDone; err != nil {
		t.Fatalf("the other instance of the new view: %v", err)
	}
	if a, b := s.dyn.mu.inc[nv.Name], other.dyn.mu.inc[nv.Name]; a != b {
		t.Fatalf("the instances of the new view use incarnations %x and %x", a, b)
	}
	if err := stay.AcquireLease(old.Name, "old-healer", time.Now(), time.Second); err != nil {
		t.Fatalf("the translation kept the old layout's healing lease: %v", err)
	}
	if err := stay.ReleaseLease(old.Name, "old-healer"); err != nil {
		t.Fatal(err)
	}
	if want := []tiling.LayoutAgg{{Kind: "max", Column: "y"}}; !reflect.DeepEqual(st.Pending, want) {
		t.Fatalf("pending %+v, want %+v", st.Pending, want)
	}
	if want := streamEnd(evs); st.Horizon != want {
		t.Fatalf("horizon %v, want the end of the last stream tile %v", time.UnixMilli(st.Horizon), time.UnixMilli(want))
	}
	newInc, _ := s.dyn.incarnation(nv.Name)
	if newInc == oldInc {
		t.Fatal("the translation kept the incarnation")
	}
	ref, want := referenceStore(t, nv, hour)
	sameItems(t, incItems(t, s, nv.Name, newInc), want)
	got := evaluate(t, s, nv, hour)
	if wantValues := evaluate(t, ref, nv, hour); !reflect.DeepEqual(got, wantValues) {
		t.Fatalf("served after the translation (cache of the old layout in place):\n%v\nthe new view's store serves\n%v", got, wantValues)
	}
	// The old incarnation is as it was, and an instance of the old view
	// still serves it.
	if after := incItems(t, s, old.Name, oldInc); !reflect.DeepEqual(after, before) {
		t.Fatal("the translation changed items of the old incarnation")
	}
	if got := evaluate(t, stay, old, hour); !reflect.DeepEqual(got, oldValues) {
		t.Fatalf("the old view's instance serves\n%v\nafter the translation, before\n%v", got, oldValues)
	}
	// The instance of the old view finds its layout gone; the new one's is
	// current.
	if cur, err := stay.LayoutCurrent(old); err != nil || cur {
		t.Fatalf("the old view's instance: layout current %v, %v", cur, err)
	}
	if cur, err := s.LayoutCurrent(nv); err != nil || !cur {
		t.Fatalf("the new view's instance: layout current %v, %v", cur, err)
	}
	// Checked again: the same status, nothing translated again.
	if again, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || !reflect.DeepEqual(again, st) {
		t.Fatalf("check again: %+v %v, want %+v", again, err, st)
	}
	if inc, _ := s.dyn.incarnation(nv.Name); inc != newInc {
		t.Fatal("a second check moved the incarnation")
	}

	// Settling: a heal of the old layout (the copied state) settles
	// nothing, nor one of the new layout short of the horizon; one at or
	// past it clears pending.
	settle := func(fp string, wm int64) []tiling.LayoutAgg {
		t.Helper()
		val, ver, err := s.Meta(nv.Name)
		if err != nil || val == nil {
			t.Fatalf("healer state after the translation: %q %v", val, err)
		}
		state, _ := json.Marshal(map[string]any{"gen": 1, "watermark": wm, "fingerprint": fp})
		b := s.NewBatch()
		b.PutMeta(nv.Name, state, ver)
		if err := s.Commit(b); err != nil {
			t.Fatal(err)
		}
		p, err := s.SettlePending(nv)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := settle(old.Fingerprint(), st.Horizon+tiling.Hour); len(p) != 1 {
		t.Fatalf("a heal of the old layout settled %v", p)
	}
	if p := settle(nv.Fingerprint(), st.Horizon-tiling.Minute); len(p) != 1 {
		t.Fatalf("a heal short of the horizon settled: %v", p)
	}
	if p := settle(nv.Fingerprint(), st.Horizon); len(p) != 0 {
		t.Fatalf("a heal at the horizon left %v pending", p)
	}
	if again, err := s.CheckLayoutStatus(context.Background(), nv); err != nil || len(again.Pending) != 0 || again.Rebuild {
		t.Fatalf("check after settling: %+v %v", again, err)
	}
}

// TestDynamoLayoutTranslationResumes: a translation cut after its first
// page leaves the layout item translating, with its cursor; another
// instance of the new view waits while the lease holds (serving nothing),
// then takes the translation over and resumes after the cursor — an item
// of the first page, corrupted in the old incarnation since, is not read
// again — and ends with every item translated.
func TestDynamoLayoutTranslationResumes(t *testing.T) {
	old, nv, hour, cfg, s, evs := oldLayoutTable(t)
	oldInc, _ := s.dyn.incarnation(old.Name)

	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translatePage = 20
	a.dyn.translateLease = 3 * time.Second
	crash := errors.New("crash")
	// Cut after the first page that translated a stream tile item (the
	// scan's order follows the keys' hashes, the incarnation's included: a
	// first page may hold none).
	a.dyn.testPageHook = func(page int) error {
		li, err := a.dyn.readLayoutItem(context.Background(), nv.Name)
		if err != nil {
			return err
		}
		for _, it := range incItems(t, a, nv.Name, li.inc) {
			if it.PK[0] == dpkKey && len(it.SK) == streamSKLen {
				return crash
			}
		}
		return nil
	}
	if _, err := a.CheckLayoutStatus(context.Background(), nv); !errors.Is(err, crash) {
		t.Fatalf("translation cut after a page: %v", err)
	}
	ctx := context.Background()
	li, err := a.dyn.readLayoutItem(ctx, nv.Name)
	if err != nil || li == nil || li.meta == nil || li.meta.Translating == nil || li.meta.Translating.CursorPK == nil {
		t.Fatalf("layout item after the cut: %+v %v", li, err)
	}
	if li.v != nv.Fingerprint()+dynFormat+translatingMark || li.meta.Translating.FromInc != oldInc {
		t.Fatalf("layout item after the cut: %q from %x", li.v, li.meta.Translating.FromInc)
	}
	// Corrupt, in the old incarnation, a stream tile item translated before
	// the cut.
	done := incItems(t, a, nv.Name, li.inc)
	if len(done) == 0 {
		t.Fatal("the pages before the cut wrote nothing")
	}
	var victim *dynamo.Item
	for _, it := range done {
		if it.PK[0] == dpkKey && len(it.SK) == streamSKLen {
			victim = it
			break
		}
	}
	if victim == nil {
		t.Fatal("no stream tile item translated before the cut")
	}
	head := len(viewIncPrefix(dpkKey, nv.Name, li.inc))
	bad := &dynamo.Item{PK: append(viewIncPrefix(dpkKey, old.Name, oldInc), victim.PK[head:]...), SK: victim.SK}
	bad.SetB("v", []byte{0xff, 0xff})
	bad.SetN("o", 1)
	if err := a.dyn.t.Put(ctx, bad, &dynamo.Cond{Or: []dynamo.Clause{{Attr: "o", Op: ">=", N: 0}}}); err != nil {
		t.Fatalf("corrupt %s in the old incarnation: %v", bad.Key(), err)
	}

	// Another instance of the new view: it waits while a's lease holds.
	b := openDyn(t, DynamoConfig{Table: cfg.Table})
	b.dyn.translatePoll = 50 * time.Millisecond
	b.dyn.translatePage = 20
	pages := 0
	b.dyn.testPageHook = func(int) error { pages++; return nil }
	type result struct {
		st  LayoutStatus
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		st, err := b.CheckLayoutStatus(context.Background(), nv)
		res <- result{st, err, time.Now()}
	}()
	var r result
	select {
	case r = <-res:
		t.Fatalf("the second instance went on while the translation's lease held: %+v", r)
	case <-time.After(time.Second):
	}
	if cur, err := b.dyn.readLayoutItem(ctx, nv.Name); err != nil || cur.meta.Translating == nil || cur.meta.Translating.Owner != a.dyn.owner {
		t.Fatalf("the second instance took a live translation over: %+v %v", cur, err)
	}
	r = <-res
	expires := time.UnixMilli(li.meta.Translating.Expires)
	if r.err != nil || r.st.Rebuild || r.at.Before(expires) {
		t.Fatalf("second instance: %+v err %v at %v (lease until %v)", r, r.err, r.at, expires)
	}
	if want := streamEnd(evs); r.st.Horizon != want {
		t.Fatalf("horizon %v, want %v", time.UnixMilli(r.st.Horizon), time.UnixMilli(want))
	}
	newInc, _ := b.dyn.incarnation(nv.Name)
	if newInc != li.inc {
		t.Fatalf("the takeover wrote incarnation %x, the cut translation %x", newInc, li.inc)
	}
	_, want := referenceStore(t, nv, hour)
	sameItems(t, incItems(t, b, nv.Name, newInc), want)
	t.Logf("resumed over %d pages", pages)

	// The cut instance, restarted (its lease lapsed and was taken): it
	// finds the translation done.
	if st, err := a.CheckLayoutStatus(context.Background(), nv); err != nil || !reflect.DeepEqual(st, r.st) {
		t.Fatalf("the first instance after the takeover: %+v %v", st, err)
	}
	if inc, _ := a.dyn.incarnation(nv.Name); inc != newInc {
		t.Fatal("the instances disagree on the incarnation")
	}
}

// TestDynamoLayoutTranslationLostLease: an instance whose translation was
// taken over stops at its next page instead of going on writing; a change
// of the layout while a translation is cut starts it over from the source
// incarnation.
func TestDynamoLayoutTranslationLostLease(t *testing.T) {
	_, nv, hour, cfg, _, _ := oldLayoutTable(t)

	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translatePage = 20
	a.dyn.translateLease = 2 * time.Second // its hold on the old incarnation's healing lease lapses soon
	b := openDyn(t, DynamoConfig{Table: cfg.Table})
	ctx := context.Background()
	// a's lease is taken over after its first page (b found it expired).
	a.dyn.testPageHook = func(page int) error {
		if page != 1 {
			return nil
		}
		li, err := b.dyn.readLayoutItem(ctx, nv.Name)
		if err != nil {
			return err
		}
		m := *li.meta
		tr := *m.Translating
		tr.Owner, tr.Expires = b.dyn.owner, time.Now().Add(time.Hour).UnixMilli()
		m.Translating = &tr
		_, err = b.dyn.writeLayoutItem(ctx, nv.Name, li.v, li.inc, &m, li)
		return err
	}
	if _, err := a.CheckLayoutStatus(context.Background(), nv); !errors.Is(err, errTranslationLost) {
		t.Fatalf("translation taken over: %v", err)
	}
	// Yet another layout while b holds the translation: its instance
	// waits; once b's lease is given up (expired), it translates from the
	// source incarnation.
	third := layoutView(t, tiling.Minute, fSum, fMaxY, fMax)
	c := openDyn(t, DynamoConfig{Table: cfg.Table})
	c.dyn.translatePoll = 20 * time.Millisecond
	li, _ := b.dyn.readLayoutItem(ctx, nv.Name)
	go func() {
		time.Sleep(300 * time.Millisecond)
		m := *li.meta
		tr := *m.Translating
		tr.Expires = 0
		m.Translating = &tr
		if _, err := b.dyn.writeLayoutItem(ctx, nv.Name, li.v, li.inc, &m, li); err != nil {
			t.Error(err)
		}
	}()
	st, err := c.CheckLayoutStatus(context.Background(), third)
	if err != nil || st.Rebuild {
		t.Fatalf("third layout: %+v %v", st, err)
	}
	// max_y was pending in the cut translation; max and max_y are new to
	// the source layout.
	kinds := []string{}
	for _, a := range st.Pending {
		kinds = append(kinds, a.Kind+"("+a.Column+")")
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"max(x)", "max(y)"}) {
		t.Fatalf("pending %v", kinds)
	}
	inc, _ := c.dyn.incarnation(third.Name)
	if inc == li.inc {
		t.Fatal("the third layout reused the cut translation's incarnation")
	}
	// Both incarnations before it are to collect: the cut translation's
	// target and its source.
	cur, err := c.dyn.readLayoutItem(ctx, third.Name)
	if err != nil {
		t.Fatal(err)
	}
	var listed []uint32
	for _, o := range cur.meta.Collect {
		listed = append(listed, o.Inc)
	}
	slices.Sort(listed)
	wantListed := []uint32{li.inc, li.meta.Translating.FromInc}
	slices.Sort(wantListed)
	if !slices.Equal(listed, wantListed) {
		t.Fatalf("to collect after the third layout: %08x, want %08x", listed, wantListed)
	}
	kd, err := c.ReadKey(ctx, third, "k2", hour+2*tiling.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vals := third.EvaluateBatch(hour+2*tiling.Hour, kd.Batch, kd.Records)
	// sum of x over the last day: k2's stream events (x = 2000 + i).
	var want float64
	for i := range 120 {
		want += float64(2000 + i)
	}
	if vals[0] != want {
		t.Fatalf("sum after translating from the source: %v, want %v (%v)", vals[0], want, vals)
	}
}

// TestDynamoLayoutTranslationStopsOnCancel: a translation whose context
// ends (the process asked to stop during its start) stops at once and hands
// its leases back, so another instance resumes it after its cursor without
// waiting for them to expire; an instance waiting for another's translation
// stops waiting when its context ends. The items written are those of an
// uninterrupted translation.
func TestDynamoLayoutTranslationStopsOnCancel(t *testing.T) {
	_, nv, hour, cfg, _, _ := oldLayoutTable(t)

	// a's translation is stopped after its first page; its leases would
	// hold a minute.
	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translatePage = 20
	a.dyn.translateLease = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	a.dyn.testPageHook = func(page int) error {
		if page == 1 {
			cancel()
		}
		return nil
	}
	if _, err := a.CheckLayoutStatus(ctx, nv); !errors.Is(err, context.Canceled) {
		t.Fatalf("translation stopped after its first page: %v", err)
	}
	li, err := a.dyn.readLayoutItem(context.Background(), nv.Name)
	if err != nil || li == nil || li.meta == nil || li.meta.Translating == nil || li.meta.Translating.CursorPK == nil {
		t.Fatalf("layout item after the stop: %+v %v", li, err)
	}
	if exp := time.UnixMilli(li.meta.Translating.Expires); time.Until(exp) > 0 {
		t.Fatalf("the stopped translation kept its lease until %v", exp)
	}

	// b resumes it at once, and pauses in its first page; w, waiting for
	// b's live translation, is stopped.
	b := openDyn(t, DynamoConfig{Table: cfg.Table})
	b.dyn.translatePage = 20
	b.dyn.translateLease = time.Minute
	b.dyn.translatePoll = 50 * time.Millisecond
	paused, resume := make(chan struct{}), make(chan struct{})
	b.dyn.testPageHook = func(page int) error {
		if page == 1 {
			close(paused)
			<-resume
		}
		return nil
	}
	type result struct {
		st  LayoutStatus
		err error
	}
	res := make(chan result, 1)
	began := time.Now()
	go func() {
		st, err := b.CheckLayoutStatus(context.Background(), nv)
		res <- result{st, err}
	}()
	select {
	case <-paused:
	case r := <-res:
		t.Fatalf("b: %+v", r)
	case <-time.After(20 * time.Second):
		t.Fatal("b did not resume the stopped translation within 20 s: the leases were not handed back")
	}
	w := openDyn(t, DynamoConfig{Table: cfg.Table})
	w.dyn.translatePoll = 10 * time.Second // it must not sleep through its context's end
	wctx, wcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer wcancel()
	waitBegan := time.Now()
	if _, err := w.CheckLayoutStatus(wctx, nv); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an instance waiting for a live translation, its context ended: %v", err)
	}
	if took := time.Since(waitBegan); took > 5*time.Second {
		t.Fatalf("the waiting instance took %v to stop", took)
	}
	close(resume)
	r := <-res
	if r.err != nil || r.st.Rebuild {
		t.Fatalf("b: %+v", r)
	}
	t.Logf("resumed and finished in %v", time.Since(began))
	newInc, _ := b.dyn.incarnation(nv.Name)
	if newInc != li.inc {
		t.Fatalf("b wrote incarnation %x, the stopped translation %x", newInc, li.inc)
	}
	_, want := referenceStore(t, nv, hour)
	sameItems(t, incItems(t, b, nv.Name, newInc), want)
}
