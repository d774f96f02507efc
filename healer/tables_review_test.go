package healer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tilestream/tilestream/oracle"
	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

var errInjected = errors.New("injected fault")

// faultStore is a Pebble store whose commits and table ingests fail at a
// chosen call: before the write (nothing written, as a failed write or a
// crash just before it) or after it (written and durable, but the heal is
// told it failed, as a crash just after it), or cancel the heal's context
// there (the write succeeds).
type faultStore struct {
	*state.Store
	calls  [2]int // commits, ingests
	kind   int    // the calls that fault: 0 commits, 1 ingests
	failAt int    // 1-based call of kind that faults; 0: none
	mode   int    // 0 fail before, 1 fail after, 2 cancel the context
	// late: only the calls after the days count, from the scan of the
	// previous generation's summaries on (armed): the summaries' writes,
	// the install.
	late, armed bool
	cancel      context.CancelFunc
	// What the faults hit, for the test to check it covered its cases.
	ingestedThenFailed, ingestFailed, cancelled int
}

func (f *faultStore) fault(kind int) (hit bool, mode int) {
	if f.late && !f.armed {
		return false, 0
	}
	f.calls[kind]++
	if kind != f.kind || f.calls[kind] != f.failAt {
		return false, 0
	}
	if f.mode == 2 {
		f.cancel()
	}
	return true, f.mode
}

func (f *faultStore) write(do func() error) error {
	hit, mode := f.fault(0)
	switch {
	case hit && mode == 0:
		return errInjected
	case hit && mode == 1:
		if err := do(); err != nil {
			return err
		}
		return errInjected
	}
	return do()
}

func (f *faultStore) Summaries(v *tiling.View, gen uint64, keys []string, fn func(i int, s *tiling.Summary) error) error {
	f.armed = true
	return f.Store.Summaries(v, gen, keys, fn)
}

func (f *faultStore) Commit(b *state.Batch) error {
	return f.write(func() error { return f.Store.Commit(b) })
}

func (f *faultStore) CommitNoSync(b *state.Batch) error {
	return f.write(func() error { return f.Store.CommitNoSync(b) })
}

func (f *faultStore) IngestTables(ts ...*state.Tables) error {
	hit, mode := f.fault(1)
	switch {
	case hit && mode == 0:
		// A failed ingest removes every table (IngestTables' contract).
		for _, t := range ts {
			t.Abort()
		}
		f.ingestFailed++
		return errInjected
	case hit && mode == 1:
		if err := f.Store.IngestTables(ts...); err != nil {
			return err
		}
		f.ingestedThenFailed++
		return errInjected
	case hit && mode == 2:
		f.cancelled++
	}
	return f.Store.IngestTables(ts...)
}

// fewTimes keeps every third query time (the first ones, around the
// watermark, included): the byte for byte comparison with the reference
// store checks the rest.
func fewTimes(ts []int64) []int64 {
	var some []int64
	for i := 0; i < len(ts); i += 3 {
		some = append(some, ts[i])
	}
	return some
}

