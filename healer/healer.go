package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// Store is what the healer needs from the online store.
type Store interface {
	NewBatch() *state.Batch
	Commit(b *state.Batch) error
	CommitNoSync(b *state.Batch) error
	Meta(view string) ([]byte, int64, error)
	Summaries(v *tiling.View, gen uint64, keys []string, fn func(i int, s *tiling.Summary) error) error
	ScanKeys(view string, gen uint64, fn func(key string) error) error
	DayRecord(v *tiling.View, gen uint64, day int64, key string) (*tiling.Record, error)
	ScanDayRecords(v *tiling.View, gen uint64, day int64, fn func(key string, r *tiling.Record) error) error
	DetailSuffix(v *tiling.View, gen uint64, day int64, key string, block, from int64) ([]tiling.State, error)
	CollectKeys(v *tiling.View, gen uint64, fn func(key string) error) error
	ArchiveProgress(view string) (map[int32]state.Progress, error)
	// NewTables returns nil when the store takes no tables (DynamoDB).
	NewTables(v *tiling.View, gen uint64) *state.Tables
	IngestTables(ts ...*state.Tables) error
	ArchivePending(view string) (map[int32]int64, error)
	StreamLayout() state.StreamLayout
	AcquireLease(view, owner string, now time.Time, d time.Duration) error
	ReleaseLease(view, owner string) error
}

// OfflineLog is the offline log as the healer reads it.
type OfflineLog interface {
	Days(view string) ([]state.DayFiles, error)
	ReadFiles(v *tiling.View, eventIDField string, d state.DayFiles, fn func(e *tiling.Event) error, bad func(file string, row int64, reason string)) (state.ReadStats, error)
	ReadDay(v *tiling.View, eventIDField string, date int64, fn func(e *tiling.Event) error, bad func(file string, row int64, reason string)) (state.ReadStats, error)
}

// Archive makes the ingest's consumed events durable in the offline log and
// reports the archive's event-time watermark E (DESIGN.md). Nil when no
// ingest runs (a command-line heal): then E comes from the stored archive
// progress alone.
type Archive interface {
	SyncArchive(ctx context.Context, view string) (int64, error)
}

// ViewConfig is a view with its healing settings.
type ViewConfig struct {
	View *tiling.View
	// Lateness (ms): the watermark stays this far behind now.
	Lateness int64
	// HealEvery is the period of scheduled heals, ms.
	HealEvery int64
}

// Healer heals views: it recomputes their batch layout from the offline log
// and installs it behind each key's head. See doc.go.
type Healer struct {
	cfg     Config
	views   map[string]ViewConfig
	order   []string
	store   Store
	offline OfflineLog
	archive Archive
	m       *Metrics
	log     *slog.Logger
	now     func() time.Time

	// OnInstall, when set, is called after a heal switched a view's heads
	// (the ingest drops the heads it cached).
	OnInstall func(view string)
	// Reader, when set, lets scheduled heals be followed by a sampled
	// consistency check (Config.VerifySample keys).
	Reader KeyReader

	locks map[string]*sync.Mutex // one heal of a view at a time

	// logBad bounds the rate of log lines about malformed offline-log rows.
	logBad rate.Sometimes

	// ownArena is how many of a day's events a key has before it gets an
	// arena of its own in a build (the const ownArena; tests change it to
	// check that the choice changes no stored byte).
	ownArena int
	// summaryChunk is summaryChunk (tests make it small, so that a few
	// keys span several chunks).
	summaryChunk int
}

// New builds a Healer; it starts nothing (see Run).
func New(cfg Config, views []ViewConfig, store Store, offline OfflineLog, archive Archive, m *Metrics, log *slog.Logger) (*Healer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultConfig().Lease
	}
	if cfg.Owner == "" {
		cfg.Owner = defaultOwner()
	}
	h := &Healer{cfg: cfg, views: map[string]ViewConfig{}, store: store, offline: offline,
		archive: archive, m: m, log: log, now: time.Now, locks: map[string]*sync.Mutex{},
		logBad: rate.Sometimes{First: 10, Interval: time.Second}, ownArena: ownArena, summaryChunk: summaryChunk}
	for _, vc := range views {
		h.views[vc.View.Name] = vc
		h.order = append(h.order, vc.View.Name)
		h.locks[vc.View.Name] = &sync.Mutex{}
		m.start(vc.View.Name)
	}
	return h, nil
}

// defaultOwner names this process: host, pid and a random suffix (a
// restarted process is a new owner).
func defaultOwner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32())
}

// Views returns the names of the views the healer heals.
func (h *Healer) Views() []string { return append([]string(nil), h.order...) }

