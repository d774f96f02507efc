package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"golang.org/x/sync/errgroup"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// ErrNotRunning is returned by SyncArchive before the consumer started (a
// heal asked for right after a start): retry shortly.
var ErrNotRunning = errors.New("ingest: not running yet")

// Archiver is the offline log as the ingest uses it.
type Archiver interface {
	WriteArchive(v *tiling.View, eventIDField string, partition int32, first, last int64, rows []state.ArchiveRow) ([]string, error)
	Remove(paths []string) error
}

// archiveStore is what archiving needs from the online store.
type archiveStore interface {
	ArchiveProgress(view string) (map[int32]state.Progress, error)
	ArchivePending(view string) (map[int32]int64, error)
	Intents(view string) (map[int32]state.ArchiveIntent, error)
	NewBatch() *state.Batch
	Commit(b *state.Batch) error
}

type archKey struct {
	view      int
	partition int32
}

// archBuf buffers one (view, partition)'s consumed events until they are
// rolled into archive files. It covers the handled offsets [first, last];
// next is the first offset not yet durable in the offline log (-1 unknown).
type archBuf struct {
	next   int64
	maxTS  int64 // largest event time durable in the offline log
	first  int64
	last   int64
	rows   []state.ArchiveRow
	opened time.Time
	// minTS is the smallest event time of rows; published the value last
	// written to a shared store (math.MaxInt64: none), see publishPending.
	minTS, published int64
}

func (b *archBuf) pending() bool { return b.last >= b.first }

// bound is the highest offset Kafka may commit for the partition as far as
// the archive is concerned (math.MaxInt64: no limit).
func (b *archBuf) bound() int64 {
	switch {
	case b.pending():
		return b.first
	case b.next >= 0:
		return b.next
	}
	return math.MaxInt64
}

// loadArchive restores archive progress and removes the files of rolls that a
// crash interrupted (their events are replayed and archived again).
func (in *Ingester) loadArchive() error {
	return in.recoverArchive(nil)
}

// recoverArchive removes the files of rolls a crash interrupted and loads
// the archive progress, of every partition (only == nil, at start) or of the
// partitions in only (on assignment). With a store shared by several
// instances, only the partitions' new owner may do it, once their previous
// owner has let them go: at start another instance may be rolling them, so
// it waits for the assignment (onAssigned). mu is held or the Ingester not
// yet shared.
func (in *Ingester) recoverArchive(only map[topicPartition]bool) error {
	if in.arch == nil {
		return nil
	}
	shared := in.store.StreamLayout().PerPartition
	for vi, v := range in.views {
		mine := func(p int32) bool { return only == nil || only[topicPartition{v.Topic, p}] }
		if only == nil && shared {
			// Progress only; intents wait for the assignment.
		} else {
			intents, err := in.archStore.Intents(v.Name)
			if err != nil {
				return fmt.Errorf("ingest: archive intents of %s: %w", v.Name, err)
			}
			b := in.archStore.NewBatch()
			n := 0
			for p, it := range intents {
				if !mine(p) {
					continue
				}
				if err := in.arch.Remove(it.Paths); err != nil {
					return fmt.Errorf("ingest: remove interrupted archive files of %s/%d: %w", v.Name, p, err)
				}
				in.log.Info("removed archive files of an interrupted roll", "view", v.Name, "partition", p, "first", it.First, "last", it.Last, "files", len(it.Paths))
				b.DeleteIntent(v.Name, p)
				n++
			}
			if n > 0 {
				if err := in.archStore.Commit(b); err != nil {
					return err
				}
			}
		}
		prog, err := in.archStore.ArchiveProgress(v.Name)
		if err != nil {
			return fmt.Errorf("ingest: archive progress of %s: %w", v.Name, err)
		}
		for p, pr := range prog {
			if !mine(p) {
				continue
			}
			in.mu.archive[archKey{vi, p}] = &archBuf{next: pr.Next, maxTS: pr.MaxEventTime, first: pr.Next, last: pr.Next - 1,
				minTS: math.MaxInt64, published: math.MaxInt64}
		}
	}
	return nil
}

