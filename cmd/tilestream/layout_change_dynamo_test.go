package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/internal/dynalite"
	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
	"github.com/tilestream/tilestream/tiling"
)

// TestDynamoFeatureChangeEndToEnd is TestFeatureChangeEndToEnd on DynamoDB
// (dynalite): the view's items are translated into a new incarnation at
// start.
func TestDynamoFeatureChangeEndToEnd(t *testing.T) {
	featureChangeEndToEnd(t, newDynamoEnv(t, nil))
}

// TestLayoutWatchStopsAnInstanceOfTheOldView: an instance whose view another
// instance, started with a changed view, moved to a new layout stops (its
// ingest would reach only the old layout's items); one whose layout stays
// goes on.
func TestLayoutWatchStopsAnInstanceOfTheOldView(t *testing.T) {
	tc := dynamo.DefaultConfig()
	tc.Table, tc.Endpoint, tc.Region = fmt.Sprintf("watch-%d-%d", os.Getpid(), dynTables.Add(1)), dynalite.Shared(t).Endpoint, "us-east-1"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func() *state.Store {
		s, err := state.OpenDynamo(context.Background(), state.DynamoConfig{Table: tc, CreateTable: true}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	view := func(features ...tiling.Feature) *tiling.View {
		v, err := tiling.NewView(tiling.View{Name: "v", Topic: "t", Entity: "k", Timestamp: "ts", Granularity: tiling.Minute, Features: features})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	count := tiling.Feature{Name: "n", Function: tiling.Count, Window: tiling.Hour}
	sum := tiling.Feature{Name: "s", Function: tiling.Sum, Column: "x", Window: tiling.Hour}
	old, nv := view(count), view(count, sum)
	watch := func(s *state.Store, v *tiling.View) (<-chan error, context.CancelFunc) {
		if _, err := s.CheckLayoutStatus(context.Background(), v); err != nil {
			t.Fatal(err)
		}
		ls := &layouts{store: s, log: log, views: map[string]*viewLayout{v.Name: {v: v}}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ls.watch(ctx, 50*time.Millisecond) }()
		return done, cancel
	}
	a, cancelA := watch(open(), old)
	defer cancelA()
	a2, cancelA2 := watch(open(), old) // another instance of the same view
	select {
	case err := <-a:
		t.Fatalf("the watch returned with the layout unchanged: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	b, cancelB := watch(open(), nv) // the changed view: translated
	defer cancelB()
	for _, c := range []<-chan error{a, a2} {
		select {
		case err := <-c:
			if !errors.Is(err, errLayoutMoved) {
				t.Fatalf("watch of the old view: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an instance of the old view went on after the change")
		}
	}
	select {
	case err := <-b:
		t.Fatalf("the new view's watch returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancelB()
	if err := <-b; err != nil {
		t.Fatalf("the watch at the end: %v", err)
	}
	cancelA2()
}

// TestDynamoOldIncarnationCollectedEndToEnd: after a change of features
// (the event counts dropped: translated), the collection the healer's run
// loop makes once the grace period has passed (run here as the loop would,
// with its clock an hour on) deletes every item of the old incarnation and
// changes no other item; the service restarted on the table serves every
// feature as the oracle computes it.
func TestDynamoOldIncarnationCollectedEndToEnd(t *testing.T) {
	e := newDynamoEnv(t, nil)
	g := newGen(23, e)
	keys := g.keys(25)
	evs := g.regular(keys, 1500)
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rand.New(rand.NewPCG(3, 3)), 500); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	if code, _, body, err := e.call(http.MethodPost, "/v1/heal", "application/json", []byte(`{}`)); err != nil || code != http.StatusOK {
		t.Fatalf("POST /v1/heal: %d %s %v", code, body, err)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	s := e.openStore(t)
	defer s.Close()
	oldInc, err := s.Incarnation(testView)
	if err != nil {
		t.Fatal(err)
	}

	var lines []string
	for _, l := range strings.SplitAfter(e.config(), "\n") {
		if !strings.Contains(l, "{name: events_") {
			lines = append(lines, l)
		}
	}
	if err := os.WriteFile(e.cfgPath, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	ov := oracle.View{Granularity: testGran, LifetimeStart: e.lifetimeStart}
	for _, f := range testFeatures {
		if !strings.HasPrefix(f.name, "events_") {
			ov.Features = append(ov.Features, oracle.Feature{Name: f.name, Function: f.function, Column: f.column, Window: f.ms})
		}
	}
	events := byKey(t, evs)
	p2 := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p2.alive)
	if n := checkOracle(t, ov, e.queryAll(t, keys, keys[:3]), events); n > 0 {
		t.Fatalf("%d features differ from the oracle after the change", n)
	}
	if err := p2.stop(t); err != nil {
		t.Fatal(err)
	}
	newInc, err := s.Incarnation(testView)
	if err != nil || newInc == oldInc {
		t.Fatalf("incarnation %08x after the change, %08x before (%v)", newInc, oldInc, err)
	}

	// The table's items by pk/sk; oldOf reports the old incarnation's, by
	// their keys as docs/format.md gives them: kind · str(view) · u32be(inc).
	items := func() map[string]*dynamo.Item {
		t.Helper()
		out := map[string]*dynamo.Item{}
		err := s.Table().ScanPrefixes(context.Background(), nil, nil, 0, func(page []*dynamo.Item, _ *dynamo.Key) error {
			for _, it := range page {
				out[fmt.Sprintf("%x/%x", it.PK, it.SK)] = it
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	oldOf := func(it *dynamo.Item) bool {
		for _, kind := range []byte{1, 2, 3, 4} {
			p := binary.BigEndian.AppendUint32(append([]byte{kind, byte(len(testView))}, testView...), oldInc)
			if bytes.HasPrefix(it.PK, p) {
				return true
			}
		}
		return false
	}
	layoutPK := append([]byte{5, byte(len(testView))}, testView...)
	before := items()
	nOld := 0
	for _, it := range before {
		if oldOf(it) {
			nOld++
		}
	}
	if nOld == 0 {
		t.Fatal("no item of the old incarnation before the collection")
	}
	if err := s.CollectIncarnations(context.Background(), testView, time.Now()); err != nil {
		t.Fatal(err)
	}
	if after := items(); len(after) != len(before) {
		t.Fatalf("the collection ran before the grace period: %d items, %d before", len(after), len(before))
	}
	if err := s.CollectIncarnations(context.Background(), testView, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	after := items()
	for k, it := range before {
		got, ok := after[k]
		switch {
		case bytes.Equal(it.PK, layoutPK):
		case oldOf(it):
			if ok {
				t.Errorf("item %s of the old incarnation left", k)
			}
		case !ok || !reflect.DeepEqual(got.Bin, it.Bin) || !reflect.DeepEqual(got.Num, it.Num):
			t.Errorf("item %s, not of the old incarnation, deleted or changed", k)
		}
	}
	if len(after) != len(before)-nOld {
		t.Fatalf("%d items after the collection, %d before of which %d of the old incarnation", len(after), len(before), nOld)
	}
	t.Logf("%d items of the old incarnation deleted, %d left in the table", nOld, len(after))

	p3 := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p3.alive)
	if n := checkOracle(t, ov, e.queryAll(t, keys, keys[:3]), events); n > 0 {
		t.Fatalf("%d features differ from the oracle after the collection", n)
	}
}