// viewState is what the healer keeps per view between heals (stored as JSON
// under the view's meta key).
type viewState struct {
	Gen       uint64 `json:"gen"`
	Watermark int64  `json:"watermark"`
	FirstDay  int64  `json:"first_day"`
	// Days are the healed day spans: their generation and the fingerprint
	// of their offline-log files when healed.
	Days map[int64]dayState `json:"days"`
	// Garbage waits for the grace period before deletion.
	Garbage []garbage `json:"garbage,omitempty"`
	// Fingerprint is the view layout the state belongs to.
	Fingerprint string `json:"fingerprint"`
	// HealedAt is when the last heal was installed (unix ms).
	HealedAt int64 `json:"healed_at"`
	// Pending is a heal that wrote day records but was interrupted before
	// it installed: the next heal with the same target resumes it.
	Pending *pending `json:"pending,omitempty"`
	// Next is the state an install in progress leads to: written before the
	// first head switches, it lets the next heal finish an install a crash
	// interrupted (switch the remaining heads) instead of touching a
	// generation some heads already name (rollForward).
	Next *viewState `json:"next,omitempty"`

	// ver is the stored version this state was read at (Store.Meta).
	ver int64
}

type pending struct {
	Gen    uint64 `json:"gen"`
	Target int64  `json:"target"`
	Full   bool   `json:"full"`
	// Done are the day spans whose records of Gen are written, with the
	// fingerprint of their files then.
	Done map[int64]uint64 `json:"done"`
}

type dayState struct {
	Gen uint64 `json:"gen"`
	FP  uint64 `json:"fp"`
}

type garbage struct {
	Due int64 `json:"due"` // unix ms
	// SummaryGen: delete every summary of this generation (0: none).
	SummaryGen uint64 `json:"summary_gen,omitempty"`
	// Days: delete the day and detail records of these (day, gen) pairs.
	Days []dayGen `json:"days,omitempty"`
	// StreamBefore: delete every key's stream records starting before it
	// (MinTime: none).
	StreamBefore int64 `json:"stream_before"`
}

type dayGen struct {
	Day int64  `json:"day"`
	Gen uint64 `json:"gen"`
}

func (h *Healer) loadState(v *tiling.View) (*viewState, error) {
	val, ver, err := h.store.Meta(v.Name)
	if err != nil {
		return nil, err
	}
	st := &viewState{Watermark: tiling.MinTime, Days: map[int64]dayState{}, Fingerprint: v.Fingerprint(), ver: ver}
	if val == nil {
		return st, nil
	}
	if err := json.Unmarshal(val, st); err != nil {
		return nil, fmt.Errorf("healer state of %s: %w", v.Name, err)
	}
	if st.Days == nil {
		st.Days = map[int64]dayState{}
	}
	return st, nil
}

// Result summarises one heal.
type Result struct {
	View string `json:"view"`
	// Installed is false when nothing changed (no new closed range, no
	// changed files): then no served bit changes.
	Installed bool `json:"installed"`
	// Watermark is the view's batch watermark after the heal; zero (and
	// left out of the JSON) while the archive holds nothing to heal.
	Watermark  time.Time `json:"batch_watermark,omitzero"`
	Generation uint64    `json:"generation"`
	DaysHealed int       `json:"days_healed"`
	Keys       int       `json:"keys"`
	Records    int       `json:"records_written"`
	Events     int64     `json:"events_read"`
	Files      int64     `json:"files_read"`
	BadRows    int64     `json:"bad_rows"`
	BadFiles   int64     `json:"bad_files"`
	Duplicates int64     `json:"duplicates"`
	// Tiles counts the tiles of the days built (one per key and tile with
	// events): the writes a tile-per-record layout would have needed for
	// the same data. Days written before an interruption are not counted
	// again when the heal resumes.
	Tiles   int     `json:"tiles"`
	Seconds float64 `json:"seconds"`
}

// Options change one heal.
type Options struct {
	// Full recomputes every day from the offline log instead of only the
	// changed and newly closed ones.
	Full bool
	// From, when not zero, skips offline-log days before it (a backfill of
	// part of the history); To, when not zero, caps the new watermark.
	From, To int64
	// Progress, when set, is called after each day span is written.
	Progress func(Progress)
	// Rebuild also rebuilds the stream records of the view from W_b′ on
	// out of the archived Kafka events (after a layout change wiped them),
	// each record noting the highest offset per partition it holds so the
	// ingest's replay from its committed offsets skips them. The ingest
	// must not run during a rebuild.
	Rebuild bool
	// Wait, while another instance holds the view's healing lease, waits
	// for it (until ctx ends) instead of failing with ErrBusy.
	Wait bool
}

// Progress reports a running heal.
type Progress struct {
	Days, DaysTotal   int
	Bytes, BytesTotal int64
	Events            int64
	Keys              int
}

// ErrUnknownView is returned for a view the healer does not know.
var ErrUnknownView = errors.New("healer: unknown view")

// ErrBusy is returned when another instance holds the view's healing lease.
var ErrBusy = errors.New("healer: another instance is healing the view")

// ErrLeaseLost is returned by a heal that lost its lease before installing.
var ErrLeaseLost = errors.New("healer: lease lost during the heal")

