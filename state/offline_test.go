package state

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/tilestream/tilestream/tiling"
)

// offlineTestView has a column of every storage kind: amount (numeric, not
// raw: double), merchant (raw: JSON text), price (numeric and raw: JSON
// numbers), tag (count only: presence), ts (last over the timestamp field:
// a renamed column).
func offlineTestView(t testing.TB) *tiling.View {
	t.Helper()
	v, err := tiling.NewView(tiling.View{
		Name: "txn", Topic: "transactions", Entity: "user_id", Timestamp: "ts",
		Granularity: tiling.Minute, LifetimeStart: tiling.MinTime,
		Features: []tiling.Feature{
			{Name: "amount_sum", Function: tiling.Sum, Column: "amount", Window: tiling.Day},
			{Name: "merchant_last", Function: tiling.Last, Column: "merchant", Window: tiling.Lifetime},
			{Name: "price_max", Function: tiling.Max, Column: "price", Window: tiling.Day},
			{Name: "price_last", Function: tiling.Last, Column: "price", Window: tiling.Day},
			{Name: "tag_n", Function: tiling.Count, Column: "tag", Window: tiling.Day},
			{Name: "ts_last", Function: tiling.Last, Column: "ts", Window: tiling.Day},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// day0 is 2024-03-10T00:00:00Z.
var day0 = time.Date(2024, 3, 10, 0, 0, 0, 0, time.UTC).UnixMilli()

// testDecode decodes one JSON event with the ingest decoder and returns a
// deep copy.
func testDecode(t testing.TB, v *tiling.View, js string, pos tiling.Pos) tiling.Event {
	t.Helper()
	d := &tiling.Decoder{Views: []*tiling.View{v}, MaxEventBytes: 1 << 20, MaxKeyBytes: 2048, FutureSkew: math.MaxInt64 / 2}
	var out tiling.Decoded
	d.Decode([]byte(js), pos, time.Now().UnixMilli(), &out)
	if out.Reasons[0] != "" {
		t.Fatalf("decode %s: %s", js, out.Reasons[0])
	}
	return cloneEvent(&out.Events[0])
}

func cloneEvent(e *tiling.Event) tiling.Event {
	c := *e
	c.Key = strings.Clone(e.Key)
	c.Inputs = make([]tiling.Input, len(e.Inputs))
	for i, in := range e.Inputs {
		c.Inputs[i] = tiling.Input{Kind: in.Kind, Num: in.Num, Raw: bytes.Clone(in.Raw)}
	}
	return c
}

func eventDiff(a, b *tiling.Event) string {
	if a.Key != b.Key || a.TS != b.TS || a.Pos != b.Pos || len(a.Inputs) != len(b.Inputs) {
		return fmt.Sprintf("key/ts/pos: %q %d %v vs %q %d %v", a.Key, a.TS, a.Pos, b.Key, b.TS, b.Pos)
	}
	for i := range a.Inputs {
		x, y := a.Inputs[i], b.Inputs[i]
		if x.Kind != y.Kind || math.Float64bits(x.Num) != math.Float64bits(y.Num) || !bytes.Equal(x.Raw, y.Raw) {
			return fmt.Sprintf("input %d: %d %v %q vs %d %v %q", i, x.Kind, x.Num, x.Raw, y.Kind, y.Num, y.Raw)
		}
	}
	return ""
}

var (
	testAmounts   = []string{"", "null", "12.5", "-0", "0", "1e300", "0.1", "123456789012345678901", "5e-324", "-7", "1004.9999999999999", "1.50"}
	testMerchants = []string{"", "null", `"m1"`, `"a\"b\u00e9\n"`, `{"x":[1,2]}`, `true`, `17.25`, `[]`, `"💳"`, `-0`}
	testPrices    = []string{"", "3", "3.00", "-0.0", "2.5e-3", "99999999999999999999"}
	testTags      = []string{"", `"x"`, `3`, `{}`, `null`}
)

// randEventJSON returns a random event of the test view at ts.
func randEventJSON(rng *rand.Rand, key string, ts int64, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"user_id":%q`, key)
	if rng.IntN(5) == 0 {
		fmt.Fprintf(&b, `,"ts":%q`, time.UnixMilli(ts).UTC().Format(time.RFC3339Nano))
	} else {
		fmt.Fprintf(&b, `,"ts":%d`, ts)
	}
	for _, f := range []struct {
		name string
		vals []string
	}{{"amount", testAmounts}, {"merchant", testMerchants}, {"price", testPrices}, {"tag", testTags}} {
		if x := f.vals[rng.IntN(len(f.vals))]; x != "" {
			fmt.Fprintf(&b, `,%q:%s`, f.name, x)
		}
	}
	if id != "" {
		fmt.Fprintf(&b, `,"event_id":%q`, id)
	}
	b.WriteString(`,"pad":[1,{"y":2}]}`)
	return b.String()
}

// readAll reads a day and returns copies of its events, sorted by position,
// and the bad reports.
func readAll(t testing.TB, l *OfflineLog, v *tiling.View, idField string, date int64) ([]tiling.Event, ReadStats, []string) {
	t.Helper()
	var evs []tiling.Event
	var bads []string
	st, err := l.ReadDay(v, idField, date, func(e *tiling.Event) error {
		evs = append(evs, cloneEvent(e))
		return nil
	}, func(file string, row int64, reason string) {
		// Files are named by their path in the offline log.
		if dir := v.Name + "/" + dateDir(date) + "/"; !strings.HasPrefix(file, dir) {
			t.Errorf("bad file %q: want a path under %s", file, dir)
		}
		bads = append(bads, fmt.Sprintf("%s:%d:%s", path.Base(file), row, reason))
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(evs, func(a, b tiling.Event) int {
		if c := cmp.Compare(a.Pos.Partition, b.Pos.Partition); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos.Offset, b.Pos.Offset)
	})
	return evs, st, bads
}

func openTestLog(t testing.TB) *OfflineLog {
	t.Helper()
	l, err := OpenOfflineLog(filepath.Join(t.TempDir(), "offline"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testLog is an offline log under test, with a user's access to its files
// beside the log's own methods.
type testLog struct {
	*OfflineLog
	t testing.TB
	// put stores a file at a path relative to the root, whole, as a user
	// drops one in; get returns a file's bytes (nil when it is missing);
	// mkdir makes a directory exist with nothing in it; touch (nil for
	// S3) sets a file's modification time.
	put   func(rel string, data []byte)
	get   func(rel string) []byte
	mkdir func(rel string)
	touch func(rel string, at time.Time)
}

func (l *testLog) putString(rel, s string) { l.put(rel, []byte(s)) }

// offlineBackends are the storages every offline-log test runs against:
// a local directory and S3 (gofakes3 in process, offline_s3_test.go).
var offlineBackends = []struct {
	name string
	open func(t testing.TB) *testLog
}{
	{"dir", openDirTestLog},
	{"s3", func(t testing.TB) *testLog { return openS3TestLog(t, newFakeS3(t), "team/offline") }},
}

// forEachBackend runs fn as a subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, open func(testing.TB) *testLog)) {
	for _, b := range offlineBackends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open) })
	}
}

func openDirTestLog(t testing.TB) *testLog {
	l := openTestLog(t)
	full := func(rel string) string { return filepath.Join(l.Root(), filepath.FromSlash(rel)) }
	return &testLog{
		OfflineLog: l, t: t,
		put: func(rel string, data []byte) {
			t.Helper()
			writeFile(t, full(rel), string(data))
		},
		get: func(rel string) []byte {
			t.Helper()
			b, err := os.ReadFile(full(rel))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			return b
		},
		mkdir: func(rel string) {
			t.Helper()
			if err := os.MkdirAll(full(rel), 0o755); err != nil {
				t.Fatal(err)
			}
		},
		touch: func(rel string, at time.Time) {
			t.Helper()
			if err := os.Chtimes(full(rel), at, at); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestArchiveRoundTripGivesTheDecodedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		rng := rand.New(rand.NewPCG(1, 2))
		const n = 3000
		var rows []ArchiveRow
		byDate := map[int64][]tiling.Event{}
		for i := range n {
			ts := day0 - tiling.Day + rng.Int64N(3*tiling.Day)
			if i%500 == 0 {
				ts = day0 // a midnight exactly
			}
			key := fmt.Sprintf("u%d", rng.IntN(50))
			id := ""
			if rng.IntN(2) == 0 {
				id = fmt.Sprintf("id-%d", i)
			}
			ev := testDecode(t, v, randEventJSON(rng, key, ts, id), tiling.Pos{Partition: 3, Offset: 1000 + int64(i)})
			rows = append(rows, ArchiveRow{Event: ev, EventID: id})
			byDate[dayOf(ts)] = append(byDate[dayOf(ts)], ev)
		}
		paths, err := l.WriteArchive(v, "event_id", 3, 1000, 1000+n-1, rows)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"txn/date=2024-03-09/p3-00000000000000001000-00000000000000003999.parquet",
			"txn/date=2024-03-10/p3-00000000000000001000-00000000000000003999.parquet",
			"txn/date=2024-03-11/p3-00000000000000001000-00000000000000003999.parquet",
		}
		if !slices.Equal(paths, want) {
			t.Fatalf("paths = %q, want %q", paths, want)
		}
		for date, evs := range byDate {
			got, st, bads := readAll(t, l.OfflineLog, v, "event_id", date)
			if len(bads) > 0 {
				t.Fatalf("bad rows: %q", bads)
			}
			if len(got) != len(evs) || st.Events != int64(len(evs)) || st.Rows != int64(len(evs)) || st.Files != 1 || st.Duplicates != 0 {
				t.Fatalf("date %d: got %d events, stats %+v, want %d", date, len(got), st, len(evs))
			}
			for i := range evs {
				if d := eventDiff(&got[i], &evs[i]); d != "" {
					t.Fatalf("event %d differs: %s", i, d)
				}
			}
		}
		// Without the event id field the same files read the same (ids unused).
		got, _, _ := readAll(t, l.OfflineLog, v, "", day0)
		if len(got) != len(byDate[day0]) {
			t.Fatalf("without event ids: %d events, want %d", len(got), len(byDate[day0]))
		}
	})
}

func TestArchiveBytesAreDeterministic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		rng := rand.New(rand.NewPCG(3, 4))
		var rows []ArchiveRow
		for i := range 2000 {
			ts := day0 + rng.Int64N(2*tiling.Day)
			ev := testDecode(t, v, randEventJSON(rng, fmt.Sprintf("k%d", rng.IntN(30)), ts, ""), tiling.Pos{Partition: 0, Offset: int64(i)})
			rows = append(rows, ArchiveRow{Event: ev})
		}
		write := func(rows []ArchiveRow) (*testLog, []string) {
			l := open(t)
			paths, err := l.WriteArchive(v, "", 0, 0, 1999, rows)
			if err != nil {
				t.Fatal(err)
			}
			return l, paths
		}
		l1, p1 := write(rows)
		shuffled := slices.Clone(rows)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		l2, p2 := write(shuffled)
		if !slices.Equal(p1, p2) || len(p1) != 2 {
			t.Fatalf("paths differ: %q vs %q", p1, p2)
		}
		for _, p := range p1 {
			a, b := l1.get(p), l2.get(p)
			if a == nil || !bytes.Equal(a, b) {
				t.Fatalf("%s differs between the two writes", p)
			}
		}
		// A retry overwrites in place: same bytes, no other file.
		again, err := l1.WriteArchive(v, "", 0, 0, 1999, shuffled)
		if err != nil || !slices.Equal(again, p1) {
			t.Fatalf("retry: %q %v", again, err)
		}
		days, err := l1.Days("txn")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range days {
			if len(d.Files) != 1 {
				t.Fatalf("after a retry day %d has files %+v", d.Date, d.Files)
			}
		}
		// The retry left the same bytes.
		for _, p := range p1 {
			if !bytes.Equal(l1.get(p), l2.get(p)) {
				t.Fatalf("%s differs after a retry", p)
			}
		}
		// The file carries its metadata.
		data := l1.get(p1[0])
		pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := pf.Lookup("tilestream.format"); s != "1" {
			t.Errorf("tilestream.format = %q", s)
		}
		if s, _ := pf.Lookup("tilestream.json_columns"); s != "merchant,price,tag,_value_ts" {
			t.Errorf("tilestream.json_columns = %q", s)
		}
	})
}

func TestWriteArchiveRejectsRowsThatWouldNotReadBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		good := testDecode(t, v, `{"user_id":"u","ts":1700000000000,"amount":1}`, tiling.Pos{Partition: 1, Offset: 5})
		cases := []struct {
			name string
			edit func(r *ArchiveRow)
		}{
			{"another partition", func(r *ArchiveRow) { r.Event.Pos.Partition = 2 }},
			{"an offset outside the range", func(r *ArchiveRow) { r.Event.Pos.Offset = 11 }},
			{"an empty key", func(r *ArchiveRow) { r.Event.Key = "" }},
			{"a missing input", func(r *ArchiveRow) { r.Event.Inputs = r.Event.Inputs[:1] }},
			{"a non-finite number", func(r *ArchiveRow) { r.Event.Inputs[0].Num = math.Inf(1) }},
			{"text in a numeric column", func(r *ArchiveRow) { r.Event.Inputs[0] = tiling.Input{Kind: tiling.Other, Raw: []byte(`"x"`)} }},
			{"a raw column without its text", func(r *ArchiveRow) { r.Event.Inputs[1] = tiling.Input{Kind: tiling.Other} }},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := ArchiveRow{Event: cloneEvent(&good)}
				c.edit(&r)
				if _, err := l.WriteArchive(v, "", 1, 0, 10, []ArchiveRow{r}); err == nil {
					t.Fatal("no error")
				}
			})
		}
		r := ArchiveRow{Event: cloneEvent(&good)}
		if _, err := l.WriteArchive(v, "", 1, 0, 10, []ArchiveRow{r, r}); err == nil {
			t.Fatal("a repeated offset was accepted")
		}
		if _, err := l.WriteArchive(v, "", 1, 10, 0, nil); err == nil {
			t.Fatal("first > last was accepted")
		}
		if paths, err := l.WriteArchive(v, "", 1, 0, 10, nil); err != nil || paths != nil {
			t.Fatalf("no rows: %q %v", paths, err)
		}
	})
}

func TestDedupByPositionAcrossArchiveFiles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		mk := func(p int32, from, to int64) []ArchiveRow {
			var rows []ArchiveRow
			for o := from; o <= to; o++ {
				js := fmt.Sprintf(`{"user_id":"u%d","ts":%d,"amount":%d}`, o%7, day0+o*1000, o)
				rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: p, Offset: o})})
			}
			return rows
		}
		// Partition 0: a crash left [0, 99] and the retry archived [50, 149]; a
		// later file [150, 199] does not overlap. Partition 1 has the same offsets.
		for _, w := range []struct {
			p        int32
			from, to int64
		}{{0, 0, 99}, {0, 50, 149}, {0, 150, 199}, {1, 0, 99}} {
			if _, err := l.WriteArchive(v, "", w.p, w.from, w.to, mk(w.p, w.from, w.to)); err != nil {
				t.Fatal(err)
			}
		}
		evs, st, bads := readAll(t, l.OfflineLog, v, "", day0)
		if len(bads) > 0 {
			t.Fatal(bads)
		}
		if len(evs) != 300 || st.Duplicates != 50 || st.Rows != 350 || st.Files != 4 {
			t.Fatalf("%d events, stats %+v; want 300 events, 50 duplicates", len(evs), st)
		}
		for i, e := range evs {
			want := tiling.Pos{Partition: int32(i / 200), Offset: int64(i % 200)}
			if e.Pos != want || e.Inputs[0].Num != float64(e.Pos.Offset) {
				t.Fatalf("event %d at %v (amount %v), want %v", i, e.Pos, e.Inputs[0].Num, want)
			}
		}
	})
}

func TestDedupByEventIDAcrossArchiveJSONLinesAndUserParquet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		var rows []ArchiveRow
		for o := range int64(10) {
			id := fmt.Sprintf("e%d", o)
			js := fmt.Sprintf(`{"user_id":"u","ts":%d,"amount":%d,"event_id":%q}`, day0+o, o, id)
			rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: 0, Offset: o}), EventID: id})
		}
		// The producer retried e3: a second copy at offset 10.
		js := fmt.Sprintf(`{"user_id":"u","ts":%d,"amount":3,"event_id":"e3"}`, day0+3)
		rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: 0, Offset: 10}), EventID: "e3"})
		if _, err := l.WriteArchive(v, "event_id", 0, 0, 10, rows); err != nil {
			t.Fatal(err)
		}
		dir := "txn/" + dateDir(day0) + "/"
		// zz.jsonl sorts after the archive: its e4 is a duplicate; e100 and the
		// id 7 ("7", not "e7") are new; 7.0 is another literal, another id.
		l.putString(dir+"zz.jsonl", fmt.Sprintf(
			`{"user_id":"u","ts":%d,"amount":40,"event_id":"e4"}
	{"user_id":"u","ts":%d,"amount":100,"event_id":"e100"}
	{"user_id":"u","ts":%d,"amount":7,"event_id":7}
	{"user_id":"u","ts":%d,"amount":7,"event_id":7}
	{"user_id":"u","ts":%d,"amount":0,"event_id":7.0}
	`, day0+4, day0+100, day0+7, day0+8, day0+9))
		// backfill.parquet sorts first: its e5 wins over the archive's; its rows
		// without an id are all kept; e200 twice counts once.
		l.put(dir+"backfill.parquet", userParquet(t, []userRow{
			{UserID: 1, TS: (day0 + 5) * 1000, Amount: ptr(50.0), EventID: ptr("e5")},
			{UserID: 1, TS: (day0 + 6) * 1000, Amount: ptr(1.0)},
			{UserID: 1, TS: (day0 + 6) * 1000, Amount: ptr(1.0)},
			{UserID: 2, TS: (day0 + 9) * 1000, Amount: ptr(2.0), EventID: ptr("e200")},
			{UserID: 2, TS: (day0 + 9) * 1000, Amount: ptr(2.0), EventID: ptr("e200")},
		}))
		// The view naming the field (the decoder takes JSON Lines ids) and a
		// reader told the field alone (it takes them itself) agree.
		named := *v
		named.EventID = "event_id"
		evs, st, bads := readAll(t, l.OfflineLog, &named, "event_id", day0)
		if len(bads) > 0 {
			t.Fatal(bads)
		}
		evs2, st2, _ := readAll(t, l.OfflineLog, v, "event_id", day0)
		if st2 != st || len(evs2) != len(evs) {
			t.Fatalf("stats %+v with the view's field, %+v without", st, st2)
		}
		// Archive: 9 distinct (e3 once, e5 taken from the backfill); JSON Lines:
		// e100, 7, 7.0; backfill: e5, two id-less rows, e200.
		if st.Events != 16 || st.Duplicates != 5 || len(evs) != 16 {
			t.Fatalf("%d events, stats %+v", len(evs), st)
		}
		sum := 0.0
		for _, e := range evs {
			sum += e.Inputs[0].Num
		}
		// Archive amounts 0..9 without the 5 (backfill's 50 wins) + 100 + 7 + 50 + 1 + 1 + 2.
		if want := float64(45-5) + 100 + 7 + 50 + 1 + 1 + 2; sum != want {
			t.Fatalf("sum of amounts %v, want %v", sum, want)
		}
		// Without the event id field, positions dedup only the archive: the
		// retried e3 is at another offset so it counts twice.
		_, st, _ = readAll(t, l.OfflineLog, v, "", day0)
		if st.Events != 11+5+5 || st.Duplicates != 0 {
			t.Fatalf("without ids: %+v", st)
		}
	})
}

// userRow is a user-dropped Parquet row: integer keys, TIMESTAMP(MICROS).
type userRow struct {
	UserID   int64    `parquet:"user_id"`
	TS       int64    `parquet:"ts,timestamp(microsecond)"`
	Amount   *float64 `parquet:"amount,optional"`
	Merchant *string  `parquet:"merchant,optional"`
	Price    *int64   `parquet:"price,optional"`
	Tag      *bool    `parquet:"tag,optional"`
	EventID  *string  `parquet:"event_id,optional"`
}

// userRowMillis has string keys, int64 epoch-ms times and float32 prices.
type userRowMillis struct {
	UserID   string   `parquet:"user_id,dict"`
	TS       int64    `parquet:"ts"`
	Amount   *float64 `parquet:"amount,optional"`
	Merchant *string  `parquet:"merchant,optional"`
	Price    *float32 `parquet:"price,optional"`
}

func ptr[T any](x T) *T { return &x }

// userParquet returns a Parquet file of rows as a user's tool writes it.
func userParquet[T any](t testing.TB, rows []T, opts ...parquet.WriterOption) []byte {
	t.Helper()
	var b bytes.Buffer
	w := parquet.NewGenericWriter[T](&b, opts...)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUserParquetFilesReadLikeTheirJSON(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		dir := "txn/" + dateDir(day0) + "/"
		micros := []userRow{
			{UserID: 42, TS: day0*1000 + 1999, Amount: ptr(0.1), Merchant: ptr("a\"b\n"), Price: ptr(int64(123456789012345678)), Tag: ptr(true)},
			{UserID: -7, TS: day0*1000 + 5_000_000, Amount: ptr(math.Copysign(0, -1)), Merchant: ptr("é"), Tag: ptr(false)},
			{UserID: 8, TS: day0*1000 - 1},                                   // the previous day: outside the date
			{UserID: 9, TS: day0*1000 + 10, Amount: ptr(math.NaN())},         // non-finite
			{UserID: 10, TS: (day0 + tiling.Day) * 1000},                     // next day
			{UserID: 11, TS: day0*1000 + 7_000, Price: ptr(int64(-5))},       // fine
			{UserID: 12, TS: day0*1000 + 7_000, Amount: ptr(math.Inf(-1))},   // non-finite
			{UserID: 13, TS: day0*1000 + 7_000, Merchant: ptr("\x00\xff\t")}, // control and invalid UTF-8
		}
		l.put(dir+"micros.parquet", userParquet(t, micros))
		millis := []userRowMillis{
			{UserID: "alice", TS: day0 + 1, Amount: ptr(2.5), Price: ptr(float32(0.1))},
			{UserID: "", TS: day0 + 2},                    // empty key
			{UserID: "\xff", TS: day0 + 3},                // invalid UTF-8 key
			{UserID: strings.Repeat("k", 2049), TS: day0}, // key too long
			{UserID: "bob", TS: day0 + tiling.Day - 1, Merchant: ptr("x")},
		}
		l.put(dir+"millis.parquet", userParquet(t, millis, parquet.Compression(&parquet.Zstd)))
		evs, st, bads := readAll(t, l.OfflineLog, v, "", day0)
		wantBad := []string{
			"micros.parquet:2:outside_date", "micros.parquet:3:non_finite", "micros.parquet:4:outside_date",
			"micros.parquet:6:non_finite",
			"millis.parquet:1:bad_key", "millis.parquet:2:bad_key", "millis.parquet:3:key_too_long",
		}
		if !slices.Equal(bads, wantBad) {
			t.Fatalf("bad = %q\nwant %q", bads, wantBad)
		}
		if st.Rows != 13 || st.Events != 6 || st.BadRows != 7 || st.Files != 2 || st.BadFiles != 0 {
			t.Fatalf("stats %+v", st)
		}
		pm, pl := userPartition("micros.parquet"), userPartition("millis.parquet")
		if pm >= 0 || pl >= 0 || pm == pl {
			t.Fatalf("user partitions %d %d", pm, pl)
		}
		// What the decoder gives for the same events as JSON, at the same positions.
		want := map[tiling.Pos]string{
			{Partition: pm, Offset: 0}: fmt.Sprintf(`{"user_id":42,"ts":%d,"amount":0.1,"merchant":"a\"b\n","price":123456789012345678,"tag":true}`, day0+1),
			{Partition: pm, Offset: 1}: fmt.Sprintf(`{"user_id":-7,"ts":%d,"amount":-0,"merchant":"é","tag":false}`, day0+5000),
			{Partition: pm, Offset: 5}: fmt.Sprintf(`{"user_id":11,"ts":%d,"price":-5}`, day0+7),
			{Partition: pm, Offset: 7}: fmt.Sprintf(`{"user_id":13,"ts":%d,"merchant":"\u0000`+"\xff"+`\t"}`, day0+7),
			{Partition: pl, Offset: 0}: fmt.Sprintf(`{"user_id":"alice","ts":%d,"amount":2.5,"price":0.10000000149011612}`, day0+1),
			{Partition: pl, Offset: 4}: fmt.Sprintf(`{"user_id":"bob","ts":%d,"merchant":"x"}`, day0+tiling.Day-1),
		}
		if len(evs) != len(want) {
			t.Fatalf("%d events, want %d", len(evs), len(want))
		}
		for _, e := range evs {
			js, ok := want[e.Pos]
			if !ok {
				t.Fatalf("unexpected event at %v", e.Pos)
			}
			w := testDecode(t, v, js, e.Pos)
			// last(ts) over a Parquet timestamp is the stored number, not the
			// JSON text: compare it apart.
			ts := len(v.Columns()) - 1
			e.Inputs[ts], w.Inputs[ts] = tiling.Input{}, tiling.Input{}
			if d := eventDiff(&e, &w); d != "" {
				t.Errorf("event at %v: %s", e.Pos, d)
			}
		}
	})
}

func TestUserParquetNumericColumnHoldingText(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		type row struct {
			UserID string `parquet:"user_id"`
			TS     int64  `parquet:"ts,timestamp(millisecond)"`
			Amount string `parquet:"amount"`
		}
		l.put("txn/"+dateDir(day0)+"/text.parquet", userParquet(t, []row{{"u", day0, "12"}}))
		_, st, bads := readAll(t, l.OfflineLog, v, "", day0)
		if !slices.Equal(bads, []string{"text.parquet:0:bad_field_type"}) || st.Events != 0 {
			t.Fatalf("bad %q, stats %+v", bads, st)
		}
	})
}

func TestJSONLinesReportEachMalformedLine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		lines := []string{
			fmt.Sprintf(`{"user_id":"a","ts":%d,"amount":1}`, day0), // 0 ok
			`{"user_id":`,                      // 1 not_json
			`[1,2]`,                            // 2 not_object
			fmt.Sprintf(`{"ts":%d}`, day0),     // 3 missing_key
			`{"user_id":"a","ts":"yesterday"}`, // 4 bad_timestamp
			fmt.Sprintf(`{"user_id":"a","ts":%d,"amount":"12"}`, day0), // 5 bad_field_type
			"", // 6 blank: skipped
			fmt.Sprintf(`{"user_id":"a","ts":%d,"amount":1e999}`, day0),                                                                    // 7 non_finite
			fmt.Sprintf(`{"user_id":"a","ts":%d}`, day0-1),                                                                                 // 8 outside_date
			fmt.Sprintf(`{"user_id":"a","ts":%d,"pad":"%s"}`, day0, strings.Repeat("x", 1<<20)),                                            // 9 oversized
			fmt.Sprintf(`  {"user_id":7,"ts":"%s","merchant":{"k":[1, 2]}}  `+"\r", time.UnixMilli(day0+5).UTC().Format(time.RFC3339Nano)), // 10 ok
			fmt.Sprintf(`{"user_id":"far","ts":%d}`, day0+tiling.Day-1),                                                                    // 11 ok, no newline at the end
		}
		l.putString("txn/"+dateDir(day0)+"/fix.jsonl", strings.Join(lines, "\n"))
		evs, st, bads := readAll(t, l.OfflineLog, v, "", day0)
		// Reported by line number, from 1.
		wantBad := []string{"fix.jsonl:2:not_json", "fix.jsonl:3:not_object", "fix.jsonl:4:missing_key",
			"fix.jsonl:5:bad_timestamp", "fix.jsonl:6:bad_field_type", "fix.jsonl:8:non_finite",
			"fix.jsonl:9:outside_date", "fix.jsonl:10:oversized"}
		if !slices.Equal(bads, wantBad) {
			t.Fatalf("bad = %q\nwant %q", bads, wantBad)
		}
		if len(evs) != 3 || st.Rows != 11 || st.BadRows != 8 || st.Events != 3 {
			t.Fatalf("%d events, stats %+v", len(evs), st)
		}
		p := userPartition("fix.jsonl")
		for i, off := range []int64{0, 10, 11} {
			w := testDecode(t, v, strings.TrimSpace(lines[off]), tiling.Pos{Partition: p, Offset: off})
			if d := eventDiff(&evs[i], &w); d != "" {
				t.Errorf("line %d: %s", off, d)
			}
		}
	})
}

func TestCorruptAndTruncatedParquetFilesAreReportedAndSkipped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		var rows []ArchiveRow
		for o := range int64(500) {
			js := fmt.Sprintf(`{"user_id":"u%d","ts":%d,"amount":%d,"merchant":"m%d"}`, o%13, day0+o, o, o%3)
			rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: 0, Offset: o})})
		}
		paths, err := l.WriteArchive(v, "", 0, 0, 499, rows)
		if err != nil {
			t.Fatal(err)
		}
		good := l.get(paths[0])
		dir := "txn/" + dateDir(day0) + "/"
		l.putString(dir+"junk.parquet", "PAR1 this is not parquet PAR1")
		l.put(dir+"p1-00000000000000000000-00000000000000000499.parquet", good[:len(good)/2])
		// A flipped byte in the middle of a page: it may fail to decode, or
		// decode to other values; either way the read goes on.
		flipped := bytes.Clone(good)
		flipped[len(flipped)/3] ^= 0xff
		l.put(dir+"flipped.parquet", flipped)
		evs, st, bads := readAll(t, l.OfflineLog, v, "", day0)
		if st.Files != 4 || st.BadFiles < 2 {
			t.Fatalf("stats %+v, bad %q", st, bads)
		}
		var sawJunk, sawTruncated bool
		for _, b := range bads {
			sawJunk = sawJunk || strings.HasPrefix(b, "junk.parquet:-1:")
			sawTruncated = sawTruncated || strings.HasPrefix(b, "p1-00000000000000000000-00000000000000000499.parquet:-1:")
		}
		if !sawJunk || !sawTruncated {
			t.Fatalf("bad = %q", bads)
		}
		n := 0
		for _, e := range evs {
			if e.Pos.Partition == 0 {
				n++
			}
		}
		if n != 500 {
			t.Fatalf("%d events of the good file, want 500", n)
		}
	})
}

func TestDaysListsDateDirectoriesAndIgnoresOtherFiles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		l := open(t)
		root := "txn/"
		d1, d2 := dateDir(day0), dateDir(day0+40*tiling.Day)
		for _, f := range []string{
			d2 + "/b.jsonl", d2 + "/a.parquet", d2 + "/.a.parquet.tmp", d2 + "/_SUCCESS", d2 + "/notes.txt",
			d2 + "/.hidden.jsonl", d2 + "/_tmp.parquet", d2 + "/.parquet",
			d1 + "/p0-00000000000000000000-00000000000000000009.parquet",
			"date=2024-02-30/x.jsonl", "date=junk/x.jsonl", "stray.jsonl",
		} {
			l.putString(root+f, "x")
		}
		l.mkdir(root + d2 + "/sub.parquet")
		l.putString(root+d2+"/deeper/c.jsonl", "x")
		l.mkdir(root + dateDir(day0+tiling.Day))
		days, err := l.Days("txn")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range days {
			var names []string
			for _, f := range d.Files {
				names = append(names, f.Name)
			}
			got = append(got, fmt.Sprintf("%s:%s", dateDir(d.Date), strings.Join(names, ",")))
		}
		want := []string{
			d1 + ":p0-00000000000000000000-00000000000000000009.parquet",
			dateDir(day0+tiling.Day) + ":",
			d2 + ":a.parquet,b.jsonl",
		}
		if !slices.Equal(got, want) {
			t.Fatalf("days = %q\nwant %q", got, want)
		}
		if days, err := l.Days("absent"); err != nil || days != nil {
			t.Fatalf("absent view: %v %v", days, err)
		}
		if _, err := l.Days("../etc"); err == nil {
			t.Fatal("a view name with a slash was accepted")
		}
	})
}

func TestFingerprintChangesOnAddRemoveAndRewrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		l := open(t)
		dir := "txn/" + dateDir(day0) + "/"
		fp := func() uint64 {
			t.Helper()
			days, err := l.Days("txn")
			if err != nil || len(days) != 1 {
				t.Fatalf("days %v %v", days, err)
			}
			return days[0].Fingerprint()
		}
		l.putString(dir+"a.jsonl", "{}\n")
		base := fp()
		if fp() != base {
			t.Fatal("fingerprint not stable")
		}
		l.putString(dir+".tmp.parquet", "x")
		if fp() != base {
			t.Fatal("an ignored file changed the fingerprint")
		}
		l.putString(dir+"b.jsonl", "{}\n")
		added := fp()
		if added == base {
			t.Fatal("adding a file kept the fingerprint")
		}
		// Rewrite b with the same size. Locally, make sure the mtime moves;
		// the fake S3's clock stands still: the entity tag tells.
		later := time.Now().Add(time.Hour)
		touch := func() {
			if l.touch != nil {
				l.touch(dir+"b.jsonl", later)
			}
		}
		l.putString(dir+"b.jsonl", "[]\n")
		touch()
		rewritten := fp()
		if rewritten == added {
			t.Fatal("rewriting a file kept the fingerprint")
		}
		l.putString(dir+"b.jsonl", "[1]\n")
		touch()
		if fp() == rewritten {
			t.Fatal("resizing a file kept the fingerprint")
		}
		if err := l.Remove([]string{dir + "b.jsonl"}); err != nil {
			t.Fatal(err)
		}
		if fp() != base {
			t.Fatal("removing the added file did not restore the fingerprint")
		}
	})
}

func TestRemoveIgnoresMissingFiles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		l := open(t)
		rel := filepath.Join("txn", dateDir(day0), "a.jsonl")
		l.putString(rel, "{}\n")
		if err := l.Remove([]string{rel, rel, filepath.Join("txn", "date=1999-01-01", "gone.parquet"), filepath.Join("nope", "x")}); err != nil {
			t.Fatal(err)
		}
		if l.get(rel) != nil {
			t.Fatal("file still there")
		}
		if err := l.Remove([]string{"../outside"}); err == nil {
			t.Fatal("a path outside the log was accepted")
		}
	})
}

func TestReadDayOfAMissingDateIsEmpty(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		st, err := l.ReadDay(v, "", day0, func(*tiling.Event) error { t.Fatal("an event"); return nil }, nil)
		if err != nil || st != (ReadStats{}) {
			t.Fatalf("%+v %v", st, err)
		}
		if _, err := l.ReadDay(v, "", day0+1, nil, nil); err == nil {
			t.Fatal("a date off midnight was accepted")
		}
	})
}

func TestReadDayReturnsTheCallbacksError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		var rows []ArchiveRow
		for o := range int64(10) {
			rows = append(rows, ArchiveRow{Event: testDecode(t, v, fmt.Sprintf(`{"user_id":"u","ts":%d}`, day0+o), tiling.Pos{Offset: o})})
		}
		if _, err := l.WriteArchive(v, "", 0, 0, 9, rows); err != nil {
			t.Fatal(err)
		}
		stop := fmt.Errorf("stop")
		n := 0
		_, err := l.ReadDay(v, "", day0, func(*tiling.Event) error {
			n++
			if n == 3 {
				return stop
			}
			return nil
		}, nil)
		if err != stop || n != 3 {
			t.Fatalf("err %v after %d events", err, n)
		}
	})
}

func TestDateDirectoryNames(t *testing.T) {
	cases := map[int64]string{
		0:           "date=1970-01-01",
		day0:        "date=2024-03-10",
		-tiling.Day: "date=1969-12-31",
		time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC).UnixMilli(): "date=2000-02-29",
		-62135596800000:              "date=0001-01-01",
		-62167219200000 - tiling.Day: "date=-0001-12-31",
		253402300800000:              "date=10000-01-01",
	}
	for date, name := range cases {
		if got := dateDir(date); got != name {
			t.Errorf("dateDir(%d) = %s, want %s", date, got, name)
		}
		if got, ok := parseDateDir(name); !ok || got != date {
			t.Errorf("parseDateDir(%s) = %d %v, want %d", name, got, ok, date)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		date := dayOf(rng.Int64N(1<<54) - 1<<53)
		got, ok := parseDateDir(dateDir(date))
		if !ok || got != date {
			t.Fatalf("round trip of %d via %s: %d %v", date, dateDir(date), got, ok)
		}
		// ArchivePath (ingest's intents) formats with the time package.
		if y := time.UnixMilli(date).UTC().Format("2006-01-02"); dateDir(date) != "date="+y {
			t.Fatalf("%d: %s vs time's %s", date, dateDir(date), y)
		}
	}
	for _, bad := range []string{"date=2024-02-30", "date=2024-1-01", "date=-0000-01-01", "date=02024-01-01", "date=2024-01-01x", "dt=2024-01-01", "date="} {
		if _, ok := parseDateDir(bad); ok {
			t.Errorf("parseDateDir(%q) accepted", bad)
		}
	}
}

func TestArchiveNames(t *testing.T) {
	n := archiveName(12, 5, 1<<40)
	if n != "p12-00000000000000000005-00000001099511627776.parquet" {
		t.Fatal(n)
	}
	if p, f, l, ok := parseArchiveName(n); !ok || p != 12 || f != 5 || l != 1<<40 {
		t.Fatal(p, f, l, ok)
	}
	for _, bad := range []string{"p012-00000000000000000005-00000000000000000006.parquet", "p1-5-6.parquet",
		"p1-00000000000000000007-00000000000000000006.parquet", "p-1-00000000000000000005-00000000000000000006.parquet",
		"x1-00000000000000000005-00000000000000000006.parquet", "p1-00000000000000000005-00000000000000000006.jsonl"} {
		if _, _, _, ok := parseArchiveName(bad); ok {
			t.Errorf("%s parsed", bad)
		}
	}
}

// testdata/offline/duckdb.parquet was written by DuckDB 1.5 (data pages v1,
// PLAIN_DICTIONARY, zstd, no page checksums, TIMESTAMP(MICROS) not adjusted
// to UTC, int64 keys, an int32 dictionary, booleans):
//
//	COPY (SELECT i::BIGINT AS user_id,
//	  TIMESTAMP '2024-03-10 00:00:00' + to_microseconds(i * 1000003) AS ts,
//	  CASE WHEN i % 5 = 0 THEN NULL ELSE i * 1.25 END::DOUBLE AS amount,
//	  CASE WHEN i % 11 = 0 THEN NULL ELSE 'm' || (i % 3) END AS merchant,
//	  (i % 7)::INTEGER AS price, i % 2 = 0 AS tag, 'e' || (i % 900) AS event_id
//	  FROM range(1000) t(i)) TO 'duckdb.parquet' (FORMAT parquet, COMPRESSION zstd)
func TestParquetFileOfAnotherWriter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		data, err := os.ReadFile(filepath.Join("testdata", "offline", "duckdb.parquet"))
		if err != nil {
			t.Fatal(err)
		}
		l.put("txn/"+dateDir(day0)+"/duckdb.parquet", data)
		evs, st, bads := readAll(t, l.OfflineLog, v, "event_id", day0)
		if len(bads) > 0 || st.Rows != 1000 || st.Events != 900 || st.Duplicates != 100 {
			t.Fatalf("stats %+v, bad %q", st, bads)
		}
		p := userPartition("duckdb.parquet")
		for i, e := range evs {
			var b strings.Builder
			fmt.Fprintf(&b, `{"user_id":%d,"ts":%d`, i, day0+int64(i)*1000003/1000)
			if i%5 != 0 {
				fmt.Fprintf(&b, `,"amount":%s`, strconv.FormatFloat(float64(i)*1.25, 'g', -1, 64))
			}
			if i%11 != 0 {
				fmt.Fprintf(&b, `,"merchant":"m%d"`, i%3)
			}
			fmt.Fprintf(&b, `,"price":%d,"tag":%v}`, i%7, i%2 == 0)
			w := testDecode(t, v, b.String(), tiling.Pos{Partition: p, Offset: int64(i)})
			ts := len(v.Columns()) - 1 // last(ts) holds microseconds here
			e.Inputs[ts], w.Inputs[ts] = tiling.Input{}, tiling.Input{}
			if d := eventDiff(&e, &w); d != "" {
				t.Fatalf("row %d: %s", i, d)
			}
		}
	})
}

func TestIDSetAgreesWithAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var s idSet
	m := map[string]bool{}
	for i := range 200_000 {
		if i == 1000 {
			s.reserve(50_000)
		}
		id := fmt.Appendf(nil, "%x", rng.IntN(100_000))[:1+rng.IntN(5)]
		if got, want := s.seen(id), m[string(id)]; got != want {
			t.Fatalf("op %d: seen(%q) = %v, want %v", i, id, got, want)
		}
		m[string(id)] = true
	}
}
