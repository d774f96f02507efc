package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// Store is what the ingest needs from the online store.
type Store interface {
	recordStore
	archiveStore
	Progress(topic string) (map[int32]state.Progress, error)
	// Meta's version changes whenever a healer (of any instance) writes
	// its state: a heal by another instance makes the cached heads stale.
	Meta(view string) ([]byte, int64, error)
}

// Ingester consumes the views' topics into the online store.
type Ingester struct {
	cfg    Config
	views  []*tiling.View
	topics map[string][]int // topic → indexes into views
	store  Store
	m      *Metrics
	log    *slog.Logger

	// arch is the offline log (nil: events are not archived); archStore
	// records its progress.
	arch      Archiver
	archStore archiveStore
	// client is the running Kafka client, for SyncArchive.
	client atomic.Pointer[kgo.Client]

	// dlq produces dead letters; the consumer's own client, set by Run when
	// a dead-letter topic is configured.
	dlq *kgo.Client

	ready     atomic.Bool
	watermark atomic.Pointer[map[string]int64] // view → stream watermark

	// commitNow asks the consume loop to flush and commit at once (SyncArchive
	// made the archive durable); it holds at most one request.
	commitNow chan struct{}

	// shardOf is the applier's shardOf: it does not change, so decoding
	// calls it without mu.
	shardOf func(key string) int

	// logBad bounds the rate of log lines about malformed events.
	logBad rate.Sometimes

	// mu serialises the loop's handling of a poll and its flushes with the
	// rebalance callbacks. With BlockRebalanceOnPoll they never overlap
	// anyway; the lock makes that independent of franz-go's gating.
	mu struct {
		sync.Mutex
		ap      *applier
		durable map[topicPartition]int64 // durable max event time per partition
		parts   map[string]int32         // partitions per topic, from metadata
		archive map[archKey]*archBuf     // events waiting for the offline log
		owned   map[topicPartition]bool  // partitions assigned to this member
	}
}

// New builds an Ingester; it starts nothing (see Run). arch may be nil: then
// events are not archived to an offline log.
func New(cfg Config, views []*tiling.View, store Store, arch Archiver, m *Metrics, log *slog.Logger) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(views) == 0 {
		return nil, errors.New("ingest: no views")
	}
	in := &Ingester{
		cfg:       cfg,
		views:     views,
		topics:    map[string][]int{},
		store:     store,
		m:         m,
		log:       log,
		logBad:    rate.Sometimes{First: 10, Interval: time.Second},
		commitNow: make(chan struct{}, 1),
		arch:      arch,
		archStore: store,
	}
	for i, v := range views {
		in.topics[v.Topic] = append(in.topics[v.Topic], i)
	}
	in.mu.durable = map[topicPartition]int64{}
	in.mu.ap = newApplier(store, views, cfg.RecordCache, in.mu.durable)
	in.shardOf = in.mu.ap.shardOf
	in.mu.parts = map[string]int32{}
	in.mu.archive = map[archKey]*archBuf{}
	in.mu.owned = map[topicPartition]bool{}
	if err := in.loadArchive(); err != nil {
		return nil, err
	}
	for topic := range in.topics {
		prog, err := store.Progress(topic)
		if err != nil {
			return nil, err
		}
		for p, pr := range prog {
			in.mu.durable[topicPartition{topic, p}] = pr.MaxEventTime
		}
	}
	in.publishWatermarks()
	return in, nil
}

// Ready reports whether the ingest has joined its consumer group.
func (in *Ingester) Ready() bool { return in.ready.Load() }

// StreamWatermark returns a view's stream event-time progress: the smallest,
// over its topic's partitions, of the largest durable event time. ok is false
// while a partition has none or the partition count is unknown.
func (in *Ingester) StreamWatermark(view string) (int64, bool) {
	m := in.watermark.Load()
	if m == nil {
		return 0, false
	}
	w, ok := (*m)[view]
	return w, ok
}

