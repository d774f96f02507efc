package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tilestream/tilestream/tiling"
)

// runDemo produces synthetic transactions at rate events/s to every view's
// topic until ctx is done: 1,000 users, 50 merchants, amounts in cents, event
// times up to two minutes in the past (a little disorder, as real streams have).
func runDemo(ctx context.Context, brokers []string, views []*tiling.View, rate float64, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("tilestream-demo"))
	if err != nil {
		return fmt.Errorf("demo producer: %w", err)
	}
	defer cl.Close()
	topics := map[string]*tiling.View{}
	for _, v := range views {
		topics[v.Topic] = v
	}
	log.Info("demo producer started", "events_per_second", rate)
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var owed float64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		owed += rate * tick.Seconds()
		for ; owed >= 1; owed-- {
			now := time.Now().UnixMilli()
			for topic, v := range topics {
				user := "u" + strconv.Itoa(r.IntN(1000))
				val := fmt.Sprintf(`{%q:%q,%q:%d,"amount":%d.%02d,"merchant":"m%d"}`,
					v.Entity, user, v.Timestamp, now-r.Int64N(2*60*1000), r.IntN(500), r.IntN(100), r.IntN(50))
				cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(user), Value: []byte(val)}, func(_ *kgo.Record, err error) {
					if err != nil && ctx.Err() == nil {
						log.Warn("demo produce failed", "err", err)
					}
				})
			}
		}
	}
}