// Heal heals one view now and returns when the result is installed.
func (h *Healer) Heal(ctx context.Context, view string, o Options) (Result, error) {
	vc, ok := h.views[view]
	if !ok {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownView, view)
	}
	mu := h.locks[view]
	mu.Lock()
	defer mu.Unlock()
	l, err := h.lease(ctx, view, o.Wait)
	if err != nil {
		return Result{View: view}, err
	}
	defer l.release()
	ctx = l.ctx
	start := time.Now()
	res, err := h.heal(ctx, vc, o, l)
	res.View, res.Seconds = view, time.Since(start).Seconds()
	outcome := "installed"
	switch {
	case err != nil:
		outcome = "error"
	case !res.Installed:
		outcome = "unchanged"
	}
	h.m.runs.WithLabelValues(view, outcome).Inc()
	h.m.duration.WithLabelValues(view).Observe(res.Seconds)
	if err != nil {
		return res, err
	}
	if err := h.collect(vc.View, false); err != nil {
		h.log.Warn("garbage collection", "view", view, "err", err)
	}
	return res, nil
}

func (h *Healer) heal(ctx context.Context, vc ViewConfig, o Options, l *lease) (Result, error) {
	v := vc.View
	var res Result
	st, err := h.loadState(v)
	if err != nil {
		return res, err
	}
	if st, err = h.rollForward(v, st, l); err != nil {
		return res, err
	}
	if st.Fingerprint != v.Fingerprint() {
		// The layout changed since the last heal: rebuild everything.
		o.Full = true
	}
	now := h.now().UnixMilli()
	e := now
	if h.archive != nil {
		if e, err = h.archive.SyncArchive(ctx, v.Name); err != nil {
			return res, fmt.Errorf("sync archive: %w", err)
		}
	} else if e, err = h.storedArchiveWatermark(v); err != nil {
		return res, err
	}
	target := tiling.AlignDown(min(now-vc.Lateness, e), v.Granularity)
	if o.To != 0 && o.To < target {
		target = tiling.AlignDown(o.To, v.Granularity)
	}
	if target < st.Watermark {
		target = st.Watermark // a watermark never moves back
	}
	// Resume an interrupted heal of the same kind: keep its target so the
	// day records it wrote stay valid.
	resume := st.Pending
	if resume != nil && resume.Full == o.Full && resume.Target >= st.Watermark && resume.Target <= target && resume.Gen > st.Gen {
		target = resume.Target
	} else {
		resume = nil
	}
	res.Generation = st.Gen
	if target == tiling.MinTime {
		return res, nil // the archive holds nothing yet: no watermark
	}
	res.Watermark = time.UnixMilli(target).UTC()
	D := v.DaySpan()
	firstDay := tiling.AlignDown(target-maxWindow(v), D)
	if maxWindow(v) == 0 {
		firstDay = tiling.AlignDown(target, D)
	}

	// The day spans to recompute: changed files, the range newly closed
	// since the last heal, and every span on a full heal.
	days, err := h.offline.Days(v.Name)
	if err != nil {
		return res, fmt.Errorf("list offline log: %w", err)
	}
	// Read only what the archive held when it was sampled: files that rolls
	// write while this heal runs (their first offset at or past the sampled
	// progress) wait for the next heal, which sees them as changed.
	archived, err := h.store.ArchiveProgress(v.Name)
	if err != nil {
		return res, err
	}
	days = sampled(days, archived)
	spanFiles := map[int64][]state.DayFiles{}
	for _, d := range days {
		s := tiling.AlignDown(d.Date, D)
		spanFiles[s] = append(spanFiles[s], d)
	}
	var todo []int64
	fps := map[int64]uint64{}
	for s, dfs := range spanFiles {
		var fp uint64
		for _, d := range dfs {
			fp = fp*31 + d.Fingerprint()
		}
		fps[s] = fp
		// Days before lifetime_start matter only to windows, which never
		// start before firstDay.
		beforeLife := v.LifetimeStart != tiling.MinTime && s+D <= v.LifetimeStart && s+D <= firstDay
		if s >= target || beforeLife || (o.From != 0 && s+D <= o.From) {
			continue
		}
		old, healed := st.Days[s]
		if o.Full || !healed || old.FP != fp || (target > st.Watermark && s+D > st.Watermark && s < target) {
			todo = append(todo, s)
		}
	}
	for s := range st.Days {
		if _, ok := spanFiles[s]; !ok {
			todo = append(todo, s) // its files are gone: heal it empty
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i] < todo[j] })
	if target == st.Watermark && len(todo) == 0 && st.Fingerprint == v.Fingerprint() {
		return res, nil
	}

	gen := st.Gen + 1
	resumed := resume != nil
	if resume != nil {
		gen = resume.Gen
		h.log.Info("resuming an interrupted heal", "view", v.Name, "generation", gen, "days_done", len(resume.Done))
	} else {
		// A new generation: forget any interrupted one (its records become
		// garbage) and record this one as pending.
		if st.Pending != nil && st.Pending.Gen > st.Gen {
			gen = st.Pending.Gen + 1
			st.Garbage = append(st.Garbage, pendingGarbage(st.Pending, h.now()))
		}
		resume = &pending{Gen: gen, Target: target, Full: o.Full, Done: map[int64]uint64{}}
	}
	st.Pending = resume
	// Claim the generation before writing any of its records: the state's
	// conditional write fails if another instance changed it since it was
	// read, so no two heals ever write one generation.
	w := h.newWriter()
	if err := h.putState(w, v, st); err != nil {
		return res, err
	}
	if err := w.flush(); err != nil {
		return res, err
	}
	res.Generation = gen
	totals := map[string]map[int64][]tiling.State{} // key → day → total
	recomputed := map[int64]bool{}
	var stats state.ReadStats
	prog := Progress{DaysTotal: len(todo)}
	for _, s := range todo {
		for _, d := range spanFiles[s] {
			for _, f := range d.Files {
				prog.BytesTotal += f.Size
			}
		}
	}
	// Days to build from the offline log (not written before an
	// interruption) are read and aggregated on several goroutines; this one
	// writes them in order, exactly as if it had built them itself.
	var builds []int64
	for _, s := range todo {
		if fp, done := resume.Done[s]; !done || fp != fps[s] {
			builds = append(builds, s)
		}
	}
	bad := newBadReport(h, v.Name)
	defer bad.summarize()
	free := &arenas{v: v}
	nextBuilt, stopBuilds := h.buildDays(ctx, builds, func(s int64, stopped *atomic.Bool) *builtDay {
		return h.buildDay(v, gen, s, target, spanFiles[s], free, stopped, bad.add)
	})
	defer stopBuilds()
	for _, s := range todo {
		recomputed[s] = true
		if fp, done := resume.Done[s]; done && fp == fps[s] {
			// Written before the interruption: read its totals back.
			if err := h.store.ScanDayRecords(v, gen, s, func(key string, r *tiling.Record) error {
				t := v.NewStates()
				for i := range r.Tiles {
					tiling.MergeStates(t, r.Tiles[i].States)
				}
				if totals[key] == nil {
					totals[key] = map[int64][]tiling.State{}
				}
				totals[key][s] = t
				return nil
			}); err != nil {
				return res, err
			}
			prog.Days++
			continue
		}
		if resumed {
			// An interrupted attempt may have written part of this day
			// under this generation: start it clean.
			w.batch().DeleteDay(v.Name, gen, s)
		}
		built, err := nextBuilt()
		if err != nil {
			return res, err
		}
		stats.Add(built.stats)
		if built.tables != nil {
			// Encoded by the build; a resumed day's deletion goes first.
			if err := w.ingest(built.tables); err != nil {
				return res, err
			}
		}
		for i, key := range built.keys {
			kd := built.kds[i]
			if built.tables == nil {
				for _, det := range kd.details {
					w.batch().PutDetailBytes(v, gen, s, key, det.block, det.val)
				}
				w.batch().PutDayRecordBytes(v, gen, s, key, kd.day)
				if err := w.wrote(1 + len(kd.details)); err != nil {
					return res, err
				}
			}
			if totals[key] == nil {
				totals[key] = map[int64][]tiling.State{}
			}
			totals[key][s] = kd.total
			res.Tiles += kd.tiles
		}
		// The day's records and its place in the pending heal are durable
		// together: an interruption from here on resumes after this day.
		resume.Done[s] = fps[s]
		if err := h.putState(w, v, st); err != nil {
			return res, err
		}
		if err := w.flush(); err != nil {
			return res, err
		}
		// The day's records are written and committed (a DynamoDB batch
		// keeps the bytes of day records until then): their memory is free.
		free.putDay(built.mem)
		prog.Days++
		prog.Events = stats.Events
		prog.Bytes = stats.Bytes
		prog.Keys = len(totals)
		if o.Progress != nil {
			o.Progress(prog)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
	}
	res.Events, res.Files, res.BadRows, res.BadFiles, res.Duplicates = stats.Events, stats.Files, stats.BadRows, stats.BadFiles, stats.Duplicates
	h.m.eventsRead.WithLabelValues(v.Name).Add(float64(stats.Events))
	h.m.filesRead.WithLabelValues(v.Name).Add(float64(stats.Files))

	if o.Rebuild {
		n, err := h.rebuildStream(v, target, spanFiles, w)
		if err != nil {
			return res, err
		}
		h.log.Info("stream records rebuilt from the offline log", "view", v.Name, "from", time.UnixMilli(target).UTC(), "records", n)
	}

	// Day generations after this heal.
	newDays := map[int64]dayState{}
	for s, d := range st.Days {
		newDays[s] = d
	}
	for s := range recomputed {
		if _, has := spanFiles[s]; has {
			newDays[s] = dayState{Gen: gen, FP: fps[s]}
		} else {
			delete(newDays, s)
		}
	}
	// A recomputed day before the first day changes history that Base
	// holds: rebuild Base from every old day record.
	rebuildBase := o.Full
	for s := range recomputed {
		if s < firstDay {
			rebuildBase = true
		}
	}

	// Summaries: every key of the previous generation and every key with
	// new data, in the store's key order (Pebble tables take summaries in
	// it). The previous summaries are read a chunk of keys at a time: a
	// heal holds the keys, not every key's summary.
	var oldKeys []string
	if st.Gen > 0 {
		if err := h.store.ScanKeys(v.Name, st.Gen, func(key string) error {
			oldKeys = append(oldKeys, key)
			return nil
		}); err != nil {
			return res, fmt.Errorf("keys of generation %d: %w", st.Gen, err)
		}
	}
	keys := unionKeys(oldKeys, totals)
	oldKeys = nil
	spans := make([]int64, 0, len(newDays))
	for s := range newDays {
		spans = append(spans, s)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i] < spans[j] })
	var sums *state.Tables
	if h.useTables(len(keys)) {
		sums = h.store.NewTables(v, gen)
	}
	// Summaries are computed on the build goroutines a chunk of keys at a
	// time and written in key order.
	chunk := make([]*tiling.Summary, 0, h.summaryChunk)
	old := make([]*tiling.Summary, 0, h.summaryChunk)
	for lo := 0; lo < len(keys); lo += h.summaryChunk {
		part := keys[lo:min(lo+h.summaryChunk, len(keys))]
		chunk = chunk[:len(part)]
		old = old[:len(part)]
		clear(old)
		if st.Gen > 0 {
			if err := h.store.Summaries(v, st.Gen, part, func(i int, s *tiling.Summary) error {
				old[i] = s
				return nil
			}); err != nil {
				if sums != nil {
					sums.Abort()
				}
				return res, fmt.Errorf("read summaries: %w", err)
			}
		}
		var g errgroup.Group
		g.SetLimit(h.workers())
		for i, key := range part {
			g.Go(func() error {
				sum, err := h.summary(v, key, old[i], totals[key], newDays, spans, recomputed, firstDay, target, rebuildBase)
				chunk[i] = sum
				return err
			})
		}
		if err := g.Wait(); err != nil {
			if sums != nil {
				sums.Abort()
			}
			return res, err
		}
		for i, key := range part {
			if sums != nil {
				sums.PutSummary(v, key, chunk[i])
				continue
			}
			w.batch().PutSummary(v, gen, key, chunk[i])
			if err := w.wrote(1); err != nil {
				return res, err
			}
		}
	}
	if sums != nil {
		if err := w.ingest(sums); err != nil {
			return res, err
		}
	} else if err := w.flush(); err != nil {
		return res, err
	}
	// The superseded records become garbage once no read can still use
	// them: after the grace period.
	g := garbage{Due: h.now().Add(h.cfg.Grace).UnixMilli(), StreamBefore: v.RecordStart(target)}
	if st.Gen > 0 {
		g.SummaryGen = st.Gen
	}
	for s := range recomputed {
		if d, ok := st.Days[s]; ok {
			g.Days = append(g.Days, dayGen{Day: s, Gen: d.Gen})
		}
	}
	sortDays(g.Days)
	newState := &viewState{Gen: gen, Watermark: target, FirstDay: firstDay, Days: newDays,
		Garbage: append(st.Garbage, g), Fingerprint: v.Fingerprint(), HealedAt: h.now().UnixMilli()}
	res.Events = stats.Events
	// Install. First the state records the install it is about to make
	// (Next); then every key's head switches to the new generation and the
	// state becomes the new one. On Pebble the heads and the state are one
	// atomic batch; on DynamoDB each head is its own conditional write and
	// the state comes last, so a crash can leave some heads switched: the
	// next heal then finds Next and finishes the install (rollForward)
	// before anything else, never rewriting a generation a head names.
	// Everything the heads point to is durable already.
	if err := l.check(); err != nil {
		return res, err
	}
	st.Next = newState
	if err := h.putState(w, v, st); err != nil {
		return res, err
	}
	if err := w.flush(); err != nil {
		return res, err
	}
	newState.ver = st.ver
	if err := l.check(); err != nil {
		return res, err
	}
	if err := h.install(v, newState, keys, w); err != nil {
		return res, err
	}
	res.Installed, res.DaysHealed, res.Keys, res.Records = true, len(todo), len(keys), w.records
	res.Watermark = time.UnixMilli(target).UTC()
	h.m.keysWritten.WithLabelValues(v.Name).Add(float64(len(keys)))
	h.m.recordsWritten.WithLabelValues(v.Name).Add(float64(w.records))
	h.m.tilesWritten.WithLabelValues(v.Name).Add(float64(res.Tiles))
	h.m.watermark.WithLabelValues(v.Name).Set(float64(target) / 1000)
	h.log.Info("heal installed", "view", v.Name, "generation", gen, "batch_watermark", res.Watermark,
		"days", len(todo), "keys", len(keys), "events", stats.Events, "records", w.records)
	if h.OnInstall != nil {
		h.OnInstall(v.Name)
	}
	return res, nil
}

