package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tilestream/tilestream/internal/dynalite"
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
		if _, err := s.CheckLayoutStatus(v); err != nil {
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