// publishWatermarks recomputes every view's watermark; mu must be held or the
// Ingester not yet shared.
func (in *Ingester) publishWatermarks() {
	out := map[string]int64{}
	for _, v := range in.views {
		n, ok := in.mu.parts[v.Topic]
		if !ok || n == 0 {
			continue
		}
		w, complete := int64(0), true
		for p := int32(0); p < n; p++ {
			ts, ok := in.mu.durable[topicPartition{v.Topic, p}]
			if !ok || ts == tiling.MinTime {
				complete = false
				break
			}
			if p == 0 || ts < w {
				w = ts
			}
		}
		if complete {
			out[v.Name] = w
			in.m.watermark.WithLabelValues(v.Name).Set(float64(w) / 1000)
		}
	}
	in.watermark.Store(&out)
}

// Run consumes until ctx is done, then flushes, commits and leaves the group.
// It returns an error only for failures it cannot ride out (the store).
func (in *Ingester) Run(ctx context.Context) error {
	topics := make([]string, 0, len(in.topics))
	for t := range in.topics {
		topics = append(topics, t)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(in.cfg.Brokers...),
		kgo.ClientID(in.cfg.ClientID),
		kgo.ConsumerGroup(in.cfg.Group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(in.onAssigned),
		kgo.OnPartitionsRevoked(in.onRevoked),
		kgo.OnPartitionsLost(in.onLost),
		kgo.WithLogger(kgoLogger{in.log}),
	}
	opts = append(opts, in.cfg.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("ingest: kafka client: %w", err)
	}
	defer cl.Close()
	in.client.Store(cl)
	defer in.client.Store(nil)
	if in.cfg.DeadLetterTopic != "" {
		in.dlq = cl
	}

	// The store may have changed since the last run (a rebuild): the
	// filter of its stream records is filled again at the first poll.
	in.mu.Lock()
	in.mu.ap.knownReady = false
	in.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return in.lagLoop(gctx, cl, topics) })
	g.Go(func() error { return in.consume(gctx, cl) })
	return g.Wait()
}

func (in *Ingester) consume(ctx context.Context, cl *kgo.Client) error {
	nextFlush := time.Now().Add(in.cfg.FlushInterval)
	for {
		// A poll waits until records come or the next flush is due, or a
		// heal made the archive durable (SyncArchive): then the offsets it
		// covers are committed at once.
		pollCtx, cancel := context.WithDeadline(ctx, nextFlush)
		kicked := make(chan bool, 1)
		go func() {
			select {
			case <-in.commitNow:
				cancel()
				kicked <- true
			case <-pollCtx.Done():
				kicked <- false
			}
		}()
		fetches := cl.PollRecords(pollCtx, in.cfg.PollRecords)
		cancel()
		commitNow := <-kicked
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			in.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if _, ok := in.topics[p.Topic]; ok && len(p.Records) > 0 {
				in.m.consumed.WithLabelValues(p.Topic).Add(float64(len(p.Records)))
			}
		})
		// Rebalances wait (BlockRebalanceOnPoll) until the poll is applied
		// and, when due, flushed: a store outage stalls both, retried with
		// backoff, without handling any new record. Decoding needs no lock.
		work := in.decode(fetches)
		err := in.retrying(ctx, "apply", func() error { return in.process(work) })
		done := ctx.Err() != nil
		if err == nil && (done || commitNow || !time.Now().Before(nextFlush)) {
			fctx := ctx
			if done {
				var cancel context.CancelFunc
				fctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
			}
			err = in.retrying(fctx, "flush", func() error { return in.flushAndCommit(fctx, cl, done) })
			nextFlush = time.Now().Add(in.cfg.FlushInterval)
		} else if err == nil {
			// A buffer that filled up between flushes rolls now, so that
			// it holds about ArchiveRollRows events whatever the flush
			// interval (its events become durable in the stream records
			// at the flush; the offsets wait for both).
			err = in.retrying(ctx, "archive", func() error { return in.rollFull() })
		}
		cl.AllowRebalance()
		if err != nil {
			// Stopped while a retry waited for the store (in any step):
			// nothing is lost, the offsets are not committed.
			if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				in.log.Error("stopping with records not made durable: the store did not answer; they are consumed again from the committed offsets", "err", err)
				return nil
			}
			return err
		}
		if done {
			return nil
		}
	}
}