// storedArchiveWatermark is E without a running ingest: the smallest, over
// the partitions with archive progress, of the largest event time archived
// (MinTime when nothing is archived). Events still in Kafka may be older, so
// this is the conservative choice. A view whose offline log holds only files
// dropped in by users (no archive progress) heals up to now.
func (h *Healer) storedArchiveWatermark(v *tiling.View) (int64, error) {
	prog, err := h.store.ArchiveProgress(v.Name)
	if err != nil {
		return 0, err
	}
	if len(prog) == 0 {
		return h.now().UnixMilli(), nil
	}
	e := int64(math.MaxInt64)
	for _, p := range prog {
		e = min(e, p.MaxEventTime)
	}
	// Instances running the ingest against a shared store publish the
	// oldest event they consumed and have not archived yet.
	pending, err := h.store.ArchivePending(v.Name)
	if err != nil {
		return 0, err
	}
	for _, ts := range pending {
		e = min(e, ts)
	}
	return e, nil
}

// unionKeys returns the keys of old (a previous generation's, without
// repeats) and of totals, each once, in the store's key order.
func unionKeys(old []string, totals map[string]map[int64][]tiling.State) []string {
	fresh := make([]string, 0, len(totals))
	for k := range totals {
		fresh = append(fresh, k)
	}
	slices.SortFunc(old, state.KeyCompare) // Pebble lists them in this order already
	slices.SortFunc(fresh, state.KeyCompare)
	keys := make([]string, 0, max(len(old), len(fresh)))
	i, j := 0, 0
	for i < len(old) || j < len(fresh) {
		switch {
		case j == len(fresh) || (i < len(old) && state.KeyCompare(old[i], fresh[j]) < 0):
			keys = append(keys, old[i])
			i++
		case i == len(old) || state.KeyCompare(fresh[j], old[i]) < 0:
			keys = append(keys, fresh[j])
			j++
		default:
			keys = append(keys, old[i])
			i, j = i+1, j+1
		}
	}
	return keys
}