// leftTables lists the files in the store's table directory.
func leftTables(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, "tilestream-tables"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestTablesHealSurvivesFaults: a heal writing every day and the summaries
// as Pebble tables (TableRecords 1, three build goroutines), failed again
// and again at random commits and ingests — before the write, just after it
// (a day's tables ingested but the day not yet recorded as done in the
// healer's state, summaries ingested before the install), or by its context
// ending while later days' tables wait built — and sometimes reopened as
// after a crash, leaves no table file behind after any attempt, and once a
// resumed heal succeeds the store is byte for byte the one an uninterrupted
// heal writing batches leaves, and serves the oracle's values; so does an
// incremental heal after it, interrupted the same way.
func TestTablesHealSurvivesFaults(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, 7 * tiling.Day, tiling.Lifetime}, tiling.MinTime)
	lateness := 5 * tiling.Minute
	now := time.Date(2026, 3, 10, 13, 37, 12, 345e6, time.UTC).UnixMilli()

	// The reference: one goroutine, batches, no fault.
	refDir := t.TempDir()
	refStore, err := state.Open(state.Config{Path: refDir}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ref := worldOn(t, refStore, v, lateness)
	ref.h.cfg.Workers, ref.h.cfg.TableRecords = 1, -1
	ref.now, ref.arch.e = now, now

	dir := t.TempDir()
	store, err := state.Open(state.Config{Path: dir}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	w := worldOn(t, store, v, lateness)
	w.h.cfg.Workers, w.h.cfg.TableRecords = 3, 1
	w.now, w.arch.e = now, now
	fs := &faultStore{Store: store}
	w.h.store = fs

	r := rand.New(rand.NewPCG(21, 22))
	events := func(n int, from, span int64, keys int) {
		var evs []tiling.Event
		var oes []oracle.Event
		for i := range n {
			key := fmt.Sprintf("k%02d", r.IntN(keys))
			if i%3 == 0 {
				key = fmt.Sprintf("hot%d", r.IntN(3))
			}
			e, o := ref.event(r, key, from+r.Int64N(span), r.Int32N(4))
			evs, oes = append(evs, e), append(oes, o)
		}
		ref.consume(evs, oes, nil)
		w.consume(evs, oes, nil)
	}
	// heal heals both worlds; w's heal fails at random calls until one
	// attempt succeeds.
	c := 0 // cycles through every kind of call, fault and position
	restarts := 0
	lateFaults := [][3]int{{1, 1, 0}, {1, 1, 1}, {0, 1, 0}, {0, 2, 0}} // kind, call, mode
	heal := func(stage string, o Options, late bool) (failed int) {
		t.Helper()
		if _, err := ref.h.Heal(context.Background(), v.Name, o); err != nil {
			t.Fatal(err)
		}
		installed := func() uint64 {
			st, err := w.h.loadState(v)
			if err != nil {
				t.Fatal(err)
			}
			return st.Gen
		}
		gen0 := installed()
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithCancel(context.Background())
			// A fault within the next few writes of a kind: each attempt
			// gets a day or two further, so faults fall on every stage (a
			// resumed day's deletion, the summaries' ingest and the install
			// included), and the attempts cycle through every kind, mode
			// and position.
			fs.calls, fs.kind, fs.failAt, fs.mode, fs.cancel = [2]int{}, c%2, 1+(c/6)%4, (c/2)%3, cancel
			fs.late, fs.armed = late, false
			if late {
				// In turn: the summaries' ingest fails before, then after
				// it; the commit of the install's intent fails; the install
				// fails (its intent recorded: the next attempt rolls it
				// forward).
				fs.kind, fs.failAt, fs.mode = 0, 0, 0
				if attempt < len(lateFaults) {
					fs.kind, fs.failAt, fs.mode = lateFaults[attempt][0], lateFaults[attempt][1], lateFaults[attempt][2]
				}
			}
			c++
			if attempt >= 60 {
				fs.failAt = 0 // let it finish
			}
			res, err := w.h.Heal(ctx, v.Name, o)
			t.Logf("%s attempt %d, table_records %d: fault at call %d of kind %d (calls %v), mode %d: generation %d, installed %v: %v", stage, attempt, w.h.cfg.TableRecords, fs.failAt, fs.kind, fs.calls, fs.mode, res.Generation, res.Installed, err)
			cancel()
			if left := leftTables(t, dir); len(left) != 0 {
				t.Fatalf("%s: attempt %d (call %d of kind %d, mode %d): %d table files left: %v (%v)", stage, attempt, fs.failAt, fs.kind, fs.mode, len(left), left, err)
			}
			if err == nil {
				// Installed by this attempt or, when an attempt failed after
				// recording the install it was about to make, finished by
				// this one's roll forward.
				if !res.Installed && installed() <= gen0 {
					t.Fatalf("%s: attempt %d ended without an install: %+v", stage, attempt, res)
				}
				return failed
			}
			if !errors.Is(err, errInjected) && !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: attempt %d: %v", stage, attempt, err)
			}
			failed++
			if installed() > gen0 {
				// The attempt failed just after its install: the heal is
				// done (a retry would heal again, into a new generation).
				return failed
			}
			if attempt%4 == 3 {
				// A restart: the process's state is gone, the store reopens.
				if err := fs.Store.Close(); err != nil {
					t.Fatal(err)
				}
				s, err := state.Open(state.Config{Path: dir}, quiet())
				if err != nil {
					t.Fatal(err)
				}
				fs.Store, w.store = s, s
				// Restarted with another healer.table_records: days an
				// attempt wrote in batches are resumed as tables over them
				// (range deletion and records in the memtable), and back.
				restarts++
				w.h.cfg.TableRecords = []int{1, 100}[restarts%2]
			}
		}
	}

	// 40 keys and 3 hot ones over 16 days.
	events(4000, now-16*tiling.Day, 16*tiling.Day, 40)
	failed := heal("full heal", Options{Full: true}, false)
	wb := tiling.AlignDown(now-lateness, v.Granularity)
	w.check("after an interrupted full heal of tables", fewTimes(queryTimes(v, wb, now+tiling.Day, r)))

	// A day later, late and new events, healed incrementally.
	now2 := now + tiling.Day + 3*tiling.Minute
	ref.now, ref.arch.e, w.now, w.arch.e = now2, now2, now2, now2
	events(1500, now-3*tiling.Day, 4*tiling.Day, 50)
	failed += heal("incremental heal", Options{}, false)
	w.check("after an interrupted incremental heal of tables", fewTimes(queryTimes(v, tiling.AlignDown(now2-lateness, v.Granularity), now2+tiling.Day, r)))

	// Another day later, an incremental heal whose faults all fall after
	// its days: on the summaries' writes and the install.
	now3 := now2 + tiling.Day
	ref.now, ref.arch.e, w.now, w.arch.e = now3, now3, now3, now3
	ingested := fs.ingestedThenFailed + fs.ingestFailed + fs.cancelled
	events(1000, now2-2*tiling.Day, 3*tiling.Day, 50)
	failed += heal("incremental heal, faults after the days", Options{}, true)
	w.check("after an incremental heal interrupted after its days", fewTimes(queryTimes(v, tiling.AlignDown(now3-lateness, v.Granularity), now3+tiling.Day, r)))
	if fs.ingestedThenFailed+fs.ingestFailed+fs.cancelled == ingested {
		t.Fatal("no fault on the summaries' ingest")
	}
	if failed < 6 || fs.ingestedThenFailed == 0 || fs.ingestFailed == 0 || fs.cancelled == 0 {
		t.Fatalf("faults: %d attempts failed, %d ingests failed after ingesting, %d before, %d cancelled at an ingest: the test no longer covers its cases",
			failed, fs.ingestedThenFailed, fs.ingestFailed, fs.cancelled)
	}
	t.Logf("%d attempts failed; ingests: %d failed after ingesting, %d before, %d cancelled", failed, fs.ingestedThenFailed, fs.ingestFailed, fs.cancelled)

	// Byte for byte the reference store, but for the days' file
	// fingerprints in the healer's state.
	for _, s := range []*state.Store{refStore, fs.Store} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	k1, v1 := dumpPebble(t, refDir)
	k2, v2 := dumpPebble(t, dir)
	if len(k1) < 1000 || len(k1) != len(k2) {
		t.Fatalf("%d entries in the reference store, %d in the interrupted one", len(k1), len(k2))
	}
	for i := range k1 {
		if bytes.Equal(k1[i], k2[i]) && bytes.HasPrefix(k1[i], []byte{8}) && bytes.HasSuffix(k1[i], []byte(v.Name)) {
			if !sameState(t, v1[i], v2[i]) {
				t.Fatalf("healer states differ:\nreference %s\ninterrupted %s", v1[i], v2[i])
			}
			continue
		}
		if !bytes.Equal(k1[i], k2[i]) || !bytes.Equal(v1[i], v2[i]) {
			t.Fatalf("entry %d differs:\nreference %q = %x\ninterrupted %q = %x", i, k1[i], v1[i], k2[i], v2[i])
		}
	}
}