// retrying runs fn with mu held; while it fails with an error worth
// retrying (the store throttles or is unavailable), it waits with a capped,
// jittered backoff (mu released, so metrics and serving go on) and runs it
// again, with the stalled gauge up, until it succeeds, fails otherwise, or
// ctx ends. fn must be idempotent.
func (in *Ingester) retrying(ctx context.Context, op string, fn func() error) error {
	in.mu.Lock()
	err := fn()
	in.mu.Unlock()
	stalled := false
	for attempt := 1; err != nil && retryable(err); attempt++ {
		reason := state.ErrorReason(err)
		if errors.Is(err, errConflicting) {
			reason = "conflicting"
		}
		in.m.storeErrors.WithLabelValues(op, reason).Inc()
		if !stalled {
			stalled = true
			in.m.stalled.Set(1)
			in.log.Warn("the online store or the offline log fails; ingest stalls (nothing is committed) and retries", "op", op, "reason", reason, "err", err)
		}
		d := min(50*time.Millisecond<<min(attempt-1, 10), 5*time.Second)
		d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		in.mu.Lock()
		err = fn()
		in.mu.Unlock()
	}
	if stalled {
		in.m.stalled.Set(0)
		if err == nil {
			in.log.Info("the online store answers again; ingest resumes", "op", op)
		}
	}
	return err
}

// retryable reports whether a store failure is worth retrying later.
func retryable(err error) bool {
	return errors.Is(err, errConflicting) || state.Retryable(err)
}

// partWork is one partition's records of a poll, their decoding and what
// applying them did.
type partWork struct {
	topic string
	views []int
	recs  []*kgo.Record
	out   []tiling.Decoded
	// shard of each decoded event (record i, view j at i*len(views)+j),
	// and the outcome of applying it (see applier.applyWork).
	shard   []uint16
	outcome []outcome
}

// route sets the shard of each decoded event and marks every outcome
// pending.
func (w *partWork) route(shardOf func(key string) int) {
	nv := len(w.views)
	w.shard = make([]uint16, len(w.out)*nv)
	w.outcome = make([]outcome, len(w.out)*nv)
	for i := range w.out {
		for j := range nv {
			w.outcome[i*nv+j] = pending
			if w.out[i].Reasons[j] == "" {
				w.shard[i*nv+j] = uint16(shardOf(w.out[i].Events[j].Key))
			}
		}
	}
}

// decode decodes each partition's records of a poll in parallel. It needs
// no lock: views and config do not change.
func (in *Ingester) decode(fetches kgo.Fetches) []*partWork {
	var work []*partWork
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		vi, ok := in.topics[p.Topic]
		if !ok {
			return
		}
		work = append(work, &partWork{topic: p.Topic, views: vi, recs: p.Records})
	})
	if len(work) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	shardOf := in.shardOf
	var wg sync.WaitGroup
	for _, w := range work {
		wg.Go(func() {
			d := in.newDecoder(w.views)
			w.out = make([]tiling.Decoded, len(w.recs))
			for i, r := range w.recs {
				d.Decode(r.Value, tiling.Pos{Partition: r.Partition, Offset: r.Offset}, now, &w.out[i])
			}
			w.route(shardOf)
		})
	}
	wg.Wait()
	return work
}

// process applies a decoded poll (applier.applyWork), then, once every
// event is applied, archives the events, counts them and records the
// partitions' progress, in partition order. mu is held. On a failure only
// records changed: a retry applies the poll again.
func (in *Ingester) process(work []*partWork) error {
	if len(work) == 0 {
		return nil
	}
	ap := in.mu.ap
	if err := ap.applyWork(work); err != nil {
		return err
	}
	// Events per view and outcome (replayed, applied, deferred_to_heal).
	const nOut = 3
	counts := make([]int, len(in.views)*nOut)
	for _, w := range work {
		nv := len(w.views)
		for i, r := range w.recs {
			tp := topicPartition{r.Topic, r.Partition}
			d := &w.out[i]
			maxTS, any := tiling.MinTime, false
			for j, vi := range w.views {
				if reason := d.Reasons[j]; reason != "" {
					in.reject(in.views[vi].Name, reason, r)
					in.archiveEvent(vi, r.Partition, r.Offset, nil)
					continue
				}
				e := &d.Events[j]
				in.archiveEvent(vi, r.Partition, r.Offset, e)
				switch w.outcome[i*nv+j] {
				case applied:
					counts[vi*nOut+1]++
				case replayed:
					counts[vi*nOut]++
				case deferred:
					// Already archived: a replay of an event counted (deferred)
					// before the restart.
					if b := in.mu.archive[archKey{vi, r.Partition}]; b != nil && b.next > r.Offset {
						counts[vi*nOut]++
					} else {
						counts[vi*nOut+2]++
					}
				}
				any = true
				if e.TS > maxTS {
					maxTS = e.TS
				}
			}
			ap.handled(tp, r.Offset, r.LeaderEpoch, maxTS, any)
		}
	}
	for vi, v := range in.views {
		for o, label := range []string{"replayed", "applied", "deferred_to_heal"} {
			if n := counts[vi*nOut+o]; n > 0 {
				in.m.events.WithLabelValues(v.Name, label).Add(float64(n))
			}
		}
	}
	return nil
}

