package state

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tilestream/tilestream/tiling"
)

// checkRead reads data as the one file name of a day, in memory (fuzzing
// through the file system is slow), and checks what any input must give: no
// panic, every row accounted for once, and only events a view can take.
func checkRead(t *testing.T, v *tiling.View, idField, name string, data []byte) {
	lay, err := newArchiveLayout(v, idField)
	if err != nil {
		t.Fatal(err)
	}
	r := newDayReader(v, lay, idField, day0, func(e *tiling.Event) error {
		if dayOf(e.TS) != day0 || e.Key == "" || len(e.Inputs) != len(v.Columns()) {
			t.Fatalf("bad event %+v", e)
		}
		for i, in := range e.Inputs {
			switch in.Kind {
			case tiling.Number:
				if math.IsNaN(in.Num) || math.IsInf(in.Num, 0) || math.Signbit(in.Num) && in.Num == 0 {
					t.Fatalf("column %d: number %v", i, in.Num)
				}
			case tiling.Other:
				if v.ColumnNumeric(i) {
					t.Fatalf("column %d: numeric column holds %q", i, in.Raw)
				}
			}
			if in.Kind != tiling.Missing && v.ColumnRaw(i) && len(in.Raw) == 0 {
				t.Fatalf("column %d: no raw value", i)
			}
		}
		return nil
	}, nil)
	r.requireCRC = true
	r.dd.plan([]FileInfo{{Name: name}})
	fc := newFileCtx(name)
	switch classify(name) {
	case fileParquet:
		err = r.readParquetFrom(fc, bytes.NewReader(data), int64(len(data)))
	case fileJSONL:
		err = r.readLines(fc, bytes.NewReader(data))
	}
	if err != nil {
		t.Fatal(err)
	}
	if st := r.stats; st.Rows != st.Events+st.Duplicates+st.BadRows {
		t.Fatalf("rows not accounted for: %+v", st)
	}
}

// archiveSeed returns the bytes of a small archive file of the test view.
func archiveSeed(t testing.TB, rows int, idField string) []byte {
	v := offlineTestView(t)
	l := openTestLog(t)
	var ar []ArchiveRow
	for o := range int64(rows) {
		js := fmt.Sprintf(`{"user_id":"u%d","ts":%d,"amount":%d.5,"merchant":"m%d","price":%d,"tag":"t","event_id":"e%d"}`, o%5, day0+o, o, o%3, o, o%7)
		id := ""
		if idField != "" {
			id = fmt.Sprintf("e%d", o%7)
		}
		ar = append(ar, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: 0, Offset: o}), EventID: id})
	}
	paths, err := l.WriteArchive(v, idField, 0, 0, 99, ar)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(l.Root(), paths[0]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzReadParquetFile(f *testing.F) {
	a := archiveSeed(f, 20, "")
	f.Add(a, true)
	f.Add(archiveSeed(f, 50, "event_id"), true)
	f.Add(a[:len(a)-9], true)
	var user bytes.Buffer
	w := parquet.NewGenericWriter[userRow](&user)
	if _, err := w.Write([]userRow{
		{UserID: 1, TS: day0 * 1000, Amount: ptr(1.5), Merchant: ptr("m"), Price: ptr(int64(3)), Tag: ptr(true), EventID: ptr("x")},
		{UserID: 2, TS: day0*1000 + 5, EventID: ptr("x")},
	}); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(user.Bytes(), false)
	f.Fuzz(func(t *testing.T, data []byte, archive bool) {
		v := offlineTestView(t)
		name := "user.parquet"
		if archive {
			name = "p0-00000000000000000000-00000000000000000099.parquet"
		}
		checkRead(t, v, "event_id", name, data)
		checkRead(t, v, "", name, data)
	})
}

func FuzzReadJSONL(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(`{"user_id":"a","ts":%d,"amount":1,"merchant":{"x":1},"event_id":"e1"}
{"user_id":"a","ts":%d,"amount":1,"event_id":"e1"}

{"user_id":7,"ts":"2024-03-10T01:02:03.5Z","price":"x"}
not json
{"user_id":"b","ts":%d,"tag":null}`, day0, day0+1, day0+2)))
	f.Add([]byte("\r\n\n{}\n[]\n\"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRead(t, offlineTestView(t), "event_id", "in.jsonl", data)
	})
}