// summary assembles one key's summary for a heal.
// summaryChunk is how many keys' summaries a heal reads, computes (in
// parallel) and writes at once.
const summaryChunk = 1024

func (h *Healer) summary(v *tiling.View, key string, old *tiling.Summary, totals map[int64][]tiling.State,
	days map[int64]dayState, spans []int64, recomputed map[int64]bool, firstDay, target int64, rebuildBase bool) (*tiling.Summary, error) {
	s := &tiling.Summary{Watermark: target, FirstDay: firstDay}
	total := func(d int64) ([]tiling.State, error) {
		if recomputed[d] {
			return totals[d], nil
		}
		if old == nil {
			// Every key with data in a healed day has a summary from then
			// on: without one, the key had nothing in the old days.
			return nil, nil
		}
		if old != nil {
			if sd := old.Day(d); sd != nil {
				return sd.Total, nil
			}
			if d >= old.FirstDay {
				return nil, nil // no data that day
			}
		}
		// A day before the old summary's first day: its total is in its
		// day record.
		ds, ok := days[d]
		if !ok {
			return nil, nil
		}
		r, err := h.store.DayRecord(v, ds.Gen, d, key)
		if err != nil || r == nil {
			return nil, err
		}
		t := v.NewStates()
		for i := range r.Tiles {
			tiling.MergeStates(t, r.Tiles[i].States)
		}
		return t, nil
	}
	// lifeTotal is a day's contribution to Base: the part of the day from
	// lifetime_start on (days entirely before it count only for windows).
	lifeTotal := func(d int64) ([]tiling.State, error) {
		life := v.LifetimeStart
		if life == tiling.MinTime || d >= life {
			return total(d)
		}
		if d+v.DaySpan() <= life {
			return nil, nil
		}
		ds, ok := days[d]
		if !ok {
			return nil, nil
		}
		r, err := h.store.DayRecord(v, ds.Gen, d, key)
		if err != nil || r == nil {
			return nil, err
		}
		acc := v.NewStates()
		block := tiling.AlignDown(life, v.Span())
		for i := range r.Tiles {
			if t := &r.Tiles[i]; t.Start > block || (t.Start == block && life == block) {
				tiling.MergeStates(acc, t.States)
			}
		}
		if block != life {
			if only, single := r.SingleTile(block); single {
				if only >= life {
					for i := range r.Tiles {
						if r.Tiles[i].Start == block {
							tiling.MergeStates(acc, r.Tiles[i].States)
						}
					}
				}
			} else {
				st, err := h.store.DetailSuffix(v, ds.Gen, d, key, block, life)
				if err != nil {
					return nil, err
				}
				if st != nil {
					tiling.MergeStates(acc, st)
				}
			}
		}
		return acc, nil
	}
	addBase := func(states []tiling.State) {
		if states == nil {
			return
		}
		if s.Base == nil {
			s.Base = v.NewStates()
		}
		tiling.MergeStates(s.Base, states)
	}
	if !rebuildBase && old != nil {
		// Incremental: the old Base plus the days that left the window.
		addBase(old.Base)
		for _, d := range spans {
			if d >= old.FirstDay && d < firstDay {
				t, err := lifeTotal(d)
				if err != nil {
					return nil, err
				}
				addBase(t)
			}
		}
	} else {
		for _, d := range spans {
			if d < firstDay {
				t, err := lifeTotal(d)
				if err != nil {
					return nil, err
				}
				addBase(t)
			}
		}
	}
	for _, d := range spans {
		if d < firstDay || d >= target {
			continue
		}
		t, err := total(d)
		if err != nil {
			return nil, err
		}
		if t != nil {
			s.Days = append(s.Days, tiling.SummaryDay{Start: d, Gen: days[d].Gen, Total: t})
		}
	}
	return s, nil
}