func (in *Ingester) newDecoder(views []int) *tiling.Decoder {
	d := &tiling.Decoder{
		MaxEventBytes: in.cfg.MaxEventBytes,
		MaxKeyBytes:   in.cfg.MaxKeyBytes,
		FutureSkew:    in.cfg.FutureSkew.Milliseconds(),
	}
	for _, vi := range views {
		d.Views = append(d.Views, in.views[vi])
	}
	return d
}

// reject counts, logs (bounded) and dead-letters a malformed event.
func (in *Ingester) reject(view, reason string, r *kgo.Record) {
	in.m.rejected.WithLabelValues(view, reason).Inc()
	in.logBad.Do(func() {
		in.log.Warn("malformed event set aside", "view", view, "reason", reason,
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
	})
	if in.cfg.DeadLetterTopic == "" || in.dlq == nil {
		return
	}
	dl := &kgo.Record{
		Topic: in.cfg.DeadLetterTopic,
		Key:   r.Key,
		Value: r.Value,
		Headers: []kgo.RecordHeader{
			{Key: "tilestream-reason", Value: []byte(reason)},
			{Key: "tilestream-view", Value: []byte(view)},
			{Key: "tilestream-topic", Value: []byte(r.Topic)},
			{Key: "tilestream-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: "tilestream-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
		},
	}
	in.dlq.Produce(context.Background(), dl, func(_ *kgo.Record, err error) {
		if err != nil {
			in.m.deadLetter.WithLabelValues("error").Inc()
			in.log.Warn("dead letter produce failed", "topic", in.cfg.DeadLetterTopic, "err", err)
			return
		}
		in.m.deadLetter.WithLabelValues("produced").Inc()
	})
}

// flushAndCommit makes the buffered records durable, then commits the offsets
// they cover; force also writes every partition's progress (see
// applier.progressEvery). mu is held.
func (in *Ingester) flushAndCommit(ctx context.Context, cl *kgo.Client, force bool) error {
	start := time.Now()
	ap := in.mu.ap
	if err := in.publishPending(); err != nil {
		return err
	}
	conflicts, rebased := ap.conflicts, ap.rebased
	n, err := ap.flush(force)
	in.m.conflicts.Add(float64(ap.conflicts - conflicts))
	in.m.rebased.Add(float64(ap.rebased - rebased))
	if err != nil {
		return err
	}
	if err := in.rollDue(false, nil); err != nil {
		return err
	}
	for tp, p := range ap.parts {
		if cur, ok := in.mu.durable[tp]; p.maxTS != tiling.MinTime && (!ok || p.maxTS > cur) {
			in.mu.durable[tp] = p.maxTS
		}
	}
	in.publishWatermarks()
	in.m.cached.Set(float64(ap.cachedRecords()))
	if in.dlq != nil {
		// Dead letters are produced before the offsets of their events are
		// committed; a failure is counted and logged, not retried forever.
		if err := in.dlq.Flush(ctx); err != nil {
			in.log.Warn("dead letter flush", "err", err)
		}
	}
	in.commit(ctx, cl)
	if n > 0 {
		in.m.flushRecs.Observe(float64(n))
		in.m.flushDur.Observe(time.Since(start).Seconds())
	}
	return nil
}

// commit commits the next offset of every partition handled since the last
// successful commit. Failures are counted and retried at the next flush:
// the store already holds the data, so only the replay after a crash grows.
func (in *Ingester) commit(ctx context.Context, cl *kgo.Client) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for tp, p := range in.mu.ap.parts {
		if !p.unsynced {
			continue
		}
		next := min(p.next, p.stored) // only what the stored progress holds
		for _, vi := range in.topics[tp.topic] {
			if b := in.mu.archive[archKey{vi, tp.partition}]; b != nil && b.bound() < next {
				next = b.bound() // not yet durable in the offline log
			}
		}
		if next <= p.committed {
			continue
		}
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: p.epoch, Offset: next}
	}
	if len(offsets) == 0 {
		return
	}
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			in.m.commitErrs.Inc()
			in.log.Warn("offset commit failed", "err", err)
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				tp := topicPartition{t.Topic, p.Partition}
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					in.m.commitErrs.Inc()
					in.log.Warn("offset commit failed", "topic", t.Topic, "partition", p.Partition, "err", err)
					continue
				}
				if pp := in.mu.ap.parts[tp]; pp != nil {
					pp.committed = offsets[t.Topic][p.Partition].Offset
					pp.unsynced = pp.committed < pp.next
				}
			}
		}
	})
}

