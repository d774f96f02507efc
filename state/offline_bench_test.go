package state

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tilestream/tilestream/tiling"
)

// benchView is a typical view: sums and means of an amount (a double
// column), the last merchant (a JSON text column), counts.
func benchView(b testing.TB) *tiling.View {
	v, err := tiling.NewView(tiling.View{
		Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime,
		Features: []tiling.Feature{
			{Name: "amount_sum_1h", Function: tiling.Sum, Column: "amount", Window: tiling.Hour},
			{Name: "amount_mean_7d", Function: tiling.Mean, Column: "amount", Window: 7 * tiling.Day},
			{Name: "merchant_last", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime},
			{Name: "n_1d", Function: tiling.Count, Window: tiling.Day},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// benchRows returns n events of one day on one partition from offset first:
// 10k keys, amounts in cents, 100 merchants, event ids when ids is set.
func benchRows(v *tiling.View, partition int32, first int64, n int, ids bool, rng *rand.Rand) []ArchiveRow {
	rows := make([]ArchiveRow, n)
	merchants := make([][]byte, 100)
	for i := range merchants {
		merchants[i] = fmt.Appendf(nil, `"merchant-%d"`, i)
	}
	for i := range rows {
		e := &rows[i].Event
		e.Key = fmt.Sprintf("user-%d", rng.IntN(10_000))
		e.TS = day0 + int64(i)*(tiling.Day-1000)/int64(n) + rng.Int64N(1000)
		e.Pos = tiling.Pos{Partition: partition, Offset: first + int64(i)}
		e.Inputs = []tiling.Input{
			{Kind: tiling.Number, Num: float64(rng.IntN(100_000)) / 100},
			{Kind: tiling.Other, Raw: merchants[rng.IntN(len(merchants))]},
		}
		if ids {
			rows[i].EventID = fmt.Sprintf("evt-%d-%d", partition, first+int64(i))
		}
	}
	return rows
}

// BenchmarkReadDay reads one day of 1M archived events (8 partitions, one
// file each) through ReadDay, as the healer does.
//
//	go test -tags pebblegozstd -run '^$' -bench ReadDay -benchtime 10x ./state
func BenchmarkReadDay(b *testing.B) {
	for _, ids := range []bool{false, true} {
		b.Run(fmt.Sprintf("event_ids=%v", ids), func(b *testing.B) {
			const total, parts = 1 << 20, 8
			v := benchView(b)
			l := openTestLog(b)
			rng := rand.New(rand.NewPCG(7, 8))
			idField := ""
			if ids {
				idField = "event_id"
			}
			var size int64
			for p := range int32(parts) {
				rows := benchRows(v, p, 1_000_000, total/parts, ids, rng)
				if _, err := l.WriteArchive(v, idField, p, 1_000_000, 1_000_000+total/parts-1, rows); err != nil {
					b.Fatal(err)
				}
			}
			days, _ := l.Days("txn")
			for _, f := range days[0].Files {
				size += f.Size
			}
			b.ReportAllocs()
			b.ResetTimer()
			var sum float64
			n := 0
			for b.Loop() {
				st, err := l.ReadDay(v, idField, day0, func(e *tiling.Event) error {
					sum += e.Inputs[0].Num
					return nil
				}, nil)
				if err != nil || st.Events != total {
					b.Fatalf("%+v %v", st, err)
				}
				n++
			}
			b.ReportMetric(float64(total)*float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(size)/total, "bytes/event")
		})
	}
}

// BenchmarkWriteArchive archives 128k events of one partition spread over
// two dates (two files), as one ingest roll.
//
//	go test -tags pebblegozstd -run '^$' -bench WriteArchive ./state
func BenchmarkWriteArchive(b *testing.B) {
	const n = 128 << 10
	v := benchView(b)
	l := openTestLog(b)
	rows := benchRows(v, 0, 0, n, false, rand.New(rand.NewPCG(9, 10)))
	for i := range rows[n/2:] {
		rows[n/2+i].Event.TS += tiling.Day / 2
	}
	b.ReportAllocs()
	b.ResetTimer()
	k := 0
	for b.Loop() {
		if _, err := l.WriteArchive(v, "", 0, 0, n-1, rows); err != nil {
			b.Fatal(err)
		}
		k++
	}
	b.ReportMetric(float64(n)*float64(k)/b.Elapsed().Seconds(), "events/s")
}