// rebuildStream writes stream records for the archived Kafka events at or
// after target. Events from users' files are not stream events: like any
// offline-only event, a later heal counts them once it covers their time.
func (h *Healer) rebuildStream(v *tiling.View, target int64, spanFiles map[int64][]state.DayFiles, w *writer) (int, error) {
	// A unit per record span with every partition's events on Pebble; per
	// tile and partition on DynamoDB (state.StreamLayout).
	lay := h.store.StreamLayout()
	type rid struct {
		key   string
		start int64
		part  int32
	}
	recs := map[rid]*tiling.Record{}
	maxOff := map[rid]map[int32]int64{}
	for s, dfs := range spanFiles {
		if s+v.DaySpan() <= target {
			continue
		}
		for _, d := range dfs {
			if _, err := h.offline.ReadFiles(v, v.EventID, d, func(e *tiling.Event) error {
				if e.TS < target || e.Pos.Partition < 0 {
					return nil
				}
				id := rid{strings.Clone(e.Key), lay.UnitStart(v, e.TS), -1}
				if lay.PerPartition {
					id.part = e.Pos.Partition
				}
				r := recs[id]
				if r == nil {
					r = &tiling.Record{Start: v.RecordStart(e.TS)}
					recs[id] = r
					maxOff[id] = map[int32]int64{}
				}
				v.Aggregate(r, e)
				if o, ok := maxOff[id][e.Pos.Partition]; !ok || e.Pos.Offset > o {
					maxOff[id][e.Pos.Partition] = e.Pos.Offset
				}
				return nil
			}, func(string, int64, string) {}); err != nil {
				return 0, fmt.Errorf("rebuild stream records of %s: %w", v.Name, err)
			}
		}
	}
	for id, r := range recs {
		for p, o := range maxOff[id] {
			r.MarkApplied(tiling.Pos{Partition: p, Offset: o})
		}
		w.batch().PutRecordIf(v, id.key, id.start, id.part, r, state.Unconditional)
		if err := w.wrote(1); err != nil {
			return 0, err
		}
	}
	return len(recs), w.flush()
}

