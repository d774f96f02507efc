package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// The collection tests' views: "txn" changes; "txn2", whose name extends
// it, stays. Their partition keys begin alike up to the name's length byte.
func collectView(t *testing.T, name string, g int64, features ...tiling.Feature) *tiling.View {
	t.Helper()
	v, err := tiling.NewView(tiling.View{Name: name, Topic: "t", Entity: "k", Timestamp: "ts", Granularity: g, Features: features})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tableItems returns every item of the table, by pk/sk.
func tableItems(t *testing.T, s *Store) map[string]*dynamo.Item {
	t.Helper()
	out := map[string]*dynamo.Item{}
	err := s.dyn.t.ScanPrefixes(context.Background(), nil, nil, 0, func(items []*dynamo.Item, _ *dynamo.Key) error {
		for _, it := range items {
			out[fmt.Sprintf("%x/%x", it.PK, it.SK)] = it
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ofInc reports whether an item's pk is one of view's incarnation inc,
// spelled out here as docs/format.md gives it (kind · str(view) · u32be(inc)),
// independently of the store's code.
func ofInc(it *dynamo.Item, view string, inc uint32) bool {
	for _, kind := range []byte{1, 2, 3, 4} {
		p := append([]byte{kind, byte(len(view))}, view...)
		p = binary.BigEndian.AppendUint32(p, inc)
		if bytes.HasPrefix(it.PK, p) {
			return true
		}
	}
	return false
}

func isLayoutOf(it *dynamo.Item, view string) bool {
	return bytes.Equal(it.PK, append([]byte{5, byte(len(view))}, view...))
}

// checkCollected compares the table after a collection of view's
// incarnation inc with before: no item of inc is left, every other item is
// byte-identical and there is no new one, apart from the view's layout
// partition (its layout item and the collection's progress items), which
// it returns. It returns too how many items of inc there were, by kind.
func checkCollected(t *testing.T, stage string, before, after map[string]*dynamo.Item, view string, inc uint32) (map[byte]int, []*dynamo.Item) {
	t.Helper()
	kinds := map[byte]int{}
	var layout []*dynamo.Item
	for k, it := range before {
		if isLayoutOf(it, view) {
			continue
		}
		got, ok := after[k]
		switch {
		case ofInc(it, view, inc):
			kinds[it.PK[0]]++
			if ok {
				t.Errorf("%s: item %s of the collected incarnation is still there", stage, k)
			}
		case !ok:
			t.Errorf("%s: item %s (not of the collected incarnation) was deleted", stage, k)
		case !reflect.DeepEqual(got.Bin, it.Bin) || !reflect.DeepEqual(got.Num, it.Num):
			t.Errorf("%s: item %s changed", stage, k)
		}
	}
	for k, it := range after {
		if isLayoutOf(it, view) {
			layout = append(layout, it)
			continue
		}
		if _, ok := before[k]; !ok {
			t.Errorf("%s: new item %s", stage, k)
		}
	}
	return kinds, layout
}

// sameTable fails when the tables differ in any item.
func sameTable(t *testing.T, stage string, got, want map[string]*dynamo.Item) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d items, before %d", stage, len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || !reflect.DeepEqual(g.Bin, w.Bin) || !reflect.DeepEqual(g.Num, w.Num) {
			t.Errorf("%s: item %s deleted or changed", stage, k)
		}
	}
}

func toCollect(t *testing.T, s *Store, view string) []dynOldInc {
	t.Helper()
	li, err := s.dyn.readLayoutItem(context.Background(), view)
	if err != nil || li == nil || li.meta == nil {
		t.Fatalf("layout item of %s: %+v %v", view, li, err)
	}
	return li.meta.Collect
}

// collectSetup writes "txn" (the old layout) and "txn2" with the layout
// tests' data, and returns the old and new layouts of "txn": other features
// (translated), or with rebuild, the same ones and a lifetime start
// (rebuilt).
func collectSetup(t *testing.T, s *Store, hour int64, rebuild bool) (old, nv *tiling.View) {
	t.Helper()
	old = collectView(t, "txn", tiling.Minute, fCount, fSum, fLast)
	nv = collectView(t, "txn", tiling.Minute, fLast, fSum, fMaxY)
	if rebuild {
		var err error
		nv, err = tiling.NewView(tiling.View{Name: "txn", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: tiling.Minute,
			LifetimeStart: tiling.AlignDown(hour-30*tiling.Day, tiling.Day), Features: []tiling.Feature{fCount, fSum, fLast}})
		if err != nil {
			t.Fatal(err)
		}
	}
	ext := collectView(t, "txn2", tiling.Minute, fCount, fSum, fLast)
	for _, v := range []*tiling.View{old, ext} {
		if st, err := s.CheckLayoutStatus(context.Background(), v); err != nil || st.Rebuild {
			t.Fatalf("first check of %s: %+v %v", v.Name, st, err)
		}
		fillDynLayout(t, s, v, hour)
	}
	return old, nv
}

// TestDynamoCollectTranslatedIncarnation: after a translation, the old
// incarnation is listed to collect with the flip's time; before the grace
// period nothing is deleted; after it, every item of the old incarnation
// (all four kinds) is deleted and nothing else — the new incarnation's items
// and those of txn2, whose name extends the view's, are byte-identical —
// the entry and the progress item are gone, the served values unchanged,
// and the metric counts the items.
func TestDynamoCollectTranslatedIncarnation(t *testing.T) {
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	cfg := dynTable(t)
	cfg.RollupShare = 1
	s := openDyn(t, cfg)
	old, nv := collectSetup(t, s, hour, false)
	oldInc, _ := s.dyn.incarnation(old.Name)

	n := openDyn(t, DynamoConfig{Table: cfg.Table})
	flip := time.Now()
	if st, err := n.CheckLayoutStatus(context.Background(), nv); err != nil || st.Rebuild {
		t.Fatalf("translation: %+v %v", st, err)
	}
	newInc, _ := n.dyn.incarnation(nv.Name)
	list := toCollect(t, n, nv.Name)
	if len(list) != 1 || list[0].Inc != oldInc || list[0].Since < flip.UnixMilli() || list[0].Since > time.Now().UnixMilli() {
		t.Fatalf("after the translation, to collect: %+v (old incarnation %08x)", list, oldInc)
	}
	before := tableItems(t, n)
	values := evaluate(t, n, nv, hour)
	ctx := context.Background()

	// Before the grace period: nothing.
	for _, at := range []time.Time{time.Now(), time.UnixMilli(list[0].Since).Add(incarnationGrace - time.Second)} {
		if err := n.CollectIncarnations(ctx, nv.Name, at); err != nil {
			t.Fatal(err)
		}
		sameTable(t, "before the grace period", tableItems(t, n), before)
	}
	if got := testutil.ToFloat64(n.dyn.m.incDeleted); got != 0 {
		t.Fatalf("%v items deleted before the grace period", got)
	}

	// After it.
	if err := n.CollectIncarnations(ctx, nv.Name, time.UnixMilli(list[0].Since).Add(incarnationGrace)); err != nil {
		t.Fatal(err)
	}
	kinds, layout := checkCollected(t, "after the collection", before, tableItems(t, n), nv.Name, oldInc)
	for _, k := range []byte{dpkKey, dpkView, dpkGenKeys, dpkDayKeys} {
		if kinds[k] == 0 {
			t.Errorf("no item of kind %02x in the old incarnation (%v): the test needs every kind", k, kinds)
		}
	}
	total := kinds[dpkKey] + kinds[dpkView] + kinds[dpkGenKeys] + kinds[dpkDayKeys]
	if len(layout) != 1 || !bytes.Equal(layout[0].SK, dskLay) {
		t.Fatalf("the view's layout partition holds %d items after the collection (progress items left?)", len(layout))
	}
	if l := toCollect(t, n, nv.Name); len(l) != 0 {
		t.Fatalf("still to collect: %+v", l)
	}
	if inc, _ := n.Incarnation(nv.Name); inc != newInc {
		t.Fatalf("incarnation %08x after the collection, want %08x", inc, newInc)
	}
	if got := testutil.ToFloat64(n.dyn.m.incDeleted); got != float64(total) {
		t.Fatalf("metric: %v items deleted, the old incarnation had %d", got, total)
	}
	if got := evaluate(t, n, nv, hour); !reflect.DeepEqual(got, values) {
		t.Fatalf("served after the collection\n%v\nbefore\n%v", got, values)
	}
	// Nothing more to do.
	after := tableItems(t, n)
	if err := n.CollectIncarnations(ctx, nv.Name, time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sameTable(t, "collected again", tableItems(t, n), after)
}

// TestDynamoCollectRebuiltIncarnation: a change of lifetime start rebuilds
// into a new incarnation; the old one is collected after the grace period
// even while the rebuild runs (the layout item is left alone then, and the
// rebuild finishes), its entry removed afterwards.
func TestDynamoCollectRebuiltIncarnation(t *testing.T) {
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	cfg := dynTable(t)
	cfg.RollupShare = 1
	s := openDyn(t, cfg)
	old, nv := collectSetup(t, s, hour, true)
	oldInc, _ := s.dyn.incarnation(old.Name)

	n := openDyn(t, DynamoConfig{Table: cfg.Table})
	if st, err := n.CheckLayoutStatus(context.Background(), nv); err != nil || !st.Rebuild {
		t.Fatalf("a change of lifetime start: %+v %v", st, err)
	}
	newInc, _ := n.dyn.incarnation(nv.Name)
	list := toCollect(t, n, nv.Name)
	if len(list) != 1 || list[0].Inc != oldInc {
		t.Fatalf("after the rebuild's start, to collect: %+v (old incarnation %08x)", list, oldInc)
	}
	// The rebuild writes the new incarnation.
	fillDynLayout(t, n, nv, hour)
	before := tableItems(t, n)
	values := evaluate(t, n, nv, hour)
	layoutBefore, _ := n.dyn.readLayoutItem(context.Background(), nv.Name)
	ctx := context.Background()
	if err := n.CollectIncarnations(ctx, nv.Name, time.UnixMilli(list[0].Since).Add(incarnationGrace-time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	sameTable(t, "before the grace period", tableItems(t, n), before)

	due := time.UnixMilli(list[0].Since).Add(incarnationGrace)
	if err := n.CollectIncarnations(ctx, nv.Name, due); err != nil {
		t.Fatal(err)
	}
	kinds, layout := checkCollected(t, "collected while rebuilding", before, tableItems(t, n), nv.Name, oldInc)
	if kinds[dpkKey] == 0 || kinds[dpkView] == 0 || kinds[dpkGenKeys] == 0 || kinds[dpkDayKeys] == 0 {
		t.Fatalf("old incarnation's items by kind: %v", kinds)
	}
	if len(layout) != 2 {
		t.Fatalf("while the rebuild runs, the layout partition holds %d items, want the layout item and the progress (done)", len(layout))
	}
	if li, _ := n.dyn.readLayoutItem(ctx, nv.Name); li.ver != layoutBefore.ver {
		t.Fatal("the collection wrote the layout item while the rebuild ran")
	}
	if err := n.FinishRebuild(nv); err != nil {
		t.Fatalf("finish the rebuild: %v", err)
	}
	if err := n.CollectIncarnations(ctx, nv.Name, due); err != nil {
		t.Fatal(err)
	}
	after := tableItems(t, n)
	if _, layout := checkCollected(t, "entry removed", before, after, nv.Name, oldInc); len(layout) != 1 {
		t.Fatalf("the layout partition holds %d items after the entry's removal", len(layout))
	}
	if l := toCollect(t, n, nv.Name); len(l) != 0 {
		t.Fatalf("still to collect: %+v", l)
	}
	if inc, _ := n.Incarnation(nv.Name); inc != newInc {
		t.Fatalf("incarnation %08x, want %08x", inc, newInc)
	}
	if got := evaluate(t, n, nv, hour); !reflect.DeepEqual(got, values) {
		t.Fatalf("served after the collection\n%v\nbefore\n%v", got, values)
	}
}

// cutAPI fails the BatchWriteItem call numbered failAt (from 1), calls
// cancel once call cancelAt is done and records the start key of every
// Scan.
type cutAPI struct {
	dynamo.API
	batches  atomic.Int64
	failAt   atomic.Int64
	mu       sync.Mutex
	cancelAt int64
	cancel   context.CancelFunc
	starts   []string
}

var errCut = errors.New("cut")

func (c *cutAPI) BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	n := c.batches.Add(1)
	if n == c.failAt.Load() {
		return nil, errCut
	}
	out, err := c.API.BatchWriteItem(ctx, in, o...)
	c.mu.Lock()
	if n == c.cancelAt {
		c.cancel()
	}
	c.mu.Unlock()
	return out, err
}

func (c *cutAPI) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	c.mu.Lock()
	start := ""
	if pk, ok := in.ExclusiveStartKey[dynamo.AttrPK].(*types.AttributeValueMemberB); ok {
		start = fmt.Sprintf("%x", pk.Value)
	}
	c.starts = append(c.starts, start)
	c.mu.Unlock()
	return c.API.(interface {
		Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	}).Scan(ctx, in, o...)
}

// TestDynamoCollectResumes: a collection cut by a failed BatchWriteItem, by
// a cancelled context after a page and mid-page, each time leaves the
// current incarnation and the other view untouched and the cursor
// recorded; the next round resumes at that cursor (by another instance
// too) and finishes.
func TestDynamoCollectResumes(t *testing.T) {
	c := translatedToCollect(t)
	cfg, s, nv, hour, oldInc, before, due := c.cfg, c.s, c.nv, c.hour, c.oldInc, c.before, c.due
	values := evaluate(t, s, nv, hour)

	api := &cutAPI{}
	acfg := DynamoConfig{Table: cfg.Table}
	acfg.Table.Wrap = func(a dynamo.API) dynamo.API { api.API = a; return api }
	a := openDyn(t, acfg)
	a.dyn.translatePage = 20

	progress := func() *dynamo.Item {
		t.Helper()
		it, err := s.dyn.t.Get(context.Background(), layoutPK(nv.Name), collectSK(oldInc))
		if err != nil || it == nil {
			t.Fatalf("progress item after a cut: %v %v", it, err)
		}
		return it
	}
	// cursor is the one recorded by the last cut: the next round's first
	// scan starts after it.
	var cursor []byte
	checkResumed := func(stage string, st *cutAPI, firstScan int) {
		t.Helper()
		if cursor == nil {
			return
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if firstScan >= len(st.starts) || st.starts[firstScan] != fmt.Sprintf("%x", cursor) {
			t.Fatalf("%s: the round did not resume after the recorded cursor (scans %v)", stage, st.starts[firstScan:])
		}
	}
	cuts := []struct {
		name string
		run  func() error
	}{
		{"a BatchWriteItem fails", func() error {
			api.failAt.Store(api.batches.Load() + 3)
			defer api.failAt.Store(0)
			return a.CollectIncarnations(context.Background(), nv.Name, due)
		}},
		{"the context ends after a page", func() error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a.dyn.testPageHook = func(page int) error {
				if page == 2 {
					cancel()
				}
				return nil
			}
			defer func() { a.dyn.testPageHook = nil }()
			return a.CollectIncarnations(ctx, nv.Name, due)
		}},
		{"the context ends mid-page", func() error {
			// After a page's deletes, before its cursor is recorded.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			api.mu.Lock()
			api.cancelAt, api.cancel = api.batches.Load()+2, cancel
			api.mu.Unlock()
			return a.CollectIncarnations(ctx, nv.Name, due)
		}},
	}
	for _, c := range cuts {
		api.mu.Lock()
		first := len(api.starts)
		api.mu.Unlock()
		err := c.run()
		if err == nil {
			t.Fatalf("%s: the collection finished (the cut came too late for the test)", c.name)
		}
		checkResumed(c.name, api, first)
		after := tableItems(t, s)
		for k, it := range before {
			if isLayoutOf(it, nv.Name) || ofInc(it, nv.Name, oldInc) {
				continue
			}
			if got, ok := after[k]; !ok || !reflect.DeepEqual(got.Bin, it.Bin) || !reflect.DeepEqual(got.Num, it.Num) {
				t.Fatalf("%s: item %s, not of the old incarnation, deleted or changed", c.name, k)
			}
		}
		p := progress()
		if p.B(attrColPK) == nil || bytes.Equal(p.B(attrColPK), cursor) {
			t.Fatalf("%s: no new cursor recorded (%x)", c.name, p.B(attrColPK))
		}
		cursor = p.B(attrColPK)
		if len(toCollect(t, s, nv.Name)) != 1 {
			t.Fatalf("%s: the entry went", c.name)
		}
	}
	// Another instance resumes (a's lease was given up with its error)
	// after the cursor and finishes.
	bapi := &cutAPI{}
	bcfg := DynamoConfig{Table: cfg.Table}
	bcfg.Table.Wrap = func(x dynamo.API) dynamo.API { bapi.API = x; return bapi }
	b := openDyn(t, bcfg)
	b.dyn.translatePage = 20
	if err := b.CollectIncarnations(context.Background(), nv.Name, due); err != nil {
		t.Fatal(err)
	}
	checkResumed("the other instance", bapi, 0)
	checkCollected(t, "after the resumed collection", before, tableItems(t, s), nv.Name, oldInc)
	if l := toCollect(t, s, nv.Name); len(l) != 0 {
		t.Fatalf("still to collect: %+v", l)
	}
	if got := evaluate(t, s, nv, hour); !reflect.DeepEqual(got, values) {
		t.Fatalf("served after the collection\n%v\nbefore\n%v", got, values)
	}
}

// TestDynamoCollectRace: two instances collecting at once: one deletes,
// the other finds the lease held (or the entry gone) and deletes nothing;
// an instance that tries while another holds the lease mid-way does not
// touch the table.
func TestDynamoCollectRace(t *testing.T) {
	hour := tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour
	cfg := dynTable(t)
	cfg.RollupShare = 1
	s := openDyn(t, cfg)
	old, nv := collectSetup(t, s, hour, false)
	oldInc, _ := s.dyn.incarnation(old.Name)
	if _, err := s.CheckLayoutStatus(context.Background(), nv); err != nil {
		t.Fatal(err)
	}
	before := tableItems(t, s)
	oldItems := 0
	for _, it := range before {
		if ofInc(it, nv.Name, oldInc) {
			oldItems++
		}
	}
	due := time.UnixMilli(toCollect(t, s, nv.Name)[0].Since).Add(incarnationGrace)
	a := openDyn(t, DynamoConfig{Table: cfg.Table})
	b := openDyn(t, DynamoConfig{Table: cfg.Table})
	a.dyn.translatePage, b.dyn.translatePage = 40, 40
	// b tries while a holds the lease, after a's first page.
	var mid map[string]*dynamo.Item
	a.dyn.testPageHook = func(page int) error {
		if page != 1 {
			return nil
		}
		mid = tableItems(t, s)
		prog, _ := s.dyn.t.Get(context.Background(), layoutPK(nv.Name), collectSK(oldInc))
		if err := b.CollectIncarnations(context.Background(), nv.Name, due); err != nil {
			t.Errorf("b while a collects: %v", err)
		}
		sameTable(t, "b while a holds the lease", tableItems(t, s), mid)
		if again, _ := s.dyn.t.Get(context.Background(), layoutPK(nv.Name), collectSK(oldInc)); !reflect.DeepEqual(again, prog) {
			t.Errorf("b changed a's progress: %+v, was %+v", again, prog)
		}
		return nil
	}
	if err := a.CollectIncarnations(context.Background(), nv.Name, due); err != nil {
		t.Fatal(err)
	}
	if mid == nil {
		t.Fatal("a collected in one page: the test needs several")
	}
	checkCollected(t, "after a's collection", before, tableItems(t, s), nv.Name, oldInc)
	if da, db := testutil.ToFloat64(a.dyn.m.incDeleted), testutil.ToFloat64(b.dyn.m.incDeleted); da != float64(oldItems) || db != 0 {
		t.Fatalf("a deleted %v, b %v items; the old incarnation had %d", da, db, oldItems)
	}

	// Both at once, on another change: exactly one deletes each item.
	third := collectView(t, "txn", tiling.Minute, fSum, fMaxY, fMax)
	if _, err := s.CheckLayoutStatus(context.Background(), third); err != nil {
		t.Fatal(err)
	}
	before = tableItems(t, s)
	list := toCollect(t, s, third.Name)
	if len(list) != 1 {
		t.Fatalf("to collect: %+v", list)
	}
	prevInc := list[0].Inc
	n := 0
	for _, it := range before {
		if ofInc(it, third.Name, prevInc) {
			n++
		}
	}
	c := openDyn(t, DynamoConfig{Table: cfg.Table})
	d := openDyn(t, DynamoConfig{Table: cfg.Table})
	c.dyn.translatePage, d.dyn.translatePage = 40, 40
	due = time.UnixMilli(list[0].Since).Add(incarnationGrace)
	var wg sync.WaitGroup
	for _, x := range []*Store{c, d} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := x.CollectIncarnations(context.Background(), third.Name, due); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkCollected(t, "after the race", before, tableItems(t, s), third.Name, prevInc)
	dc, dd := testutil.ToFloat64(c.dyn.m.incDeleted), testutil.ToFloat64(d.dyn.m.incDeleted)
	if dc+dd != float64(n) || (dc != 0 && dd != 0) {
		t.Fatalf("the racing instances deleted %v and %v items; the incarnation had %d", dc, dd, n)
	}
	if l := toCollect(t, s, third.Name); len(l) != 0 {
		t.Fatalf("still to collect: %+v", l)
	}
}

// collectCase is a table whose view was translated, its old incarnation
// listed for collection.
type collectCase struct {
	cfg    DynamoConfig
	s      *Store
	nv     *tiling.View
	hour   int64
	oldInc uint32
	before map[string]*dynamo.Item // the table's items after the translation
	due    time.Time               // when the old incarnation may be collected
}

func translatedToCollect(t *testing.T) collectCase {
	t.Helper()
	c := collectCase{hour: tiling.AlignDown(time.Now().UnixMilli(), tiling.Hour) - 3*tiling.Hour, cfg: dynTable(t)}
	c.cfg.RollupShare = 1
	c.s = openDyn(t, c.cfg)
	var old *tiling.View
	old, c.nv = collectSetup(t, c.s, c.hour, false)
	c.oldInc, _ = c.s.dyn.incarnation(old.Name)
	if st, err := c.s.CheckLayoutStatus(context.Background(), c.nv); err != nil || st.Rebuild {
		t.Fatalf("translation: %+v %v", st, err)
	}
	c.before = tableItems(t, c.s)
	c.due = time.UnixMilli(toCollect(t, c.s, c.nv.Name)[0].Since).Add(incarnationGrace)
	return c
}

// TestDynamoCollectPaced: a collection scans at most CollectRate items per
// second (a page of translatePage items at a time, the first at once), and
// still deletes every item of the old incarnation and nothing else.
func TestDynamoCollectPaced(t *testing.T) {
	c := translatedToCollect(t)
	cfg, s, nv, oldInc, before, due := c.cfg, c.s, c.nv, c.oldInc, c.before, c.due

	a := openDyn(t, DynamoConfig{Table: cfg.Table, CollectRate: MinCollectRate})
	if a.dyn.collectRate != MinCollectRate {
		t.Fatalf("collect rate %d, configured %d", a.dyn.collectRate, MinCollectRate)
	}
	a.dyn.translatePage = 40 // 0.4 s a page at 100 items/s
	pages := 0
	a.dyn.testPageHook = func(page int) error { pages = page; return nil }
	began := time.Now()
	if err := a.CollectIncarnations(context.Background(), nv.Name, due); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	// pages counts the pages before the last: each waited for the next.
	if pages < 3 {
		t.Fatalf("the scan had %d pages: the test needs more", pages+1)
	}
	if least := time.Duration(pages) * 40 * time.Second / MinCollectRate; took < least*9/10 {
		t.Fatalf("%d pages of 40 items in %v: faster than %d items/s allow (%v)", pages+1, took, MinCollectRate, least)
	}
	t.Logf("%d pages in %v", pages+1, took)
	checkCollected(t, "after a paced collection", before, tableItems(t, s), nv.Name, oldInc)
	if err := (DynamoConfig{Table: cfg.Table, CollectRate: MinCollectRate - 1}).Validate(); err == nil {
		t.Fatal("a collect rate under MinCollectRate was accepted")
	}
}
