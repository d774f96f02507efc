package main

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReviewLayoutChangeRebuildStarts: after a view's layout changes, the
// service rebuilds it from the offline log before starting the ingest. The
// rebuild heal runs with the ingest as its archive, whose SyncArchive
// answers ErrNotRunning until the ingest's client exists: the rebuild
// fails and the service exits, on every restart.
func TestReviewLayoutChangeRebuildStarts(t *testing.T) {
	e := newEnv(t)
	g := newGen(11, e)
	keys := g.keys(20)
	evs := g.regular(keys, 500)
	p := startInProcess(t, e.cfgPath)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rand.New(rand.NewPCG(1, 1)), 500); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}

	// A new feature: another layout.
	cfg := e.config() + "      - {name: extra_var_2h, function: var_pop, column: amount, window: 2h}\n"
	if !strings.HasSuffix(e.config(), "}\n") {
		t.Fatal("unexpected config shape")
	}
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := startInProcess(t, e.cfgPath)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := p2.alive(); err != nil {
			t.Fatalf("the service exited after a layout change: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