// sampled drops the archive files a roll wrote after the progress prog was
// sampled.
func sampled(days []state.DayFiles, prog map[int32]state.Progress) []state.DayFiles {
	out := days[:0:0]
	for _, d := range days {
		kept := state.DayFiles{Date: d.Date, Files: []state.FileInfo{}}
		for _, f := range d.Files {
			if p, first, _, ok := state.ArchiveFileRange(f.Name); ok {
				if pr, known := prog[p]; known && first >= pr.Next {
					continue
				}
			}
			kept.Files = append(kept.Files, f)
		}
		if len(kept.Files) > 0 {
			out = append(out, kept)
		}
	}
	return out
}

// putState adds the view's healer state to w's batch, replacing the version
// st was read at; st then names the version written (if the batch commits;
// if it does not, the heal fails).
func (h *Healer) putState(w *writer, v *tiling.View, st *viewState) error {
	val, err := json.Marshal(st)
	if err != nil {
		return err
	}
	w.batch().PutMeta(v.Name, val, st.ver)
	st.ver++
	return nil
}

// install switches the heads of keys to ns's generation and watermark and
// makes ns the view's state, in one batch: atomic on Pebble; heads first and
// the state last on DynamoDB.
func (h *Healer) install(v *tiling.View, ns *viewState, keys []string, w *writer) error {
	hb := w.batch()
	for _, key := range keys {
		hb.PutHead(v, key, state.Head{Watermark: ns.Watermark, Gen: ns.Gen})
		w.records++
	}
	if err := h.putState(w, v, ns); err != nil {
		return err
	}
	return w.flush()
}