// TestTablesResumedDayWithChangedFiles: a day whose tables were ingested
// by an interrupted heal (not yet recorded as done) and whose files then
// change — a user file rewritten with fewer keys — is rebuilt by the resumed
// heal: the range deletion of the day goes before its new tables, so no
// record of a key the day no longer has is left, and the store is byte for
// byte the one a heal of the final files writes in batches.
func TestTablesResumedDayWithChangedFiles(t *testing.T) {
	v := testView(t, tiling.Minute, []int64{tiling.Hour, tiling.Day, tiling.Lifetime}, tiling.MinTime)
	lateness := 5 * tiling.Minute
	now := time.Date(2026, 3, 10, 13, 37, 12, 0, time.UTC).UnixMilli()
	open := func(tables int) (*world, string) {
		dir := t.TempDir()
		store, err := state.Open(state.Config{Path: dir}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		w := worldOn(t, store, v, lateness)
		w.h.cfg.Workers, w.h.cfg.TableRecords = 2, tables
		w.now, w.arch.e = now, now
		return w, dir
	}
	ref, refDir := open(-1)
	w, dir := open(1)
	fs := &faultStore{Store: w.store}
	w.h.store = fs

	r := rand.New(rand.NewPCG(31, 32))
	var evs []tiling.Event
	var oes []oracle.Event
	for range 800 {
		e, o := ref.event(r, fmt.Sprintf("k%02d", r.IntN(20)), now-4*tiling.Day+r.Int64N(4*tiling.Day), r.Int32N(2))
		evs, oes = append(evs, e), append(oes, o)
	}
	ref.consume(evs, oes, nil)
	w.consume(evs, oes, nil)
	// A user file on the first day: 60 keys, later rewritten with 6.
	day := tiling.AlignDown(now-4*tiling.Day, tiling.Day)
	lines := func(keys int) []map[string]any {
		var ls []map[string]any
		for i := range 3 * keys {
			ls = append(ls, map[string]any{"user_id": fmt.Sprintf("u%02d", i%keys), "ts": float64(day + int64(i)*7*tiling.Minute), "amount": float64(i)})
		}
		return ls
	}
	w.dropJSONL("fix.jsonl", day, lines(60))
	ref.dropJSONL("fix.jsonl", day, lines(6))
	if _, err := ref.h.Heal(context.Background(), v.Name, Options{Full: true}); err != nil {
		t.Fatal(err)
	}

	// The first day's tables are ingested, then the heal fails before the
	// day is recorded as done.
	fs.kind, fs.failAt, fs.mode = 1, 1, 1
	if _, err := w.h.Heal(context.Background(), v.Name, Options{Full: true}); !errors.Is(err, errInjected) || fs.ingestedThenFailed != 1 {
		t.Fatalf("interrupted heal: %v (%d ingested and failed)", err, fs.ingestedThenFailed)
	}
	if r, err := w.store.DayRecord(v, 1, day, "u59"); err != nil || r == nil {
		t.Fatalf("the first day was not ingested before the fault: %v, %v", r, err)
	}
	w.dropJSONL("fix.jsonl", day, lines(6))
	w.events = ref.events // the oracle's events: the final files'
	fs.failAt = 0
	res, err := w.h.Heal(context.Background(), v.Name, Options{Full: true})
	if err != nil || !res.Installed || res.Generation != 1 {
		t.Fatalf("resumed heal: %+v, %v", res, err)
	}
	if r, err := w.store.DayRecord(v, 1, day, "u59"); err != nil || r != nil {
		t.Fatalf("a key the rebuilt day no longer has kept its day record: %v, %v", r, err)
	}
	w.check("after the resumed heal", fewTimes(queryTimes(v, tiling.AlignDown(now-lateness, v.Granularity), now+tiling.Day, r)))

	for _, s := range []*state.Store{ref.store, fs.Store} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	k1, v1 := dumpPebble(t, refDir)
	k2, v2 := dumpPebble(t, dir)
	if len(k1) < 100 || len(k1) != len(k2) {
		t.Fatalf("%d entries in the reference store, %d in the resumed one", len(k1), len(k2))
	}
	for i := range k1 {
		if bytes.Equal(k1[i], k2[i]) && bytes.HasPrefix(k1[i], []byte{8}) && bytes.HasSuffix(k1[i], []byte(v.Name)) {
			if !sameState(t, v1[i], v2[i]) {
				t.Fatalf("healer states differ:\nreference %s\nresumed %s", v1[i], v2[i])
			}
			continue
		}
		if !bytes.Equal(k1[i], k2[i]) || !bytes.Equal(v1[i], v2[i]) {
			t.Fatalf("entry %d differs:\nreference %q = %x\nresumed %q = %x", i, k1[i], v1[i], k2[i], v2[i])
		}
	}
}