// ForgetHeads drops the cached batch watermarks of a view's keys; the healer
// calls it after installing a heal.
func (in *Ingester) ForgetHeads(view string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for vi, v := range in.views {
		if v.Name == view {
			in.mu.ap.forgetHeads(vi)
		}
	}
}

func (in *Ingester) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	in.log.Info("partitions assigned", "partitions", assigned)
	in.mu.Lock()
	got := map[topicPartition]bool{}
	for t, ps := range assigned {
		for _, p := range ps {
			in.mu.owned[topicPartition{t, p}] = true
			got[topicPartition{t, p}] = true
		}
	}
	if in.store.StreamLayout().PerPartition {
		// Instances share the store: the previous owners have let these
		// partitions go (or died); their interrupted rolls are this
		// member's to clean, and their archive progress may be newer than
		// what was loaded at start.
		for attempt := 1; ; attempt++ {
			err := in.recoverArchive(got)
			if err == nil {
				break
			}
			if attempt == 5 {
				in.log.Error("recover the archive of assigned partitions; their events are archived again from the committed offsets", "err", err)
				break
			}
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
	}
	in.mu.Unlock()
	in.ready.Store(true)
}

// onRevoked flushes and commits before the partitions move, so the next owner
// starts from a commit covering everything this member made durable.
func (in *Ingester) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	in.log.Info("partitions revoked", "partitions", revoked)
	in.mu.Lock()
	defer in.mu.Unlock()
	revokedPart := func(k archKey) bool {
		for _, p := range revoked[in.views[k.view].Topic] {
			if p == k.partition {
				return true
			}
		}
		return false
	}
	if err := in.rollDue(true, revokedPart); err != nil {
		in.log.Error("archive roll on revoke failed", "err", err)
	}
	if err := in.flushAndCommit(ctx, cl, true); err != nil {
		// The records stay dirty in memory and the offsets uncommitted: the next
		// owner replays from the last commit, which the records make idempotent.
		in.log.Error("flush on revoke failed", "err", err)
	}
	in.dropPartitions(revoked)
}

// onLost drops the partitions without committing: another member may own them.
func (in *Ingester) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	in.log.Warn("partitions lost", "partitions", lost)
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, err := in.mu.ap.flush(true); err != nil {
		in.log.Error("flush on partition loss failed", "err", err)
	}
	in.dropPartitions(lost)
}

func (in *Ingester) dropPartitions(ps map[string][]int32) {
	gone := map[topicPartition]bool{}
	for topic, parts := range ps {
		for _, p := range parts {
			gone[topicPartition{topic, p}] = true
			delete(in.mu.owned, topicPartition{topic, p})
			delete(in.mu.ap.parts, topicPartition{topic, p})
			// Unrolled events are dropped: the next owner replays them
			// from the committed offset, which is at most the durable
			// archive progress.
			for _, vi := range in.topics[topic] {
				if b := in.mu.archive[archKey{vi, p}]; b != nil && b.next >= 0 {
					b.first, b.last, b.rows = b.next, b.next-1, nil
				} else {
					delete(in.mu.archive, archKey{vi, p})
				}
			}
		}
	}
	in.mu.ap.forget(gone)
}