// archiveEvent buffers a handled event (e nil: rejected, only the offset
// counts). mu is held.
func (in *Ingester) archiveEvent(vi int, partition int32, offset int64, e *tiling.Event) {
	if in.arch == nil {
		return
	}
	k := archKey{vi, partition}
	b := in.mu.archive[k]
	if b == nil {
		b = &archBuf{next: -1, maxTS: tiling.MinTime, first: offset, last: offset - 1, minTS: math.MaxInt64, published: math.MaxInt64}
		in.mu.archive[k] = b
	}
	if b.next >= 0 && offset < b.next {
		return // archived before a restart; this is the replay
	}
	if b.pending() && offset <= b.last {
		return // buffered by an attempt of this poll that failed later
	}
	if !b.pending() {
		b.first, b.opened = offset, time.Now()
		if b.next >= 0 {
			b.first = b.next // the range is contiguous with what is archived
		}
	}
	b.last = offset
	if e != nil {
		b.rows = append(b.rows, state.ArchiveRow{Event: *e, EventID: e.ID})
		b.minTS = min(b.minTS, e.TS)
	}
}

// publishPending writes, for every buffer holding events older than what it
// last published, the smallest event time it holds, before the flush makes
// those events durable in stream records. Instances sharing a store
// (DynamoDB) read it when they heal: an event consumed by another instance
// and not yet in the offline log holds their archive watermark E back, so a
// heal never moves W_b over it (SyncArchive). mu is held.
func (in *Ingester) publishPending() error {
	if in.arch == nil || !in.store.StreamLayout().PerPartition {
		return nil
	}
	var changed []archKey
	for k, b := range in.mu.archive {
		if b.minTS < b.published {
			changed = append(changed, k)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	pb := in.archStore.NewBatch()
	for _, k := range changed {
		pb.SetArchivePending(in.views[k.view].Name, k.partition, in.mu.archive[k].minTS)
	}
	if err := in.archStore.Commit(pb); err != nil {
		return fmt.Errorf("archive pending events: %w", err)
	}
	for _, k := range changed {
		b := in.mu.archive[k]
		b.published = b.minTS
	}
	return nil
}

// rollDue rolls every buffer that is full or old enough, or all of them when
// force is set: several at once, one per core, as each is a partition's own
// files and progress. mu is held.
func (in *Ingester) rollDue(force bool, only func(archKey) bool) error {
	if in.arch == nil {
		return nil
	}
	defer in.publishArchiveLag()
	now := time.Now()
	var due []archKey
	for k, b := range in.mu.archive {
		if !b.pending() || (only != nil && !only(k)) {
			continue
		}
		if force || len(b.rows) >= in.cfg.ArchiveRollRows || now.Sub(b.opened) >= in.cfg.ArchiveRollInterval {
			due = append(due, k)
		}
	}
	errs := make([]error, len(due))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, k := range due {
		b := in.mu.archive[k]
		g.Go(func() error {
			errs[i] = in.roll(k, b)
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// rollFull rolls every buffer holding ArchiveRollRows events or more. mu is
// held.
func (in *Ingester) rollFull() error {
	return in.rollDue(false, func(k archKey) bool { return len(in.mu.archive[k].rows) >= in.cfg.ArchiveRollRows })
}

// roll writes a buffer's events into archive files, one per event date:
// intent first, files next, then the progress with the intent removed. Rolls
// of distinct buffers may run in parallel: each touches only its buffer.
func (in *Ingester) roll(k archKey, b *archBuf) error {
	v := in.views[k.view]
	start := time.Now()
	maxTS := b.maxTS
	for i := range b.rows {
		if ts := b.rows[i].Event.TS; ts > maxTS {
			maxTS = ts
		}
	}
	if len(b.rows) > 0 {
		paths := archivePaths(v, k.partition, b.first, b.last, b.rows)
		ib := in.archStore.NewBatch()
		ib.PutIntent(v.Name, k.partition, state.ArchiveIntent{First: b.first, Last: b.last, Paths: paths})
		if err := in.archStore.Commit(ib); err != nil {
			return fmt.Errorf("archive intent %s/%d: %w", v.Name, k.partition, err)
		}
		if _, err := in.arch.WriteArchive(v, v.EventID, k.partition, b.first, b.last, b.rows); err != nil {
			return fmt.Errorf("archive %s/%d [%d, %d]: %w", v.Name, k.partition, b.first, b.last, err)
		}
	}
	pb := in.archStore.NewBatch()
	pb.SetArchiveProgress(v.Name, k.partition, state.Progress{Next: b.last + 1, MaxEventTime: maxTS})
	pb.DeleteIntent(v.Name, k.partition)
	if err := in.archStore.Commit(pb); err != nil {
		return fmt.Errorf("archive progress %s/%d: %w", v.Name, k.partition, err)
	}
	in.m.archived.WithLabelValues(v.Name).Add(float64(len(b.rows)))
	in.m.archiveRolls.Observe(time.Since(start).Seconds())
	b.next, b.maxTS = b.last+1, maxTS
	b.first, b.rows = b.next, b.rows[:0:0]
	// The progress write cleared the published pending time.
	b.minTS, b.published = math.MaxInt64, math.MaxInt64
	return nil
}

// publishArchiveLag sets the archive lag gauge of every view. mu is held.
func (in *Ingester) publishArchiveLag() {
	lag := make([]int, len(in.views))
	for k, b := range in.mu.archive {
		lag[k.view] += len(b.rows)
	}
	for i, v := range in.views {
		in.m.archiveLag.WithLabelValues(v.Name).Set(float64(lag[i]))
	}
}

// archivePaths lists the files WriteArchive writes for rows: one per event
// date, named from the partition and offset range.
func archivePaths(v *tiling.View, partition int32, first, last int64, rows []state.ArchiveRow) []string {
	seen := map[int64]bool{}
	var out []string
	for i := range rows {
		day := tiling.AlignDown(rows[i].Event.TS, tiling.Day)
		if seen[day] {
			continue
		}
		seen[day] = true
		out = append(out, state.ArchivePath(v.Name, day, partition, first, last))
	}
	return out
}

// SyncArchive makes every event of the view consumed so far durable in the
// offline log and returns the archive's event-time watermark E (DESIGN.md):
// the smallest, over the topic's partitions not archived up to the high
// watermark sampled first, of the largest event time archived from them —
// now when every partition is archived that far, tiling.MinTime when such a
// partition has archived nothing.
func (in *Ingester) SyncArchive(ctx context.Context, view string) (int64, error) {
	vi := -1
	for i, v := range in.views {
		if v.Name == view {
			vi = i
		}
	}
	if vi < 0 {
		return 0, fmt.Errorf("ingest: unknown view %q", view)
	}
	if in.arch == nil {
		return 0, fmt.Errorf("ingest: no offline log configured")
	}
	cl := in.client.Load()
	if cl == nil {
		return 0, ErrNotRunning
	}
	topic := in.views[vi].Topic
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("ingest: end offsets of %s: %w", topic, err)
	}
	now := time.Now().UnixMilli()
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.rollDue(true, func(k archKey) bool { return k.view == vi }); err != nil {
		return 0, err
	}
	// The consume loop commits the offsets the rolls made durable now, not
	// at its next flush: a restart replays less.
	select {
	case in.commitNow <- struct{}{}:
	default:
	}
	// Partitions this instance does not own are archived by other
	// instances sharing the store: their progress, and the oldest event
	// they hold unarchived, come from the store.
	var shared map[int32]state.Progress
	var pending map[int32]int64
	if in.store.StreamLayout().PerPartition {
		if shared, err = in.archStore.ArchiveProgress(view); err == nil {
			pending, err = in.archStore.ArchivePending(view)
		}
		if err != nil {
			return 0, fmt.Errorf("ingest: archive progress of %s: %w", view, err)
		}
	}
	e := now
	var lerr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = o.Err
			return
		}
		if o.Offset <= 0 {
			return // empty partition: nothing to archive
		}
		if shared != nil && !in.mu.owned[topicPartition{topic, o.Partition}] {
			pr, ok := shared[o.Partition]
			switch {
			case !ok:
				e = tiling.MinTime
			case pr.Next >= o.Offset:
			default:
				e = min(e, pr.MaxEventTime)
			}
			if pm, ok := pending[o.Partition]; ok {
				e = min(e, pm)
			}
			return
		}
		b := in.mu.archive[archKey{vi, o.Partition}]
		switch {
		case b == nil || b.next < 0:
			e = tiling.MinTime
		case b.next >= o.Offset:
			// archived up to the high watermark
		case b.maxTS < e:
			e = b.maxTS
		}
	})
	if lerr != nil {
		return 0, fmt.Errorf("ingest: end offsets of %s: %w", topic, lerr)
	}
	return e, nil
}
