package state

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tilestream/tilestream/tiling"
)

// BenchmarkReadDayStorage reads one day of archived events (8 partitions,
// one file each, 1M events; 16k with -short) through ReadDay, as the
// healer does, from a local directory and from S3 (gofakes3 in process, so
// over loopback HTTP): whole-object GETs with and without read-ahead, and
// ranged GETs of 8 MiB. With latency, every S3 request waits that long
// first, as a round trip to a remote store does.
//
//	go test -tags pebblegozstd -run '^$' -bench ReadDayStorage -benchtime 10x ./state
func BenchmarkReadDayStorage(b *testing.B) {
	total, parts := 1<<20, 8
	if testing.Short() {
		total = 1 << 14
	}
	v := benchView(b)
	rng := rand.New(rand.NewPCG(7, 8))
	var rows [][]ArchiveRow
	for p := range int32(parts) {
		rows = append(rows, benchRows(v, p, 1_000_000, total/parts, false, rng))
	}
	fill := func(b *testing.B, l *OfflineLog) int64 {
		for p := range int32(parts) {
			if _, err := l.WriteArchive(v, "", p, 1_000_000, 1_000_000+int64(total/parts)-1, rows[p]); err != nil {
				b.Fatal(err)
			}
		}
		days, err := l.Days("txn")
		if err != nil {
			b.Fatal(err)
		}
		var size int64
		for _, f := range days[0].Files {
			size += f.Size
		}
		return size
	}
	cases := []struct {
		name    string
		s3      bool
		ahead   int
		ranged  bool
		latency time.Duration
	}{
		{name: "dir"},
		{name: "s3/whole/ahead=0", s3: true},
		{name: "s3/whole/ahead=2", s3: true, ahead: 2},
		{name: "s3/ranged_8MiB", s3: true, ranged: true},
		{name: "s3/whole/ahead=0/latency=20ms", s3: true, latency: 20 * time.Millisecond},
		{name: "s3/whole/ahead=2/latency=20ms", s3: true, ahead: 2, latency: 20 * time.Millisecond},
		{name: "s3/ranged_8MiB/latency=20ms", s3: true, ranged: true, latency: 20 * time.Millisecond},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var l *OfflineLog
			var f *fakeS3
			if c.s3 {
				f = newFakeS3(b)
				l = openS3TestLog(b, f, "bench", func(cfg *S3Config) {
					cfg.ReadAhead = c.ahead
					if c.ranged {
						cfg.WholeObjectBytes = 0
					}
				}).OfflineLog
			} else {
				l = openTestLog(b)
			}
			size := fill(b, l)
			if f != nil {
				f.setLatency(c.latency)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var sum float64
			n := 0
			for b.Loop() {
				st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
					sum += e.Inputs[0].Num
					return nil
				}, nil)
				if err != nil || st.Events != int64(total) {
					b.Fatalf("%+v %v", st, err)
				}
				n++
			}
			b.ReportMetric(float64(total)*float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(size)/float64(parts)/(1<<20), "MiB/file")
		})
	}
}

// BenchmarkDaysStorage lists a view of 30 days × 48 files (a roll every
// half hour) from a local directory and from S3 (one listing of the view's
// prefix: two pages of 1,000 keys).
//
//	go test -tags pebblegozstd -run '^$' -bench DaysStorage ./state
func BenchmarkDaysStorage(b *testing.B) {
	for _, backend := range offlineBackends {
		b.Run(backend.name, func(b *testing.B) {
			l := backend.open(b)
			for d := range int64(30) {
				for i := range 48 {
					l.putString(fmt.Sprintf("txn/%s/p0-%020d-%020d.parquet", dateDir(day0+d*tiling.Day), d*48+int64(i), d*48+int64(i)), "x")
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				days, err := l.Days("txn")
				if err != nil || len(days) != 30 {
					b.Fatal(len(days), err)
				}
			}
		})
	}
}

// BenchmarkWriteArchiveStorage archives 128k events of one partition over
// two dates (two files), as one ingest roll, to a local directory (write,
// fsync, rename, fsync) and to S3 (one PutObject per file).
//
//	go test -tags pebblegozstd -run '^$' -bench WriteArchiveStorage ./state
func BenchmarkWriteArchiveStorage(b *testing.B) {
	n := 128 << 10
	if testing.Short() {
		n = 4 << 10
	}
	v := benchView(b)
	rows := benchRows(v, 0, 0, n, false, rand.New(rand.NewPCG(9, 10)))
	for i := range rows[n/2:] {
		rows[n/2+i].Event.TS += tiling.Day / 2
	}
	for _, backend := range offlineBackends {
		b.Run(backend.name, func(b *testing.B) {
			l := backend.open(b)
			b.ReportAllocs()
			b.ResetTimer()
			k := 0
			for b.Loop() {
				if _, err := l.WriteArchive(v, "", 0, 0, int64(n)-1, rows); err != nil {
					b.Fatal(err)
				}
				k++
			}
			b.ReportMetric(float64(n)*float64(k)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
