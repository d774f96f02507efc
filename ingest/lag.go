package ingest

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// lagLoop measures the group's lag per partition and learns the topics'
// partition counts (the stream watermark needs them) every LagInterval.
func (in *Ingester) lagLoop(ctx context.Context, cl *kgo.Client, topics []string) error {
	adm := kadm.NewClient(cl)
	t := time.NewTicker(in.cfg.LagInterval)
	defer t.Stop()
	healed := map[string]int64{}
	var stored []storedProgress
	for {
		in.measure(ctx, adm, topics, &stored)
		in.followHeals(healed)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// followHeals drops the cached heads of a view when its healer state
// changed since the last look: another instance sharing the store healed
// it. A stale head only makes an event stamped before the new W_b go to a
// stream tile that readers ignore instead of being counted deferred (the
// next heal counts it either way). Pebble has one process: OnInstall does.
func (in *Ingester) followHeals(last map[string]int64) {
	if !in.store.StreamLayout().PerPartition {
		return
	}
	for _, v := range in.views {
		_, ver, err := in.store.Meta(v.Name)
		if err != nil {
			continue
		}
		if old, ok := last[v.Name]; ok && old != ver {
			in.ForgetHeads(v.Name)
		}
		last[v.Name] = ver
	}
}

// storedProgress is the progress read from a shared store at a time.
type storedProgress struct {
	at   time.Time
	prog map[string]map[int32]state.Progress
}

func (in *Ingester) measure(ctx context.Context, adm *kadm.Client, topics []string, pending *[]storedProgress) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.LagInterval)
	defer cancel()
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		if ctx.Err() == nil {
			in.m.lagErrs.Inc()
			in.log.Debug("list topics", "err", err)
		}
		return
	}
	// Other instances sharing the store (DynamoDB) make other partitions
	// durable: their progress moves the stream watermark too, once every
	// read may include what it holds: a cached key snapshot may be up to
	// ProgressDelay (the cache's staleness bound) older than the read of
	// the progress, so it is applied that much later.
	now := time.Now()
	read := storedProgress{at: now, prog: map[string]map[int32]state.Progress{}}
	for _, t := range topics {
		if prog, err := in.store.Progress(t); err == nil {
			read.prog[t] = prog
		} else {
			in.log.Debug("read stored progress", "topic", t, "err", err)
		}
	}
	*pending = append(*pending, read)
	due := 0
	for due < len(*pending) && !now.Before((*pending)[due].at.Add(in.cfg.ProgressDelay)) {
		due++
	}
	in.mu.Lock()
	for _, td := range details {
		if td.Err == nil {
			in.mu.parts[td.Topic] = int32(len(td.Partitions))
		}
	}
	for _, sp := range (*pending)[:due] {
		for t, prog := range sp.prog {
			for p, pr := range prog {
				tp := topicPartition{t, p}
				if cur, ok := in.mu.durable[tp]; pr.MaxEventTime != tiling.MinTime && (!ok || pr.MaxEventTime > cur) {
					in.mu.durable[tp] = pr.MaxEventTime
				}
			}
		}
	}
	*pending = (*pending)[due:]
	in.publishWatermarks()
	in.mu.Unlock()

	lags, err := adm.Lag(ctx, in.cfg.Group)
	if err != nil {
		if ctx.Err() == nil {
			in.m.lagErrs.Inc()
			in.log.Debug("measure lag", "err", err)
		}
		return
	}
	for _, gl := range lags {
		if gl.Error() != nil {
			in.m.lagErrs.Inc()
			continue
		}
		for _, l := range gl.Lag.Sorted() {
			if _, ours := in.topics[l.Topic]; !ours || l.Lag < 0 {
				continue
			}
			in.m.lag.WithLabelValues(l.Topic, strconv.Itoa(int(l.Partition))).Set(float64(l.Lag))
		}
	}
}

// kgoLogger adapts slog to franz-go's logger, one level down: franz-go's info
// lines are chatty, so they go to debug.
type kgoLogger struct{ log *slog.Logger }

func (l kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case l.log.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelInfo
	case l.log.Enabled(ctx, slog.LevelInfo):
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	}
	l.log.Log(context.Background(), lv, msg, append(keyvals, "component", "kafka")...)
}
