package state

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// translationLog is what a Pebble layout translation logged: the start
// lines' resumed flags, progress lines and the end line, in order.
func translationLog(t *testing.T, logged *bytes.Buffer) (starts []bool, progress int, order []string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		switch msg, _ := rec["msg"].(string); msg {
		case "translating the view's records to its new layout; the service starts once they are done":
			resumed, ok := rec["resumed"].(bool)
			if !ok || rec["view"] != "v" {
				t.Errorf("start line %q: want the view and resumed", l)
			}
			starts = append(starts, resumed)
			order = append(order, "start")
		case "translating the view's records to its new layout":
			progress++
			order = append(order, "progress")
		case "view records translated to the new layout":
			order = append(order, "end")
		}
	}
	return starts, progress, order
}

// TestTranslationLogsItsStart pins caf20fc: a layout translation on Pebble
// logs when it starts, saying whether it resumes one a stop cut, and when
// it ends; its progress lines come at most every translateLogEvery, not
// one per batch (6,000 records, three batches, done well under 10 s
// here).
func TestTranslationLogsItsStart(t *testing.T) {
	t0 := int64(1_760_000_000_000)
	old := layoutView(t, tiling.Minute, fCount, fSum, fLast)
	nv := layoutView(t, tiling.Minute, fSum, fMax)

	t.Run("fresh", func(t *testing.T) {
		s := layoutStore(t, old, 1000, t0)
		var logged bytes.Buffer
		s.log = slog.New(slog.NewJSONHandler(&logged, nil))
		start := time.Now()
		if _, err := s.CheckLayoutStatus(context.Background(), nv); err != nil {
			t.Fatal(err)
		}
		starts, progress, order := translationLog(t, &logged)
		if time.Since(start) >= translateLogEvery {
			t.Logf("the translation took %v: progress lines allowed", time.Since(start))
			progress, order = 0, slices.DeleteFunc(order, func(s string) bool { return s == "progress" })
		}
		if len(starts) != 1 || starts[0] || progress != 0 || strings.Join(order, " ") != "start end" {
			t.Fatalf("logged starts %v (resumed), %d progress lines, in order %v; want one start, not resumed, no progress line, then the end", starts, progress, order)
		}
	})

	t.Run("resumed after a stop", func(t *testing.T) {
		s := layoutStore(t, old, 1000, t0)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.CheckLayoutStatus(ctx, nv); err == nil {
			t.Fatal("a translation with its context ended: no error")
		}
		var logged bytes.Buffer
		s.log = slog.New(slog.NewJSONHandler(&logged, nil))
		// Stopped after its first batch, as a crash would.
		m, _, _, err := s.readLayout("v")
		if err != nil || m.Translating == nil {
			t.Fatalf("layout after the stop: %+v, %v", m, err)
		}
		tr, err := tiling.NewTranslator(old.Layout(), nv)
		if err != nil {
			t.Fatal(err)
		}
		if done, err := s.translateSome(nv, tr, &m, []byte{prefixRecord}); err != nil || done {
			t.Fatalf("first batch: done %v, %v", done, err)
		}
		start := time.Now()
		if _, err := s.CheckLayoutStatus(context.Background(), nv); err != nil {
			t.Fatal(err)
		}
		starts, progress, order := translationLog(t, &logged)
		if time.Since(start) >= translateLogEvery {
			t.Logf("the translation took %v: progress lines allowed", time.Since(start))
			progress, order = 0, slices.DeleteFunc(order, func(s string) bool { return s == "progress" })
		}
		if len(starts) != 1 || !starts[0] || progress != 0 || strings.Join(order, " ") != "start end" {
			t.Fatalf("logged starts %v (resumed), %d progress lines, in order %v; want one start, resumed, no progress line, then the end", starts, progress, order)
		}
	})
}