// rollForward finishes an install that a crash interrupted (st.Next set):
// it switches every key of the new generation's summaries to it (heads
// already switched are left alone) and makes st.Next the state. It returns
// the state to go on from.
func (h *Healer) rollForward(v *tiling.View, st *viewState, l *lease) (*viewState, error) {
	next := st.Next
	if next == nil {
		return st, nil
	}
	h.log.Info("finishing an interrupted install", "view", v.Name, "generation", next.Gen,
		"batch_watermark", time.UnixMilli(next.Watermark).UTC())
	var keys []string
	if err := h.store.ScanKeys(v.Name, next.Gen, func(k string) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("keys of generation %d: %w", next.Gen, err)
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	next.ver = st.ver
	if err := h.install(v, next, keys, h.newWriter()); err != nil {
		return nil, err
	}
	if h.OnInstall != nil {
		h.OnInstall(v.Name)
	}
	return next, nil
}

// pendingGarbage is the garbage an abandoned pending heal left: its day
// records and summaries.
func pendingGarbage(p *pending, now time.Time) garbage {
	g := garbage{Due: now.UnixMilli(), SummaryGen: p.Gen, StreamBefore: tiling.MinTime}
	for d := range p.Done {
		g.Days = append(g.Days, dayGen{Day: d, Gen: p.Gen})
	}
	sortDays(g.Days)
	return g
}

// sortDays orders a garbage entry's days, so that the stored state does not
// depend on map order.
func sortDays(days []dayGen) {
	sort.Slice(days, func(i, j int) bool { return days[i].Day < days[j].Day })
}

// maxWindow is the view's longest non-lifetime window (0 for none).
func maxWindow(v *tiling.View) int64 {
	var m int64
	for _, f := range v.Features {
		if f.Window > m {
			m = f.Window
		}
	}
	return m
}

// writer groups heal writes into batches of a bounded size.
type writer struct {
	h       *Healer
	b       *state.Batch
	pending int
	records int
}

func (h *Healer) newWriter() *writer { return &writer{h: h} }

func (w *writer) batch() *state.Batch {
	if w.b == nil {
		w.b = w.h.store.NewBatch()
	}
	return w.b
}

// wrote counts n records put in the batch and commits it, without a sync,
// once it is large: generation records are referenced only by the heads,
// which a synced commit (flush) writes after them.
func (w *writer) wrote(n int) error {
	w.pending += n
	w.records += n
	if w.pending >= 10_000 {
		b := w.b
		w.b, w.pending = nil, 0
		return w.h.store.CommitNoSync(b)
	}
	return nil
}

// ingest commits what the batch holds, then has the store take t (on an
// error, t is dropped unwritten).
func (w *writer) ingest(t *state.Tables) error {
	if err := w.flush(); err != nil {
		t.Abort()
		return err
	}
	n := t.Len()
	if err := w.h.store.IngestTables(t); err != nil {
		return err
	}
	w.records += n
	return nil
}

func (w *writer) flush() error {
	if w.b == nil {
		return nil
	}
	b := w.b
	w.b, w.pending = nil, 0
	return w.h.store.Commit(b)
}

// collect deletes the garbage whose grace period is over (all of it when
// force is set). The caller holds the view's lease.
func (h *Healer) collect(v *tiling.View, force bool) error {
	st, err := h.loadState(v)
	if err != nil {
		return err
	}
	if st.Next != nil {
		return nil // an install to finish first: the next heal does
	}
	now := h.now().UnixMilli()
	var keep []garbage
	b := h.store.NewBatch()
	deleted := 0
	for _, g := range st.Garbage {
		if !force && g.Due > now {
			keep = append(keep, g)
			continue
		}
		if g.SummaryGen > 0 {
			b.DeleteSummaries(v.Name, g.SummaryGen)
		}
		for _, d := range g.Days {
			b.DeleteDay(v.Name, d.Gen, d.Day)
		}
		if g.StreamBefore != tiling.MinTime && st.Gen > 0 {
			// Only below a key's own watermark: a key without a head (no
			// batch data yet) keeps its stream records, late ones included,
			// until a heal covers it. Every key with a head is on the
			// current generation, at the state's watermark.
			before := min(g.StreamBefore, v.RecordStart(st.Watermark))
			if err := h.store.CollectKeys(v, st.Gen, func(key string) error {
				b.DeleteStreamBefore(v.Name, key, before)
				deleted++
				return nil
			}); err != nil {
				return err
			}
		}
	}
	if len(keep) == len(st.Garbage) {
		return nil
	}
	st.Garbage = keep
	val, err := json.Marshal(st)
	if err != nil {
		return err
	}
	b.PutMeta(v.Name, val, st.ver)
	if err := h.store.Commit(b); err != nil {
		return err
	}
	h.m.streamDeleted.WithLabelValues(v.Name).Add(float64(deleted))
	return nil
}
